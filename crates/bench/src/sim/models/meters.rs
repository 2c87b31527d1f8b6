//! `meters`: a household electricity meter. Power follows a daily profile (night base load, a
//! morning peak, an evening peak) and a weekly one (weekends: later mornings, more daytime use),
//! with noise and appliances switching; `energy_kwh` is the running integral (never falls).

use serde_json::{json, Value};

use super::{day_of_week, hour_of_day, num, Model, Values};
use crate::sim::rng::Rng;

/// A smart meter.
pub struct SmartMeter {
    rng: Rng,
    /// Meter reading, kWh.
    pub energy_kwh: f64,
    /// This household's scale (1 = average).
    scale: f64,
}

/// The expected load in kW at `now_ms` for an average household, without noise.
pub fn profile_kw(now_ms: i64) -> f64 {
    let h = hour_of_day(now_ms);
    let weekend = day_of_week(now_ms) >= 5;
    let bump =
        |centre: f64, width: f64, height: f64| height * (-((h - centre) / width).powi(2)).exp();
    let base = 0.25;
    if weekend {
        base + bump(10.0, 2.5, 0.9) + bump(13.5, 2.0, 0.6) + bump(19.0, 2.0, 1.2)
    } else {
        base + bump(7.0, 1.0, 0.9) + bump(13.0, 2.0, 0.2) + bump(19.5, 1.8, 1.4)
    }
}

impl SmartMeter {
    pub fn new(mut rng: Rng) -> SmartMeter {
        SmartMeter {
            energy_kwh: rng.range(1_000.0, 30_000.0),
            scale: rng.range(0.6, 1.6),
            rng,
        }
    }
}

impl Model for SmartMeter {
    fn step(&mut self, now_ms: i64, dt_s: f64) -> Values {
        // A kettle or an oven now and then, on top of the profile.
        let appliance = if self.rng.chance(0.03) {
            self.rng.range(0.5, 2.0)
        } else {
            0.0
        };
        let power = (self.scale * profile_kw(now_ms) * (1.0 + 0.08 * self.rng.normal())
            + appliance)
            .max(0.05);
        self.energy_kwh += power * dt_s / 3600.0;
        let mut v = Values::new();
        v.insert("power".into(), num(power, 3));
        v.insert("energy_kwh".into(), num(self.energy_kwh, 3));
        v
    }

    fn rpc(&mut self, method: &str, _params: &Value) -> Result<Value, String> {
        match method {
            "getReading" => Ok(json!({"energy_kwh": num(self.energy_kwh, 3)})),
            other => Err(format!("unknown method {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::models::MONDAY_MS;

    /// Mean power over one hour starting `hours` after Monday 00:00.
    fn mean_power(m: &mut SmartMeter, hours: i64) -> f64 {
        let t0 = MONDAY_MS + hours * 3_600_000;
        (0..360)
            .map(|i| m.step(t0 + i * 10_000, 10.0)["power"].as_f64().unwrap())
            .sum::<f64>()
            / 360.0
    }

    #[test]
    fn daily_and_weekly_seasonality() {
        let mut m = SmartMeter::new(Rng::new(31, 0));
        let night = mean_power(&mut m, 3);
        let evening = mean_power(&mut m, 19);
        let morning = mean_power(&mut m, 7);
        assert!(evening > 2.5 * night, "evening {evening} night {night}");
        assert!(morning > 2.0 * night, "morning {morning} night {night}");
        // Saturday 10:00 is busier than Monday 10:00; Saturday 07:00 quieter than Monday's.
        let weekday_10 = mean_power(&mut m, 10);
        let saturday_10 = mean_power(&mut m, 5 * 24 + 10);
        let saturday_7 = mean_power(&mut m, 5 * 24 + 7);
        assert!(
            saturday_10 > 1.5 * weekday_10,
            "{saturday_10} vs {weekday_10}"
        );
        assert!(saturday_7 < morning, "{saturday_7} vs {morning}");
    }

    #[test]
    fn energy_is_the_integral_of_power() {
        let mut m = SmartMeter::new(Rng::new(32, 0));
        let e0 = m.energy_kwh;
        let mut last = e0;
        let mut sum = 0.0;
        for i in 0..7 * 24 * 60 {
            let v = m.step(MONDAY_MS + i * 60_000, 60.0);
            let e = v["energy_kwh"].as_f64().unwrap();
            assert!(e >= last);
            last = e;
            sum += v["power"].as_f64().unwrap() / 60.0;
        }
        assert!(
            (m.energy_kwh - e0 - sum).abs() < 0.5,
            "{} vs {sum}",
            m.energy_kwh - e0
        );
        assert!(sum > 50.0 && sum < 500.0, "a week: {sum} kWh");
    }
}
