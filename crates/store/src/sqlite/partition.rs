//! Partitions: the sealed chunks of one retention group and one UTC day live in their own file,
//! `telemetry/gN/YYYY-MM-DD.db` (N the group's id), so that retention deletes whole files and
//! disk use falls at once.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::Result;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chunks (
    series INTEGER NOT NULL, t_min INTEGER NOT NULL, t_max INTEGER NOT NULL, n INTEGER NOT NULL,
    kind INTEGER NOT NULL, ts BLOB NOT NULL, vals BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_series ON chunks (series, t_min);
";

/// The day (days since the epoch, UTC) a timestamp falls in.
pub fn day_of(ts: i64) -> i64 {
    ts.div_euclid(DAY_MS)
}

/// `YYYY-MM-DD` of a day number (proleptic Gregorian; Howard Hinnant's civil_from_days).
pub fn date_of(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day number of a `YYYY-MM-DD.db` file name.
pub fn day_of_file(name: &str) -> Option<i64> {
    let date = name.strip_suffix(".db")?;
    let mut it = date.splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || date.len() != 10 {
        return None;
    }
    // days_from_civil
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let day = era * 146_097 + doe - 719_468;
    (date_of(day) == date).then_some(day)
}

/// A group's directory.
pub fn group_dir(dir: &Path, group: u32) -> PathBuf {
    dir.join(format!("g{group}"))
}

/// The group id of a directory name `gN`.
pub fn group_of_dir(name: &str) -> Option<u32> {
    name.strip_prefix('g')?.parse().ok()
}

/// The file of a group's day.
pub fn path(dir: &Path, group: u32, day: i64) -> PathBuf {
    group_dir(dir, group).join(format!("{}.db", date_of(day)))
}

/// Opens (creating) a group's day file.
pub fn open(dir: &Path, group: u32, day: i64, synchronous_full: bool) -> Result<Connection> {
    std::fs::create_dir_all(group_dir(dir, group))?;
    let conn = Connection::open(path(dir, group, day))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let sync = if synchronous_full { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
    ))?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(super::rollup::SCHEMA)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(day_of(1_795_679_761_835)), "2026-11-26");
        for day in [-1000, 0, 59, 10_957, 20_000, 2_932_896] {
            assert_eq!(day_of_file(&format!("{}.db", date_of(day))), Some(day));
        }
        assert_eq!(day_of_file("2026-02-30.db"), None);
        assert_eq!(day_of_file("index.db"), None);
    }
}
