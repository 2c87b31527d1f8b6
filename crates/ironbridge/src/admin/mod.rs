//! `ironbridge admin`: tenants, customers, device profiles, devices, users and API clients,
//! straight on the data dir's database (SQLite allows it while a server runs). Prints tables,
//! or JSON with `--json`. Secrets (a device's access token, a generated password, an API
//! client's secret) are printed once, when made, and never again.
//!
//! - `registry`: tenants, customers, profiles, devices;
//! - `accounts`: users and API clients (changing a user revokes their API sessions);
//! - `firmware`: OTA packages and campaigns, through a running server's API (`rest`);
//! - `output`: tables, JSON, names for ids.

mod accounts;
mod firmware;
mod output;
mod registry;
mod rest;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ib_core::accounts::Accounts;
use ib_core::registry::Registry;
use ib_core::CoreError;

pub use accounts::{ApiClientCommand, UserCommand};
pub use registry::{CustomerCommand, DeviceCommand, ProfileCommand, TenantCommand};

/// `ironbridge admin` flags.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Data directory (default ./data).
    #[arg(long, env = "IRONBRIDGE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Print JSON (as the REST API shows things) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub what: AdminCommand,
}

/// What to manage.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Customers (groups of a tenant's devices).
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Device profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Users of the management API.
    #[command(subcommand)]
    User(UserCommand),
    /// API clients (OAuth 2.0 client credentials for programs).
    #[command(subcommand)]
    ApiClient(ApiClientCommand),
    /// OTA packages and campaigns (through a running server: --url, --password or --token).
    Firmware(firmware::FirmwareArgs),
}

/// The data dir's registry and accounts.
pub struct Ctx {
    pub registry: Registry,
    pub accounts: Accounts,
}

/// Runs an admin command.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::Firmware(f) = args.what {
        return firmware::run(f)?.print(args.json);
    }
    let dir = args.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    let db =
        ib_core::db::Db::open(&dir.join("platform.db")).context("opening the platform database")?;
    let db = std::sync::Arc::new(db);
    let ctx = Ctx {
        registry: Registry::new(db.clone()),
        accounts: Accounts::new(db),
    };
    ctx.registry.ensure_default()?;
    let out = match args.what {
        AdminCommand::Tenant(c) => registry::tenant(&ctx, c)?,
        AdminCommand::Customer(c) => registry::customer(&ctx, c)?,
        AdminCommand::Profile(c) => registry::profile(&ctx, c)?,
        AdminCommand::Device(c) => registry::device(&ctx, c)?,
        AdminCommand::User(c) => accounts::user(&ctx, c)?,
        AdminCommand::ApiClient(c) => accounts::api_client(&ctx, c)?,
        AdminCommand::Firmware(_) => unreachable!("handled above"),
    };
    out.print(args.json)
}

/// Every page of a cursor-paged listing.
fn all_pages<T>(
    mut page: impl FnMut(Option<&str>) -> ib_core::Result<(Vec<T>, Option<String>)>,
) -> anyhow::Result<Vec<T>> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (items, next) = page(cursor.as_deref())?;
        all.extend(items);
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok(all),
        }
    }
}

/// Says which tenant a name was looked up in when it is not there.
fn in_tenant<T>(r: ib_core::Result<T>, tenant: &str) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        CoreError::NotFound(what) => anyhow::anyhow!("{what} not found in tenant {tenant}"),
        e => e.into(),
    })
}
