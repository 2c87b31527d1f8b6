//! Device state: online/offline and last activity, per transport. MQTT (and gateway) devices are
//! online while a session is open; HTTP and CoAP devices while their traffic is more recent than
//! their profile's inactivity timeout. Kept as server-side attributes as ThingsBoard names them
//! (`active`, `lastActivityTime`, `lastConnectTime`, `lastDisconnectTime`) and published on the
//! bus. Activity is noted in memory and written every few seconds, not on every message.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::attributes::{Attributes, Scope};
use crate::bus::{Bus, Event, EventKind};
use crate::db::now_ms;
use crate::error::Result;

struct Activity {
    tenant: Arc<str>,
    last: i64,
    written: i64,
    timeout_ms: u64,
    active: bool,
    /// Open sessions (MQTT connections, gateway links).
    sessions: u32,
}

/// Saves server attributes; a device deleted meanwhile (foreign key gone) is skipped.
fn save_unless_deleted(attrs: &Attributes, device: &str, map: &Map<String, Value>) -> Result<()> {
    match attrs.save(device, Scope::Server, map, now_ms()) {
        Err(crate::error::CoreError::Storage(rusqlite::Error::SqliteFailure(f, _)))
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Online state of every device seen since start.
#[derive(Default)]
pub struct DeviceState {
    devices: Mutex<HashMap<Arc<str>, Activity>>,
}

impl DeviceState {
    fn write(attrs: &Attributes, device: &str, values: Value) -> Result<()> {
        let Value::Object(map) = values else {
            unreachable!()
        };
        attrs.save(device, Scope::Server, &map, now_ms())
    }

    /// A session opened (MQTT connect, gateway connect of a sub-device).
    pub fn connected(
        &self,
        attrs: &Attributes,
        bus: &Bus,
        tenant: &Arc<str>,
        device: &Arc<str>,
        transport: &'static str,
        timeout_ms: u64,
    ) -> Result<()> {
        let now = now_ms();
        {
            let mut map = self.devices.lock();
            let a = map.entry(device.clone()).or_insert_with(|| Activity {
                tenant: tenant.clone(),
                last: now,
                written: 0,
                timeout_ms,
                active: false,
                sessions: 0,
            });
            a.sessions += 1;
            a.active = true;
            a.last = now;
            a.written = now;
        }
        Self::write(
            attrs,
            device,
            json!({"active": true, "lastConnectTime": now, "lastActivityTime": now}),
        )?;
        bus.publish(Event {
            tenant: tenant.clone(),
            device: device.clone(),
            ts: now,
            kind: EventKind::Connected { transport },
        });
        Ok(())
    }

    /// A session closed.
    pub fn disconnected(
        &self,
        attrs: &Attributes,
        bus: &Bus,
        tenant: &Arc<str>,
        device: &Arc<str>,
        transport: &'static str,
    ) -> Result<()> {
        let now = now_ms();
        let offline = {
            let mut map = self.devices.lock();
            match map.get_mut(device) {
                Some(a) => {
                    a.sessions = a.sessions.saturating_sub(1);
                    let offline = a.sessions == 0;
                    if offline {
                        a.active = false;
                    }
                    offline
                }
                None => true,
            }
        };
        if offline {
            Self::write(
                attrs,
                device,
                json!({"active": false, "lastDisconnectTime": now}),
            )?;
            bus.publish(Event {
                tenant: tenant.clone(),
                device: device.clone(),
                ts: now,
                kind: EventKind::Disconnected { transport },
            });
        }
        Ok(())
    }

    /// Traffic from a device; returns true when this made it active (HTTP/CoAP first contact).
    pub fn activity(
        &self,
        attrs: &Attributes,
        bus: &Bus,
        tenant: &Arc<str>,
        device: &Arc<str>,
        transport: &'static str,
        timeout_ms: u64,
    ) -> Result<()> {
        let now = now_ms();
        let became_active = {
            let mut map = self.devices.lock();
            let a = map.entry(device.clone()).or_insert_with(|| Activity {
                tenant: tenant.clone(),
                last: now,
                written: 0,
                timeout_ms,
                active: false,
                sessions: 0,
            });
            a.last = now;
            a.timeout_ms = timeout_ms;
            let was = a.active;
            a.active = true;
            if !was {
                a.written = now;
            }
            !was
        };
        if became_active {
            Self::write(
                attrs,
                device,
                json!({"active": true, "lastActivityTime": now}),
            )?;
            bus.publish(Event {
                tenant: tenant.clone(),
                device: device.clone(),
                ts: now,
                kind: EventKind::Connected { transport },
            });
        }
        Ok(())
    }

    /// Writes pending activity times and turns devices without sessions inactive after their
    /// timeout. Called every few seconds.
    pub fn flush(&self, attrs: &Attributes, bus: &Bus) -> Result<()> {
        let now = now_ms();
        let mut writes: Vec<(Arc<str>, Map<String, Value>)> = Vec::new();
        let mut gone: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        {
            let mut map = self.devices.lock();
            for (dev, a) in map.iter_mut() {
                let mut m = Map::new();
                if a.last > a.written {
                    m.insert("lastActivityTime".into(), json!(a.last));
                    a.written = a.last;
                }
                if a.active && a.sessions == 0 && now - a.last >= a.timeout_ms as i64 {
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
        for (dev, m) in writes {
            save_unless_deleted(attrs, &dev, &m)?;
        }
        for (tenant, device) in gone {
            bus.publish(Event {
                tenant,
                device,
                ts: now,
                kind: EventKind::Disconnected {
                    transport: "inactivity",
                },
            });
        }
        Ok(())
    }

    /// Whether a device is online now.
    pub fn active(&self, device: &str) -> bool {
        self.devices.lock().get(device).is_some_and(|a| a.active)
    }
}
