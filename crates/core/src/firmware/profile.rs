//! A package assigned to a device profile: every device of the profile gets it now, and a
//! device that joins the profile later without a package of that kind gets it from the
//! campaign driver's next pass (within a second). A device assigned another package on its own
//! keeps that one (the device's assignment wins, as in ThingsBoard).

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Kind, Package};
use crate::error::{CoreError, Result};
use crate::Platform;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS profile_firmware (
    profile_id TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE, kind TEXT NOT NULL,
    firmware_id TEXT NOT NULL REFERENCES firmware(id), assigned_ms INTEGER NOT NULL,
    PRIMARY KEY (profile_id, kind)) WITHOUT ROWID;
";

/// A profile's package of one kind.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfilePackage {
    pub profile: String,
    pub kind: Kind,
    pub package: Package,
    pub assigned: i64,
    /// Devices given the package by this assignment (when it was made).
    pub devices: u64,
}

impl Platform {
    /// Assigns a package to every device of a profile of its tenant, now and as devices join.
    pub fn assign_profile_firmware(
        &self,
        profile: &str,
        package: &str,
        now: i64,
    ) -> Result<ProfilePackage> {
        let pr = self.registry.profile_by_id(profile)?;
        let pkg = self.firmware.get(package)?;
        if pkg.tenant != pr.tenant {
            return Err(CoreError::NotFound(format!("firmware {package:?}")));
        }
        self.db.conn().execute(
            "INSERT INTO profile_firmware (profile_id, kind, firmware_id, assigned_ms)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (profile_id, kind) DO UPDATE SET
             firmware_id = excluded.firmware_id, assigned_ms = excluded.assigned_ms",
            params![pr.id, pkg.kind.as_str(), pkg.id, now],
        )?;
        let devices: Vec<String> = {
            let conn = self.db.conn();
            let mut st = conn.prepare("SELECT id FROM devices WHERE profile_id = ?1")?;
            let rows = st.query_map([&pr.id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for d in &devices {
            self.assign_package(d, &pkg.id, None, now)?;
        }
        let mut p = self
            .profile_firmware(&pr.id, pkg.kind)?
            .ok_or_else(|| CoreError::NotFound(format!("firmware of profile {profile:?}")))?;
        p.devices = devices.len() as u64;
        Ok(p)
    }

    /// The profile's package of `kind`.
    pub fn profile_firmware(&self, profile: &str, kind: Kind) -> Result<Option<ProfilePackage>> {
        let row: Option<(String, i64)> = self
            .db
            .conn()
            .query_row(
                "SELECT firmware_id, assigned_ms FROM profile_firmware
                 WHERE profile_id = ?1 AND kind = ?2",
                params![profile, kind.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((fw, assigned)) = row else {
            return Ok(None);
        };
        Ok(Some(ProfilePackage {
            profile: profile.to_string(),
            kind,
            package: self.firmware.get(&fw)?,
            assigned,
            devices: 0,
        }))
    }

    /// Stops giving the profile's package to new devices (assigned devices keep it); whether
    /// there was one.
    pub fn unassign_profile_firmware(&self, profile: &str, kind: Kind) -> Result<bool> {
        let n = self.db.conn().execute(
            "DELETE FROM profile_firmware WHERE profile_id = ?1 AND kind = ?2",
            params![profile, kind.as_str()],
        )?;
        Ok(n > 0)
    }

    /// Gives devices of a profile with a package, and none of that kind yet, the profile's
    /// package; returns how many.
    pub(crate) fn follow_profiles(&self, now: i64) -> Result<usize> {
        let missing: Vec<(String, String)> = {
            let conn = self.db.conn();
            let mut st = conn.prepare_cached(
                "SELECT d.id, pf.firmware_id FROM profile_firmware pf
                 JOIN devices d ON d.profile_id = pf.profile_id
                 WHERE NOT EXISTS (SELECT 1 FROM device_firmware df
                     WHERE df.device_id = d.id AND df.kind = pf.kind)
                 LIMIT 1000",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (d, fw) in &missing {
            self.assign_package(d, fw, None, now)?;
        }
        Ok(missing.len())
    }
}
