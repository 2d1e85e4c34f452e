//! Operator endpoints for delegates: list (groups with their instances and liveness),
//! get one, change tags, disable and enable, delete (its instances are told to drain).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::Utc;
use switchboard_domain::delegate::MAX_POOL_INSTANCES;
use switchboard_domain::{Declaration, DelegateGroup, DelegateInstance, GroupId, Ident, Permission, Scope, TokenId};
use switchboard_protocol::fleet::{
    DeclarationView, DeclareDelegate, DelegateList, DelegateView, Demand, InstanceView, SetTags,
};
use switchboard_protocol::socket::close;
use switchboard_store::Store;

use crate::config::Settings;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery, IdPath, NoFilters};
use crate::http::fields;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, CONFLICT, FORBIDDEN, JSON_BODY, NOT_FOUND, QUERY};
use crate::manager::cluster::Sockets;
use crate::manager::demand;

/// What these routes read: the store, this manager's sockets (for the one liveness rule,
/// [`Sockets::current`]) and the heartbeat timeout that liveness is judged by.
#[derive(Debug)]
pub struct Views {
    pub(super) store: Arc<dyn Store>,
    pub(super) sockets: Sockets,
    heartbeat_timeout: chrono::Duration,
}

impl<S> FromRequestParts<S> for Views
where
    S: Send + Sync,
    Arc<dyn Store>: FromRef<S>,
    Sockets: FromRef<S>,
    Arc<Settings>: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(_: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let settings = Arc::<Settings>::from_ref(state);
        Ok(Self {
            store: Arc::from_ref(state),
            sockets: Sockets::from_ref(state),
            heartbeat_timeout: chrono::Duration::from_std(settings.heartbeat_timeout).unwrap_or(chrono::Duration::MAX),
        })
    }
}

/// List the delegates the caller may see, with their instances and liveness.
#[utoipa::path(
    get,
    path = "/delegates",
    operation_id = "list_delegates",
    tag = "delegates",
    security(("api_key" = [])),
    responses((status = 200, description = "The delegates.", body = DelegateList), Errors<{ API | QUERY }>)
)]
pub async fn list(state: Views, caller: Caller, _: ApiQuery<NoFilters>) -> Result<Json<DelegateList>, ApiError> {
    let groups = state.store.list_groups(caller.visible()).await?;
    let instances = state.store.list_instances(None).await?;
    let tokens = token_names(&state).await?;
    let mut by_group: HashMap<GroupId, Vec<DelegateInstance>> = HashMap::new();
    for i in instances {
        by_group.entry(i.group_id).or_default().push(i);
    }
    let items = groups
        .iter()
        .map(|g| view(&state, g, by_group.remove(&g.id).unwrap_or_default(), &tokens))
        .collect();
    Ok(Json(DelegateList { items }))
}

/// Declare a delegate: a pool of instances, before any registers.
///
/// The delegate stays while it is declared, at zero instances too (a group that
/// registration created is removed after 7 days without instances), and a task it fits
/// (scope, tags, task type) waits for an instance of it instead of failing as
/// `no_eligible_delegate`. Instances join it by registering with its name in its scope.
/// Needs `delegates:edit` at its scope.
#[utoipa::path(
    post,
    path = "/delegates",
    operation_id = "declare_delegate",
    tag = "delegates",
    security(("api_key" = [])),
    request_body = DeclareDelegate,
    responses(
        (status = 201, description = "The declared delegate, with no instance yet.", body = DelegateView),
        Errors<{ API | JSON_BODY | FORBIDDEN | NOT_FOUND | CONFLICT }>
    )
)]
pub async fn declare(
    state: Views,
    caller: Caller,
    ApiJson(body): ApiJson<DeclareDelegate>,
) -> Result<(StatusCode, Json<DelegateView>), ApiError> {
    let scope =
        Scope::new(body.account, body.org, body.project).map_err(|e| ApiError::validation("project", e.to_string()))?;
    caller.check(Permission::DelegatesEdit, &scope, "scope")?;
    let tags = fields::tags(&body.tags)?;
    fields::task_types(&body.task_types)?;
    if let Some(n) = body.max_instances
        && !(1..=MAX_POOL_INSTANCES).contains(&n)
    {
        return Err(ApiError::validation(
            "max_instances",
            format!("max_instances must be 1 to {MAX_POOL_INSTANCES}; got {n}"),
        ));
    }
    let mut task_types = body.task_types;
    task_types.sort();
    task_types.dedup();
    let group = DelegateGroup {
        id: GroupId::new(),
        scope,
        name: body.name,
        tags,
        disabled: false,
        created_at: Utc::now(),
        declared: Some(Declaration {
            task_types,
            max_instances: body.max_instances,
        }),
        paused: None,
    };
    state.store.declare_group(&group).await?;
    tracing::info!(group.id = %group.id, group.name = %group.name, scope = %group.scope, "delegate declared");
    Ok((
        StatusCode::CREATED,
        Json(view(&state, &group, Vec::new(), &HashMap::new())),
    ))
}

/// One delegate, with its instances.
#[utoipa::path(
    get,
    path = "/delegates/{id}",
    operation_id = "get_delegate",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    responses((status = 200, description = "The delegate.", body = DelegateView), Errors<{ API | NOT_FOUND }>)
)]
pub async fn get(state: Views, caller: Caller, IdPath(id): IdPath<GroupId>) -> Result<Json<DelegateView>, ApiError> {
    let group = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesView, &group.scope, "delegate")?;
    Ok(Json(full_view(&state, &group).await?))
}

/// Replace a delegate's own tags (its instances keep theirs).
#[utoipa::path(
    put,
    path = "/delegates/{id}/tags",
    operation_id = "set_delegate_tags",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    request_body = SetTags,
    responses(
        (status = 200, description = "The delegate, changed.", body = DelegateView),
        Errors<{ API | JSON_BODY | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn set_tags(
    state: Views,
    caller: Caller,
    IdPath(id): IdPath<GroupId>,
    ApiJson(body): ApiJson<SetTags>,
) -> Result<Json<DelegateView>, ApiError> {
    let existing = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesEdit, &existing.scope, "delegate")?;
    let tags = fields::tags(&body.tags)?;
    let group = state.store.set_group_tags(id, &tags).await?;
    tracing::info!(group.id = %group.id, group.name = %group.name, "delegate tags changed");
    Ok(Json(full_view(&state, &group).await?))
}

/// Disable a delegate: no new task is assigned to its instances.
#[utoipa::path(
    post,
    path = "/delegates/{id}/disable",
    operation_id = "disable_delegate",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    responses(
        (status = 200, description = "The delegate, disabled.", body = DelegateView),
        Errors<{ API | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn disable(state: Views, caller: Caller, id: IdPath<GroupId>) -> Result<Json<DelegateView>, ApiError> {
    set_disabled(state, caller, id, true).await
}

/// Enable a disabled delegate again.
#[utoipa::path(
    post,
    path = "/delegates/{id}/enable",
    operation_id = "enable_delegate",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    responses(
        (status = 200, description = "The delegate, enabled.", body = DelegateView),
        Errors<{ API | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn enable(state: Views, caller: Caller, id: IdPath<GroupId>) -> Result<Json<DelegateView>, ApiError> {
    set_disabled(state, caller, id, false).await
}

async fn set_disabled(
    state: Views,
    caller: Caller,
    IdPath(id): IdPath<GroupId>,
    disabled: bool,
) -> Result<Json<DelegateView>, ApiError> {
    let existing = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesEdit, &existing.scope, "delegate")?;
    let group = state.store.set_group_disabled(id, disabled).await?;
    tracing::info!(group.id = %group.id, group.name = %group.name, disabled, "delegate enabled or disabled");
    Ok(Json(full_view(&state, &group).await?))
}

/// What an autoscaler needs to size this delegate: the queued tasks it could take, the
/// tasks on its instances, its free slots and the instances that would be enough.
///
/// Visible within the key's scope. The queue of the delegate's account is read (up to
/// 10,000 tasks, highest priority first) and each task is matched against the delegate
/// as placement would, by scope, effective selectors and type, whatever the liveness of
/// its instances.
#[utoipa::path(
    get,
    path = "/delegates/{id}/demand",
    operation_id = "delegate_demand",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    responses((status = 200, description = "The demand on the delegate.", body = Demand), Errors<{ API | NOT_FOUND }>)
)]
pub async fn demand(state: Views, caller: Caller, IdPath(id): IdPath<GroupId>) -> Result<Json<Demand>, ApiError> {
    let group = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesView, &group.scope, "delegate")?;
    let instances: Vec<DelegateInstance> = state
        .store
        .list_instances(Some(id))
        .await?
        .into_iter()
        .map(|i| state.sockets.current(i))
        .collect();
    let queue = demand::Queue::read(state.store.as_ref(), group.scope.account_id()).await?;
    Ok(Json(demand::of(
        &group,
        &instances,
        &queue,
        Utc::now(),
        state.heartbeat_timeout,
    )))
}

/// Delete a delegate and its instances.
///
/// Their sockets are told to drain, then closed; the processes may register again.
#[utoipa::path(
    delete,
    path = "/delegates/{id}",
    operation_id = "delete_delegate",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    responses((status = 204, description = "Deleted."), Errors<{ API | NOT_FOUND | FORBIDDEN }>)
)]
pub async fn delete(state: Views, caller: Caller, IdPath(id): IdPath<GroupId>) -> Result<StatusCode, ApiError> {
    let existing = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesDelete, &existing.scope, "delegate")?;
    state.store.delete_group(id).await?;
    let told = state.sockets.close(
        switchboard_store::SocketTarget::Group(id),
        close::REMOVED,
        "the delegate was deleted by an operator",
    );
    tracing::info!(group.id = %id, sockets = told, "delegate deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn full_view(state: &Views, group: &DelegateGroup) -> Result<DelegateView, ApiError> {
    let instances = state.store.list_instances(Some(group.id)).await?;
    Ok(view(state, group, instances, &token_names(state).await?))
}

async fn token_names(state: &Views) -> Result<HashMap<TokenId, Ident>, ApiError> {
    Ok(state
        .store
        .list_tokens(None)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect())
}

fn view(
    state: &Views,
    group: &DelegateGroup,
    instances: Vec<DelegateInstance>,
    tokens: &HashMap<TokenId, Ident>,
) -> DelegateView {
    let now = Utc::now();
    let timeout = state.heartbeat_timeout;
    let instances = instances
        .into_iter()
        .map(|i| {
            let i = state.sockets.current(i);
            let paused = i.paused.clone().filter(|p| p.holds_at(now));
            let accepting = !group.disabled && i.pause_at(group, now).is_none() && !i.draining && !i.is_spent();
            InstanceView {
                paused,
                draining: i.draining,
                max_tasks: i.max_tasks,
                tasks_taken: i.tasks_taken,
                accepting,
                id: i.id,
                state: i.liveness(now, timeout),
                heartbeat_age_ms: (now - i.last_heartbeat_at).num_milliseconds().max(0),
                selectors: i.selector_set(group).into_iter().collect(),
                hostname: i.hostname,
                version: i.version,
                flavour: i.flavour,
                last_heartbeat_at: i.last_heartbeat_at,
                load: i.active_tasks,
                capacity: i.capacity.get(),
                tags: i.tags.into_iter().collect(),
                task_types: i.task_types,
                token_id: i.token_id,
                token_name: tokens.get(&i.token_id).cloned(),
                registered_at: i.registered_at,
            }
        })
        .collect();
    DelegateView {
        id: group.id,
        name: group.name.clone(),
        account: group.scope.account_id().clone(),
        org: group.scope.org().cloned(),
        project: group.scope.project().cloned(),
        tags: group.tags.iter().cloned().collect(),
        disabled: group.disabled,
        created_at: group.created_at,
        declared: group.declared.as_ref().map(|d| DeclarationView {
            task_types: d.task_types.clone(),
            max_instances: d.max_instances,
        }),
        paused: group.paused.clone().filter(|p| p.holds_at(now)),
        instances,
    }
}
