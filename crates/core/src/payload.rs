//! The device API's JSON payloads: telemetry in its three forms (`{"k":v}`,
//! `{"ts":ms,"values":{..}}`, or an array of either) and attribute maps. Parsing is all or
//! nothing: one bad element refuses the whole message.

use serde_json::{Map, Value};

use crate::error::{CoreError, Result};

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// One telemetry value of one key at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: String,
    pub ts: i64,
    pub value: Value,
}

fn invalid(msg: impl Into<String>) -> CoreError {
    CoreError::Invalid(msg.into())
}

/// Parses JSON bytes.
pub fn json(payload: &[u8]) -> Result<Value> {
    serde_json::from_slice(payload).map_err(|e| invalid(format!("invalid JSON: {e}")))
}

fn check_entry(key: &str, value: &Value) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "key {key:?}: keys have 1 to {MAX_KEY_LEN} characters"
        )));
    }
    if value.is_null() {
        return Err(invalid(format!("key {key:?}: null is not a value")));
    }
    Ok(())
}

/// Parses a telemetry payload; points without a timestamp get `now`.
pub fn telemetry(payload: &[u8], now: i64) -> Result<Vec<Point>> {
    telemetry_value(&json(payload)?, now)
}

/// Parses an already decoded telemetry value (the gateway API nests them).
pub fn telemetry_value(v: &Value, now: i64) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    match v {
        Value::Array(items) => {
            for item in items {
                telemetry_object(item, now, &mut points)?;
            }
        }
        other => telemetry_object(other, now, &mut points)?,
    }
    Ok(points)
}

fn telemetry_object(v: &Value, now: i64, out: &mut Vec<Point>) -> Result<()> {
    let Value::Object(obj) = v else {
        return Err(invalid(
            "telemetry must be a JSON object or an array of objects",
        ));
    };
    let (ts, values) = match (obj.get("ts"), obj.get("values")) {
        (Some(ts), Some(values)) if obj.len() == 2 => {
            let ts = ts
                .as_i64()
                .filter(|t| *t >= 0)
                .ok_or_else(|| invalid("\"ts\" must be milliseconds since the epoch"))?;
            let Value::Object(values) = values else {
                return Err(invalid("\"values\" must be a JSON object"));
            };
            (ts, values)
        }
        _ => (now, obj),
    };
    for (key, value) in values {
        check_entry(key, value)?;
        out.push(Point {
            key: key.clone(),
            ts,
            value: value.clone(),
        });
    }
    Ok(())
}

/// Parses an attribute map `{"k":v,...}`.
pub fn attributes(payload: &[u8]) -> Result<Map<String, Value>> {
    attributes_value(json(payload)?)
}

/// Checks an already decoded attribute map.
pub fn attributes_value(v: Value) -> Result<Map<String, Value>> {
    let Value::Object(map) = v else {
        return Err(invalid("attributes must be a JSON object"));
    };
    for (k, v) in &map {
        check_entry(k, v)?;
    }
    Ok(map)
}

/// A comma-separated key list (`"a,b"`), or a JSON array of strings; empty entries dropped.
pub fn key_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(split_keys(s)),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// Splits `"a,b"` into keys.
pub fn split_keys(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn three_forms_and_arrays() {
        let p = telemetry(br#"{"t":21.5,"on":true}"#, 7).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.ts == 7));
        let p = telemetry(br#"{"ts":1000,"values":{"t":1,"s":"x","j":{"a":1}}}"#, 7).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| p.ts == 1000));
        let p = telemetry(br#"[{"ts":1,"values":{"t":1}},{"u":2}]"#, 7).unwrap();
        assert_eq!(
            p,
            vec![
                Point {
                    key: "t".into(),
                    ts: 1,
                    value: json!(1)
                },
                Point {
                    key: "u".into(),
                    ts: 7,
                    value: json!(2)
                },
            ]
        );
        // An object that merely has a "ts" key is plain key/values.
        let p = telemetry(br#"{"ts":5,"x":1}"#, 7).unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn all_or_nothing() {
        for bad in [
            &br#"[{"a":1},{"b":null}]"#[..],
            br#"[{"a":1},3]"#,
            br#"{"ts":-1,"values":{"a":1}}"#,
            br#"{"ts":1,"values":[1]}"#,
            br#"{"":1}"#,
            br#"{"a":1"#,
            b"42",
        ] {
            assert!(
                telemetry(bad, 0).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(attributes(b"[1]").is_err());
    }

    #[test]
    fn key_lists() {
        assert_eq!(key_list(Some(&json!("a, b,,c"))).unwrap(), ["a", "b", "c"]);
        assert_eq!(key_list(Some(&json!(["a"]))).unwrap(), ["a"]);
        assert_eq!(key_list(None), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = telemetry(&bytes, 0);
            let _ = attributes(&bytes);
        }

        #[test]
        fn flat_maps_round_trip(
            m in proptest::collection::btree_map("[a-z]{1,8}", any::<i64>(), 0..8),
            ts in 0i64..1 << 45,
        ) {
            let v = json!({"ts": ts, "values": m});
            let points = telemetry(v.to_string().as_bytes(), 0).unwrap();
            prop_assert_eq!(points.len(), m.len());
            for p in points {
                prop_assert_eq!(p.ts, ts);
                prop_assert_eq!(&p.value, &json!(m[&p.key]));
            }
        }
    }
}
