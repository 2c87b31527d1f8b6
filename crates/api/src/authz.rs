//! Authorisation, in one place for every management route. Each operation declares the scope it
//! needs in its OpenAPI annotation (`security(("bearer" = ["write"]))`, or `security(())` for a
//! public one); the table here is read from the generated document, so the document and the
//! checks cannot disagree and a route without a rule is refused. Per request the layer:
//! 1. authenticates the bearer token (401) and puts the [`Caller`](crate::auth::Caller) in the request;
//! 2. checks the caller's role against the scope (403);
//! 3. resolves the resource named in the path (`/tenants/{id}`, `/devices/{id}`, ...) and checks
//!    it is within the caller's tenant or customer (404: another tenant's things do not exist);
//! 4. writes the audit record for every change, credential access and RPC.
//!
//! Lists and creations are confined by the handlers through `Caller::tenant` and
//! `Caller::customer`.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ib_core::accounts::Role;
use ib_core::audit::NewAuditEntry;
use serde_json::Value;

use crate::error::ApiError;
use crate::{ApiState, ClientAddr};

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token.
    Public,
    /// A token whose role is at least this.
    AtLeast(Role),
}

/// The rules of every operation, keyed by method and path pattern.
#[derive(Debug, Default)]
pub struct AccessTable {
    rules: HashMap<(Method, String), Rule>,
}

impl AccessTable {
    /// Reads the rules from an OpenAPI document. An operation with no `security` has no rule.
    pub fn from_doc(doc: &Value) -> AccessTable {
        let mut rules = HashMap::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                if let Some(rule) = rule_of(op) {
                    rules.insert((method, path.clone()), rule);
                }
            }
        }
        AccessTable { rules }
    }

    /// The rule of an operation.
    pub fn rule(&self, method: &Method, path: &str) -> Option<Rule> {
        self.rules.get(&(method.clone(), path.to_string())).copied()
    }

    /// The methods a path pattern has, as an `Allow` header value.
    pub fn methods(&self, path: &str) -> String {
        let mut m: Vec<&str> = self
            .rules
            .keys()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.as_str())
            .collect();
        m.sort_unstable();
        m.join(", ")
    }

    /// Every operation and its rule (the authorisation matrix test walks this).
    pub fn operations(&self) -> impl Iterator<Item = (&Method, &str, Rule)> {
        self.rules.iter().map(|((m, p), r)| (m, p.as_str(), *r))
    }
}

/// `security: [{}]` is public; `[{"bearer": ["write"]}]` needs the role of the widest scope.
fn rule_of(op: &Value) -> Option<Rule> {
    let reqs = op.get("security")?.as_array()?;
    let mut rule = None;
    for req in reqs {
        let req = req.as_object()?;
        if req.is_empty() {
            rule = Some(Rule::Public);
            continue;
        }
        let scopes = req.get("bearer")?.as_array()?;
        let role = scopes
            .iter()
            .filter_map(|s| s.as_str().and_then(Role::of_scope))
            .max()
            .unwrap_or(Role::Viewer);
        rule = Some(Rule::AtLeast(role));
    }
    rule
}

/// Collections that customer users may reach (their customer's part of them).
const CUSTOMER_VISIBLE: &[&str] = &[
    "devices",
    "customers",
    "users",
    "auth",
    "ws",
    "alarms",
    "dashboards",
];

/// Where a resource named in a path belongs.
struct Owner {
    tenant: Option<String>,
    customer: Option<String>,
}

/// Finds the owner of `/api/v1/{collection}/{id}/...`; `None` when the collection has no
/// owner lookup or the id does not exist (the handler then answers 404 within the caller's
/// tenant).
fn owner(s: &ApiState, collection: &str, id: &str) -> Option<Owner> {
    let p = &s.platform;
    let owned = |tenant: String, customer: Option<String>| Owner {
        tenant: Some(tenant),
        customer,
    };
    match collection {
        "tenants" => p.registry.tenant(id).ok().map(|t| owned(t.id, None)),
        "devices" => p
            .registry
            .device(id)
            .ok()
            .map(|d| owned(d.tenant, d.customer)),
        "customers" => p
            .registry
            .customer_by_id(id)
            .ok()
            .map(|c| owned(c.tenant, Some(c.id))),
        "profiles" => p
            .registry
            .profile_by_id(id)
            .ok()
            .map(|pr| owned(pr.tenant, None)),
        "users" => p.accounts.user(id).ok().map(|u| Owner {
            tenant: u.tenant,
            customer: u.customer,
        }),
        "api-clients" => p.accounts.client(id).ok().map(|c| Owner {
            tenant: c.tenant,
            customer: c.customer,
        }),
        // An alarm belongs to its device's tenant and current customer.
        "alarms" => id
            .parse()
            .ok()
            .and_then(|id| p.alarms.get(id).ok())
            .map(|a| owned(a.tenant, a.customer)),
        "rules" => p.rules.store.get(id).ok().map(|r| owned(r.tenant, None)),
        "dashboards" => p.dashboards.get(id).ok().map(|d| owned(d.tenant, None)),
        "firmware" => p.firmware.get(id).ok().map(|f| owned(f.tenant, None)),
        "firmware-keys" => p.firmware.key(id).ok().map(|k| owned(k.tenant, None)),
        "firmware-campaigns" => p
            .firmware
            .campaigns
            .tenant_of(id)
            .ok()
            .map(|t| owned(t, None)),
        "sources" => p
            .rules
            .lookups
            .source(id)
            .ok()
            .map(|r| owned(r.tenant, None)),
        "geofences" => p
            .rules
            .lookups
            .geofence(id)
            .ok()
            .map(|r| owned(r.tenant, None)),
        _ => None,
    }
}

/// The middleware (a `route_layer`, so that the matched path is known).
pub async fn authorize(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let Some(pattern) = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unmatched route reached the authorisation layer",
        )
        .into_response();
    };
    let method = parts.method.clone();
    let rule = match s.access.rule(&method, &pattern) {
        Some(r) => r,
        None => {
            // Routes and rules come from the same annotations: a method without a rule is one
            // the path does not have.
            let allowed = s.access.methods(&pattern);
            let mut res = ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here (allowed: {allowed})"),
            )
            .into_response();
            if let Ok(v) = allowed.parse() {
                res.headers_mut().insert(axum::http::header::ALLOW, v);
            }
            return res;
        }
    };
    let Rule::AtLeast(need) = rule else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let caller = match bearer(&parts.headers).and_then(|t| s.auth.verify(t)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if caller.role < need {
        return ApiError::forbidden(format!(
            "{} may not {} {} (needs {})",
            caller.role.as_str(),
            method,
            pattern,
            need.as_str()
        ))
        .into_response();
    }
    let collection = match pattern.strip_prefix("/api/v1/") {
        // Campaigns live under the firmware collection but are resources of their own.
        Some(rest) if rest.starts_with("firmware/campaigns/") => "firmware-campaigns",
        Some(rest) => rest.split('/').next().unwrap_or(""),
        None => "",
    };
    if caller.reach.customer.is_some() && !CUSTOMER_VISIBLE.contains(&collection) {
        return ApiError::forbidden("customer users reach only their customer's devices")
            .into_response();
    }
    if caller.reach.customer.is_some() && collection == "dashboards" && method != Method::GET {
        return ApiError::forbidden(
            "customer users see the dashboards shared with them, read only",
        )
        .into_response();
    }
    let params: HashMap<String, String> =
        match RawPathParams::from_request_parts(&mut parts, &()).await {
            Ok(p) => p
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Err(_) => HashMap::new(),
        };
    let mut tenant = caller.reach.tenant.clone();
    if let Some(id) = params.get("id") {
        if let Some(mut o) = owner(&s, collection, id) {
            // A dashboard belongs to its tenant, and is within reach of the customers it is
            // shared with.
            if let (Some(c), "dashboards") = (caller.reach.customer.as_deref(), collection) {
                if s.platform.dashboards.shared_with(id, c).unwrap_or(false) {
                    o.customer = Some(c.to_string());
                }
            }
            let reachable = match &o.tenant {
                Some(t) => caller.covers(t, o.customer.as_deref()),
                None => caller.role == Role::SysAdmin,
            };
            if !reachable {
                return ApiError::not_found(format!("{collection} {id:?} not found"))
                    .into_response();
            }
            tenant = o.tenant.or(tenant);
        }
    }
    let audited = method != Method::GET || pattern.contains("/credentials");
    let path = parts.uri.path().to_string();
    let source = parts
        .extensions
        .get::<ClientAddr>()
        .map(|a| a.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    parts.extensions.insert(caller.clone());
    let res = next.run(Request::from_parts(parts, body)).await;
    if audited {
        crate::login::record(
            &s,
            NewAuditEntry {
                tenant,
                actor: caller.name.clone(),
                actor_kind: caller.kind,
                source,
                action: format!("{method} {pattern}"),
                resource: path,
                status: res.status().as_u16(),
                details: None,
            },
        );
    }
    res
}

fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("Authorization must be a Bearer token"))
}
