//! Over-the-air updates: firmware and software packages (the image in `firmware/` in the data
//! dir, its row in `platform.db`), the tenant's Ed25519 keys that signed images are checked
//! against, assignment to a device (ThingsBoard's shared attributes `fw_title`, `fw_version`,
//! `fw_checksum`, `fw_checksum_algorithm`, `fw_size`, so that its device SDKs update
//! unchanged; a signed image adds `fw_signature`, hex, and `fw_signature_algorithm`), the image served in chunks to the device, and the state the device reports
//! (`fw_state`, `fw_error`, `current_fw_title`, `current_fw_version` telemetry).
//!
//! Packages are immutable: an image is written to a temporary file, synced, checked and renamed
//! before its row exists; a package assigned to a device cannot be deleted.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::signature::{UnparsedPublicKey, ED25519};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};
use crate::Platform;
use campaign::{Campaigns, HistoryEntry};

/// The largest image accepted.
pub const MAX_IMAGE_BYTES: usize = 256 << 20;
/// The largest chunk a device may ask for.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS firmware (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, title TEXT NOT NULL, version TEXT NOT NULL, profile_id TEXT,
    size INTEGER NOT NULL, checksum TEXT NOT NULL, signed_by TEXT, created_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, kind, title, version));
CREATE TABLE IF NOT EXISTS firmware_keys (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, public_key BLOB NOT NULL, created_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS device_firmware (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE, kind TEXT NOT NULL,
    firmware_id TEXT NOT NULL REFERENCES firmware(id), assigned_ms INTEGER NOT NULL,
    state TEXT, error TEXT, state_ms INTEGER, current_title TEXT, current_version TEXT,
    PRIMARY KEY (device_id, kind)) WITHOUT ROWID;
";

/// Firmware (`fw_*` attributes) or software (`sw_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Firmware,
    Software,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Firmware => "firmware",
            Kind::Software => "software",
        }
    }

    fn parse(s: &str) -> Kind {
        if s == "software" {
            Kind::Software
        } else {
            Kind::Firmware
        }
    }

    /// The attribute prefix: `fw` or `sw`.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Firmware => "fw",
            Kind::Software => "sw",
        }
    }
}

/// A package's description, as uploaded.
#[derive(Debug, Clone, Default)]
pub struct NewPackage {
    pub kind: Kind,
    pub title: String,
    pub version: String,
    /// Profile id or name the package is meant for (informative).
    pub profile: Option<String>,
    /// An Ed25519 signature over the image, checked against the tenant's keys.
    pub signature: Option<Vec<u8>>,
}

/// A stored package.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Package {
    pub id: String,
    pub tenant: String,
    pub kind: Kind,
    pub title: String,
    pub version: String,
    pub profile: Option<String>,
    pub size: u64,
    /// SHA-256 of the image, hex.
    pub checksum: String,
    pub checksum_algorithm: String,
    /// The id of the key whose signature verified, for signed images.
    pub signed_by: Option<String>,
    /// The Ed25519 signature over the image, hex (delivered to devices as `fw_signature`).
    pub signature: Option<String>,
    pub created: i64,
}

/// A public key images are verified against.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SigningKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The 32-byte Ed25519 public key, hex.
    pub public_key: String,
    pub created: i64,
}

/// A device's package of one kind: what is assigned and what the device last reported.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceFirmware {
    pub device: String,
    pub kind: Kind,
    pub package: Package,
    pub assigned: i64,
    /// DOWNLOADING, DOWNLOADED, VERIFIED, UPDATING, UPDATED, FAILED (as reported).
    pub state: Option<String>,
    pub error: Option<String>,
    pub state_ts: Option<i64>,
    pub current_title: Option<String>,
    pub current_version: Option<String>,
}

pub mod campaign;
pub mod profile;

/// Package storage.
pub struct Firmware {
    db: Arc<Db>,
    dir: PathBuf,
    /// Staged rollouts and the per-device history.
    pub campaigns: Campaigns,
}

/// An image being uploaded: written to a temporary file in the images' directory and hashed as
/// it arrives, so no upload is held in memory; removed when dropped unfinished.
pub struct ImageUpload {
    file: Option<std::fs::File>,
    id: String,
    tmp: PathBuf,
    digest: ring::digest::Context,
    size: u64,
}

impl ImageUpload {
    /// Appends bytes (refused past the largest image).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.size += bytes.len() as u64;
        if self.size > MAX_IMAGE_BYTES as u64 {
            return Err(CoreError::Invalid(format!(
                "the image must be at most {} MiB",
                MAX_IMAGE_BYTES >> 20
            )));
        }
        self.digest.update(bytes);
        let f = self
            .file
            .as_mut()
            .expect("an unfinished upload has its file");
        f.write_all(bytes).map_err(io)
    }
}

impl Drop for ImageUpload {
    fn drop(&mut self) {
        // Finished uploads were renamed: this removes only abandoned or refused ones.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn package_row(r: &Row) -> rusqlite::Result<Package> {
    Ok(Package {
        id: r.get(0)?,
        tenant: r.get(1)?,
        kind: Kind::parse(&r.get::<_, String>(2)?),
        title: r.get(3)?,
        version: r.get(4)?,
        profile: r.get(5)?,
        size: r.get::<_, i64>(6)? as u64,
        checksum: r.get(7)?,
        checksum_algorithm: "SHA256".into(),
        signed_by: r.get(8)?,
        created: r.get(9)?,
        signature: r.get::<_, Option<Vec<u8>>>(10)?.map(|b| hex(&b)),
    })
}

const SELECT: &str = "SELECT id, tenant_id, kind, title, version, profile_id, size, checksum,
    signed_by, created_ms, signature FROM firmware";

/// A failure with an image file.
fn io(e: std::io::Error) -> CoreError {
    CoreError::Store(format!("firmware image: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(what: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() || s.len() > 128 {
        return Err(CoreError::Invalid(format!(
            "{what} must be 1 to 128 characters"
        )));
    }
    Ok(())
}

impl Firmware {
    /// Packages in `db`, images under `dir`.
    pub fn open(db: Arc<Db>, dir: &Path) -> Result<Firmware> {
        db.conn().execute_batch(SCHEMA)?;
        db.conn().execute_batch(campaign::SCHEMA)?;
        db.conn().execute_batch(profile::SCHEMA)?;
        let has: bool = db
            .conn()
            .prepare("SELECT 1 FROM pragma_table_info('firmware') WHERE name = 'signature'")?
            .exists([])?;
        if !has {
            db.conn()
                .execute_batch("ALTER TABLE firmware ADD COLUMN signature BLOB;")?;
        }
        Ok(Firmware {
            campaigns: Campaigns::new(db.clone()),
            db,
            dir: dir.to_path_buf(),
        })
    }

    /// The image file of a package.
    pub fn image(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.bin"))
    }

    /// Stores a package of `tenant`: the image is checked (size, signature) and on disk before
    /// the row exists.
    pub fn create(&self, tenant: &str, new: NewPackage, image: &[u8]) -> Result<Package> {
        let mut upload = self.begin_upload()?;
        upload.write(image)?;
        self.finish_upload(tenant, new, upload)
    }

    /// A new image file to write an upload into as it arrives (removed unless finished).
    pub fn begin_upload(&self) -> Result<ImageUpload> {
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let id = uuid::Uuid::new_v4().to_string();
        let tmp = self.dir.join(format!("{id}.part"));
        Ok(ImageUpload {
            file: Some(std::fs::File::create(&tmp).map_err(io)?),
            id,
            tmp,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
        })
    }

    /// Stores the package of a written upload: size and signature checked (a signed image is
    /// read back whole: Ed25519 signs the whole message), file synced and renamed, then the row.
    pub fn finish_upload(
        &self,
        tenant: &str,
        new: NewPackage,
        mut upload: ImageUpload,
    ) -> Result<Package> {
        text("title", &new.title)?;
        text("version", &new.version)?;
        if upload.size == 0 || upload.size > MAX_IMAGE_BYTES as u64 {
            return Err(CoreError::Invalid(format!(
                "the image must be 1 byte to {} MiB, not {} bytes",
                MAX_IMAGE_BYTES >> 20,
                upload.size
            )));
        }
        let file = upload
            .file
            .take()
            .expect("an unfinished upload has its file");
        file.sync_all().map_err(io)?;
        drop(file);
        let signed_by = match &new.signature {
            None => None,
            Some(sig) => {
                let image = std::fs::read(&upload.tmp).map_err(io)?;
                Some(self.verify(tenant, &image, sig)?)
            }
        };
        let checksum = hex(upload.digest.clone().finish().as_ref());
        let id = upload.id.clone();
        std::fs::rename(&upload.tmp, self.image(&id)).map_err(io)?;
        let inserted = self.db.conn().execute(
            "INSERT INTO firmware (id, tenant_id, kind, title, version, profile_id, size, checksum,
             signed_by, created_ms, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                id,
                tenant,
                new.kind.as_str(),
                new.title.trim(),
                new.version.trim(),
                new.profile,
                upload.size as i64,
                checksum,
                signed_by,
                now_ms(),
                new.signature.as_ref().filter(|_| signed_by.is_some())
            ],
        );
        if let Err(e) = inserted {
            let _ = std::fs::remove_file(self.image(&id));
            return Err(CoreError::unique(
                e,
                format!("{} {} {}", new.kind.as_str(), new.title, new.version),
            ));
        }
        self.get(&id)
    }

    /// The id of the tenant's key whose Ed25519 signature over `image` verifies.
    fn verify(&self, tenant: &str, image: &[u8], sig: &[u8]) -> Result<String> {
        let keys = self.keys(Some(tenant))?;
        if keys.is_empty() {
            return Err(CoreError::Invalid(
                "the image is signed but the tenant has no signing keys (POST /api/v1/firmware-keys)"
                    .into(),
            ));
        }
        let conn = self.db.conn();
        for k in keys {
            let raw: Vec<u8> = conn.query_row(
                "SELECT public_key FROM firmware_keys WHERE id = ?1",
                [&k.id],
                |r| r.get(0),
            )?;
            if UnparsedPublicKey::new(&ED25519, &raw)
                .verify(image, sig)
                .is_ok()
            {
                return Ok(k.id);
            }
        }
        Err(CoreError::Invalid(
            "bad signature: it does not verify with any of the tenant's keys".into(),
        ))
    }

    /// A package by id.
    pub fn get(&self, id: &str) -> Result<Package> {
        self.db
            .conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], package_row)
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("firmware {id:?}")))
    }

    /// Packages by title and version: of one tenant, or of all.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Package>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{SELECT} WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY title, version, id"
        ))?;
        let rows = st.query_map([tenant], package_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a package no device has assigned.
    pub fn delete(&self, id: &str) -> Result<Package> {
        let p = self.get(id)?;
        if self.campaigns.uses(id)? {
            return Err(CoreError::Conflict(format!(
                "firmware {id:?} is rolled out by a campaign"
            )));
        }
        let profiles: i64 = self.db.conn().query_row(
            "SELECT count(*) FROM profile_firmware WHERE firmware_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if profiles > 0 {
            return Err(CoreError::Conflict(format!(
                "firmware {id:?} is assigned to {profiles} profile(s)"
            )));
        }
        let conn = self.db.conn();
        let used: i64 = conn.query_row(
            "SELECT count(*) FROM device_firmware WHERE firmware_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if used > 0 {
            return Err(CoreError::Conflict(format!(
                "firmware {id:?} is assigned to {used} device(s)"
            )));
        }
        conn.execute("DELETE FROM firmware WHERE id = ?1", [id])?;
        drop(conn);
        let _ = std::fs::remove_file(self.image(id));
        Ok(p)
    }

    /// `len` bytes of a package's image from `offset` (fewer at its end, none past it).
    pub fn read(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut f = std::fs::File::open(self.image(id)).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut buf = Vec::with_capacity(len.min(MAX_IMAGE_BYTES));
        f.take(len as u64).read_to_end(&mut buf).map_err(io)?;
        Ok(buf)
    }

    /// Registers a public key of `tenant` (32 bytes, Ed25519).
    pub fn add_key(&self, tenant: &str, name: &str, public_key: &[u8]) -> Result<SigningKey> {
        text("name", name)?;
        if public_key.len() != 32 {
            return Err(CoreError::Invalid(format!(
                "an Ed25519 public key is 32 bytes, not {}",
                public_key.len()
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.db
            .conn()
            .execute(
                "INSERT INTO firmware_keys (id, tenant_id, name, public_key, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, tenant, name.trim(), public_key, now_ms()],
            )
            .map_err(|e| CoreError::unique(e, format!("key {name:?}")))?;
        self.key(&id)
    }

    /// A key by id.
    pub fn key(&self, id: &str) -> Result<SigningKey> {
        self.db
            .conn()
            .query_row(
                "SELECT id, tenant_id, name, public_key, created_ms FROM firmware_keys WHERE id = ?1",
                [id],
                key_row,
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("key {id:?}")))
    }

    /// Keys: of one tenant, or of all.
    pub fn keys(&self, tenant: Option<&str>) -> Result<Vec<SigningKey>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT id, tenant_id, name, public_key, created_ms FROM firmware_keys
             WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY name",
        )?;
        let rows = st.query_map([tenant], key_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a key (packages it verified stay).
    pub fn delete_key(&self, id: &str) -> Result<SigningKey> {
        let k = self.key(id)?;
        self.db
            .conn()
            .execute("DELETE FROM firmware_keys WHERE id = ?1", [id])?;
        Ok(k)
    }

    /// The package of `kind` assigned to a device, with what the device reported.
    pub fn of_device(&self, device: &str, kind: Kind) -> Result<Option<DeviceFirmware>> {
        let row = self
            .db
            .conn()
            .query_row(
                "SELECT firmware_id, assigned_ms, state, error, state_ms, current_title,
                 current_version FROM device_firmware WHERE device_id = ?1 AND kind = ?2",
                params![device, kind.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((fw, assigned, state, error, state_ts, current_title, current_version)) = row
        else {
            return Ok(None);
        };
        Ok(Some(DeviceFirmware {
            device: device.to_string(),
            kind,
            package: self.get(&fw)?,
            assigned,
            state,
            error,
            state_ts,
            current_title,
            current_version,
        }))
    }

    /// Records what a device reported about its updates (telemetry keys `fw_state`, `fw_error`,
    /// `current_fw_title`, `current_fw_version`, and the `sw_` ones); other keys are ignored.
    pub fn report(&self, device: &str, ts: i64, values: &Map<String, Value>) -> Result<()> {
        for kind in [Kind::Firmware, Kind::Software] {
            let p = kind.prefix();
            let get = |k: String| values.get(&k).and_then(Value::as_str).map(str::to_string);
            let state = get(format!("{p}_state"));
            let title = get(format!("current_{p}_title"));
            let version = get(format!("current_{p}_version"));
            if state.is_none() && title.is_none() && version.is_none() {
                continue;
            }
            let error = get(format!("{p}_error")).filter(|e| !e.is_empty());
            self.db.conn().execute(
                "UPDATE device_firmware SET
                   state = coalesce(?3, state), state_ms = CASE WHEN ?3 IS NULL THEN state_ms ELSE ?4 END,
                   error = CASE WHEN ?3 IS NULL THEN error ELSE ?5 END,
                   current_title = coalesce(?6, current_title),
                   current_version = coalesce(?7, current_version)
                 WHERE device_id = ?1 AND kind = ?2",
                params![device, kind.as_str(), state, ts, error, title, version],
            )?;
            let Some(state) = state else { continue };
            let assigned: Option<String> = self
                .db
                .conn()
                .query_row(
                    "SELECT firmware_id FROM device_firmware WHERE device_id = ?1 AND kind = ?2",
                    params![device, kind.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(fw) = assigned {
                self.campaigns
                    .note_report(device, kind, &fw, ts, &state, error.as_deref())?;
            }
        }
        Ok(())
    }
}

fn key_row(r: &Row) -> rusqlite::Result<SigningKey> {
    Ok(SigningKey {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        public_key: hex(&r.get::<_, Vec<u8>>(3)?),
        created: r.get(4)?,
    })
}

impl Platform {
    /// Assigns a package to a device of its tenant: recorded, and announced to the device as
    /// ThingsBoard's shared attributes (`fw_title`, `fw_version`, `fw_checksum`,
    /// `fw_checksum_algorithm`, `fw_size`; `sw_*` for software).
    pub fn assign_firmware(&self, device: &str, package: &str) -> Result<DeviceFirmware> {
        self.assign_package(device, package, None, now_ms())
    }

    /// [`Platform::assign_firmware`] on behalf of a campaign (or of a person: `None`),
    /// recorded in the device's history as ASSIGNED at `now`.
    pub(crate) fn assign_package(
        &self,
        device: &str,
        package: &str,
        campaign: Option<&str>,
        now: i64,
    ) -> Result<DeviceFirmware> {
        let d = self.registry.device(device)?;
        let pkg = self.firmware.get(package)?;
        if pkg.tenant != d.tenant {
            return Err(CoreError::NotFound(format!("firmware {package:?}")));
        }
        self.db.conn().execute(
            "INSERT INTO device_firmware (device_id, kind, firmware_id, assigned_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (device_id, kind) DO UPDATE SET firmware_id = excluded.firmware_id,
               assigned_ms = excluded.assigned_ms, state = NULL, error = NULL, state_ms = NULL",
            params![d.id, pkg.kind.as_str(), pkg.id, now_ms()],
        )?;
        let p = pkg.kind.prefix();
        let attrs = json!({
            format!("{p}_title"): pkg.title,
            format!("{p}_version"): pkg.version,
            format!("{p}_checksum"): pkg.checksum,
            format!("{p}_checksum_algorithm"): "SHA256",
            format!("{p}_size"): pkg.size,
        });
        let Value::Object(mut attrs) = attrs else {
            unreachable!("a JSON object")
        };
        // A signed image's signature goes with it; an unsigned one takes an old one away.
        let sig_keys = [format!("{p}_signature"), format!("{p}_signature_algorithm")];
        match &pkg.signature {
            Some(sig) => {
                attrs.insert(sig_keys[0].clone(), json!(sig));
                attrs.insert(sig_keys[1].clone(), json!("ED25519"));
            }
            None => {
                self.delete_shared(&d.id, &sig_keys)?;
            }
        }
        self.set_shared(&d.id, attrs)?;
        self.firmware.campaigns.record(&HistoryEntry {
            device: d.id.clone(),
            kind: pkg.kind,
            firmware_id: pkg.id.clone(),
            campaign: campaign.map(str::to_string),
            ts: now,
            state: campaign::ASSIGNED.into(),
            error: None,
        })?;
        self.firmware
            .of_device(&d.id, pkg.kind)?
            .ok_or_else(|| CoreError::NotFound(format!("firmware of {device:?}")))
    }

    /// Chunk `index` of `size` bytes of the firmware assigned to a device (`size` 0: the whole
    /// image), as ThingsBoard's `v2/fw/request/{id}/chunk/{n}` serves it.
    pub fn firmware_chunk(&self, device: &str, size: usize, index: u64) -> Result<Vec<u8>> {
        let Some(fw) = self.firmware.of_device(device, Kind::Firmware)? else {
            return Err(CoreError::NotFound(
                "no firmware is assigned to the device".into(),
            ));
        };
        if size > MAX_CHUNK_BYTES {
            return Err(CoreError::Invalid(format!(
                "a chunk is at most {MAX_CHUNK_BYTES} bytes"
            )));
        }
        if size == 0 {
            return self
                .firmware
                .read(&fw.package.id, 0, fw.package.size as usize);
        }
        let offset = index.saturating_mul(size as u64);
        self.firmware.read(&fw.package.id, offset, size)
    }
}

#[cfg(test)]
mod tests;
