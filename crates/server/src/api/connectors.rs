//! Connectors: create, list (optionally within a scope), get, replace the name and
//! selectors, delete.
//!
//! A connector's selectors are what a task naming it inherits when it has none of its own,
//! so they are checked and normalized here, once, like a group's tags. A connector never
//! changes scope: moving it would silently change which delegates its tasks may reach.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use switchboard_domain::selector::parse_selectors;
use switchboard_domain::task::limits::MAX_SELECTORS;
use switchboard_domain::{Connector, ConnectorId, Ident, Permission, Scope, Selectors};
use switchboard_protocol::connectors::{ConnectorList, ConnectorView, CreateConnector, UpdateConnector};
use switchboard_store::Store;

use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery, IdPath};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, CONFLICT, FORBIDDEN, INVALID, JSON_BODY, NOT_FOUND, QUERY};

/// Create a connector.
///
/// Its selectors are normalized (trimmed, lower-case, deduplicated). Names are unique in
/// their scope.
#[utoipa::path(
    post,
    path = "/connectors",
    operation_id = "create_connector",
    tag = "connectors",
    security(("api_key" = [])),
    request_body = CreateConnector,
    responses(
        (status = 201, description = "The connector.", body = ConnectorView),
        Errors<{ API | JSON_BODY | FORBIDDEN | NOT_FOUND | CONFLICT }>
    )
)]
pub async fn create(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateConnector>,
) -> Result<(StatusCode, Json<ConnectorView>), ApiError> {
    let scope =
        Scope::new(body.account, body.org, body.project).map_err(|e| ApiError::validation("project", e.to_string()))?;
    caller.check(Permission::ConnectorsAccess, &scope, "scope")?;
    let selectors = parse(&body.selectors)?;
    let now = now();
    let connector = Connector {
        id: ConnectorId::new(),
        scope,
        name: body.name,
        selectors,
        created_at: now,
        updated_at: now,
    };
    store.create_connector(&connector).await?;
    tracing::info!(connector.id = %connector.id, connector.name = %connector.name, scope = %connector.scope, "connector created");
    Ok((StatusCode::CREATED, Json(ConnectorView::from(&connector))))
}

/// List connectors: all the caller may see, or those within a scope.
///
/// An account filter includes its orgs' and projects' connectors. Unknown and repeated
/// parameters are refused.
#[utoipa::path(
    get,
    path = "/connectors",
    operation_id = "list_connectors",
    tag = "connectors",
    security(("api_key" = [])),
    params(ConnectorFilter),
    responses(
        (status = 200, description = "The connectors.", body = ConnectorList),
        Errors<{ API | QUERY | INVALID }>
    )
)]
pub async fn list(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<ConnectorFilter>,
) -> Result<Json<ConnectorList>, ApiError> {
    let Ok(within) = caller.narrow(filter.scope()?) else {
        return Ok(Json(ConnectorList { items: Vec::new() }));
    };
    let connectors = store.list_connectors(within.as_ref()).await?;
    Ok(Json(ConnectorList {
        items: connectors.iter().map(ConnectorView::from).collect(),
    }))
}

/// One connector.
#[utoipa::path(
    get,
    path = "/connectors/{id}",
    operation_id = "get_connector",
    tag = "connectors",
    security(("api_key" = [])),
    params(("id" = ConnectorId, Path, description = "The connector's id.")),
    responses((status = 200, description = "The connector.", body = ConnectorView), Errors<{ API | NOT_FOUND }>)
)]
pub async fn get(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    IdPath(id): IdPath<ConnectorId>,
) -> Result<Json<ConnectorView>, ApiError> {
    let connector = store.get_connector(id).await?;
    caller.check(Permission::DelegatesView, &connector.scope, "connector")?;
    Ok(Json(ConnectorView::from(&connector)))
}

/// Replace a connector's name and selectors.
///
/// The scope never changes: moving a connector would silently change which delegates its
/// tasks may reach.
#[utoipa::path(
    put,
    path = "/connectors/{id}",
    operation_id = "update_connector",
    tag = "connectors",
    security(("api_key" = [])),
    params(("id" = ConnectorId, Path, description = "The connector's id.")),
    request_body = UpdateConnector,
    responses(
        (status = 200, description = "The connector, changed.", body = ConnectorView),
        Errors<{ API | JSON_BODY | NOT_FOUND | FORBIDDEN | CONFLICT }>
    )
)]
pub async fn update(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    IdPath(id): IdPath<ConnectorId>,
    ApiJson(body): ApiJson<UpdateConnector>,
) -> Result<Json<ConnectorView>, ApiError> {
    let selectors = parse(&body.selectors)?;
    let mut connector = store.get_connector(id).await?;
    caller.check(Permission::ConnectorsAccess, &connector.scope, "connector")?;
    connector.name = body.name;
    connector.selectors = selectors;
    // Strictly later than before, even within the same millisecond, so a client comparing
    // `updated_at` always sees the change.
    connector.updated_at = now().max(connector.updated_at + Duration::milliseconds(1));
    store.update_connector(&connector).await?;
    tracing::info!(connector.id = %connector.id, connector.name = %connector.name, "connector updated");
    Ok(Json(ConnectorView::from(&connector)))
}

/// Delete a connector.
///
/// Tasks that named it keep running without it.
#[utoipa::path(
    delete,
    path = "/connectors/{id}",
    operation_id = "delete_connector",
    tag = "connectors",
    security(("api_key" = [])),
    params(("id" = ConnectorId, Path, description = "The connector's id.")),
    responses((status = 204, description = "Deleted."), Errors<{ API | NOT_FOUND | FORBIDDEN }>)
)]
pub async fn delete(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    IdPath(id): IdPath<ConnectorId>,
) -> Result<StatusCode, ApiError> {
    let existing = store.get_connector(id).await?;
    caller.check(Permission::ConnectorsAccess, &existing.scope, "connector")?;
    store.delete_connector(id).await?;
    tracing::info!(connector.id = %id, "connector deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Normalizes the selectors of a request, naming the first bad one.
fn parse(raw: &[String]) -> Result<Selectors, ApiError> {
    let selectors = parse_selectors(raw.iter().map(String::as_str))
        .map_err(|(selector, e)| ApiError::validation("selectors", format!("selector {selector:?}: {e}")))?;
    if selectors.len() > MAX_SELECTORS {
        return Err(ApiError::validation(
            "selectors",
            format!(
                "a connector has at most {MAX_SELECTORS} distinct selectors, got {}",
                selectors.len()
            ),
        ));
    }
    Ok(selectors)
}

/// The query string of `GET /api/v1/connectors`. Unknown and repeated parameters are
/// refused by [`ApiQuery`], so a misspelt filter never silently lists everything.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConnectorFilter {
    /// Only connectors in this account.
    account: Option<Ident>,
    /// Only connectors in this org (needs `account`).
    org: Option<Ident>,
    /// Only connectors in this project (needs `account` and `org`).
    project: Option<Ident>,
}

impl ConnectorFilter {
    /// The scope asked for: none, `account`, `account` + `org`, or all three.
    fn scope(self) -> Result<Option<Scope>, ApiError> {
        let Some(account) = self.account else {
            return match (self.org, self.project) {
                (None, None) => Ok(None),
                (Some(_), _) => Err(ApiError::validation(
                    "org",
                    "an `org` filter needs its `account`: add `account=...` to the query",
                )),
                (None, Some(_)) => Err(ApiError::validation(
                    "project",
                    "a `project` filter needs its `account` and `org`: add both to the query",
                )),
            };
        };
        Scope::new(account, self.org, self.project)
            .map(Some)
            .map_err(|e| ApiError::validation("project", e.to_string()))
    }
}

/// Now, to the millisecond the stores keep, so the answer to a write equals a later read.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
