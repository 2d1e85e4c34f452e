//! Authentication of a delegate instance by its session credential (`sbs_…`), shared by
//! the socket and the task endpoints. The socket checks against the store each time it
//! connects; the task endpoints take a session from memory once checked, for as long as
//! nothing can have made it invalid ([`crate::manager::sessions`] says what does).

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use chrono::Utc;
use switchboard_domain::{DelegateInstance, Secret, SecretHash, SecretKind, TokenStatus};

use crate::http::error::{ApiError, Problem};
use crate::http::middleware::bearer_token;
use crate::manager::sessions::{TrustedInstance, trusted_until};
use crate::state::AppState;

/// Like [`instance`], but a session checked before and not invalidated since is taken
/// from memory: for the task endpoints, called several times per task.
pub async fn trusted_instance(state: &AppState, headers: &HeaderMap) -> Result<TrustedInstance, ApiError> {
    let hash = session_hash(headers)?;
    let sessions = state.sessions();
    // Only while this replica hears the others: a revocation they signal meanwhile would
    // not reach the memory.
    if state.cluster().is_listening()
        && let Some(instance) = sessions.trusted(&hash, Utc::now())
    {
        return Ok(instance);
    }
    let started = sessions.begin();
    let instance = authenticate(state, &hash).await?;
    let trusted = TrustedInstance::from(&instance);
    if state.cluster().is_listening() {
        let until = trusted_until(instance.last_heartbeat_at, state.settings().instance_retention);
        sessions.remember(hash, trusted, until, started, Utc::now());
    }
    Ok(trusted)
}

/// The instance whose session credential the request carries, if its token is active.
pub async fn instance(state: &AppState, headers: &HeaderMap) -> Result<DelegateInstance, ApiError> {
    authenticate(state, &session_hash(headers)?).await
}

fn session_hash(headers: &HeaderMap) -> Result<SecretHash, ApiError> {
    let presented = bearer_token(headers).ok_or_else(|| {
        ApiError::unauthorized("this needs the session credential from registration, as Authorization: Bearer")
    })?;
    let secret = Secret::presented(presented);
    if !secret.is_kind(SecretKind::Session) {
        return Err(ApiError::unauthorized(
            "that credential is not a session credential (they start with sbs_ and come from registration)",
        ));
    }
    Ok(secret.hash())
}

async fn authenticate(state: &AppState, hash: &SecretHash) -> Result<DelegateInstance, ApiError> {
    let instance = state.store().instance_by_session(hash).await?.ok_or_else(|| {
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

/// The extractor of the task endpoints: the instance whose session the request carries,
/// from memory when it was checked before ([`trusted_instance`]). It reads only the
/// headers, so it runs before the body is read: a request without a valid session costs
/// no body read and no parse.
#[derive(Debug, Clone, Copy)]
pub struct Trusted(pub TrustedInstance);

impl FromRequestParts<AppState> for Trusted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        trusted_instance(state, &parts.headers).await.map(Trusted)
    }
}
