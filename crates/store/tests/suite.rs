//! The behaviour every telemetry store backend owes the platform, written once against
//! `&dyn TelemetryStore` and run on each backend: SQLite always (in a temporary directory),
//! PostgreSQL when `IRONBRIDGE_TEST_PG_URL` is set (each test in its own schema, dropped
//! afterwards; without the variable those tests print a notice and pass). Start a server with
//! `scripts/pg-cluster.sh start DIR --no-fsync`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use store::postgres::{PgConfig, PgStore};
use store::sqlite::{SqliteConfig, SqliteStore};
use store::{aggregate_samples, Agg, Point, Sample, StoreError, TelemetryStore, Value};

/// Opens the test's store (again, after a previous one was dropped: same data).
type Opener<'a> = &'a dyn Fn() -> Box<dyn TelemetryStore>;

const DAY: i64 = 86_400_000;
/// A UTC midnight.
const T0: i64 = 1_700_006_400_000;

fn p(key: &str, ts: i64, value: Value) -> Point {
    Point {
        key: key.into(),
        ts,
        value,
    }
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

fn all(s: &dyn TelemetryStore, device: &str, key: &str) -> Vec<Sample> {
    let mut r = s
        .range(device, &keys(&[key]), i64::MIN, i64::MAX, usize::MAX, false)
        .unwrap();
    assert_eq!(r.len(), 1);
    r.remove(0).1
}

fn sample(ts: i64, value: Value) -> Sample {
    Sample { ts, value }
}

// ---------------------------------------------------------------- the behaviours

fn values_keep_their_types(s: &dyn TelemetryStore) {
    let values = [
        Value::Bool(true),
        Value::Long(-42),
        Value::Double(21.25),
        Value::Str("on é".into()),
        Value::Json(r#"{"a":[1,2],"b":null}"#.into()),
        Value::Long(i64::MAX),
        Value::Bool(false),
    ];
    let points: Vec<Point> = values
        .iter()
        .enumerate()
        .map(|(i, v)| p("x", T0 + i as i64, v.clone()))
        .collect();
    s.write("dev", "g", points).wait().unwrap();
    let got: Vec<Value> = all(s, "dev", "x").into_iter().map(|x| x.value).collect();
    assert_eq!(got, values);
    assert_eq!(
        s.latest("dev", None).unwrap(),
        vec![("x".to_string(), sample(T0 + 6, Value::Bool(false)))]
    );
}

fn latest_per_key_in_the_order_asked(s: &dyn TelemetryStore) {
    s.write(
        "dev",
        "g",
        vec![
            p("b", T0 + 2, Value::Long(2)),
            p("a", T0 + 5, Value::Long(5)),
            p("b", T0 + 1, Value::Long(1)),
        ],
    )
    .wait()
    .unwrap();
    s.write("other", "g", vec![p("a", T0 + 9, Value::Long(9))])
        .wait()
        .unwrap();
    let asked = s.latest("dev", Some(&keys(&["b", "nope", "a"]))).unwrap();
    assert_eq!(
        asked,
        vec![
            ("b".to_string(), sample(T0 + 2, Value::Long(2))),
            ("a".to_string(), sample(T0 + 5, Value::Long(5))),
        ]
    );
    let every = s.latest("dev", None).unwrap();
    assert_eq!(every.len(), 2);
    assert!(s.latest("nobody", None).unwrap().is_empty());
    // An older point written later does not replace the latest value.
    s.write("dev", "g", vec![p("a", T0, Value::Long(0))])
        .wait()
        .unwrap();
    assert_eq!(
        s.latest("dev", Some(&keys(&["a"]))).unwrap()[0].1,
        sample(T0 + 5, Value::Long(5))
    );
}

fn last_write_of_a_timestamp_wins(s: &dyn TelemetryStore) {
    s.write("dev", "g", vec![p("k", T0, Value::Long(1))])
        .wait()
        .unwrap();
    s.seal().unwrap();
    // Twice in one write, and the type may change.
    s.write(
        "dev",
        "g",
        vec![p("k", T0, Value::Long(2)), p("k", T0, Value::Double(3.5))],
    )
    .wait()
    .unwrap();
    assert_eq!(all(s, "dev", "k"), vec![sample(T0, Value::Double(3.5))]);
    s.seal().unwrap();
    // Concurrent writes of the same timestamp: committed in order, the last one wins.
    let commits: Vec<_> = (0..50)
        .map(|i| s.write("dev", "g", vec![p("k", T0, Value::Long(100 + i))]))
        .collect();
    for c in commits {
        c.wait().unwrap();
    }
    assert_eq!(all(s, "dev", "k"), vec![sample(T0, Value::Long(149))]);
    assert_eq!(
        s.latest("dev", None).unwrap()[0].1,
        sample(T0, Value::Long(149))
    );
}

fn ranges_are_inclusive_ordered_and_limited(s: &dyn TelemetryStore) {
    // Written out of order, across days.
    let mut points: Vec<Point> = (0..10)
        .map(|i| p("t", T0 + i * DAY / 4, Value::Long(i)))
        .collect();
    points.reverse();
    s.write("dev", "g", points).wait().unwrap();
    s.write("dev", "g", vec![p("u", T0, Value::Bool(true))])
        .wait()
        .unwrap();
    let ts = |v: &[Sample]| {
        v.iter()
            .map(|x| (x.ts - T0) / (DAY / 4))
            .collect::<Vec<_>>()
    };
    let r = s
        .range(
            "dev",
            &keys(&["t", "u", "missing"]),
            T0 + DAY / 4,
            T0 + DAY,
            100,
            false,
        )
        .unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].0, "t");
    assert_eq!(ts(&r[0].1), [1, 2, 3, 4]);
    assert!(r[1].1.is_empty(), "u is outside the range");
    assert_eq!(r[2], ("missing".to_string(), vec![]));
    let r = s
        .range("dev", &keys(&["t"]), i64::MIN, i64::MAX, 3, false)
        .unwrap();
    assert_eq!(ts(&r[0].1), [0, 1, 2]);
    let r = s
        .range("dev", &keys(&["t"]), i64::MIN, i64::MAX, 3, true)
        .unwrap();
    assert_eq!(ts(&r[0].1), [9, 8, 7]);
    let r = s
        .range("dev", &keys(&["t", "u"]), T0, T0 + 2 * DAY, 1, true)
        .unwrap();
    assert_eq!(ts(&r[0].1), [8]);
    assert_eq!(r[1].1, vec![sample(T0, Value::Bool(true))]);
    s.seal().unwrap();
    let r = s
        .range("dev", &keys(&["t"]), T0, T0 + 3 * DAY, 0, false)
        .unwrap();
    assert!(r[0].1.is_empty(), "limit 0");
}

fn aggregates_match_the_reference(s: &dyn TelemetryStore) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut points = Vec::new();
    for i in 0..600i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ts = T0 + i * 997 + (x % 7) as i64;
        let v = match i % 7 {
            0 => Value::Long((x % 100) as i64),
            1 => Value::Bool(x.is_multiple_of(2)),
            2 => Value::Str("text".into()),
            _ => Value::Double((x % 10_000) as f64 / 100.0),
        };
        points.push(p("m", ts, v));
    }
    s.write("dev", "g", points).wait().unwrap();
    s.write(
        "dev",
        "g",
        vec![p("only_text", T0 + 5, Value::Str("a".into()))],
    )
    .wait()
    .unwrap();
    let (from, to) = (T0 + 1_500, T0 + 500_000);
    for key in ["m", "only_text"] {
        let raw = s
            .range("dev", &keys(&[key]), from, to, usize::MAX, false)
            .unwrap()
            .remove(0)
            .1;
        for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Sum, Agg::Count] {
            for interval in [1, 60_000, 86_400_000] {
                let want = aggregate_samples(&raw, from, interval, agg);
                let got = s
                    .aggregate("dev", &keys(&[key]), from, to, interval, agg)
                    .unwrap();
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].0, key);
                let got = &got[0].1;
                assert_eq!(got.len(), want.len(), "{key} {agg:?} per {interval}");
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.0, w.0, "{key} {agg:?} per {interval}");
                    assert!(
                        (g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0),
                        "{key} {agg:?} per {interval}: {} != {}",
                        g.1,
                        w.1
                    );
                }
            }
        }
    }
    let none = s
        .aggregate("dev", &keys(&["nope"]), from, to, 1000, Agg::Avg)
        .unwrap();
    assert_eq!(none, vec![("nope".to_string(), vec![])]);
}

fn deletes_ranges_and_updates_latest(s: &dyn TelemetryStore) {
    let points: Vec<Point> = (0..10)
        .map(|i| p("x", T0 + i * DAY / 2, Value::Long(i)))
        .collect();
    s.write("dev", "g", points).wait().unwrap();
    s.write("dev", "g", vec![p("y", T0, Value::Long(7))])
        .wait()
        .unwrap();
    s.write("keep", "g", vec![p("x", T0 + DAY, Value::Long(1))])
        .wait()
        .unwrap();
    s.seal().unwrap();
    s.delete("dev", T0 + DAY, T0 + 3 * DAY - 1).unwrap();
    let left: Vec<i64> = all(s, "dev", "x")
        .iter()
        .map(|x| (x.ts - T0) / (DAY / 2))
        .collect();
    assert_eq!(left, [0, 1, 6, 7, 8, 9]);
    // The newest point goes: the latest value is the one before it.
    s.delete("dev", T0 + 9 * DAY / 2, i64::MAX).unwrap();
    assert_eq!(
        s.latest("dev", Some(&keys(&["x"]))).unwrap(),
        vec![("x".to_string(), sample(T0 + 4 * DAY, Value::Long(8)))]
    );
    s.delete("dev", i64::MIN, i64::MAX).unwrap();
    assert!(all(s, "dev", "x").is_empty());
    assert!(all(s, "dev", "y").is_empty());
    assert!(s.latest("dev", None).unwrap().is_empty());
    assert_eq!(all(s, "keep", "x").len(), 1, "other devices keep theirs");
    // Writing again after a delete works.
    s.write("dev", "g", vec![p("x", T0, Value::Long(1))])
        .wait()
        .unwrap();
    assert_eq!(all(s, "dev", "x"), vec![sample(T0, Value::Long(1))]);
}

fn retention_drops_old_partitions_of_one_group(s: &dyn TelemetryStore) {
    let days = |n: i64| -> Vec<Point> {
        (0..n)
            .flat_map(|d| (0..200).map(move |i| p("x", T0 + d * DAY + i * 1000, Value::Long(i))))
            .collect()
    };
    s.write("a", "short", days(10)).wait().unwrap();
    s.write("b", "long", days(10)).wait().unwrap();
    s.seal().unwrap();
    let before = s.disk_bytes();
    let usage_of = |s: &dyn TelemetryStore, g: &str| {
        s.usage()
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == g)
            .map(|(_, b)| b)
    };
    let (short, long) = (usage_of(s, "short").unwrap(), usage_of(s, "long").unwrap());
    assert!(short > 0 && long > 0);
    assert_eq!(s.drop_before("nonexistent", i64::MAX).unwrap(), 0);
    // Day 7 starts at T0 + 7 days: days 0..=6 go, whole.
    let freed = s.drop_before("short", T0 + 7 * DAY + 5).unwrap();
    assert!(freed > 0, "bytes freed");
    assert!(s.disk_bytes() < before, "disk use falls");
    assert!(usage_of(s, "short").unwrap() < short);
    assert!(
        usage_of(s, "long").unwrap() >= long,
        "the other group is untouched"
    );
    let kept: Vec<i64> = all(s, "a", "x").iter().map(|x| (x.ts - T0) / DAY).collect();
    assert_eq!(kept.len(), 600);
    assert_eq!(kept.first(), Some(&7));
    assert_eq!(all(s, "b", "x").len(), 2000);
    // Nothing older is left to drop.
    assert_eq!(s.drop_before("short", T0 + 7 * DAY + 5).unwrap(), 0);
    assert_eq!(all(s, "a", "x").len(), 600);
}

fn old_points_written_after_retention_are_kept(s: &dyn TelemetryStore) {
    // Several devices, so that every writer of a backend that has several takes part.
    let devices: Vec<String> = (0..8).map(|d| format!("dev-{d}")).collect();
    for d in &devices {
        s.write(d, "g", vec![p("x", T0, Value::Long(1))])
            .wait()
            .unwrap();
    }
    s.seal().unwrap();
    assert!(s.drop_before("g", T0 + DAY).unwrap() > 0);
    for d in &devices {
        assert!(all(s, d, "x").is_empty());
    }
    // A late device sends points of the dropped day: stored (until the next retention pass).
    for d in &devices {
        s.write(d, "g", vec![p("x", T0 + 5, Value::Long(2))])
            .wait()
            .unwrap();
    }
    for d in &devices {
        assert_eq!(all(s, d, "x"), vec![sample(T0 + 5, Value::Long(2))]);
    }
}

fn usage_is_per_group(s: &dyn TelemetryStore) {
    // Noise, so that compressing backends take room too.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut points = |n: i64| -> Vec<Point> {
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                p("v", T0 + i * 1000, Value::Double(f64::from_bits(x >> 2)))
            })
            .collect()
    };
    s.write("d1", "big", points(20_000)).wait().unwrap();
    s.write("d2", "small", points(50)).wait().unwrap();
    s.seal().unwrap();
    let usage = s.usage().unwrap();
    let get = |g: &str| usage.iter().find(|(n, _)| n == g).map(|(_, b)| *b);
    let (big, small) = (get("big").unwrap(), get("small").unwrap());
    assert!(small > 0, "{usage:?}");
    assert!(big > small, "{usage:?}");
    assert!(s.disk_bytes() >= big + small);
}

fn closed_store_refuses_writes(s: &dyn TelemetryStore) {
    s.write("dev", "g", vec![p("k", T0, Value::Long(1))])
        .wait()
        .unwrap();
    s.close();
    assert!(matches!(
        s.write("dev", "g", vec![p("k", T0 + 1, Value::Long(2))])
            .wait(),
        Err(StoreError::Closed)
    ));
    s.close(); // twice is fine
}

fn many_writers_all_commit(s: &dyn TelemetryStore) {
    std::thread::scope(|scope| {
        for w in 0..4 {
            scope.spawn(move || {
                let commits: Vec<_> = (0..250)
                    .map(|i| {
                        s.write(
                            &format!("dev-{w}"),
                            "g",
                            vec![
                                p("a", T0 + i, Value::Long(i)),
                                p("b", T0 + i, Value::Double(i as f64)),
                            ],
                        )
                    })
                    .collect();
                for c in commits {
                    c.wait().unwrap();
                }
            });
        }
    });
    for w in 0..4 {
        assert_eq!(all(s, &format!("dev-{w}"), "a").len(), 250);
        assert_eq!(all(s, &format!("dev-{w}"), "b").len(), 250);
    }
}

fn reopening_keeps_everything(open: Opener) {
    {
        let s = open();
        s.write(
            "dev",
            "g",
            vec![
                p("t", T0, Value::Double(1.5)),
                p("j", T0, Value::Json("[1]".into())),
            ],
        )
        .wait()
        .unwrap();
        s.seal().unwrap();
        s.write("dev", "g", vec![p("t", T0 + 1000, Value::Long(3))])
            .wait()
            .unwrap();
        s.close();
    }
    {
        let s = open();
        assert_eq!(
            all(&*s, "dev", "t"),
            vec![
                sample(T0, Value::Double(1.5)),
                sample(T0 + 1000, Value::Long(3))
            ]
        );
        assert_eq!(
            s.latest("dev", None).unwrap(),
            vec![
                ("j".to_string(), sample(T0, Value::Json("[1]".into()))),
                ("t".to_string(), sample(T0 + 1000, Value::Long(3))),
            ]
        );
        // Known series and groups go on after a restart.
        s.write("dev", "g", vec![p("t", T0 + 2000, Value::Long(4))])
            .wait()
            .unwrap();
        s.write("new", "g2", vec![p("t", T0, Value::Long(5))])
            .wait()
            .unwrap();
        // Dropped without close: acknowledged writes are durable all the same.
    }
    let s = open();
    assert_eq!(all(&*s, "dev", "t").len(), 3);
    assert_eq!(all(&*s, "new", "t").len(), 1);
    s.seal().unwrap();
    let groups: Vec<String> = s.usage().unwrap().into_iter().map(|(g, _)| g).collect();
    assert!(groups.contains(&"g".to_string()) && groups.contains(&"g2".to_string()));
}

// ---------------------------------------------------------------- backends

struct SqliteEnv(PathBuf);

impl SqliteEnv {
    fn new(tag: &str) -> SqliteEnv {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        SqliteEnv(std::env::temp_dir().join(format!("ib-suite-{tag}-{}-{n}", std::process::id())))
    }

    fn open(&self) -> Box<dyn TelemetryStore> {
        Box::new(SqliteStore::open(&self.0, SqliteConfig::default()).unwrap())
    }
}

impl Drop for SqliteEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A schema of its own on the server named by `IRONBRIDGE_TEST_PG_URL`.
struct PgEnv {
    url: String,
    schema: String,
}

fn pg_url() -> Option<String> {
    match std::env::var("IRONBRIDGE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: IRONBRIDGE_TEST_PG_URL is not set (scripts/pg-cluster.sh start DIR)"
            );
            None
        }
    }
}

/// Runs SQL on the test server with a connection of its own.
fn pg_exec(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connecting to IRONBRIDGE_TEST_PG_URL");
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = task.await;
    });
}

impl PgEnv {
    fn new(tag: &str) -> Option<PgEnv> {
        static N: AtomicU32 = AtomicU32::new(0);
        let url = pg_url()?;
        let n = N.fetch_add(1, Ordering::Relaxed);
        let schema = format!("ib_suite_{tag}_{}_{n}", std::process::id());
        pg_exec(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        Some(PgEnv { url, schema })
    }

    fn config(&self) -> PgConfig {
        PgConfig {
            schema: Some(self.schema.clone()),
            pool_size: 3,
            ..PgConfig::default()
        }
    }

    fn open(&self) -> Box<dyn TelemetryStore> {
        Box::new(PgStore::open(&self.url, self.config()).unwrap())
    }
}

impl Drop for PgEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            pg_exec(
                &self.url,
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
            );
        }
    }
}

/// Each behaviour as one test per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! suite {
    (stores: $($s:ident),* ; openers: $($o:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $s() { let env = super::SqliteEnv::new(stringify!($s)); super::$s(&*env.open()); })*
            $(#[test] fn $o() { let env = super::SqliteEnv::new(stringify!($o)); super::$o(&|| env.open()); })*
        }
        mod postgres {
            $(#[test] fn $s() {
                let Some(env) = super::PgEnv::new(stringify!($s)) else { return };
                super::$s(&*env.open());
            })*
            $(#[test] fn $o() {
                let Some(env) = super::PgEnv::new(stringify!($o)) else { return };
                super::$o(&|| env.open());
            })*
        }
    };
}

suite!(
    stores: values_keep_their_types, latest_per_key_in_the_order_asked,
    last_write_of_a_timestamp_wins, ranges_are_inclusive_ordered_and_limited,
    aggregates_match_the_reference, deletes_ranges_and_updates_latest,
    retention_drops_old_partitions_of_one_group, old_points_written_after_retention_are_kept,
    usage_is_per_group,
    closed_store_refuses_writes, many_writers_all_commit;
    openers: reopening_keeps_everything,
);

/// PostgreSQL durability: writers keep writing while the store is torn down mid-batch (its
/// runtime stopped, no close). Reopened, every acknowledged write is there, and every write
/// is there whole or not at all.
#[test]
fn postgres_acknowledged_writes_survive_a_crash() {
    let Some(env) = PgEnv::new("crash") else {
        return;
    };
    let store = Arc::new(PgStore::open(&env.url, env.config()).unwrap());
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<(usize, i64)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4usize)
        .map(|w| {
            let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut pending = std::collections::VecDeque::new();
                let mut i = 0i64;
                let mut attempted = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Three keys per write, on both sides of a day boundary.
                    let ts = T0 - 500 + i * 7;
                    let points = ["a", "b", "c"]
                        .iter()
                        .map(|k| p(k, ts, Value::Long(i)))
                        .collect();
                    pending.push_back((ts, store.write(&format!("dev-{w}"), "crash", points)));
                    attempted.push(ts);
                    i += 1;
                    while pending.len() > 64 {
                        let (ts, c) = pending.pop_front().unwrap();
                        if c.wait().is_ok() {
                            acked.lock().push((w, ts));
                        }
                    }
                }
                for (ts, c) in pending {
                    if c.wait().is_ok() {
                        acked.lock().push((w, ts));
                    }
                }
                attempted
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    store.abort();
    stop.store(true, Ordering::Relaxed);
    let attempted: Vec<Vec<i64>> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    drop(store);
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 100,
        "writes were acknowledged before the crash"
    );
    let store = env.open();
    for (w, tried) in attempted.iter().enumerate() {
        let dev = format!("dev-{w}");
        let r = store
            .range(
                &dev,
                &keys(&["a", "b", "c"]),
                i64::MIN,
                i64::MAX,
                usize::MAX,
                false,
            )
            .unwrap();
        let stored: Vec<std::collections::HashSet<i64>> = r
            .iter()
            .map(|(_, s)| s.iter().map(|x| x.ts).collect())
            .collect();
        for (aw, ts) in &acked {
            if *aw == w {
                assert!(stored[0].contains(ts), "acknowledged point {dev} {ts} lost");
            }
        }
        // All or nothing per write.
        assert_eq!(stored[0], stored[1]);
        assert_eq!(stored[0], stored[2]);
        let tried: std::collections::HashSet<&i64> = tried.iter().collect();
        assert!(stored[0].iter().all(|ts| tried.contains(ts)));
    }
    eprintln!(
        "{} writes acknowledged, {} attempted, all acknowledged ones stored",
        acked.len(),
        attempted.iter().map(Vec::len).sum::<usize>()
    );
}
