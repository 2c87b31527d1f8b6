//! The analytics routes in process: telemetry written through the platform (committed before
//! the query), then anomalies, forecasts and time-to-threshold read back through the router
//! with their 400s and 404s, and the documented shapes.

use std::sync::Arc;

use api::auth::Auth;
use api::{router, ApiState};

use axum::http::StatusCode;
use ib_core::testing::TestPlatform;
use serde_json::{json, Value};

mod common;
use common::call;

const PW: &str = "analytics-pass-1";
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

struct Fx {
    app: axum::Router,
    t: TestPlatform,
    token: String,
    device: String,
    device_token: String,
    /// A whole hour ten days ago: the series start here.
    t0: i64,
}

async fn fixture() -> Fx {
    let t = TestPlatform::new();
    let (auth, _) = Auth::open(&t.platform, Some(PW), Default::default()).unwrap();
    let state = ApiState::new(t.platform.clone(), Arc::new(auth), &Default::default());
    let app = router(state, 1 << 20);
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": PW})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let (status, d) = call(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&token),
        Some(json!({"name": "pump-7"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let now = ib_core::db::now_ms();
    Fx {
        app,
        t,
        token,
        device: d["id"].as_str().unwrap().to_string(),
        device_token: d["access_token"].as_str().unwrap().to_string(),
        t0: now - now % HOUR - 10 * 24 * HOUR,
    }
}

impl Fx {
    /// Posts `(ts, value)` points of `key` as the device and waits for their commit.
    async fn telemetry(&self, key: &str, points: &[(i64, f64)]) {
        let p = &self.t.platform;
        let ctx = p.auth_token(&self.device_token).unwrap();
        for batch in points.chunks(500) {
            let body: Vec<Value> = batch
                .iter()
                .map(|&(ts, v)| json!({"ts": ts, "values": {key: v}}))
                .collect();
            let commit = p
                .post_telemetry(&ctx, Value::Array(body).to_string().as_bytes())
                .unwrap();
            commit.await.unwrap();
        }
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let uri = format!("/api/v1/devices/{}/analytics/{path_and_query}", self.device);
        call(&self.app, "GET", &uri, Some(&self.token), None).await
    }
}

/// Deterministic noise in [-1, 1] (xorshift).
fn noise(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn assert_invalid(status: StatusCode, v: &Value, needle: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn anomalies_finds_the_spike_and_refuses_bad_parameters() {
    let fx = fixture().await;
    let mut n = noise(1);
    let mut pts: Vec<(i64, f64)> = (0..600)
        .map(|i| {
            let x = i as f64;
            (fx.t0 + i * MIN, 60.0 + 5.0 * (x / 50.0).sin() + 0.3 * n())
        })
        .collect();
    pts[321].1 = 95.0;
    fx.telemetry("temp", &pts).await;
    fx.telemetry(
        "door",
        &(0..100).map(|i| (fx.t0 + i * MIN, 1.0)).collect::<Vec<_>>(),
    )
    .await;

    let (status, v) = fx.get("anomalies?key=temp").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["key"], "temp");
    assert_eq!(v["examined"], 600);
    let found = v["anomalies"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["ts"], pts[321].0);
    assert_eq!(found[0]["value"], 95.0);
    assert!(found[0]["score"].as_f64().unwrap() > 3.5, "{v}");

    // A range without the spike, a higher threshold, a flat series: nothing.
    let (_, v) = fx
        .get(&format!(
            "anomalies?key=temp&from={}&to={}",
            fx.t0, pts[300].0
        ))
        .await;
    assert_eq!(
        (
            v["examined"].as_u64(),
            v["anomalies"].as_array().unwrap().len()
        ),
        (Some(301), 0)
    );
    let (_, v) = fx.get("anomalies?key=temp&threshold=100").await;
    assert_eq!(v["anomalies"], json!([]));
    let (status, v) = fx.get("anomalies?key=door").await;
    assert_eq!(
        (status, &v["anomalies"]),
        (StatusCode::OK, &json!([])),
        "{v}"
    );
    let (status, v) = fx.get("anomalies?key=nothing-here").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!({"key": "nothing-here", "examined": 0, "anomalies": []})
    );

    let (status, v) = fx.get("anomalies").await;
    assert_invalid(status, &v, "key");
    let (status, v) = fx.get("anomalies?key=").await;
    assert_invalid(status, &v, "key");
    let (status, v) = fx.get("anomalies?key=temp&threshold=-1").await;
    assert_invalid(status, &v, "threshold");
    let (status, v) = fx.get("anomalies?key=temp&threshold=abc").await;
    assert_invalid(status, &v, "threshold");
    let (status, v) = fx.get("anomalies?key=temp&from=10&to=5").await;
    assert_invalid(status, &v, "from");
    let (status, v) = call(
        &fx.app,
        "GET",
        "/api/v1/devices/no-such-device/analytics/anomalies?key=temp",
        Some(&fx.token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, _) = call(
        &fx.app,
        "GET",
        &format!("/api/v1/devices/{}/analytics/anomalies?key=temp", fx.device),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forecast_continues_consumption_with_and_without_a_season() {
    let fx = fixture().await;
    // Energy meter power (kW) every 10 minutes for 6 days: a slow rise and a daily cycle.
    let mut n = noise(2);
    let hours = 6 * 24;
    let truth = |h: f64| 40.0 + 0.05 * h + 10.0 * (h * std::f64::consts::TAU / 24.0).sin();
    let pts: Vec<(i64, f64)> = (0..hours * 6)
        .map(|i| {
            let h = i as f64 / 6.0;
            (fx.t0 + i * 10 * MIN, truth(h) + 0.5 * n())
        })
        .collect();
    fx.telemetry("power", &pts).await;
    let to = fx.t0 + hours * HOUR - 1;
    let range = format!("key=power&from={}&to={to}&interval={HOUR}", fx.t0);

    let (status, v) = fx
        .get(&format!("forecast?{range}&horizon=24&season=24"))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["key"].as_str(), v["model"].as_str()),
        (Some("power"), Some("MSTL"))
    );
    assert_eq!(v["interval"], HOUR);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    for (k, p) in points.iter().enumerate() {
        let ts = p["ts"].as_i64().unwrap();
        assert_eq!(ts, fx.t0 + (hours + k as i64) * HOUR, "{p}");
        // The hourly average of the cycle sits mid-hour.
        let want = truth((hours + k as i64) as f64 + 5.0 / 12.0);
        let (value, lo, hi) = (
            p["value"].as_f64().unwrap(),
            p["lower"].as_f64().unwrap(),
            p["upper"].as_f64().unwrap(),
        );
        assert!((value - want).abs() < 3.0, "hour {k}: {value} vs {want}");
        assert!(lo <= value && value <= hi, "{p}");
    }

    let (status, v) = fx
        .get(&format!("forecast?{range}&horizon=3&level=0.8"))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "ETS");
    assert_eq!(v["points"].as_array().unwrap().len(), 3);
    // Defaults: 12 steps.
    let (_, v) = fx.get(&format!("forecast?{range}")).await;
    assert_eq!(v["points"].as_array().unwrap().len(), 12, "{v}");

    // Too little history: six days for two seasons of 73 hours, 5 hours, an unknown key.
    let (status, v) = fx.get(&format!("forecast?{range}&season=73")).await;
    assert_invalid(status, &v, "two seasons of 73");
    let short = format!(
        "key=power&from={}&to={}&interval={HOUR}",
        fx.t0,
        fx.t0 + 5 * HOUR - 1
    );
    let (status, v) = fx.get(&format!("forecast?{short}")).await;
    assert_invalid(status, &v, "too little history: 5 points");
    let (status, v) = fx.get(&format!("forecast?key=nope&interval={HOUR}")).await;
    assert_invalid(status, &v, "too little history: 0 points");

    for (query, needle) in [
        (format!("key=power&from={}", fx.t0), "interval"),
        (format!("{range}&interval=0"), "interval"),
        (format!("key=power&interval={HOUR}&horizon=0"), "horizon"),
        (format!("key=power&interval={HOUR}&horizon=5000"), "horizon"),
        (format!("{range}&level=1.5"), "level"),
        (format!("{range}&season=1"), "season"),
        (format!("{range}&season=18446744073709551615"), "season"),
        (format!("key=power&from=-5&interval={HOUR}"), "1970"),
        (
            format!("key=power&from=0&to={to}&interval=1000"),
            "intervals",
        ),
        (format!("key=power&from=5&to=1&interval={HOUR}"), "from"),
    ] {
        let (status, v) = fx.get(&format!("forecast?{query}")).await;
        assert_invalid(status, &v, needle);
    }
}

#[tokio::test]
async fn time_to_threshold_predicts_the_crossing() {
    let fx = fixture().await;
    // Vibration RMS every 5 minutes for 4 days: 2.0 mm/s rising 0.02 per hour, with knocks.
    let mut n = noise(3);
    let mut pts: Vec<(i64, f64)> = (0..4 * 24 * 12)
        .map(|i| {
            let h = i as f64 / 12.0;
            (fx.t0 + i * 5 * MIN, 2.0 + 0.02 * h + 0.1 * n())
        })
        .collect();
    for i in [50, 500, 900] {
        pts[i].1 += 4.0;
    }
    fx.telemetry("vib", &pts).await;
    fx.telemetry(
        "flat",
        &(0..200).map(|i| (fx.t0 + i * MIN, 7.0)).collect::<Vec<_>>(),
    )
    .await;

    // 4.5 mm/s is reached at hour 125.
    let (status, v) = fx.get("time-to-threshold?key=vib&threshold=4.5").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["key"].as_str(), v["threshold"].as_f64()),
        (Some("vib"), Some(4.5))
    );
    let eta = v["eta_ts"].as_i64().expect("an ETA");
    let off_h = (eta - (fx.t0 + 125 * HOUR)).abs() as f64 / HOUR as f64;
    assert!(off_h < 6.0, "ETA off by {off_h:.1} h: {v}");
    assert!(
        (v["slope_per_hour"].as_f64().unwrap() - 0.02).abs() < 0.003,
        "{v}"
    );
    assert!(v["r2"].as_f64().unwrap() > 0.8, "{v}");
    // The last day only, a window in ms.
    let (status, v) = fx
        .get(&format!(
            "time-to-threshold?key=vib&threshold=4.5&window={}",
            24 * HOUR
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["eta_ts"].is_i64(), "{v}");

    // Moving away from a lower limit; a flat series: no ETA.
    let (_, v) = fx.get("time-to-threshold?key=vib&threshold=1").await;
    assert!(
        v["eta_ts"].is_null() && v["slope_per_hour"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    let (status, v) = fx.get("time-to-threshold?key=flat&threshold=9").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"key": "flat", "threshold": 9.0, "eta_ts": null, "slope_per_hour": 0.0, "r2": 1.0})
    );

    let (status, v) = fx.get("time-to-threshold?key=nope&threshold=9").await;
    assert_invalid(status, &v, "too little history: 0 points");
    let (status, v) = fx.get("time-to-threshold?key=vib").await;
    assert_invalid(status, &v, "threshold");
    let (status, v) = fx.get("time-to-threshold?key=vib&threshold=inf").await;
    assert_invalid(status, &v, "threshold");
    let (status, v) = fx
        .get("time-to-threshold?key=vib&threshold=4&window=0")
        .await;
    assert_invalid(status, &v, "window");
}

#[tokio::test]
async fn the_document_describes_the_analytics_routes() {
    let (_, doc) = api::management().split_for_parts();
    let doc = api::openapi::finish(doc);
    for op in ["anomalies", "forecast", "time-to-threshold"] {
        let get = &doc["paths"][format!("/api/v1/devices/{{id}}/analytics/{op}")]["get"];
        assert_eq!(get["security"], json!([{"bearer": ["read"]}]), "{op}");
        assert_eq!(get["tags"], json!(["analytics"]), "{op}");
    }
    let schemas = &doc["components"]["schemas"];
    let eta = &schemas["ThresholdResponse"]["properties"]["eta_ts"];
    assert!(
        eta.to_string().contains("null"),
        "eta_ts is nullable: {eta}"
    );
    assert_eq!(schemas["ForecastModel"]["enum"], json!(["ETS", "MSTL"]));
    for s in [
        "AnomaliesResponse",
        "Anomaly",
        "ForecastResponse",
        "ForecastPoint",
    ] {
        assert!(schemas[s].is_object(), "{s} is in the document");
    }
}

#[tokio::test]
async fn change_points_find_the_level_shift() {
    let fx = fixture().await;
    let mut n = noise(3);
    // A pump's current: 4 A for 300 minutes, then 5.5 A (a bearing starts to go).
    let pts: Vec<(i64, f64)> = (0..500)
        .map(|i| {
            let level = if i < 300 { 4.0 } else { 5.5 };
            (fx.t0 + i * MIN, level + 0.2 * n())
        })
        .collect();
    fx.telemetry("current", &pts).await;
    let (status, v) = fx.get("change-points?key=current").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["key"].as_str(), v["examined"].as_u64()),
        (Some("current"), Some(500))
    );
    let cps = v["change_points"].as_array().unwrap();
    assert_eq!(cps.len(), 1, "{v}");
    let ts = cps[0]["ts"].as_i64().unwrap();
    assert!((ts - pts[300].0).abs() <= 2 * MIN, "{v}");
    assert!(
        (cps[0]["before"].as_f64().unwrap() - 4.0).abs() < 0.1,
        "{v}"
    );
    assert!((cps[0]["after"].as_f64().unwrap() - 5.5).abs() < 0.1, "{v}");
    // Before the shift: none.
    let (_, v) = fx
        .get(&format!("change-points?key=current&to={}", pts[250].0))
        .await;
    assert_eq!(v["change_points"], json!([]), "{v}");
    let (status, v) = fx.get("change-points?key=current&penalty=0").await;
    assert_invalid(status, &v, "penalty");
    let (status, v) = fx.get("change-points?key=current&min_size=1").await;
    assert_invalid(status, &v, "min_size");
    let (status, v) = fx.get("change-points?key=").await;
    assert_invalid(status, &v, "key");
}
