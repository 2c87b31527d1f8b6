//! What conditions can look up besides the device: external data sources (an HTTP JSON
//! endpoint per tenant, polled on a schedule, cached; `external("weather").rain_mm`) and
//! geofences (polygons and circles per tenant; `inside("depot")` with the device's
//! `latitude`/`longitude`). Both are rows in `platform.db` with an in-memory copy that the
//! engine reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use geo::{Contains, Distance, Haversine, Intersects};
use parking_lot::RwLock;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};

/// What the condition functions read.
pub trait Lookups: Send + Sync {
    /// A source's last fetched JSON (`Err`: unknown, or nothing fetched yet).
    fn external(&self, tenant: &str, name: &str) -> std::result::Result<Json, String>;
    /// Whether a point is inside a geofence (`Err`: no such geofence).
    fn inside(
        &self,
        tenant: &str,
        name: &str,
        lon: f64,
        lat: f64,
    ) -> std::result::Result<bool, String>;
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, url TEXT NOT NULL, every_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL,
    last_value TEXT, last_fetch_ms INTEGER, last_error TEXT, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS geofences (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, shape TEXT NOT NULL, created_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, name));
"#;

/// A new external source.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSource {
    pub name: String,
    /// An `http://` or `https://` URL answering JSON.
    pub url: String,
    /// How often to fetch it (`"10m"`; at least 1 s).
    pub every: String,
}

/// An external source as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Source {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub url: String,
    pub every_ms: i64,
    pub created: i64,
    /// The last fetched JSON.
    pub last_value: Option<Json>,
    pub last_fetch_ts: Option<i64>,
    pub last_error: Option<String>,
}

/// A geofence's shape: `{"polygon": [[lon, lat], ...]}` or
/// `{"circle": {"lon", "lat", "radius_m"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    /// Longitude/latitude pairs (at least 3; closed automatically).
    Polygon(Vec<[f64; 2]>),
    Circle {
        lon: f64,
        lat: f64,
        radius_m: f64,
    },
}

/// A new geofence.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGeofence {
    pub name: String,
    #[serde(flatten)]
    pub shape: Shape,
}

/// A geofence as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Geofence {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(flatten)]
    pub shape: Shape,
    pub created: i64,
}

enum Fence {
    Polygon(geo::Polygon<f64>),
    Circle(geo::Point<f64>, f64),
}

impl Fence {
    fn of(shape: &Shape) -> Fence {
        match shape {
            Shape::Polygon(pts) => Fence::Polygon(geo::Polygon::new(
                geo::LineString::from(pts.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>()),
                vec![],
            )),
            Shape::Circle { lon, lat, radius_m } => {
                Fence::Circle(geo::Point::new(*lon, *lat), *radius_m)
            }
        }
    }

    fn contains(&self, p: geo::Point<f64>) -> bool {
        match self {
            // On the edge counts as inside.
            Fence::Polygon(poly) => poly.contains(&p) || poly.intersects(&p),
            Fence::Circle(c, r) => Haversine.distance(*c, p) <= *r,
        }
    }
}

fn check_shape(s: &Shape) -> Result<()> {
    let bad = |m: &str| Err(CoreError::Invalid(m.to_string()));
    let lonlat =
        |lon: f64, lat: f64| (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat);
    match s {
        Shape::Polygon(pts) if pts.len() < 3 => bad("a polygon needs at least 3 points"),
        Shape::Polygon(pts) if pts.iter().any(|p| !lonlat(p[0], p[1])) => {
            bad("polygon points are [longitude, latitude] within -180..180, -90..90")
        }
        Shape::Circle { lon, lat, .. } if !lonlat(*lon, *lat) => {
            bad("circle centre: lon within -180..180, lat within -90..90")
        }
        Shape::Circle { radius_m, .. } if !(*radius_m > 0.0 && radius_m.is_finite()) => {
            bad("radius_m must be a positive number")
        }
        _ => Ok(()),
    }
}

type Cache<T> = RwLock<HashMap<(String, String), T>>;

/// Sources and geofences with their in-memory copies.
pub struct RuleLookups {
    db: Arc<Db>,
    values: Cache<std::result::Result<Json, String>>,
    fences: Cache<Arc<Fence>>,
}

fn source_row(r: &Row) -> rusqlite::Result<Source> {
    let v: Option<String> = r.get(6)?;
    Ok(Source {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        url: r.get(3)?,
        every_ms: r.get(4)?,
        created: r.get(5)?,
        last_value: v.and_then(|v| serde_json::from_str(&v).ok()),
        last_fetch_ts: r.get(7)?,
        last_error: r.get(8)?,
    })
}

const SOURCE_SELECT: &str = "SELECT id, tenant_id, name, url, every_ms, created_ms, last_value,
    last_fetch_ms, last_error FROM sources";

fn geofence_row(r: &Row) -> rusqlite::Result<Geofence> {
    let shape: String = r.get(3)?;
    let shape = serde_json::from_str(&shape).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Geofence {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        shape,
        created: r.get(4)?,
    })
}

impl RuleLookups {
    /// Opens the tables and loads the cached values and shapes.
    pub fn open(db: Arc<Db>) -> Result<RuleLookups> {
        db.conn().execute_batch(SCHEMA)?;
        let l = RuleLookups {
            db,
            values: Default::default(),
            fences: Default::default(),
        };
        for s in l.sources(None)? {
            if let Some(v) = s.last_value {
                l.values.write().insert((s.tenant, s.name), Ok(v));
            }
        }
        for g in l.geofences(None)? {
            l.fences
                .write()
                .insert((g.tenant, g.name), Arc::new(Fence::of(&g.shape)));
        }
        Ok(l)
    }

    /// Adds a source of `tenant`.
    pub fn create_source(&self, tenant: &str, new: NewSource) -> Result<Source> {
        crate::registry::check_name("source", &new.name)?;
        if !(new.url.starts_with("http://") || new.url.starts_with("https://")) {
            return Err(CoreError::Invalid("url must be http:// or https://".into()));
        }
        let every = super::model::parse_duration(&new.every)?.as_millis() as i64;
        if every < 1000 {
            return Err(CoreError::Invalid("every must be at least 1s".into()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.db
            .conn()
            .execute(
                "INSERT INTO sources (id, tenant_id, name, url, every_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, tenant, new.name, new.url, every, now_ms()],
            )
            .map_err(|e| CoreError::unique(e, format!("source {:?}", new.name)))?;
        self.source(&id)
    }

    /// A source by id.
    pub fn source(&self, id: &str) -> Result<Source> {
        self.db
            .conn()
            .query_row(&format!("{SOURCE_SELECT} WHERE id = ?1"), [id], source_row)
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("source {id:?}")))
    }

    /// Sources of a tenant (all with `None`), by name.
    pub fn sources(&self, tenant: Option<&str>) -> Result<Vec<Source>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{SOURCE_SELECT} WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY name"
        ))?;
        let rows = st.query_map([tenant], source_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a source.
    pub fn delete_source(&self, id: &str) -> Result<Source> {
        let s = self.source(id)?;
        self.db
            .conn()
            .execute("DELETE FROM sources WHERE id = ?1", [id])?;
        self.values
            .write()
            .remove(&(s.tenant.clone(), s.name.clone()));
        Ok(s)
    }

    /// Fetches every source that is due; returns how many were fetched.
    pub async fn poll_due(&self) -> Result<usize> {
        let now = now_ms();
        let due: Vec<Source> = self
            .sources(None)?
            .into_iter()
            .filter(|s| s.last_fetch_ts.is_none_or(|t| now - t >= s.every_ms))
            .collect();
        let n = due.len();
        for s in due {
            let url = s.url.clone();
            let got = tokio::task::spawn_blocking(move || fetch(&url))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let now = now_ms();
            match &got {
                Ok(v) => {
                    self.db.conn().execute(
                        "UPDATE sources SET last_value = ?2, last_fetch_ms = ?3, last_error = NULL
                         WHERE id = ?1",
                        params![s.id, v.to_string(), now],
                    )?;
                }
                Err(e) => {
                    tracing::warn!(source = %s.name, error = %e, "fetching an external source");
                    self.db.conn().execute(
                        "UPDATE sources SET last_fetch_ms = ?2, last_error = ?3 WHERE id = ?1",
                        params![s.id, now, e],
                    )?;
                }
            }
            // A failed fetch keeps the last good value.
            if let Ok(v) = got {
                self.values.write().insert((s.tenant, s.name), Ok(v));
            }
        }
        Ok(n)
    }

    /// Polls sources until `stop` changes.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.poll_due().await {
                tracing::warn!(error = %e, "polling external sources");
            }
        }
    }

    /// Adds a geofence of `tenant`.
    pub fn create_geofence(&self, tenant: &str, new: NewGeofence) -> Result<Geofence> {
        crate::registry::check_name("geofence", &new.name)?;
        check_shape(&new.shape)?;
        let id = uuid::Uuid::new_v4().to_string();
        self.db
            .conn()
            .execute(
                "INSERT INTO geofences (id, tenant_id, name, shape, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, tenant, new.name, serde_json::to_string(&new.shape).expect("a shape serialises"), now_ms()],
            )
            .map_err(|e| CoreError::unique(e, format!("geofence {:?}", new.name)))?;
        self.fences.write().insert(
            (tenant.to_string(), new.name.clone()),
            Arc::new(Fence::of(&new.shape)),
        );
        self.geofence(&id)
    }

    /// A geofence by id.
    pub fn geofence(&self, id: &str) -> Result<Geofence> {
        self.db
            .conn()
            .query_row(
                "SELECT id, tenant_id, name, shape, created_ms FROM geofences WHERE id = ?1",
                [id],
                geofence_row,
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("geofence {id:?}")))
    }

    /// Geofences of a tenant (all with `None`), by name.
    pub fn geofences(&self, tenant: Option<&str>) -> Result<Vec<Geofence>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT id, tenant_id, name, shape, created_ms FROM geofences
             WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY name",
        )?;
        let rows = st.query_map([tenant], geofence_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a geofence.
    pub fn delete_geofence(&self, id: &str) -> Result<Geofence> {
        let g = self.geofence(id)?;
        self.db
            .conn()
            .execute("DELETE FROM geofences WHERE id = ?1", [id])?;
        self.fences
            .write()
            .remove(&(g.tenant.clone(), g.name.clone()));
        Ok(g)
    }
}

impl Lookups for RuleLookups {
    fn external(&self, tenant: &str, name: &str) -> std::result::Result<Json, String> {
        match self
            .values
            .read()
            .get(&(tenant.to_string(), name.to_string()))
        {
            Some(v) => v.clone(),
            None => Err(format!(
                "external source {name:?} is unknown or has no data yet"
            )),
        }
    }

    fn inside(
        &self,
        tenant: &str,
        name: &str,
        lon: f64,
        lat: f64,
    ) -> std::result::Result<bool, String> {
        match self
            .fences
            .read()
            .get(&(tenant.to_string(), name.to_string()))
        {
            Some(f) => Ok(f.contains(geo::Point::new(lon, lat))),
            None => Err(format!("no geofence {name:?}")),
        }
    }
}

/// GET a JSON document (10 s timeout, 1 MiB at most).
fn fetch(url: &str) -> std::result::Result<Json, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut res = agent.get(url).call().map_err(|e| e.to_string())?;
    let text = res
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geofences_polygons_and_circles() {
        let db = Arc::new(Db::memory().unwrap());
        crate::registry::Registry::new(db.clone())
            .ensure_default()
            .unwrap();
        let t = crate::registry::Registry::new(db.clone())
            .tenant("default")
            .unwrap();
        let l = RuleLookups::open(db).unwrap();
        let square: Vec<[f64; 2]> = vec![
            [13.37, 52.51],
            [13.41, 52.51],
            [13.41, 52.53],
            [13.37, 52.53],
        ];
        l.create_geofence(
            &t.id,
            NewGeofence {
                name: "depot".into(),
                shape: Shape::Polygon(square),
            },
        )
        .unwrap();
        l.create_geofence(
            &t.id,
            NewGeofence {
                name: "yard".into(),
                shape: Shape::Circle {
                    lon: 13.0,
                    lat: 52.4,
                    radius_m: 500.0,
                },
            },
        )
        .unwrap();
        assert_eq!(l.inside(&t.id, "depot", 13.39, 52.52), Ok(true));
        assert_eq!(l.inside(&t.id, "depot", 13.45, 52.52), Ok(false));
        assert_eq!(
            l.inside(&t.id, "depot", 13.37, 52.52),
            Ok(true),
            "the edge is inside"
        );
        assert_eq!(
            l.inside(&t.id, "yard", 13.004, 52.4),
            Ok(true),
            "~270 m away"
        );
        assert_eq!(
            l.inside(&t.id, "yard", 13.01, 52.4),
            Ok(false),
            "~680 m away"
        );
        assert!(l.inside(&t.id, "nope", 0.0, 0.0).is_err());
        assert!(l.inside("other-tenant", "depot", 13.39, 52.52).is_err());
        let bad = NewGeofence {
            name: "x".into(),
            shape: Shape::Polygon(vec![[0.0, 0.0]]),
        };
        assert!(l.create_geofence(&t.id, bad).is_err());
        let bad = NewGeofence {
            name: "y".into(),
            shape: Shape::Circle {
                lon: 0.0,
                lat: 95.0,
                radius_m: 1.0,
            },
        };
        assert!(l.create_geofence(&t.id, bad).is_err());
    }
}
