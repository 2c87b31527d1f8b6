//! Who may use the management API: users (argon2 passwords, a role, a tenant and optionally a
//! customer), API clients for programs (OAuth 2.0 client credentials; the secret is random and
//! stored as SHA-256), the four roles and the password policy. Sessions and tokens are the api
//! crate's; this module only stores and checks identities.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::credentials::{generate_token, hash_password, sha256_hex, verify_password};
use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};

/// What a caller may do. Ordered: each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read, send RPC, acknowledge alarms.
    Operator,
    /// Everything inside one tenant: devices, profiles, customers, users, API clients.
    TenantAdmin,
    /// Everything, every tenant.
    SysAdmin,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::TenantAdmin => "tenant_admin",
            Role::SysAdmin => "sys_admin",
        }
    }

    /// Parses a role name (`sysadmin` is accepted for databases made before roles existed).
    pub fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "tenant_admin" => Role::TenantAdmin,
            "sys_admin" | "sysadmin" => Role::SysAdmin,
            _ => {
                return Err(CoreError::Invalid(format!(
                    "unknown role {s:?} (sys_admin, tenant_admin, operator or viewer)"
                )))
            }
        })
    }

    /// OAuth scopes this role grants, narrowest first.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            Role::Viewer => &["read"],
            Role::Operator => &["read", "control"],
            Role::TenantAdmin => &["read", "control", "write"],
            Role::SysAdmin => &["read", "control", "write", "system"],
        }
    }

    /// The role an OAuth scope stands for.
    pub fn of_scope(scope: &str) -> Option<Role> {
        Some(match scope {
            "read" => Role::Viewer,
            "control" => Role::Operator,
            "write" => Role::TenantAdmin,
            "system" => Role::SysAdmin,
            _ => return None,
        })
    }
}

/// Where a user or client belongs: nowhere (system administrators), a tenant, or a customer of
/// a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub tenant: Option<String>,
    pub customer: Option<String>,
}

impl Reach {
    /// Whether something in `tenant` (assigned to `customer`, if any) is within reach for
    /// `role`. System administrators reach everything; tenant users their tenant; customer
    /// users only what is assigned to their customer.
    pub fn covers(&self, role: Role, tenant: &str, customer: Option<&str>) -> bool {
        if role == Role::SysAdmin {
            return true;
        }
        if self.tenant.as_deref() != Some(tenant) {
            return false;
        }
        match &self.customer {
            None => true,
            Some(own) => customer == Some(own.as_str()),
        }
    }
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: Role,
    /// The tenant's id (`null` for system administrators).
    pub tenant: Option<String>,
    /// The customer's id, for customer users.
    pub customer: Option<String>,
    pub created: i64,
}

impl User {
    /// Where the user belongs.
    pub fn reach(&self) -> Reach {
        Reach {
            tenant: self.tenant.clone(),
            customer: self.customer.clone(),
        }
    }
}

/// A new user's fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    /// Tenant id or name (required except for system administrators; defaults to the caller's).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Customer id or name: the user sees only that customer's devices.
    #[serde(default)]
    pub customer: Option<String>,
}

/// A program's identity for the OAuth 2.0 client-credentials grant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiClient {
    pub id: String,
    /// What the program sends as `client_id`.
    pub client_id: String,
    pub name: String,
    /// The most the client may do; a token request may ask for less (`scope`).
    pub role: Role,
    pub tenant: Option<String>,
    pub customer: Option<String>,
    pub created: i64,
}

/// Minimum password length.
pub const MIN_PASSWORD_LEN: usize = 8;

/// The password policy: at least [`MIN_PASSWORD_LEN`] characters, not the user name, at least
/// two kinds of character (letters, digits, others), at most 128 bytes (argon2 input).
pub fn check_password(username: &str, password: &str) -> Result<()> {
    let fail = |why: &str| Err(CoreError::Invalid(format!("password {why}")));
    if password.chars().count() < MIN_PASSWORD_LEN {
        return fail(&format!("must have at least {MIN_PASSWORD_LEN} characters"));
    }
    if password.len() > 128 {
        return fail("must have at most 128 bytes");
    }
    if username.chars().count() >= 3 && password.to_lowercase().contains(&username.to_lowercase()) {
        return fail("must not contain the user name");
    }
    let kinds = [
        password.chars().any(|c| c.is_alphabetic()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    if kinds.iter().filter(|k| **k).count() < 2 {
        return fail("must mix at least two of: letters, digits, other characters");
    }
    Ok(())
}

/// Checks that a role fits where it is placed.
fn check_placement(role: Role, reach: &Reach) -> Result<()> {
    let bad = |why: &str| Err(CoreError::Invalid(why.to_string()));
    match (role, reach.tenant.is_some(), reach.customer.is_some()) {
        (Role::SysAdmin, false, false) => Ok(()),
        (Role::SysAdmin, _, _) => bad("a sys_admin belongs to no tenant"),
        (_, false, _) => bad("tenant_admin, operator and viewer belong to a tenant"),
        (Role::TenantAdmin, true, true) => {
            bad("a customer's user is an operator or a viewer, not a tenant_admin")
        }
        _ => Ok(()),
    }
}

/// Users and API clients.
pub struct Accounts {
    db: Arc<Db>,
}

const USER_SELECT: &str =
    "SELECT id, username, role, tenant_id, customer_id, created_ms, password_hash FROM users";
const CLIENT_SELECT: &str =
    "SELECT id, client_id, name, role, tenant_id, customer_id, created_ms, secret_hash FROM api_clients";

fn user_row(r: &Row) -> rusqlite::Result<(User, String)> {
    let role: String = r.get(2)?;
    Ok((
        User {
            id: r.get(0)?,
            username: r.get(1)?,
            role: Role::parse(&role).unwrap_or(Role::Viewer),
            tenant: r.get(3)?,
            customer: r.get(4)?,
            created: r.get(5)?,
        },
        r.get(6)?,
    ))
}

fn client_row(r: &Row) -> rusqlite::Result<(ApiClient, String)> {
    let role: String = r.get(3)?;
    Ok((
        ApiClient {
            id: r.get(0)?,
            client_id: r.get(1)?,
            name: r.get(2)?,
            role: Role::parse(&role).unwrap_or(Role::Viewer),
            tenant: r.get(4)?,
            customer: r.get(5)?,
            created: r.get(6)?,
        },
        r.get(7)?,
    ))
}

/// `WHERE` for an optional tenant filter (`?1`) and a name cursor (`?2`).
const PAGE_WHERE: &str =
    "WHERE (?1 IS NULL OR tenant_id = ?1) AND (?3 IS NULL OR customer_id = ?3)";

impl Accounts {
    /// Accounts over the platform database.
    pub fn new(db: Arc<Db>) -> Accounts {
        Accounts { db }
    }

    /// How many users exist.
    pub fn user_count(&self) -> Result<i64> {
        Ok(self
            .db
            .conn()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
    }

    /// Creates a user whose tenant and customer are already resolved to ids. The password must
    /// pass the policy unless `bootstrap` (the administrator's password from the environment).
    pub fn create_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
        reach: Reach,
        bootstrap: bool,
    ) -> Result<User> {
        check_login_name("user name", username)?;
        if !bootstrap {
            check_password(username, password)?;
        }
        check_placement(role, &reach)?;
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_string(),
            role,
            tenant: reach.tenant,
            customer: reach.customer,
            created: now_ms(),
        };
        self.db
            .conn()
            .execute(
                "INSERT INTO users (id, username, password_hash, role, tenant_id, customer_id,
                 created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    user.id,
                    user.username,
                    hash_password(password),
                    role.as_str(),
                    user.tenant,
                    user.customer,
                    user.created
                ],
            )
            .map_err(|e| CoreError::unique(e, format!("user {username:?}")))?;
        Ok(user)
    }

    /// A user by id or user name.
    pub fn user(&self, id_or_name: &str) -> Result<User> {
        self.user_with_hash(id_or_name)?
            .map(|(u, _)| u)
            .ok_or_else(|| CoreError::NotFound(format!("user {id_or_name:?}")))
    }

    fn user_with_hash(&self, id_or_name: &str) -> Result<Option<(User, String)>> {
        Ok(self
            .db
            .conn()
            .query_row(
                &format!("{USER_SELECT} WHERE id = ?1 OR username = ?1"),
                [id_or_name],
                user_row,
            )
            .optional()?)
    }

    /// The user if `password` is theirs. Runs argon2 (tens of milliseconds): call off the
    /// async threads. An unknown user costs the same time as a wrong password.
    pub fn check_login(&self, username: &str, password: &str) -> Result<Option<User>> {
        match self.user_with_hash(username)? {
            Some((u, hash)) if u.username == username => {
                Ok(verify_password(&hash, password.as_bytes()).then_some(u))
            }
            _ => {
                let _ = verify_password(dummy_hash(), password.as_bytes());
                Ok(None)
            }
        }
    }

    /// A page of users ordered by user name, optionally of one tenant (and customer).
    pub fn users(
        &self,
        tenant: Option<&str>,
        customer: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<User>, Option<String>)> {
        let limit = limit.clamp(1, 1000);
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{USER_SELECT} {PAGE_WHERE} AND username > ?2 ORDER BY username LIMIT ?4"
        ))?;
        let rows = st.query_map(
            params![tenant, cursor.unwrap_or(""), customer, limit as i64 + 1],
            user_row,
        )?;
        let page: Vec<User> = rows
            .map(|r| r.map(|(u, _)| u))
            .collect::<rusqlite::Result<_>>()?;
        Ok(paginate(page, limit, |u| u.username.clone()))
    }

    /// Changes a user's password (policy applies).
    pub fn set_password(&self, id: &str, password: &str) -> Result<User> {
        let u = self.user(id)?;
        check_password(&u.username, password)?;
        self.db.conn().execute(
            "UPDATE users SET password_hash = ?2 WHERE id = ?1",
            params![u.id, hash_password(password)],
        )?;
        Ok(u)
    }

    /// Changes a user's role and/or customer (`Some(None)` removes the customer).
    pub fn update_user(
        &self,
        id: &str,
        role: Option<Role>,
        customer: Option<Option<String>>,
    ) -> Result<User> {
        let mut u = self.user(id)?;
        if let Some(r) = role {
            u.role = r;
        }
        if let Some(c) = customer {
            u.customer = c;
        }
        check_placement(u.role, &u.reach())?;
        self.db.conn().execute(
            "UPDATE users SET role = ?2, customer_id = ?3 WHERE id = ?1",
            params![u.id, u.role.as_str(), u.customer],
        )?;
        Ok(u)
    }

    /// Deletes a user (their sessions go with them). The last system administrator cannot be
    /// deleted.
    pub fn delete_user(&self, id: &str) -> Result<User> {
        let u = self.user(id)?;
        let conn = self.db.conn();
        if u.role == Role::SysAdmin {
            let admins: i64 = conn.query_row(
                "SELECT count(*) FROM users WHERE role IN ('sys_admin', 'sysadmin')",
                [],
                |r| r.get(0),
            )?;
            if admins <= 1 {
                return Err(CoreError::Invalid(
                    "the last sys_admin cannot be deleted".into(),
                ));
            }
        }
        conn.execute("DELETE FROM users WHERE id = ?1", [&u.id])?;
        Ok(u)
    }

    /// Creates an API client; returns it with its secret (shown this once).
    pub fn create_client(
        &self,
        name: &str,
        role: Role,
        reach: Reach,
    ) -> Result<(ApiClient, String)> {
        check_login_name("client name", name)?;
        check_placement(role, &reach)?;
        let client = ApiClient {
            id: uuid::Uuid::new_v4().to_string(),
            client_id: format!("ibc_{}", generate_token()),
            name: name.to_string(),
            role,
            tenant: reach.tenant,
            customer: reach.customer,
            created: now_ms(),
        };
        let secret = format!("{}{}", generate_token(), generate_token());
        self.db.conn().execute(
            "INSERT INTO api_clients (id, client_id, name, secret_hash, role, tenant_id,
             customer_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                client.id,
                client.client_id,
                client.name,
                sha256_hex(&secret),
                role.as_str(),
                client.tenant,
                client.customer,
                client.created
            ],
        )?;
        Ok((client, secret))
    }

    /// An API client by id or `client_id`.
    pub fn client(&self, id: &str) -> Result<ApiClient> {
        self.db
            .conn()
            .query_row(
                &format!("{CLIENT_SELECT} WHERE id = ?1 OR client_id = ?1"),
                [id],
                client_row,
            )
            .optional()?
            .map(|(c, _)| c)
            .ok_or_else(|| CoreError::NotFound(format!("API client {id:?}")))
    }

    /// The client if `secret` is its secret.
    pub fn check_client(&self, client_id: &str, secret: &str) -> Result<Option<ApiClient>> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!("{CLIENT_SELECT} WHERE client_id = ?1"),
                [client_id],
                client_row,
            )
            .optional()?;
        Ok(row.and_then(|(c, hash)| {
            // Comparing digests: timing tells an attacker nothing about the secret.
            (sha256_hex(secret) == hash).then_some(c)
        }))
    }

    /// A page of API clients ordered by name, optionally of one tenant.
    pub fn clients(
        &self,
        tenant: Option<&str>,
        customer: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<ApiClient>, Option<String>)> {
        let limit = limit.clamp(1, 1000);
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "{CLIENT_SELECT} {PAGE_WHERE} AND id > ?2 ORDER BY id LIMIT ?4"
        ))?;
        let rows = st.query_map(
            params![tenant, cursor.unwrap_or(""), customer, limit as i64 + 1],
            client_row,
        )?;
        let page: Vec<ApiClient> = rows
            .map(|r| r.map(|(c, _)| c))
            .collect::<rusqlite::Result<_>>()?;
        Ok(paginate(page, limit, |c| c.id.clone()))
    }

    /// Deletes an API client (its tokens stop working at once).
    pub fn delete_client(&self, id: &str) -> Result<ApiClient> {
        let c = self.client(id)?;
        self.db
            .conn()
            .execute("DELETE FROM api_clients WHERE id = ?1", [&c.id])?;
        Ok(c)
    }
}

/// Cuts a page fetched with one extra row; the next cursor is the last row's key.
pub fn paginate<T>(
    mut page: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if page.len() > limit {
        page.truncate(limit);
        let next = page.last().map(key);
        (page, next)
    } else {
        (page, None)
    }
}

fn check_login_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@+ ".contains(c))
        && name.trim() == name;
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "{what} must be 1 to 128 letters, digits, spaces or ._-@+ (no leading or trailing space)"
        )))
    }
}

/// A hash of a random password, checked against when the user does not exist, so that an
/// unknown user name takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&generate_token()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> (Accounts, String, String) {
        let db = Arc::new(Db::memory().unwrap());
        let reg = crate::registry::Registry::new(db.clone());
        reg.ensure_default().unwrap();
        let t = reg.tenant("default").unwrap();
        let c = reg.create_customer(&t.id, "acme").unwrap();
        (Accounts::new(db), t.id, c.id)
    }

    #[test]
    fn password_policy() {
        assert!(check_password("bob", "short1").is_err());
        assert!(check_password("bob", "onlyletters").is_err());
        assert!(check_password("bob", "xxbob12345").is_err());
        assert!(check_password("bob", "correct horse 9").is_ok());
    }

    #[test]
    fn users_roles_and_placement() {
        let (a, t, c) = accounts();
        let tenant = |cust: Option<&str>| Reach {
            tenant: Some(t.clone()),
            customer: cust.map(str::to_string),
        };
        assert!(a
            .create_user("x", "pass-word-1", Role::SysAdmin, tenant(None), false)
            .is_err());
        assert!(a
            .create_user(
                "x",
                "pass-word-1",
                Role::TenantAdmin,
                tenant(Some(&c)),
                false
            )
            .is_err());
        let u = a
            .create_user(
                "ops",
                "pass-word-1",
                Role::Operator,
                tenant(Some(&c)),
                false,
            )
            .unwrap();
        assert!(a.check_login("ops", "pass-word-1").unwrap().is_some());
        assert!(a.check_login("ops", "pass-word-2").unwrap().is_none());
        assert!(a.check_login("nobody", "pass-word-1").unwrap().is_none());
        assert!(matches!(
            a.create_user("ops", "pass-word-1", Role::Viewer, tenant(None), false),
            Err(CoreError::AlreadyExists(_))
        ));
        let u2 = a
            .update_user(&u.id, Some(Role::Viewer), Some(None))
            .unwrap();
        assert_eq!((u2.role, u2.customer), (Role::Viewer, None));
        assert!(u.reach().covers(Role::Operator, &t, Some(&c)));
        assert!(!u.reach().covers(Role::Operator, &t, None));
        assert!(!u.reach().covers(Role::Operator, "other", Some(&c)));
    }

    #[test]
    fn clients_check_secret() {
        let (a, t, _) = accounts();
        let reach = Reach {
            tenant: Some(t),
            customer: None,
        };
        let (c, secret) = a.create_client("etl", Role::Viewer, reach).unwrap();
        assert!(a.check_client(&c.client_id, &secret).unwrap().is_some());
        assert!(a.check_client(&c.client_id, "nope").unwrap().is_none());
        a.delete_client(&c.id).unwrap();
        assert!(a.check_client(&c.client_id, &secret).unwrap().is_none());
    }
}
