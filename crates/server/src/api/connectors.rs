//! Connectors: create, list (optionally within a scope), get, replace the name and
//! selectors, delete.
//!
//! A connector's selectors are what a task naming it inherits when it has none of its own,
//! so they are checked and normalized here, once, like a group's tags. A connector never
//! changes scope: moving it would silently change which delegates its tasks may reach.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use switchboard_domain::selector::parse_selectors;
use switchboard_domain::task::limits::MAX_SELECTORS;
use switchboard_domain::{Connector, ConnectorId, Ident, Permission, Scope, Selectors};
use switchboard_protocol::connectors::{ConnectorList, ConnectorView, CreateConnector, UpdateConnector};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// `POST /api/v1/connectors`.
pub async fn create(
    State(state): State<AppState>,
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
    state.store().create_connector(&connector).await?;
    tracing::info!(connector.id = %connector.id, connector.name = %connector.name, scope = %connector.scope, "connector created");
    Ok((StatusCode::CREATED, Json(ConnectorView::from(&connector))))
}

/// `GET /api/v1/connectors[?account=..[&org=..[&project=..]]]`: all connectors, or those
/// within a scope (an account filter includes its orgs' and projects' connectors).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ConnectorList>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Ok(within) = caller.narrow(filter(&pairs)?) else {
        return Ok(Json(ConnectorList { items: Vec::new() }));
    };
    let connectors = state.store().list_connectors(within.as_ref()).await?;
    Ok(Json(ConnectorList {
        items: connectors.iter().map(ConnectorView::from).collect(),
    }))
}

/// `GET /api/v1/connectors/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    let connector = state.store().get_connector(parse_id(&id)?).await?;
    caller.check(Permission::DelegatesView, &connector.scope, "connector")?;
    Ok(Json(ConnectorView::from(&connector)))
}

/// `PUT /api/v1/connectors/{id}`: replaces the name and selectors, keeping the scope.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateConnector>,
) -> Result<Json<ConnectorView>, ApiError> {
    let id = parse_id(&id)?;
    let selectors = parse(&body.selectors)?;
    let mut connector = state.store().get_connector(id).await?;
    caller.check(Permission::ConnectorsAccess, &connector.scope, "connector")?;
    connector.name = body.name;
    connector.selectors = selectors;
    // Strictly later than before, even within the same millisecond, so a client comparing
    // `updated_at` always sees the change.
    connector.updated_at = now().max(connector.updated_at + Duration::milliseconds(1));
    state.store().update_connector(&connector).await?;
    tracing::info!(connector.id = %connector.id, connector.name = %connector.name, "connector updated");
    Ok(Json(ConnectorView::from(&connector)))
}

/// `DELETE /api/v1/connectors/{id}`. Tasks that named it keep running without it.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let existing = state.store().get_connector(id).await?;
    caller.check(Permission::ConnectorsAccess, &existing.scope, "connector")?;
    state.store().delete_connector(id).await?;
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

/// The scope of a list's query string: none, `account`, `account` + `org`, or all three.
/// Unknown and repeated parameters are refused, so a misspelt filter never silently lists
/// everything.
fn filter(pairs: &[(String, String)]) -> Result<Option<Scope>, ApiError> {
    let (mut account, mut org, mut project) = (None, None, None);
    for (key, value) in pairs {
        let slot = match key.as_str() {
            "account" => &mut account,
            "org" => &mut org,
            "project" => &mut project,
            _ => {
                return Err(ApiError::validation(
                    key.as_str(),
                    format!("unknown query parameter {key:?}; the filters are account, org and project"),
                ));
            }
        };
        if slot.is_some() {
            return Err(ApiError::validation(
                key.as_str(),
                format!("the query parameter {key:?} is given more than once"),
            ));
        }
        let ident = Ident::parse(value)
            .map_err(|e| ApiError::validation(key.as_str(), format!("`{key}` {e} (in the query string)")))?;
        *slot = Some(ident);
    }
    let Some(account) = account else {
        return match (org, project) {
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
    Scope::new(account, org, project)
        .map(Some)
        .map_err(|e| ApiError::validation("project", e.to_string()))
}

/// Now, to the millisecond the stores keep, so the answer to a write equals a later read.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn parse_id(raw: &str) -> Result<ConnectorId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("there is no connector {raw:?} (ids are UUIDs)")))
}
