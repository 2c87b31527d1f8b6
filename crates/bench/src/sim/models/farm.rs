//! `farm`: a soil sensor next to an irrigation pump. Temperature, humidity and light follow the
//! day; soil moisture falls with evaporation (faster when warm and sunny) and rises while the
//! pump runs. RPC `setPump {"on":bool}` switches the pump (reply `{"on":..}`); a float switch
//! stops it when the soil is saturated.

use serde_json::{json, Value};

use super::{hour_of_day, num, Model, Values};
use crate::sim::rng::Rng;

/// Soil moisture at which the float switch stops the pump, %.
const SATURATED: f64 = 95.0;

/// A soil sensor with its pump.
pub struct SoilSensor {
    rng: Rng,
    /// Volumetric water content, %.
    pub moisture: f64,
    pub pump: bool,
    /// This field's offset from the regional temperature, °C.
    microclimate: f64,
}

impl SoilSensor {
    pub fn new(mut rng: Rng) -> SoilSensor {
        SoilSensor {
            moisture: rng.range(28.0, 45.0),
            microclimate: rng.range(-1.5, 1.5),
            pump: false,
            rng,
        }
    }
}

impl Model for SoilSensor {
    fn step(&mut self, now_ms: i64, dt_s: f64) -> Values {
        let h = hour_of_day(now_ms);
        // Warmest around 15:00, coolest around 03:00; sunlight between 06:00 and 18:00.
        let daily = ((h - 9.0) / 24.0 * std::f64::consts::TAU).sin();
        let temperature = 17.0 + 7.0 * daily + self.microclimate + 0.2 * self.rng.normal();
        let humidity = (68.0 - 18.0 * daily + 1.0 * self.rng.normal()).clamp(5.0, 100.0);
        let sun = ((h - 6.0) / 12.0 * std::f64::consts::PI).sin().max(0.0);
        let light = (sun * 60_000.0 * (0.8 + 0.2 * self.rng.unit())).max(0.0);
        // Evaporation: about 0.5 %/h on a cool night, 3 %/h at noon in summer.
        let evaporation = (0.5 + 2.5 * sun) * (1.0 + (temperature - 15.0).max(0.0) / 20.0) / 3600.0;
        let irrigation = if self.pump {
            // About 1 %/min, slowing as the soil nears saturation.
            60.0 / 3600.0 * (100.0 - self.moisture) / 60.0
        } else {
            0.0
        };
        self.moisture = (self.moisture + (irrigation - evaporation * self.moisture / 40.0) * dt_s)
            .clamp(0.0, 100.0);
        if self.pump && self.moisture >= SATURATED {
            self.pump = false;
        }
        let mut v = Values::new();
        v.insert(
            "soil_moisture".into(),
            num(self.moisture + 0.1 * self.rng.normal(), 2),
        );
        v.insert("temperature".into(), num(temperature, 2));
        v.insert("humidity".into(), num(humidity, 1));
        v.insert("light".into(), num(light, 0));
        v.insert("pump".into(), Value::Bool(self.pump));
        v
    }

    fn rpc(&mut self, method: &str, params: &Value) -> Result<Value, String> {
        match method {
            "setPump" => {
                let on = params
                    .get("on")
                    .and_then(Value::as_bool)
                    .or_else(|| params.as_bool())
                    .ok_or("setPump needs {\"on\": true|false}")?;
                self.pump = on;
                Ok(json!({ "on": on }))
            }
            "getPump" => Ok(json!({ "on": self.pump })),
            other => Err(format!("unknown method {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::models::MONDAY_MS;

    fn run(s: &mut SoilSensor, from: i64, secs: i64) -> f64 {
        for i in 0..secs {
            s.step(from + i * 1000, 1.0);
        }
        s.moisture
    }

    #[test]
    fn pump_raises_moisture_and_evaporation_lowers_it() {
        let noon = MONDAY_MS + 12 * 3_600_000;
        let mut s = SoilSensor::new(Rng::new(1, 0));
        let start = s.moisture;
        let dry = run(&mut s, noon, 1800);
        assert!(dry < start - 0.3, "evaporation: {start} -> {dry}");
        let reply = s.rpc("setPump", &json!({"on": true})).unwrap();
        assert_eq!(reply, json!({"on": true}));
        assert_eq!(s.step(noon, 1.0)["pump"], json!(true));
        let wet = run(&mut s, noon + 1_800_000, 600);
        assert!(wet > dry + 5.0, "pump: {dry} -> {wet}");
        s.rpc("setPump", &json!({"on": false})).unwrap();
        let later = run(&mut s, noon + 2_400_000, 1800);
        assert!(later < wet, "pump off: {wet} -> {later}");
    }

    #[test]
    fn float_switch_stops_the_pump() {
        let mut s = SoilSensor::new(Rng::new(2, 0));
        s.rpc("setPump", &json!({"on": true})).unwrap();
        run(&mut s, MONDAY_MS, 4 * 3600);
        assert!(!s.pump);
        assert!(s.moisture <= 100.0 && s.moisture > 90.0, "{}", s.moisture);
    }

    #[test]
    fn daily_cycle() {
        let mut s = SoilSensor::new(Rng::new(3, 0));
        let at = |s: &mut SoilSensor, h: i64| s.step(MONDAY_MS + h * 3_600_000, 1.0);
        let (night, day) = (at(&mut s, 3), at(&mut s, 14));
        assert!(day["temperature"].as_f64() > night["temperature"].as_f64());
        assert_eq!(night["light"], json!(0.0));
        assert!(day["light"].as_f64().unwrap() > 10_000.0);
        assert!(s.rpc("setPump", &json!({})).is_err());
    }
}
