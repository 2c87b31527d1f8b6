//! Typed telemetry values (boolean, integer, float, string, JSON) and their compact binary form,
//! used in the ingest log and in chunks that are not purely numeric.

use serde_json::Number;

/// One telemetry value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(String),
    /// A JSON object or array, as text.
    Json(String),
}

impl Value {
    /// From a JSON value (`None` for null: not a value).
    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        use serde_json::Value as J;
        Some(match v {
            J::Null => return None,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Long(i),
                None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            other => Value::Json(other.to_string()),
        })
    }

    /// As a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Bool(b) => J::Bool(*b),
            Value::Long(i) => J::Number((*i).into()),
            Value::Double(f) => Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Json(s) => serde_json::from_str(s).unwrap_or(J::Null),
        }
    }

    /// As a number for aggregation (booleans count as 0/1; text is not a number).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Long(i) => Some(*i as f64),
            Value::Double(f) => Some(*f),
            Value::Str(_) | Value::Json(_) => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Value::Bool(false) => 0,
            Value::Bool(true) => 1,
            Value::Long(_) => 2,
            Value::Double(_) => 3,
            Value::Str(_) => 4,
            Value::Json(_) => 5,
        }
    }

    /// Appends the binary form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match self {
            Value::Bool(_) => {}
            Value::Long(i) => put_varint(out, zigzag(*i)),
            Value::Double(f) => out.extend_from_slice(&f.to_le_bytes()),
            Value::Str(s) | Value::Json(s) => {
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Reads one value from the front of `buf`.
    pub fn decode(buf: &mut &[u8]) -> Option<Value> {
        let (&tag, rest) = buf.split_first()?;
        *buf = rest;
        Some(match tag {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            2 => Value::Long(unzigzag(get_varint(buf)?)),
            3 => {
                let (b, rest) = buf.split_at_checked(8)?;
                *buf = rest;
                Value::Double(f64::from_le_bytes(b.try_into().ok()?))
            }
            4 | 5 => {
                let len = usize::try_from(get_varint(buf)?).ok()?;
                let (b, rest) = buf.split_at_checked(len)?;
                *buf = rest;
                let s = String::from_utf8(b.to_vec()).ok()?;
                if tag == 4 {
                    Value::Str(s)
                } else {
                    Value::Json(s)
                }
            }
            _ => return None,
        })
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Long(i) => s.serialize_i64(*i),
            Value::Double(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Double(_) => s.serialize_unit(),
            Value::Str(t) => s.serialize_str(t),
            Value::Json(_) => self.to_json().serialize(s),
        }
    }
}

/// Zig-zag maps signed to unsigned so that small magnitudes stay short.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends an LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an LEB128 varint from the front of `buf`.
pub fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Long),
            any::<f64>()
                .prop_filter("NaN never equals", |f| !f.is_nan())
                .prop_map(Value::Double),
            ".{0,20}".prop_map(Value::Str),
            ".{0,20}".prop_map(Value::Json),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(v in value()) {
            let mut out = Vec::new();
            v.encode(&mut out);
            let mut buf = &out[..];
            prop_assert_eq!(Value::decode(&mut buf), Some(v));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = &bytes[..];
            while Value::decode(&mut buf).is_some() {}
        }
    }

    #[test]
    fn json_types_are_kept() {
        let v = serde_json::json!([true, 3, 2.5, "x", {"a": 1}]);
        let back: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| Value::from_json(x).unwrap().to_json())
            .collect();
        assert_eq!(serde_json::Value::Array(back), v);
        assert_eq!(Value::from_json(&serde_json::Value::Null), None);
    }
}
