//! `patients`: a wearable on a patient at rest. Heart rate wanders around the patient's own
//! resting rate (mean-reverting noise), SpO2 around 97 %, skin temperature around 36.6 °C.
//! Now and then (about every 30 minutes) an episode of tachycardia: the heart rate climbs above
//! 120 bpm for one to two minutes, SpO2 dips, then both recover.

use serde_json::{json, Value};

use super::{num, Model, Values};
use crate::sim::rng::Rng;

/// A patient's wearable.
pub struct Wearable {
    rng: Rng,
    resting: f64,
    pub heart_rate: f64,
    spo2: f64,
    temperature: f64,
    /// Seconds left of the current episode (0 = none).
    pub episode_left: f64,
    episode_rate: f64,
}

impl Wearable {
    pub fn new(mut rng: Rng) -> Wearable {
        let resting = rng.range(58.0, 82.0);
        Wearable {
            resting,
            heart_rate: resting,
            spo2: 97.5,
            temperature: rng.range(36.3, 36.9),
            episode_left: 0.0,
            episode_rate: 0.0,
            rng,
        }
    }

    /// Starts an episode now (also what the random onset does).
    pub fn start_episode(&mut self) {
        self.episode_left = self.rng.range(60.0, 120.0);
        self.episode_rate = self.rng.range(128.0, 155.0);
    }
}

impl Model for Wearable {
    fn step(&mut self, _now_ms: i64, dt_s: f64) -> Values {
        if self.episode_left > 0.0 {
            self.episode_left -= dt_s;
        } else if self.rng.chance(dt_s / 1800.0) {
            self.start_episode();
        }
        let (target, spo2_target) = if self.episode_left > 0.0 {
            (self.episode_rate, 94.0)
        } else {
            (self.resting, 97.5)
        };
        // Mean reversion with a ~8 s time constant, plus beat-to-beat variability.
        let k = (dt_s / 8.0).min(1.0);
        self.heart_rate += (target - self.heart_rate) * k + 1.5 * self.rng.normal() * k.sqrt();
        self.spo2 += (spo2_target - self.spo2) * k + 0.3 * self.rng.normal() * k.sqrt();
        self.spo2 = self.spo2.clamp(85.0, 100.0);
        self.temperature += (36.6 - self.temperature) * dt_s / 3600.0 + 0.01 * self.rng.normal();
        let mut v = Values::new();
        v.insert("heart_rate".into(), num(self.heart_rate, 0));
        v.insert("spo2".into(), num(self.spo2, 1));
        v.insert("temperature".into(), num(self.temperature, 2));
        v
    }

    fn rpc(&mut self, method: &str, _params: &Value) -> Result<Value, String> {
        match method {
            "getVitals" => Ok(
                json!({"heart_rate": num(self.heart_rate, 0), "episode": self.episode_left > 0.0}),
            ),
            other => Err(format!("unknown method {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::models::MONDAY_MS;

    #[test]
    fn episodes_of_tachycardia_come_and_go() {
        let mut w = Wearable::new(Rng::new(11, 0));
        let (mut high, mut calm_high, mut episodes, mut was) = (0, 0, 0, false);
        for i in 0..6 * 3600 {
            let v = w.step(MONDAY_MS + i * 1000, 1.0);
            let hr = v["heart_rate"].as_f64().unwrap();
            let now = w.episode_left > 0.0;
            if now && !was {
                episodes += 1;
            }
            was = now;
            if hr > 120.0 {
                high += 1;
                if !now {
                    calm_high += 1;
                }
            }
            let spo2 = v["spo2"].as_f64().unwrap();
            assert!((85.0..=100.0).contains(&spo2));
        }
        assert!(episodes >= 3, "{episodes} episodes in 6 h");
        assert!(
            high > 60 * episodes / 2,
            "{high} s above 120 bpm in {episodes} episodes"
        );
        // Outside episodes the rate is near rest; only the recovery's first seconds are high.
        assert!(
            calm_high < 30 * episodes,
            "{calm_high} s high outside episodes"
        );
    }

    #[test]
    fn forced_episode_exceeds_120_for_a_minute() {
        let mut w = Wearable::new(Rng::new(12, 0));
        w.start_episode();
        let hr: Vec<f64> = (0..60)
            .map(|i| {
                w.step(MONDAY_MS + i * 1000, 1.0)["heart_rate"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert!(hr[30..].iter().all(|&h| h > 120.0), "{hr:?}");
    }
}
