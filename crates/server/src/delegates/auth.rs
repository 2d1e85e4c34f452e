//! Authentication of a delegate instance by its session credential (`sbs_…`), shared by
//! the socket and the task endpoints.
//!
//! The socket is authenticated against the store each time it connects. The task
//! endpoints (acquire, progress, result: several calls per task) take a session that was
//! authenticated moments ago on trust ([`Sessions`]), for at most [`SESSION_TRUST`]; a
//! token revoked or a group deleted on any replica ends that trust at once (the same
//! signal closes their sockets), and so does a gap in the replicas' signals.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use switchboard_domain::{DelegateInstance, GroupId, Secret, SecretHash, SecretKind, TokenId, TokenStatus};

use crate::error::{ApiError, Problem};
use crate::middleware::bearer_token;
use crate::state::AppState;

/// How long an authenticated session is taken on trust by the task endpoints.
pub const SESSION_TRUST: Duration = Duration::from_secs(2);

/// Sessions authenticated in the last [`SESSION_TRUST`], by the hash of their credential.
#[derive(Debug, Default)]
pub struct Sessions {
    /// A std mutex: lookups, inserts and sweeps, never held across an await.
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    by_hash: HashMap<SecretHash, (DelegateInstance, Instant)>,
    /// How many entries the map may hold before expired ones are swept out: twice what
    /// was left after the last sweep, so sweeping costs O(1) per insert on average.
    sweep_at: usize,
}

impl Sessions {
    fn trusted(&self, hash: &SecretHash, now: Instant) -> Option<DelegateInstance> {
        let known = lock(&self.known);
        let (instance, at) = known.by_hash.get(hash)?;
        (now.duration_since(*at) < SESSION_TRUST).then(|| instance.clone())
    }

    fn remember(&self, hash: SecretHash, instance: DelegateInstance, now: Instant) {
        let mut known = lock(&self.known);
        known.by_hash.insert(hash, (instance, now));
        if known.by_hash.len() > known.sweep_at {
            known
                .by_hash
                .retain(|_, (_, at)| now.duration_since(*at) < SESSION_TRUST);
            known.sweep_at = (known.by_hash.len() * 2).max(1024);
        }
    }

    /// Ends the trust in the sessions of instances registered with `token`.
    pub fn forget_token(&self, token: TokenId) {
        lock(&self.known).by_hash.retain(|_, (i, _)| i.token_id != token);
    }

    /// Ends the trust in the sessions of the instances of `group`.
    pub fn forget_group(&self, group: GroupId) {
        lock(&self.known).by_hash.retain(|_, (i, _)| i.group_id != group);
    }

    /// Ends the trust in every session (signals from other replicas may have been missed).
    pub fn forget_all(&self) {
        lock(&self.known).by_hash.clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one lookup, insert or sweep of a map: a panic cannot leave
    // it half-updated in a way that matters (at worst an entry is re-authenticated).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Like [`instance`], but a session authenticated in the last [`SESSION_TRUST`] is taken
/// on trust: for the task endpoints, called several times per task.
pub async fn trusted_instance(state: &AppState, headers: &HeaderMap) -> Result<DelegateInstance, ApiError> {
    let hash = session_hash(headers)?;
    let now = Instant::now();
    if let Some(instance) = state.sessions().trusted(&hash, now) {
        return Ok(instance);
    }
    let instance = authenticate(state, &hash).await?;
    state.sessions().remember(hash, instance.clone(), now);
    Ok(instance)
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use switchboard_domain::{Capacity, ImageFlavour, InstanceId, Selectors};

    use super::*;

    fn instance(n: u128, token: u128, group: u128) -> DelegateInstance {
        DelegateInstance {
            id: InstanceId(uuid::Uuid::from_u128(n)),
            group_id: GroupId(uuid::Uuid::from_u128(group)),
            token_id: TokenId(uuid::Uuid::from_u128(token)),
            hostname: format!("host-{n}"),
            version: "1.0.0".into(),
            flavour: ImageFlavour::Minimal,
            tags: Selectors::new(),
            task_types: Vec::new(),
            capacity: Capacity::default(),
            active_tasks: 0,
            registered_at: Utc::now(),
            last_heartbeat_at: Utc::now(),
            connected: true,
        }
    }

    fn hash(n: u8) -> SecretHash {
        SecretHash([n; 32])
    }

    #[test]
    fn a_session_is_trusted_for_a_while_then_authenticated_again() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        sessions.remember(hash(1), instance(1, 10, 20), t0);
        let trusted = sessions.trusted(&hash(1), t0 + SESSION_TRUST / 2);
        assert_eq!(trusted.map(|i| i.id), Some(InstanceId(uuid::Uuid::from_u128(1))));
        assert!(sessions.trusted(&hash(1), t0 + SESSION_TRUST).is_none(), "expired");
        assert!(sessions.trusted(&hash(2), t0).is_none(), "never seen");
    }

    #[test]
    fn revoking_a_token_or_deleting_a_group_ends_the_trust_in_its_sessions_only() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        sessions.remember(hash(1), instance(1, 10, 20), t0);
        sessions.remember(hash(2), instance(2, 11, 20), t0);
        sessions.remember(hash(3), instance(3, 12, 21), t0);

        sessions.forget_token(TokenId(uuid::Uuid::from_u128(10)));
        assert!(sessions.trusted(&hash(1), t0).is_none());
        assert!(sessions.trusted(&hash(2), t0).is_some());

        sessions.forget_group(GroupId(uuid::Uuid::from_u128(20)));
        assert!(sessions.trusted(&hash(2), t0).is_none());
        assert!(sessions.trusted(&hash(3), t0).is_some());

        sessions.forget_all();
        assert!(sessions.trusted(&hash(3), t0).is_none());
    }

    #[test]
    fn expired_sessions_are_swept_out_as_new_ones_arrive() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        for n in 0..2000u32 {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            sessions.remember(SecretHash(bytes), instance(u128::from(n), 1, 1), t0);
        }
        let later = t0 + SESSION_TRUST;
        sessions.remember(hash(255), instance(9999, 1, 1), later);
        for n in 0..1100u32 {
            let mut bytes = [1u8; 32];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            sessions.remember(SecretHash(bytes), instance(u128::from(n), 1, 1), later);
        }
        let held = lock(&sessions.known).by_hash.len();
        assert!(held <= 1101 + 1, "the 2000 expired sessions were swept: {held} held");
    }
}
