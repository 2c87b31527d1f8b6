//! Campaigns with the driver on tokio's paused clock: stages, the rate limit, halts, timeouts,
//! pause/resume/cancel, a restart; targets and plans refused.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::*;
use crate::attributes::Scope;
use crate::firmware::NewPackage;
use crate::model::NewDevice;
use crate::testing::TestPlatform;
use crate::Platform;

fn fleet(p: &Platform, prefix: &str, n: usize) -> Vec<String> {
    let tenant = p.registry.tenant("default").unwrap().id;
    (0..n)
        .map(|i| {
            p.registry
                .create_device(
                    &tenant,
                    NewDevice {
                        name: format!("{prefix}-{i:03}"),
                        ..Default::default()
                    },
                )
                .unwrap()
                .0
                .id
        })
        .collect()
}

fn package(p: &Platform, version: &str) -> Package {
    let tenant = p.registry.tenant("default").unwrap().id;
    p.firmware
        .create(
            &tenant,
            NewPackage {
                title: "pump".into(),
                version: version.into(),
                ..Default::default()
            },
            b"the image",
        )
        .unwrap()
}

fn campaign(p: &Platform, pkg: &Package, prefix: &str, plan: Plan) -> Campaign {
    let tenant = p.registry.tenant("default").unwrap().id;
    let target = Target {
        name_prefix: Some(format!("{prefix}-")),
        ..Default::default()
    };
    p.create_campaign(
        &tenant,
        &NewCampaign::new(&format!("roll out {prefix}"), &pkg.id, target, plan),
    )
    .unwrap()
}

fn plan(stages: &[f64], rate: u32, threshold: f64, timeout: Option<u64>) -> Plan {
    Plan {
        stages: stages.to_vec(),
        rate_per_minute: rate,
        failure_threshold: threshold,
        device_timeout_s: timeout,
    }
}

/// Starts the driver (a tick a second); drop the sender to stop it.
fn driver(p: &Arc<Platform>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(p.clone().run_campaigns(Duration::from_secs(1), rx));
    (tx, h)
}

fn report(p: &Platform, device: &str, state: &str, error: Option<&str>) {
    let mut m = Map::new();
    m.insert("fw_state".into(), json!(state));
    if let Some(e) = error {
        m.insert("fw_error".into(), json!(e));
    }
    p.firmware.report(device, crate::db::now_ms(), &m).unwrap();
}

fn devices(p: &Platform, c: &Campaign) -> Vec<CampaignDevice> {
    p.firmware.campaigns.devices(&c.id, None).unwrap()
}

fn offered(p: &Platform, c: &Campaign) -> Vec<CampaignDevice> {
    devices(p, c)
        .into_iter()
        .filter(|d| d.state != PENDING)
        .collect()
}

fn has_fw_attributes(p: &Platform, device: &str) -> bool {
    let shared = p.attributes.values(device, Scope::Shared, None).unwrap();
    shared.get("fw_title") == Some(&Value::from("pump"))
}

/// Advances the paused clock to `ms` after the start (ticks fall on whole seconds).
async fn at(start: tokio::time::Instant, ms: u64) {
    tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn stages_advance_within_the_rate_limit() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let ids = fleet(&p, "pump", 20);
    let pkg = package(&p, "2.0");
    let c = campaign(&p, &pkg, "pump", plan(&[10.0, 50.0, 100.0], 3, 20.0, None));
    assert_eq!(c.state, CampaignState::Scheduled);
    assert_eq!(c.counts.devices, 20);
    let sizes: Vec<u64> = c.stage_progress.iter().map(|s| s.counts.devices).collect();
    assert_eq!(sizes, [2, 8, 10], "cumulative 10/50/100 % of 20");
    let start = tokio::time::Instant::now();
    let (_stop, _h) = driver(&p);
    // t = 0: the first stage (2 devices) is offered, within the rate of 3 a minute.
    at(start, 500).await;
    let first = offered(&p, &c);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|d| d.stage == 0 && d.state == ASSIGNED));
    for id in &ids {
        let expect = first.iter().any(|d| &d.device == id);
        assert_eq!(has_fw_attributes(&p, id), expect, "fw_* only where offered");
    }
    assert_eq!(
        p.firmware.campaigns.get(&c.id).unwrap().state,
        CampaignState::Running
    );
    for d in &first {
        report(&p, &d.device, "DOWNLOADING", None);
        report(&p, &d.device, "UPDATED", None);
    }
    // t = 1: stage 0 is done; stage 1 gets what the rate leaves (3 - 2 in the last minute).
    at(start, 1_500).await;
    assert_eq!(offered(&p, &c).len(), 3);
    assert_eq!(p.firmware.campaigns.get(&c.id).unwrap().stage, 1);
    at(start, 59_500).await;
    assert_eq!(offered(&p, &c).len(), 3, "no more within the minute");
    at(start, 60_500).await;
    assert_eq!(offered(&p, &c).len(), 5, "the two of t = 0 left the window");
    at(start, 61_500).await;
    assert_eq!(offered(&p, &c).len(), 6);
    // Every offered device updates; a stage starts only once the one before is done.
    let mut ms = 61_500;
    loop {
        let all = devices(&p, &c);
        let stage = p.firmware.campaigns.get(&c.id).unwrap().stage;
        assert!(all.iter().all(|d| d.state == PENDING || d.stage <= stage));
        for d in all.iter().filter(|d| d.state == ASSIGNED) {
            report(&p, &d.device, "UPDATED", None);
        }
        let now = p.firmware.campaigns.get(&c.id).unwrap();
        if now.state == CampaignState::Completed {
            assert_eq!(now.counts.updated, 20);
            assert!(now.times.finished.is_some());
            break;
        }
        assert!(ms < 20 * 60_000, "not completed: {now:?}");
        ms += 1_000;
        at(start, ms).await;
    }
    // 20 devices at 3 a minute: at least six minutes.
    assert!(ms >= 6 * 60_000, "{ms}");
    let history = p
        .firmware
        .campaigns
        .history(Some(&first[0].device), None, 100)
        .unwrap();
    let states: Vec<&str> = history.iter().map(|h| h.state.as_str()).collect();
    assert_eq!(states, ["ASSIGNED", "DOWNLOADING", "UPDATED"]);
    assert!(history
        .iter()
        .all(|h| h.campaign.as_deref() == Some(&*c.id)));
}

#[tokio::test(start_paused = true)]
async fn failures_above_the_threshold_halt_and_nothing_more_is_offered() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let ids = fleet(&p, "meter", 10);
    let pkg = package(&p, "3.0");
    let c = campaign(&p, &pkg, "meter", plan(&[20.0, 100.0], 100, 10.0, None));
    let start = tokio::time::Instant::now();
    let (_stop, _h) = driver(&p);
    at(start, 500).await;
    let first = offered(&p, &c);
    assert_eq!(first.len(), 2);
    report(
        &p,
        &first[0].device,
        "FAILED",
        Some("Checksum verification failed!"),
    );
    // 1 of 2 failed (50 % > 10 %): halted at the next tick, without waiting for the other.
    at(start, 1_500).await;
    let now = p.firmware.campaigns.get(&c.id).unwrap();
    assert_eq!(now.state, CampaignState::Halted, "{now:?}");
    let reason = now.reason.unwrap();
    assert!(
        reason.contains("stage 1") && reason.contains("1 of 2"),
        "{reason}"
    );
    assert_eq!(now.stage_progress[0].counts.failed, 1);
    report(&p, &first[1].device, "UPDATED", None);
    at(start, 600_000).await;
    let now = p.firmware.campaigns.get(&c.id).unwrap();
    assert_eq!(now.state, CampaignState::Halted);
    assert_eq!(offered(&p, &c).len(), 2, "nothing offered after the halt");
    let reached = ids.iter().filter(|d| has_fw_attributes(&p, d)).count();
    assert_eq!(reached, 2);
    let failed = devices(&p, &c)
        .into_iter()
        .find(|d| d.device == first[0].device)
        .unwrap();
    assert_eq!(failed.state, "FAILED");
    assert_eq!(
        failed.error.as_deref(),
        Some("Checksum verification failed!")
    );
    // A person resumes: the halted stage is accepted and the next one goes out.
    let resumed = p.firmware.campaigns.act(&c.id, Action::Resume, 0).unwrap();
    assert_eq!((resumed.state, resumed.stage), (CampaignState::Running, 1));
    at(start, 601_500).await;
    assert_eq!(offered(&p, &c).len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_silent_device_times_out_and_counts_as_failed() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    fleet(&p, "valve", 4);
    let pkg = package(&p, "1.1");
    let c = campaign(&p, &pkg, "valve", plan(&[50.0, 100.0], 100, 0.0, Some(300)));
    let start = tokio::time::Instant::now();
    let (_stop, _h) = driver(&p);
    at(start, 500).await;
    let first = offered(&p, &c);
    assert_eq!(first.len(), 2);
    report(&p, &first[0].device, "UPDATED", None);
    report(&p, &first[1].device, "DOWNLOADING", None);
    at(start, 299_500).await;
    assert_eq!(
        p.firmware.campaigns.get(&c.id).unwrap().state,
        CampaignState::Running
    );
    at(start, 300_500).await;
    let now = p.firmware.campaigns.get(&c.id).unwrap();
    assert_eq!(now.state, CampaignState::Halted, "{now:?}");
    let silent = devices(&p, &c)
        .into_iter()
        .find(|d| d.device == first[1].device)
        .unwrap();
    assert_eq!(silent.state, TIMEOUT);
    assert!(silent.error.unwrap().contains("300 s"));
    let states: Vec<String> = p
        .firmware
        .campaigns
        .history(Some(&first[1].device), Some(&c.id), 10)
        .unwrap()
        .into_iter()
        .map(|h| h.state)
        .collect();
    assert_eq!(states, ["ASSIGNED", "DOWNLOADING", "TIMEOUT"]);
    assert_eq!(offered(&p, &c).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn pause_resume_and_cancel() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    fleet(&p, "lamp", 10);
    let pkg = package(&p, "5.0");
    let c = campaign(&p, &pkg, "lamp", plan(&[100.0], 2, 50.0, None));
    let cs = &p.firmware.campaigns;
    let start = tokio::time::Instant::now();
    let (_stop, _h) = driver(&p);
    at(start, 500).await;
    assert_eq!(offered(&p, &c).len(), 2);
    assert_eq!(
        cs.act(&c.id, Action::Pause, 0).unwrap().state,
        CampaignState::Paused
    );
    assert!(matches!(
        cs.act(&c.id, Action::Pause, 0),
        Err(CoreError::Conflict(_))
    ));
    at(start, 200_500).await;
    assert_eq!(offered(&p, &c).len(), 2, "nothing offered while paused");
    assert_eq!(
        cs.act(&c.id, Action::Resume, 0).unwrap().state,
        CampaignState::Running
    );
    at(start, 201_500).await;
    assert_eq!(offered(&p, &c).len(), 4);
    let cancelled = cs.act(&c.id, Action::Cancel, 0).unwrap();
    assert_eq!(cancelled.state, CampaignState::Cancelled);
    assert!(cancelled.times.finished.is_some());
    at(start, 900_000).await;
    assert_eq!(offered(&p, &c).len(), 4, "nothing offered once cancelled");
    for a in [Action::Resume, Action::Pause, Action::Cancel] {
        assert!(matches!(cs.act(&c.id, a, 0), Err(CoreError::Conflict(_))));
    }
    assert!(matches!(
        cs.act("nope", Action::Pause, 0),
        Err(CoreError::NotFound(_))
    ));
}

#[test]
fn resume_goes_back_to_waiting_or_completes_the_last_stage() {
    let t = TestPlatform::new();
    let p = &t.platform;
    let tenant = p.registry.tenant("default").unwrap().id;
    fleet(p, "far", 2);
    let pkg = package(p, "7.0");
    let target = Target {
        name_prefix: Some("far-".into()),
        ..Default::default()
    };
    let mut new = NewCampaign::new("later", &pkg.id, target, plan(&[100.0], 10, 0.0, None));
    new.start_at = Some(10_000);
    let c = p.create_campaign(&tenant, &new).unwrap();
    let cs = &p.firmware.campaigns;
    cs.act(&c.id, Action::Pause, 5_000).unwrap();
    let back = cs.act(&c.id, Action::Resume, 5_000).unwrap();
    assert_eq!(
        back.state,
        CampaignState::Scheduled,
        "its start is still ahead"
    );
    // Offered at 10 s; one fails: halted in its only stage; resumed, it is completed.
    assert_eq!(p.campaign_step(10_000).unwrap(), 2);
    let d = devices(p, &c);
    report(p, &d[0].device, "FAILED", Some("flash write error"));
    p.campaign_step(11_000).unwrap();
    assert_eq!(cs.get(&c.id).unwrap().state, CampaignState::Halted);
    let done = cs.act(&c.id, Action::Resume, 12_000).unwrap();
    assert_eq!((done.state, done.stage), (CampaignState::Completed, 0));
    assert!(done.times.finished.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_campaign_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("ib-campaign-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let open = || {
        let mut config = crate::PlatformConfig::default();
        config.policy.data_dir = dir.clone();
        Platform::open(&dir, config).unwrap()
    };
    let p = open();
    fleet(&p, "gw", 6);
    let pkg = package(&p, "9.0");
    let c = campaign(&p, &pkg, "gw", plan(&[50.0, 100.0], 100, 0.0, None));
    let start = tokio::time::Instant::now();
    let (stop, h) = driver(&p);
    at(start, 500).await;
    for d in offered(&p, &c) {
        report(&p, &d.device, "UPDATED", None);
    }
    stop.send(true).unwrap();
    h.await.unwrap();
    p.telemetry.close();
    drop(p);

    let p = open();
    let before = p.firmware.campaigns.get(&c.id).unwrap();
    assert_eq!((before.state, before.stage), (CampaignState::Running, 0));
    assert_eq!(before.counts.updated, 3);
    let (_stop, _h) = driver(&p);
    at(start, 1_000).await;
    let second = offered(&p, &c);
    assert_eq!(second.len(), 6);
    for d in second.iter().filter(|d| d.stage == 1) {
        report(&p, &d.device, "UPDATED", None);
    }
    at(start, 2_500).await;
    let done = p.firmware.campaigns.get(&c.id).unwrap();
    assert_eq!(done.state, CampaignState::Completed, "{done:?}");
    p.telemetry.close();
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn targets_and_plans() {
    let t = TestPlatform::new();
    let p = &t.platform;
    let tenant = p.registry.tenant("default").unwrap().id;
    let ids = fleet(p, "north", 3);
    fleet(p, "south", 2);
    let other = p.registry.create_tenant("other").unwrap();
    let cs = &p.firmware.campaigns;
    let by = |target: Target| cs.resolve(&tenant, &target);
    let prefix = by(Target {
        name_prefix: Some("north-".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(prefix, ids);
    let profile = by(Target {
        profile: Some("default".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(profile.len(), 5);
    p.attributes
        .save(
            &ids[1],
            Scope::Server,
            &json!({"region": "eu"}).as_object().unwrap().clone(),
            1,
        )
        .unwrap();
    let attr = by(Target {
        attribute: Some(AttributeFilter {
            key: "region".into(),
            value: json!("eu"),
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(attr, [ids[1].clone()]);
    let named = by(Target {
        devices: Some(vec!["south-001".into(), ids[0].clone()]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(named.len(), 2);
    assert!(by(Target::default()).is_err(), "no filter");
    assert!(by(Target {
        devices: Some(vec!["missing".into()]),
        ..Default::default()
    })
    .is_err());
    assert!(by(Target {
        profile: Some("missing".into()),
        ..Default::default()
    })
    .is_err());
    let pkg = package(p, "1.0");
    let new = |plan: Plan, target: Target| NewCampaign::new("c", &pkg.id, target, plan);
    let all = Target {
        profile: Some("default".into()),
        ..Default::default()
    };
    for bad in [
        plan(&[], 1, 1.0, None),
        plan(&[50.0], 1, 1.0, None),
        plan(&[50.0, 10.0, 100.0], 1, 1.0, None),
        plan(&[0.0, 100.0], 1, 1.0, None),
        plan(&[100.0], 0, 1.0, None),
        plan(&[100.0], 1, 101.0, None),
        plan(&[100.0], 1, 1.0, Some(0)),
    ] {
        let e = p.create_campaign(&tenant, &new(bad.clone(), all.clone()));
        assert!(matches!(e, Err(CoreError::Invalid(_))), "{bad:?}: {e:?}");
    }
    let none = Target {
        name_prefix: Some("west-".into()),
        ..Default::default()
    };
    assert!(p
        .create_campaign(&tenant, &new(Plan::default(), none))
        .is_err());
    // Another tenant's package does not exist for this one.
    assert!(p
        .create_campaign(&other.id, &new(Plan::default(), all.clone()))
        .is_err());
    let c = p
        .create_campaign(&tenant, &new(Plan::default(), all.clone()))
        .unwrap();
    assert_eq!(c.plan.stages, DEFAULT_STAGES);
    assert!(matches!(
        p.create_campaign(&tenant, &new(Plan::default(), all)),
        Err(CoreError::AlreadyExists(_))
    ));
    assert_eq!(cs.list(Some(&tenant)).unwrap().len(), 1);
    assert!(cs.list(Some(&other.id)).unwrap().is_empty());
    // A package rolled out by a campaign stays.
    assert!(matches!(
        p.firmware.delete(&pkg.id),
        Err(CoreError::Conflict(_))
    ));
    // The default stages of 5 devices: 1, 1, 3, 5 (cumulative, rounded up).
    assert_eq!(stage_of_positions(&DEFAULT_STAGES, 5), [0, 2, 2, 3, 3]);
    assert_eq!(stage_of_positions(&[100.0], 3), [0, 0, 0]);
}
