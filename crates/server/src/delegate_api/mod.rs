//! `/delegate/v1`: what delegates call. Registration with a delegate token, then the
//! socket channel and the task endpoints (acquire, progress, result) with the session
//! credential registration returned.

pub mod keepalive;
pub mod register;
pub mod session;
pub mod socket;
pub mod tasks;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The `/delegate/v1` routes. Not behind the admin key: delegates authenticate with their
/// token (registration) or their session credential (everything after).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register::register))
        .routes(routes!(socket::stream))
        .routes(routes!(tasks::acquire))
        .routes(routes!(tasks::progress))
        .routes(routes!(tasks::logs))
        .routes(routes!(tasks::result))
}
