//! The audit trail of `/api/v1`: every successful change (POST, PUT, DELETE) is recorded
//! with who made it (the key), what (method, route, path, status), when and from where.
//!
//! It is a middleware inside authentication, so it sees the [`Caller`] and the answer.
//! The change itself is committed by the handler before the entry is written; if the
//! audit write fails, the failure is logged and counted, and the change stands: an
//! acknowledged write is never rolled back for want of its audit line. A submission is
//! the exception: its entry is written in the task's own commit ([`Prepared`]).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, OriginalUri, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_domain::{ApiKeyId, AuditEntry};
use switchboard_store::AuditQuery;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::Errors;
use crate::openapi::errors::{API, INVALID, QUERY};
use crate::state::AppState;

/// Routes that take a body but change nothing.
const READ_ONLY: &[&str] = &["/api/v1/tasks/explain"];

pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let changes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    );
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let audited = changes && route.as_deref().is_some_and(|r| !READ_ONLY.contains(&r));
    if !audited {
        return next.run(request).await;
    }
    let caller = request.extensions().get::<Caller>().cloned();
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    // The full path as the client sent it (nesting strips the /api/v1 prefix from the URI).
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().clone(), |o| o.0.clone());
    let (method, path) = (request.method().to_string(), uri.path().to_owned());
    let caller = caller.unwrap_or(Caller::Admin);
    let actor = caller.describe();
    let (key_id, key_scope) = match &caller {
        Caller::Key(key) => (Some(key.id), Some(key.scope.clone())),
        Caller::Admin => (None, None),
    };
    let entry = AuditEntry {
        id: 0,
        at: Utc::now(),
        actor,
        key_id,
        key_scope,
        method,
        route: route.unwrap_or_default(),
        path,
        status: 0,
        remote,
    };
    let mut request = request;
    request.extensions_mut().insert(Prepared(entry.clone()));
    let response = next.run(request).await;
    if !response.status().is_success() || response.extensions().get::<Audited>().is_some() {
        return response;
    }
    let entry = AuditEntry {
        status: response.status().as_u16(),
        ..entry
    };
    if let Err(e) = state.store().append_audit(&entry).await {
        tracing::error!(error = %e, route = %entry.route, "cannot write the audit log; the change stands");
    }
    response
}

/// The audit entry of the request under way, for a handler that writes it in the same
/// commit as its change (a task submission): it then marks its answer [`Audited`], and
/// the middleware writes nothing more. The handler sets the status.
#[derive(Debug, Clone)]
pub struct Prepared(pub AuditEntry);

/// On a response whose audit entry the handler wrote with its change.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// The query string of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// Only the changes made with this API key.
    key_id: Option<ApiKeyId>,
    /// Only the changes made at or after this time (RFC 3339).
    since: Option<chrono::DateTime<Utc>>,
    /// The `next` cursor of the previous page.
    before_id: Option<i64>,
    /// At most this many entries: 1 to 500, default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub struct AuditAnswer {
    items: Vec<AuditEntry>,
    /// The cursor of the next page (`before_id=`), when this one is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i64>,
}

/// The audit log: every change made through `/api/v1`, newest first.
///
/// A key sees the changes made by keys at or below its scope; the admin key sees
/// everything. Entries are kept 90 days by default.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "list_audit",
    tag = "audit",
    security(("api_key" = [])),
    params(AuditFilter),
    responses((status = 200, description = "A page of entries.", body = AuditAnswer), Errors<{ API | QUERY | INVALID }>)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> Result<Json<AuditAnswer>, ApiError> {
    let limit = crate::api::page_limit(f.limit, 100)?;
    let query = AuditQuery {
        within: caller.visible().cloned(),
        key_id: f.key_id,
        since: f.since,
        before_id: f.before_id,
        limit,
    };
    let items = state.store().list_audit(&query).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditAnswer { items, next }))
}
