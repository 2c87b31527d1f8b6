//! Dashboards: a tenant's named grids of widgets (chart, value card, gauge, table, map, switch,
//! button, alarm list), stored as JSON in `platform.db`. The document a dashboard is exported as
//! is the one it is imported from: devices are named, not numbered, so a dashboard moves between
//! tenants and installations whose devices have the same names. Checked when saved: the grid
//! (12 columns), what each widget kind needs, sizes.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};

/// Columns of the grid.
pub const COLUMNS: u32 = 12;
/// Most widgets on one dashboard.
pub const MAX_WIDGETS: usize = 64;
/// Most dashboards per tenant.
pub const MAX_DASHBOARDS: usize = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dashboards (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, spec TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS dashboard_customers (
    dashboard_id TEXT NOT NULL REFERENCES dashboards(id) ON DELETE CASCADE,
    customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    PRIMARY KEY (dashboard_id, customer_id));
CREATE INDEX IF NOT EXISTS dashboard_customers_by_customer ON dashboard_customers (customer_id);
";

/// What a widget shows or does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WidgetKind {
    /// Time series of `keys` of `device` over `range`, live.
    Chart,
    /// The latest value of one key, live.
    Value,
    /// The latest value of one key between `min` and `max`.
    Gauge,
    /// The latest values of `keys` of `devices` (one row per device).
    Table,
    /// The positions of `devices` (latitude/longitude), live.
    Map,
    /// An on/off RPC `method` to `device` with `{"<param>": bool}`.
    Switch,
    /// A one-shot RPC `method` to `device` with `params`.
    Button,
    /// Active alarms, of `device` or of the whole tenant.
    Alarms,
}

/// One widget: its place on the grid and what it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    #[serde(rename = "type")]
    pub kind: WidgetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Column (0..11) and row of the top left corner, width (1..12) and height (1..12) in cells.
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// Device name (chart, value, gauge, switch, button; alarms: optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Device names (table, map).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Telemetry keys (chart: one or more; value, gauge: one; table: one or more).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Time range of a chart (`15m`, `1h`, `24h`, `7d`; default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Gauge bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Value unit shown after the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// RPC method (switch, button).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Switch: the parameter holding the state (default `on`); its state is read from `key`
    /// when given (`keys[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Button: the RPC's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

/// A dashboard as saved, exported and imported (an exported document also carries `id`,
/// `tenant`, `created` and `updated`, which an import ignores).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub widgets: Vec<Widget>,
    /// Ignored (present in exported documents).
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub id: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub tenant: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub created: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub updated: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub customers: Option<serde::de::IgnoredAny>,
}

/// A stored dashboard: its document with `id`, `tenant`, `created` and `updated` (written out
/// rather than flattened, so that the document's `deny_unknown_fields` does not describe it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Dashboard {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub widgets: Vec<Widget>,
    /// Customers it is shared with (ids): their users see it, read only.
    pub customers: Vec<String>,
    pub created: i64,
    pub updated: i64,
}

fn invalid(what: String) -> CoreError {
    CoreError::Invalid(what)
}

impl DashboardSpec {
    /// Everything checked before a dashboard is saved; errors name the widget.
    pub fn check(&self) -> Result<()> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(invalid("name must be 1 to 128 characters".into()));
        }
        if self.widgets.len() > MAX_WIDGETS {
            return Err(invalid(format!(
                "at most {MAX_WIDGETS} widgets, not {}",
                self.widgets.len()
            )));
        }
        for (i, w) in self.widgets.iter().enumerate() {
            w.check()
                .map_err(|e| invalid(format!("widgets[{i}]: {e}")))?;
        }
        Ok(())
    }
}

impl Widget {
    fn check(&self) -> std::result::Result<(), String> {
        if !(1..=COLUMNS).contains(&self.w) || self.x.saturating_add(self.w) > COLUMNS {
            return Err(format!(
                "x + w must fit the {COLUMNS} columns (x {}, w {})",
                self.x, self.w
            ));
        }
        if !(1..=12).contains(&self.h) || self.y > 1000 {
            return Err(format!(
                "h must be 1 to 12 and y at most 1000 (y {}, h {})",
                self.y, self.h
            ));
        }
        let text = |what: &str, s: &str, max: usize| {
            if s.trim().is_empty() || s.len() > max {
                Err(format!("{what} must be 1 to {max} characters"))
            } else {
                Ok(())
            }
        };
        if let Some(t) = &self.title {
            if t.len() > 128 {
                return Err("title must be at most 128 characters".into());
            }
        }
        for d in self.device.iter().chain(&self.devices) {
            text("a device name", d, 256)?;
        }
        for k in &self.keys {
            text("a key", k, 256)?;
        }
        if self.devices.len() > 200 || self.keys.len() > 16 {
            return Err("at most 200 devices and 16 keys per widget".into());
        }
        if let Some(r) = &self.range {
            crate::rules::model::parse_duration(r).map_err(|e| format!("range: {e}"))?;
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if !(min.is_finite() && max.is_finite() && min < max) {
                return Err("min must be below max".into());
            }
        }
        let need_device = || {
            self.device
                .as_ref()
                .map(|_| ())
                .ok_or_else(|| format!("a {} widget needs \"device\"", self.kind_name()))
        };
        let need_keys = |n: Option<usize>| match (self.keys.len(), n) {
            (0, _) => Err(format!("a {} widget needs \"keys\"", self.kind_name())),
            (k, Some(n)) if k != n => Err(format!(
                "a {} widget shows {n} key, not {k}",
                self.kind_name()
            )),
            _ => Ok(()),
        };
        match self.kind {
            WidgetKind::Chart => {
                need_device()?;
                need_keys(None)
            }
            WidgetKind::Value | WidgetKind::Gauge => {
                need_device()?;
                need_keys(Some(1))
            }
            WidgetKind::Table => {
                if self.devices.is_empty() {
                    return Err("a table widget needs \"devices\"".into());
                }
                need_keys(None)
            }
            WidgetKind::Map => {
                if self.devices.is_empty() {
                    return Err("a map widget needs \"devices\"".into());
                }
                Ok(())
            }
            WidgetKind::Switch | WidgetKind::Button => {
                need_device()?;
                match &self.method {
                    Some(m) => text("method", m, 128),
                    None => Err(format!("a {} widget needs \"method\"", self.kind_name())),
                }
            }
            WidgetKind::Alarms => Ok(()),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            WidgetKind::Chart => "chart",
            WidgetKind::Value => "value",
            WidgetKind::Gauge => "gauge",
            WidgetKind::Table => "table",
            WidgetKind::Map => "map",
            WidgetKind::Switch => "switch",
            WidgetKind::Button => "button",
            WidgetKind::Alarms => "alarms",
        }
    }
}

/// Dashboard storage.
pub struct Dashboards {
    db: Arc<Db>,
}

fn row(r: &Row) -> rusqlite::Result<Dashboard> {
    let spec: String = r.get(2)?;
    let spec = serde_json::from_str(&spec).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let spec: DashboardSpec = spec;
    Ok(Dashboard {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: spec.name,
        description: spec.description,
        widgets: spec.widgets,
        customers: r
            .get::<_, Option<String>>(5)?
            .map(|c| c.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        created: r.get(3)?,
        updated: r.get(4)?,
    })
}

const SELECT: &str = "SELECT id, tenant_id, spec, created_ms, updated_ms,
    (SELECT group_concat(customer_id, ',') FROM
        (SELECT customer_id FROM dashboard_customers c WHERE c.dashboard_id = dashboards.id
         ORDER BY customer_id))
    FROM dashboards";

impl Dashboards {
    /// Dashboards in `db` (creating the table).
    pub fn new(db: Arc<Db>) -> Result<Dashboards> {
        db.conn().execute_batch(SCHEMA)?;
        Ok(Dashboards { db })
    }

    /// Saves a new dashboard of `tenant`.
    pub fn create(&self, tenant: &str, spec: &DashboardSpec) -> Result<Dashboard> {
        spec.check()?;
        let conn = self.db.conn();
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM dashboards WHERE tenant_id = ?1",
            [tenant],
            |r| r.get(0),
        )?;
        if n as usize >= MAX_DASHBOARDS {
            return Err(invalid(format!(
                "a tenant has at most {MAX_DASHBOARDS} dashboards"
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        conn.execute(
            "INSERT INTO dashboards (id, tenant_id, name, spec, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![id, tenant, spec.name.trim(), to_json(spec), now],
        )
        .map_err(|e| CoreError::unique(e, format!("dashboard {:?}", spec.name)))?;
        drop(conn);
        self.get(&id)
    }

    /// Replaces a dashboard.
    pub fn update(&self, id: &str, spec: &DashboardSpec) -> Result<Dashboard> {
        spec.check()?;
        let n = self
            .db
            .conn()
            .execute(
                "UPDATE dashboards SET name = ?2, spec = ?3, updated_ms = ?4 WHERE id = ?1",
                params![id, spec.name.trim(), to_json(spec), now_ms()],
            )
            .map_err(|e| CoreError::unique(e, format!("dashboard {:?}", spec.name)))?;
        if n == 0 {
            return Err(CoreError::NotFound(format!("dashboard {id:?}")));
        }
        self.get(id)
    }

    /// A dashboard by id.
    pub fn get(&self, id: &str) -> Result<Dashboard> {
        self.db
            .conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row)
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("dashboard {id:?}")))
    }

    /// Dashboards by name: of one tenant, or of all.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Dashboard>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{SELECT} WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY name, id"
        ))?;
        let rows = st.query_map([tenant], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The dashboards shared with `customer`, by name.
    pub fn list_for_customer(&self, customer: &str) -> Result<Vec<Dashboard>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{SELECT} WHERE id IN (SELECT dashboard_id FROM dashboard_customers
                                   WHERE customer_id = ?1) ORDER BY name, id"
        ))?;
        let rows = st.query_map([customer], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether dashboard `id` is shared with `customer`.
    pub fn shared_with(&self, id: &str, customer: &str) -> Result<bool> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT 1 FROM dashboard_customers WHERE dashboard_id = ?1 AND customer_id = ?2",
                [id, customer],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Shares dashboard `id` with `customer` (of the same tenant: the caller checks); sharing
    /// twice is no change.
    pub fn share(&self, id: &str, customer: &str) -> Result<Dashboard> {
        self.get(id)?;
        self.db.conn().execute(
            "INSERT OR IGNORE INTO dashboard_customers (dashboard_id, customer_id) VALUES (?1, ?2)",
            [id, customer],
        )?;
        self.get(id)
    }

    /// Stops sharing dashboard `id` with `customer`.
    pub fn unshare(&self, id: &str, customer: &str) -> Result<Dashboard> {
        let n = self.db.conn().execute(
            "DELETE FROM dashboard_customers WHERE dashboard_id = ?1 AND customer_id = ?2",
            [id, customer],
        )?;
        if n == 0 {
            self.get(id)?;
            return Err(CoreError::NotFound(format!(
                "dashboard {id:?} is not shared with customer {customer:?}"
            )));
        }
        self.get(id)
    }

    /// Deletes a dashboard.
    pub fn delete(&self, id: &str) -> Result<Dashboard> {
        let d = self.get(id)?;
        self.db
            .conn()
            .execute("DELETE FROM dashboards WHERE id = ?1", [id])?;
        Ok(d)
    }
}

fn to_json(spec: &DashboardSpec) -> String {
    let mut spec = spec.clone();
    spec.name = spec.name.trim().to_string();
    serde_json::to_string(&spec).expect("a dashboard serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> std::result::Result<DashboardSpec, String> {
        let s: DashboardSpec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        s.check().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn widgets_are_checked_and_errors_name_them() {
        let ok = json!({"name": "Farm", "widgets": [
            {"type": "chart", "x": 0, "y": 0, "w": 8, "h": 4, "device": "soil-1", "keys": ["moisture"]},
            {"type": "switch", "x": 8, "y": 0, "w": 4, "h": 2, "device": "pump-1", "method": "setPump"},
            {"type": "alarms", "x": 0, "y": 4, "w": 12, "h": 3}
        ]});
        spec(ok).unwrap();
        let bad = |w: serde_json::Value| spec(json!({"name": "x", "widgets": [w]})).unwrap_err();
        let e = bad(
            json!({"type": "chart", "x": 6, "y": 0, "w": 8, "h": 4, "device": "d", "keys": ["k"]}),
        );
        assert!(e.contains("widgets[0]") && e.contains("12 columns"), "{e}");
        let e = bad(json!({"type": "value", "x": 0, "y": 0, "w": 2, "h": 2, "device": "d"}));
        assert!(e.contains("needs \"keys\""), "{e}");
        let e = bad(json!({"type": "button", "x": 0, "y": 0, "w": 2, "h": 2, "device": "d"}));
        assert!(e.contains("needs \"method\""), "{e}");
        let e = bad(
            json!({"type": "gauge", "x": 0, "y": 0, "w": 2, "h": 2, "device": "d",
            "keys": ["k"], "min": 5.0, "max": 1.0}),
        );
        assert!(e.contains("min must be below max"), "{e}");
        let e = bad(json!({"type": "pie", "x": 0, "y": 0, "w": 2, "h": 2}));
        assert!(e.contains("unknown variant"), "{e}");
        let e = bad(json!({"type": "alarms", "x": 0, "y": 0, "w": 2, "h": 2, "colour": "red"}));
        assert!(e.contains("unknown field"), "{e}");
        assert!(spec(json!({"name": " ", "widgets": []})).is_err());
        let e = bad(json!({"type": "alarms", "x": u32::MAX, "y": 0, "w": 2, "h": 2}));
        assert!(e.contains("columns"), "no overflow: {e}");
    }

    /// A store over a fresh database with the default tenant (its id).
    fn store() -> (Arc<Db>, String, Dashboards) {
        let db = Arc::new(Db::memory().unwrap());
        crate::registry::Registry::new(db.clone())
            .ensure_default()
            .unwrap();
        let tenant: String = db
            .conn()
            .query_row("SELECT id FROM tenants", [], |r| r.get(0))
            .unwrap();
        (db.clone(), tenant, Dashboards::new(db).unwrap())
    }

    #[test]
    fn an_export_imports_as_it_is() {
        let (_db, tenant, ds) = store();
        let s = spec(json!({"name": "Ward", "widgets": [
            {"type": "gauge", "x": 0, "y": 0, "w": 3, "h": 3, "device": "bed-1", "keys": ["hr"],
             "min": 30.0, "max": 200.0, "unit": "bpm"}]}))
        .unwrap();
        let saved = ds.create(&tenant, &s).unwrap();
        let exported = serde_json::to_value(&saved).unwrap();
        assert_eq!(exported["widgets"][0]["unit"], "bpm");
        let mut again: DashboardSpec = serde_json::from_value(exported).unwrap();
        assert!(matches!(
            ds.create(&tenant, &again),
            Err(CoreError::AlreadyExists(_))
        ));
        again.name = "Ward 2".into();
        let copy = ds.create(&tenant, &again).unwrap();
        assert_eq!(copy.widgets, saved.widgets);
        assert_eq!(ds.list(Some(&tenant)).unwrap().len(), 2);
        ds.delete(&copy.id).unwrap();
        assert!(matches!(ds.get(&copy.id), Err(CoreError::NotFound(_))));
    }

    #[test]
    fn dashboards_are_shared_with_customers() {
        let (db, tenant, ds) = store();
        for c in ["c1", "c2"] {
            db.conn()
                .execute(
                    "INSERT INTO customers (id, tenant_id, name, created_ms) VALUES (?1, ?2, ?1, 0)",
                    [c, tenant.as_str()],
                )
                .unwrap();
        }
        let a = ds
            .create(&tenant, &spec(json!({"name": "A"})).unwrap())
            .unwrap();
        let b = ds
            .create(&tenant, &spec(json!({"name": "B"})).unwrap())
            .unwrap();
        assert!(a.customers.is_empty());
        assert_eq!(ds.share(&a.id, "c2").unwrap().customers, ["c2"]);
        assert_eq!(ds.share(&a.id, "c1").unwrap().customers, ["c1", "c2"]);
        assert_eq!(ds.share(&a.id, "c1").unwrap().customers, ["c1", "c2"]);
        ds.share(&b.id, "c1").unwrap();
        let names = |c| -> Vec<String> {
            let list = ds.list_for_customer(c).unwrap();
            list.into_iter().map(|d| d.name).collect()
        };
        assert_eq!(names("c1"), ["A", "B"]);
        assert_eq!(names("c2"), ["A"]);
        assert!(ds.shared_with(&b.id, "c1").unwrap() && !ds.shared_with(&b.id, "c2").unwrap());
        // An exported document with its customers imports (they are not imported).
        let exported = serde_json::to_value(ds.get(&a.id).unwrap()).unwrap();
        let mut again: DashboardSpec = serde_json::from_value(exported).unwrap();
        again.name = "A copy".into();
        assert!(ds.create(&tenant, &again).unwrap().customers.is_empty());
        assert_eq!(ds.unshare(&a.id, "c2").unwrap().customers, ["c1"]);
        assert!(matches!(
            ds.unshare(&a.id, "c2"),
            Err(CoreError::NotFound(_))
        ));
        assert!(matches!(
            ds.share("nope", "c1"),
            Err(CoreError::NotFound(_))
        ));
        // A customer removed takes its shares with it.
        db.conn()
            .execute("DELETE FROM customers WHERE id = 'c1'", [])
            .unwrap();
        assert!(names("c1").is_empty());
        assert!(ds.get(&a.id).unwrap().customers.is_empty());
    }
}
