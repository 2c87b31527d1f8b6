//! Rules and their per-device state in `platform.db`: the rule rows (spec as JSON), the state
//! each rule keeps per device (fired, condition holding since) so that `for` durations and
//! hysteresis survive a restart, and the rule's last error and firing, shown by the API.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use utoipa::ToSchema;

use super::model::RuleSpec;
use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};

/// A stored rule as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rule {
    pub id: String,
    pub tenant: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
    pub created: i64,
    pub updated: i64,
    /// When an action last ran or the condition last failed to evaluate, and why.
    pub last_error: Option<String>,
    pub last_error_ts: Option<i64>,
    pub last_fired_ts: Option<i64>,
}

/// A rule's state for one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceRuleState {
    /// The rule fired and has not cleared.
    pub active: bool,
    /// Since when the condition holds without having fired yet (`for` durations).
    pub pending_since: Option<i64>,
}

/// A write the engine queues for [`RuleStore::apply`].
#[derive(Debug, Clone)]
pub enum StateWrite {
    /// A rule's state for a device, from the rule's version `version` (its `updated`).
    State {
        rule: Arc<str>,
        version: i64,
        device: Arc<str>,
        state: DeviceRuleState,
    },
    /// The rule fired at `ts`.
    Fired { rule: Arc<str>, ts: i64 },
    /// The condition failed to evaluate (shown on the rule).
    Error { rule: Arc<str>, message: String },
}

/// Rule persistence.
pub struct RuleStore {
    db: Arc<Db>,
}

const SELECT: &str =
    "SELECT id, tenant_id, spec, created_ms, updated_ms, last_error, last_error_ms,
    last_fired_ms FROM rules";

fn rule_row(r: &Row) -> rusqlite::Result<Rule> {
    let spec: String = r.get(2)?;
    let spec = serde_json::from_str(&spec).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Rule {
        id: r.get(0)?,
        tenant: r.get(1)?,
        spec,
        created: r.get(3)?,
        updated: r.get(4)?,
        last_error: r.get(5)?,
        last_error_ts: r.get(6)?,
        last_fired_ts: r.get(7)?,
    })
}

/// The rule tables (created with the store, beside db.rs's schema).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS rules (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, spec TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, last_error TEXT, last_error_ms INTEGER, last_fired_ms INTEGER,
    UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS rule_state (
    rule_id TEXT NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    active INTEGER NOT NULL, pending_since INTEGER, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (rule_id, device_id)) WITHOUT ROWID;
"#;

impl RuleStore {
    /// Rules in the platform database (creating their tables).
    pub fn new(db: Arc<Db>) -> Result<RuleStore> {
        db.conn().execute_batch(SCHEMA)?;
        db.conn().execute_batch(super::actions::SCHEMA)?;
        Ok(RuleStore { db })
    }

    /// Stores a new (already validated) rule.
    pub fn insert(&self, tenant: &str, spec: &RuleSpec) -> Result<Rule> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        self.db
            .conn()
            .execute(
                "INSERT INTO rules (id, tenant_id, name, spec, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, tenant, spec.name, to_json(spec), now],
            )
            .map_err(|e| CoreError::unique(e, format!("rule {:?}", spec.name)))?;
        self.get(&id)
    }

    /// Replaces a rule's spec; its per-device state starts over.
    pub fn update(&self, id: &str, spec: &RuleSpec) -> Result<Rule> {
        let conn = self.db.conn();
        let n = conn
            .execute(
                "UPDATE rules SET name = ?2, spec = ?3, updated_ms = ?4, last_error = NULL,
                 last_error_ms = NULL WHERE id = ?1",
                params![id, spec.name, to_json(spec), now_ms()],
            )
            .map_err(|e| CoreError::unique(e, format!("rule {:?}", spec.name)))?;
        if n == 0 {
            return Err(CoreError::NotFound(format!("rule {id:?}")));
        }
        conn.execute("DELETE FROM rule_state WHERE rule_id = ?1", [id])?;
        drop(conn);
        self.get(id)
    }

    /// A rule by id.
    pub fn get(&self, id: &str) -> Result<Rule> {
        self.db
            .conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], rule_row)
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("rule {id:?}")))
    }

    /// A page of a tenant's rules by name (all tenants when `None`).
    pub fn list(
        &self,
        tenant: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Rule>, Option<String>)> {
        let limit = limit.clamp(1, 1000);
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{SELECT} WHERE (?1 IS NULL OR tenant_id = ?1) AND name > ?2 ORDER BY name LIMIT ?3"
        ))?;
        let rows = st.query_map(
            params![tenant, cursor.unwrap_or(""), limit as i64 + 1],
            rule_row,
        )?;
        let page: Vec<Rule> = rows.collect::<rusqlite::Result<_>>()?;
        Ok(crate::accounts::paginate(page, limit, |r| {
            r.spec.name.clone()
        }))
    }

    /// Every rule (the engine's start).
    pub fn all(&self) -> Result<Vec<Rule>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(SELECT)?;
        let rows = st.query_map([], rule_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a rule with its state.
    pub fn delete(&self, id: &str) -> Result<Rule> {
        let r = self.get(id)?;
        self.db
            .conn()
            .execute("DELETE FROM rules WHERE id = ?1", [id])?;
        Ok(r)
    }

    /// Records a failure (evaluation or action) to show on the rule.
    pub fn record_error(&self, id: &str, error: &str) -> Result<()> {
        self.db.conn().execute(
            "UPDATE rules SET last_error = ?2, last_error_ms = ?3 WHERE id = ?1",
            params![id, error, now_ms()],
        )?;
        Ok(())
    }

    /// Records a firing.
    pub fn record_fired(&self, id: &str, ts: i64) -> Result<()> {
        self.db.conn().execute(
            "UPDATE rules SET last_fired_ms = ?2 WHERE id = ?1",
            params![id, ts],
        )?;
        Ok(())
    }

    /// Every stored per-device state of a rule.
    pub fn states(&self, rule: &str) -> Result<Vec<(String, DeviceRuleState)>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT device_id, active, pending_since FROM rule_state WHERE rule_id = ?1",
        )?;
        let rows = st.query_map([rule], |r| {
            Ok((
                r.get(0)?,
                DeviceRuleState {
                    active: r.get(1)?,
                    pending_since: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Applies the engine's queued writes in one transaction. A state row is written only while
    /// its rule still has the version (`updated`) that produced it, so a late write cannot
    /// resurrect the state of a rule that was changed or deleted meanwhile; a row whose device
    /// was deleted fails alone (logged), the others are kept.
    pub fn apply(&self, writes: &[StateWrite]) -> Result<()> {
        let mut conn = self.db.conn();
        let tx = conn.transaction()?;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM rule_state WHERE rule_id = ?1 AND device_id = ?2")?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO rule_state (rule_id, device_id, active, pending_since, updated_ms)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS
                   (SELECT 1 FROM rules WHERE id = ?1 AND updated_ms = ?6)
                 ON CONFLICT (rule_id, device_id) DO UPDATE SET active = excluded.active,
                 pending_since = excluded.pending_since, updated_ms = excluded.updated_ms",
            )?;
            let mut fired = tx.prepare_cached(
                "UPDATE rules SET last_fired_ms = max(coalesce(last_fired_ms, ?2), ?2)
                 WHERE id = ?1",
            )?;
            let mut error = tx.prepare_cached(
                "UPDATE rules SET last_error = ?2, last_error_ms = ?3 WHERE id = ?1",
            )?;
            let now = now_ms();
            // One error per rule and batch (the last) is enough to show.
            let mut errors = std::collections::HashMap::new();
            for w in writes {
                if let StateWrite::Error { rule, message } = w {
                    errors.insert(rule, message);
                }
            }
            for (rule, message) in errors {
                if let Err(e) = error.execute(params![&**rule, message, now]) {
                    tracing::warn!(rule = %rule, error = %e, "storing a rule error");
                }
            }
            for w in writes {
                let done = match w {
                    StateWrite::State {
                        rule,
                        device,
                        state,
                        ..
                    } if *state == DeviceRuleState::default() => delete
                        .execute(params![&**rule, &**device])
                        .map(|_| ())
                        .map_err(|e| (rule, e)),
                    StateWrite::State {
                        rule,
                        version,
                        device,
                        state,
                    } => upsert
                        .execute(params![
                            &**rule,
                            &**device,
                            state.active,
                            state.pending_since,
                            now,
                            version
                        ])
                        .map(|_| ())
                        .map_err(|e| (rule, e)),
                    StateWrite::Fired { rule, ts } => fired
                        .execute(params![&**rule, ts])
                        .map(|_| ())
                        .map_err(|e| (rule, e)),
                    StateWrite::Error { .. } => Ok(()),
                };
                if let Err((rule, e)) = done {
                    tracing::warn!(rule = %rule, error = %e, "storing rule state");
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a rule's state for a device (the default state removes the row).
    pub fn set_state(&self, rule: &str, device: &str, s: DeviceRuleState) -> Result<()> {
        let conn = self.db.conn();
        if s == DeviceRuleState::default() {
            conn.execute(
                "DELETE FROM rule_state WHERE rule_id = ?1 AND device_id = ?2",
                [rule, device],
            )?;
        } else {
            conn.execute(
                "INSERT INTO rule_state (rule_id, device_id, active, pending_since, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (rule_id, device_id) DO UPDATE SET active = excluded.active,
                 pending_since = excluded.pending_since, updated_ms = excluded.updated_ms",
                params![rule, device, s.active, s.pending_since, now_ms()],
            )?;
        }
        Ok(())
    }
}

fn to_json(spec: &RuleSpec) -> String {
    serde_json::to_string(spec).expect("a rule spec serialises")
}
