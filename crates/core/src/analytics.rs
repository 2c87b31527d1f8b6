//! Analytics over one series of numbers, as `(ts ms, value)` points oldest first: anomalies
//! (robust z-scores), change points (changepoint.rs: level shifts, PELT), short-term forecasts (ETS; MSTL with ETS for its trend when the series
//! has a season) and time-to-threshold from a linear trend (predictive maintenance). Pure
//! functions, no I/O: the API reads the store and runs these on the blocking pool.
//!
//! Built on `augurs` (outlier, ets, mstl). Its MAD detector refuses flat windows (a median
//! deviation of 0 is a division by zero) and over-scores quantised ones; windows without a
//! deviation on either side of the median fall back to a plain z-score, and to "no anomalies"
//! when they do not vary at all. Seasonal ETS is not in augurs: seasons go through MSTL.

pub mod changepoint;

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::outlier::{MADDetector, OutlierDetector};
use augurs::{Fit, Predict};
use serde::Serialize;
use utoipa::ToSchema;

/// Fewest points a forecast is fitted to.
pub const MIN_HISTORY: usize = 8;
/// Most regular steps a forecast's history may span (gaps included).
pub const MAX_HISTORY: usize = 10_000;
/// Fewest points a trend is fitted to.
pub const MIN_TREND_POINTS: usize = 3;
/// A trend counts only when its slope is this many standard errors from zero.
const MIN_SLOPE_T: f64 = 3.0;

/// Why an analysis could not be made (the caller's input, never an internal fault).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalyticsError {
    #[error("too little history: {have} points, at least {need} needed")]
    TooLittleHistory { have: usize, need: usize },
    #[error("{0}")]
    Invalid(String),
    /// The model could not be fitted to this series (or it produced non-finite numbers).
    #[error("the {model} model could not be fitted: {reason}")]
    Model { model: &'static str, reason: String },
}

/// A point whose robust z-score passed the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Anomaly {
    pub ts: i64,
    pub value: f64,
    /// Robust z-score: positive above the window's median, negative below.
    pub score: f64,
}

/// The points of `points` whose robust z-score (median and median absolute deviation, either
/// side of the median on its own) exceeds `threshold` in magnitude. A window without a median
/// deviation (flat, or mostly one value) falls back to the plain z-score; one that does not
/// vary at all has no anomalies. Non-finite values are ignored.
pub fn anomalies(points: &[(i64, f64)], threshold: f64) -> Vec<Anomaly> {
    let pts: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    if pts.len() < 3 {
        return Vec::new();
    }
    let values: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let Some(scores) = mad_scores(&values, threshold).or_else(|| z_scores(&values)) else {
        return Vec::new();
    };
    let median = median(&values);
    pts.iter()
        .zip(scores)
        .filter(|(_, s)| s.is_finite() && s.abs() > threshold)
        .map(|(&(ts, value), s)| Anomaly {
            ts,
            value,
            score: if value < median { -s.abs() } else { s.abs() },
        })
        .collect()
}

/// augurs' MAD scores (magnitudes), or `None` when the window has no deviation on one side of
/// its median. augurs refuses a deviation of exactly 0, but a quantised window (most readings
/// on one value, say 20.0, a few on 19.9 and 20.1) gets a deviation of float noise from its
/// (Harrell-Davis) medians and scores of 10^12: the plain medians are checked first.
fn mad_scores(values: &[f64], threshold: f64) -> Option<Vec<f64>> {
    let m = median(values);
    // As augurs: points on the median count on both sides.
    let lower: Vec<f64> = values.iter().filter(|v| **v <= m).map(|v| m - v).collect();
    let upper: Vec<f64> = values.iter().filter(|v| **v >= m).map(|v| v - m).collect();
    if median(&lower) == 0.0 || median(&upper) == 0.0 {
        return None;
    }
    let mad = MADDetector::with_threshold(threshold);
    let pre = mad.preprocess(&[values]).ok()?;
    let out = mad.detect(&pre).ok()?;
    out.series_results.into_iter().next().map(|s| s.scores)
}

/// Plain z-scores, or `None` when the values do not vary.
fn z_scores(values: &[f64]) -> Option<Vec<f64>> {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    (sd.is_finite() && sd > 0.0).then(|| values.iter().map(|v| (v - mean) / sd).collect())
}

/// The plain median (0 for no values).
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Which model made a forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ForecastModel {
    /// Exponential smoothing (the best of the non-seasonal ETS models by AICc).
    #[serde(rename = "ETS")]
    Ets,
    /// Seasonal-trend decomposition (MSTL), ETS on the deseasonalised trend.
    #[serde(rename = "MSTL")]
    Mstl,
}

impl ForecastModel {
    /// `ETS` or `MSTL`.
    pub fn name(self) -> &'static str {
        match self {
            ForecastModel::Ets => "ETS",
            ForecastModel::Mstl => "MSTL",
        }
    }
}

/// One forecast step with its prediction interval.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ForecastPoint {
    pub ts: i64,
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

/// A forecast: `horizon` steps after the last point.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Forecast {
    pub model: ForecastModel,
    pub points: Vec<ForecastPoint>,
}

/// Forecasts `horizon` steps of `step_ms` after the last of `points` (bucketed on a regular
/// grid of `step_ms`, e.g. averages from `TelemetryStore::aggregate`; missing buckets are
/// filled by linear interpolation), with prediction intervals at `level` (0..1). With
/// `season` (in steps) the series is decomposed first (MSTL) and needs two seasons of history.
pub fn forecast(
    points: &[(i64, f64)],
    step_ms: i64,
    horizon: usize,
    level: f64,
    season: Option<usize>,
) -> Result<Forecast, AnalyticsError> {
    if step_ms <= 0 {
        return Err(AnalyticsError::Invalid("the step must be positive".into()));
    }
    if horizon == 0 {
        return Err(AnalyticsError::Invalid(
            "the horizon must be at least 1".into(),
        ));
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(AnalyticsError::Invalid(
            "the level must be between 0 and 1".into(),
        ));
    }
    if season.is_some_and(|s| s < 2) {
        return Err(AnalyticsError::Invalid(
            "a season is at least 2 steps".into(),
        ));
    }
    let (last_ts, history) = regular(points, step_ms)?;
    let need = season.map_or(MIN_HISTORY, |s| MIN_HISTORY.max(s.saturating_mul(2)));
    if history.len() < need {
        return Err(AnalyticsError::TooLittleHistory {
            have: history.len(),
            need,
        });
    }
    let model = match season {
        Some(_) => ForecastModel::Mstl,
        None => ForecastModel::Ets,
    };
    let fc = if history.iter().all(|v| *v == history[0]) {
        // Nothing to fit (ETS's optimiser divides by the variance): the value stays.
        augurs::Forecast {
            point: vec![history[0]; horizon],
            intervals: None,
        }
    } else {
        let failed = |reason: String| AnalyticsError::Model {
            model: model.name(),
            reason,
        };
        match season {
            Some(s) => {
                let trend = AutoETS::non_seasonal().into_trend_model();
                MSTLModel::new(vec![s], trend)
                    .fit(&history)
                    .map_err(|e| failed(e.to_string()))?
                    .predict(horizon, level)
                    .map_err(|e| failed(e.to_string()))?
            }
            None => AutoETS::non_seasonal()
                .fit(&history)
                .map_err(|e| failed(e.to_string()))?
                .predict(horizon, level)
                .map_err(|e| failed(e.to_string()))?,
        }
    };
    let (lower, upper) = match fc.intervals {
        Some(i) => (i.lower, i.upper),
        None => (fc.point.clone(), fc.point.clone()),
    };
    let mut out = Vec::with_capacity(horizon);
    for (i, ((value, lower), upper)) in fc.point.into_iter().zip(lower).zip(upper).enumerate() {
        if !(value.is_finite() && lower.is_finite() && upper.is_finite()) {
            return Err(AnalyticsError::Model {
                model: model.name(),
                reason: "the forecast is not finite (values too large?)".into(),
            });
        }
        let steps = i64::try_from(i + 1).unwrap_or(i64::MAX);
        out.push(ForecastPoint {
            ts: last_ts.saturating_add(step_ms.saturating_mul(steps)),
            value,
            lower,
            upper,
        });
    }
    Ok(Forecast { model, points: out })
}

/// The points as values on a grid of `step` from the first point (nearest step; gaps filled
/// linearly), and the time of the last one.
fn regular(points: &[(i64, f64)], step: i64) -> Result<(i64, Vec<f64>), AnalyticsError> {
    let mut pts: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    pts.sort_by_key(|p| p.0);
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return Ok((0, Vec::new()));
    };
    let index = |ts: i64| ((i128::from(ts) - i128::from(first.0)) as f64 / step as f64).round();
    let span = index(last.0);
    if span >= MAX_HISTORY as f64 {
        return Err(AnalyticsError::Invalid(format!(
            "the history spans more than {MAX_HISTORY} steps: widen the step or narrow the range"
        )));
    }
    let len = span as usize + 1;
    let last_ts = first.0.saturating_add(step.saturating_mul(span as i64));
    let mut grid: Vec<Option<f64>> = vec![None; len];
    for &(ts, v) in &pts {
        grid[index(ts) as usize] = Some(v); // a later point of the same step wins
    }
    let mut out = Vec::with_capacity(len);
    let mut prev: Option<(usize, f64)> = None;
    for (i, slot) in grid.iter().enumerate() {
        let Some(v) = *slot else { continue };
        if let Some((j, pv)) = prev {
            for k in j + 1..i {
                out.push(pv + (v - pv) * (k - j) as f64 / (i - j) as f64);
            }
        }
        out.push(v);
        prev = Some((i, v));
    }
    Ok((last_ts, out))
}

/// A least-squares line through a series.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearTrend {
    /// Change per hour.
    pub slope_per_hour: f64,
    /// Share of the variance the line explains (1 for a series that does not vary).
    pub r2: f64,
    /// Whether the slope stands out of the noise (at least 3 standard errors from zero).
    pub significant: bool,
    /// The time of the last point, and the line's value there.
    pub last_ts: i64,
    pub last_fitted: f64,
}

impl LinearTrend {
    /// When the line reaches `threshold`, if it is heading there (it may already be on it);
    /// `None` when the trend is flat, not significant, or moving away (including past it).
    pub fn eta(&self, threshold: f64) -> Option<i64> {
        let gap = threshold - self.last_fitted;
        if gap == 0.0 {
            return Some(self.last_ts);
        }
        if !self.significant
            || self.slope_per_hour == 0.0
            || gap.signum() != self.slope_per_hour.signum()
        {
            return None;
        }
        let eta = self.last_ts as f64 + gap / self.slope_per_hour * 3_600_000.0;
        // Beyond the representable times is "never" for any purpose.
        (eta.is_finite() && eta < i64::MAX as f64).then_some(eta.round() as i64)
    }
}

/// The least-squares line through the points, fitted twice: the second time without the
/// points whose residual is an outlier (robust z above 3.5), so that a spike does not tilt it.
/// `None` with fewer than [`MIN_TREND_POINTS`] finite points or all at one time.
pub fn linear_trend(points: &[(i64, f64)]) -> Option<LinearTrend> {
    let pts: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let first = fit_line(&pts)?;
    let residuals: Vec<f64> = pts.iter().map(|&(ts, v)| v - first.at(ts)).collect();
    let abs: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
    let mad = median(&abs) * 1.4826;
    let fit = if mad > 0.0 {
        let kept: Vec<(i64, f64)> = pts
            .iter()
            .zip(&residuals)
            .filter(|(_, r)| r.abs() <= 3.5 * mad)
            .map(|(p, _)| *p)
            .collect();
        fit_line(&kept).unwrap_or(first)
    } else {
        first
    };
    let last_ts = pts.iter().map(|p| p.0).max()?;
    let slope_per_hour = fit.slope * 3_600_000.0;
    if !(slope_per_hour.is_finite() && fit.at(last_ts).is_finite()) {
        return None; // values too large to fit
    }
    Some(LinearTrend {
        slope_per_hour,
        r2: fit.r2,
        significant: fit.t.abs() >= MIN_SLOPE_T,
        last_ts,
        last_fitted: fit.at(last_ts),
    })
}

/// The result of predictive maintenance: when the trend reaches the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TimeToThreshold {
    pub eta_ts: i64,
    pub slope_per_hour: f64,
    pub r2: f64,
}

/// When the series' linear trend (see [`linear_trend`]) reaches `threshold`; `None` when there
/// is no trend or it does not head there.
pub fn time_to_threshold(points: &[(i64, f64)], threshold: f64) -> Option<TimeToThreshold> {
    let trend = linear_trend(points)?;
    Some(TimeToThreshold {
        eta_ts: trend.eta(threshold)?,
        slope_per_hour: trend.slope_per_hour,
        r2: trend.r2,
    })
}

/// `value = intercept + slope * (ts - t0)`, its r² and the slope's t statistic.
#[derive(Debug, Clone, Copy)]
struct Line {
    t0: i64,
    intercept: f64,
    slope: f64,
    r2: f64,
    t: f64,
}

impl Line {
    fn at(&self, ts: i64) -> f64 {
        self.intercept + self.slope * (i128::from(ts) - i128::from(self.t0)) as f64
    }
}

fn fit_line(pts: &[(i64, f64)]) -> Option<Line> {
    if pts.len() < MIN_TREND_POINTS {
        return None;
    }
    // Times relative to the first point keep the sums precise.
    let t0 = pts[0].0;
    let n = pts.len() as f64;
    let x = |ts: i64| (i128::from(ts) - i128::from(t0)) as f64;
    let mx = pts.iter().map(|p| x(p.0)).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(ts, v) in pts {
        let (dx, dy) = (x(ts) - mx, v - my);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 || !sxx.is_finite() || !syy.is_finite() {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_res = (syy - slope * sxy).max(0.0);
    let r2 = if syy > 0.0 { 1.0 - ss_res / syy } else { 1.0 };
    let se = (ss_res / (n - 2.0) / sxx).sqrt();
    let t = if se > 0.0 {
        slope / se
    } else if slope == 0.0 {
        0.0
    } else {
        f64::INFINITY // a perfect line
    };
    Some(Line {
        t0,
        intercept,
        slope,
        r2: r2.clamp(0.0, 1.0),
        t,
    })
}
