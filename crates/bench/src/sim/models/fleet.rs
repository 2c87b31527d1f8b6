//! `fleet`: trucks driving a closed route of waypoints around a depot in Berlin (52.52, 13.40).
//! Speed wanders around a cruising speed, fuel falls with distance (refuelled at the depot),
//! each lap ends with a dwell at the depot, and now and then the truck makes an unplanned stop
//! (speed 0 for one to five minutes) somewhere on the route.

use serde_json::{json, Value};

use super::{num, Model, Values};
use crate::sim::rng::Rng;

/// The depot.
pub const DEPOT: (f64, f64) = (52.52, 13.405);
/// Kilometres per degree of latitude.
const KM_PER_DEG: f64 = 111.32;
const TANK_L: f64 = 400.0;
const LITRES_PER_KM: f64 = 0.35;

/// A truck and its route.
pub struct Truck {
    rng: Rng,
    /// Waypoints (lat, lon), first and last the depot.
    pub route: Vec<(f64, f64)>,
    /// Segment being driven and kilometres along it.
    seg: usize,
    along_km: f64,
    pub speed: f64,
    cruise: f64,
    fuel_l: f64,
    /// Seconds left of an unplanned stop.
    pub stop_left: f64,
    /// Seconds left at the depot.
    dwell_left: f64,
}

/// Local flat-earth kilometres between two points (fine at city scale).
fn km(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let cos = a.0.to_radians().cos();
    ((b.0 - a.0) * KM_PER_DEG, (b.1 - a.1) * KM_PER_DEG * cos)
}

/// Distance in kilometres from `p` to the polyline `route`.
pub fn distance_to_route(p: (f64, f64), route: &[(f64, f64)]) -> f64 {
    route
        .windows(2)
        .map(|w| {
            let (dx, dy) = km(w[0], w[1]);
            let (px, py) = km(w[0], p);
            let len2 = dx * dx + dy * dy;
            let t = if len2 > 0.0 {
                ((px * dx + py * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            ((px - t * dx).powi(2) + (py - t * dy).powi(2)).sqrt()
        })
        .fold(f64::INFINITY, f64::min)
}

impl Truck {
    pub fn new(mut rng: Rng) -> Truck {
        let stops = 4 + (rng.next_u64() % 3) as usize;
        let start = rng.range(0.0, std::f64::consts::TAU);
        let mut route = vec![DEPOT];
        for i in 0..stops {
            let bearing =
                start + std::f64::consts::TAU * (i as f64 + rng.range(0.1, 0.9)) / stops as f64;
            let r = rng.range(3.0, 12.0);
            let lat = DEPOT.0 + r * bearing.cos() / KM_PER_DEG;
            let lon = DEPOT.1 + r * bearing.sin() / (KM_PER_DEG * DEPOT.0.to_radians().cos());
            route.push((lat, lon));
        }
        route.push(DEPOT);
        Truck {
            route,
            seg: 0,
            along_km: 0.0,
            speed: 0.0,
            cruise: rng.range(35.0, 60.0),
            fuel_l: TANK_L * rng.range(0.4, 1.0),
            stop_left: 0.0,
            dwell_left: rng.range(0.0, 60.0),
            rng,
        }
    }

    fn seg_len(&self, i: usize) -> f64 {
        let (dx, dy) = km(self.route[i], self.route[i + 1]);
        (dx * dx + dy * dy).sqrt()
    }

    /// Where the truck is now (lat, lon).
    pub fn position(&self) -> (f64, f64) {
        let (a, b) = (self.route[self.seg], self.route[self.seg + 1]);
        let t = (self.along_km / self.seg_len(self.seg).max(1e-9)).clamp(0.0, 1.0);
        (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
    }

    /// Whether the truck is standing at the depot.
    pub fn at_depot(&self) -> bool {
        self.dwell_left > 0.0
    }

    fn drive(&mut self, dt_s: f64) {
        // Traffic: the speed wanders around the cruising speed, with a lag of ~20 s.
        let target = (self.cruise + 12.0 * self.rng.normal()).clamp(5.0, 90.0);
        self.speed += (target - self.speed) * (dt_s / 20.0).min(1.0);
        let mut left = self.speed * dt_s / 3600.0;
        self.fuel_l = (self.fuel_l - left * LITRES_PER_KM).max(0.0);
        while left > 0.0 {
            let room = self.seg_len(self.seg) - self.along_km;
            if left < room {
                self.along_km += left;
                break;
            }
            left -= room;
            self.seg += 1;
            self.along_km = 0.0;
            if self.seg + 1 == self.route.len() {
                // Back at the depot: unload, refuel if low, start the next lap.
                self.seg = 0;
                self.speed = 0.0;
                self.dwell_left = self.rng.range(60.0, 180.0);
                if self.fuel_l < TANK_L * 0.3 {
                    self.fuel_l = TANK_L;
                }
                break;
            }
        }
    }
}

impl Model for Truck {
    fn step(&mut self, _now_ms: i64, dt_s: f64) -> Values {
        if self.dwell_left > 0.0 {
            self.dwell_left -= dt_s;
            self.speed = 0.0;
        } else if self.stop_left > 0.0 {
            self.stop_left -= dt_s;
            self.speed = 0.0;
        } else if self.rng.chance(dt_s / 900.0) {
            // An unplanned stop, on average every 15 minutes of driving.
            self.stop_left = self.rng.range(60.0, 300.0);
            self.speed = 0.0;
        } else {
            self.drive(dt_s);
        }
        let (lat, lon) = self.position();
        let mut v = Values::new();
        v.insert("latitude".into(), num(lat, 6));
        v.insert("longitude".into(), num(lon, 6));
        v.insert("speed".into(), num(self.speed.max(0.0), 1));
        v.insert("fuel".into(), num(100.0 * self.fuel_l / TANK_L, 1));
        v
    }

    fn rpc(&mut self, method: &str, _params: &Value) -> Result<Value, String> {
        match method {
            "getRoute" => Ok(json!(self
                .route
                .iter()
                .map(|(a, b)| [*a, *b])
                .collect::<Vec<_>>())),
            other => Err(format!("unknown method {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::models::MONDAY_MS;

    #[test]
    fn truck_stays_on_its_route_and_moves() {
        for seed in 0..5 {
            let mut t = Truck::new(Rng::new(seed, 0));
            let (mut unplanned, mut laps_km, mut last) = (0, 0.0, t.position());
            for i in 0..4 * 3600 {
                let v = t.step(MONDAY_MS + i * 1000, 1.0);
                let p = (
                    v["latitude"].as_f64().unwrap(),
                    v["longitude"].as_f64().unwrap(),
                );
                // Six decimals of a degree: within 0.1 m of the polyline.
                assert!(
                    distance_to_route(p, &t.route) < 0.001,
                    "seed {seed}: {p:?} off route"
                );
                let (dx, dy) = km(last, p);
                laps_km += (dx * dx + dy * dy).sqrt();
                last = p;
                if v["speed"] == json!(0.0)
                    && t.stop_left > 0.0
                    && distance_to_route(p, &[DEPOT, DEPOT]) > 0.5
                {
                    unplanned += 1;
                }
                assert!(distance_to_route(p, &[DEPOT, DEPOT]) < 15.0);
            }
            assert!(laps_km > 50.0, "seed {seed}: drove {laps_km} km in 4 h");
            assert!(unplanned > 0, "seed {seed}: no unplanned stop in 4 h");
        }
    }

    #[test]
    fn fuel_falls_while_driving() {
        let mut t = Truck::new(Rng::new(9, 0));
        let f0 = t.step(MONDAY_MS, 1.0)["fuel"].as_f64().unwrap();
        let mut f1 = f0;
        for i in 0..600 {
            f1 = t.step(MONDAY_MS + i * 1000, 1.0)["fuel"].as_f64().unwrap();
        }
        assert!(f1 < f0 || t.at_depot(), "{f0} -> {f1}");
    }
}
