//! The analytics functions over synthetic series: a spike is found and nothing else, flat and
//! quantised windows neither fail nor invent anomalies, a ramp's forecast continues the ramp,
//! a seasonal forecast keeps the season, and a drifting vibration series gets an ETA close to
//! its true crossing while a flat one gets none.

use ib_core::analytics::{
    anomalies, forecast, linear_trend, time_to_threshold, AnalyticsError, ForecastModel,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

/// Deterministic noise in [-1, 1] (xorshift).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn series(n: usize, step: i64, mut f: impl FnMut(usize) -> f64) -> Vec<(i64, f64)> {
    (0..n).map(|i| (T0 + i as i64 * step, f(i))).collect()
}

#[test]
fn a_spike_is_found_and_nothing_else() {
    let mut noise = Noise(42);
    let mut pts = series(1_000, MIN, |i| {
        20.0 + 3.0 * (i as f64 / 60.0).sin() + 0.2 * noise.next()
    });
    pts[500].1 += 40.0;
    pts[700].1 -= 40.0;
    let found = anomalies(&pts, 3.5);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].ts, pts[500].0);
    assert_eq!(found[0].value, pts[500].1);
    assert!(found[0].score > 3.5, "{found:?}");
    assert_eq!(found[1].ts, pts[700].0);
    assert!(
        found[1].score < -3.5,
        "below the median is negative: {found:?}"
    );
}

#[test]
fn flat_and_quantised_windows_give_no_error_and_no_invented_anomalies() {
    let flat = series(500, MIN, |_| 21.5);
    assert!(anomalies(&flat, 3.5).is_empty());
    // On/off: half the points one value, half the other.
    let quantised = series(500, MIN, |i| if i % 2 == 0 { 0.0 } else { 1.0 });
    assert!(anomalies(&quantised, 3.5).is_empty());
    // Readings in 0.1 steps, mostly on one value: no deviation on either side of the median
    // (augurs' medians would give one of float noise, and every off-value a score of 10^12).
    for (low, high) in [(-0.7, 0.5), (-0.9, 0.8), (-0.2, 0.2)] {
        let mut noise = Noise(9);
        let pts = series(1_000, MIN, |_| match noise.next() {
            r if r < low => 19.9,
            r if r > high => 20.1,
            _ => 20.0,
        });
        let found = anomalies(&pts, 3.5);
        assert!(found.is_empty(), "{low} {high}: {} found", found.len());
    }
    assert!(anomalies(&[], 3.5).is_empty());
    assert!(anomalies(&[(T0, 1.0), (T0 + 1, 100.0)], 3.5).is_empty());
}

#[test]
fn a_spike_in_a_flat_window_falls_back_to_the_z_score() {
    // The MAD is 0 here (division by zero in augurs): the plain z-score still finds it.
    let mut pts = series(200, MIN, |_| 5.0);
    pts[120].1 = 9.0;
    let found = anomalies(&pts, 3.5);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].ts, pts[120].0);
}

#[test]
fn a_ramps_forecast_continues_the_ramp() {
    let mut noise = Noise(7);
    let hist = series(48, HOUR, |i| 100.0 + 2.5 * i as f64 + 0.1 * noise.next());
    let fc = forecast(&hist, HOUR, 6, 0.95, None).unwrap();
    assert_eq!(fc.model, ForecastModel::Ets);
    assert_eq!(fc.points.len(), 6);
    for (k, p) in fc.points.iter().enumerate() {
        let i = 48 + k;
        assert_eq!(p.ts, T0 + i as i64 * HOUR);
        let truth = 100.0 + 2.5 * i as f64;
        assert!(
            (p.value - truth).abs() < 1.0,
            "step {k}: {} vs {truth}",
            p.value
        );
        assert!(p.lower <= p.value && p.value <= p.upper, "{p:?}");
    }
    // The interval widens with the horizon.
    let width = |p: &ib_core::analytics::ForecastPoint| p.upper - p.lower;
    assert!(width(&fc.points[5]) >= width(&fc.points[0]));
}

#[test]
fn gaps_are_filled_and_a_flat_series_forecasts_flat() {
    let mut hist = series(20, MIN, |i| 10.0 + i as f64);
    hist.retain(|p| (p.0 - T0) / MIN % 5 != 3); // missing buckets
    let fc = forecast(&hist, MIN, 3, 0.9, None).unwrap();
    assert_eq!(fc.points[0].ts, T0 + 20 * MIN);
    assert!((fc.points[0].value - 30.0).abs() < 1.0, "{:?}", fc.points);
    let flat = series(30, MIN, |_| 3.0);
    let fc = forecast(&flat, MIN, 4, 0.95, None).unwrap();
    assert!(fc
        .points
        .iter()
        .all(|p| p.value == 3.0 && p.lower == 3.0 && p.upper == 3.0));
}

#[test]
fn a_seasonal_forecast_keeps_the_season() {
    // Hourly consumption with a daily cycle: low at night, high in the evening.
    let mut noise = Noise(3);
    let day = |i: usize| 50.0 + 20.0 * (i as f64 * std::f64::consts::TAU / 24.0).sin();
    let hist = series(24 * 14, HOUR, |i| day(i) + noise.next());
    let fc = forecast(&hist, HOUR, 24, 0.95, Some(24)).unwrap();
    assert_eq!(fc.model, ForecastModel::Mstl);
    for (k, p) in fc.points.iter().enumerate() {
        let truth = day(24 * 14 + k);
        assert!(
            (p.value - truth).abs() < 4.0,
            "hour {k}: {} vs {truth}",
            p.value
        );
        assert!(p.lower <= p.value && p.value <= p.upper);
    }
}

#[test]
fn too_little_history_and_bad_parameters_are_refused() {
    let short = series(7, HOUR, |i| i as f64);
    assert_eq!(
        forecast(&short, HOUR, 3, 0.95, None),
        Err(AnalyticsError::TooLittleHistory { have: 7, need: 8 })
    );
    let day = series(40, HOUR, |i| i as f64);
    assert_eq!(
        forecast(&day, HOUR, 3, 0.95, Some(24)),
        Err(AnalyticsError::TooLittleHistory { have: 40, need: 48 })
    );
    assert!(matches!(
        forecast(&day, 0, 3, 0.95, None),
        Err(AnalyticsError::Invalid(_))
    ));
    assert!(matches!(
        forecast(&day, HOUR, 0, 0.95, None),
        Err(AnalyticsError::Invalid(_))
    ));
    assert!(matches!(
        forecast(&day, HOUR, 3, 1.5, None),
        Err(AnalyticsError::Invalid(_))
    ));
    assert!(matches!(
        forecast(&day, HOUR, 3, 0.95, Some(1)),
        Err(AnalyticsError::Invalid(_))
    ));
    // Two points a year apart on a one-second grid.
    let sparse = [(T0, 1.0), (T0 + 365 * 24 * HOUR, 2.0)];
    assert!(matches!(
        forecast(&sparse, 1_000, 3, 0.95, None),
        Err(AnalyticsError::Invalid(_))
    ));
}

#[test]
fn a_drifting_vibration_series_gets_an_eta_close_to_the_true_crossing() {
    // Bearing vibration (mm/s RMS) every 10 minutes for a week: 2.0 + 0.01 per hour, noisy,
    // with a few knocks; the limit 4.5 is crossed at hour 250 (82 hours after the last point).
    let mut noise = Noise(11);
    let step = 10 * MIN;
    let mut pts = series(6 * 24 * 7, step, |i| {
        2.0 + 0.01 * (i as f64 / 6.0) + 0.15 * noise.next()
    });
    for i in [100, 400, 900] {
        pts[i].1 += 3.0;
    }
    let truth = T0 + 250 * HOUR;
    let t = time_to_threshold(&pts, 4.5).expect("a rising trend heads for the limit");
    let err_h = (t.eta_ts - truth).abs() as f64 / HOUR as f64;
    assert!(err_h < 8.0, "ETA off by {err_h:.1} h");
    assert!((t.slope_per_hour - 0.01).abs() < 0.001, "{t:?}");
    assert!(t.r2 > 0.8, "{t:?}");
    // Moving away from a limit below: no ETA, but the trend is there.
    assert_eq!(time_to_threshold(&pts, 1.0), None);
    assert!(linear_trend(&pts).unwrap().significant);
}

#[test]
fn a_flat_series_gets_no_eta() {
    let mut noise = Noise(5);
    let noisy = series(1_000, 10 * MIN, |_| 2.0 + 0.15 * noise.next());
    assert_eq!(time_to_threshold(&noisy, 4.5), None);
    assert_eq!(time_to_threshold(&noisy, 0.5), None);
    let trend = linear_trend(&noisy).unwrap();
    assert!(!trend.significant && trend.r2 < 0.05, "{trend:?}");
    let flat = series(100, MIN, |_| 2.0);
    assert_eq!(time_to_threshold(&flat, 4.5), None);
    let trend = linear_trend(&flat).unwrap();
    assert_eq!((trend.slope_per_hour, trend.r2), (0.0, 1.0));
    // Already on the threshold: now.
    assert_eq!(
        time_to_threshold(&flat, 2.0).map(|t| t.eta_ts),
        Some(T0 + 99 * MIN)
    );
    assert_eq!(linear_trend(&flat[..2]), None);
}

#[test]
fn a_falling_level_gets_an_eta_for_a_limit_below() {
    // A tank draining 1.5 % per hour from 80 %: 20 % is reached at hour 40.
    let pts = series(24, HOUR, |i| 80.0 - 1.5 * i as f64);
    let t = time_to_threshold(&pts, 20.0).unwrap();
    assert_eq!(t.eta_ts, T0 + 40 * HOUR);
    assert!((t.slope_per_hour + 1.5).abs() < 1e-9);
    assert!((t.r2 - 1.0).abs() < 1e-9);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Whatever the series (short, gappy, extreme, flat, tiny steps), the functions answer with
    /// finite numbers or a refusal, never a panic.
    #[test]
    fn any_series_gives_finite_answers_or_a_refusal(
        values in proptest::collection::vec(
            proptest::prop_oneof![-1e6f64..1e6, proptest::prelude::Just(0.0), -1e300f64..1e300],
            0..80,
        ),
        gaps in proptest::collection::vec(1i64..4, 80),
        season in proptest::option::of(0usize..40),
        horizon in 1usize..30,
    ) {
        let mut ts = T0;
        let pts: Vec<(i64, f64)> = values
            .iter()
            .zip(&gaps)
            .map(|(&v, &g)| {
                ts += g * MIN;
                (ts, v)
            })
            .collect();
        for a in anomalies(&pts, 3.5) {
            proptest::prop_assert!(a.score.is_finite() && a.score.abs() > 3.5);
        }
        if let Ok(fc) = forecast(&pts, MIN, horizon, 0.95, season) {
            proptest::prop_assert_eq!(fc.points.len(), horizon);
            for p in fc.points {
                proptest::prop_assert!(p.value.is_finite() && p.lower <= p.upper);
            }
        }
        if let Some(t) = linear_trend(&pts) {
            proptest::prop_assert!(t.slope_per_hour.is_finite() && (0.0..=1.0).contains(&t.r2));
            let _ = t.eta(0.0);
        }
    }
}
