//! Device state: online/offline and last activity, per transport. MQTT (and gateway) devices are
//! online while a session is open; HTTP and CoAP devices while their traffic is more recent than
//! their profile's inactivity timeout. Kept as server-side attributes as ThingsBoard names them
//! (`active`, `lastActivityTime`, `lastConnectTime`, `lastDisconnectTime`) and published on the
//! bus. Activity is noted in memory and written every few hundred ms, not on every message.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::attributes::{Attributes, Scope};
use crate::bus::{Bus, Event, EventKind};
use crate::db::now_ms;
use crate::device_api::DeviceCtx;
use crate::error::{CoreError, Result};

/// The stored `lastActivityTime` of a busy device lags the truth by at most this much (ms); the
/// in-memory one (device lists, `last_activity`) is exact. Writing it on every flush cost one
/// row per active device twice a second.
pub const ACTIVITY_WRITE_MS: i64 = 5_000;

struct Activity {
    tenant: Arc<str>,
    last: i64,
    written: i64,
    timeout_ms: u64,
    active: bool,
    /// Open sessions (MQTT connections, gateway links).
    sessions: u32,
}

/// Online state of every device seen since start.
pub struct DeviceState {
    devices: Mutex<HashMap<Arc<str>, Activity>>,
    attrs: Attributes,
    bus: Bus,
}

impl DeviceState {
    /// State kept in `attrs`, announced on `bus`.
    pub fn new(attrs: Attributes, bus: Bus) -> DeviceState {
        DeviceState {
            devices: Mutex::new(HashMap::new()),
            attrs,
            bus,
        }
    }

    /// Saves server attributes; a device deleted meanwhile (foreign key gone) is skipped.
    fn write(&self, device: &str, values: Map<String, Value>) -> Result<()> {
        match self.attrs.save(device, Scope::Server, &values, now_ms()) {
            Err(CoreError::Storage(rusqlite::Error::SqliteFailure(f, _)))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn announce(&self, tenant: &Arc<str>, device: &Arc<str>, ts: i64, kind: EventKind) {
        self.bus.publish(Event {
            tenant: tenant.clone(),
            device: device.clone(),
            ts,
            kind,
        });
    }

    /// Updates (creating) a device's entry; returns whether it was inactive before.
    fn note(&self, ctx: &DeviceCtx, now: i64, session: bool) -> bool {
        let mut map = self.devices.lock();
        let a = map.entry(ctx.id.clone()).or_insert_with(|| Activity {
            tenant: ctx.tenant.clone(),
            last: now,
            written: 0,
            timeout_ms: ctx.spec.inactivity_timeout_ms,
            active: false,
            sessions: 0,
        });
        a.last = now;
        a.timeout_ms = ctx.spec.inactivity_timeout_ms;
        a.sessions += u32::from(session);
        let was = a.active;
        a.active = true;
        if !was || session {
            a.written = now;
        }
        !was
    }

    /// A session opened (MQTT connect, gateway connect of a sub-device).
    pub fn connected(&self, ctx: &DeviceCtx, transport: &'static str) -> Result<()> {
        let now = now_ms();
        self.note(ctx, now, true);
        let values = json!({"active": true, "lastConnectTime": now, "lastActivityTime": now});
        self.write(&ctx.id, as_map(values))?;
        self.announce(
            &ctx.tenant,
            &ctx.id,
            now,
            EventKind::Connected { transport },
        );
        Ok(())
    }

    /// A session closed; the device goes offline with its last session.
    pub fn disconnected(&self, ctx: &DeviceCtx, transport: &'static str) -> Result<()> {
        let now = now_ms();
        let offline = match self.devices.lock().get_mut(&ctx.id) {
            Some(a) => {
                a.sessions = a.sessions.saturating_sub(1);
                a.active = a.sessions > 0;
                !a.active
            }
            None => true,
        };
        if offline {
            self.write(
                &ctx.id,
                as_map(json!({"active": false, "lastDisconnectTime": now})),
            )?;
            self.announce(
                &ctx.tenant,
                &ctx.id,
                now,
                EventKind::Disconnected { transport },
            );
        }
        Ok(())
    }

    /// Traffic from a device (any transport); an inactive device becomes active.
    pub fn activity(&self, ctx: &DeviceCtx, transport: &'static str) -> Result<()> {
        let now = now_ms();
        if self.note(ctx, now, false) {
            self.write(
                &ctx.id,
                as_map(json!({"active": true, "lastActivityTime": now})),
            )?;
            self.announce(
                &ctx.tenant,
                &ctx.id,
                now,
                EventKind::Connected { transport },
            );
        }
        Ok(())
    }

    /// Writes pending activity times (each device's at most every [`ACTIVITY_WRITE_MS`], all in
    /// one transaction) and turns devices without sessions inactive after their timeout. Called
    /// every few hundred ms, off the async workers.
    pub fn flush(&self) -> Result<()> {
        let now = now_ms();
        let mut writes: Vec<(Arc<str>, Map<String, Value>)> = Vec::new();
        let mut gone: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        {
            let mut map = self.devices.lock();
            for (dev, a) in map.iter_mut() {
                let mut m = Map::new();
                let goes_inactive =
                    a.active && a.sessions == 0 && now - a.last >= a.timeout_ms as i64;
                if a.last > a.written && (now - a.written >= ACTIVITY_WRITE_MS || goes_inactive) {
                    m.insert("lastActivityTime".into(), json!(a.last));
                    a.written = a.last;
                }
                if goes_inactive {
                    a.active = false;
                    m.insert("active".into(), json!(false));
                    m.insert("inactivityAlarmTime".into(), json!(now));
                    gone.push((a.tenant.clone(), dev.clone()));
                }
                if !m.is_empty() {
                    writes.push((dev.clone(), m));
                }
            }
        }
        self.attrs.save_many(Scope::Server, &writes, now)?;
        for (tenant, device) in gone {
            let kind = EventKind::Disconnected {
                transport: "inactivity",
            };
            self.announce(&tenant, &device, now, kind);
        }
        Ok(())
    }

    /// Forgets a deleted device.
    pub fn forget(&self, device: &str) {
        self.devices.lock().remove(device);
    }

    /// Whether a device is online now.
    pub fn active(&self, device: &str) -> bool {
        self.devices.lock().get(device).is_some_and(|a| a.active)
    }

    /// When a device was last heard from since this process started (ms).
    pub fn last_activity(&self, device: &str) -> Option<i64> {
        self.devices.lock().get(device).map(|a| a.last)
    }
}

fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
