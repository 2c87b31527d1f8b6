//! Sealed chunks: one series' points over a time range, compressed. Timestamps are always an
//! i64 column compressed with pco (regular sampling costs almost nothing); values are a pco f64
//! or i64 column when the chunk is all floats, all integers or all booleans, and the compact
//! binary value form otherwise.

use pco::standalone::{simple_compress, simple_decompress};
use pco::ChunkConfig;

use crate::value::Value;

/// How a chunk's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Double = 0,
    Long = 1,
    Bool = 2,
    Mixed = 3,
}

impl Kind {
    /// From its stored number.
    pub fn from_i64(k: i64) -> Option<Kind> {
        Some(match k {
            0 => Kind::Double,
            1 => Kind::Long,
            2 => Kind::Bool,
            3 => Kind::Mixed,
            _ => return None,
        })
    }
}

/// An encoded chunk.
pub struct Encoded {
    pub kind: Kind,
    pub ts: Vec<u8>,
    pub values: Vec<u8>,
}

/// Encodes points sorted by time.
pub fn encode(points: &[(i64, Value)]) -> Encoded {
    let cfg = ChunkConfig::default();
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    let ts = simple_compress(&ts, &cfg).expect("pco compresses any i64 slice");
    let kind = if points.iter().all(|p| matches!(p.1, Value::Double(_))) {
        Kind::Double
    } else if points.iter().all(|p| matches!(p.1, Value::Long(_))) {
        Kind::Long
    } else if points.iter().all(|p| matches!(p.1, Value::Bool(_))) {
        Kind::Bool
    } else {
        Kind::Mixed
    };
    let values = match kind {
        Kind::Double => {
            let v: Vec<f64> = points
                .iter()
                .map(|p| if let Value::Double(f) = p.1 { f } else { 0.0 })
                .collect();
            simple_compress(&v, &cfg).expect("pco compresses any f64 slice")
        }
        Kind::Long | Kind::Bool => {
            let v: Vec<i64> = points
                .iter()
                .map(|p| match p.1 {
                    Value::Long(i) => i,
                    Value::Bool(b) => i64::from(b),
                    _ => 0,
                })
                .collect();
            simple_compress(&v, &cfg).expect("pco compresses any i64 slice")
        }
        Kind::Mixed => {
            let mut out = Vec::new();
            for p in points {
                p.1.encode(&mut out);
            }
            out
        }
    };
    Encoded { kind, ts, values }
}

/// Decodes a chunk; `None` if it is corrupt.
pub fn decode(kind: Kind, ts: &[u8], values: &[u8]) -> Option<Vec<(i64, Value)>> {
    let ts: Vec<i64> = simple_decompress(ts).ok()?;
    let values: Vec<Value> = match kind {
        Kind::Double => simple_decompress::<f64>(values)
            .ok()?
            .into_iter()
            .map(Value::Double)
            .collect(),
        Kind::Long => simple_decompress::<i64>(values)
            .ok()?
            .into_iter()
            .map(Value::Long)
            .collect(),
        Kind::Bool => simple_decompress::<i64>(values)
            .ok()?
            .into_iter()
            .map(|i| Value::Bool(i != 0))
            .collect(),
        Kind::Mixed => {
            let mut buf = values;
            let mut out = Vec::with_capacity(ts.len());
            while !buf.is_empty() {
                out.push(Value::decode(&mut buf)?);
            }
            out
        }
    };
    (values.len() == ts.len()).then(|| ts.into_iter().zip(values).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let cases: Vec<Vec<(i64, Value)>> = vec![
            (0..500)
                .map(|i| (1000 * i, Value::Double(20.0 + (i % 7) as f64 * 0.01)))
                .collect(),
            (0..500).map(|i| (1000 * i, Value::Long(i * 3))).collect(),
            (0..500)
                .map(|i| (1000 * i, Value::Bool(i % 3 == 0)))
                .collect(),
            vec![
                (1, Value::Long(1)),
                (2, Value::Double(2.5)),
                (3, Value::Str("x".into())),
                (4, Value::Json("{}".into())),
            ],
        ];
        for points in cases {
            let e = encode(&points);
            assert_eq!(decode(e.kind, &e.ts, &e.values).unwrap(), points);
        }
    }

    #[test]
    fn a_slow_noisy_signal_takes_under_two_bytes_a_point() {
        let mut x: u64 = 7;
        let points: Vec<(i64, Value)> = (0..3600i64)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let noise = (x % 100) as f64 / 1000.0;
                let v = ((21.0 + (i as f64 / 600.0).sin() + noise) * 100.0).round() / 100.0;
                (
                    1_700_000_000_000 + i * 1000 + (x % 5) as i64,
                    Value::Double(v),
                )
            })
            .collect();
        let e = encode(&points);
        let per_point = (e.ts.len() + e.values.len()) as f64 / points.len() as f64;
        assert!(per_point < 2.0, "{per_point} bytes per point");
    }
}
