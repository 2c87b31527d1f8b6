//! A text as SMS user data: the alphabet chosen (GSM-7 when every character has a septet, else
//! UCS-2) and the split into concatenated parts (3GPP TS 23.040 §9.2.3.24.1: a user data header
//! with IEI 0x00, 8-bit reference, leaving 153 septets or 67 UCS-2 units per part). Parts never
//! split an escape sequence or a surrogate pair.

use crate::gsm7;

/// Septets in one SMS without a header.
pub const GSM7_SINGLE: usize = 160;
/// Septets per part of a concatenated message (160 minus the 7 of the header).
pub const GSM7_PART: usize = 153;
/// UCS-2 octets in one SMS.
pub const UCS2_SINGLE: usize = 140;
/// UCS-2 octets per part of a concatenated message (67 characters).
pub const UCS2_PART: usize = 134;
/// Most parts of one concatenated message (the header's count is one octet).
pub const MAX_PARTS: usize = 255;

/// A user data alphabet (the data coding scheme's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GSM 7-bit default alphabet.
    Gsm7,
    /// 8-bit data.
    Data8,
    /// UCS-2 (UTF-16BE).
    Ucs2,
}

impl Coding {
    /// The data coding scheme octet sent for this alphabet (general group, no class).
    pub fn dcs(self) -> u8 {
        match self {
            Coding::Gsm7 => 0x00,
            Coding::Data8 => 0x04,
            Coding::Ucs2 => 0x08,
        }
    }

    /// The alphabet a data coding scheme names (23.038 §4); reserved values read as GSM-7.
    pub fn from_dcs(dcs: u8) -> Coding {
        match dcs >> 4 {
            // general data coding (compressed or not; compression is not supported: read raw)
            0x0..=0x7 => match (dcs >> 2) & 0x03 {
                0b01 => Coding::Data8,
                0b10 => Coding::Ucs2,
                _ => Coding::Gsm7,
            },
            0xE => Coding::Ucs2,
            0xF if dcs & 0x04 != 0 => Coding::Data8,
            _ => Coding::Gsm7,
        }
    }
}

/// One part's place in a concatenated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat {
    /// The same for every part of one message.
    pub reference: u16,
    pub total: u8,
    /// 1-based.
    pub seq: u8,
}

/// One SMS worth of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub coding: Coding,
    pub concat: Option<Concat>,
    pub text: String,
}

/// Why a text cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("the text needs {0} parts; at most {MAX_PARTS} fit one concatenated message")]
    TooLong(usize),
}

/// The alphabet for `text`: GSM-7 when it can carry every character.
pub fn choose(text: &str) -> Coding {
    if gsm7::is_gsm7(text) {
        Coding::Gsm7
    } else {
        Coding::Ucs2
    }
}

/// The parts `text` needs (one when it fits a single SMS), each holding its share of the
/// text; `reference` goes into every part's concatenation header.
pub fn split(text: &str, reference: u8) -> Result<Vec<Part>, TextError> {
    let coding = choose(text);
    let cost = |c: char| match coding {
        Coding::Gsm7 => gsm7::char_septets(c).map_or(1, |(_, n)| n),
        _ => c.len_utf16() * 2,
    };
    let (single, per_part) = match coding {
        Coding::Gsm7 => (GSM7_SINGLE, GSM7_PART),
        _ => (UCS2_SINGLE, UCS2_PART),
    };
    let total: usize = text.chars().map(cost).sum();
    if total <= single {
        return Ok(vec![Part {
            coding,
            concat: None,
            text: text.to_string(),
        }]);
    }
    let mut chunks = Vec::new();
    let (mut current, mut used) = (String::new(), 0);
    for c in text.chars() {
        let n = cost(c);
        if used + n > per_part {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(c);
        used += n;
    }
    chunks.push(current);
    if chunks.len() > MAX_PARTS {
        return Err(TextError::TooLong(chunks.len()));
    }
    let n = chunks.len() as u8;
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, text)| Part {
            coding,
            concat: Some(Concat {
                reference: u16::from(reference),
                total: n,
                seq: i as u8 + 1,
            }),
            text,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_texts_are_one_part() {
        let p = split(&"a".repeat(160), 1).unwrap();
        assert_eq!((p.len(), p[0].coding, p[0].concat), (1, Coding::Gsm7, None));
        let p = split(&"ж".repeat(70), 1).unwrap();
        assert_eq!((p.len(), p[0].coding), (1, Coding::Ucs2));
    }

    #[test]
    fn long_texts_split_at_153_and_67() {
        let p = split(&"a".repeat(161), 9).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].text.len(), 153);
        assert_eq!(
            p[1].concat,
            Some(Concat {
                reference: 9,
                total: 2,
                seq: 2
            })
        );
        let p = split(&"ж".repeat(71), 1).unwrap();
        assert_eq!((p.len(), p[0].text.chars().count()), (2, 67));
    }

    #[test]
    fn an_escape_is_never_split() {
        // 152 plain septets then '€' (two): the euro goes whole into part two
        let t = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let p = split(&t, 1).unwrap();
        assert_eq!(p[0].text, "a".repeat(152));
        assert!(p[1].text.starts_with('€'));
    }

    #[test]
    fn the_alphabet_follows_the_dcs() {
        assert_eq!(Coding::from_dcs(0x00), Coding::Gsm7);
        assert_eq!(Coding::from_dcs(0x08), Coding::Ucs2);
        assert_eq!(Coding::from_dcs(0x04), Coding::Data8);
        assert_eq!(Coding::from_dcs(0xF4), Coding::Data8);
        assert_eq!(Coding::from_dcs(0xF0), Coding::Gsm7);
        assert_eq!(Coding::from_dcs(0x18), Coding::Ucs2);
        for c in [Coding::Gsm7, Coding::Data8, Coding::Ucs2] {
            assert_eq!(Coding::from_dcs(c.dcs()), c);
        }
    }

    proptest! {
        #[test]
        fn parts_join_to_the_text(text in "\\PC{0,700}") {
            if let Ok(parts) = split(&text, 3) {
                let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
                prop_assert_eq!(joined, text);
            }
        }
    }
}
