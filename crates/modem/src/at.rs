//! AT response lines (3GPP TS 27.007 §4, 27.005 §3-4), pure: which line ends a command (final
//! result codes `OK`, `ERROR`, `+CME ERROR`, `+CMS ERROR`), which are unsolicited (`+CMTI`,
//! `+CDSI`, `+CDS`, `+CMT`, `RING`...), and the parameters of information responses.

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Ok,
    /// `ERROR`, `+CME ERROR: ...` or `+CMS ERROR: ...` (the line as the modem sent it).
    Error(String),
}

/// The final result code a line is, if it is one.
pub fn final_code(line: &str) -> Option<Final> {
    match line {
        "OK" => Some(Final::Ok),
        "ERROR"
        | "NO CARRIER"
        | "BUSY"
        | "NO ANSWER"
        | "NO DIALTONE"
        | "COMMAND NOT SUPPORT"
        | "TOO MANY PARAMETERS" => Some(Final::Error(line.to_string())),
        _ if line.starts_with("+CME ERROR:") || line.starts_with("+CMS ERROR:") => {
            Some(Final::Error(line.to_string()))
        }
        _ => None,
    }
}

/// An unsolicited result code's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrcHead {
    /// `+CMTI: "SM",3`: a message stored at `index`.
    Stored { storage: String, index: u32 },
    /// `+CDSI: "SR",2`: a status report stored at `index`.
    ReportStored { storage: String, index: u32 },
    /// `+CDS: 25` (PDU mode): a status report PDU of that many octets follows on the next line.
    ReportPdu,
    /// `+CDS: 6,42,"+49...",145,"scts","dt",0` (text mode): the whole report on one line.
    ReportText(Vec<String>),
    /// `+CMT: ...`: a message routed directly; its PDU (or text) follows on the next line.
    Direct,
    /// `RING`, `+CRING`, `+CREG: 1` and other codes the driver only logs.
    Other(String),
}

/// Codes that announce themselves while a command is running (their prefixes).
const URC_PREFIXES: [&str; 9] = [
    "+CMTI:",
    "+CDSI:",
    "+CDS:",
    "+CMT:",
    "RING",
    "+CRING:",
    "+CBM:",
    "^SYSSTART",
    "+CIEV:",
];

/// The unsolicited code a line is, if it is one. `+CREG:` with one parameter (`+CREG: 1`) is
/// unsolicited, with two (`+CREG: 0,1`) it answers `AT+CREG?`.
pub fn urc(line: &str) -> Option<UrcHead> {
    let value = |p: &str| line.strip_prefix(p).map(|v| params(v.trim()));
    if let Some(p) = value("+CMTI:") {
        return Some(UrcHead::Stored {
            storage: p.first().cloned().unwrap_or_default(),
            index: p.get(1)?.parse().ok()?,
        });
    }
    if let Some(p) = value("+CDSI:") {
        return Some(UrcHead::ReportStored {
            storage: p.first().cloned().unwrap_or_default(),
            index: p.get(1)?.parse().ok()?,
        });
    }
    if let Some(p) = value("+CDS:") {
        return Some(if p.len() == 1 {
            UrcHead::ReportPdu
        } else {
            UrcHead::ReportText(p)
        });
    }
    if line.starts_with("+CMT:") {
        return Some(UrcHead::Direct);
    }
    if line.starts_with("+CREG:") && value("+CREG:").is_some_and(|p| p.len() == 1) {
        return Some(UrcHead::Other(line.to_string()));
    }
    URC_PREFIXES
        .iter()
        .any(|p| line.starts_with(p))
        .then(|| UrcHead::Other(line.to_string()))
}

/// Comma-separated parameters; quotes removed, commas inside quotes kept.
pub fn params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// The parameters of the first information line starting with `prefix` (`+CSQ:`).
pub fn info<'a>(lines: &'a [String], prefix: &str) -> Option<Vec<String>> {
    lines
        .iter()
        .find_map(|l: &'a String| l.strip_prefix(prefix))
        .map(|v| params(v.trim()))
}

/// A string as the `UCS2` TE character set writes it (hex of UTF-16BE).
pub fn ucs2_hex(s: &str) -> String {
    crate::pdu::hex(&crate::gsm7::ucs2_encode(s))
}

/// A `UCS2` TE string back as text; strings that are not hex are taken as they are (some
/// modems keep numbers in IRA whatever the character set).
pub fn from_ucs2_hex(s: &str) -> String {
    match crate::pdu::unhex(s) {
        Ok(b) if !s.is_empty() && s.len().is_multiple_of(4) => crate::gsm7::ucs2_decode(&b),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_codes() {
        assert_eq!(final_code("OK"), Some(Final::Ok));
        assert_eq!(
            final_code("+CMS ERROR: 304"),
            Some(Final::Error("+CMS ERROR: 304".into()))
        );
        assert!(final_code("+CME ERROR: SIM PIN required").is_some());
        assert_eq!(final_code("+CSQ: 20,99"), None);
    }

    #[test]
    fn unsolicited_codes() {
        assert_eq!(
            urc("+CMTI: \"SM\",3"),
            Some(UrcHead::Stored {
                storage: "SM".into(),
                index: 3
            })
        );
        assert_eq!(urc("+CDS: 25"), Some(UrcHead::ReportPdu));
        assert!(matches!(
            urc("+CDS: 6,42,\"+49170\",145,\"26/11/26,18:00:00+04\",\"26/11/26,18:00:01+04\",0"),
            Some(UrcHead::ReportText(p)) if p.len() == 7 && p[1] == "42"
        ));
        assert_eq!(urc("+CMT: ,24"), Some(UrcHead::Direct));
        assert_eq!(urc("RING"), Some(UrcHead::Other("RING".into())));
        assert_eq!(urc("+CREG: 1"), Some(UrcHead::Other("+CREG: 1".into())));
        assert_eq!(urc("+CREG: 0,1"), None);
        assert_eq!(urc("+CMGR: 0,,24"), None);
        assert_eq!(urc("+CMTI: \"SM\",x"), None);
    }

    #[test]
    fn parameters() {
        assert_eq!(
            params("\"REC UNREAD\",\"+49\",,\"26/11/26,18:05:00+04\"")[3],
            "26/11/26,18:05:00+04"
        );
        let lines = vec!["+CSQ: 21,99".to_string()];
        assert_eq!(info(&lines, "+CSQ:").unwrap(), ["21", "99"]);
        assert_eq!(from_ucs2_hex(&ucs2_hex("+49 ж")), "+49 ж");
        assert_eq!(from_ucs2_hex("+4917"), "+4917");
    }

    proptest::proptest! {
        #[test]
        fn any_line_is_classified_without_panic(line in "\\PC{0,80}", prefix in proptest::sample::select(
            vec!["", "+CMTI: ", "+CDS: ", "+CDSI: ", "+CMT: ", "+CREG: ", "+CMS ERROR: "]))
        {
            let l = format!("{prefix}{line}");
            let _ = final_code(&l);
            let _ = urc(&l);
            let _ = params(&l);
            let _ = from_ucs2_hex(&l);
        }
    }
}
