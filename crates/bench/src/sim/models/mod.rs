//! The signal models: one per scenario, each a small state machine advanced by
//! [`Model::step`] and steered by [`Model::rpc`]. Time is passed in (milliseconds since the
//! epoch, UTC), so the models are pure and tests can run a week in a loop.

mod factory;
mod farm;
mod fleet;
mod meters;
mod patients;
mod vending;

use serde_json::{Map, Value};

pub use factory::Machine;
pub use farm::SoilSensor;
pub use fleet::{distance_to_route, Truck};
pub use meters::SmartMeter;
pub use patients::Wearable;
pub use vending::VendingMachine;

use super::rng::Rng;

/// One telemetry message: key → value.
pub type Values = Map<String, Value>;

/// A simulated device's behaviour.
pub trait Model: Send {
    /// Advances the state by `dt_s` seconds to `now_ms` and returns what the device reports.
    fn step(&mut self, now_ms: i64, dt_s: f64) -> Values;
    /// Answers a server-side RPC; `Err` (a message) for a method the device does not know.
    fn rpc(&mut self, method: &str, params: &Value) -> Result<Value, String>;
}

/// The scenarios: which model, which device profile, which default name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Soil sensors with a pump (`setPump {"on":bool}`).
    Farm,
    /// Machines that wear out (`maintenance`).
    Factory,
    /// Trucks on routes around a depot.
    Fleet,
    /// Wearables: heart rate, SpO2, temperature, tachycardia episodes.
    Patients,
    /// Vending machines (`refill`).
    Vending,
    /// Smart electricity meters.
    Meters,
    /// Every scenario above, `--devices` of each.
    All,
}

impl Kind {
    /// Every concrete scenario (what `all` runs).
    pub const EACH: [Kind; 6] = [
        Kind::Farm,
        Kind::Factory,
        Kind::Fleet,
        Kind::Patients,
        Kind::Vending,
        Kind::Meters,
    ];

    /// The name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Farm => "farm",
            Kind::Factory => "factory",
            Kind::Fleet => "fleet",
            Kind::Patients => "patients",
            Kind::Vending => "vending",
            Kind::Meters => "meters",
            Kind::All => "all",
        }
    }

    /// The device profile the scenario's devices get.
    pub fn profile(self) -> &'static str {
        match self {
            Kind::Farm => "soil-sensor",
            Kind::Factory => "machine",
            Kind::Fleet => "truck",
            Kind::Patients => "wearable",
            Kind::Vending => "vending-machine",
            Kind::Meters => "smart-meter",
            Kind::All => "default",
        }
    }

    /// Device `index` of this scenario, its randomness from `seed`.
    pub fn build(self, seed: u64, index: u64) -> Box<dyn Model> {
        let stream = index.wrapping_add(1000 * self as u64);
        let rng = Rng::new(seed, stream);
        match self {
            Kind::Farm => Box::new(SoilSensor::new(rng)),
            Kind::Factory => Box::new(Machine::new(rng)),
            Kind::Fleet => Box::new(Truck::new(rng)),
            Kind::Patients => Box::new(Wearable::new(rng)),
            Kind::Vending => Box::new(VendingMachine::new(rng)),
            Kind::Meters | Kind::All => Box::new(SmartMeter::new(rng)),
        }
    }
}

/// Hours since midnight UTC, fractional.
pub fn hour_of_day(now_ms: i64) -> f64 {
    now_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0
}

/// Day of the week, 0 = Monday (1970-01-01 was a Thursday).
pub fn day_of_week(now_ms: i64) -> i64 {
    (now_ms.div_euclid(86_400_000) + 3).rem_euclid(7)
}

/// A value rounded to `digits` decimals, as JSON.
fn num(v: f64, digits: i32) -> Value {
    let f = 10f64.powi(digits);
    Value::from((v * f).round() / f)
}

/// A monday at 00:00 UTC (2024-01-01), for tests.
#[cfg(test)]
pub const MONDAY_MS: i64 = 1_704_067_200_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_helpers() {
        assert_eq!(day_of_week(MONDAY_MS), 0);
        assert_eq!(day_of_week(MONDAY_MS + 5 * 86_400_000 + 1), 5);
        assert!((hour_of_day(MONDAY_MS + 90 * 60_000) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn every_model_reports_and_refuses_unknown_methods() {
        for kind in Kind::EACH {
            let mut m = kind.build(1, 0);
            let v = m.step(MONDAY_MS, 1.0);
            assert!(!v.is_empty(), "{}", kind.name());
            assert!(m.rpc("noSuchMethod", &Value::Null).is_err());
        }
    }

    #[test]
    fn deterministic_with_the_seed() {
        for kind in Kind::EACH {
            let (mut a, mut b) = (kind.build(42, 3), kind.build(42, 3));
            for i in 0..100 {
                let t = MONDAY_MS + i * 1000;
                assert_eq!(a.step(t, 1.0), b.step(t, 1.0), "{}", kind.name());
            }
        }
    }
}
