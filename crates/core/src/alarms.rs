//! Alarms, as ThingsBoard users know them: raised on a device (the originator) with a type and a
//! severity, by the rule engine or by hand; acknowledged, assigned and commented on by people;
//! cleared by the rule engine or by people. While an alarm is active it is the only one of its
//! type on its device (a partial unique index), so raising again updates it (severity, details,
//! end time) instead of adding a duplicate; once cleared it is history, and the next raise
//! creates a new alarm.
//!
//! Status is the pair (cleared, acknowledged): `ACTIVE_UNACK`, `ACTIVE_ACK`, `CLEARED_UNACK`,
//! `CLEARED_ACK`. An alarm's customer is its device's customer *now* (a join, not a copy): an
//! alarm follows its device to a new owner. Rows live in `platform.db` (`alarms`,
//! `alarm_comments`); every raise, update, acknowledgement, clear and assignment is published on
//! the bus as [`EventKind::Alarm`] for the live WebSocket.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::bus::{Bus, Event, EventKind};
use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};

/// How bad it is, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Critical,
    Major,
    Minor,
    Warning,
    Indeterminate,
}

impl Severity {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Major => "MAJOR",
            Severity::Minor => "MINOR",
            Severity::Warning => "WARNING",
            Severity::Indeterminate => "INDETERMINATE",
        }
    }

    /// Parses a severity name, in any case.
    pub fn parse(s: &str) -> Result<Severity> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "CRITICAL" => Severity::Critical,
            "MAJOR" => Severity::Major,
            "MINOR" => Severity::Minor,
            "WARNING" => Severity::Warning,
            "INDETERMINATE" => Severity::Indeterminate,
            _ => {
                return Err(CoreError::Invalid(format!(
                    "unknown severity {s:?} (CRITICAL, MAJOR, MINOR, WARNING or INDETERMINATE)"
                )))
            }
        })
    }
}

impl std::str::FromStr for Severity {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Severity> {
        Severity::parse(s)
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Severity, D::Error> {
        let s = String::deserialize(d)?;
        Severity::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where an alarm stands: active or cleared, acknowledged or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmStatus {
    ActiveUnack,
    ActiveAck,
    ClearedUnack,
    ClearedAck,
}

impl AlarmStatus {
    /// The status of a (cleared, acknowledged) pair.
    pub fn of(cleared: bool, acknowledged: bool) -> AlarmStatus {
        match (cleared, acknowledged) {
            (false, false) => AlarmStatus::ActiveUnack,
            (false, true) => AlarmStatus::ActiveAck,
            (true, false) => AlarmStatus::ClearedUnack,
            (true, true) => AlarmStatus::ClearedAck,
        }
    }
}

/// A status filter: any combination of cleared or not and acknowledged or not (`None`: either).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusFilter {
    pub cleared: Option<bool>,
    pub acknowledged: Option<bool>,
}

impl StatusFilter {
    /// Parses `any`, `active`, `cleared`, `ack`, `unack` or one status (`ACTIVE_UNACK`, ...),
    /// in any case.
    pub fn parse(s: &str) -> Result<StatusFilter> {
        let f = |cleared, acknowledged| StatusFilter {
            cleared,
            acknowledged,
        };
        Ok(match s.to_ascii_lowercase().as_str() {
            "any" => f(None, None),
            "active" => f(Some(false), None),
            "cleared" => f(Some(true), None),
            "ack" => f(None, Some(true)),
            "unack" => f(None, Some(false)),
            "active_unack" => f(Some(false), Some(false)),
            "active_ack" => f(Some(false), Some(true)),
            "cleared_unack" => f(Some(true), Some(false)),
            "cleared_ack" => f(Some(true), Some(true)),
            _ => {
                return Err(CoreError::Invalid(format!(
                    "unknown alarm status {s:?} (active, cleared, ack, unack, any, or one of \
                     ACTIVE_UNACK, ACTIVE_ACK, CLEARED_UNACK, CLEARED_ACK)"
                )))
            }
        })
    }
}

/// An alarm as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Alarm {
    pub id: i64,
    /// What is wrong, e.g. `High temperature`: one active alarm per device and type.
    #[serde(rename = "type")]
    pub alarm_type: String,
    pub severity: Severity,
    pub status: AlarmStatus,
    pub acknowledged: bool,
    pub cleared: bool,
    /// The device that caused it (id).
    pub originator: String,
    pub originator_name: String,
    pub tenant: String,
    /// The device's customer now (an alarm follows its device).
    pub customer: Option<String>,
    /// When it was raised (ms since the epoch).
    pub start_ts: i64,
    /// When it was last raised again (the condition's latest report).
    pub end_ts: i64,
    pub ack_ts: Option<i64>,
    pub clear_ts: Option<i64>,
    /// Whatever the raiser attached (JSON).
    pub details: Value,
    /// The user it is assigned to (id).
    pub assignee: Option<String>,
}

/// A comment on an alarm. System comments record who acknowledged or cleared it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlarmComment {
    pub id: i64,
    pub alarm: i64,
    /// Milliseconds since the epoch.
    pub ts: i64,
    /// User name or API client id.
    pub author: String,
    pub text: String,
    /// Written by the platform (acknowledged, cleared), not typed by someone.
    pub system: bool,
}

/// What to list. `limit` 0 means the default (100).
#[derive(Debug, Clone, Default)]
pub struct AlarmQuery {
    /// Only this tenant (`None`: every tenant).
    pub tenant: Option<String>,
    /// Only alarms of devices this customer owns now.
    pub customer: Option<String>,
    /// Only this device's (id).
    pub device: Option<String>,
    pub status: StatusFilter,
    pub severity: Option<Severity>,
    pub alarm_type: Option<String>,
    pub limit: usize,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

const SELECT: &str = "SELECT a.id, a.type, a.severity, a.cleared, a.acknowledged, a.originator_id,
    d.name, a.tenant_id, d.customer_id, a.start_ms, a.end_ms, a.ack_ms, a.clear_ms, a.details,
    a.assignee FROM alarms a JOIN devices d ON d.id = a.originator_id";

const MAX_TYPE: usize = 255;
const MAX_COMMENT: usize = 4096;

fn alarm_row(r: &Row) -> rusqlite::Result<Alarm> {
    let severity: String = r.get(2)?;
    let (cleared, acknowledged): (bool, bool) = (r.get(3)?, r.get(4)?);
    let details: String = r.get(13)?;
    Ok(Alarm {
        id: r.get(0)?,
        alarm_type: r.get(1)?,
        severity: Severity::parse(&severity).unwrap_or(Severity::Indeterminate),
        status: AlarmStatus::of(cleared, acknowledged),
        acknowledged,
        cleared,
        originator: r.get(5)?,
        originator_name: r.get(6)?,
        tenant: r.get(7)?,
        customer: r.get(8)?,
        start_ts: r.get(9)?,
        end_ts: r.get(10)?,
        ack_ts: r.get(11)?,
        clear_ts: r.get(12)?,
        details: serde_json::from_str(&details).unwrap_or(Value::Null),
        assignee: r.get(14)?,
    })
}

fn comment_row(r: &Row) -> rusqlite::Result<AlarmComment> {
    Ok(AlarmComment {
        id: r.get(0)?,
        alarm: r.get(1)?,
        ts: r.get(2)?,
        author: r.get(3)?,
        text: r.get(4)?,
        system: r.get(5)?,
    })
}

fn load(conn: &Connection, id: i64) -> Result<Alarm> {
    conn.query_row(&format!("{SELECT} WHERE a.id = ?1"), [id], alarm_row)
        .optional()?
        .ok_or_else(|| CoreError::NotFound(format!("alarm {id}")))
}

fn check_type(alarm_type: &str) -> Result<()> {
    if alarm_type.trim().is_empty() || alarm_type.len() > MAX_TYPE {
        return Err(CoreError::Invalid(format!(
            "an alarm type is 1 to {MAX_TYPE} characters"
        )));
    }
    Ok(())
}

/// `None` for JSON null (keep what is stored), else the JSON text.
fn details_text(details: &Value) -> Option<String> {
    (!details.is_null()).then(|| details.to_string())
}

fn add_comment(
    conn: &Connection,
    alarm: i64,
    author: &str,
    text: &str,
    system: bool,
) -> Result<AlarmComment> {
    let ts = now_ms();
    conn.execute(
        "INSERT INTO alarm_comments (alarm_id, ts_ms, author, text, system)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![alarm, ts, author, text, system],
    )?;
    Ok(AlarmComment {
        id: conn.last_insert_rowid(),
        alarm,
        ts,
        author: author.to_string(),
        text: text.to_string(),
        system,
    })
}

/// The alarm service over the platform database; changes are announced on the bus.
pub struct Alarms {
    db: Arc<Db>,
    bus: Bus,
}

impl Alarms {
    /// Alarms in `db`, announced on `bus`.
    pub fn new(db: Arc<Db>, bus: Bus) -> Alarms {
        Alarms { db, bus }
    }

    fn publish(&self, alarm: &Alarm) {
        self.bus.publish(Event {
            tenant: alarm.tenant.as_str().into(),
            device: alarm.originator.as_str().into(),
            ts: now_ms(),
            kind: EventKind::Alarm(Arc::new(alarm.clone())),
        });
    }

    /// Raises an alarm of `alarm_type` on a device of `tenant`: creates it, or updates the
    /// active one (severity, end time, and details unless `details` is null). Returns the alarm
    /// and whether it was created. Creation and a severity change are changes of the alarm
    /// (its update time moves); a repeated raise only refreshes the end time and details.
    /// Either way the alarm is published on the bus.
    pub fn raise(
        &self,
        tenant: &str,
        device_id: &str,
        alarm_type: &str,
        severity: Severity,
        details: Value,
    ) -> Result<(Alarm, bool)> {
        check_type(alarm_type)?;
        let now = now_ms();
        let details = details_text(&details);
        let (alarm, created) = {
            let mut conn = self.db.conn();
            let tx = conn.transaction()?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT tenant_id FROM devices WHERE id = ?1",
                    [device_id],
                    |r| r.get(0),
                )
                .optional()?;
            if owner.as_deref() != Some(tenant) {
                return Err(CoreError::NotFound(format!("device {device_id:?}")));
            }
            let active: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, severity FROM alarms
                     WHERE originator_id = ?1 AND type = ?2 AND cleared = 0",
                    [device_id, alarm_type],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (id, created) = match active {
                Some((id, old)) => {
                    let changed = old != severity.as_str();
                    tx.execute(
                        "UPDATE alarms SET severity = ?2, details = coalesce(?3, details),
                         end_ms = ?4, updated_ms = CASE WHEN ?5 THEN ?4 ELSE updated_ms END
                         WHERE id = ?1",
                        params![id, severity.as_str(), details, now, changed],
                    )?;
                    (id, false)
                }
                None => {
                    tx.execute(
                        "INSERT INTO alarms (tenant_id, originator_id, type, severity, start_ms,
                         end_ms, details, created_ms, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5, coalesce(?6, 'null'), ?5, ?5)",
                        params![
                            tenant,
                            device_id,
                            alarm_type,
                            severity.as_str(),
                            now,
                            details
                        ],
                    )?;
                    (tx.last_insert_rowid(), true)
                }
            };
            let alarm = load(&tx, id)?;
            tx.commit()?;
            (alarm, created)
        };
        self.publish(&alarm);
        Ok((alarm, created))
    }

    /// Clears the device's active alarm of `alarm_type` (replacing its details if given);
    /// `None` when there is none.
    pub fn clear(
        &self,
        device_id: &str,
        alarm_type: &str,
        details: Option<Value>,
    ) -> Result<Option<Alarm>> {
        let details = details.as_ref().and_then(details_text);
        let alarm = {
            let conn = self.db.conn();
            let now = now_ms();
            let id: Option<i64> = conn
                .query_row(
                    "UPDATE alarms SET cleared = 1, clear_ms = ?3, updated_ms = ?3,
                     details = coalesce(?4, details)
                     WHERE originator_id = ?1 AND type = ?2 AND cleared = 0 RETURNING id",
                    params![device_id, alarm_type, now, details],
                    |r| r.get(0),
                )
                .optional()?;
            match id {
                Some(id) => load(&conn, id)?,
                None => return Ok(None),
            }
        };
        self.publish(&alarm);
        Ok(Some(alarm))
    }

    /// Clears an alarm by hand (`by`: who, kept as a system comment). Clearing a cleared alarm
    /// changes nothing.
    pub fn clear_by_id(&self, id: i64, by: &str) -> Result<Alarm> {
        self.transition(id, "cleared", by, "Alarm cleared")
    }

    /// Acknowledges an alarm (`by`: who, kept as a system comment). Acknowledging twice
    /// changes nothing.
    pub fn ack(&self, id: i64, by: &str) -> Result<Alarm> {
        self.transition(id, "acknowledged", by, "Alarm acknowledged")
    }

    /// Sets `flag` (`cleared` or `acknowledged`) and its time, with a system comment.
    fn transition(&self, id: i64, flag: &str, by: &str, note: &str) -> Result<Alarm> {
        let time = if flag == "cleared" {
            "clear_ms"
        } else {
            "ack_ms"
        };
        let alarm = {
            let mut conn = self.db.conn();
            let tx = conn.transaction()?;
            let now = now_ms();
            let changed = tx.execute(
                &format!(
                    "UPDATE alarms SET {flag} = 1, {time} = ?2, updated_ms = ?2
                     WHERE id = ?1 AND {flag} = 0"
                ),
                params![id, now],
            )?;
            if changed == 0 {
                return load(&tx, id);
            }
            add_comment(&tx, id, by, note, true)?;
            let alarm = load(&tx, id)?;
            tx.commit()?;
            alarm
        };
        self.publish(&alarm);
        Ok(alarm)
    }

    /// Assigns an alarm to a user of its tenant (a customer's user only when the device is that
    /// customer's), or unassigns it (`None`).
    pub fn assign(&self, id: i64, user: Option<&str>) -> Result<Alarm> {
        let alarm = {
            let conn = self.db.conn();
            let alarm = load(&conn, id)?;
            if let Some(user) = user {
                let found: Option<(Option<String>, Option<String>)> = conn
                    .query_row(
                        "SELECT tenant_id, customer_id FROM users WHERE id = ?1",
                        [user],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                match found {
                    Some((Some(t), customer)) if t == alarm.tenant => {
                        if customer.is_some() && customer != alarm.customer {
                            return Err(CoreError::Invalid(format!(
                                "user {user:?} belongs to a customer that does not own the \
                                 alarm's device"
                            )));
                        }
                    }
                    _ => return Err(CoreError::NotFound(format!("user {user:?}"))),
                }
            }
            conn.execute(
                "UPDATE alarms SET assignee = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id, user, now_ms()],
            )?;
            load(&conn, id)?
        };
        self.publish(&alarm);
        Ok(alarm)
    }

    /// Adds a comment (1 to 4096 characters).
    pub fn comment(&self, id: i64, author: &str, text: &str) -> Result<AlarmComment> {
        if text.trim().is_empty() || text.chars().count() > MAX_COMMENT {
            return Err(CoreError::Invalid(format!(
                "a comment is 1 to {MAX_COMMENT} characters"
            )));
        }
        let conn = self.db.conn();
        load(&conn, id)?;
        add_comment(&conn, id, author, text, false)
    }

    /// An alarm's comments, oldest first.
    pub fn comments(&self, id: i64) -> Result<Vec<AlarmComment>> {
        let conn = self.db.conn();
        load(&conn, id)?;
        let mut st = conn.prepare(
            "SELECT id, alarm_id, ts_ms, author, text, system FROM alarm_comments
             WHERE alarm_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([id], comment_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// An alarm by id (any tenant: callers check `alarm.tenant` and `alarm.customer`).
    pub fn get(&self, id: i64) -> Result<Alarm> {
        load(&self.db.conn(), id)
    }

    /// A page of alarms, newest first; returns the page and the next cursor (keyset: pages
    /// stay consistent while alarms are raised).
    pub fn list(&self, q: &AlarmQuery) -> Result<(Vec<Alarm>, Option<String>)> {
        let limit = if q.limit == 0 { 100 } else { q.limit.min(1000) };
        let before: i64 = match q.cursor.as_deref() {
            Some(c) => c.parse().map_err(|_| {
                CoreError::Invalid(format!("cursor {c:?} is not one this API returned"))
            })?,
            None => i64::MAX,
        };
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{SELECT} WHERE a.id < ?1 AND (?2 IS NULL OR a.tenant_id = ?2)
             AND (?3 IS NULL OR d.customer_id = ?3) AND (?4 IS NULL OR a.originator_id = ?4)
             AND (?5 IS NULL OR a.cleared = ?5) AND (?6 IS NULL OR a.acknowledged = ?6)
             AND (?7 IS NULL OR a.severity = ?7) AND (?8 IS NULL OR a.type = ?8)
             ORDER BY a.id DESC LIMIT ?9"
        ))?;
        let rows = st.query_map(
            params![
                before,
                q.tenant,
                q.customer,
                q.device,
                q.status.cleared,
                q.status.acknowledged,
                q.severity.map(Severity::as_str),
                q.alarm_type,
                limit as i64 + 1
            ],
            alarm_row,
        )?;
        let page: Vec<Alarm> = rows.collect::<rusqlite::Result<_>>()?;
        Ok(crate::accounts::paginate(page, limit, |a| a.id.to_string()))
    }

    /// Deletes an alarm with its comments.
    pub fn delete(&self, id: i64) -> Result<Alarm> {
        let conn = self.db.conn();
        let alarm = load(&conn, id)?;
        conn.execute("DELETE FROM alarms WHERE id = ?1", [id])?;
        Ok(alarm)
    }
}

#[cfg(test)]
mod tests;
