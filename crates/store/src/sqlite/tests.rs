//! The SQLite backend's own tests (the shared suite for every backend lives in `tests/`).

use super::*;
use crate::Point;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Dir(std::env::temp_dir().join(format!("ib-store-{tag}-{}-{n}", std::process::id())))
}

fn p(key: &str, ts: i64, v: Value) -> Point {
    Point {
        key: key.into(),
        ts,
        value: v,
    }
}

#[test]
fn written_points_survive_reopening_sealed_or_not() {
    let d = dir("reopen");
    {
        let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
        s.write(
            "dev",
            "g",
            vec![
                p("t", 1_000, Value::Double(1.5)),
                p("t", 2_000, Value::Double(2.5)),
            ],
        )
        .wait()
        .unwrap();
        s.seal().unwrap();
        s.write("dev", "g", vec![p("t", 3_000, Value::Long(3))])
            .wait()
            .unwrap();
        // Dropped without close: the head is only in the ingest log.
        std::mem::forget(s);
    }
    let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
    let r = s
        .range("dev", &["t".into()], 0, 10_000, 100, false)
        .unwrap();
    let ts: Vec<i64> = r[0].1.iter().map(|x| x.ts).collect();
    assert_eq!(ts, [1_000, 2_000, 3_000]);
    let l = s.latest("dev", None).unwrap();
    assert_eq!(
        l,
        vec![(
            "t".to_string(),
            crate::Sample {
                ts: 3_000,
                value: Value::Long(3)
            }
        )]
    );
}

#[test]
fn last_write_of_a_timestamp_wins_across_seals() {
    let d = dir("dup");
    let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
    s.write("dev", "g", vec![p("k", 5, Value::Long(1))])
        .wait()
        .unwrap();
    s.seal().unwrap();
    s.write("dev", "g", vec![p("k", 5, Value::Long(2))])
        .wait()
        .unwrap();
    let r = s.range("dev", &["k".into()], 0, 10, 10, false).unwrap();
    assert_eq!(
        r[0].1,
        vec![crate::Sample {
            ts: 5,
            value: Value::Long(2)
        }]
    );
    s.seal().unwrap();
    let r = s.range("dev", &["k".into()], 0, 10, 10, false).unwrap();
    assert_eq!(
        r[0].1,
        vec![crate::Sample {
            ts: 5,
            value: Value::Long(2)
        }]
    );
}

#[test]
fn points_land_in_the_partition_of_their_day_and_deletes_rewrite_chunks() {
    let d = dir("days");
    let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
    let day = partition::DAY_MS;
    let points: Vec<Point> = (0..10)
        .map(|i| p("x", i * day / 2, Value::Long(i)))
        .collect();
    s.write("dev", "g", points).wait().unwrap();
    s.seal().unwrap();
    assert_eq!(s.shared.days.read().len(), 5);
    s.delete("dev", day, 3 * day - 1).unwrap();
    let r = s
        .range("dev", &["x".into()], i64::MIN, i64::MAX, 100, false)
        .unwrap();
    let ts: Vec<i64> = r[0].1.iter().map(|x| x.ts / (day / 2)).collect();
    assert_eq!(ts, [0, 1, 6, 7, 8, 9]);
    s.delete("dev", i64::MIN, i64::MAX).unwrap();
    assert!(s.latest("dev", None).unwrap().is_empty());
}

#[test]
fn writes_after_close_fail() {
    let d = dir("closed");
    let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
    s.close();
    assert!(matches!(
        s.write("dev", "g", vec![p("k", 1, Value::Bool(true))])
            .wait(),
        Err(StoreError::Closed)
    ));
}

#[test]
fn reads_see_every_point_while_background_seals_run() {
    let d = dir("bg");
    let config = SqliteConfig {
        seal_points: 500,
        ..SqliteConfig::default()
    };
    let s = SqliteStore::open(&d.0, config).unwrap();
    let mut expected = 0;
    for batch in 0..40 {
        let points: Vec<Point> = (0..100)
            .map(|i| p("v", batch * 100 + i, Value::Long(batch * 100 + i)))
            .collect();
        s.write("dev", "g", points).wait().unwrap();
        expected += 100;
        // Every acknowledged point is visible, whether in the head, the head being sealed
        // or a chunk.
        let r = s
            .range("dev", &["v".into()], 0, i64::MAX, usize::MAX, false)
            .unwrap();
        assert_eq!(r[0].1.len(), expected, "after batch {batch}");
    }
    // A background seal started during the loop (the head passed 500 points); wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.shared.days.read().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no background seal ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    s.close();
    let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
    let r = s
        .range("dev", &["v".into()], 0, i64::MAX, usize::MAX, false)
        .unwrap();
    assert_eq!(r[0].1.len(), 4000);
}

#[test]
fn retention_drops_whole_partitions_of_one_group() {
    let d = dir("retention");
    let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
    let day = partition::DAY_MS;
    let points = |n: i64| -> Vec<Point> {
        (0..n)
            .map(|i| p("x", i * day + 1000, Value::Long(i)))
            .collect()
    };
    s.write("a", "short", points(10)).wait().unwrap();
    s.write("b", "long", points(10)).wait().unwrap();
    s.seal().unwrap();
    let before = s.disk_bytes();
    let usage = s.usage().unwrap();
    assert_eq!(usage.len(), 2);
    // Keep the short group's last three days only.
    let freed = s.drop_before("short", 7 * day).unwrap();
    assert!(freed > 0);
    assert!(s.disk_bytes() < before, "disk use falls");
    let a = s
        .range("a", &["x".into()], i64::MIN, i64::MAX, 100, false)
        .unwrap();
    let kept: Vec<i64> = a[0].1.iter().map(|x| x.ts / day).collect();
    assert_eq!(kept, [7, 8, 9]);
    let b = s
        .range("b", &["x".into()], i64::MIN, i64::MAX, 100, false)
        .unwrap();
    assert_eq!(b[0].1.len(), 10, "the other group is untouched");
    // Unsealed points past the horizon go too.
    s.write("a", "short", vec![p("x", 2 * day, Value::Long(99))])
        .wait()
        .unwrap();
    s.drop_before("short", 7 * day).unwrap();
    let a = s
        .range("a", &["x".into()], i64::MIN, i64::MAX, 100, false)
        .unwrap();
    assert_eq!(a[0].1.len(), 3);
}

/// Aggregates through the rollups equal aggregates computed from the raw points, whatever the
/// writes did: out of order, timestamps written twice, seals in between, deletes.
#[test]
fn rollup_aggregates_equal_raw_aggregates() {
    let d = dir("rollup");
    let s = SqliteStore::open(&d.0, SqliteConfig::default()).unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let hour = 3_600_000i64;
    for round in 0..12 {
        let points: Vec<Point> = (0..300)
            .map(|_| {
                let ts = rnd(30 * hour as u64) as i64; // a day and more, in any order
                let v = match rnd(10) {
                    0 => Value::Str("text".into()),
                    1 => Value::Bool(rnd(2) == 0),
                    2 => Value::Long(rnd(100) as i64),
                    _ => Value::Double(rnd(10_000) as f64 / 100.0),
                };
                p("k", ts, v)
            })
            .collect();
        s.write("dev", "g", points).wait().unwrap();
        if round % 3 == 2 {
            s.seal().unwrap();
        }
        if round == 7 {
            s.delete("dev", 5 * hour + 123, 9 * hour).unwrap();
        }
        for (interval, agg) in [
            (60_000, crate::Agg::Avg),
            (hour, crate::Agg::Sum),
            (2 * hour, crate::Agg::Min),
            (hour, crate::Agg::Max),
            (15 * 60_000, crate::Agg::Count),
        ] {
            let to = 30 * hour - 1 - 777; // not on a boundary
            let got = s
                .aggregate("dev", &["k".into()], 0, to, interval, agg)
                .unwrap();
            let raw = s
                .range("dev", &["k".into()], 0, to, usize::MAX, false)
                .unwrap();
            let want = crate::aggregate_samples(&raw[0].1, 0, interval, agg);
            assert_eq!(
                got[0].1.len(),
                want.len(),
                "round {round}, {agg:?} by {interval}"
            );
            for ((gb, gv), (wb, wv)) in got[0].1.iter().zip(&want) {
                assert_eq!(gb, wb);
                assert!(
                    (gv - wv).abs() < 1e-6 * wv.abs().max(1.0),
                    "round {round}, {agg:?}: {gv} vs {wv} at {gb}"
                );
            }
        }
    }
}
