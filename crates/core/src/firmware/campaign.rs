//! Firmware campaigns: one package rolled out to many devices in stages.
//!
//! A campaign names a package, a target (device ids or names, a profile, a name prefix, an
//! attribute value: the filters given are combined with AND) resolved once at creation into an
//! ordered (shuffled) device list, and a plan: cumulative stage percentages (default
//! `[1, 10, 50, 100]`), a rate limit (at most `rate_per_minute` devices offered in any 60 s),
//! a failure threshold per stage (percent) and an optional per-device timeout.
//!
//! The driver (`driver.rs`, [`Platform::run_campaigns`](crate::Platform::run_campaigns)) offers
//! the image to the next devices of the current stage through the ordinary assignment (the
//! `fw_*` shared attributes), follows what they report (`fw_state`, recorded here by
//! [`Campaigns::note_report`]), moves to the next stage once every device of the stage is
//! done (UPDATED, FAILED, or TIMEOUT) and halts the campaign as soon as the stage's failures
//! exceed the threshold: from then on no further device is offered the image.
//!
//! States: `scheduled` → `running` → `completed` | `halted`; `paused` (from scheduled or
//! running, back with resume: to `scheduled` while its start is ahead); `cancelled` from any
//! state but `completed`. A resumed halted campaign accepts the halted stage and goes on with
//! the next (completed if it was the last). Everything is in `platform.db`,
//! so a campaign survives a restart. Per-device history (every state with time and error, of
//! campaigns and of direct assignments) is in `firmware_history`.

mod driver;
mod history;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use rand::seq::SliceRandom;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Kind, Package};
use crate::db::Db;
use crate::error::{CoreError, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fw_campaigns (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, firmware_id TEXT NOT NULL REFERENCES firmware(id),
    target TEXT NOT NULL, stages TEXT NOT NULL, rate_per_minute INTEGER NOT NULL,
    failure_threshold REAL NOT NULL, device_timeout_ms INTEGER,
    state TEXT NOT NULL, stage INTEGER NOT NULL DEFAULT 0, reason TEXT,
    start_ms INTEGER, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    finished_ms INTEGER, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS fw_campaign_devices (
    campaign_id TEXT NOT NULL REFERENCES fw_campaigns(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    position INTEGER NOT NULL, stage INTEGER NOT NULL, state TEXT NOT NULL, error TEXT,
    offered_ms INTEGER, state_ms INTEGER,
    PRIMARY KEY (campaign_id, device_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fw_campaign_devices_device ON fw_campaign_devices (device_id);
CREATE INDEX IF NOT EXISTS fw_campaign_devices_stage
    ON fw_campaign_devices (campaign_id, stage, position);
CREATE TABLE IF NOT EXISTS firmware_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, firmware_id TEXT NOT NULL, campaign_id TEXT,
    ts_ms INTEGER NOT NULL, state TEXT NOT NULL, error TEXT);
CREATE INDEX IF NOT EXISTS firmware_history_device ON firmware_history (device_id, id);
CREATE INDEX IF NOT EXISTS firmware_history_campaign ON firmware_history (campaign_id, id);
";

/// The stages when none are given: 1 %, 10 %, 50 %, 100 % of the devices.
pub const DEFAULT_STAGES: [f64; 4] = [1.0, 10.0, 50.0, 100.0];
/// A device's state before it is offered the image.
pub const PENDING: &str = "PENDING";
/// Offered (the `fw_*` attributes set), nothing reported yet.
pub const ASSIGNED: &str = "ASSIGNED";
/// No UPDATED or FAILED within the campaign's device timeout: counts as a failure.
pub const TIMEOUT: &str = "TIMEOUT";
/// Device states that end a device's part in a campaign.
const DONE: [&str; 3] = ["UPDATED", "FAILED", TIMEOUT];
/// Device states counted as failures.
const FAILED: [&str; 2] = ["FAILED", TIMEOUT];

/// Which devices a campaign updates. Every filter given must hold (AND); at least one is needed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Device ids or names of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// A device profile (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Devices whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Devices with an attribute (any scope) of this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<AttributeFilter>,
}

/// An attribute that must have a value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeFilter {
    pub key: String,
    /// The value, compared as JSON (`"eu"`, `3`, `true`).
    pub value: Value,
}

/// How a campaign rolls out.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Plan {
    /// Cumulative percentages of the devices, increasing, the last 100 (default 1, 10, 50, 100).
    pub stages: Vec<f64>,
    /// At most this many devices are offered the image in any 60 s (default 60).
    pub rate_per_minute: u32,
    /// A stage whose failures exceed this percentage of its devices halts the campaign
    /// (default 10).
    pub failure_threshold: f64,
    /// A device that has reported neither UPDATED nor FAILED this long after being offered the
    /// image counts as failed (TIMEOUT). None: wait for ever.
    pub device_timeout_s: Option<u64>,
}

fn default_stages() -> Vec<f64> {
    DEFAULT_STAGES.to_vec()
}
fn default_rate() -> u32 {
    60
}
fn default_threshold() -> f64 {
    10.0
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            stages: default_stages(),
            rate_per_minute: default_rate(),
            failure_threshold: default_threshold(),
            device_timeout_s: None,
        }
    }
}

/// A campaign to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// Tenant id or name (system administrators).
    #[serde(default)]
    pub tenant: Option<String>,
    pub name: String,
    /// The package to roll out.
    pub firmware_id: String,
    pub target: Target,
    /// Cumulative percentages of the devices, increasing, the last 100 (default 1, 10, 50, 100).
    #[serde(default = "default_stages")]
    pub stages: Vec<f64>,
    /// At most this many devices are offered the image in any 60 s (default 60).
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    /// A stage whose failures exceed this percentage of its devices halts the campaign
    /// (default 10).
    #[serde(default = "default_threshold")]
    pub failure_threshold: f64,
    /// Devices that report neither UPDATED nor FAILED this long after the offer count as failed.
    #[serde(default)]
    pub device_timeout_s: Option<u64>,
    /// When to start (ms since the epoch); default at once.
    #[serde(default)]
    pub start_at: Option<i64>,
}

impl NewCampaign {
    /// A campaign of `firmware_id` for `target` with `plan`, starting at once.
    pub fn new(name: &str, firmware_id: &str, target: Target, plan: Plan) -> NewCampaign {
        NewCampaign {
            tenant: None,
            name: name.to_string(),
            firmware_id: firmware_id.to_string(),
            target,
            stages: plan.stages,
            rate_per_minute: plan.rate_per_minute,
            failure_threshold: plan.failure_threshold,
            device_timeout_s: plan.device_timeout_s,
            start_at: None,
        }
    }

    /// The plan part.
    pub fn plan(&self) -> Plan {
        Plan {
            stages: self.stages.clone(),
            rate_per_minute: self.rate_per_minute,
            failure_threshold: self.failure_threshold,
            device_timeout_s: self.device_timeout_s,
        }
    }
}

/// Where a campaign is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    Scheduled,
    Running,
    Paused,
    Halted,
    Cancelled,
    Completed,
}

impl CampaignState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Scheduled => "scheduled",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Halted => "halted",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Completed => "completed",
        }
    }

    fn parse(s: &str) -> CampaignState {
        match s {
            "running" => CampaignState::Running,
            "paused" => CampaignState::Paused,
            "halted" => CampaignState::Halted,
            "cancelled" => CampaignState::Cancelled,
            "completed" => CampaignState::Completed,
            _ => CampaignState::Scheduled,
        }
    }
}

/// A person's request to a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Cancel,
}

/// How many devices are where (of a campaign, or of one stage).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Counts {
    pub devices: u64,
    /// Not offered yet.
    pub pending: u64,
    /// Offered, nothing reported.
    pub assigned: u64,
    /// DOWNLOADING, DOWNLOADED, VERIFIED, UPDATING (or another state not final).
    pub in_progress: u64,
    pub updated: u64,
    /// FAILED or TIMEOUT.
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, state: &str, n: u64) {
        self.devices += n;
        match state {
            PENDING => self.pending += n,
            ASSIGNED => self.assigned += n,
            "UPDATED" => self.updated += n,
            s if FAILED.contains(&s) => self.failed += n,
            _ => self.in_progress += n,
        }
    }

    /// Every device done (UPDATED, FAILED, TIMEOUT).
    fn done(&self) -> bool {
        self.updated + self.failed == self.devices
    }
}

/// One stage's percentage and counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageCounts {
    /// 0-based.
    pub stage: usize,
    /// Cumulative percentage of the campaign's devices this stage reaches.
    pub percent: f64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// A campaign with its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Campaign {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub firmware_id: String,
    pub target: Target,
    #[serde(flatten)]
    pub plan: Plan,
    pub state: CampaignState,
    /// The current stage (0-based).
    pub stage: usize,
    /// Why the campaign halted (or was cancelled).
    pub reason: Option<String>,
    #[serde(flatten)]
    pub times: Times,
    /// All devices.
    pub counts: Counts,
    /// Each stage's devices.
    pub stage_progress: Vec<StageCounts>,
}

/// A campaign's times, ms since the epoch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Times {
    /// When the campaign was to start (none: at once).
    pub start_at: Option<i64>,
    pub created: i64,
    pub updated: i64,
    pub finished: Option<i64>,
}

/// A device of a campaign.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignDevice {
    pub device: String,
    pub name: String,
    pub stage: usize,
    /// PENDING, ASSIGNED, a reported state (DOWNLOADING ... UPDATED, FAILED), or TIMEOUT.
    pub state: String,
    pub error: Option<String>,
    /// When the image was offered.
    pub offered: Option<i64>,
    /// When the state last changed.
    pub state_ts: Option<i64>,
}

/// One state of a device's update, as it happened.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub device: String,
    pub kind: Kind,
    pub firmware_id: String,
    pub campaign: Option<String>,
    pub ts: i64,
    pub state: String,
    pub error: Option<String>,
}

/// Campaign storage and the device history.
pub struct Campaigns {
    db: Arc<Db>,
}

/// A campaign row without its counts.
struct Row0 {
    id: String,
    tenant: String,
    name: String,
    firmware_id: String,
    target: Target,
    plan: Plan,
    state: CampaignState,
    stage: usize,
    reason: Option<String>,
    times: Times,
}

const SELECT: &str = "SELECT id, tenant_id, name, firmware_id, target, stages, rate_per_minute,
    failure_threshold, device_timeout_ms, state, stage, reason, start_ms, created_ms, updated_ms,
    finished_ms FROM fw_campaigns";

fn row0(r: &Row) -> rusqlite::Result<Row0> {
    let json = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    Ok(Row0 {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        firmware_id: r.get(3)?,
        target: serde_json::from_str(&json(4)?).unwrap_or_default(),
        plan: Plan {
            stages: serde_json::from_str(&json(5)?).unwrap_or_else(|_| default_stages()),
            rate_per_minute: r.get(6)?,
            failure_threshold: r.get(7)?,
            device_timeout_s: r.get::<_, Option<i64>>(8)?.map(|ms| (ms / 1000) as u64),
        },
        state: CampaignState::parse(&r.get::<_, String>(9)?),
        stage: r.get::<_, i64>(10)? as usize,
        reason: r.get(11)?,
        times: Times {
            start_at: r.get(12)?,
            created: r.get(13)?,
            updated: r.get(14)?,
            finished: r.get(15)?,
        },
    })
}

fn check_plan(plan: &Plan) -> Result<()> {
    let bad = |m: &str| Err(CoreError::Invalid(m.to_string()));
    let s = &plan.stages;
    if s.is_empty() || s.len() > 20 {
        return bad("stages: 1 to 20 percentages");
    }
    if s.iter().any(|p| !p.is_finite() || *p <= 0.0 || *p > 100.0) {
        return bad("stages: each percentage above 0 and at most 100");
    }
    if s.windows(2).any(|w| w[0] >= w[1]) || s[s.len() - 1] != 100.0 {
        return bad("stages: increasing cumulative percentages, the last 100");
    }
    if plan.rate_per_minute == 0 || plan.rate_per_minute > 100_000 {
        return bad("rate_per_minute: 1 to 100000");
    }
    if !(0.0..=100.0).contains(&plan.failure_threshold) {
        return bad("failure_threshold: a percentage, 0 to 100");
    }
    if plan
        .device_timeout_s
        .is_some_and(|t| t == 0 || t > 365 * 86_400)
    {
        return bad("device_timeout_s: 1 s to a year");
    }
    Ok(())
}

/// The stage of each of `n` devices in order: stage k ends at ceil(stages[k] % of n).
fn stage_of_positions(stages: &[f64], n: usize) -> Vec<usize> {
    let ends: Vec<usize> = stages
        .iter()
        .map(|p| ((p * n as f64 / 100.0).ceil() as usize).min(n))
        .collect();
    (0..n)
        .map(|i| ends.iter().position(|&e| i < e).unwrap_or(stages.len() - 1))
        .collect()
}

impl Campaigns {
    /// Campaign tables in `db` (created by the firmware module's schema).
    pub(super) fn new(db: Arc<Db>) -> Campaigns {
        Campaigns { db }
    }

    /// The devices of `tenant` that `target` names, in the order of their names.
    pub fn resolve(&self, tenant: &str, target: &Target) -> Result<Vec<String>> {
        if target.devices.is_none()
            && target.profile.is_none()
            && target.name_prefix.is_none()
            && target.attribute.is_none()
        {
            return Err(CoreError::Invalid(
                "target: give devices, profile, name_prefix or attribute".into(),
            ));
        }
        let conn = self.db.conn();
        let profile = match &target.profile {
            Some(p) => Some(
                conn.query_row(
                    "SELECT id FROM profiles WHERE tenant_id = ?1 AND (id = ?2 OR name = ?2)",
                    [tenant, p],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .ok_or_else(|| CoreError::Invalid(format!("target: no profile {p:?}")))?,
            ),
            None => None,
        };
        let (key, value) = match &target.attribute {
            Some(a) => (Some(a.key.clone()), Some(a.value.to_string())),
            None => (None, None),
        };
        let mut st = conn.prepare(
            "SELECT d.id, d.name FROM devices d WHERE d.tenant_id = ?1
             AND (?2 IS NULL OR d.profile_id = ?2)
             AND (?3 IS NULL OR substr(d.name, 1, length(?3)) = ?3)
             AND (?4 IS NULL OR EXISTS (SELECT 1 FROM attributes a
                  WHERE a.device_id = d.id AND a.key = ?4 AND a.value = ?5))
             ORDER BY d.name",
        )?;
        let rows = st.query_map(
            params![tenant, profile, target.name_prefix, key, value],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        let found: Vec<(String, String)> = rows.collect::<rusqlite::Result<_>>()?;
        if let Some(names) = &target.devices {
            let mut keep = Vec::new();
            for n in names {
                let Some(d) = found.iter().find(|(id, name)| id == n || name == n) else {
                    return Err(CoreError::Invalid(format!(
                        "target: device {n:?} is not one of the tenant's devices matching the other filters"
                    )));
                };
                if !keep.contains(&d.0) {
                    keep.push(d.0.clone());
                }
            }
            return Ok(keep);
        }
        Ok(found.into_iter().map(|(id, _)| id).collect())
    }

    /// Stores a campaign of `package` (already checked to be the tenant's) for `devices`.
    pub(crate) fn insert(
        &self,
        tenant: &str,
        new: &NewCampaign,
        package: &Package,
        mut devices: Vec<String>,
        now: i64,
    ) -> Result<Campaign> {
        if new.name.trim().is_empty() || new.name.len() > 128 {
            return Err(CoreError::Invalid(
                "name must be 1 to 128 characters".into(),
            ));
        }
        let plan = new.plan();
        check_plan(&plan)?;
        if devices.is_empty() {
            return Err(CoreError::Invalid("the target matches no device".into()));
        }
        // Shuffled, so that the first stages are a sample of the fleet, not its first names.
        devices.shuffle(&mut rand::rng());
        let stages = stage_of_positions(&plan.stages, devices.len());
        let id = uuid::Uuid::new_v4().to_string();
        let mut conn = self.db.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO fw_campaigns (id, tenant_id, name, firmware_id, target, stages,
             rate_per_minute, failure_threshold, device_timeout_ms, state, stage, start_ms,
             created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'scheduled', 0,
             ?10, ?11, ?11)",
            params![
                id,
                tenant,
                new.name.trim(),
                package.id,
                serde_json::to_string(&new.target).expect("a target serialises"),
                serde_json::to_string(&plan.stages).expect("numbers serialise"),
                plan.rate_per_minute,
                plan.failure_threshold,
                plan.device_timeout_s.map(|s| s as i64 * 1000),
                new.start_at,
                now
            ],
        )
        .map_err(|e| CoreError::unique(e, format!("campaign {:?}", new.name)))?;
        {
            let mut st = tx.prepare(
                "INSERT INTO fw_campaign_devices (campaign_id, device_id, position, stage, state)
                 VALUES (?1, ?2, ?3, ?4, 'PENDING')",
            )?;
            for (i, d) in devices.iter().enumerate() {
                st.execute(params![id, d, i as i64, stages[i] as i64])?;
            }
        }
        tx.commit()?;
        drop(conn);
        self.get(&id)
    }

    fn row(&self, id: &str) -> Result<Row0> {
        self.db
            .conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row0)
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("campaign {id:?}")))
    }

    /// Per stage and state, the number of devices.
    fn counts(&self, id: &str, stages: &[f64]) -> Result<(Counts, Vec<StageCounts>)> {
        let mut per: Vec<StageCounts> = stages
            .iter()
            .enumerate()
            .map(|(stage, &percent)| StageCounts {
                stage,
                percent,
                counts: Counts::default(),
            })
            .collect();
        let mut total = Counts::default();
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(
            "SELECT stage, state, count(*) FROM fw_campaign_devices WHERE campaign_id = ?1
             GROUP BY stage, state",
        )?;
        let rows = st.query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)? as usize,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        for row in rows {
            let (stage, state, n) = row?;
            total.add(&state, n);
            if let Some(s) = per.get_mut(stage) {
                s.counts.add(&state, n);
            }
        }
        Ok((total, per))
    }

    /// A campaign with its counts.
    pub fn get(&self, id: &str) -> Result<Campaign> {
        let r = self.row(id)?;
        let (counts, stage_progress) = self.counts(&r.id, &r.plan.stages)?;
        Ok(Campaign {
            id: r.id,
            tenant: r.tenant,
            name: r.name,
            firmware_id: r.firmware_id,
            target: r.target,
            plan: r.plan,
            state: r.state,
            stage: r.stage,
            reason: r.reason,
            times: r.times,
            counts,
            stage_progress,
        })
    }

    /// The tenant of a campaign.
    pub fn tenant_of(&self, id: &str) -> Result<String> {
        self.db
            .conn()
            .query_row(
                "SELECT tenant_id FROM fw_campaigns WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("campaign {id:?}")))
    }

    /// Campaigns, newest first: of one tenant, or of all.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Campaign>> {
        let ids: Vec<String> = {
            let conn = self.db.conn();
            let mut st = conn.prepare(
                "SELECT id FROM fw_campaigns WHERE ?1 IS NULL OR tenant_id = ?1
                 ORDER BY created_ms DESC, id",
            )?;
            let rows = st.query_map([tenant], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        ids.iter().map(|id| self.get(id)).collect()
    }

    /// Whether a package is used by a campaign.
    pub fn uses(&self, firmware: &str) -> Result<bool> {
        Ok(self
            .db
            .conn()
            .prepare("SELECT 1 FROM fw_campaigns WHERE firmware_id = ?1")?
            .exists([firmware])?)
    }

    /// Pauses, resumes or cancels a campaign; a transition the state does not allow is a
    /// conflict.
    pub fn act(&self, id: &str, action: Action, now: i64) -> Result<Campaign> {
        use CampaignState as S;
        let r = self.row(id)?;
        let last = r.stage + 1 >= r.plan.stages.len();
        let (to, reason, finished) = match (action, r.state) {
            (Action::Pause, S::Scheduled | S::Running) => (S::Paused, r.reason.clone(), None),
            // Back to waiting when it was paused before its start.
            (Action::Resume, S::Paused) if r.times.start_at.is_some_and(|t| t > now) => {
                (S::Scheduled, r.reason.clone(), None)
            }
            (Action::Resume, S::Paused) => (S::Running, r.reason.clone(), None),
            // The halted stage is accepted: the driver goes on with the next one.
            (Action::Resume, S::Halted) if last => (S::Completed, r.reason.clone(), Some(now)),
            (Action::Resume, S::Halted) => (S::Running, None, None),
            (Action::Cancel, S::Scheduled | S::Running | S::Paused | S::Halted) => {
                (S::Cancelled, Some("cancelled".to_string()), Some(now))
            }
            (a, s) => {
                return Err(CoreError::Conflict(format!(
                    "a {} campaign cannot be {}",
                    s.as_str(),
                    match a {
                        Action::Pause => "paused",
                        Action::Resume => "resumed",
                        Action::Cancel => "cancelled",
                    }
                )))
            }
        };
        let stage = if action == Action::Resume && r.state == S::Halted && !last {
            r.stage + 1
        } else {
            r.stage
        };
        // Only from the state read above: the driver may have moved it meanwhile.
        let n = self.db.conn().execute(
            "UPDATE fw_campaigns SET state = ?2, reason = ?3, finished_ms = ?4, stage = ?5,
             updated_ms = ?6 WHERE id = ?1 AND state = ?7",
            params![
                id,
                to.as_str(),
                reason,
                finished,
                stage as i64,
                now,
                r.state.as_str()
            ],
        )?;
        if n == 0 {
            return Err(CoreError::Conflict(
                "the campaign changed meanwhile; look again and retry".into(),
            ));
        }
        self.get(id)
    }

    /// A campaign's devices (in one state, if given) in stage and offer order.
    pub fn devices(&self, id: &str, state: Option<&str>) -> Result<Vec<CampaignDevice>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT c.device_id, d.name, c.stage, c.state, c.error, c.offered_ms, c.state_ms
             FROM fw_campaign_devices c JOIN devices d ON d.id = c.device_id
             WHERE c.campaign_id = ?1 AND (?2 IS NULL OR c.state = upper(?2))
             ORDER BY c.stage, c.position",
        )?;
        let rows = st.query_map(params![id, state], |r| {
            Ok(CampaignDevice {
                device: r.get(0)?,
                name: r.get(1)?,
                stage: r.get::<_, i64>(2)? as usize,
                state: r.get(3)?,
                error: r.get(4)?,
                offered: r.get(5)?,
                state_ts: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
