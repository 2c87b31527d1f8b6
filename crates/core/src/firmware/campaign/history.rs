//! The per-device update history: every assignment (by a person or a campaign) and every state
//! a device reports, with its time and error, in `firmware_history`; reports also move the
//! device's row in the campaigns that offered it the package.

use rusqlite::{params, OptionalExtension};

use super::{Campaigns, HistoryEntry};
use crate::error::Result;
use crate::firmware::Kind;

impl Campaigns {
    /// History entries, oldest first: of a device, of a campaign, or of a device in a campaign.
    pub fn history(
        &self,
        device: Option<&str>,
        campaign: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT device_id, kind, firmware_id, campaign_id, ts_ms, state, error
             FROM firmware_history WHERE (?1 IS NULL OR device_id = ?1)
             AND (?2 IS NULL OR campaign_id = ?2) ORDER BY id LIMIT ?3",
        )?;
        let rows = st.query_map(params![device, campaign, limit.min(10_000) as i64], |r| {
            Ok(HistoryEntry {
                device: r.get(0)?,
                kind: Kind::parse(&r.get::<_, String>(1)?),
                firmware_id: r.get(2)?,
                campaign: r.get(3)?,
                ts: r.get(4)?,
                state: r.get(5)?,
                error: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends a history entry.
    pub(crate) fn record(&self, e: &HistoryEntry) -> Result<()> {
        self.db.conn().execute(
            "INSERT INTO firmware_history (device_id, kind, firmware_id, campaign_id, ts_ms,
             state, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.device,
                e.kind.as_str(),
                e.firmware_id,
                e.campaign,
                e.ts,
                e.state,
                e.error
            ],
        )?;
        Ok(())
    }

    /// A state a device reported for `firmware` (the package assigned to it): kept in the
    /// history and in every campaign of that package that offered it the image.
    pub(crate) fn note_report(
        &self,
        device: &str,
        kind: Kind,
        firmware: &str,
        ts: i64,
        state: &str,
        error: Option<&str>,
    ) -> Result<()> {
        let state = state.to_ascii_uppercase();
        let campaign: Option<String> = {
            let conn = self.db.conn();
            conn.execute(
                "UPDATE fw_campaign_devices SET state = ?3, error = ?4, state_ms = ?5
                 WHERE device_id = ?1 AND offered_ms IS NOT NULL AND campaign_id IN
                   (SELECT id FROM fw_campaigns WHERE firmware_id = ?2)",
                params![device, firmware, state, error, ts],
            )?;
            conn.query_row(
                "SELECT c.campaign_id FROM fw_campaign_devices c
                 JOIN fw_campaigns f ON f.id = c.campaign_id
                 WHERE c.device_id = ?1 AND f.firmware_id = ?2 AND c.offered_ms IS NOT NULL
                 ORDER BY c.offered_ms DESC LIMIT 1",
                params![device, firmware],
                |r| r.get(0),
            )
            .optional()?
        };
        // Devices repeat themselves (SDKs resend a state): one entry per change.
        let last: Option<(String, Option<String>)> = self
            .db
            .conn()
            .query_row(
                "SELECT state, error FROM firmware_history WHERE device_id = ?1 AND kind = ?2
                 ORDER BY id DESC LIMIT 1",
                params![device, kind.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if last.is_some_and(|(s, e)| s == state && e.as_deref() == error) {
            return Ok(());
        }
        self.record(&HistoryEntry {
            device: device.to_string(),
            kind,
            firmware_id: firmware.to_string(),
            campaign,
            ts,
            state,
            error: error.map(str::to_string),
        })
    }
}
