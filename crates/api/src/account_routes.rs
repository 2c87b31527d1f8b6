//! Management routes for accounts: users, API clients (OAuth client credentials), the caller's
//! own account and password, and the audit log. No caller can give a role above their own.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::accounts::{ApiClient, NewUser, Reach, Role, User};
use ib_core::audit::{AuditEntry, AuditQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{blocking, ApiError, ApiResult};
use crate::registry_routes::Page;
use crate::ApiState;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The account routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_clients, create_client))
        .routes(routes!(get_client, delete_client))
        .routes(routes!(audit))
}

/// Who the caller is.
#[derive(Serialize, ToSchema)]
struct Me {
    id: String,
    name: String,
    /// `user` or `client`.
    kind: String,
    role: Role,
    tenant: Option<String>,
    customer: Option<String>,
}

/// The caller's identity and role.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    security(("bearer" = ["read"])), responses((status = 200, body = Me)))]
async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        id: caller.id,
        name: caller.name,
        kind: caller.kind.to_string(),
        role: caller.role,
        tenant: caller.reach.tenant,
        customer: caller.reach.customer,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's own password; every session of theirs (this one too) is revoked.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    security(("bearer" = ["read"])), request_body = PasswordChange,
    responses((status = 204, description = "changed; log in again")))]
async fn change_password(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<PasswordChange>,
) -> ApiResult<StatusCode> {
    let Json(c) = body?;
    if caller.kind != "user" {
        return Err(ApiError::forbidden(
            "API clients have secrets, not passwords",
        ));
    }
    let (p, name, current) = (s.platform.clone(), caller.name.clone(), c.current_password);
    if blocking(move || p.accounts.check_login(&name, &current))
        .await?
        .is_none()
    {
        return Err(ApiError::unauthorized("the current password is wrong"));
    }
    let (p, id, new) = (s.platform.clone(), caller.id.clone(), c.new_password);
    blocking(move || p.accounts.set_password(&id, &new)).await?;
    s.auth.revoke_user(&caller.id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resolves where a new user or client goes and checks the caller may put it there.
fn placement(
    s: &ApiState,
    caller: &Caller,
    role: Role,
    tenant: Option<&str>,
    customer: Option<&str>,
) -> ApiResult<Reach> {
    if role > caller.role {
        return Err(ApiError::forbidden(format!(
            "a {} cannot give the role {}",
            caller.role.as_str(),
            role.as_str()
        )));
    }
    if role == Role::SysAdmin {
        return Ok(Reach {
            tenant: None,
            customer: None,
        });
    }
    let t = caller.tenant(s, tenant)?;
    let customer = match (caller.customer(), customer) {
        (Some(own), _) => Some(own.to_string()),
        (None, Some(c)) => Some(s.platform.registry.customer(&t.id, c)?.id),
        (None, None) => None,
    };
    Ok(Reach {
        tenant: Some(t.id),
        customer,
    })
}

/// Creates a user (password policy: 8+ characters, two kinds of character, not the name).
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    security(("bearer" = ["write"])), request_body = NewUser,
    responses((status = 201, body = User)))]
async fn create_user(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let Json(new) = body?;
    let reach = placement(
        &s,
        &caller,
        new.role,
        new.tenant.as_deref(),
        new.customer.as_deref(),
    )?;
    let p = s.platform.clone();
    let user = blocking(move || {
        p.accounts
            .create_user(&new.username, &new.password, new.role, reach, false)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Pagination and tenant query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountQuery {
    /// Tenant (system administrators; absent: all).
    tenant: Option<String>,
    /// Page size, 1..1000 (default 100).
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
}

/// The tenant filter of a list: a system administrator's choice (all when none), else their own.
pub(crate) fn list_tenant(
    s: &ApiState,
    caller: &Caller,
    asked: Option<&str>,
) -> ApiResult<Option<String>> {
    if caller.role == Role::SysAdmin && asked.is_none() {
        return Ok(None);
    }
    Ok(Some(caller.tenant(s, asked)?.id))
}

/// Users, by user name.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    security(("bearer" = ["write"])), params(AccountQuery),
    responses((status = 200, body = Page<User>)))]
async fn list_users(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<AccountQuery>,
) -> ApiResult<Json<Page<User>>> {
    let Query(q) = q?;
    let tenant = list_tenant(&s, &caller, q.tenant.as_deref())?;
    let (data, next) = s.platform.accounts.users(
        tenant.as_deref(),
        caller.customer(),
        q.limit.unwrap_or(100),
        q.cursor.as_deref(),
    )?;
    Ok(Json(Page { data, next }))
}

/// A user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = ["write"])), params(("id" = String, Path, description = "id or user name")),
    responses((status = 200, body = User)))]
async fn get_user(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<User>> {
    Ok(Json(s.platform.accounts.user(&id)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    role: Option<Role>,
    /// Customer id or name (`""` removes it).
    customer: Option<String>,
    /// A new password (the policy applies).
    password: Option<String>,
}

/// Changes a user's role, customer or password; their sessions are revoked.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = ["write"])), params(("id" = String, Path, description = "id or user name")),
    request_body = UserUpdate, responses((status = 200, body = User)))]
async fn update_user(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<UserUpdate>,
) -> ApiResult<Json<User>> {
    let Json(u) = body?;
    let user = s.platform.accounts.user(&id)?;
    if user.role > caller.role || u.role.is_some_and(|r| r > caller.role) {
        return Err(ApiError::forbidden(format!(
            "a {} cannot change a {} or give a higher role",
            caller.role.as_str(),
            user.role.as_str()
        )));
    }
    let customer = match (&u.customer, &user.tenant) {
        (None, _) => None,
        (Some(c), _) if c.is_empty() => Some(None),
        (Some(c), Some(t)) => Some(Some(s.platform.registry.customer(t, c)?.id)),
        (Some(_), None) => return Err(ApiError::bad_request("a sys_admin has no customer")),
    };
    let mut updated = s
        .platform
        .accounts
        .update_user(&user.id, u.role, customer)?;
    if let Some(pw) = u.password {
        let (p, id) = (s.platform.clone(), user.id.clone());
        updated = blocking(move || p.accounts.set_password(&id, &pw)).await?;
    }
    s.auth.revoke_user(&user.id)?;
    Ok(Json(updated))
}

/// Deletes a user (not the last system administrator).
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = ["write"])), params(("id" = String, Path, description = "id or user name")),
    responses((status = 204, description = "deleted")))]
async fn delete_user(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let user = s.platform.accounts.user(&id)?;
    if user.role > caller.role {
        return Err(ApiError::forbidden(
            "cannot delete a user with a higher role",
        ));
    }
    s.platform.accounts.delete_user(&user.id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewClient {
    name: String,
    /// The most the client may do (`scope` at the token endpoint may ask for less).
    role: Role,
    tenant: Option<String>,
    customer: Option<String>,
}

/// A new API client with its secret (shown in this response only).
#[derive(Serialize, ToSchema)]
struct CreatedClient {
    #[serde(flatten)]
    client: ApiClient,
    client_secret: String,
}

/// Creates an API client for the OAuth 2.0 client-credentials grant.
#[utoipa::path(post, path = "/api/v1/api-clients", tag = "api-clients",
    security(("bearer" = ["write"])), request_body = NewClient,
    responses((status = 201, body = CreatedClient)))]
async fn create_client(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<NewClient>,
) -> ApiResult<(StatusCode, Json<CreatedClient>)> {
    let Json(new) = body?;
    let reach = placement(
        &s,
        &caller,
        new.role,
        new.tenant.as_deref(),
        new.customer.as_deref(),
    )?;
    let (client, client_secret) = s
        .platform
        .accounts
        .create_client(&new.name, new.role, reach)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedClient {
            client,
            client_secret,
        }),
    ))
}

/// API clients.
#[utoipa::path(get, path = "/api/v1/api-clients", tag = "api-clients",
    security(("bearer" = ["write"])), params(AccountQuery),
    responses((status = 200, body = Page<ApiClient>)))]
async fn list_clients(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<AccountQuery>,
) -> ApiResult<Json<Page<ApiClient>>> {
    let Query(q) = q?;
    let tenant = list_tenant(&s, &caller, q.tenant.as_deref())?;
    let (data, next) = s.platform.accounts.clients(
        tenant.as_deref(),
        caller.customer(),
        q.limit.unwrap_or(100),
        q.cursor.as_deref(),
    )?;
    Ok(Json(Page { data, next }))
}

/// An API client.
#[utoipa::path(get, path = "/api/v1/api-clients/{id}", tag = "api-clients",
    security(("bearer" = ["write"])), params(("id" = String, Path, description = "id or client_id")),
    responses((status = 200, body = ApiClient)))]
async fn get_client(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiClient>> {
    Ok(Json(s.platform.accounts.client(&id)?))
}

/// Deletes an API client: its tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/api-clients/{id}", tag = "api-clients",
    security(("bearer" = ["write"])), params(("id" = String, Path, description = "id or client_id")),
    responses((status = 204, description = "deleted")))]
async fn delete_client(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let c = s.platform.accounts.client(&id)?;
    if c.role > caller.role {
        return Err(ApiError::forbidden(
            "cannot delete a client with a higher role",
        ));
    }
    s.platform.accounts.delete_client(&c.id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The audit log, newest first: logins, changes, credential access, RPC sent.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    security(("bearer" = ["write"])), params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>)))]
async fn audit(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let Query(mut q) = q?;
    q.tenant = list_tenant(&s, &caller, q.tenant.as_deref())?;
    let p = s.platform.clone();
    let (data, next) = blocking(move || p.audit.query(&q)).await?;
    Ok(Json(Page { data, next }))
}
