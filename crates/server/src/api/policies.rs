//! Operators' policies per scope (docs/rules.md, "Fair shares", "Retries"): set, list,
//! remove. Setting or removing one needs `delegates:edit` at its scope, as it changes how
//! that scope's tasks share the delegates.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{SubsecRound, Utc};
use switchboard_domain::policy::ScopePolicy;
use switchboard_domain::{Ident, Permission, Scope};
use switchboard_protocol::policies::{ScopePolicyList, ScopePolicyView, SetScopePolicy};
use switchboard_store::StoreError;

use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, FORBIDDEN, INVALID, JSON_BODY, NOT_FOUND, QUERY};
use crate::manager::dispatch::Placer;

/// Set a scope's policy: the weight of its fair share, and the retry policy of its tasks
/// that name none.
///
/// Replaces what was set for the scope before. Another replica applies it within 5 s.
#[utoipa::path(
    put,
    path = "/scope-policies",
    operation_id = "set_scope_policy",
    tag = "tasks",
    security(("api_key" = [])),
    request_body = SetScopePolicy,
    responses(
        (status = 200, description = "The policy as set.", body = ScopePolicyView),
        Errors<{ API | JSON_BODY | FORBIDDEN | NOT_FOUND }>
    )
)]
pub async fn set(
    State(placer): State<Placer>,
    caller: Caller,
    ApiJson(body): ApiJson<SetScopePolicy>,
) -> Result<Json<ScopePolicyView>, ApiError> {
    let (weight, retry) = body.parts().map_err(|e| ApiError::validation(e.field, e.message))?;
    let scope =
        Scope::new(body.account, body.org, body.project).map_err(|e| ApiError::validation("project", e.to_string()))?;
    caller.check(Permission::DelegatesEdit, &scope, "scope")?;
    let policy = ScopePolicy {
        scope,
        weight,
        retry,
        updated_at: Utc::now().trunc_subsecs(3),
    };
    placer.store().set_scope_policy(&policy).await?;
    placer.shares().policies_changed();
    tracing::info!(scope = %policy.scope, weight = ?policy.weight, retry = policy.retry.is_some(), "scope policy set");
    Ok(Json(ScopePolicyView::from(&policy)))
}

/// List the scope policies the caller may see, or those within a scope.
#[utoipa::path(
    get,
    path = "/scope-policies",
    operation_id = "list_scope_policies",
    tag = "tasks",
    security(("api_key" = [])),
    params(PolicyFilter),
    responses(
        (status = 200, description = "The policies, by scope.", body = ScopePolicyList),
        Errors<{ API | QUERY | INVALID }>
    )
)]
pub async fn list(
    State(placer): State<Placer>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<PolicyFilter>,
) -> Result<Json<ScopePolicyList>, ApiError> {
    let within = match super::scope_filter(&caller, filter.account, filter.org, filter.project)? {
        super::Narrowed::Within(within) => within,
        super::Narrowed::Nothing => return Ok(Json(ScopePolicyList { items: Vec::new() })),
    };
    let policies = placer.store().scope_policies(within.as_ref()).await?;
    Ok(Json(ScopePolicyList {
        items: policies.iter().map(ScopePolicyView::from).collect(),
    }))
}

/// Remove a scope's policy: its share gets the default weight again, and its tasks the
/// retry policy of the scope above (or the default).
#[utoipa::path(
    delete,
    path = "/scope-policies",
    operation_id = "delete_scope_policy",
    tag = "tasks",
    security(("api_key" = [])),
    params(PolicyFilter),
    responses(
        (status = 204, description = "Removed."),
        Errors<{ API | QUERY | INVALID | FORBIDDEN | NOT_FOUND }>
    )
)]
pub async fn delete(
    State(placer): State<Placer>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<PolicyFilter>,
) -> Result<StatusCode, ApiError> {
    let Some(account) = filter.account else {
        return Err(ApiError::validation(
            "account",
            "name the scope: account, and org and project below it",
        ));
    };
    let scope =
        Scope::new(account, filter.org, filter.project).map_err(|e| ApiError::validation("project", e.to_string()))?;
    caller.check(Permission::DelegatesEdit, &scope, "scope policy")?;
    match placer.store().delete_scope_policy(&scope).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("no scope policy is set for {scope}")));
        }
        Err(e) => return Err(e.into()),
    }
    placer.shares().policies_changed();
    tracing::info!(%scope, "scope policy removed");
    Ok(StatusCode::NO_CONTENT)
}

/// The scope of `GET` and `DELETE /api/v1/scope-policies`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PolicyFilter {
    /// The account.
    account: Option<Ident>,
    /// An org of it (needs `account`).
    org: Option<Ident>,
    /// A project of the org (needs `account` and `org`).
    project: Option<Ident>,
}
