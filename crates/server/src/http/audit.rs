//! The audit trail of `/api/v1`: every successful change (POST, PUT, DELETE) is recorded
//! with who made it (the key), what (method, route, path, status), when and from where.
//!
//! It is a middleware inside authentication, so it sees the [`Caller`] and the answer.
//! The change itself is committed by the handler before the entry is written; if the
//! audit write fails, the failure is logged and counted, and the change stands: an
//! acknowledged write is never rolled back for want of its audit line. A submission is
//! the exception: its entry is written in the task's own commit ([`Prepared`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, OriginalUri, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use switchboard_domain::AuditEntry;
use switchboard_store::Store;

use super::auth::Caller;

/// Routes that take a body but change nothing.
const READ_ONLY: &[&str] = &["/api/v1/tasks/explain"];

/// The middleware: writes the entry of a successful change to `store`.
pub async fn record(State(store): State<Arc<dyn Store>>, request: Request, next: Next) -> Response {
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
    if let Err(e) = store.append_audit(&entry).await {
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
