//! `admin user ...` and `admin api-client ...`: who may use the management API. This process
//! is the system administrator: any role, any tenant. Changing a user (role, customer or
//! password) revokes their API sessions, as `PATCH /api/v1/users/{id}` does; a running server
//! refuses their tokens at once (sessions are checked on every request).

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use ib_core::accounts::{check_password, ApiClient, Reach, Role, User};
use ib_core::credentials::generate_token;
use ib_core::registry::DEFAULT;
use serde_json::json;

use super::output::{utc, Names, Output};
use super::{all_pages, in_tenant, Ctx};

/// Where `user add` reads the password when not from stdin.
const PASSWORD_ENV: &str = "IRONBRIDGE_NEW_PASSWORD";

/// A role on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything, every tenant (belongs to no tenant).
    #[value(name = "sys_admin")]
    SysAdmin,
    /// Everything inside one tenant.
    #[value(name = "tenant_admin")]
    TenantAdmin,
    /// Read, send RPC, acknowledge alarms.
    #[value(name = "operator")]
    Operator,
    /// Read only.
    #[value(name = "viewer")]
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::SysAdmin => Role::SysAdmin,
            RoleArg::TenantAdmin => Role::TenantAdmin,
            RoleArg::Operator => Role::Operator,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from stdin (`--password-stdin`), else from
    /// IRONBRIDGE_NEW_PASSWORD, else generated and printed once. Policy: 8+ characters, two
    /// kinds (letters, digits, others), not containing the user name.
    #[command(visible_alias = "create")]
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Tenant name or id (default `default`; none for a sys_admin).
        #[arg(long)]
        tenant: Option<String>,
        /// Customer name or id: the user sees only that customer's devices (operator, viewer).
        #[arg(long)]
        customer: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users (every tenant's unless --tenant).
    List {
        /// Tenant name or id.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Change a user's role, customer or password (read from stdin); revokes their sessions.
    Set {
        /// User name or id.
        name: String,
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Customer name or id (in the user's tenant).
        #[arg(long, conflicts_with = "no_customer")]
        customer: Option<String>,
        /// Take the user away from their customer (they see the whole tenant).
        #[arg(long)]
        no_customer: bool,
        /// Read a new password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user (not the last sys_admin); their sessions go with them.
    Delete {
        /// User name or id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiClientCommand {
    /// Create an API client; prints its client_id and client_secret (shown once).
    #[command(visible_alias = "create")]
    Add {
        name: String,
        /// The most its tokens may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Tenant name or id (default `default`; none for a sys_admin).
        #[arg(long)]
        tenant: Option<String>,
        /// Customer name or id (operator, viewer).
        #[arg(long)]
        customer: Option<String>,
    },
    /// List API clients (every tenant's unless --tenant); secrets are never shown.
    List {
        /// Tenant name or id.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete an API client (its tokens stop working at once).
    Delete {
        /// Its id or client_id.
        id: String,
    },
}

/// Resolves where a new user or client goes: nowhere for a sys_admin, else a tenant (default
/// `default`) and maybe one of its customers.
fn reach(
    ctx: &Ctx,
    role: Role,
    tenant: Option<&str>,
    customer: Option<&str>,
) -> anyhow::Result<Reach> {
    if role == Role::SysAdmin {
        if tenant.is_some() || customer.is_some() {
            bail!("a sys_admin belongs to no tenant or customer: drop --tenant and --customer");
        }
        return Ok(Reach {
            tenant: None,
            customer: None,
        });
    }
    let t = ctx.registry.tenant(tenant.unwrap_or(DEFAULT))?;
    let customer = match customer {
        Some(c) => Some(in_tenant(ctx.registry.customer(&t.id, c), &t.name)?.id),
        None => None,
    };
    Ok(Reach {
        tenant: Some(t.id),
        customer,
    })
}

/// The first line of stdin, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if password.is_empty() {
        bail!("--password-stdin: stdin had no password");
    }
    Ok(password.to_string())
}

/// A random password that passes the policy for `username`.
fn generate_password(username: &str) -> anyhow::Result<String> {
    for _ in 0..1000 {
        let p = generate_token();
        if check_password(username, &p).is_ok() {
            return Ok(p);
        }
    }
    bail!("could not generate a password for user {username:?}: pass one with --password-stdin")
}

/// Revokes every API session of a user; returns how many were open.
fn revoke_sessions(ctx: &Ctx, user_id: &str) -> anyhow::Result<usize> {
    let n = ctx
        .registry
        .db()
        .conn()
        .execute(
            "UPDATE auth_sessions SET revoked = 1 WHERE user_id = ?1 AND revoked = 0",
            [user_id],
        )
        .context("revoking the user's sessions")?;
    Ok(n)
}

const USER_HEADERS: [&str; 6] = ["USERNAME", "ROLE", "TENANT", "CUSTOMER", "CREATED", "ID"];

fn user_row(names: &mut Names, u: &User) -> Vec<String> {
    vec![
        u.username.clone(),
        u.role.as_str().to_string(),
        names.tenant(u.tenant.as_deref()),
        names.customer(u.customer.as_deref()),
        utc(u.created),
        u.id.clone(),
    ]
}

/// `admin user ...`.
pub fn user(ctx: &Ctx, c: UserCommand) -> anyhow::Result<Output> {
    let mut names = Names::new(&ctx.registry)?;
    Ok(match c {
        UserCommand::Add {
            name,
            role,
            tenant,
            customer,
            password_stdin,
        } => {
            let role = Role::from(role);
            let reach = reach(ctx, role, tenant.as_deref(), customer.as_deref())?;
            let (password, generated) = if password_stdin {
                (password_from_stdin()?, false)
            } else {
                match std::env::var(PASSWORD_ENV) {
                    Ok(p) if !p.is_empty() => (p, false),
                    _ => (generate_password(&name)?, true),
                }
            };
            let first = ctx.accounts.user_count()? == 0;
            let u = ctx
                .accounts
                .create_user(&name, &password, role, reach, false)?;
            if first && role != Role::SysAdmin {
                // `serve` makes the bootstrap `admin` only while there is no user at all.
                eprintln!(
                    "note: {name} is the data dir's first user, so `serve` will not create the \
                     bootstrap admin: add a sys_admin with `ironbridge admin user add NAME --role sys_admin`"
                );
            }
            let mut v = json!(u);
            if generated {
                v["password"] = json!(password);
            }
            let out = Output::table(v, &USER_HEADERS, vec![user_row(&mut names, &u)]);
            if generated {
                out.note(format!("password: {password}   (generated, shown once)"))
            } else {
                out
            }
        }
        UserCommand::List { tenant } => {
            let tenant = match tenant {
                Some(t) => Some(ctx.registry.tenant(&t)?.id),
                None => None,
            };
            let all =
                all_pages(|cursor| ctx.accounts.users(tenant.as_deref(), None, 1000, cursor))?;
            let rows = all.iter().map(|u| user_row(&mut names, u)).collect();
            Output::table(json!(all), &USER_HEADERS, rows)
        }
        UserCommand::Set {
            name,
            role,
            customer,
            no_customer,
            password_stdin,
        } => {
            let u = ctx.accounts.user(&name)?;
            if role.is_none() && customer.is_none() && !no_customer && !password_stdin {
                bail!(
                    "nothing to change: give --role, --customer, --no-customer or --password-stdin"
                );
            }
            // Everything is checked before anything is written.
            let customer = match (customer, &u.tenant) {
                (Some(c), Some(t)) => {
                    let found = ctx.registry.customer(t, &c);
                    Some(Some(in_tenant(found, &names.tenant(Some(t)))?.id))
                }
                (Some(_), None) => {
                    bail!("{} is a sys_admin: a sys_admin has no customer", u.username)
                }
                (None, _) if no_customer => Some(None),
                (None, _) => None,
            };
            let password = if password_stdin {
                let p = password_from_stdin()?;
                check_password(&u.username, &p)?;
                Some(p)
            } else {
                None
            };
            let mut updated = if role.is_some() || customer.is_some() {
                ctx.accounts
                    .update_user(&u.id, role.map(Role::from), customer)?
            } else {
                u.clone()
            };
            if let Some(p) = password {
                ctx.accounts.set_password(&u.id, &p)?;
                updated = ctx.accounts.user(&u.id)?;
            }
            let revoked = revoke_sessions(ctx, &u.id)?;
            let mut v = json!(updated);
            v["sessions_revoked"] = json!(revoked);
            Output::table(v, &USER_HEADERS, vec![user_row(&mut names, &updated)])
                .note(format!("sessions revoked: {revoked}"))
        }
        UserCommand::Delete { name } => {
            let u = ctx.accounts.user(&name)?;
            let u = ctx.accounts.delete_user(&u.id)?;
            Output::line(json!(u), format!("deleted user {} ({})", u.username, u.id))
        }
    })
}

const CLIENT_HEADERS: [&str; 7] = [
    "NAME",
    "ROLE",
    "TENANT",
    "CUSTOMER",
    "CLIENT_ID",
    "CREATED",
    "ID",
];

fn client_row(names: &mut Names, c: &ApiClient) -> Vec<String> {
    vec![
        c.name.clone(),
        c.role.as_str().to_string(),
        names.tenant(c.tenant.as_deref()),
        names.customer(c.customer.as_deref()),
        c.client_id.clone(),
        utc(c.created),
        c.id.clone(),
    ]
}

/// `admin api-client ...`.
pub fn api_client(ctx: &Ctx, c: ApiClientCommand) -> anyhow::Result<Output> {
    let mut names = Names::new(&ctx.registry)?;
    Ok(match c {
        ApiClientCommand::Add {
            name,
            role,
            tenant,
            customer,
        } => {
            let role = Role::from(role);
            let reach = reach(ctx, role, tenant.as_deref(), customer.as_deref())?;
            let (client, secret) = ctx.accounts.create_client(&name, role, reach)?;
            let mut v = json!(client);
            v["client_secret"] = json!(secret);
            Output::table(v, &CLIENT_HEADERS, vec![client_row(&mut names, &client)])
                .note(format!("client_id:     {}", client.client_id))
                .note(format!(
                    "client_secret: {secret}   (shown once: store it now)"
                ))
        }
        ApiClientCommand::List { tenant } => {
            let tenant = match tenant {
                Some(t) => Some(ctx.registry.tenant(&t)?.id),
                None => None,
            };
            let all =
                all_pages(|cursor| ctx.accounts.clients(tenant.as_deref(), None, 1000, cursor))?;
            let rows = all.iter().map(|c| client_row(&mut names, c)).collect();
            Output::table(json!(all), &CLIENT_HEADERS, rows)
        }
        ApiClientCommand::Delete { id } => {
            let c = ctx.accounts.delete_client(&id)?;
            Output::line(
                json!(c),
                format!("deleted API client {} ({}, {})", c.name, c.client_id, c.id),
            )
        }
    })
}
