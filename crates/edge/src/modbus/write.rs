//! RPC → Modbus writes: a `writes` mapping checked at start-up, and the pure conversion of an
//! RPC's params into the coil or registers to write (type- and range-checked).

use serde_json::Value;

use super::registers::{encode_words, DataType, Order, Table};
use crate::config::WriteConfig;

/// A checked `writes` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSpec {
    pub method: String,
    pub table: Table,
    pub address: u16,
    pub data_type: DataType,
    pub param: Option<String>,
    pub attribute: Option<String>,
    pub byte_order: Order,
    pub word_order: Order,
    pub scale: f64,
    pub offset: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// What to send to the device.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Coil(u16, bool),
    Registers(u16, Vec<u16>),
}

impl WriteSpec {
    /// Checks one `writes` entry; the message names the field at fault.
    pub fn from_config(c: &WriteConfig) -> Result<WriteSpec, String> {
        let data_type = match (c.table, c.data_type) {
            (Table::Coil, None | Some(DataType::Bool)) => DataType::Bool,
            (Table::Coil, Some(t)) => {
                return Err(format!("type: a coil is written as \"bool\", not {t:?}"))
            }
            (Table::Holding, None) => DataType::U16,
            (Table::Holding, Some(DataType::String)) => {
                return Err("type: strings cannot be written".into())
            }
            (Table::Holding, Some(t)) => t,
            (t, _) => return Err(format!("table: {t:?} is read-only (coil or holding)")),
        };
        let scale = c.scale.unwrap_or(1.0);
        if !scale.is_finite() || scale == 0.0 {
            return Err("scale: must be a finite, non-zero number".into());
        }
        let count = u32::from(data_type.registers(None));
        if u32::from(c.address) + count > 65_536 {
            return Err("address: the value runs past register 65535".into());
        }
        Ok(WriteSpec {
            method: c.method.clone(),
            table: c.table,
            address: c.address,
            data_type,
            param: c.param.clone(),
            attribute: c.attribute.clone(),
            byte_order: c.byte_order,
            word_order: c.word_order,
            scale,
            offset: c.offset.unwrap_or(0.0),
            min: c.min,
            max: c.max,
        })
    }

    /// The write an RPC's `params` asks for, or why it is refused.
    pub fn op(&self, params: &Value) -> Result<WriteOp, String> {
        let value = match &self.param {
            Some(name) => params
                .get(name)
                .ok_or_else(|| format!("params.{name} is required"))?,
            None => params,
        };
        self.op_value(value)
    }

    /// The write of `value` itself (a shared attribute's new value).
    pub fn op_value(&self, value: &Value) -> Result<WriteOp, String> {
        if self.table == Table::Coil {
            let on = match value {
                Value::Bool(b) => *b,
                Value::Number(n) if n.as_f64() == Some(0.0) => false,
                Value::Number(n) if n.as_f64() == Some(1.0) => true,
                Value::String(s) if matches!(s.as_str(), "on" | "true" | "1") => true,
                Value::String(s) if matches!(s.as_str(), "off" | "false" | "0") => false,
                other => return Err(format!("{other} is not a boolean")),
            };
            return Ok(WriteOp::Coil(self.address, on));
        }
        let v = match value {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{s:?} is not a number"))?,
            other => return Err(format!("{other} is not a number")),
        };
        if let Some(min) = self.min.filter(|&m| v < m) {
            return Err(format!("{v} is below the minimum {min}"));
        }
        if let Some(max) = self.max.filter(|&m| v > m) {
            return Err(format!("{v} is above the maximum {max}"));
        }
        let raw = (v - self.offset) / self.scale;
        // Scaling may leave float noise (21.5 / 0.1 = 214.99999999999997).
        let raw = if self.data_type == DataType::F32 || self.data_type == DataType::F64 {
            raw
        } else if (raw - raw.round()).abs() < 1e-6 {
            raw.round()
        } else {
            raw
        };
        let words = encode_words(self.data_type, raw, self.byte_order, self.word_order)?;
        Ok(WriteOp::Registers(self.address, words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(table: &str, extra: &str) -> WriteSpec {
        let c: WriteConfig = toml::from_str(&format!(
            "method = \"m\"\ntable = \"{table}\"\naddress = 7\n{extra}"
        ))
        .unwrap();
        WriteSpec::from_config(&c).unwrap()
    }

    #[test]
    fn coils() {
        let s = spec("coil", "param = \"on\"");
        assert_eq!(s.op(&json!({"on": true})), Ok(WriteOp::Coil(7, true)));
        assert_eq!(s.op(&json!({"on": 0})), Ok(WriteOp::Coil(7, false)));
        assert!(s.op(&json!({"on": 2})).is_err());
        assert!(s.op(&json!({})).unwrap_err().contains("params.on"));
        assert_eq!(
            spec("coil", "").op(&json!("on")),
            Ok(WriteOp::Coil(7, true))
        );
    }

    #[test]
    fn registers_scaled_and_range_checked() {
        let s = spec("holding", "scale = 0.1\nmin = 0\nmax = 100");
        assert_eq!(s.op(&json!(21.5)), Ok(WriteOp::Registers(7, vec![215])));
        assert!(s.op(&json!(100.5)).unwrap_err().contains("maximum"));
        assert!(s.op(&json!(-1)).unwrap_err().contains("minimum"));
        let s = spec("holding", "type = \"i32\"\nword_order = \"little\"");
        assert_eq!(
            s.op(&json!(-2)),
            Ok(WriteOp::Registers(7, vec![0xfffe, 0xffff]))
        );
        assert!(spec("holding", "").op(&json!(70000)).is_err());
        assert!(spec("holding", "").op(&json!("x")).is_err());
    }

    #[test]
    fn read_only_tables_are_refused() {
        let c: WriteConfig =
            toml::from_str("method = \"m\"\ntable = \"input\"\naddress = 0").unwrap();
        assert!(WriteSpec::from_config(&c)
            .unwrap_err()
            .contains("read-only"));
    }
}
