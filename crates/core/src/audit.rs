//! The audit log: who did what, when, from where, with which outcome. Written by the api
//! crate's one authorisation layer (every change, logins, credential views, RPC sent), kept in
//! `platform.db`, queryable per tenant, dropped after the configured retention.

use std::sync::Arc;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{now_ms, Db};
use crate::error::Result;

/// One audit record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub ts: i64,
    /// The tenant the action happened in (`null`: system-wide, or an unknown user's login).
    pub tenant: Option<String>,
    /// User name, API client id, or the name tried at a failed login.
    pub actor: String,
    /// `user`, `client` or `anonymous`.
    pub actor_kind: String,
    /// The caller's address.
    pub source: String,
    /// For example `POST /api/v1/devices`, `login`, `login_failed`.
    pub action: String,
    /// The request path or the resource concerned.
    pub resource: String,
    /// The HTTP status of the outcome.
    pub status: u16,
    pub details: Option<String>,
}

/// A new record (id and time are assigned).
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    pub tenant: Option<String>,
    pub actor: String,
    pub actor_kind: &'static str,
    pub source: String,
    pub action: String,
    pub resource: String,
    pub status: u16,
    pub details: Option<String>,
}

/// What to read back.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this tenant (system administrators; others always see their own tenant only).
    pub tenant: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Actions starting with this (e.g. `login`, `DELETE`).
    pub action: Option<String>,
    /// From this time (ms, inclusive).
    pub from: Option<i64>,
    /// Until this time (ms, exclusive).
    pub to: Option<i64>,
    /// Page size (1..1000, default 100).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// The audit log.
pub struct Audit {
    db: Arc<Db>,
}

impl Audit {
    /// The log in the platform database.
    pub fn new(db: Arc<Db>) -> Audit {
        Audit { db }
    }

    /// Appends a record.
    pub fn record(&self, e: NewAuditEntry) -> Result<()> {
        self.db.conn().execute(
            "INSERT INTO audit_log (ts_ms, tenant_id, actor, actor_kind, source, action,
             resource, status, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                now_ms(),
                e.tenant,
                e.actor,
                e.actor_kind,
                e.source,
                e.action,
                e.resource,
                e.status,
                e.details
            ],
        )?;
        Ok(())
    }

    /// Newest first; `next` is the cursor of the following (older) page.
    pub fn query(&self, q: &AuditQuery) -> Result<(Vec<AuditEntry>, Option<String>)> {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let before: i64 = match q.cursor.as_deref() {
            Some(c) => c.parse().map_err(|_| {
                crate::CoreError::Invalid(format!("cursor {c:?} is not one this API returned"))
            })?,
            None => i64::MAX,
        };
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT id, ts_ms, tenant_id, actor, actor_kind, source, action, resource, status,
                    details FROM audit_log
             WHERE id < ?1 AND (?2 IS NULL OR tenant_id = ?2) AND (?3 IS NULL OR actor = ?3)
               AND (?4 IS NULL OR substr(action, 1, length(?4)) = ?4)
               AND (?5 IS NULL OR ts_ms >= ?5) AND (?6 IS NULL OR ts_ms < ?6)
             ORDER BY id DESC LIMIT ?7",
        )?;
        let rows = st.query_map(
            params![
                before,
                q.tenant,
                q.actor,
                q.action,
                q.from,
                q.to,
                limit as i64 + 1
            ],
            |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    tenant: r.get(2)?,
                    actor: r.get(3)?,
                    actor_kind: r.get(4)?,
                    source: r.get(5)?,
                    action: r.get(6)?,
                    resource: r.get(7)?,
                    status: r.get(8)?,
                    details: r.get(9)?,
                })
            },
        )?;
        let page: Vec<AuditEntry> = rows.collect::<rusqlite::Result<_>>()?;
        Ok(crate::accounts::paginate(page, limit, |e| e.id.to_string()))
    }

    /// Deletes records older than `before_ms`; returns how many.
    pub fn drop_before(&self, before_ms: i64) -> Result<usize> {
        Ok(self
            .db
            .conn()
            .execute("DELETE FROM audit_log WHERE ts_ms < ?1", [before_ms])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_query_page_and_drop() {
        let audit = Audit::new(Arc::new(Db::memory().unwrap()));
        for i in 0..5 {
            audit
                .record(NewAuditEntry {
                    tenant: Some(if i % 2 == 0 { "a" } else { "b" }.into()),
                    actor: "admin".into(),
                    actor_kind: "user",
                    source: "127.0.0.1".into(),
                    action: format!("POST /api/v1/devices#{i}"),
                    resource: "/api/v1/devices".into(),
                    status: 201,
                    details: None,
                })
                .unwrap();
        }
        let q = AuditQuery {
            tenant: Some("a".into()),
            limit: Some(2),
            ..Default::default()
        };
        let (page, next) = audit.query(&q).unwrap();
        assert_eq!(page.len(), 2);
        assert!(page[0].id > page[1].id);
        let (rest, end) = audit
            .query(&AuditQuery {
                cursor: next,
                ..q.clone()
            })
            .unwrap();
        assert_eq!((rest.len(), end), (1, None));
        assert!(audit
            .query(&AuditQuery {
                cursor: Some("x".into()),
                ..Default::default()
            })
            .is_err());
        assert_eq!(audit.drop_before(now_ms() + 1).unwrap(), 5);
    }
}
