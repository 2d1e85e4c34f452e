//! The operator and pipeline API under `/api/v1`: every route needs an API key (or the
//! admin key); each handler checks the caller's permission in the resource's scope.

pub mod connectors;
pub mod delegates;
pub mod keys;
pub mod tasks;
pub mod tokens;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// A list's `limit` parameter: `default` when absent, else 1 to
/// [`MAX_PAGE`](switchboard_store::query::MAX_PAGE), as the document states (the query
/// structs' `#[param(minimum, maximum)]`). Outside that, a 422 naming `limit`, rather than
/// a silent clamp the caller would mistake for the end of the list.
pub fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    use switchboard_store::query::MAX_PAGE;
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::validation(
            "limit",
            format!("limit must be 1 to {MAX_PAGE}, got {n}"),
        )),
    }
}

/// The `/api/v1` routes, without the authentication layer (see [`crate::router`]). Each
/// handler's `#[utoipa::path]` gives its path and method: registering it here is what
/// puts it both in the router and in the OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(crate::routes::status))
        .routes(routes!(crate::audit::list))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::get))
        .routes(routes!(tokens::revoke))
        .routes(routes!(connectors::create, connectors::list))
        .routes(routes!(connectors::get, connectors::update, connectors::delete))
        .routes(routes!(tasks::submit, tasks::list))
        .routes(routes!(tasks::explain))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::wait))
        .routes(routes!(tasks::selection_log))
        .routes(routes!(delegates::list))
        .routes(routes!(delegates::get, delegates::delete))
        .routes(routes!(delegates::set_tags))
        .routes(routes!(delegates::disable))
        .routes(routes!(delegates::enable))
}
