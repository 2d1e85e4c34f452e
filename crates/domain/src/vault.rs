//! Secrets that tasks use (docs/rules.md, "Secrets"): named in a scope, unique by name in
//! it, each either a value the manager keeps sealed (it never keeps or shows it in clear)
//! or a reference the delegate resolves where it runs, so the value never leaves the
//! customer's network.
//!
//! (The credentials Switchboard itself hands out, tokens and keys, are
//! [`crate::secret`]'s; these are the customers'.)

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ident::{Ident, Scope};
use crate::ids::SecretId;

/// The most bytes a secret's value may have.
pub const VALUE_MAX_BYTES: usize = 64 * 1024;

/// The most secrets one task may name.
pub const MAX_PER_TASK: usize = 32;

/// The most characters of a description.
pub const DESCRIPTION_MAX_CHARS: usize = 1024;

/// Where a delegate finds a secret's value: `scheme:rest`. The reference delegate resolves
/// `env:NAME` (a variable of its environment) and `file:/absolute/path`; other schemes
/// (`vault:secret/data/db#password`, `aws-sm:arn:...`, `gcp-sm:projects/...`) are for
/// delegates that know them, and the reference delegate fails a task naming one it does
/// not with `secret_unresolved`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "env:DB_PASSWORD"))]
#[serde(try_from = "String", into = "String")]
pub struct SecretReference(String);

impl SecretReference {
    pub fn parse(raw: &str) -> Result<SecretReference, String> {
        let (scheme, rest) = raw
            .split_once(':')
            .ok_or_else(|| format!("{raw:?} is not a reference: write scheme:where, like env:NAME or file:/path"))?;
        let scheme_ok = scheme.len() <= 32
            && scheme.starts_with(|c: char| c.is_ascii_lowercase())
            && scheme
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(format!(
                "the scheme {scheme:?} must be lower-case letters, digits, '+', '-' or '.' (at most 32), starting with a letter"
            ));
        }
        if rest.is_empty() || rest.len() > 1024 || rest.chars().any(char::is_control) {
            return Err("what follows the scheme must be 1 to 1024 characters, without control characters".into());
        }
        match scheme {
            "env" if !is_env_name(rest) => Err(format!(
                "env:{rest} does not name an environment variable (letters, digits and '_', not starting with a digit)"
            )),
            "file" if !rest.starts_with('/') => Err(format!("file:{rest} must be an absolute path")),
            _ => Ok(SecretReference(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scheme and what follows it.
    pub fn parts(&self) -> (&str, &str) {
        self.0.split_once(':').unwrap_or((&self.0, ""))
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl TryFrom<String> for SecretReference {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SecretReference::parse(&s)
    }
}

impl From<SecretReference> for String {
    fn from(r: SecretReference) -> String {
        r.0
    }
}

impl fmt::Debug for SecretReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretReference({})", self.0)
    }
}

impl fmt::Display for SecretReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a secret holds.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A value, sealed by the manager's key (opaque here: the server seals and opens).
    Sealed(Vec<u8>),
    /// Where the delegate finds the value.
    Reference(SecretReference),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Sealed(bytes) => write!(f, "Sealed({} bytes)", bytes.len()),
            SecretSource::Reference(r) => write!(f, "Reference({r})"),
        }
    }
}

/// A secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSecret {
    pub id: SecretId,
    pub scope: Scope,
    /// Unique in its scope.
    pub name: Ident,
    pub description: String,
    pub source: SecretSource,
    /// 1 when created, one more at each replacement of what it holds.
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TaskSecret {
    /// Whether this secret serves a task in `task`: by the same rule as delegates, an
    /// account-level secret serves its account, an org-level one its org and its
    /// projects, a project-level one its project.
    pub fn serves(&self, task: &Scope) -> bool {
        self.scope.contains(task)
    }

    /// What a sealed value is bound to: its secret's id and version, so a value copied
    /// onto another secret, or an older version put back, does not open.
    pub fn seal_context(id: SecretId, version: u32) -> Vec<u8> {
        format!("switchboard-secret:{id}:v{version}").into_bytes()
    }
}

/// A secret a task names, as the task keeps it: the name it was submitted with and the
/// secret it was resolved to then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretUse {
    pub name: Ident,
    pub id: SecretId,
}

/// Of the secrets named `name` (any scopes), the one that serves `task` from the nearest
/// scope: the project's, else the org's, else the account's.
pub fn nearest<'a>(candidates: impl IntoIterator<Item = &'a TaskSecret>, task: &Scope) -> Option<&'a TaskSecret> {
    candidates
        .into_iter()
        .filter(|s| s.serves(task))
        .max_by_key(|s| s.scope.level())
}

/// `text` with every occurrence of each of `values` replaced by `***`. Empty values, and
/// values shorter than 4 bytes (they would mask ordinary text), are left alone; longer
/// values are masked first, so one that contains another is masked whole.
pub fn mask(text: &str, values: &[String]) -> Option<String> {
    let mut ordered: Vec<&str> = values.iter().map(String::as_str).filter(|v| v.len() >= 4).collect();
    ordered.sort_by_key(|v| std::cmp::Reverse(v.len()));
    if !ordered.iter().any(|v| text.contains(v)) {
        return None;
    }
    let mut out = text.to_owned();
    for v in ordered {
        out = out.replace(v, "***");
    }
    Some(out)
}

/// Masks every string inside `value` (keys and values); whether anything changed.
pub fn mask_json(value: &mut serde_json::Value, values: &[String]) -> bool {
    match value {
        serde_json::Value::String(s) => match mask(s, values) {
            Some(masked) => {
                *s = masked;
                true
            }
            None => false,
        },
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| mask_json(v, values) | changed),
        serde_json::Value::Object(map) => {
            let mut changed = false;
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if let Some(mut v) = map.remove(&key) {
                    changed |= mask_json(&mut v, values);
                    let key = match mask(&key, values) {
                        Some(masked) => {
                            changed = true;
                            masked
                        }
                        None => key,
                    };
                    map.insert(key, v);
                }
            }
            changed
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(path: &str) -> TaskSecret {
        TaskSecret {
            id: SecretId::new(),
            scope: Scope::parse_path(path).unwrap(),
            name: Ident::parse("db").unwrap(),
            description: String::new(),
            source: SecretSource::Sealed(vec![]),
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn references_have_a_scheme_and_the_known_schemes_are_checked() {
        for good in [
            "env:DB_PASSWORD",
            "file:/run/secrets/db",
            "vault:secret/data/db#password",
            "aws-sm:arn:aws:secretsmanager:eu-west-1:1:secret:db",
        ] {
            assert!(SecretReference::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "DB_PASSWORD",
            "env:",
            "env:1X",
            "env:A-B",
            "file:relative/path",
            "Vault:x",
            "x y:z",
            ":x",
            "env:A\nB",
        ] {
            assert!(SecretReference::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SecretReference::parse("env:X").unwrap().parts(), ("env", "X"));
    }

    #[test]
    fn the_nearest_serving_scope_wins_and_others_do_not_serve() {
        let account = secret("acme");
        let org = secret("acme/eng");
        let other_org = secret("acme/ops");
        let all = [account.clone(), org.clone(), other_org.clone()];
        let task = Scope::parse_path("acme/eng/web").unwrap();
        assert_eq!(nearest(&all, &task).map(|s| s.id), Some(org.id));
        let ops_task = Scope::parse_path("acme/ops").unwrap();
        assert_eq!(nearest(&all, &ops_task).map(|s| s.id), Some(other_org.id));
        let account_task = Scope::parse_path("acme").unwrap();
        assert_eq!(nearest(&all, &account_task).map(|s| s.id), Some(account.id));
        assert!(nearest(&all, &Scope::parse_path("globex").unwrap()).is_none());
    }

    #[test]
    fn values_are_masked_wherever_they_appear() {
        let values = vec!["hunter2".to_owned(), "hunter22".to_owned(), "ab".to_owned()];
        assert_eq!(mask("pw=hunter22 and hunter2", &values).unwrap(), "pw=*** and ***");
        assert_eq!(mask("ab is short", &values), None);
        let mut json = serde_json::json!({"out": ["x hunter2 y", 3], "hunter2": {"k": "hunter2"}});
        assert!(mask_json(&mut json, &values));
        assert_eq!(json, serde_json::json!({"out": ["x *** y", 3], "***": {"k": "***"}}));
        assert!(!mask_json(&mut serde_json::json!({"a": "b"}), &values));
    }
}
