//! GSM 03.38 (3GPP TS 23.038): the GSM 7-bit default alphabet and its extension table,
//! septet packing (with the fill bits that align septets after a user data header), and UCS-2.
//! Pure functions, no I/O.

/// The escape septet: the next septet is read from the extension table.
pub const ESC: u8 = 0x1B;

/// The default alphabet, indexed by septet (0x1B, the escape, is never looked up).
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (septet after the escape, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{c}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septets of one character: one from the default alphabet, two (escape + septet) from
/// the extension table, `None` when GSM-7 cannot carry it.
pub fn char_septets(c: char) -> Option<([u8; 2], usize)> {
    if c != '\u{1b}' {
        if let Some(i) = BASIC.iter().position(|&b| b == c) {
            return Some(([i as u8, 0], 1));
        }
    }
    EXTENSION
        .iter()
        .find(|(_, e)| *e == c)
        .map(|(s, _)| ([ESC, *s], 2))
}

/// Whether every character of `text` has a GSM-7 encoding.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| char_septets(c).is_some())
}

/// `text` as septets (values 0..=127), `None` if a character is outside the alphabet.
pub fn encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let (s, n) = char_septets(c)?;
        out.extend_from_slice(&s[..n]);
    }
    Some(out)
}

/// Septets as text. An escape followed by a septet the extension table does not define reads
/// as that septet's default character (23.038 §6.2.1.1); a trailing escape is dropped.
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut it = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = it.next() {
        if s == ESC {
            match it.next() {
                Some(n) => out.push(
                    EXTENSION
                        .iter()
                        .find(|(e, _)| *e == n)
                        .map_or(BASIC[usize::from(n)], |(_, c)| *c),
                ),
                None => break,
            }
        } else {
            out.push(BASIC[usize::from(s)]);
        }
    }
    out
}

/// Packs septets 8 to 7, after `fill` zero bits (0..=6: the padding that puts the first
/// septet on a septet boundary after a user data header).
pub fn pack(septets: &[u8], fill: u8) -> Vec<u8> {
    let bits = usize::from(fill) + septets.len() * 7;
    let mut out = vec![0u8; bits.div_ceil(8)];
    for (i, s) in septets.iter().enumerate() {
        let at = usize::from(fill) + i * 7;
        let v = u16::from(s & 0x7F) << (at % 8);
        out[at / 8] |= v as u8;
        if v > 0xFF {
            out[at / 8 + 1] |= (v >> 8) as u8;
        }
    }
    out
}

/// Unpacks `count` septets from `bytes`, skipping `fill` bits first; stops early (fewer
/// septets) when the bytes run out.
pub fn unpack(bytes: &[u8], fill: u8, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = usize::from(fill) + i * 7;
        let Some(&lo) = bytes.get(at / 8) else { break };
        let hi = if at % 8 > 1 {
            match bytes.get(at / 8 + 1) {
                Some(&h) => h,
                None => break,
            }
        } else {
            0
        };
        let v = (u16::from(hi) << 8 | u16::from(lo)) >> (at % 8);
        out.push((v & 0x7F) as u8);
    }
    out
}

/// Fill bits after a user data header of `udh_len` octets (its length octet included).
pub fn fill_bits(udh_len: usize) -> u8 {
    ((7 - (udh_len * 8) % 7) % 7) as u8
}

/// Septets a user data header of `udh_len` octets occupies (its fill bits included).
pub fn header_septets(udh_len: usize) -> usize {
    (udh_len * 8).div_ceil(7)
}

/// `text` as UCS-2 (UTF-16 big-endian: characters beyond the BMP take a surrogate pair, as
/// phones send them).
pub fn ucs2_encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// UCS-2 / UTF-16BE as text; an odd trailing byte is dropped, a lone surrogate becomes U+FFFD.
pub fn ucs2_decode(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hello_packs_as_the_specification_example() {
        // 23.038's classic: "hellohello" → E8329BFD4697D9EC37
        let s = encode("hellohello").unwrap();
        assert_eq!(
            pack(&s, 0),
            [0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
        );
        assert_eq!(decode(&unpack(&pack(&s, 0), 0, s.len())), "hellohello");
    }

    #[test]
    fn extension_characters_take_two_septets() {
        assert_eq!(encode("€").unwrap(), [ESC, 0x65]);
        assert_eq!(encode("a{b}").unwrap().len(), 6);
        assert_eq!(decode(&encode("[x]~\\^|€\u{c}").unwrap()), "[x]~\\^|€\u{c}");
        assert!(encode("ж").is_none());
        assert!(encode("\u{1b}").is_none());
        // an undefined extension reads as the default character; a trailing escape is dropped
        assert_eq!(decode(&[ESC, 0x41, ESC]), "A");
    }

    #[test]
    fn fill_bits_follow_the_header() {
        assert_eq!(fill_bits(6), 1); // concatenation header (UDHL 5)
        assert_eq!(header_septets(6), 7);
        assert_eq!(fill_bits(7), 0);
        assert_eq!(fill_bits(0), 0);
    }

    #[test]
    fn ucs2_carries_everything() {
        let t = "Привет 👋";
        assert_eq!(ucs2_decode(&ucs2_encode(t)), t);
        assert_eq!(ucs2_encode("A"), [0, 0x41]);
        assert_eq!(ucs2_decode(&[0, 0x41, 0x42]), "A");
    }

    proptest! {
        #[test]
        fn pack_unpack_round_trip(septets in proptest::collection::vec(0u8..128, 0..200), fill in 0u8..7) {
            let packed = pack(&septets, fill);
            prop_assert_eq!(unpack(&packed, fill, septets.len()), septets);
        }

        #[test]
        fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), fill in 0u8..7, count in 0usize..300) {
            let out = unpack(&bytes, fill, count);
            prop_assert!(out.len() <= count);
            let _ = decode(&out);
            let _ = ucs2_decode(&bytes);
        }

        #[test]
        fn gsm_text_round_trips(idx in proptest::collection::vec(0usize..138, 0..100)) {
            let text: String = idx.iter().map(|&i| if i < 128 { BASIC[i] } else { EXTENSION[i - 128].1 })
                .filter(|&c| c != '\u{1b}').collect();
            let s = encode(&text).unwrap();
            prop_assert_eq!(decode(&s), text);
        }
    }
}
