//! Authentication of a delegate instance by its session credential (`sbs_…`), shared by
//! the socket and the task endpoints.

use axum::http::HeaderMap;
use switchboard_domain::{DelegateInstance, Secret, SecretKind, TokenStatus};

use crate::error::{ApiError, Problem};
use crate::middleware::bearer_token;
use crate::state::AppState;

/// The instance whose session credential the request carries, if its token is active.
pub async fn instance(state: &AppState, headers: &HeaderMap) -> Result<DelegateInstance, ApiError> {
    let presented = bearer_token(headers).ok_or_else(|| {
        ApiError::unauthorized("this needs the session credential from registration, as Authorization: Bearer")
    })?;
    let secret = Secret::presented(presented);
    if !secret.is_kind(SecretKind::Session) {
        return Err(ApiError::unauthorized(
            "that credential is not a session credential (they start with sbs_ and come from registration)",
        ));
    }
    let instance = state
        .store()
        .instance_by_session(&secret.hash())
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("unknown session: the instance was removed or never registered; register again")
        })?;
    let token = state.store().get_token(instance.token_id).await?;
    if token.status == TokenStatus::Revoked {
        return Err(ApiError::new(
            Problem::TokenRevoked,
            format!(
                "the delegate token {:?} this instance registered with was revoked",
                token.name.as_str()
            ),
        ));
    }
    Ok(instance)
}
