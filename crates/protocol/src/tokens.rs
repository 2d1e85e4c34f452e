//! Delegate token management: `/api/v1/delegate-tokens`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{DelegateToken, Ident, Secret, TokenId, TokenStatus};

/// `POST /api/v1/delegate-tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: Ident,
    pub account: Ident,
    #[serde(default)]
    pub org: Option<Ident>,
    #[serde(default)]
    pub project: Option<Ident>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: TokenId,
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    pub status: TokenStatus,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&DelegateToken> for TokenView {
    fn from(t: &DelegateToken) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            account: t.scope.account_id().clone(),
            org: t.scope.org().cloned(),
            project: t.scope.project().cloned(),
            status: t.status,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// The answer to a creation: the token, and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    #[serde(flatten)]
    pub view: TokenView,
    // A `Secret`: `Debug` masks it; on the wire it is the plain string.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: Secret,
}

/// A list answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

/// Which install file `GET /api/v1/delegate-tokens/{id}/install` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InstallFormat {
    /// A `kind: List` of a Deployment (and the token's Secret, when minted): `kubectl apply -f`.
    #[default]
    Kubernetes,
    /// A Compose file with one service: `docker compose -f FILE up -d`.
    Compose,
    /// A systemd unit for the `switchboard-delegate` binary.
    Systemd,
}

/// An install file, and how to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstallFile {
    pub format: InstallFormat,
    /// A name to save it as (`delegate.yaml`...).
    pub filename: String,
    /// The file itself (Kubernetes and Compose: JSON, which is YAML too).
    pub content: String,
    /// The token the delegate registers with.
    pub token_id: TokenId,
    /// With `new_token=true`: the minted token's secret, shown here only (it is in the
    /// file too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub token: Option<Secret>,
    /// The commands to run, in order.
    pub instructions: Vec<String>,
}
