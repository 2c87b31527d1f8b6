//! What an admin command prints: a table (or a sentence) for people, JSON with `--json`.

use std::collections::HashMap;

use ib_core::registry::Registry;
use serde_json::Value;

/// A command's result in both forms.
pub struct Output {
    /// What `--json` prints.
    pub json: Value,
    /// What is printed otherwise.
    pub text: String,
}

impl Output {
    /// Rows under a header line; `(none)` when there are no rows.
    pub fn table(json: Value, headers: &[&str], rows: Vec<Vec<String>>) -> Output {
        Output {
            json,
            text: table(headers, &rows),
        }
    }

    /// A sentence (deletions, ...).
    pub fn line(json: Value, text: impl Into<String>) -> Output {
        Output {
            json,
            text: text.into(),
        }
    }

    /// Adds `key: value` lines after the text (secrets shown once).
    pub fn note(mut self, line: impl AsRef<str>) -> Output {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(line.as_ref());
        self
    }

    /// Prints it.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&self.json)?);
        } else {
            println!("{}", self.text);
        }
        Ok(())
    }
}

/// Columns padded to their widest cell, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)".to_string();
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            if i + 1 < widths.len() {
                s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// `-` for nothing.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Tenant and customer names for ids, looked up once each.
pub struct Names<'a> {
    registry: &'a Registry,
    tenants: HashMap<String, String>,
    customers: HashMap<String, String>,
}

impl<'a> Names<'a> {
    pub fn new(registry: &'a Registry) -> anyhow::Result<Names<'a>> {
        let tenants = registry
            .tenants()?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect();
        Ok(Names {
            registry,
            tenants,
            customers: HashMap::new(),
        })
    }

    /// A tenant's name (`-` for none, the id if it has gone).
    pub fn tenant(&self, id: Option<&str>) -> String {
        match id {
            None => "-".into(),
            Some(id) => self.tenants.get(id).cloned().unwrap_or_else(|| id.into()),
        }
    }

    /// A customer's name (`-` for none, the id if it has gone).
    pub fn customer(&mut self, id: Option<&str>) -> String {
        let Some(id) = id else {
            return "-".into();
        };
        if let Some(name) = self.customers.get(id) {
            return name.clone();
        }
        let name = self
            .registry
            .customer_by_id(id)
            .map(|c| c.name)
            .unwrap_or_else(|_| id.to_string());
        self.customers.insert(id.to_string(), name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(
            &["NAME", "ID"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long-name".into(), "22".into()],
            ],
        );
        assert_eq!(t, "NAME       ID\na          1\nlong-name  22");
        assert_eq!(table(&["X"], &[]), "(none)");
    }
}
