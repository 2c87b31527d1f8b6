//! Firmware for sub-devices through the gateway. The platform assigns a package to a sub-device
//! with ThingsBoard's shared attributes (`fw_title`, `fw_version`, `fw_checksum`,
//! `fw_checksum_algorithm`, `fw_size`), pushed on `v1/gateway/attributes` or answered to the
//! request the uplink makes for each firmware-capable device when it connects. The edge then:
//!
//! 1. fetches the image from the platform's device HTTP API (`GET {http}/api/v1/{gateway
//!    token}/firmware?title&version&device`) **once per checksum**, into
//!    `buffer_dir/firmware/<sha256>.bin`, and checks size and SHA-256; a second device given
//!    the same image, or the same device again, is served from that file;
//! 2. hands the image to the device's connector (a [`Command`] with `firmware`; Modbus:
//!    modbus/firmware.rs), one update per device at a time;
//! 3. reports progress as the sub-device's telemetry, ThingsBoard's way, so the platform tracks
//!    it per device and per campaign: `fw_state` DOWNLOADING → DOWNLOADED → VERIFIED →
//!    UPDATING → UPDATED (with `current_fw_title`, `current_fw_version`), or FAILED with
//!    `fw_error`.
//!
//! What each device was last updated to, and the image it last refused, are kept in
//! `buffer_dir/firmware/devices.json`, so the assignment seen again at every reconnect (or
//! after a restart) is neither installed twice nor retried; a new assignment (pushed by the
//! platform, even of the same package) is.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::connector::{now_ms, Command, Health, Reading};
use crate::error::EdgeError;

/// The shared attributes that describe an assignment.
pub const KEYS: [&str; 5] = [
    "fw_title",
    "fw_version",
    "fw_checksum",
    "fw_checksum_algorithm",
    "fw_size",
];

/// An image in the cache, verified.
#[derive(Debug)]
pub struct Image {
    pub title: String,
    pub version: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// What a device is asked to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Target {
    title: String,
    version: String,
    /// SHA-256, lowercase hex.
    checksum: String,
    size: u64,
}

impl Target {
    /// The checksum as bytes (checked to be 64 hex digits when the target was made).
    fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.checksum[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        out
    }

    /// The target the `fw_*` attributes describe; `Ok(None)` while some are missing.
    fn from_attributes(a: &Map<String, Value>) -> Result<Option<Target>, String> {
        let text = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(title), Some(version), Some(checksum), Some(size)) = (
            text("fw_title"),
            text("fw_version"),
            text("fw_checksum"),
            a.get("fw_size").and_then(Value::as_u64),
        ) else {
            return Ok(None);
        };
        if let Some(alg) = text("fw_checksum_algorithm") {
            if !alg.eq_ignore_ascii_case("sha256") && !alg.eq_ignore_ascii_case("sha-256") {
                return Err(format!(
                    "checksum algorithm {alg:?} is not supported (SHA256 is)"
                ));
            }
        }
        let checksum = checksum.to_ascii_lowercase();
        if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("fw_checksum {checksum:?} is not a SHA-256 in hex"));
        }
        Ok(Some(Target {
            title,
            version,
            checksum,
            size,
        }))
    }
}

/// Where images come from: the platform's device HTTP API, as the gateway.
pub struct Source {
    /// `http(s)://host:port`; `None` when `[uplink] http` is not configured.
    pub base: Option<String>,
    pub token: String,
}

#[derive(Default)]
struct State {
    /// `fw_*` attributes seen per device (updates may carry some keys only).
    offered: HashMap<String, Map<String, Value>>,
    /// Updates under way.
    running: HashMap<String, Target>,
    kept: Kept,
    /// The last timestamp reported per device, so that successive states never share one.
    last_ts: HashMap<String, i64>,
}

/// What `devices.json` keeps.
#[derive(Default, Serialize, Deserialize)]
struct Kept {
    /// The last image each device installed.
    installed: HashMap<String, Target>,
    /// The image each device last failed to install.
    failed: HashMap<String, Target>,
}

/// Installs firmware on sub-devices; one per gateway.
pub struct Agent {
    dir: PathBuf,
    source: Source,
    readings: mpsc::Sender<Reading>,
    routes: HashMap<String, mpsc::Sender<Command>>,
    state: Mutex<State>,
    /// One fetch at a time, so an image wanted by several devices is fetched once.
    fetching: tokio::sync::Mutex<()>,
    /// Reported as the gateway's `firmware.*` telemetry: `fetched`, `cache_hits`, `updated`,
    /// `failed`, and the last error.
    pub health: Arc<Health>,
}

impl Agent {
    /// The agent for the devices in `routes`, its cache in `buffer_dir/firmware`.
    pub fn new(
        buffer_dir: &Path,
        source: Source,
        readings: mpsc::Sender<Reading>,
        routes: HashMap<String, mpsc::Sender<Command>>,
    ) -> Result<Arc<Agent>, EdgeError> {
        let dir = buffer_dir.join("firmware");
        std::fs::create_dir_all(&dir)
            .map_err(|e| EdgeError::Config(format!("creating {}: {e}", dir.display())))?;
        let kept = match std::fs::read(dir.join("devices.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "firmware: devices.json unreadable; starting afresh");
                Kept::default()
            }),
            Err(_) => Kept::default(),
        };
        let health = Arc::new(Health::default());
        health
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for k in ["fetched", "cache_hits", "updated", "failed"] {
            health.gauge(k, 0);
        }
        Ok(Arc::new(Agent {
            dir,
            source,
            readings,
            routes,
            state: Mutex::new(State {
                kept,
                ..State::default()
            }),
            fetching: tokio::sync::Mutex::new(()),
            health,
        }))
    }

    /// Shared attributes of `device`: starts an update when the `fw_*` keys describe an image
    /// the device does not run yet. `pushed` is an update the platform sent (an assignment,
    /// perhaps the same one again): it retries an image that failed, which the answer to the
    /// request made at every reconnect (`pushed = false`) does not, so a device refusing an
    /// image is not offered it at every reconnect.
    pub fn offer(self: &Arc<Self>, device: &str, attrs: &Map<String, Value>, pushed: bool) {
        if !attrs.keys().any(|k| KEYS.contains(&k.as_str())) || !self.routes.contains_key(device) {
            return;
        }
        let target = {
            let mut st = self.lock();
            let seen = st.offered.entry(device.to_string()).or_default();
            for k in KEYS {
                if let Some(v) = attrs.get(k) {
                    seen.insert(k.to_string(), v.clone());
                }
            }
            let target = match Target::from_attributes(seen) {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(e) => {
                    drop(st);
                    let me = self.clone();
                    let device = device.to_string();
                    tokio::spawn(async move { me.fail(&device, e).await });
                    return;
                }
            };
            if !pushed && st.kept.failed.get(device) == Some(&target) {
                tracing::debug!(device, version = %target.version, "firmware: failed before");
                return;
            }
            if st.kept.installed.get(device) == Some(&target)
                || st.running.get(device) == Some(&target)
            {
                tracing::debug!(device, version = %target.version, "firmware: already there");
                return;
            }
            if st.running.contains_key(device) {
                // The one under way finishes first; the newer assignment is seen again at the
                // next reconnect (or the next update of the attributes).
                tracing::warn!(device, version = %target.version,
                    "firmware: an update is under way; this assignment waits for the next offer");
                return;
            }
            st.running.insert(device.to_string(), target.clone());
            target
        };
        let me = self.clone();
        let device = device.to_string();
        tokio::spawn(async move {
            let result = me.update(&device, &target).await;
            if let Err(e) = &result {
                me.fail(&device, e.clone()).await;
            }
            let mut st = me.lock();
            st.running.remove(&device);
            if result.is_err() {
                st.kept.failed.insert(device, target);
            } else {
                st.kept.failed.remove(&device);
                st.kept.installed.insert(device, target);
            }
            if let Err(e) = save(&me.dir, &st.kept) {
                tracing::warn!(error = %e, "firmware: could not record the outcome");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn update(&self, device: &str, t: &Target) -> Result<(), String> {
        tracing::info!(device, title = %t.title, version = %t.version, "firmware: update offered");
        self.report(device, json!({"fw_state": "DOWNLOADING"}))
            .await;
        let image = match self.image(device, t).await {
            Ok(i) => Arc::new(i),
            Err(e) => return Err(e),
        };
        self.report(device, json!({"fw_state": "DOWNLOADED"})).await;
        self.report(device, json!({"fw_state": "VERIFIED"})).await;
        self.report(device, json!({"fw_state": "UPDATING"})).await;
        let Some(tx) = self.routes.get(device) else {
            return Err("no connector has this device".into());
        };
        let (reply, rx) = oneshot::channel();
        let cmd = Command {
            device: device.to_string(),
            method: "firmware".into(),
            params: json!({"title": t.title, "version": t.version, "size": t.size}),
            attribute: false,
            firmware: Some(image),
            reply,
        };
        if tx.send(cmd).await.is_err() {
            return Err("the connector stopped".into());
        }
        match rx.await {
            Ok(Ok(_)) => {
                tracing::info!(device, version = %t.version, "firmware: updated");
                self.count("updated");
                let done = json!({"fw_state": "UPDATED", "current_fw_title": t.title,
                    "current_fw_version": t.version});
                self.report(device, done).await;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the connector stopped".into()),
        }
    }

    /// The verified image, from the cache or fetched into it.
    async fn image(&self, device: &str, t: &Target) -> Result<Image, String> {
        let path = self.dir.join(format!("{}.bin", t.checksum));
        let _one = self.fetching.lock().await;
        let cached = std::fs::metadata(&path).is_ok_and(|m| m.len() == t.size);
        if cached {
            // A cache file damaged on disk is removed here and fetched by the next offer.
            let p = path.clone();
            let sha256 = tokio::task::spawn_blocking(move || sha256_file(&p))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading the cached image: {e}"))?;
            if sha256 != t.digest() {
                let _ = std::fs::remove_file(&path);
                return Err("the cached image does not match fw_checksum (removed)".into());
            }
            self.count("cache_hits");
            tracing::info!(device, version = %t.version, "firmware: image from the cache");
        } else {
            // `fetch` checks size and SHA-256 as the image arrives, before it enters the cache.
            let Some(base) = self.source.base.clone() else {
                return Err("no [uplink] http to fetch firmware from is configured".into());
            };
            let (token, device, t2, p) = (
                self.source.token.clone(),
                device.to_string(),
                t.clone(),
                path.clone(),
            );
            tokio::task::spawn_blocking(move || fetch(&base, &token, &device, &t2, &p))
                .await
                .map_err(|e| format!("fetching: {e}"))??;
            self.count("fetched");
            tracing::info!(version = %t.version, bytes = t.size, "firmware: image fetched");
        }
        Ok(Image {
            title: t.title.clone(),
            version: t.version.clone(),
            path,
            size: t.size,
            sha256: t.digest(),
        })
    }

    async fn fail(&self, device: &str, error: String) {
        tracing::warn!(device, error = %error, "firmware: update failed");
        self.count("failed");
        self.health.error(format!("{device}: {error}"));
        self.report(device, json!({"fw_state": "FAILED", "fw_error": error}))
            .await;
    }

    fn count(&self, key: &'static str) {
        let mut g = self.health.gauges.lock().unwrap_or_else(|e| e.into_inner());
        *g.entry(key).or_default() += 1;
    }

    /// Sends `values` as the device's telemetry, through the queue like every reading.
    async fn report(&self, device: &str, values: Value) {
        let Value::Object(values) = values else {
            return;
        };
        let ts = {
            let mut st = self.lock();
            let prev = st.last_ts.get(device).copied().unwrap_or(0);
            let ts = now_ms().max(prev + 1);
            st.last_ts.insert(device.to_string(), ts);
            ts
        };
        let reading = Reading {
            device: device.to_string(),
            ts,
            values,
        };
        let _ = self.readings.send(reading).await;
    }
}

/// Downloads the image into `path` (through a temporary file), checking size and SHA-256.
fn fetch(base: &str, token: &str, device: &str, t: &Target, path: &Path) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(10)))
        .timeout_recv_body(Some(std::time::Duration::from_secs(600)))
        .build()
        .into();
    let url = format!("{}/api/v1/{token}/firmware", base.trim_end_matches('/'));
    let mut res = agent
        .get(&url)
        .query("title", &t.title)
        .query("version", &t.version)
        .query("device", device)
        .call()
        .map_err(|e| format!("fetching the image from {base}: {e}"))?;
    let tmp = path.with_extension("part");
    let mut out = std::fs::File::create(&tmp).map_err(|e| format!("caching the image: {e}"))?;
    let mut body = res.body_mut().with_config().limit(t.size + 1).reader();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| format!("fetching the image: {e}"))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        ctx.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("caching the image: {e}"))?;
    }
    out.sync_all()
        .map_err(|e| format!("caching the image: {e}"))?;
    let sum = hex(ctx.finish().as_ref());
    if got != t.size || sum != t.checksum {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "the image fetched ({got} bytes, SHA-256 {sum}) does not match fw_size {} and \
             fw_checksum {}",
            t.size, t.checksum
        ));
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("caching the image: {e}"))
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

fn save(dir: &Path, kept: &Kept) -> std::io::Result<()> {
    let tmp = dir.join("devices.json.part");
    std::fs::write(&tmp, serde_json::to_vec_pretty(kept)?)?;
    std::fs::rename(tmp, dir.join("devices.json"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_target_needs_every_key_and_a_sha256() {
        let sum = "AB".repeat(32);
        let full = attrs(
            json!({"fw_title": "t", "fw_version": "2", "fw_checksum": sum,
            "fw_checksum_algorithm": "SHA256", "fw_size": 10}),
        );
        let t = Target::from_attributes(&full).unwrap().unwrap();
        assert_eq!(t.checksum, "ab".repeat(32));
        let mut part = full.clone();
        part.remove("fw_size");
        assert_eq!(Target::from_attributes(&part).unwrap(), None);
        let mut md5 = full.clone();
        md5.insert("fw_checksum_algorithm".into(), json!("MD5"));
        assert!(Target::from_attributes(&md5).unwrap_err().contains("MD5"));
        let mut short = full;
        short.insert("fw_checksum".into(), json!("abc"));
        assert!(Target::from_attributes(&short).unwrap_err().contains("hex"));
    }

    #[tokio::test]
    async fn a_cached_image_is_not_fetched_and_states_follow_each_other() {
        let dir = std::env::temp_dir().join(format!("ib-fw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let image = b"firmware bytes".to_vec();
        let sum = hex(ring::digest::digest(&ring::digest::SHA256, &image).as_ref());
        std::fs::create_dir_all(dir.join("firmware")).unwrap();
        std::fs::write(dir.join("firmware").join(format!("{sum}.bin")), &image).unwrap();
        let (readings, mut rx) = mpsc::channel(16);
        let (ctx, mut commands) = mpsc::channel(4);
        let routes = HashMap::from([("dev".to_string(), ctx)]);
        // No http source: the image must come from the cache.
        let source = Source {
            base: None,
            token: "t".into(),
        };
        let agent = Agent::new(&dir, source, readings, routes).unwrap();
        let offer = attrs(
            json!({"fw_title": "t", "fw_version": "2", "fw_checksum": sum,
            "fw_size": image.len()}),
        );
        agent.offer("dev", &offer, true);
        let cmd: Command = commands.recv().await.unwrap();
        assert_eq!(cmd.firmware.as_ref().unwrap().size, image.len() as u64);
        cmd.reply.send(Ok(json!({"ok": true}))).unwrap();
        let mut states = Vec::new();
        let mut last = 0;
        while states.last().map(String::as_str) != Some("UPDATED") {
            let r = rx.recv().await.unwrap();
            assert!(r.ts > last, "timestamps increase");
            last = r.ts;
            states.push(r.values["fw_state"].as_str().unwrap().to_string());
        }
        assert_eq!(
            states,
            [
                "DOWNLOADING",
                "DOWNLOADED",
                "VERIFIED",
                "UPDATING",
                "UPDATED"
            ]
        );
        // Offered again (a reconnect): nothing to do.
        while agent.lock().running.contains_key("dev") {
            tokio::task::yield_now().await;
        }
        agent.offer("dev", &offer, true);
        assert!(commands.try_recv().is_err());
        let installed = std::fs::read_to_string(dir.join("firmware/devices.json")).unwrap();
        assert!(installed.contains(&sum));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
