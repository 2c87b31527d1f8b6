//! Register maps as typed values: the tables, data types, byte and word order, and the pure
//! conversions between Modbus words/bits and JSON values (decoding what a device sent,
//! encoding what an RPC writes). No I/O; every decoder is property-tested.

use serde::Deserialize;
use serde_json::Value;

use crate::config::{RegisterConfig, Report};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coil,
    #[serde(alias = "discrete")]
    DiscreteInput,
    Holding,
    Input,
}

impl Table {
    /// Coils and discrete inputs hold bits; the others 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
    /// The most items one read request may ask for (Modbus application protocol, 6.1–6.4).
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

/// The value types a register map may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
}

impl DataType {
    /// Registers a value of this type spans (`string`: its `length`).
    pub fn registers(self, length: Option<u16>) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length.unwrap_or(1),
        }
    }
    fn is_integer(self) -> bool {
        matches!(
            self,
            DataType::U16
                | DataType::I16
                | DataType::U32
                | DataType::I32
                | DataType::U64
                | DataType::I64
        )
    }
}

/// Byte order within a register, or word order across registers. `big` is Modbus' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Big,
    Little,
}

/// A checked register map entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterSpec {
    pub key: String,
    pub table: Table,
    pub address: u16,
    pub data_type: DataType,
    /// Items spanned: registers, or 1 bit.
    pub count: u16,
    pub bit: Option<u8>,
    pub byte_order: Order,
    pub word_order: Order,
    pub scale: f64,
    pub offset: f64,
    pub report: Report,
    pub deadband: f64,
}

/// Why words could not become a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} items, got {got}")]
    Length { expected: usize, got: usize },
}

impl RegisterSpec {
    /// Checks one `registers` entry; the message names the field at fault.
    pub fn from_config(c: &RegisterConfig) -> Result<RegisterSpec, String> {
        let t = c.data_type;
        if c.table.is_bits() && t != DataType::Bool {
            return Err(format!(
                "type: a {:?} table holds bits: the type must be \"bool\"",
                c.table
            ));
        }
        if let Some(bit) = c.bit {
            if c.table.is_bits() {
                return Err("bit: only for holding and input registers".into());
            }
            if bit > 15 {
                return Err(format!("bit {bit} out of range 0..=15"));
            }
            if !matches!(t, DataType::Bool | DataType::U16) {
                return Err("bit: the type must be \"bool\" (or \"u16\")".into());
            }
        } else if !c.table.is_bits() && t == DataType::Bool {
            return Err("type \"bool\" on a register table needs `bit = N`".into());
        }
        if t == DataType::String {
            match c.length {
                Some(n) if (1..=125).contains(&n) => {}
                _ => return Err("length: a string needs length = 1..=125 registers".into()),
            }
        } else if c.length.is_some() {
            return Err("length: only for type \"string\"".into());
        }
        let numeric = t != DataType::String && t != DataType::Bool && c.bit.is_none();
        if !numeric && (c.scale.is_some() || c.offset.is_some() || c.deadband.is_some()) {
            return Err("scale/offset/deadband: only for numeric types".into());
        }
        let scale = c.scale.unwrap_or(1.0);
        if !scale.is_finite() || scale == 0.0 {
            return Err("scale: must be a finite, non-zero number".into());
        }
        let deadband = c.deadband.unwrap_or(0.0);
        if !(deadband.is_finite() && deadband >= 0.0) {
            return Err("deadband: must be a finite number ≥ 0".into());
        }
        let count = if c.table.is_bits() {
            1
        } else {
            t.registers(c.length)
        };
        if u32::from(c.address) + u32::from(count) > 65_536 {
            return Err("address: the value runs past register 65535".into());
        }
        let report = c.report.unwrap_or(if c.deadband.is_some() {
            Report::Change
        } else {
            Report::Always
        });
        Ok(RegisterSpec {
            key: c.key.clone(),
            table: c.table,
            address: c.address,
            data_type: t,
            count,
            bit: c.bit,
            byte_order: c.byte_order,
            word_order: c.word_order,
            scale,
            offset: c.offset.unwrap_or(0.0),
            report,
            deadband,
        })
    }

    /// The value from registers `words` (exactly `count` of them).
    pub fn decode_words(&self, words: &[u16]) -> Result<Value, DecodeError> {
        if words.len() != usize::from(self.count) {
            return Err(DecodeError::Length {
                expected: usize::from(self.count),
                got: words.len(),
            });
        }
        if let Some(bit) = self.bit {
            return Ok(Value::Bool((words[0] >> bit) & 1 == 1));
        }
        let bytes = to_bytes(words, self.byte_order, self.word_order);
        let raw = match self.data_type {
            DataType::String => return Ok(Value::String(decode_string(&bytes))),
            DataType::Bool => return Ok(Value::Bool(words[0] != 0)),
            DataType::U16 => Raw::U(u64::from(u16::from_be_bytes(arr(&bytes)))),
            DataType::I16 => Raw::I(i64::from(i16::from_be_bytes(arr(&bytes)))),
            DataType::U32 => Raw::U(u64::from(u32::from_be_bytes(arr(&bytes)))),
            DataType::I32 => Raw::I(i64::from(i32::from_be_bytes(arr(&bytes)))),
            DataType::U64 => Raw::U(u64::from_be_bytes(arr(&bytes))),
            DataType::I64 => Raw::I(i64::from_be_bytes(arr(&bytes))),
            DataType::F32 => Raw::F(f64::from(f32::from_be_bytes(arr(&bytes)))),
            DataType::F64 => Raw::F(f64::from_be_bytes(arr(&bytes))),
        };
        Ok(self.scaled(raw))
    }

    /// The value of one coil or discrete input.
    pub fn decode_bit(&self, bit: bool) -> Value {
        Value::Bool(bit)
    }

    fn scaled(&self, raw: Raw) -> Value {
        let exact = self.scale == 1.0 && self.offset == 0.0;
        match raw {
            Raw::U(u) if exact => Value::from(u),
            Raw::I(i) if exact => Value::from(i),
            Raw::U(u) => number(u as f64 * self.scale + self.offset),
            Raw::I(i) => number(i as f64 * self.scale + self.offset),
            Raw::F(f) => number(f * self.scale + self.offset),
        }
    }

    /// True when `new` is worth reporting after `last` under this entry's report policy.
    pub fn changed(&self, last: Option<&Value>, new: &Value) -> bool {
        if self.report == Report::Always {
            return true;
        }
        let Some(last) = last else { return true };
        match (last.as_f64(), new.as_f64()) {
            (Some(a), Some(b)) if self.deadband > 0.0 => (b - a).abs() >= self.deadband,
            _ => last != new,
        }
    }
}

enum Raw {
    U(u64),
    I(i64),
    F(f64),
}

/// NaN and infinities have no JSON form: they become null (and are reported as such).
fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Registers → bytes in big-endian order of the value: words reversed for little word order,
/// each word's bytes swapped for little byte order.
pub fn to_bytes(words: &[u16], byte_order: Order, word_order: Order) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 2);
    let mut push = |w: &u16| match byte_order {
        Order::Big => out.extend_from_slice(&w.to_be_bytes()),
        Order::Little => out.extend_from_slice(&w.to_le_bytes()),
    };
    match word_order {
        Order::Big => words.iter().for_each(&mut push),
        Order::Little => words.iter().rev().for_each(&mut push),
    }
    out
}

/// The inverse of [`to_bytes`].
pub fn from_bytes(bytes: &[u8], byte_order: Order, word_order: Order) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let pair = [c[0], *c.get(1).unwrap_or(&0)];
            match byte_order {
                Order::Big => u16::from_be_bytes(pair),
                Order::Little => u16::from_le_bytes(pair),
            }
        })
        .collect();
    if word_order == Order::Little {
        words.reverse();
    }
    words
}

/// Text up to the first NUL, trailing spaces trimmed; invalid UTF-8 replaced.
fn decode_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .trim_end_matches(' ')
        .to_string()
}

/// A JSON value → registers for `data_type` (writes). Integers must fit the type exactly.
pub fn encode_words(
    data_type: DataType,
    value: f64,
    byte_order: Order,
    word_order: Order,
) -> Result<Vec<u16>, String> {
    if !value.is_finite() {
        return Err(format!("{value} is not a finite number"));
    }
    if data_type.is_integer() && value.fract() != 0.0 {
        return Err(format!("{value} is not an integer"));
    }
    let fits = |lo: f64, hi: f64| {
        if value < lo || value > hi {
            Err(format!(
                "{value} is out of range {lo}..={hi} for {data_type:?}"
            ))
        } else {
            Ok(())
        }
    };
    let bytes: Vec<u8> = match data_type {
        DataType::Bool | DataType::U16 => {
            fits(0.0, 65_535.0)?;
            (value as u16).to_be_bytes().to_vec()
        }
        DataType::I16 => {
            fits(-32_768.0, 32_767.0)?;
            (value as i16).to_be_bytes().to_vec()
        }
        DataType::U32 => {
            fits(0.0, 4_294_967_295.0)?;
            (value as u32).to_be_bytes().to_vec()
        }
        DataType::I32 => {
            fits(-2_147_483_648.0, 2_147_483_647.0)?;
            (value as i32).to_be_bytes().to_vec()
        }
        // f64 holds integers exactly only up to 2^53: beyond, the write is refused.
        DataType::U64 => {
            fits(0.0, 9_007_199_254_740_992.0)?;
            (value as u64).to_be_bytes().to_vec()
        }
        DataType::I64 => {
            fits(-9_007_199_254_740_992.0, 9_007_199_254_740_992.0)?;
            (value as i64).to_be_bytes().to_vec()
        }
        DataType::F32 => {
            fits(f64::from(f32::MIN), f64::from(f32::MAX))?;
            (value as f32).to_be_bytes().to_vec()
        }
        DataType::F64 => value.to_be_bytes().to_vec(),
        DataType::String => return Err("strings cannot be written".into()),
    };
    Ok(from_bytes(&bytes, byte_order, word_order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(t: DataType, bo: Order, wo: Order) -> RegisterSpec {
        RegisterSpec {
            key: "k".into(),
            table: Table::Holding,
            address: 0,
            data_type: t,
            count: t.registers(Some(4)),
            bit: None,
            byte_order: bo,
            word_order: wo,
            scale: 1.0,
            offset: 0.0,
            report: Report::Always,
            deadband: 0.0,
        }
    }

    const ORDERS: [(Order, Order); 4] = [
        (Order::Big, Order::Big),
        (Order::Big, Order::Little),
        (Order::Little, Order::Big),
        (Order::Little, Order::Little),
    ];

    #[test]
    fn known_layouts() {
        // 0x12345678 as u32: ABCD, CDAB (little word), BADC (little byte), DCBA.
        let s = |bo, wo| spec(DataType::U32, bo, wo);
        let v = Value::from(0x1234_5678u64);
        assert_eq!(
            s(Order::Big, Order::Big).decode_words(&[0x1234, 0x5678]),
            Ok(v.clone())
        );
        assert_eq!(
            s(Order::Big, Order::Little).decode_words(&[0x5678, 0x1234]),
            Ok(v.clone())
        );
        assert_eq!(
            s(Order::Little, Order::Big).decode_words(&[0x3412, 0x7856]),
            Ok(v.clone())
        );
        assert_eq!(
            s(Order::Little, Order::Little).decode_words(&[0x7856, 0x3412]),
            Ok(v)
        );
        let f = spec(DataType::F32, Order::Big, Order::Big);
        assert_eq!(
            f.decode_words(&[0x4049, 0x0fdb]).unwrap(),
            Value::from(f64::from(std::f32::consts::PI))
        );
        let i = spec(DataType::I16, Order::Big, Order::Big);
        assert_eq!(i.decode_words(&[0xffff]), Ok(Value::from(-1)));
    }

    #[test]
    fn strings_bits_and_scaling() {
        let s = spec(DataType::String, Order::Big, Order::Big);
        assert_eq!(
            s.decode_words(&[0x4142, 0x4320, 0x0000, 0x4142]),
            Ok(Value::from("ABC"))
        );
        let mut b = spec(DataType::Bool, Order::Big, Order::Big);
        b.count = 1;
        b.bit = Some(3);
        assert_eq!(b.decode_words(&[0b1000]), Ok(Value::Bool(true)));
        assert_eq!(b.decode_words(&[0b0111]), Ok(Value::Bool(false)));
        let mut p = spec(DataType::U16, Order::Big, Order::Big);
        p.scale = 0.1;
        p.offset = -5.0;
        assert_eq!(p.decode_words(&[250]), Ok(Value::from(20.0)));
    }

    #[test]
    fn deadband() {
        let mut p = spec(DataType::U16, Order::Big, Order::Big);
        p.report = Report::Change;
        assert!(p.changed(None, &Value::from(1)));
        assert!(!p.changed(Some(&Value::from(1)), &Value::from(1)));
        assert!(p.changed(Some(&Value::from(1)), &Value::from(2)));
        p.deadband = 5.0;
        assert!(!p.changed(Some(&Value::from(1)), &Value::from(5)));
        assert!(p.changed(Some(&Value::from(1)), &Value::from(6)));
    }

    #[test]
    fn writes_are_range_checked() {
        assert!(encode_words(DataType::U16, 65_536.0, Order::Big, Order::Big).is_err());
        assert!(encode_words(DataType::I16, -32_769.0, Order::Big, Order::Big).is_err());
        assert!(encode_words(DataType::U16, 1.5, Order::Big, Order::Big).is_err());
        assert!(encode_words(DataType::U16, f64::NAN, Order::Big, Order::Big).is_err());
        assert_eq!(
            encode_words(DataType::U32, 0x1234_5678 as f64, Order::Big, Order::Little),
            Ok(vec![0x5678, 0x1234])
        );
    }

    fn types() -> impl Strategy<Value = DataType> {
        prop_oneof![
            Just(DataType::U16),
            Just(DataType::I16),
            Just(DataType::U32),
            Just(DataType::I32),
            Just(DataType::U64),
            Just(DataType::I64),
            Just(DataType::F32),
            Just(DataType::F64),
            Just(DataType::String),
        ]
    }

    proptest! {
        /// Any words, of any length, for any type and order: a value or a length error, never a panic.
        #[test]
        fn decoding_untrusted_words_never_panics(
            t in types(), bo in 0..2usize, wo in 0..2usize, bit in proptest::option::of(0u8..16),
            words in proptest::collection::vec(any::<u16>(), 0..8),
        ) {
            let o = [Order::Big, Order::Little];
            let mut s = spec(t, o[bo], o[wo]);
            if bit.is_some() { s.bit = bit; s.count = 1; }
            match s.decode_words(&words) {
                Ok(_) => prop_assert_eq!(words.len(), usize::from(s.count)),
                Err(DecodeError::Length { expected, got }) => {
                    prop_assert_eq!(expected, usize::from(s.count));
                    prop_assert_eq!(got, words.len());
                }
            }
        }

        /// The byte layout is a bijection for every order: words → bytes → words.
        #[test]
        fn byte_layout_round_trips(words in proptest::collection::vec(any::<u16>(), 0..8), bo in 0..2usize, wo in 0..2usize) {
            let o = [Order::Big, Order::Little];
            let bytes = to_bytes(&words, o[bo], o[wo]);
            prop_assert_eq!(from_bytes(&bytes, o[bo], o[wo]), words);
        }

        /// Integers written through `encode_words` decode to themselves, in every order.
        #[test]
        fn integers_round_trip(v in any::<i32>(), pick in 0..4usize, k in 0..4usize) {
            let (bo, wo) = ORDERS[k];
            let (t, v) = match pick {
                0 => (DataType::U16, f64::from(v.unsigned_abs() % 65_536)),
                1 => (DataType::I16, f64::from(v % 32_768)),
                2 => (DataType::U32, f64::from(v.unsigned_abs())),
                _ => (DataType::I32, f64::from(v)),
            };
            let words = encode_words(t, v, bo, wo).unwrap();
            let got = spec(t, bo, wo).decode_words(&words).unwrap();
            prop_assert_eq!(got.as_f64(), Some(v));
        }

        /// 64-bit integers and floats, in every order.
        #[test]
        fn wide_values_round_trip(u in 0u64..(1 << 53), f in any::<f64>(), g in any::<f32>(), k in 0..4usize) {
            let (bo, wo) = ORDERS[k];
            let words = encode_words(DataType::U64, u as f64, bo, wo).unwrap();
            prop_assert_eq!(spec(DataType::U64, bo, wo).decode_words(&words).unwrap(), Value::from(u));
            if f.is_finite() {
                let words = encode_words(DataType::F64, f, bo, wo).unwrap();
                prop_assert_eq!(spec(DataType::F64, bo, wo).decode_words(&words).unwrap().as_f64(), Some(f));
            }
            if g.is_finite() {
                let words = encode_words(DataType::F32, f64::from(g), bo, wo).unwrap();
                prop_assert_eq!(spec(DataType::F32, bo, wo).decode_words(&words).unwrap().as_f64(), Some(f64::from(g)));
            }
        }
    }
}
