//! The operator and pipeline API under `/api/v1`: every route here sits behind the
//! admin key (until scoped API keys exist).

pub mod tokens;

use axum::Router;
use axum::routing::{get, post};

use crate::routes;
use crate::state::AppState;

/// The `/api/v1` routes, without the authentication layer (see [`crate::app`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/status", get(routes::status))
        .route("/delegate-tokens", post(tokens::create).get(tokens::list))
        .route("/delegate-tokens/{id}", get(tokens::get))
        .route("/delegate-tokens/{id}/revoke", post(tokens::revoke))
}
