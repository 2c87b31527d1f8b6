//! `factory`: a machine that wears out. Its health falls at its own pace (a failure in 5 to 15
//! minutes), so vibration drifts upward, then temperature and power follow; at the failure level
//! it stops (power 0, status `failed`) until RPC `maintenance` restores it (also before failure).

use serde_json::{json, Value};

use super::{num, Model, Values};
use crate::sim::rng::Rng;

/// Vibration (mm/s RMS) at which the machine trips.
pub const FAILURE_VIBRATION: f64 = 11.0;
/// Vibration of a healthy machine, mm/s RMS.
const HEALTHY_VIBRATION: f64 = 2.0;

/// A machine on the shop floor.
pub struct Machine {
    rng: Rng,
    /// 1 = new, 0 = failure.
    pub health: f64,
    /// Health lost per second.
    wear: f64,
    pub failed: bool,
    /// Motor temperature, °C (lags behind its target).
    temperature: f64,
    rated_kw: f64,
}

impl Machine {
    pub fn new(mut rng: Rng) -> Machine {
        Machine {
            health: rng.range(0.6, 1.0),
            wear: 1.0 / rng.range(300.0, 900.0),
            failed: false,
            temperature: 45.0,
            rated_kw: rng.range(11.0, 22.0),
            rng,
        }
    }

    /// Vibration without noise for the current health.
    fn vibration(&self) -> f64 {
        HEALTHY_VIBRATION + (FAILURE_VIBRATION - HEALTHY_VIBRATION) * (1.0 - self.health).powf(1.5)
    }
}

impl Model for Machine {
    fn step(&mut self, _now_ms: i64, dt_s: f64) -> Values {
        if !self.failed {
            self.health = (self.health - self.wear * dt_s).max(0.0);
            if self.health <= 0.0 {
                self.failed = true;
            }
        }
        let (vibration, power, target) = if self.failed {
            (0.02 * self.rng.unit(), 0.0, 25.0)
        } else {
            let wear = 1.0 - self.health;
            let vibration = self.vibration() * (1.0 + 0.04 * self.rng.normal());
            let power = self.rated_kw * (0.85 + 0.25 * wear) * (1.0 + 0.02 * self.rng.normal());
            (vibration, power, 45.0 + 30.0 * wear)
        };
        // First-order lag towards the target, time constant 2 minutes.
        self.temperature += (target - self.temperature) * (dt_s / 120.0).min(1.0);
        let mut v = Values::new();
        v.insert("vibration".into(), num(vibration.max(0.0), 3));
        v.insert(
            "temperature".into(),
            num(self.temperature + 0.1 * self.rng.normal(), 2),
        );
        v.insert("power".into(), num(power.max(0.0), 2));
        v.insert(
            "status".into(),
            json!(if self.failed { "failed" } else { "running" }),
        );
        v
    }

    fn rpc(&mut self, method: &str, _params: &Value) -> Result<Value, String> {
        match method {
            "maintenance" => {
                let was = if self.failed { "failed" } else { "running" };
                self.health = 1.0;
                self.failed = false;
                Ok(json!({"ok": true, "was": was}))
            }
            "getStatus" => Ok(json!({"failed": self.failed, "health": num(self.health, 3)})),
            other => Err(format!("unknown method {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::models::MONDAY_MS;

    fn mean_vibration(m: &mut Machine, secs: i64) -> f64 {
        (0..secs)
            .map(|i| {
                m.step(MONDAY_MS + i * 1000, 1.0)["vibration"]
                    .as_f64()
                    .unwrap()
            })
            .sum::<f64>()
            / secs as f64
    }

    #[test]
    fn degrades_fails_and_recovers_after_maintenance() {
        let mut m = Machine::new(Rng::new(5, 0));
        let mut vib = Vec::new();
        let mut last = Values::new();
        for i in 0..1000 {
            last = m.step(MONDAY_MS + i * 1000, 1.0);
            if m.failed {
                break;
            }
            vib.push(last["vibration"].as_f64().unwrap());
        }
        assert!(m.failed, "fails within 15 minutes");
        let early = vib[..30].iter().sum::<f64>() / 30.0;
        let late = vib[vib.len() - 30..].iter().sum::<f64>() / 30.0;
        assert!(late > early + 3.0, "vibration drifts up: {early} -> {late}");
        assert!(late > FAILURE_VIBRATION * 0.8, "{late}");
        assert_eq!(last["status"], json!("failed"));
        assert_eq!(last["power"], json!(0.0));
        assert_eq!(m.step(MONDAY_MS, 1.0)["power"], json!(0.0), "stays stopped");
        m.rpc("maintenance", &Value::Null).unwrap();
        let after = m.step(MONDAY_MS, 1.0);
        assert_eq!(after["status"], json!("running"));
        assert!(after["power"].as_f64().unwrap() > 5.0);
        assert!(mean_vibration(&mut m, 10) < 3.0);
    }

    fn clone_near_failure() -> Machine {
        let mut m = Machine::new(Rng::new(6, 0));
        m.health = 0.05;
        m.wear = 0.0;
        m
    }

    #[test]
    fn maintenance_before_failure_resets_the_drift() {
        let mut m = clone_near_failure();
        let worn = mean_vibration(&mut m, 10);
        m.rpc("maintenance", &Value::Null).unwrap();
        assert!(mean_vibration(&mut m, 10) < worn - 5.0);
    }
}
