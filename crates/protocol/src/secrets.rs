//! Secrets that tasks use: `/api/v1/secrets`, and what an acquiring delegate receives.
//!
//! No answer of the API ever carries a secret's value; only the acquire answer does, to
//! the instance that acquired the task, over HTTPS.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::vault::{SecretReference, SecretSource, TaskSecret};
use switchboard_domain::{Ident, Secret, SecretId};

/// `POST /api/v1/secrets`: exactly one of `value` and `reference`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// Unique in the secret's scope; what tasks name.
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// The value (at most 64 KiB of UTF-8), sealed by the manager's key: never shown
    /// again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub value: Option<Secret>,
    /// Instead of a value: where the delegate finds it (`env:NAME`, `file:/path`, or a
    /// scheme of the delegate's own, such as `vault:secret/data/db#password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<SecretReference>,
    #[serde(default)]
    pub description: String,
}

/// `PUT /api/v1/secrets/{id}`: replaces what the secret holds (a new version), exactly
/// one of `value` and `reference`, and its description when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplaceSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub value: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<SecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a secret holds, as the API says it (never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// A value the manager keeps sealed.
    Value,
    /// A reference the delegate resolves.
    Reference,
}

/// A secret as answered: its metadata, never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretView {
    pub id: SecretId,
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    pub kind: SecretKind,
    /// With `kind: reference`: where the delegate finds the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<SecretReference>,
    pub description: String,
    /// 1 at creation, one more at each replacement.
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&TaskSecret> for SecretView {
    fn from(s: &TaskSecret) -> Self {
        let (kind, reference) = match &s.source {
            SecretSource::Sealed(_) => (SecretKind::Value, None),
            SecretSource::Reference(r) => (SecretKind::Reference, Some(r.clone())),
        };
        SecretView {
            id: s.id,
            name: s.name.clone(),
            account: s.scope.account_id().clone(),
            org: s.scope.org().cloned(),
            project: s.scope.project().cloned(),
            kind,
            reference,
            description: s.description.clone(),
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// `GET /api/v1/secrets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretList {
    pub items: Vec<SecretView>,
}

/// A secret as the acquiring instance receives it: its value, or where to find it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveredSecret {
    /// The name the task gave it.
    pub name: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub value: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<SecretReference>,
    /// Set when the secret could not be delivered (it was deleted since the task was
    /// submitted, or its value does not open under the manager's keys): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}
