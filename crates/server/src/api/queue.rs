//! `GET /api/v1/queue`: the waiting tasks as a whole, grouped by what holds them.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use switchboard_domain::{ConnectorId, Permission, Scope, TaskType};
use switchboard_protocol::fleet::{QueueHistory, QueueSummary};
use switchboard_store::QueueQuery;
use utoipa::IntoParams;

use super::Narrowed;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, QUERY};
use crate::manager::dispatch::Placer;
use crate::manager::queue;

/// The query string of `GET /api/v1/queue`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueFilters {
    /// Only tasks in this account.
    account: Option<switchboard_domain::Ident>,
    /// Only tasks in this org (needs `account`).
    org: Option<switchboard_domain::Ident>,
    /// Only tasks in this project (needs `account` and `org`).
    project: Option<switchboard_domain::Ident>,
    /// Only tasks of this type.
    #[serde(rename = "type")]
    task_type: Option<TaskType>,
    /// Only tasks naming this connector.
    connector: Option<ConnectorId>,
}

/// How many tasks wait, and why, grouped by what holds them.
///
/// Within the key's scope. The queued tasks are grouped by what placement decides on
/// (scope, type, selectors, connector, capabilities) in one aggregate query, and each of
/// the 1,000 largest groups is decided once by the engine against the current registry,
/// as a dry run would: a reason per group of tasks, with the delegates concerned, the
/// oldest wait and a few task ids.
#[utoipa::path(
    get,
    path = "/queue",
    operation_id = "queue_summary",
    tag = "tasks",
    security(("api_key" = [])),
    params(QueueFilters),
    responses((status = 200, description = "The queue, by reason.", body = QueueSummary), Errors<{ API | QUERY }>)
)]
pub async fn summary(
    State(placer): State<Placer>,
    caller: Caller,
    ApiQuery(q): ApiQuery<QueueFilters>,
) -> Result<Json<QueueSummary>, ApiError> {
    let Narrowed::Within(within) = super::scope_filter(&caller, q.account, q.org, q.project)? else {
        // Nothing of that scope is visible to this key: nothing waits there for it.
        return Ok(Json(QueueSummary {
            waiting: 0,
            summary: "no task waiting".into(),
            shapes: 0,
            shapes_truncated: false,
            reasons: Vec::new(),
        }));
    };
    let query = QueueQuery {
        within,
        task_type: q.task_type,
        connector: q.connector,
        max_shapes: queue::MAX_SHAPES,
    };
    let sees = |scope: &Scope| caller.check(Permission::DelegatesView, scope, "delegate").is_ok();
    Ok(Json(queue::summarize(&placer, query, &sees).await?))
}

/// The query string of `GET /api/v1/queue/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryFilters {
    /// Only tasks in this account.
    account: Option<switchboard_domain::Ident>,
    /// Only tasks in this org (needs `account`).
    org: Option<switchboard_domain::Ident>,
    /// Only tasks in this project (needs `account` and `org`).
    project: Option<switchboard_domain::Ident>,
}

/// The last hour of the queue, interval by interval: tasks queued and running, tasks
/// assigned and how long they had waited (p50, p95, p99).
///
/// Within the key's scope. Kept in memory by the replica that answers: the counts are
/// sampled from the store once per `history_interval` (10 s), the waits are those of the
/// assignments this replica made.
#[utoipa::path(
    get,
    path = "/queue/history",
    operation_id = "queue_history",
    tag = "tasks",
    security(("api_key" = [])),
    params(HistoryFilters),
    responses((status = 200, description = "The queue's last hour.", body = QueueHistory), Errors<{ API | QUERY }>)
)]
pub async fn history(
    State(placer): State<Placer>,
    caller: Caller,
    ApiQuery(q): ApiQuery<HistoryFilters>,
) -> Result<Json<QueueHistory>, ApiError> {
    let Narrowed::Within(within) = super::scope_filter(&caller, q.account, q.org, q.project)? else {
        return Ok(Json(placer.metrics().history().series(|_| false)));
    };
    Ok(Json(
        placer
            .metrics()
            .history()
            .series(|scope| within.as_ref().is_none_or(|w| w.contains(scope))),
    ))
}
