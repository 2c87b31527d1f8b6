//! The campaign driver: a tokio task that, every tick, gives new devices of a profile the
//! profile's package (`firmware/profile.rs`), starts scheduled campaigns that are due,
//! marks devices that outlived the device timeout, advances or halts stages, and offers the
//! image to the next devices of each running campaign's current stage within its rate limit.
//!
//! Its clock is the tokio clock (wall time at start + elapsed), so tests drive it with paused
//! time; every decision is taken from the database, so a restarted driver carries on.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use super::{
    row0, Campaign, CampaignState, Campaigns, Counts, HistoryEntry, NewCampaign, Row0, ASSIGNED,
    DONE, SELECT, TIMEOUT,
};
use crate::db::now_ms;
use crate::error::{CoreError, Result};
use crate::firmware::Kind;
use crate::Platform;

/// A campaign halted by its failures: logged and counted.
fn halted(c: &Row0, reason: &str) {
    tracing::warn!(campaign = %c.id, name = %c.name, reason, "firmware campaign halted");
    metrics::counter!("firmware_campaigns_halted_total").increment(1);
}

impl Campaigns {
    /// Campaigns the driver works on (scheduled or running).
    fn active(&self) -> Result<Vec<Row0>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{SELECT} WHERE state IN ('scheduled', 'running') ORDER BY created_ms"
        ))?;
        let rows = st.query_map([], row0)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Moves a campaign from `from` to `to` (nothing if someone changed its state meanwhile).
    fn transition(
        &self,
        id: &str,
        from: CampaignState,
        to: CampaignState,
        reason: Option<&str>,
        stage: usize,
        now: i64,
    ) -> Result<bool> {
        let finished = matches!(to, CampaignState::Halted | CampaignState::Completed);
        let n = self.db.conn().execute(
            "UPDATE fw_campaigns SET state = ?3, reason = coalesce(?4, reason), stage = ?5,
             updated_ms = ?6, finished_ms = CASE WHEN ?7 THEN ?6 ELSE finished_ms END
             WHERE id = ?1 AND state = ?2",
            params![
                id,
                from.as_str(),
                to.as_str(),
                reason,
                stage as i64,
                now,
                finished
            ],
        )?;
        Ok(n == 1)
    }

    fn is_running(&self, id: &str) -> Result<bool> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT state = 'running' FROM fw_campaigns WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Devices offered before `cutoff` that have not finished become TIMEOUT.
    fn expire(&self, c: &Row0, cutoff: i64, now: i64) -> Result<()> {
        let late: Vec<String> = {
            let conn = self.db.conn();
            let mut st = conn.prepare(&format!(
                "SELECT device_id FROM fw_campaign_devices WHERE campaign_id = ?1
                 AND offered_ms IS NOT NULL AND offered_ms <= ?2
                 AND state NOT IN ('{}', '{}', '{}')",
                DONE[0], DONE[1], DONE[2]
            ))?;
            let rows = st.query_map(params![c.id, cutoff], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let secs = c.plan.device_timeout_s.unwrap_or_default();
        let error = format!("no UPDATED or FAILED within {secs} s of the offer");
        for d in late {
            self.db.conn().execute(
                "UPDATE fw_campaign_devices SET state = ?3, error = ?4, state_ms = ?5
                 WHERE campaign_id = ?1 AND device_id = ?2",
                params![c.id, d, TIMEOUT, error, now],
            )?;
            self.record(&HistoryEntry {
                device: d,
                kind: self.kind_of(&c.firmware_id),
                firmware_id: c.firmware_id.clone(),
                campaign: Some(c.id.clone()),
                ts: now,
                state: TIMEOUT.into(),
                error: Some(error.clone()),
            })?;
        }
        Ok(())
    }

    /// Firmware or software (firmware when the package is gone).
    fn kind_of(&self, firmware: &str) -> Kind {
        self.db
            .conn()
            .query_row("SELECT kind FROM firmware WHERE id = ?1", [firmware], |r| {
                r.get::<_, String>(0)
            })
            .map(|k| Kind::parse(&k))
            .unwrap_or_default()
    }

    /// The counts of one stage.
    fn stage_counts(&self, id: &str, stage: usize) -> Result<Counts> {
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(
            "SELECT state, count(*) FROM fw_campaign_devices WHERE campaign_id = ?1 AND stage = ?2
             GROUP BY state",
        )?;
        let rows = st.query_map(params![id, stage as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        let mut c = Counts::default();
        for row in rows {
            let (state, n) = row?;
            c.add(&state, n);
        }
        Ok(c)
    }

    /// How many devices of a campaign were offered the image after `since`.
    fn offered_since(&self, id: &str, since: i64) -> Result<u64> {
        Ok(self.db.conn().query_row(
            "SELECT count(*) FROM fw_campaign_devices WHERE campaign_id = ?1 AND offered_ms > ?2",
            params![id, since],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// The next `n` devices of a stage not offered yet.
    fn pending(&self, id: &str, stage: usize, n: u64) -> Result<Vec<String>> {
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(
            "SELECT device_id FROM fw_campaign_devices WHERE campaign_id = ?1 AND stage = ?2
             AND state = 'PENDING' ORDER BY position LIMIT ?3",
        )?;
        let rows = st.query_map(params![id, stage as i64, n as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn mark(
        &self,
        id: &str,
        device: &str,
        state: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        self.db.conn().execute(
            "UPDATE fw_campaign_devices SET state = ?3, error = ?4, offered_ms = ?5, state_ms = ?5
             WHERE campaign_id = ?1 AND device_id = ?2",
            params![id, device, state, error, now],
        )?;
        Ok(())
    }
}

impl Platform {
    /// Creates a campaign of the tenant's package for the devices its target names; the driver
    /// starts it at `start_at` (or at its next tick).
    pub fn create_campaign(&self, tenant: &str, new: &NewCampaign) -> Result<Campaign> {
        let pkg = self
            .firmware
            .get(&new.firmware_id)
            .ok()
            .filter(|p| p.tenant == tenant)
            .ok_or_else(|| {
                CoreError::Invalid(format!(
                    "firmware_id: no package {:?} in the tenant",
                    new.firmware_id
                ))
            })?;
        let devices = self.firmware.campaigns.resolve(tenant, &new.target)?;
        let c = self
            .firmware
            .campaigns
            .insert(tenant, new, &pkg, devices, now_ms())?;
        tracing::info!(campaign = %c.id, name = %c.name, devices = c.counts.devices,
            "firmware campaign created");
        Ok(c)
    }

    /// One pass over the active campaigns at `now` (ms); returns how many devices were offered
    /// the image.
    pub fn campaign_step(&self, now: i64) -> Result<usize> {
        // Devices that joined a profile with a package get it (not counted as offers).
        if let Err(e) = self.follow_profiles(now) {
            tracing::warn!(error = %e, "assigning profiles' packages to new devices");
        }
        let mut offered = 0;
        for c in self.firmware.campaigns.active()? {
            match self.step_campaign(c, now) {
                Ok(n) => offered += n,
                Err(e) => tracing::warn!(error = %e, "firmware campaign step failed"),
            }
        }
        Ok(offered)
    }

    fn step_campaign(&self, mut c: Row0, now: i64) -> Result<usize> {
        use CampaignState as S;
        let cs = &self.firmware.campaigns;
        if c.state == S::Scheduled {
            if c.times.start_at.is_some_and(|t| t > now) {
                return Ok(0);
            }
            if !cs.transition(&c.id, S::Scheduled, S::Running, None, c.stage, now)? {
                return Ok(0);
            }
            tracing::info!(campaign = %c.id, name = %c.name, "firmware campaign started");
        }
        if let Some(t) = c.plan.device_timeout_s {
            cs.expire(&c, now - t as i64 * 1000, now)?;
        }
        loop {
            let counts = cs.stage_counts(&c.id, c.stage)?;
            let limit = c.plan.failure_threshold * counts.devices as f64;
            if counts.failed as f64 * 100.0 > limit {
                let reason = format!(
                    "stage {} ({}%): {} of {} devices failed ({:.1}%), above the {}% threshold",
                    c.stage + 1,
                    c.plan.stages[c.stage],
                    counts.failed,
                    counts.devices,
                    counts.failed as f64 * 100.0 / counts.devices as f64,
                    c.plan.failure_threshold
                );
                if cs.transition(&c.id, S::Running, S::Halted, Some(&reason), c.stage, now)? {
                    halted(&c, &reason);
                }
                return Ok(0);
            }
            if !counts.done() {
                break;
            }
            if c.stage + 1 >= c.plan.stages.len() {
                if cs.transition(&c.id, S::Running, S::Completed, None, c.stage, now)? {
                    tracing::info!(campaign = %c.id, name = %c.name, "firmware campaign completed");
                }
                return Ok(0);
            }
            c.stage += 1;
            if !cs.transition(&c.id, S::Running, S::Running, None, c.stage, now)? {
                return Ok(0);
            }
        }
        let budget = u64::from(c.plan.rate_per_minute)
            .saturating_sub(cs.offered_since(&c.id, now - 60_000)?);
        if budget == 0 {
            return Ok(0);
        }
        let mut offered = 0;
        for d in cs.pending(&c.id, c.stage, budget)? {
            // A pause or cancel since this pass began stops the offers at once.
            if !cs.is_running(&c.id)? {
                break;
            }
            match self.assign_package(&d, &c.firmware_id, Some(&c.id), now) {
                Ok(_) => cs.mark(&c.id, &d, ASSIGNED, None, now)?,
                Err(e) => {
                    let error = format!("assignment failed: {e}");
                    cs.mark(&c.id, &d, "FAILED", Some(&error), now)?;
                }
            }
            offered += 1;
        }
        if offered > 0 {
            tracing::info!(campaign = %c.id, stage = c.stage + 1, offered, "firmware offered");
            metrics::counter!("firmware_campaign_offers_total").increment(offered as u64);
        }
        Ok(offered)
    }

    /// Runs the campaign driver every `every` until `shutdown` changes.
    pub async fn run_campaigns(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let (wall, start) = (now_ms(), tokio::time::Instant::now());
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let now = wall + start.elapsed().as_millis() as i64;
            let p = self.clone();
            match tokio::task::spawn_blocking(move || p.campaign_step(now)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "firmware campaigns"),
                Err(e) => tracing::error!(error = %e, "firmware campaign driver panicked"),
                Ok(Ok(_)) => {}
            }
        }
    }
}
