//! Who is calling `/api/v1`, and what they may do.
//!
//! The authentication middleware turns the bearer credential into a [`Caller`]: the
//! configured admin key (everything, everywhere), or an API key with a scope and
//! permissions. Handlers then ask the caller about the resource at hand, in its scope:
//! outside the key's scope the answer is 404, exactly as if the resource did not exist
//! (a key must not learn what other teams have); inside it without the permission, 403
//! naming the permission.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use switchboard_domain::{ApiKey, Denied, Permission, Scope, SecretHash};
use switchboard_store::Store;

use super::error::{ApiError, Problem};

/// What the authentication middleware ([`super::middleware::authenticate`]) checks a
/// credential against: the admin key's hash (`None`: no admin key, and then only API keys
/// are accepted) and the store that holds the API keys.
#[derive(Debug, Clone)]
pub struct Keys {
    pub admin: Option<SecretHash>,
    pub store: Arc<dyn Store>,
}

/// The authenticated caller of an `/api/v1` request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The bootstrap admin key: every permission in every account.
    Admin,
    /// A scoped API key.
    Key(Box<ApiKey>),
}

impl Caller {
    /// May this caller do what `permission` covers to a resource in `scope`? `what` names
    /// the resource for the 404 ("task 0193…").
    pub fn check(&self, permission: Permission, scope: &Scope, what: &str) -> Result<(), ApiError> {
        let Caller::Key(key) = self else {
            return Ok(());
        };
        match key.check(permission, scope) {
            Ok(()) => Ok(()),
            Err(Denied::OutOfScope) => Err(ApiError::not_found(format!("{what} not found"))),
            Err(Denied::Missing(p)) => Err(ApiError::new(
                Problem::Forbidden,
                format!("this API key lacks the permission {p} for {scope}; ask for a key that has it"),
            )),
            Err(Denied::Revoked) => Err(ApiError::unauthorized("this API key was revoked")),
        }
    }

    /// What this caller may see: `None` for everything, else its key's scope.
    pub fn visible(&self) -> Option<&Scope> {
        match self {
            Caller::Admin => None,
            Caller::Key(key) => Some(&key.scope),
        }
    }

    /// The scope a list should be filtered to: the narrower of the requested filter and
    /// what the caller may see. [`NoOverlap`] (an empty answer) when they do not overlap.
    pub fn narrow(&self, requested: Option<Scope>) -> Result<Option<Scope>, NoOverlap> {
        match (self.visible(), requested) {
            (None, requested) => Ok(requested),
            (Some(mine), None) => Ok(Some(mine.clone())),
            (Some(mine), Some(asked)) if mine.contains(&asked) => Ok(Some(asked)),
            (Some(mine), Some(asked)) if asked.contains(mine) => Ok(Some(mine.clone())),
            _ => Err(NoOverlap),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    /// For the audit trail and logs: never the secret.
    pub fn describe(&self) -> String {
        match self {
            Caller::Admin => "admin key".into(),
            Caller::Key(key) => format!("API key {} ({})", key.name, key.id),
        }
    }
}

/// A requested filter and the caller's scope share nothing: the list is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoOverlap;

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Set by the authentication middleware on every /api/v1 route; absent only if a
        // route were mounted outside it, which is a bug worth a loud answer.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("an /api/v1 handler ran without the authentication middleware");
            ApiError::internal()
        })
    }
}
