//! The operator and pipeline API under `/api/v1`: every route needs an API key (or the
//! admin key); each handler checks the caller's permission in the resource's scope.

pub mod audit;
pub mod connectors;
pub mod delegates;
pub mod events;
pub mod install;
pub mod keys;
pub mod logs;
pub mod maintenance;
pub mod policies;
pub mod queue;
pub mod secrets;
pub mod status;
pub mod tasks;
pub mod tokens;
pub mod visible;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::state::AppState;

/// The `limit` of a list's page: 1 to [`MAX_PAGE`](switchboard_store::query::MAX_PAGE),
/// `default` when absent. Outside that it is refused by name, not quietly changed: a
/// client asking for 0 or 10000 learns that it cannot have them.
pub(crate) fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    use switchboard_store::query::MAX_PAGE;
    match limit.unwrap_or(default) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        other => Err(ApiError::validation(
            "limit",
            format!("the query parameter `limit` must be 1 to {MAX_PAGE}; got {other} (the `next` cursor pages on)"),
        )),
    }
}

/// The scope a list's `account`, `org` and `project` filters name, narrowed to what the
/// caller sees. 422 for an org or project without its account, or a project without its
/// org; a filter outside the caller's scope is [`Narrowed::Nothing`], which lists
/// nothing (as if nothing were there).
pub(crate) fn scope_filter(
    caller: &crate::http::auth::Caller,
    account: Option<switchboard_domain::Ident>,
    org: Option<switchboard_domain::Ident>,
    project: Option<switchboard_domain::Ident>,
) -> Result<Narrowed, ApiError> {
    let asked = match account {
        Some(account) => Some(
            switchboard_domain::Scope::new(account, org, project)
                .map_err(|e| ApiError::validation("project", e.to_string()))?,
        ),
        None if org.is_some() || project.is_some() => {
            return Err(ApiError::validation(
                "account",
                "filtering by org or project needs the account too",
            ));
        }
        None => None,
    };
    Ok(match caller.narrow(asked) {
        Ok(within) => Narrowed::Within(within),
        Err(_) => Narrowed::Nothing,
    })
}

/// What [`scope_filter`] leaves a list.
#[derive(Debug)]
pub(crate) enum Narrowed {
    /// The resources within this scope (`None`: everything).
    Within(Option<switchboard_domain::Scope>),
    /// The filter and the caller's scope do not overlap: nothing.
    Nothing,
}

/// The `/api/v1` routes, without the authentication layer (see [`crate::router`]). Each
/// handler's `#[utoipa::path]` gives its path and method: registering it here is what
/// puts it both in the router and in the OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status::status))
        .routes(routes!(audit::list))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::get))
        .routes(routes!(tokens::revoke))
        .routes(routes!(install::install))
        .routes(routes!(connectors::create, connectors::list))
        .routes(routes!(connectors::get, connectors::update, connectors::delete))
        .routes(routes!(secrets::create, secrets::list))
        .routes(routes!(secrets::get, secrets::replace, secrets::delete))
        .routes(routes!(tasks::submit, tasks::list))
        .routes(routes!(tasks::explain))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::wait))
        .routes(routes!(tasks::selection_log))
        .routes(routes!(tasks::attempts))
        .routes(routes!(logs::read))
        .routes(routes!(policies::set, policies::list, policies::delete))
        .routes(routes!(queue::summary))
        .routes(routes!(queue::history))
        .routes(routes!(events::follow))
        .routes(routes!(delegates::list, delegates::declare))
        .routes(routes!(delegates::get, delegates::delete))
        .routes(routes!(delegates::set_tags))
        .routes(routes!(delegates::demand))
        .routes(routes!(delegates::disable))
        .routes(routes!(delegates::enable))
        .routes(routes!(maintenance::pause_delegate))
        .routes(routes!(maintenance::resume_delegate))
        .routes(routes!(maintenance::pause_instance))
        .routes(routes!(maintenance::resume_instance))
        .routes(routes!(maintenance::mint_jit))
}
