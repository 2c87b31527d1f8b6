//! Change-point detection: where a series' level shifts (a pump's current stepping up when a
//! bearing starts to go, a meter's consumption changing regime). PELT (Killick, Fearnhead and
//! Eckley, 2012) with the Gaussian change-in-mean cost: the optimal segmentation under a
//! penalty per change, in linear time on average thanks to its pruning.
//!
//! The noise level is estimated robustly from the series itself (the median absolute first
//! difference, which a few level shifts barely move), so the penalty is in units of the noise:
//! `penalty × ln(n)` per change (3 by default, a little above BIC's 2, to keep false changes
//! rare). Written here rather than taken from augurs-changepoint, whose Bayesian detector brings
//! two versions of nalgebra and rayon into the build for the same answer on level shifts.

use serde::Serialize;
use utoipa::ToSchema;

use super::AnalyticsError;

/// The default penalty multiplier (× ln n, in noise units).
pub const DEFAULT_PENALTY: f64 = 3.0;
/// The default shortest segment, in points.
pub const DEFAULT_MIN_SIZE: usize = 5;
/// Most points one detection examines.
pub const MAX_POINTS: usize = 20_000;

/// A shift of level between two segments.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChangePoint {
    /// The first point of the new segment.
    pub ts: i64,
    /// The mean of the segment before.
    pub before: f64,
    /// The mean of the segment from `ts`.
    pub after: f64,
}

/// The change points of `points` (oldest first), oldest first. Non-finite values are ignored;
/// a series shorter than two segments, or without noise and without shifts, has none.
pub fn change_points(
    points: &[(i64, f64)],
    penalty: f64,
    min_size: usize,
) -> Result<Vec<ChangePoint>, AnalyticsError> {
    if !(penalty.is_finite() && penalty > 0.0) {
        return Err(AnalyticsError::Invalid(
            "penalty must be a positive number".into(),
        ));
    }
    if min_size < 2 {
        return Err(AnalyticsError::Invalid(
            "min_size must be at least 2".into(),
        ));
    }
    let pts: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    if pts.len() > MAX_POINTS {
        return Err(AnalyticsError::Invalid(format!(
            "at most {MAX_POINTS} points per detection, not {}",
            pts.len()
        )));
    }
    let n = pts.len();
    if n < 2 * min_size {
        return Ok(Vec::new());
    }
    let y: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let Some(sigma2) = noise_variance(&y) else {
        return Ok(Vec::new()); // constant
    };
    let cuts = pelt(&y, sigma2, penalty * (n as f64).ln(), min_size);
    let mean = |a: usize, b: usize| y[a..b].iter().sum::<f64>() / (b - a) as f64;
    let mut bounds = vec![0];
    bounds.extend(&cuts);
    bounds.push(n);
    Ok(bounds
        .windows(3)
        .map(|w| ChangePoint {
            ts: pts[w[1]].0,
            before: mean(w[0], w[1]),
            after: mean(w[1], w[2]),
        })
        .collect())
}

/// The noise variance from first differences: (1.4826 · median |diff|)² / 2, or, when most
/// differences are zero (a quantised or stepwise signal), their mean square / 2. `None`
/// when the series is constant.
fn noise_variance(y: &[f64]) -> Option<f64> {
    let mut d: Vec<f64> = y.windows(2).map(|w| w[1] - w[0]).collect();
    let abs: Vec<f64> = d.iter().map(|x| x.abs()).collect();
    let mad = super::median(&abs);
    if mad > 0.0 {
        return Some((1.4826 * mad).powi(2) / 2.0);
    }
    let ms = d.iter_mut().map(|x| *x * *x).sum::<f64>() / d.len() as f64;
    (ms > 0.0).then_some(ms / 2.0)
}

/// PELT: indices where a new segment starts, ascending.
fn pelt(y: &[f64], sigma2: f64, beta: f64, min_size: usize) -> Vec<usize> {
    let n = y.len();
    let mut s1 = vec![0.0; n + 1];
    let mut s2 = vec![0.0; n + 1];
    for (i, v) in y.iter().enumerate() {
        s1[i + 1] = s1[i] + v;
        s2[i + 1] = s2[i] + v * v;
    }
    // The cost of y[a..b] as one segment: its squared deviations from its mean, in noise units.
    let cost = |a: usize, b: usize| {
        let (sum, len) = (s1[b] - s1[a], (b - a) as f64);
        ((s2[b] - s2[a]) - sum * sum / len).max(0.0) / sigma2
    };
    let mut f = vec![f64::INFINITY; n + 1];
    let mut last = vec![0usize; n + 1];
    f[0] = -beta;
    let mut candidates: Vec<usize> = vec![0];
    for t in min_size..=n {
        let mut best = (f64::INFINITY, 0);
        for &s in candidates.iter().filter(|&&s| t - s >= min_size) {
            let v = f[s] + cost(s, t) + beta;
            if v < best.0 {
                best = (v, s);
            }
        }
        (f[t], last[t]) = best;
        // A start that cannot be optimal now never will be (the pruning of PELT); one still
        // too close to `t` to be used is kept.
        candidates.retain(|&s| t - s < min_size || f[s] + cost(s, t) <= f[t]);
        candidates.push(t);
    }
    let mut cuts = Vec::new();
    let mut t = n;
    while t > 0 {
        let s = last[t];
        if s > 0 {
            cuts.push(s);
        }
        t = s;
    }
    cuts.reverse();
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic noise in [-1, 1] (a linear congruential generator).
    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn series(levels: &[(usize, f64)], amplitude: f64, seed: u64) -> Vec<(i64, f64)> {
        let n: usize = levels.iter().map(|l| l.0).sum();
        let e = noise(seed, n);
        let mut out = Vec::new();
        for &(len, level) in levels {
            for _ in 0..len {
                let i = out.len();
                out.push((i as i64 * 1000, level + amplitude * e[i]));
            }
        }
        out
    }

    #[test]
    fn finds_level_shifts_where_they_are() {
        let pts = series(&[(200, 10.0), (150, 14.0), (100, 11.0)], 1.0, 7);
        let cps = change_points(&pts, DEFAULT_PENALTY, DEFAULT_MIN_SIZE).unwrap();
        assert_eq!(cps.len(), 2, "{cps:?}");
        assert!((cps[0].ts - 200_000).abs() <= 3_000, "{cps:?}");
        assert!((cps[1].ts - 350_000).abs() <= 3_000, "{cps:?}");
        assert!((cps[0].before - 10.0).abs() < 0.3 && (cps[0].after - 14.0).abs() < 0.3);
        assert!((cps[1].after - 11.0).abs() < 0.3);
    }

    #[test]
    fn noise_alone_has_no_change_points() {
        for seed in 0..20 {
            let pts = series(&[(1000, 5.0)], 2.0, seed);
            let cps = change_points(&pts, DEFAULT_PENALTY, DEFAULT_MIN_SIZE).unwrap();
            assert!(cps.is_empty(), "seed {seed}: {cps:?}");
        }
    }

    #[test]
    fn bad_parameters_and_short_series() {
        let pts = series(&[(50, 1.0), (50, 9.0)], 0.1, 1);
        assert!(change_points(&pts, 0.0, 5).is_err());
        assert!(change_points(&pts, f64::NAN, 5).is_err());
        assert!(change_points(&pts, 3.0, 1).is_err());
        assert!(change_points(&pts[..9], 3.0, 5).unwrap().is_empty());
        let flat: Vec<(i64, f64)> = (0..100).map(|i| (i, 4.0)).collect();
        assert!(change_points(&flat, 3.0, 5).unwrap().is_empty());
    }

    proptest! {
        /// Any input gives an answer or a clear error, never a panic; change points are inside
        /// the series, in order, at least `min_size` apart.
        #[test]
        fn any_series(values in proptest::collection::vec(proptest::num::f64::ANY, 0..400),
                      min_size in 2usize..20) {
            let pts: Vec<(i64, f64)> =
                values.iter().enumerate().map(|(i, v)| (i as i64, *v)).collect();
            if let Ok(cps) = change_points(&pts, DEFAULT_PENALTY, min_size) {
                let mut prev = 0i64;
                for c in &cps {
                    prop_assert!(c.ts >= prev + min_size as i64);
                    prev = c.ts;
                }
            }
        }
    }
}
