//! The alarm service against a real SQLite database: one active alarm per device and type,
//! transitions and their times, filters and pages, assignment rules, the bus, durability.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::accounts::{Accounts, Reach, Role};
use crate::model::{DeviceUpdate, NewDevice};
use crate::registry::Registry;

struct Fx {
    registry: Registry,
    accounts: Accounts,
    alarms: Alarms,
    bus: Bus,
}

fn fx_on(db: Db) -> Fx {
    let db = Arc::new(db);
    let bus = Bus::default();
    Fx {
        registry: Registry::new(db.clone()),
        accounts: Accounts::new(db.clone()),
        alarms: Alarms::new(db, bus.clone()),
        bus,
    }
}

fn fx() -> Fx {
    fx_on(Db::memory().unwrap())
}

impl Fx {
    fn tenant(&self, name: &str) -> String {
        self.registry.create_tenant(name).unwrap().id
    }

    fn device(&self, tenant: &str, name: &str, customer: Option<&str>) -> String {
        let new = NewDevice {
            name: name.into(),
            customer: customer.map(str::to_string),
            ..NewDevice::default()
        };
        self.registry.create_device(tenant, new).unwrap().0.id
    }

    fn raise(&self, tenant: &str, device: &str, t: &str, sev: Severity) -> (Alarm, bool) {
        self.alarms
            .raise(tenant, device, t, sev, json!({"v": 1}))
            .unwrap()
    }
}

#[test]
fn one_active_alarm_per_device_and_type() {
    let f = fx();
    let t = f.tenant("t");
    let (d1, d2) = (f.device(&t, "d1", None), f.device(&t, "d2", None));
    let (a, created) = f.raise(&t, &d1, "High temperature", Severity::Major);
    assert!(created);
    assert_eq!(a.status, AlarmStatus::ActiveUnack);
    assert_eq!((a.start_ts, a.end_ts), (a.start_ts, a.start_ts));
    assert_eq!(a.originator_name, "d1");
    std::thread::sleep(std::time::Duration::from_millis(3));
    let (b, created) = f
        .alarms
        .raise(
            &t,
            &d1,
            "High temperature",
            Severity::Critical,
            json!({"v": 2}),
        )
        .unwrap();
    assert!(!created);
    assert_eq!(b.id, a.id);
    assert_eq!(b.severity, Severity::Critical);
    assert_eq!(b.details, json!({"v": 2}));
    assert_eq!(b.start_ts, a.start_ts);
    assert!(b.end_ts > a.end_ts, "end_ts is the latest raise");
    // Null details keep what is there.
    let (c, _) = f
        .alarms
        .raise(&t, &d1, "High temperature", Severity::Critical, Value::Null)
        .unwrap();
    assert_eq!(c.details, json!({"v": 2}));
    // Another type, another device: other alarms.
    assert!(f.raise(&t, &d1, "Low battery", Severity::Minor).1);
    assert!(f.raise(&t, &d2, "High temperature", Severity::Major).1);
    let (all, _) = f.alarms.list(&AlarmQuery::default()).unwrap();
    assert_eq!(all.len(), 3);
    // The database itself refuses a second active row.
    let dup = f.alarms.db.conn().execute(
        "INSERT INTO alarms (tenant_id, originator_id, type, severity, start_ms, end_ms,
         created_ms, updated_ms) VALUES (?1, ?2, 'High temperature', 'MAJOR', 0, 0, 0, 0)",
        [&t, &d1],
    );
    assert!(dup.is_err());
}

#[test]
fn bad_input_is_refused() {
    let f = fx();
    let (t, other) = (f.tenant("t"), f.tenant("other"));
    let d = f.device(&t, "d", None);
    let raise = |tenant: &str, device: &str, ty: &str| {
        f.alarms
            .raise(tenant, device, ty, Severity::Major, Value::Null)
    };
    assert!(matches!(raise(&t, &d, " "), Err(CoreError::Invalid(_))));
    let long = "x".repeat(256);
    assert!(matches!(raise(&t, &d, &long), Err(CoreError::Invalid(_))));
    assert!(matches!(
        raise(&t, "nope", "x"),
        Err(CoreError::NotFound(_))
    ));
    assert!(matches!(
        raise(&other, &d, "x"),
        Err(CoreError::NotFound(_))
    ));
    assert!(Severity::parse("huge").is_err());
    assert_eq!(Severity::parse("critical").unwrap(), Severity::Critical);
    assert_eq!("Warning".parse::<Severity>().unwrap(), Severity::Warning);
    let sev: Severity = serde_json::from_value(json!("minor")).unwrap();
    assert_eq!(sev, Severity::Minor);
    assert!(serde_json::from_value::<Severity>(json!("HUGE")).is_err());
    assert!(StatusFilter::parse("sleeping").is_err());
    assert!(matches!(f.alarms.get(42), Err(CoreError::NotFound(_))));
    assert!(matches!(f.alarms.ack(42, "x"), Err(CoreError::NotFound(_))));
}

#[test]
fn raising_again_after_a_clear_creates_a_new_alarm() {
    let f = fx();
    let t = f.tenant("t");
    let d = f.device(&t, "d", None);
    let (a, _) = f.raise(&t, &d, "Dry soil", Severity::Major);
    let cleared = f
        .alarms
        .clear(&d, "Dry soil", Some(json!({"moisture": 40})))
        .unwrap()
        .unwrap();
    assert_eq!(cleared.id, a.id);
    assert_eq!(cleared.status, AlarmStatus::ClearedUnack);
    assert!(cleared.clear_ts.is_some());
    assert_eq!(cleared.details, json!({"moisture": 40}));
    assert_eq!(f.alarms.clear(&d, "Dry soil", None).unwrap(), None);
    assert_eq!(f.alarms.clear(&d, "Never raised", None).unwrap(), None);
    let (b, created) = f.raise(&t, &d, "Dry soil", Severity::Minor);
    assert!(created);
    assert_ne!(b.id, a.id);
    assert_eq!(b.status, AlarmStatus::ActiveUnack);
    // The old one is untouched history.
    assert_eq!(f.alarms.get(a.id).unwrap(), cleared);
}

#[test]
fn acknowledge_and_clear_in_either_order() {
    let f = fx();
    let t = f.tenant("t");
    let d = f.device(&t, "d", None);
    let (a, _) = f.raise(&t, &d, "A", Severity::Warning);
    assert_eq!((a.ack_ts, a.clear_ts), (None, None));
    let acked = f.alarms.ack(a.id, "alice").unwrap();
    assert_eq!(acked.status, AlarmStatus::ActiveAck);
    assert!(acked.acknowledged && !acked.cleared);
    let ack_ts = acked.ack_ts.expect("ack time");
    assert!(ack_ts >= a.start_ts);
    // Twice changes nothing.
    assert_eq!(f.alarms.ack(a.id, "bob").unwrap(), acked);
    // Still active: raising again updates it and keeps the acknowledgement.
    let (again, created) = f.raise(&t, &d, "A", Severity::Major);
    assert!(!created);
    assert_eq!(again.status, AlarmStatus::ActiveAck);
    let cleared = f.alarms.clear_by_id(a.id, "bob").unwrap();
    assert_eq!(cleared.status, AlarmStatus::ClearedAck);
    assert_eq!(cleared.ack_ts, Some(ack_ts));
    assert!(cleared.clear_ts.unwrap() >= ack_ts);
    assert_eq!(f.alarms.clear_by_id(a.id, "carol").unwrap(), cleared);
    let notes: Vec<(String, String, bool)> = f
        .alarms
        .comments(a.id)
        .unwrap()
        .into_iter()
        .map(|c| (c.author, c.text, c.system))
        .collect();
    assert_eq!(
        notes,
        [
            ("alice".into(), "Alarm acknowledged".into(), true),
            ("bob".into(), "Alarm cleared".into(), true)
        ]
    );

    // The other way round: cleared unacknowledged, then acknowledged.
    let (b, _) = f.raise(&t, &d, "B", Severity::Warning);
    let b = f.alarms.clear_by_id(b.id, "rules").unwrap();
    assert_eq!(b.status, AlarmStatus::ClearedUnack);
    let b = f.alarms.ack(b.id, "alice").unwrap();
    assert_eq!(b.status, AlarmStatus::ClearedAck);
}

#[test]
fn lists_filter_and_page_newest_first() {
    let f = fx();
    let (t, other) = (f.tenant("t"), f.tenant("other"));
    let c = f.registry.create_customer(&t, "acme").unwrap().id;
    let d1 = f.device(&t, "d1", Some(&c));
    let d2 = f.device(&t, "d2", None);
    let d3 = f.device(&other, "d3", None);
    let a1 = f.raise(&t, &d1, "Hot", Severity::Critical).0;
    let a2 = f.raise(&t, &d2, "Hot", Severity::Major).0;
    let a3 = f.raise(&t, &d1, "Cold", Severity::Minor).0;
    let a4 = f.raise(&other, &d3, "Hot", Severity::Critical).0;
    f.alarms.ack(a2.id, "x").unwrap();
    f.alarms.clear_by_id(a3.id, "x").unwrap();
    let ids = |q: AlarmQuery| -> Vec<i64> {
        let (page, _) = f.alarms.list(&q).unwrap();
        page.into_iter().map(|a| a.id).collect()
    };
    let mine = AlarmQuery {
        tenant: Some(t.clone()),
        ..Default::default()
    };
    assert_eq!(ids(mine.clone()), [a3.id, a2.id, a1.id]);
    assert_eq!(
        ids(AlarmQuery::default()),
        [a4.id, a3.id, a2.id, a1.id],
        "no tenant: every tenant"
    );
    let with = |status: &str| AlarmQuery {
        status: StatusFilter::parse(status).unwrap(),
        ..mine.clone()
    };
    assert_eq!(ids(with("active")), [a2.id, a1.id]);
    assert_eq!(ids(with("ACTIVE")), [a2.id, a1.id]);
    assert_eq!(ids(with("cleared")), [a3.id]);
    assert_eq!(ids(with("ack")), [a2.id]);
    assert_eq!(ids(with("unack")), [a3.id, a1.id]);
    assert_eq!(ids(with("Active_Unack")), [a1.id]);
    assert_eq!(ids(with("ACTIVE_ACK")), [a2.id]);
    assert_eq!(ids(with("CLEARED_UNACK")), [a3.id]);
    assert_eq!(ids(with("cleared_ack")), Vec::<i64>::new());
    assert_eq!(ids(with("any")), [a3.id, a2.id, a1.id]);
    let q = AlarmQuery {
        severity: Some(Severity::Critical),
        ..mine.clone()
    };
    assert_eq!(ids(q), [a1.id]);
    let q = AlarmQuery {
        alarm_type: Some("Hot".into()),
        ..mine.clone()
    };
    assert_eq!(ids(q), [a2.id, a1.id]);
    let q = AlarmQuery {
        device: Some(d1.clone()),
        ..mine.clone()
    };
    assert_eq!(ids(q), [a3.id, a1.id]);
    let by_customer = AlarmQuery {
        customer: Some(c.clone()),
        ..mine.clone()
    };
    assert_eq!(ids(by_customer.clone()), [a3.id, a1.id]);

    // Pages of two, newest first, then the rest.
    let q = AlarmQuery {
        limit: 2,
        ..mine.clone()
    };
    let (p1, next) = f.alarms.list(&q).unwrap();
    assert_eq!(p1.iter().map(|a| a.id).collect::<Vec<_>>(), [a3.id, a2.id]);
    let (p2, end) = f
        .alarms
        .list(&AlarmQuery {
            cursor: next,
            ..q.clone()
        })
        .unwrap();
    assert_eq!((p2.len(), p2[0].id, end), (1, a1.id, None));
    let bad = AlarmQuery {
        cursor: Some("x".into()),
        ..q
    };
    assert!(matches!(f.alarms.list(&bad), Err(CoreError::Invalid(_))));

    // The customer is the device's now: moving the device moves its alarms.
    let update = DeviceUpdate {
        customer: Some(None),
        ..Default::default()
    };
    f.registry.update_device(&d1, &update).unwrap();
    assert_eq!(ids(by_customer), Vec::<i64>::new());
    assert_eq!(f.alarms.get(a1.id).unwrap().customer, None);
    // Deleting the device deletes its alarms.
    f.registry.delete_device(&d1).unwrap();
    assert!(matches!(f.alarms.get(a1.id), Err(CoreError::NotFound(_))));
    assert_eq!(ids(mine), [a2.id]);
}

#[test]
fn assignees_belong_to_the_alarms_tenant_and_customer() {
    let f = fx();
    let (t, other) = (f.tenant("t"), f.tenant("other"));
    let (c1, c2) = (
        f.registry.create_customer(&t, "c1").unwrap().id,
        f.registry.create_customer(&t, "c2").unwrap().id,
    );
    let d = f.device(&t, "d", Some(&c1));
    let user = |name: &str, tenant: &str, customer: Option<&str>| {
        let reach = Reach {
            tenant: Some(tenant.to_string()),
            customer: customer.map(str::to_string),
        };
        let pw = "assign-pass-1";
        f.accounts
            .create_user(name, pw, Role::Operator, reach, false)
            .unwrap()
            .id
    };
    let (ops, cust1, cust2, stranger) = (
        user("ops", &t, None),
        user("cust1", &t, Some(&c1)),
        user("cust2", &t, Some(&c2)),
        user("stranger", &other, None),
    );
    let a = f.raise(&t, &d, "A", Severity::Major).0;
    assert_eq!(a.assignee, None);
    assert_eq!(
        f.alarms.assign(a.id, Some(&ops)).unwrap().assignee,
        Some(ops)
    );
    let a2 = f.alarms.assign(a.id, Some(&cust1)).unwrap();
    assert_eq!(a2.assignee.as_deref(), Some(cust1.as_str()));
    assert!(matches!(
        f.alarms.assign(a.id, Some(&cust2)),
        Err(CoreError::Invalid(_))
    ));
    for bad in [stranger.as_str(), "no-such-user"] {
        assert!(matches!(
            f.alarms.assign(a.id, Some(bad)),
            Err(CoreError::NotFound(_))
        ));
    }
    assert_eq!(f.alarms.get(a.id).unwrap().assignee, Some(cust1.clone()));
    // Deleting the user unassigns.
    f.accounts.delete_user(&cust1).unwrap();
    assert_eq!(f.alarms.get(a.id).unwrap().assignee, None);
    f.alarms.assign(a.id, Some(&cust2)).unwrap_err();
    assert_eq!(f.alarms.assign(a.id, None).unwrap().assignee, None);
}

#[test]
fn comments_are_kept_in_order_and_deleted_with_the_alarm() {
    let f = fx();
    let t = f.tenant("t");
    let d = f.device(&t, "d", None);
    let a = f.raise(&t, &d, "A", Severity::Major).0;
    assert!(matches!(
        f.alarms.comment(a.id, "alice", "  "),
        Err(CoreError::Invalid(_))
    ));
    let long = "x".repeat(MAX_COMMENT + 1);
    assert!(f.alarms.comment(a.id, "alice", &long).is_err());
    assert!(matches!(
        f.alarms.comment(a.id + 1, "alice", "hi"),
        Err(CoreError::NotFound(_))
    ));
    let c1 = f.alarms.comment(a.id, "alice", "looking").unwrap();
    let c2 = f.alarms.comment(a.id, "bob", "fixed the fan").unwrap();
    assert!(!c1.system);
    assert_eq!(f.alarms.comments(a.id).unwrap(), [c1, c2]);
    assert_eq!(f.alarms.delete(a.id).unwrap().id, a.id);
    assert!(matches!(
        f.alarms.comments(a.id),
        Err(CoreError::NotFound(_))
    ));
    let n: i64 = f
        .alarms
        .db
        .conn()
        .query_row("SELECT count(*) FROM alarm_comments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn every_change_is_published_on_the_bus() {
    let f = fx();
    let t = f.tenant("t");
    let d = f.device(&t, "d", None);
    let mut rx = f.bus.subscribe_alarms();
    let a = f.raise(&t, &d, "A", Severity::Major).0;
    f.raise(&t, &d, "A", Severity::Critical);
    f.alarms.ack(a.id, "x").unwrap();
    f.alarms.ack(a.id, "x").unwrap(); // no change: nothing published
    f.alarms.clear(&d, "A", None).unwrap();
    let mut seen = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        assert_eq!((&*ev.tenant, &*ev.device), (t.as_str(), d.as_str()));
        match &ev.kind {
            EventKind::Alarm(a) => seen.push((a.severity, a.status)),
            other => panic!("unexpected {other:?}"),
        }
    }
    use AlarmStatus::*;
    assert_eq!(
        seen,
        [
            (Severity::Major, ActiveUnack),
            (Severity::Critical, ActiveUnack),
            (Severity::Critical, ActiveAck),
            (Severity::Critical, ClearedAck)
        ]
    );
}

#[test]
fn alarms_survive_reopening_the_database() {
    let dir = std::env::temp_dir().join(format!("ib-alarms-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("platform.db");
    let (t, d, id) = {
        let f = fx_on(Db::open(&path).unwrap());
        let t = f.tenant("t");
        let d = f.device(&t, "d", None);
        let a = f.raise(&t, &d, "A", Severity::Major).0;
        f.alarms.ack(a.id, "alice").unwrap();
        f.alarms.comment(a.id, "alice", "on it").unwrap();
        (t, d, a.id)
    };
    let f = fx_on(Db::open(&path).unwrap());
    let a = f.alarms.get(id).unwrap();
    assert_eq!(a.status, AlarmStatus::ActiveAck);
    assert_eq!(a.details, json!({"v": 1}));
    assert_eq!(f.alarms.comments(id).unwrap().len(), 2);
    // Still the one active alarm of its type.
    let (again, created) = f.raise(&t, &d, "A", Severity::Major);
    assert_eq!((again.id, created), (id, false));
    drop(f);
    let _ = std::fs::remove_dir_all(&dir);
}
