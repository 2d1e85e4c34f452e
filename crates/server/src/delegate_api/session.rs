//! Authentication of a delegate instance by its session credential (`sbs_…`), shared by
//! the socket and the task endpoints. The socket checks against the store each time it
//! connects; the task endpoints take a session from memory once checked, for as long as
//! nothing can have made it invalid ([`crate::manager::sessions`] says what does).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use chrono::Utc;
use switchboard_domain::{DelegateInstance, Secret, SecretHash, SecretKind, TokenStatus};
use switchboard_store::Store;

use crate::config::Settings;
use crate::http::error::{ApiError, Problem};
use crate::http::middleware::bearer_token;
use crate::manager::cluster::Sockets;
use crate::manager::sessions::{TrustedInstance, trusted_until};

/// Like [`instance`], but a session checked before and not invalidated since is taken
/// from memory: for the task endpoints, called several times per task.
/// `retention` is the `instance_retention` setting: a session is trusted until its
/// instance could be swept ([`trusted_until`]).
pub async fn trusted_instance(
    store: &dyn Store,
    sockets: &Sockets,
    retention: Duration,
    headers: &HeaderMap,
) -> Result<TrustedInstance, ApiError> {
    let hash = session_hash(headers)?;
    let sessions = &sockets.sessions;
    // Only while this replica hears the others: a revocation they signal meanwhile would
    // not reach the memory.
    if sockets.cluster.is_listening()
        && let Some(instance) = sessions.trusted(&hash, Utc::now())
    {
        return Ok(instance);
    }
    let started = sessions.begin();
    let instance = authenticate(store, &hash).await?;
    let trusted = TrustedInstance::from(&instance);
    if sockets.cluster.is_listening() {
        let until = trusted_until(instance.last_heartbeat_at, retention);
        sessions.remember(hash, trusted, until, started, Utc::now());
    }
    Ok(trusted)
}

/// The instance whose session credential the request carries, if its token is active.
pub async fn instance(store: &dyn Store, headers: &HeaderMap) -> Result<DelegateInstance, ApiError> {
    authenticate(store, &session_hash(headers)?).await
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

async fn authenticate(store: &dyn Store, hash: &SecretHash) -> Result<DelegateInstance, ApiError> {
    let instance = store.instance_by_session(hash).await?.ok_or_else(|| {
        ApiError::unauthorized("unknown session: the instance was removed or never registered; register again")
    })?;
    let token = store.get_token(instance.token_id).await?;
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

impl<S> FromRequestParts<S> for Trusted
where
    S: Send + Sync,
    Arc<dyn Store>: FromRef<S>,
    Sockets: FromRef<S>,
    Arc<Settings>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let store = Arc::<dyn Store>::from_ref(state);
        let retention = Arc::<Settings>::from_ref(state).instance_retention;
        trusted_instance(store.as_ref(), &Sockets::from_ref(state), retention, &parts.headers)
            .await
            .map(Trusted)
    }
}

/// The extractor of the socket: the instance whose session the request carries, checked
/// against the store every time (a socket lives long; it is opened rarely).
#[derive(Debug, Clone)]
pub struct Checked(pub DelegateInstance);

impl<S> FromRequestParts<S> for Checked
where
    S: Send + Sync,
    Arc<dyn Store>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        instance(Arc::<dyn Store>::from_ref(state).as_ref(), &parts.headers)
            .await
            .map(Checked)
    }
}
