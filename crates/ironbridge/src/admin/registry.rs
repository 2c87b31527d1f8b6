//! `admin tenant|customer|profile|device ...`.
//!
//! Deleting a tenant or a device here removes database rows only (this is another process): on
//! a running server, HTTP and CoAP requests with the device's token are refused at once (tokens
//! are looked up per request), but an open MQTT connection stays until it disconnects, and
//! the device's stored telemetry is kept. `DELETE /api/v1/devices/{id}` (and `/tenants/{id}`)
//! closes live sessions and drops the telemetry too.

use clap::Subcommand;
use ib_core::model::{Customer, Device, DeviceUpdate, NewDevice, NewProfile, Profile, ProfileSpec};
use ib_core::registry::DEFAULT;
use serde_json::json;

use super::output::{or_dash, utc, Names, Output};
use super::{all_pages, in_tenant, Ctx};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (with its `default` profile).
    Create { name: String },
    /// List tenants.
    List,
    /// Delete a tenant with all its devices, customers, users and API clients.
    ///
    /// Database rows only: on a running server open MQTT connections of its devices stay until
    /// they disconnect (the REST API's delete closes them).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create a customer in a tenant.
    #[command(visible_alias = "create")]
    Add {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
    /// List a tenant's customers.
    List {
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
    /// Delete a customer: its devices stay in the tenant, unassigned; its users and API
    /// clients are deleted.
    Delete {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
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
        /// Customer (name or id) the device belongs to.
        #[arg(long)]
        customer: Option<String>,
        /// The device is a gateway (reports for sub-devices).
        #[arg(long)]
        gateway: bool,
    },
    /// List a tenant's devices.
    List {
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
        /// Only the devices of this customer.
        #[arg(long)]
        customer: Option<String>,
    },
    /// Assign a device to a customer (its users then see it).
    Assign {
        name: String,
        /// Customer name or id.
        #[arg(long)]
        customer: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
    /// Take a device away from its customer.
    Unassign {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
    /// Delete a device.
    ///
    /// Database rows only: on a running server an open MQTT connection of the device stays
    /// until it disconnects, and its telemetry is kept (the REST API's delete closes and drops
    /// both).
    Delete {
        name: String,
        #[arg(long, default_value = DEFAULT)]
        tenant: String,
    },
}

/// `admin tenant ...`.
pub fn tenant(ctx: &Ctx, c: TenantCommand) -> anyhow::Result<Output> {
    let r = &ctx.registry;
    let headers = ["NAME", "RETENTION_DAYS", "CREATED", "ID"];
    let row = |t: &ib_core::model::Tenant| {
        vec![
            t.name.clone(),
            or_dash(t.retention_days),
            utc(t.created),
            t.id.clone(),
        ]
    };
    Ok(match c {
        TenantCommand::Create { name } => {
            let t = r.create_tenant(&name)?;
            Output::table(json!(t), &headers, vec![row(&t)])
        }
        TenantCommand::List => {
            let all = r.tenants()?;
            Output::table(json!(all), &headers, all.iter().map(row).collect())
        }
        TenantCommand::Delete { name } => {
            let t = r.delete_tenant(&name)?;
            Output::line(
                json!(t),
                format!("deleted tenant {} ({}) and everything in it", t.name, t.id),
            )
        }
    })
}

/// `admin customer ...`.
pub fn customer(ctx: &Ctx, c: CustomerCommand) -> anyhow::Result<Output> {
    let r = &ctx.registry;
    let headers = ["NAME", "TENANT", "CREATED", "ID"];
    let row = |c: &Customer, tenant: &str| {
        vec![
            c.name.clone(),
            tenant.to_string(),
            utc(c.created),
            c.id.clone(),
        ]
    };
    Ok(match c {
        CustomerCommand::Add { name, tenant } => {
            let t = r.tenant(&tenant)?;
            let c = r.create_customer(&t.id, &name)?;
            Output::table(json!(c), &headers, vec![row(&c, &t.name)])
        }
        CustomerCommand::List { tenant } => {
            let t = r.tenant(&tenant)?;
            let all = r.customers(&t.id)?;
            let rows = all.iter().map(|c| row(c, &t.name)).collect();
            Output::table(json!(all), &headers, rows)
        }
        CustomerCommand::Delete { name, tenant } => {
            let t = r.tenant(&tenant)?;
            let c = in_tenant(r.delete_customer(&t.id, &name), &t.name)?;
            Output::line(
                json!(c),
                format!(
                    "deleted customer {} ({}) of tenant {}",
                    c.name, c.id, t.name
                ),
            )
        }
    })
}

/// `admin profile ...`.
pub fn profile(ctx: &Ctx, c: ProfileCommand) -> anyhow::Result<Output> {
    let r = &ctx.registry;
    let headers = [
        "NAME",
        "PROVISION_KEY",
        "INACTIVITY_MS",
        "RETENTION_DAYS",
        "ID",
    ];
    let row = |p: &Profile| {
        vec![
            p.name.clone(),
            or_dash(p.provision_key.as_ref()),
            p.spec.inactivity_timeout_ms.to_string(),
            or_dash(p.spec.retention_days),
            p.id.clone(),
        ]
    };
    Ok(match c {
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
            let new = NewProfile {
                name,
                spec,
                provision_key,
                provision_secret,
            };
            let p = r.create_profile(&t.id, new)?;
            Output::table(json!(p), &headers, vec![row(&p)])
        }
        ProfileCommand::List { tenant } => {
            let all = r.profiles(&r.tenant(&tenant)?.id)?;
            Output::table(json!(all), &headers, all.iter().map(row).collect())
        }
        ProfileCommand::Delete { name, tenant } => {
            let t = r.tenant(&tenant)?;
            let p = in_tenant(r.delete_profile(&t.id, &name), &t.name)?;
            Output::line(json!(p), format!("deleted profile {} ({})", p.name, p.id))
        }
    })
}

/// `admin device ...`.
pub fn device(ctx: &Ctx, c: DeviceCommand) -> anyhow::Result<Output> {
    let r = &ctx.registry;
    let mut names = Names::new(r)?;
    let headers = ["NAME", "PROFILE", "CUSTOMER", "LABEL", "GATEWAY", "ID"];
    let mut row = |d: &Device| {
        vec![
            d.name.clone(),
            d.profile.clone(),
            names.customer(d.customer.as_deref()),
            or_dash(d.label.as_ref()),
            if d.gateway { "yes" } else { "no" }.to_string(),
            d.id.clone(),
        ]
    };
    Ok(match c {
        DeviceCommand::Create {
            name,
            tenant,
            profile,
            label,
            customer,
            gateway,
        } => {
            let t = r.tenant(&tenant)?;
            let new = NewDevice {
                name,
                profile,
                label,
                customer,
                gateway,
                ..NewDevice::default()
            };
            let (d, token) = in_tenant(r.create_device(&t.id, new), &t.name)?;
            let mut v = json!(d);
            v["access_token"] = json!(token);
            Output::table(v, &headers, vec![row(&d)]).note(format!(
                "access_token: {token}   (shown once: store it now)"
            ))
        }
        DeviceCommand::List { tenant, customer } => {
            let t = r.tenant(&tenant)?;
            let customer = match customer {
                Some(c) => Some(in_tenant(r.customer(&t.id, &c), &t.name)?.id),
                None => None,
            };
            let all = all_pages(|cursor| r.devices(&t.id, customer.as_deref(), 1000, cursor))?;
            let rows = all.iter().map(&mut row).collect();
            Output::table(json!(all), &headers, rows)
        }
        DeviceCommand::Assign {
            name,
            customer,
            tenant,
        } => {
            let t = r.tenant(&tenant)?;
            let d = in_tenant(r.device_in(&t.id, &name), &t.name)?;
            let update = DeviceUpdate {
                customer: Some(Some(customer)),
                ..DeviceUpdate::default()
            };
            let d = in_tenant(r.update_device(&d.id, &update), &t.name)?;
            Output::table(json!(d), &headers, vec![row(&d)])
        }
        DeviceCommand::Unassign { name, tenant } => {
            let t = r.tenant(&tenant)?;
            let d = in_tenant(r.device_in(&t.id, &name), &t.name)?;
            let update = DeviceUpdate {
                customer: Some(None),
                ..DeviceUpdate::default()
            };
            let d = in_tenant(r.update_device(&d.id, &update), &t.name)?;
            Output::table(json!(d), &headers, vec![row(&d)])
        }
        DeviceCommand::Delete { name, tenant } => {
            let t = r.tenant(&tenant)?;
            let d = in_tenant(r.device_in(&t.id, &name), &t.name)?;
            let d = r.delete_device(&d.id)?;
            Output::line(json!(d), format!("deleted device {} ({})", d.name, d.id))
        }
    })
}
