//! Analytics on one series of a device: anomalies (robust z-scores over raw points), change
//! points (level shifts over raw points), forecasts
//! (ETS or MSTL over interval averages) and time-to-threshold (the linear trend of the last
//! window). Reads the store and computes on the blocking pool; the models are in
//! `ib_core::analytics`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::analytics::changepoint::ChangePoint;
use ib_core::analytics::{self, AnalyticsError, Anomaly, ForecastModel, ForecastPoint};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{blocking, ApiError, ApiResult};
use crate::ApiState;

type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// Most raw points one anomaly query examines (the newest of the range).
const MAX_ANOMALY_POINTS: usize = 100_000;
/// Most steps a forecast may look ahead.
const MAX_HORIZON: usize = 1_000;
/// History of a forecast without `from`, in intervals before `to`.
const DEFAULT_HISTORY: i64 = 1_000;
/// Window of a time-to-threshold query without `window`: a week.
const DEFAULT_WINDOW_MS: i64 = 7 * 86_400_000;
/// A time-to-threshold window is averaged over this many intervals at most.
const TREND_INTERVALS: i64 = 1_000;

/// The analytics routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(anomalies))
        .routes(routes!(forecast))
        .routes(routes!(time_to_threshold))
        .routes(routes!(change_points))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AnomalyQuery {
    /// The telemetry key (numeric values; booleans count as 0/1).
    key: String,
    /// Start of the range, ms (default 0).
    from: Option<i64>,
    /// End of the range, ms (default: no end). The newest 100,000 points are examined.
    to: Option<i64>,
    /// Robust z-score above which a point is an anomaly (default 3.5).
    threshold: Option<f64>,
}

/// Anomalies of one series.
#[derive(Serialize, ToSchema)]
struct AnomaliesResponse {
    key: String,
    /// Numeric points examined.
    examined: usize,
    anomalies: Vec<Anomaly>,
}

/// Points of a series whose robust z-score (median and median absolute deviation; a plain
/// z-score for windows that are mostly one value) exceeds the threshold.
#[utoipa::path(get, path = "/api/v1/devices/{id}/analytics/anomalies", tag = "analytics",
    security(("bearer" = ["read"])), params(("id" = String, Path), AnomalyQuery),
    responses((status = 200, body = AnomaliesResponse)))]
async fn anomalies(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<AnomalyQuery>,
) -> ApiResult<Json<AnomaliesResponse>> {
    let Query(q) = q?;
    let threshold = q.threshold.unwrap_or(3.5);
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(ApiError::bad_request("threshold must be a positive number"));
    }
    let raw = RawPoints::new(&s, &id, q.key, q.from, q.to, MAX_ANOMALY_POINTS)?;
    blocking(move || {
        let (key, points) = raw.read()?;
        let anomalies = analytics::anomalies(&points, threshold);
        Ok::<_, ApiError>(Json(AnomaliesResponse {
            key,
            examined: points.len(),
            anomalies,
        }))
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ForecastQuery {
    /// The telemetry key.
    key: String,
    /// Bucket width, ms: the history is averaged over these intervals, and the forecast steps
    /// by them.
    interval: i64,
    /// Start of the history, ms since 1970 (default: 1000 intervals before `to`).
    from: Option<i64>,
    /// End of the history, ms (default: now). At most 10,000 intervals from `from`.
    to: Option<i64>,
    /// Steps to forecast (default 12, at most 1000).
    horizon: Option<usize>,
    /// Season length in intervals (e.g. 24 for a daily cycle of hourly intervals): seasonal
    /// decomposition (MSTL); needs two seasons of history.
    season: Option<usize>,
    /// Prediction interval level (default 0.95).
    level: Option<f64>,
}

/// A forecast of one series.
#[derive(Serialize, ToSchema)]
struct ForecastResponse {
    key: String,
    model: ForecastModel,
    /// The step, ms.
    interval: i64,
    points: Vec<ForecastPoint>,
}

/// Forecasts a series from its interval averages: ETS, or MSTL (ETS on the trend) with
/// `season`; each step with its prediction interval. Too little history is a 400.
#[utoipa::path(get, path = "/api/v1/devices/{id}/analytics/forecast", tag = "analytics",
    security(("bearer" = ["read"])), params(("id" = String, Path), ForecastQuery),
    responses((status = 200, body = ForecastResponse)))]
async fn forecast(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<ForecastQuery>,
) -> ApiResult<Json<ForecastResponse>> {
    let Query(q) = q?;
    let d = s.platform.registry.device(&id)?;
    let key = need_key(q.key)?;
    let interval = q.interval;
    if interval <= 0 {
        return Err(ApiError::bad_request("interval must be positive (ms)"));
    }
    // Times before 1970 are refused: bucket arithmetic near i64::MIN would overflow.
    if q.from.is_some_and(|t| t < 0) || q.to.is_some_and(|t| t < 0) {
        return Err(ApiError::bad_request(
            "from and to are ms since 1970 (not negative)",
        ));
    }
    let to = q.to.unwrap_or_else(ib_core::db::now_ms);
    let from = q.from.unwrap_or_else(|| {
        to.saturating_sub(interval.saturating_mul(DEFAULT_HISTORY))
            .max(0)
    });
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let intervals = (i128::from(to) - i128::from(from)) / i128::from(interval) + 1;
    if intervals > analytics::MAX_HISTORY as i128 {
        return Err(ApiError::bad_request(format!(
            "the history spans {intervals} intervals, at most {} are forecast from: \
             widen the interval or narrow the range",
            analytics::MAX_HISTORY
        )));
    }
    let horizon = q.horizon.unwrap_or(12);
    if !(1..=MAX_HORIZON).contains(&horizon) {
        return Err(ApiError::bad_request(format!(
            "horizon must be between 1 and {MAX_HORIZON}"
        )));
    }
    let level = q.level.unwrap_or(0.95);
    let season = q.season;
    let max_season = analytics::MAX_HISTORY / 2;
    if season.is_some_and(|s| !(2..=max_season).contains(&s)) {
        return Err(ApiError::bad_request(format!(
            "season must be between 2 and {max_season} intervals"
        )));
    }
    let store = s.platform.telemetry.clone();
    blocking(move || {
        let keys = [key.clone()];
        let agg = store.aggregate(&d.id, &keys, from, to, interval, store::Agg::Avg)?;
        let history: Vec<(i64, f64)> = agg.into_iter().flat_map(|(_, b)| b).collect();
        let fc = analytics::forecast(&history, interval, horizon, level, season)
            .map_err(|e| analytics_error(e, season))?;
        Ok::<_, ApiError>(Json(ForecastResponse {
            key,
            model: fc.model,
            interval,
            points: fc.points,
        }))
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ThresholdQuery {
    /// The telemetry key.
    key: String,
    /// The level whose crossing is predicted (above or below the current trend value).
    threshold: f64,
    /// The trend is fitted to this many ms before the key's latest point (default a week),
    /// averaged over at most 1000 intervals.
    window: Option<i64>,
}

/// When a series' trend reaches a threshold.
#[derive(Serialize, ToSchema)]
struct ThresholdResponse {
    key: String,
    threshold: f64,
    /// When the trend line reaches the threshold (ms); null when the trend is flat, not
    /// significant, or moving away from it.
    eta_ts: Option<i64>,
    /// The trend's change per hour.
    slope_per_hour: f64,
    /// Share of the variance the trend explains (0..1).
    r2: f64,
}

/// Predictive maintenance: when the least-squares trend of the last window reaches the
/// threshold (spikes are left out of the fit).
#[utoipa::path(get, path = "/api/v1/devices/{id}/analytics/time-to-threshold", tag = "analytics",
    security(("bearer" = ["read"])), params(("id" = String, Path), ThresholdQuery),
    responses((status = 200, body = ThresholdResponse)))]
async fn time_to_threshold(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<ThresholdQuery>,
) -> ApiResult<Json<ThresholdResponse>> {
    let Query(q) = q?;
    let d = s.platform.registry.device(&id)?;
    let key = need_key(q.key)?;
    let threshold = q.threshold;
    if !threshold.is_finite() {
        return Err(ApiError::bad_request("threshold must be a number"));
    }
    let window = q.window.unwrap_or(DEFAULT_WINDOW_MS);
    if window <= 0 {
        return Err(ApiError::bad_request("window must be positive (ms)"));
    }
    let store = s.platform.telemetry.clone();
    blocking(move || -> ApiResult<Json<ThresholdResponse>> {
        let keys = [key.clone()];
        let too_little = |have: usize| {
            analytics_error(
                AnalyticsError::TooLittleHistory {
                    have,
                    need: analytics::MIN_TREND_POINTS,
                },
                None,
            )
        };
        let Some((_, latest)) = store.latest(&d.id, Some(&keys))?.into_iter().next() else {
            return Err(too_little(0));
        };
        let to = latest.ts;
        let from = to.saturating_sub(window).max(0).min(to);
        // Averages over window/1000: a week of 1 Hz data is 1000 points, not 604,800.
        let interval = (window / TREND_INTERVALS).max(1);
        let agg = store.aggregate(&d.id, &keys, from, to, interval, store::Agg::Avg)?;
        let points: Vec<(i64, f64)> = agg
            .into_iter()
            .flat_map(|(_, b)| b)
            .map(|(start, v)| (start.saturating_add(interval / 2).min(to), v))
            .collect();
        let trend = analytics::linear_trend(&points).ok_or_else(|| too_little(points.len()))?;
        Ok(Json(ThresholdResponse {
            key,
            threshold,
            eta_ts: trend.eta(threshold),
            slope_per_hour: trend.slope_per_hour,
            r2: trend.r2,
        }))
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ChangePointQuery {
    /// The telemetry key.
    key: String,
    /// Start of the range, ms (default 0).
    from: Option<i64>,
    /// End of the range, ms (default: no end). The newest 20,000 points are examined.
    to: Option<i64>,
    /// Penalty per change, × ln(points), in units of the series' noise (default 3; higher
    /// finds fewer changes).
    penalty: Option<f64>,
    /// Shortest segment, in points (default 5, at least 2).
    min_size: Option<usize>,
}

/// Change points of one series.
#[derive(Serialize, ToSchema)]
struct ChangePointsResponse {
    key: String,
    /// Numeric points examined.
    examined: usize,
    change_points: Vec<ChangePoint>,
}

/// Where the level of a series shifts (PELT, change in mean), each with the means of the
/// segments before and after.
#[utoipa::path(get, path = "/api/v1/devices/{id}/analytics/change-points", tag = "analytics",
    security(("bearer" = ["read"])), params(("id" = String, Path), ChangePointQuery),
    responses((status = 200, body = ChangePointsResponse)))]
async fn change_points(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<ChangePointQuery>,
) -> ApiResult<Json<ChangePointsResponse>> {
    use analytics::changepoint as cp;
    let Query(q) = q?;
    let penalty = q.penalty.unwrap_or(cp::DEFAULT_PENALTY);
    let min_size = q.min_size.unwrap_or(cp::DEFAULT_MIN_SIZE);
    let raw = RawPoints::new(&s, &id, q.key, q.from, q.to, cp::MAX_POINTS)?;
    blocking(move || {
        let (key, points) = raw.read()?;
        let change_points =
            cp::change_points(&points, penalty, min_size).map_err(|e| analytics_error(e, None))?;
        Ok::<_, ApiError>(Json(ChangePointsResponse {
            key,
            examined: points.len(),
            change_points,
        }))
    })
    .await
}

/// The newest raw numeric points of a key in `[from, to]` (default: all), read on the blocking
/// pool by [`RawPoints::read`].
struct RawPoints {
    store: std::sync::Arc<dyn store::TelemetryStore>,
    device: String,
    key: String,
    from: i64,
    to: i64,
    max: usize,
}

impl RawPoints {
    /// Checks the device and the parameters.
    fn new(
        s: &ApiState,
        id: &str,
        key: String,
        from: Option<i64>,
        to: Option<i64>,
        max: usize,
    ) -> ApiResult<RawPoints> {
        let device = s.platform.registry.device(id)?.id;
        let key = need_key(key)?;
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(i64::MAX));
        if from > to {
            return Err(ApiError::bad_request("from must not be after to"));
        }
        let store = s.platform.telemetry.clone();
        Ok(RawPoints {
            store,
            device,
            key,
            from,
            to,
            max,
        })
    }

    /// The key and its points, oldest first.
    fn read(self) -> ApiResult<(String, Vec<(i64, f64)>)> {
        let keys = [self.key];
        let series = self
            .store
            .range(&self.device, &keys, self.from, self.to, self.max, true)?;
        let mut points = numeric(series.into_iter().flat_map(|(_, smp)| smp));
        points.reverse(); // newest first from the store
        let [key] = keys;
        Ok((key, points))
    }
}

fn need_key(key: String) -> ApiResult<String> {
    if key.trim().is_empty() {
        return Err(ApiError::bad_request("key=K is required"));
    }
    Ok(key)
}

/// The numeric samples as `(ts, value)` (strings and JSON are skipped).
fn numeric(samples: impl Iterator<Item = store::Sample>) -> Vec<(i64, f64)> {
    samples
        .filter_map(|smp| Some((smp.ts, smp.value.as_f64()?)))
        .collect()
}

/// Bad parameters and too little history are 400; a series the model cannot fit is 422.
fn analytics_error(e: AnalyticsError, season: Option<usize>) -> ApiError {
    match e {
        AnalyticsError::TooLittleHistory { have, need } => {
            let why = match season {
                Some(s) if need == s.saturating_mul(2) => format!("two seasons of {s}"),
                _ => format!("at least {need}"),
            };
            ApiError::bad_request(format!(
                "too little history: {have} points (intervals with data) in the range, {why} \
                 needed"
            ))
        }
        AnalyticsError::Invalid(m) => ApiError::bad_request(m),
        e @ AnalyticsError::Model { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
        }
    }
}
