//! `GET /api/v1/audit`: the audit trail the audit middleware ([`crate::http::audit`])
//! writes, read back a page at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_domain::{ApiKeyId, AuditEntry};
use switchboard_store::AuditQuery;
use switchboard_store::Store;
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, INVALID, QUERY};

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
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> Result<Json<AuditAnswer>, ApiError> {
    let limit = super::page_limit(f.limit, 100)?;
    let query = AuditQuery {
        within: caller.visible().cloned(),
        key_id: f.key_id,
        since: f.since,
        before_id: f.before_id,
        limit,
    };
    let items = store.list_audit(&query).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditAnswer { items, next }))
}
