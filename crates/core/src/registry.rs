//! The registry: tenants, customers, device profiles and devices in the platform database.
//! Names are unique per tenant; every lookup by id or name is scoped to a tenant except
//! [`Registry::device`], whose callers check the tenant themselves.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Row};

use crate::credentials;
use crate::db::{now_ms, Db, Versioned};
use crate::error::{CoreError, Result};
use crate::model::{
    Customer, Device, DeviceQuery, DeviceSort, DeviceUpdate, NewDevice, NewProfile, Profile,
    ProfileSpec, Tenant,
};

/// The name of the tenant and profile created on an empty data dir.
pub const DEFAULT: &str = "default";

const DEVICE_SELECT: &str = "SELECT d.id, d.tenant_id, d.name, d.label, p.name, d.profile_id,
    d.customer_id, d.gateway, d.gateway_id, d.iccid, d.imsi, d.msisdn, d.created_ms
    FROM devices d JOIN profiles p ON p.id = d.profile_id";

const PROFILE_SELECT: &str =
    "SELECT id, tenant_id, name, spec, provision_key, created_ms FROM profiles";

/// Registry operations over the platform database.
#[derive(Clone)]
pub struct Registry {
    db: Arc<Db>,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(CoreError::Invalid(format!(
            "{what} name must be 1 to 255 characters"
        )));
    }
    Ok(())
}

fn device_row(r: &Row) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        label: r.get(3)?,
        profile: r.get(4)?,
        profile_id: r.get(5)?,
        customer: r.get(6)?,
        gateway: r.get(7)?,
        parent_gateway: r.get(8)?,
        iccid: r.get(9)?,
        imsi: r.get(10)?,
        msisdn: r.get(11)?,
        created: r.get(12)?,
    })
}

fn tenant_row(r: &Row) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        name: r.get(1)?,
        created: r.get(2)?,
        retention_days: r.get(3)?,
    })
}

fn profile_row(r: &Row) -> rusqlite::Result<Profile> {
    let spec: String = r.get(3)?;
    Ok(Profile {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        spec: serde_json::from_str(&spec).unwrap_or_default(),
        provision_key: r.get(4)?,
        created: r.get(5)?,
    })
}

impl Registry {
    /// The registry over `db`.
    pub fn new(db: Arc<Db>) -> Registry {
        Registry { db }
    }

    /// The database underneath.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Creates the `default` tenant (with its `default` profile) if there are no tenants.
    pub fn ensure_default(&self) -> Result<()> {
        let n: i64 = self
            .db
            .conn()
            .query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))?;
        if n == 0 {
            self.create_tenant(DEFAULT)?;
        }
        Ok(())
    }

    // ---- tenants ----

    /// Creates a tenant and its `default` profile.
    pub fn create_tenant(&self, name: &str) -> Result<Tenant> {
        check_name("tenant", name)?;
        let t = Tenant {
            id: new_id(),
            name: name.to_string(),
            created: now_ms(),
            retention_days: None,
        };
        self.db
            .conn()
            .execute(
                "INSERT INTO tenants (id, name, created_ms) VALUES (?1, ?2, ?3)",
                params![t.id, t.name, t.created],
            )
            .map_err(|e| CoreError::unique(e, format!("tenant {name:?}")))?;
        self.create_profile(
            &t.id,
            NewProfile {
                name: DEFAULT.to_string(),
                ..NewProfile::default()
            },
        )?;
        Ok(t)
    }

    /// Sets a tenant's telemetry retention (`None`: keep).
    pub fn set_tenant_retention(&self, tenant: &str, days: Option<u32>) -> Result<Tenant> {
        let t = self.tenant(tenant)?;
        self.db.conn().execute(
            "UPDATE tenants SET retention_days = ?2 WHERE id = ?1",
            params![t.id, days],
        )?;
        self.tenant(&t.id)
    }

    /// All tenants, by name.
    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        let conn = self.db.conn();
        let mut st =
            conn.prepare("SELECT id, name, created_ms, retention_days FROM tenants ORDER BY name")?;
        let rows = st.query_map([], tenant_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A tenant by id or name.
    pub fn tenant(&self, id_or_name: &str) -> Result<Tenant> {
        self.db
            .conn()
            .query_row(
                "SELECT id, name, created_ms, retention_days FROM tenants WHERE id = ?1 OR name = ?1",
                [id_or_name],
                tenant_row,
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("tenant {id_or_name:?}")))
    }

    /// Deletes a tenant with everything in it.
    pub fn delete_tenant(&self, id_or_name: &str) -> Result<Tenant> {
        let t = self.tenant(id_or_name)?;
        let conn = self.db.conn();
        // Devices reference profiles without cascade; remove devices first.
        conn.execute("DELETE FROM devices WHERE tenant_id = ?1", [&t.id])?;
        conn.execute("DELETE FROM tenants WHERE id = ?1", [&t.id])?;
        self.db.changed(Versioned::Registry);
        Ok(t)
    }

    // ---- customers ----

    /// Creates a customer in a tenant.
    pub fn create_customer(&self, tenant: &str, name: &str) -> Result<Customer> {
        check_name("customer", name)?;
        let c = Customer {
            id: new_id(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            created: now_ms(),
        };
        self.db
            .conn()
            .execute(
                "INSERT INTO customers (id, tenant_id, name, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![c.id, c.tenant, c.name, c.created],
            )
            .map_err(|e| CoreError::unique(e, format!("customer {name:?}")))?;
        Ok(c)
    }

    /// A tenant's customers, by name.
    pub fn customers(&self, tenant: &str) -> Result<Vec<Customer>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT id, tenant_id, name, created_ms FROM customers WHERE tenant_id = ?1 ORDER BY name",
        )?;
        let rows = st.query_map([tenant], |r| {
            Ok(Customer {
                id: r.get(0)?,
                tenant: r.get(1)?,
                name: r.get(2)?,
                created: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A customer of a tenant by id or name.
    pub fn customer(&self, tenant: &str, id_or_name: &str) -> Result<Customer> {
        self.db
            .conn()
            .query_row(
                "SELECT id, tenant_id, name, created_ms FROM customers
                 WHERE tenant_id = ?1 AND (id = ?2 OR name = ?2)",
                [tenant, id_or_name],
                |r| {
                    Ok(Customer {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        name: r.get(2)?,
                        created: r.get(3)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("customer {id_or_name:?}")))
    }

    /// A customer by id (any tenant: callers check `customer.tenant`).
    pub fn customer_by_id(&self, id: &str) -> Result<Customer> {
        self.db
            .conn()
            .query_row(
                "SELECT id, tenant_id, name, created_ms FROM customers WHERE id = ?1",
                [id],
                |r| {
                    Ok(Customer {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        name: r.get(2)?,
                        created: r.get(3)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("customer {id:?}")))
    }

    /// Deletes a customer: its devices stay in the tenant, unassigned; its users go.
    pub fn delete_customer(&self, tenant: &str, id_or_name: &str) -> Result<Customer> {
        let c = self.customer(tenant, id_or_name)?;
        self.db
            .conn()
            .execute("DELETE FROM customers WHERE id = ?1", [&c.id])?;
        Ok(c)
    }

    // ---- profiles ----

    /// Creates a device profile in a tenant.
    pub fn create_profile(&self, tenant: &str, new: NewProfile) -> Result<Profile> {
        check_name("profile", &new.name)?;
        if new.provision_key.is_some() != new.provision_secret.is_some() {
            return Err(CoreError::Invalid(
                "provision_key and provision_secret go together".into(),
            ));
        }
        for f in new
            .spec
            .allow_publish
            .iter()
            .chain(&new.spec.allow_subscribe)
        {
            if !mqtt_codec::topic::valid_filter(f) {
                return Err(CoreError::Invalid(format!("invalid topic filter {f:?}")));
            }
        }
        let p = Profile {
            id: new_id(),
            tenant: tenant.to_string(),
            name: new.name.clone(),
            spec: new.spec,
            provision_key: new.provision_key,
            created: now_ms(),
        };
        let secret = new.provision_secret.as_deref().map(credentials::sha256_hex);
        let spec = serde_json::to_string(&p.spec).expect("profile spec serialises");
        self.db
            .conn()
            .execute(
                "INSERT INTO profiles (id, tenant_id, name, spec, provision_key,
                 provision_secret_hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    p.id,
                    p.tenant,
                    p.name,
                    spec,
                    p.provision_key,
                    secret,
                    p.created
                ],
            )
            .map_err(|e| {
                CoreError::unique(e, format!("profile {:?} (or its provision key)", p.name))
            })?;
        Ok(p)
    }

    /// A tenant's profiles, by name.
    pub fn profiles(&self, tenant: &str) -> Result<Vec<Profile>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{PROFILE_SELECT} WHERE tenant_id = ?1 ORDER BY name"
        ))?;
        let rows = st.query_map([tenant], profile_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A tenant's profile by id or name.
    pub fn profile(&self, tenant: &str, id_or_name: &str) -> Result<Profile> {
        self.db
            .conn()
            .query_row(
                &format!("{PROFILE_SELECT} WHERE tenant_id = ?1 AND (id = ?2 OR name = ?2)"),
                [tenant, id_or_name],
                profile_row,
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("profile {id_or_name:?}")))
    }

    /// A profile by id (any tenant).
    pub fn profile_by_id(&self, id: &str) -> Result<Profile> {
        self.db
            .conn()
            .query_row(
                &format!("{PROFILE_SELECT} WHERE id = ?1"),
                [id],
                profile_row,
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("profile {id:?}")))
    }

    /// The profile whose provision key is `key`, with its secret's hash.
    pub fn profile_by_provision_key(&self, key: &str) -> Result<Option<(Profile, String)>> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT id, tenant_id, name, spec, provision_key, created_ms, provision_secret_hash
                 FROM profiles WHERE provision_key = ?1",
                [key],
                |r| Ok((profile_row(r)?, r.get::<_, String>(6)?)),
            )
            .optional()?)
    }

    /// Deletes a profile no device uses.
    pub fn delete_profile(&self, tenant: &str, id_or_name: &str) -> Result<Profile> {
        let p = self.profile(tenant, id_or_name)?;
        let conn = self.db.conn();
        let used: i64 = conn.query_row(
            "SELECT count(*) FROM devices WHERE profile_id = ?1",
            [&p.id],
            |r| r.get(0),
        )?;
        if used > 0 {
            return Err(CoreError::Invalid(format!(
                "profile {:?} is used by {used} device(s)",
                p.name
            )));
        }
        conn.execute("DELETE FROM profiles WHERE id = ?1", [&p.id])?;
        self.db.changed(Versioned::Registry);
        Ok(p)
    }

    // ---- devices ----

    /// Creates a device and its access token; returns the device and the token (shown once).
    pub fn create_device(&self, tenant: &str, new: NewDevice) -> Result<(Device, String)> {
        let device = self.insert_device(tenant, &new, None)?;
        let token = credentials::generate_token();
        credentials::Credentials::new(self.db.clone()).add_token(&device.id, &token, None)?;
        Ok((device, token))
    }

    /// Inserts a device without credentials (sub-devices of a gateway, provisioning).
    pub fn insert_device(
        &self,
        tenant: &str,
        new: &NewDevice,
        parent_gateway: Option<&str>,
    ) -> Result<Device> {
        check_name("device", &new.name)?;
        let profile = self.profile(tenant, new.profile.as_deref().unwrap_or(DEFAULT))?;
        let customer = match &new.customer {
            Some(c) => Some(self.customer(tenant, c)?.id),
            None => None,
        };
        let id = new_id();
        self.db
            .conn()
            .execute(
                "INSERT INTO devices (id, tenant_id, name, label, profile_id, customer_id, gateway,
                 gateway_id, iccid, imsi, msisdn, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    id,
                    tenant,
                    new.name,
                    new.label,
                    profile.id,
                    customer,
                    new.gateway,
                    parent_gateway,
                    new.iccid,
                    new.imsi,
                    new.msisdn,
                    now_ms()
                ],
            )
            .map_err(|e| CoreError::unique(e, format!("device {:?}", new.name)))?;
        self.device(&id)
    }

    /// A device by id (any tenant: callers check `device.tenant`).
    pub fn device(&self, id: &str) -> Result<Device> {
        // Hot (every rule evaluation, every API call on a device): a cached statement.
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE d.id = ?1"))?;
        st.query_row([id], device_row)
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("device {id:?}")))
    }

    /// A tenant's device by id or name.
    pub fn device_in(&self, tenant: &str, id_or_name: &str) -> Result<Device> {
        self.db
            .conn()
            .query_row(
                &format!("{DEVICE_SELECT} WHERE d.tenant_id = ?1 AND (d.id = ?2 OR d.name = ?2)"),
                [tenant, id_or_name],
                device_row,
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("device {id_or_name:?}")))
    }

    /// A page of a tenant's devices (of one customer, if given) ordered by name, after `cursor`
    /// (a name); returns the page and the next cursor.
    pub fn devices(
        &self,
        tenant: &str,
        customer: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Device>, Option<String>)> {
        self.find_devices(
            tenant,
            &DeviceQuery {
                customer: customer.map(str::to_string),
                limit,
                cursor: cursor.map(str::to_string),
                ..Default::default()
            },
        )
    }

    /// A page of a tenant's devices, filtered and sorted; keyset pagination (the cursor is the
    /// last row's sort key, so pages stay consistent while devices are added).
    pub fn find_devices(
        &self,
        tenant: &str,
        q: &DeviceQuery,
    ) -> Result<(Vec<Device>, Option<String>)> {
        let limit = q.limit.clamp(1, 1000);
        let profile = match &q.profile {
            Some(p) => Some(self.profile(tenant, p)?.id),
            None => None,
        };
        let (cmp, dir) = if q.desc { ("<", "DESC") } else { (">", "ASC") };
        // Cursor: `name` for the name order, `created_ms|name` for the creation order.
        let (key_sql, cursor_created, cursor_name) = match q.sort {
            DeviceSort::Name => (
                format!("(?5 IS NULL OR d.name {cmp} ?5) ORDER BY d.name {dir}"),
                None,
                q.cursor.clone(),
            ),
            DeviceSort::Created => {
                let (c, n) = match q.cursor.as_deref().map(|c| c.split_once('|')) {
                    Some(Some((c, n))) => (
                        Some(c.parse::<i64>().map_err(|_| {
                            CoreError::Invalid(format!(
                                "cursor {:?} is not one this API returned",
                                q.cursor
                            ))
                        })?),
                        Some(n.to_string()),
                    ),
                    Some(None) => {
                        return Err(CoreError::Invalid(format!(
                            "cursor {:?} is not one this API returned",
                            q.cursor
                        )))
                    }
                    None => (None, None),
                };
                (
                    format!(
                        "(?5 IS NULL OR (d.created_ms, d.name) {cmp} (?4, ?5)) \
                         ORDER BY d.created_ms {dir}, d.name {dir}"
                    ),
                    c,
                    n,
                )
            }
        };
        let sql = format!(
            "{DEVICE_SELECT} WHERE d.tenant_id = ?1 AND (?2 IS NULL OR d.customer_id = ?2)
             AND (?3 IS NULL OR d.profile_id = ?3)
             AND (?6 IS NULL OR instr(lower(d.name), lower(?6)) > 0
                  OR instr(lower(coalesce(d.label, '')), lower(?6)) > 0)
             AND (?7 IS NULL OR d.gateway = ?7) AND {key_sql} LIMIT ?8"
        );
        let conn = self.db.conn();
        let mut st = conn.prepare(&sql)?;
        let rows = st.query_map(
            params![
                tenant,
                q.customer,
                profile,
                cursor_created,
                cursor_name,
                q.text,
                q.gateway,
                limit as i64 + 1
            ],
            device_row,
        )?;
        let page: Vec<Device> = rows.collect::<rusqlite::Result<_>>()?;
        let sort = q.sort;
        Ok(crate::accounts::paginate(page, limit, |d| match sort {
            DeviceSort::Name => d.name.clone(),
            DeviceSort::Created => format!("{}|{}", d.created, d.name),
        }))
    }

    /// Changes a device's label, customer (`Some(None)` unassigns) or profile (id or name).
    pub fn update_device(&self, id: &str, update: &DeviceUpdate) -> Result<Device> {
        let d = self.device(id)?;
        let label = update.label.clone().unwrap_or(d.label);
        let customer = match &update.customer {
            Some(Some(c)) => Some(self.customer(&d.tenant, c)?.id),
            Some(None) => None,
            None => d.customer,
        };
        let profile = match &update.profile {
            Some(p) => self.profile(&d.tenant, p)?.id,
            None => d.profile_id,
        };
        self.db.conn().execute(
            "UPDATE devices SET label = ?2, customer_id = ?3, profile_id = ?4 WHERE id = ?1",
            params![d.id, label, customer, profile],
        )?;
        self.db.changed(Versioned::Registry);
        self.device(&d.id)
    }

    /// Ids of a tenant's devices.
    pub fn device_ids(&self, tenant: &str) -> Result<Vec<String>> {
        let conn = self.db.conn();
        let mut st = conn.prepare("SELECT id FROM devices WHERE tenant_id = ?1")?;
        let rows = st.query_map([tenant], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a device with its credentials, attributes and RPCs.
    pub fn delete_device(&self, id: &str) -> Result<Device> {
        let d = self.device(id)?;
        let conn = self.db.conn();
        conn.execute("DELETE FROM devices WHERE id = ?1", [id])?;
        self.db.changed(Versioned::Registry);
        Ok(d)
    }

    /// The profile spec of a device's profile.
    pub fn spec_of(&self, device: &Device) -> Result<ProfileSpec> {
        Ok(self.profile_by_id(&device.profile_id)?.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::new(Arc::new(Db::memory().unwrap()))
    }

    #[test]
    fn names_are_unique_per_tenant() {
        let r = registry();
        let a = r.create_tenant("a").unwrap();
        let b = r.create_tenant("b").unwrap();
        let new = NewDevice {
            name: "pump".into(),
            ..NewDevice::default()
        };
        r.create_device(&a.id, new.clone()).unwrap();
        r.create_device(&b.id, new.clone()).unwrap();
        assert!(matches!(
            r.create_device(&a.id, new),
            Err(CoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            r.create_tenant("a"),
            Err(CoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn pages_devices_by_name() {
        let r = registry();
        let t = r.create_tenant("t").unwrap();
        for i in 0..5 {
            let new = NewDevice {
                name: format!("d{i}"),
                ..NewDevice::default()
            };
            r.create_device(&t.id, new).unwrap();
        }
        let (p1, next) = r.devices(&t.id, None, 2, None).unwrap();
        assert_eq!(p1.len(), 2);
        let (p2, _) = r.devices(&t.id, None, 10, next.as_deref()).unwrap();
        assert_eq!(p2.len(), 3);
        assert_eq!(p2[0].name, "d2");
    }

    #[test]
    fn deleting_a_tenant_removes_its_devices() {
        let r = registry();
        let t = r.create_tenant("t").unwrap();
        let (d, _) = r
            .create_device(
                &t.id,
                NewDevice {
                    name: "x".into(),
                    ..NewDevice::default()
                },
            )
            .unwrap();
        r.delete_tenant("t").unwrap();
        assert!(matches!(r.device(&d.id), Err(CoreError::NotFound(_))));
    }

    #[test]
    fn device_lists_filter_sort_and_page() {
        let r = Registry::new(Arc::new(Db::memory().unwrap()));
        r.ensure_default().unwrap();
        let t = r.tenant(DEFAULT).unwrap();
        let c = r.create_customer(&t.id, "acme").unwrap();
        for (name, gw, cust) in [
            ("pump-b", false, true),
            ("pump-a", true, false),
            ("fan", false, true),
        ] {
            let new = NewDevice {
                name: name.into(),
                gateway: gw,
                label: Some(format!("{name} label")),
                customer: cust.then(|| "acme".to_string()),
                ..Default::default()
            };
            r.create_device(&t.id, new).unwrap();
        }
        let names = |q: &DeviceQuery| {
            let (page, next) = r.find_devices(&t.id, q).unwrap();
            (page.into_iter().map(|d| d.name).collect::<Vec<_>>(), next)
        };
        let base = DeviceQuery {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(names(&base).0, ["fan", "pump-a", "pump-b"]);
        let q = DeviceQuery {
            text: Some("PUMP".into()),
            ..base.clone()
        };
        assert_eq!(names(&q).0, ["pump-a", "pump-b"]);
        let q = DeviceQuery {
            gateway: Some(true),
            ..base.clone()
        };
        assert_eq!(names(&q).0, ["pump-a"]);
        let q = DeviceQuery {
            customer: Some(c.id.clone()),
            desc: true,
            ..base.clone()
        };
        assert_eq!(names(&q).0, ["pump-b", "fan"]);
        // Creation order, newest first, two per page.
        let q = DeviceQuery {
            sort: DeviceSort::Created,
            desc: true,
            limit: 2,
            ..base.clone()
        };
        let (p1, next) = names(&q);
        let (p2, end) = names(&DeviceQuery {
            cursor: next,
            ..q.clone()
        });
        let mut all = p1.clone();
        all.extend(p2);
        assert_eq!(all.len(), 3);
        assert_eq!(end, None);
        let q = DeviceQuery {
            cursor: Some("garbage".into()),
            ..q
        };
        assert!(r.find_devices(&t.id, &q).is_err());
    }
}
