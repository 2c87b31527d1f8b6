//! `vending`: a vending machine. Sales arrive at random, busier in the day than at night; each
//! takes one item, so `stock_pct` falls until the machine is empty. RPC `refill` opens the door
//! (`door_open` true in the next report), fills it up and closes the door (false after that);
//! now and then a technician opens the door for a minute anyway.

use serde_json::{json, Value};

use super::{hour_of_day, num, Model, Values};
use crate::sim::rng::Rng;

/// Items the machine holds when full.
pub const CAPACITY: u32 = 240;

/// A vending machine.
pub struct VendingMachine {
    rng: Rng,
    pub stock: u32,
    /// Items sold since start.
    pub sales: u64,
    /// Seconds the door stays open (0 = closed).
    door_left: f64,
    /// Sales per hour at the busiest time.
    peak_per_hour: f64,
}

impl VendingMachine {
    pub fn new(mut rng: Rng) -> VendingMachine {
        VendingMachine {
            stock: (CAPACITY as f64 * rng.range(0.5, 1.0)) as u32,
            sales: 0,
            door_left: 0.0,
            peak_per_hour: rng.range(20.0, 60.0),
            rng,
        }
    }
}

impl Model for VendingMachine {
    fn step(&mut self, now_ms: i64, dt_s: f64) -> Values {
        let h = hour_of_day(now_ms);
        // Busy from 07:00 to 22:00 (peaks at lunch and in the evening), quiet at night.
        let busy = if (7.0..22.0).contains(&h) {
            0.6 + 0.4 * ((h - 7.0) / 15.0 * std::f64::consts::TAU * 1.5).sin().abs()
        } else {
            0.05
        };
        let expected = self.peak_per_hour * busy * dt_s / 3600.0;
        // Poisson arrivals by inversion (expected is small per step).
        let mut sold = 0;
        let (mut p, mut cdf, u) = ((-expected).exp(), (-expected).exp(), self.rng.unit());
        while u > cdf && sold < 50 {
            sold += 1;
            p *= expected / sold as f64;
            cdf += p;
        }
        let sold = sold.min(self.stock);
        self.stock -= sold;
        self.sales += u64::from(sold);
        let door_open = self.door_left > 0.0;
        if door_open {
            self.door_left -= dt_s;
        } else if self.rng.chance(dt_s / (6.0 * 3600.0)) {
            self.door_left = 60.0;
        }
        let mut v = Values::new();
        v.insert(
            "stock_pct".into(),
            num(100.0 * f64::from(self.stock) / f64::from(CAPACITY), 1),
        );
        v.insert("sales".into(), json!(self.sales));
        v.insert("door_open".into(), json!(door_open));
        v
    }

    fn rpc(&mut self, method: &str, _params: &Value) -> Result<Value, String> {
        match method {
            "refill" => {
                let added = CAPACITY - self.stock;
                self.stock = CAPACITY;
                // Reported open once, closed by the report after.
                self.door_left = f64::MIN_POSITIVE;
                Ok(json!({"ok": true, "added": added, "stock_pct": 100.0}))
            }
            other => Err(format!("unknown method {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::models::MONDAY_MS;

    #[test]
    fn stock_falls_with_sales_and_refill_restores_it() {
        let mut m = VendingMachine::new(Rng::new(21, 0));
        let start = m.step(MONDAY_MS + 8 * 3_600_000, 1.0)["stock_pct"]
            .as_f64()
            .unwrap();
        let mut v = Values::new();
        for i in 0..6 * 3600 {
            v = m.step(MONDAY_MS + 8 * 3_600_000 + i * 1000, 1.0);
        }
        let after = v["stock_pct"].as_f64().unwrap();
        assert!(after < start - 10.0, "{start} -> {after}");
        assert!(v["sales"].as_u64().unwrap() > 20);
        let sales = m.sales;
        let reply = m.rpc("refill", &Value::Null).unwrap();
        assert_eq!(reply["ok"], json!(true));
        let t = MONDAY_MS + 15 * 3_600_000;
        let opened = m.step(t, 0.001);
        assert_eq!(opened["door_open"], json!(true));
        assert!(opened["stock_pct"].as_f64().unwrap() > 99.0);
        assert_eq!(m.step(t + 1, 0.001)["door_open"], json!(false));
        assert!(m.sales >= sales, "the sales counter is cumulative");
    }

    #[test]
    fn quiet_at_night() {
        let (mut day, mut night) = (
            VendingMachine::new(Rng::new(4, 0)),
            VendingMachine::new(Rng::new(4, 0)),
        );
        day.stock = CAPACITY;
        night.stock = CAPACITY;
        for i in 0..3 * 3600 {
            day.step(MONDAY_MS + 12 * 3_600_000 + i * 1000, 1.0);
            night.step(MONDAY_MS + i * 1000, 1.0);
        }
        assert!(
            day.sales > 3 * night.sales + 5,
            "day {} night {}",
            day.sales,
            night.sales
        );
    }
}
