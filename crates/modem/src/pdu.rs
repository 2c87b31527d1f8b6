//! GSM 03.40 (3GPP TS 23.040) transfer PDUs as AT+CMGS / +CMGR carry them in PDU mode:
//! SMS-SUBMIT (encoded with a status report request, decoded by the simulator), SMS-DELIVER
//! and SMS-STATUS-REPORT (decoded by the driver, encoded by the simulator); addresses
//! (international / national numbers in swapped semi-octets, alphanumeric senders), service
//! centre time stamps, user data headers (concatenation, 8- and 16-bit references).
//!
//! Every decoder takes untrusted bytes: a short or inconsistent PDU is a [`PduError`], never
//! a panic (proptests here, and the `sms_pdu` fuzz target).

use crate::gsm7;
use crate::text::{Coding, Concat};

/// Why a PDU cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("PDU too short: {0} missing")]
    Truncated(&'static str),
    #[error("not a phone number: {0:?}")]
    BadAddress(String),
    #[error("the text has characters outside the GSM 7-bit alphabet")]
    NotGsm7,
    #[error("8-bit data: a character above U+00FF")]
    NotLatin1,
    #[error("user data too long: {0} (at most 160 septets or 140 octets)")]
    TooLong(usize),
    #[error("not hexadecimal: {0}")]
    BadHex(String),
    #[error("unexpected message type (first octet {0:#04x})")]
    UnexpectedType(u8),
    #[error("malformed user data header")]
    BadHeader,
}

/// A service centre time stamp (23.040 §9.2.3.11): local time and its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Two digits (00..=99).
    pub year: u8,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// Offset from UTC in quarters of an hour (−79..=79).
    pub tz_quarters: i8,
}

/// A message's text and where it sits in a concatenated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    pub coding: Coding,
    pub concat: Option<Concat>,
    /// The text; 8-bit data reads as Latin-1 (one character per octet).
    pub text: String,
}

/// SMS-SUBMIT: a message the modem sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// TP-MR; the modem assigns its own and reports it in `+CMGS:`.
    pub reference: u8,
    pub to: String,
    /// TP-SRR: ask the network for a delivery report.
    pub status_report: bool,
    /// TP-VP, relative format (167 = 24 hours); `None` leaves it to the centre.
    pub validity: Option<u8>,
    pub data: UserData,
}

/// SMS-DELIVER: a message the modem received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    pub from: String,
    pub timestamp: Timestamp,
    /// TP-SRI: the sender asked for a status report.
    pub status_report: bool,
    pub data: UserData,
}

/// SMS-STATUS-REPORT: what became of a message sent with a report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The TP-MR of the message it reports on.
    pub reference: u8,
    pub recipient: String,
    /// When the centre received the message.
    pub timestamp: Timestamp,
    /// When it was delivered (or the status last changed).
    pub discharge: Timestamp,
    /// TP-ST (23.040 §9.2.3.15).
    pub status: u8,
}

impl StatusReport {
    /// `Some(true)` delivered, `Some(false)` failed for good, `None` still being tried.
    pub fn delivered(&self) -> Option<bool> {
        match self.status {
            0x00..=0x1F => Some(true),
            0x20..=0x3F => None,
            _ => Some(false),
        }
    }
}

/// A PDU travelling towards the modem (from the network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Deliver(Deliver),
    StatusReport(StatusReport),
}

/// Uppercase hexadecimal, as AT commands carry PDUs.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[usize::from(b >> 4)] as char);
        s.push(D[usize::from(b & 15)] as char);
    }
    s
}

/// Hexadecimal (either case, surrounding white space ignored) as bytes.
pub fn unhex(s: &str) -> Result<Vec<u8>, PduError> {
    let s = s.trim();
    let short = || PduError::BadHex(s.chars().take(16).collect());
    if !s.len().is_multiple_of(2) {
        return Err(short());
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(short)
}

/// Bytes read front to back, each shortage named.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, PduError> {
        let (&b, rest) = self.bytes.split_first().ok_or(PduError::Truncated(what))?;
        self.bytes = rest;
        Ok(b)
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PduError> {
        if self.bytes.len() < n {
            return Err(PduError::Truncated(what));
        }
        let (a, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(a)
    }
}

/// Type of address: international number (E.164, shown with `+`).
const TOA_INTERNATIONAL: u8 = 0x91;
/// Type of address: unknown numbering, ISDN plan (national numbers and short codes).
const TOA_UNKNOWN: u8 = 0x81;
const TON_ALPHANUMERIC: u8 = 0x50;

fn semi_octet(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(0xA),
        '#' => Some(0xB),
        _ => None,
    }
}

fn semi_octet_char(n: u8) -> char {
    match n {
        0..=9 => (b'0' + n) as char,
        0xA => '*',
        0xB => '#',
        0xC => 'a',
        0xD => 'b',
        _ => 'c',
    }
    // 0xF (the filler of an odd digit count) is skipped by the callers
}

/// An address field: digit count, type, swapped semi-octets (`+` → international).
pub fn encode_address(number: &str) -> Result<Vec<u8>, PduError> {
    let bad = || PduError::BadAddress(number.to_string());
    let (toa, digits) = match number.strip_prefix('+') {
        Some(d) => (TOA_INTERNATIONAL, d),
        None => (TOA_UNKNOWN, number),
    };
    let nibbles = digits
        .chars()
        .map(semi_octet)
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    if nibbles.is_empty() || nibbles.len() > 20 {
        return Err(bad());
    }
    let mut out = vec![nibbles.len() as u8, toa];
    for pair in nibbles.chunks(2) {
        out.push(pair[0] | pair.get(1).copied().unwrap_or(0xF) << 4);
    }
    Ok(out)
}

fn decode_address(r: &mut Reader<'_>) -> Result<String, PduError> {
    let len = usize::from(r.u8("address length")?);
    let toa = r.u8("type of address")?;
    let bytes = r.take(len.div_ceil(2), "address")?;
    if toa & 0x70 == TON_ALPHANUMERIC {
        // a sender name: GSM-7 packed, the length counts semi-octets
        return Ok(gsm7::decode(&gsm7::unpack(bytes, 0, len * 4 / 7)));
    }
    let mut s = String::with_capacity(len + 1);
    if toa & 0x70 == TOA_INTERNATIONAL & 0x70 {
        s.push('+');
    }
    for i in 0..len {
        let b = bytes[i / 2];
        let n = if i % 2 == 0 { b & 0xF } else { b >> 4 };
        if n != 0xF {
            s.push(semi_octet_char(n));
        }
    }
    Ok(s)
}

fn swapped(v: u8) -> u8 {
    ((v % 10) << 4) | ((v / 10) % 10)
}

fn unswapped(b: u8) -> u8 {
    (b & 0xF) * 10 + (b >> 4)
}

fn encode_timestamp(t: &Timestamp, out: &mut Vec<u8>) {
    for v in [t.year, t.month, t.day, t.hour, t.minute, t.second] {
        out.push(swapped(v));
    }
    let q = t.tz_quarters.unsigned_abs().min(79);
    out.push(swapped(q) | if t.tz_quarters < 0 { 0x08 } else { 0 });
}

fn decode_timestamp(r: &mut Reader<'_>) -> Result<Timestamp, PduError> {
    let b = r.take(7, "time stamp")?;
    let tz = ((b[6] & 0x7) * 10 + (b[6] >> 4)) as i8;
    Ok(Timestamp {
        year: unswapped(b[0]),
        month: unswapped(b[1]),
        day: unswapped(b[2]),
        hour: unswapped(b[3]),
        minute: unswapped(b[4]),
        second: unswapped(b[5]),
        tz_quarters: if b[6] & 0x08 != 0 { -tz } else { tz },
    })
}

/// The concatenation header, 8-bit reference when it fits, else 16-bit.
fn concat_header(c: &Concat) -> Vec<u8> {
    match u8::try_from(c.reference) {
        Ok(r) => vec![0x05, 0x00, 0x03, r, c.total, c.seq],
        Err(_) => {
            let [hi, lo] = c.reference.to_be_bytes();
            vec![0x06, 0x08, 0x04, hi, lo, c.total, c.seq]
        }
    }
}

/// TP-UDL and TP-UD of `data`.
fn encode_user_data(data: &UserData) -> Result<(u8, Vec<u8>), PduError> {
    let mut ud = data.concat.as_ref().map(concat_header).unwrap_or_default();
    let udh_len = ud.len();
    let udl = match data.coding {
        Coding::Gsm7 => {
            let septets = gsm7::encode(&data.text).ok_or(PduError::NotGsm7)?;
            let udl = gsm7::header_septets(udh_len) + septets.len();
            if udl > 160 {
                return Err(PduError::TooLong(udl));
            }
            ud.extend(gsm7::pack(&septets, gsm7::fill_bits(udh_len)));
            udl
        }
        Coding::Ucs2 => {
            ud.extend(gsm7::ucs2_encode(&data.text));
            ud.len()
        }
        Coding::Data8 => {
            for c in data.text.chars() {
                ud.push(u8::try_from(u32::from(c)).map_err(|_| PduError::NotLatin1)?);
            }
            ud.len()
        }
    };
    if ud.len() > 140 {
        return Err(PduError::TooLong(ud.len()));
    }
    Ok((udl as u8, ud))
}

/// The concatenation information element of a header, if any; other elements are skipped.
fn parse_header(h: &[u8]) -> Result<Option<Concat>, PduError> {
    let mut r = Reader { bytes: h };
    let mut concat = None;
    while !r.bytes.is_empty() {
        let iei = r.u8("IEI").map_err(|_| PduError::BadHeader)?;
        let len = usize::from(r.u8("IE length").map_err(|_| PduError::BadHeader)?);
        let d = r.take(len, "IE").map_err(|_| PduError::BadHeader)?;
        let c = match (iei, d) {
            (0x00, &[rf, total, seq]) => Some((u16::from(rf), total, seq)),
            (0x08, &[hi, lo, total, seq]) => Some((u16::from_be_bytes([hi, lo]), total, seq)),
            _ => None,
        };
        if let Some((reference, total, seq)) = c {
            // a part numbered outside its count is read as a message of its own
            if total > 0 && seq > 0 && seq <= total {
                concat = Some(Concat {
                    reference,
                    total,
                    seq,
                });
            }
        }
    }
    Ok(concat)
}

fn decode_user_data(r: &mut Reader<'_>, udhi: bool, dcs: u8) -> Result<UserData, PduError> {
    let coding = Coding::from_dcs(dcs);
    let udl = usize::from(r.u8("user data length")?);
    let octets = match coding {
        Coding::Gsm7 => (udl * 7).div_ceil(8),
        _ => udl,
    };
    let ud = r.take(octets, "user data")?;
    let (concat, udh_len) = if udhi {
        let n = usize::from(*ud.first().ok_or(PduError::BadHeader)?);
        let h = ud.get(1..1 + n).ok_or(PduError::BadHeader)?;
        (parse_header(h)?, n + 1)
    } else {
        (None, 0)
    };
    let body = &ud[udh_len..];
    let text = match coding {
        Coding::Gsm7 => {
            let skip = gsm7::header_septets(udh_len);
            let count = udl.checked_sub(skip).ok_or(PduError::BadHeader)?;
            gsm7::decode(&gsm7::unpack(body, gsm7::fill_bits(udh_len), count))
        }
        Coding::Ucs2 => gsm7::ucs2_decode(body),
        Coding::Data8 => body.iter().map(|&b| char::from(b)).collect(),
    };
    Ok(UserData {
        coding,
        concat,
        text,
    })
}

const UDHI: u8 = 0x40;
const SRR: u8 = 0x20;
const MMS: u8 = 0x04;

/// An SMS-SUBMIT TPDU (without the service centre prefix).
pub fn encode_submit(s: &Submit) -> Result<Vec<u8>, PduError> {
    let (udl, ud) = encode_user_data(&s.data)?;
    let mut first = 0x01;
    if s.validity.is_some() {
        first |= 0x10;
    }
    if s.status_report {
        first |= SRR;
    }
    if s.data.concat.is_some() {
        first |= UDHI;
    }
    let mut out = vec![first, s.reference];
    out.extend(encode_address(&s.to)?);
    out.extend([0x00, s.data.coding.dcs()]);
    out.extend(s.validity);
    out.push(udl);
    out.extend(ud);
    Ok(out)
}

/// An SMS-SUBMIT TPDU (the simulator reads what the driver sends).
pub fn decode_submit(tpdu: &[u8]) -> Result<Submit, PduError> {
    let mut r = Reader { bytes: tpdu };
    let first = r.u8("first octet")?;
    if first & 0x03 != 0x01 {
        return Err(PduError::UnexpectedType(first));
    }
    let reference = r.u8("message reference")?;
    let to = decode_address(&mut r)?;
    let _pid = r.u8("protocol identifier")?;
    let dcs = r.u8("data coding scheme")?;
    let validity = match (first >> 3) & 0x03 {
        0b10 => Some(r.u8("validity period")?),
        0b00 => None,
        // enhanced or absolute: seven octets, not kept
        _ => r.take(7, "validity period").map(|_| None)?,
    };
    let data = decode_user_data(&mut r, first & UDHI != 0, dcs)?;
    Ok(Submit {
        reference,
        to,
        status_report: first & SRR != 0,
        validity,
        data,
    })
}

/// An SMS-DELIVER TPDU (the simulator's incoming messages).
pub fn encode_deliver(d: &Deliver) -> Result<Vec<u8>, PduError> {
    let (udl, ud) = encode_user_data(&d.data)?;
    let mut first = MMS;
    if d.status_report {
        first |= SRR;
    }
    if d.data.concat.is_some() {
        first |= UDHI;
    }
    let mut out = vec![first];
    out.extend(encode_address(&d.from)?);
    out.extend([0x00, d.data.coding.dcs()]);
    encode_timestamp(&d.timestamp, &mut out);
    out.push(udl);
    out.extend(ud);
    Ok(out)
}

/// An SMS-STATUS-REPORT TPDU.
pub fn encode_status_report(s: &StatusReport) -> Result<Vec<u8>, PduError> {
    let mut out = vec![0x02 | MMS, s.reference];
    out.extend(encode_address(&s.recipient)?);
    encode_timestamp(&s.timestamp, &mut out);
    encode_timestamp(&s.discharge, &mut out);
    out.push(s.status);
    Ok(out)
}

/// A TPDU from the network: SMS-DELIVER or SMS-STATUS-REPORT, by its message type.
pub fn decode_incoming(tpdu: &[u8]) -> Result<Incoming, PduError> {
    let mut r = Reader { bytes: tpdu };
    let first = r.u8("first octet")?;
    match first & 0x03 {
        0x00 => {
            let from = decode_address(&mut r)?;
            let _pid = r.u8("protocol identifier")?;
            let dcs = r.u8("data coding scheme")?;
            let timestamp = decode_timestamp(&mut r)?;
            let data = decode_user_data(&mut r, first & UDHI != 0, dcs)?;
            Ok(Incoming::Deliver(Deliver {
                from,
                timestamp,
                status_report: first & SRR != 0,
                data,
            }))
        }
        0x02 => {
            let reference = r.u8("message reference")?;
            let recipient = decode_address(&mut r)?;
            let timestamp = decode_timestamp(&mut r)?;
            let discharge = decode_timestamp(&mut r)?;
            let status = r.u8("status")?;
            Ok(Incoming::StatusReport(StatusReport {
                reference,
                recipient,
                timestamp,
                discharge,
                status,
            }))
        }
        _ => Err(PduError::UnexpectedType(first)),
    }
}

/// Splits a PDU as modems show it (service centre address first) into the centre's number
/// (`None`: the SIM's default) and the TPDU.
pub fn split_sca(pdu: &[u8]) -> Result<(Option<String>, &[u8]), PduError> {
    let n = usize::from(*pdu.first().ok_or(PduError::Truncated("SMSC length"))?);
    if n == 0 {
        return Ok((None, &pdu[1..]));
    }
    let rest = pdu
        .get(1 + n..)
        .ok_or(PduError::Truncated("SMSC address"))?;
    // the SMSC length counts octets (type included), unlike other addresses
    let digits = (n - 1) * 2;
    let mut field = vec![digits as u8];
    field.extend_from_slice(&pdu[1..1 + n]);
    let mut r = Reader { bytes: &field };
    Ok((Some(decode_address(&mut r)?), rest))
}

#[cfg(test)]
mod tests;
