//! Management routes for rules: create (validated: a condition that does not compile is a 400
//! with the CEL error and its line and column), list, read, replace, delete, and a rule's failed
//! actions.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::rules::actions::ActionFailure;
use ib_core::rules::backtest::Backtest;
use ib_core::rules::model::RuleSpec;
use ib_core::rules::store::Rule;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::registry_routes::Page;
use crate::ApiState;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The rule routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, replace_rule, delete_rule))
        .routes(routes!(rule_failures))
        .routes(routes!(backtest_new))
        .routes(routes!(backtest_saved))
}

/// A rule to create: the rule and, for system administrators, its tenant.
#[derive(Deserialize, ToSchema)]
struct NewRule {
    /// Tenant id or name (system administrators; default `default`).
    #[serde(default)]
    tenant: Option<String>,
    #[serde(flatten)]
    spec: RuleSpec,
}

/// Creates a rule. Conditions are checked: syntax (with line and column), unknown functions,
/// keys the profile does not declare, type errors.
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules",
    security(("bearer" = ["write"])), request_body = NewRule,
    responses((status = 201, body = Rule)))]
async fn create_rule(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<NewRule>,
) -> ApiResult<(StatusCode, Json<Rule>)> {
    let Json(new) = body?;
    let t = caller.tenant(&s, new.tenant.as_deref())?;
    let rule = s
        .platform
        .rules
        .create(&s.platform.registry, &t.id, new.spec)?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// Pagination and tenant.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RuleQuery {
    /// Tenant (system administrators; absent: all).
    tenant: Option<String>,
    /// Page size, 1..1000 (default 100).
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
}

/// Rules by name.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    security(("bearer" = ["read"])), params(RuleQuery),
    responses((status = 200, body = Page<Rule>)))]
async fn list_rules(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<RuleQuery>,
) -> ApiResult<Json<Page<Rule>>> {
    let Query(q) = q?;
    let tenant = crate::account_routes::list_tenant(&s, &caller, q.tenant.as_deref())?;
    let (data, next) = s.platform.rules.store.list(
        tenant.as_deref(),
        q.limit.unwrap_or(100),
        q.cursor.as_deref(),
    )?;
    Ok(Json(Page { data, next }))
}

/// A rule, with its last error and last firing.
#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = Rule)))]
async fn get_rule(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Rule>> {
    Ok(Json(s.platform.rules.store.get(&id)?))
}

/// Replaces a rule (validated like a new one); its per-device state starts over.
#[utoipa::path(put, path = "/api/v1/rules/{id}", tag = "rules",
    security(("bearer" = ["write"])), params(("id" = String, Path)), request_body = RuleSpec,
    responses((status = 200, body = Rule)))]
async fn replace_rule(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<RuleSpec>,
) -> ApiResult<Json<Rule>> {
    let Json(spec) = body?;
    Ok(Json(s.platform.rules.update(
        &s.platform.registry,
        &id,
        spec,
    )?))
}

/// Deletes a rule.
#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_rule(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.platform.rules.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many failures to show.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FailureQuery {
    /// 1..1000 (default 100).
    limit: Option<usize>,
}

/// A rule's failed actions (the dead-letter record), newest first.
#[utoipa::path(get, path = "/api/v1/rules/{id}/failures", tag = "rules",
    security(("bearer" = ["read"])), params(("id" = String, Path), FailureQuery),
    responses((status = 200, body = Vec<ActionFailure>)))]
async fn rule_failures(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<FailureQuery>,
) -> ApiResult<Json<Vec<ActionFailure>>> {
    let Query(q) = q?;
    let rule = s.platform.rules.store.get(&id)?;
    let f = ib_core::rules::actions::failures(&s.platform, &rule.id, q.limit.unwrap_or(100))
        .map_err(ApiError::from)?;
    Ok(Json(f))
}

/// A rule to try on stored telemetry.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BacktestRequest {
    /// Tenant id or name (system administrators).
    #[serde(default)]
    tenant: Option<String>,
    rule: RuleSpec,
    /// Start of the replayed range (ms).
    from: i64,
    /// End of the replayed range (ms).
    to: i64,
}

/// Replays a rule (not saved) over stored telemetry: when it would have fired and cleared,
/// per device of its scope. No action runs.
#[utoipa::path(post, path = "/api/v1/rules/backtest", tag = "rules",
    security(("bearer" = ["write"])), request_body = BacktestRequest,
    responses((status = 200, body = Backtest)))]
async fn backtest_new(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<BacktestRequest>,
) -> ApiResult<Json<Backtest>> {
    let Json(req) = body?;
    let t = caller.tenant(&s, req.tenant.as_deref())?;
    let p = s.platform.clone();
    let out = crate::error::blocking(move || {
        ib_core::rules::backtest::backtest(&p, &t.id, &req.rule, req.from, req.to)
    })
    .await?;
    Ok(Json(out))
}

/// The replayed range.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Range {
    /// Start (ms).
    from: i64,
    /// End (ms).
    to: i64,
}

/// Replays a saved rule over stored telemetry.
#[utoipa::path(post, path = "/api/v1/rules/{id}/backtest", tag = "rules",
    security(("bearer" = ["write"])), params(("id" = String, Path), Range),
    responses((status = 200, body = Backtest)))]
async fn backtest_saved(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<Range>,
) -> ApiResult<Json<Backtest>> {
    let Query(q) = q?;
    let rule = s.platform.rules.store.get(&id)?;
    let p = s.platform.clone();
    let out = crate::error::blocking(move || {
        ib_core::rules::backtest::backtest(&p, &rule.tenant, &rule.spec, q.from, q.to)
    })
    .await?;
    Ok(Json(out))
}
