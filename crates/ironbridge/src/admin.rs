//! `ironbridge admin`: tenants, device profiles and devices, straight on the data dir's
//! database (SQLite allows it while a server runs). Prints JSON; `device create` prints the
//! access token, which is never shown again.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ib_core::model::{NewDevice, NewProfile, ProfileSpec};
use ib_core::registry::{Registry, DEFAULT};
use serde_json::json;

/// `ironbridge admin` flags.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Data directory (default ./data).
    #[arg(long, env = "IRONBRIDGE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub what: AdminCommand,
}

/// What to manage.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Device profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Devices.
    #[command(subcommand)]
    Device(DeviceCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (with its `default` profile).
    Create { name: String },
    /// List tenants.
    List,
    /// Delete a tenant with all its devices.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Create a device profile.
    Create {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
        #[arg(long, requires = "provision_secret")]
        provision_key: Option<String>,
        #[arg(long, requires = "provision_key")]
        provision_secret: Option<String>,
        /// Extra MQTT topic filter its devices may publish to (repeatable).
        #[arg(long)]
        allow_publish: Vec<String>,
        /// Extra MQTT topic filter its devices may subscribe to (repeatable).
        #[arg(long)]
        allow_subscribe: Vec<String>,
        /// HTTP/CoAP devices count as offline after this many ms without traffic.
        #[arg(long)]
        inactivity_timeout_ms: Option<u64>,
    },
    /// List a tenant's profiles.
    List {
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
    /// Delete a profile no device uses.
    Delete {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create a device; prints its access token (shown once).
    Create {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        label: Option<String>,
        /// The device is a gateway (reports for sub-devices).
        #[arg(long)]
        gateway: bool,
    },
    /// List a tenant's devices.
    List {
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
    /// Delete a device.
    Delete {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
}

/// Runs an admin command.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    let db =
        ib_core::db::Db::open(&dir.join("platform.db")).context("opening the platform database")?;
    let r = Registry::new(std::sync::Arc::new(db));
    r.ensure_default()?;
    let out = match args.what {
        AdminCommand::Tenant(c) => match c {
            TenantCommand::Create { name } => json!(r.create_tenant(&name)?),
            TenantCommand::List => json!(r.tenants()?),
            TenantCommand::Delete { name } => json!(r.delete_tenant(&name)?),
        },
        AdminCommand::Profile(c) => match c {
            ProfileCommand::Create {
                name,
                tenant,
                provision_key,
                provision_secret,
                allow_publish,
                allow_subscribe,
                inactivity_timeout_ms,
            } => {
                let t = r.tenant(&tenant)?;
                let mut spec = ProfileSpec {
                    allow_publish,
                    allow_subscribe,
                    ..ProfileSpec::default()
                };
                if let Some(ms) = inactivity_timeout_ms {
                    spec.inactivity_timeout_ms = ms;
                }
                json!(r.create_profile(
                    &t.id,
                    NewProfile {
                        name,
                        spec,
                        provision_key,
                        provision_secret
                    }
                )?)
            }
            ProfileCommand::List { tenant } => json!(r.profiles(&r.tenant(&tenant)?.id)?),
            ProfileCommand::Delete { name, tenant } => {
                json!(r.delete_profile(&r.tenant(&tenant)?.id, &name)?)
            }
        },
        AdminCommand::Device(c) => match c {
            DeviceCommand::Create {
                name,
                tenant,
                profile,
                label,
                gateway,
            } => {
                let t = r.tenant(&tenant)?;
                let new = NewDevice {
                    name,
                    profile,
                    label,
                    gateway,
                    ..NewDevice::default()
                };
                let (d, token) = r.create_device(&t.id, new)?;
                let mut v = json!(d);
                v["access_token"] = json!(token);
                v
            }
            DeviceCommand::List { tenant } => {
                let t = r.tenant(&tenant)?;
                let mut all = Vec::new();
                let mut cursor = None;
                loop {
                    let (page, next) = r.devices(&t.id, 1000, cursor.as_deref())?;
                    all.extend(page);
                    match next {
                        Some(n) => cursor = Some(n),
                        None => break,
                    }
                }
                json!(all)
            }
            DeviceCommand::Delete { name, tenant } => {
                let d = r.device_in(&r.tenant(&tenant)?.id, &name)?;
                json!(r.delete_device(&d.id)?)
            }
        },
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
