//! Validated names and scopes.
//!
//! Every account, organization, project, delegate, token, connector and key name in
//! Switchboard is an [`Ident`]: a short ASCII name that is checked once, when it enters
//! the system, and trusted everywhere after. A [`Scope`] places a resource in an
//! account, optionally an organization in it, and optionally a project in that
//! organization.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest identifier accepted, in bytes (and characters: identifiers are ASCII).
pub const IDENT_MAX_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {IDENT_MAX_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("must start with a letter or '_', got {0:?}")]
    BadStart(char),
    #[error("may contain only ASCII letters, digits, '_' and '-', got {0:?}")]
    BadChar(char),
}

/// A short ASCII name matching `[A-Za-z_][A-Za-z0-9_-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = String, pattern = "^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
)]
#[serde(transparent)]
pub struct Ident(String);

impl Ident {
    /// Checks `s` and wraps it.
    pub fn parse(s: &str) -> Result<Self, IdentError> {
        let mut chars = s.chars();
        let first = chars.next().ok_or(IdentError::Empty)?;
        if s.len() > IDENT_MAX_LEN {
            return Err(IdentError::TooLong(s.chars().count()));
        }
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(IdentError::BadStart(first));
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(IdentError::BadChar(bad));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Ident {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Ident {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ident::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a combination of account, organization and project is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a project needs an org: set `org` as well as `project`")]
    ProjectWithoutOrg,
    #[error("`{field}` {source}")]
    Ident { field: &'static str, source: IdentError },
    #[error("a scope path has at most three parts (account/org/project), got {0:?}")]
    BadPath(String),
}

/// Where a resource lives: an account, optionally an org in it, optionally a project in
/// that org. Constructing one guarantees that a project never appears without its org.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ScopeParts", into = "ScopeParts")]
pub struct Scope {
    account: Ident,
    org: Option<Ident>,
    project: Option<Ident>,
}

/// The wire shape of a scope: the `account`, `org` and `project` fields of a resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Scope))]
pub struct ScopeParts {
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
}

/// How deep a scope goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeLevel {
    Account,
    Org,
    Project,
}

impl Scope {
    pub fn new(account: Ident, org: Option<Ident>, project: Option<Ident>) -> Result<Self, ScopeError> {
        if project.is_some() && org.is_none() {
            return Err(ScopeError::ProjectWithoutOrg);
        }
        Ok(Self { account, org, project })
    }

    pub fn account(account: Ident) -> Self {
        Self {
            account,
            org: None,
            project: None,
        }
    }

    /// Parses `account`, `account/org` or `account/org/project`.
    pub fn parse_path(path: &str) -> Result<Self, ScopeError> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() > 3 {
            return Err(ScopeError::BadPath(path.to_owned()));
        }
        let field =
            |name: &'static str, s: &str| Ident::parse(s).map_err(|source| ScopeError::Ident { field: name, source });
        let account = field("account", parts[0])?;
        let org = parts.get(1).map(|s| field("org", s)).transpose()?;
        let project = parts.get(2).map(|s| field("project", s)).transpose()?;
        Self::new(account, org, project)
    }

    pub fn account_id(&self) -> &Ident {
        &self.account
    }

    pub fn org(&self) -> Option<&Ident> {
        self.org.as_ref()
    }

    pub fn project(&self) -> Option<&Ident> {
        self.project.as_ref()
    }

    pub fn level(&self) -> ScopeLevel {
        match (&self.org, &self.project) {
            (None, _) => ScopeLevel::Account,
            (Some(_), None) => ScopeLevel::Org,
            (Some(_), Some(_)) => ScopeLevel::Project,
        }
    }

    /// The canonical path, `account[/org[/project]]`; stores key uniqueness on it.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// Whether `other` is this scope or lies below it. An account scope contains every
    /// scope of its account; an org scope contains itself and its projects; a project
    /// scope contains only itself. This is both the delegate scope rule of assignment
    /// and the "a permission granted at a scope holds below it" rule of API keys.
    pub fn contains(&self, other: &Scope) -> bool {
        if self.account != other.account {
            return false;
        }
        match (&self.org, &other.org) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) if a != b => false,
            (Some(_), Some(_)) => match (&self.project, &other.project) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => a == b,
            },
        }
    }
}

impl TryFrom<ScopeParts> for Scope {
    type Error = ScopeError;
    fn try_from(p: ScopeParts) -> Result<Self, Self::Error> {
        Scope::new(p.account, p.org, p.project)
    }
}

impl From<Scope> for ScopeParts {
    fn from(s: Scope) -> Self {
        ScopeParts {
            account: s.account,
            org: s.org,
            project: s.project,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.account)?;
        if let Some(org) = &self.org {
            write!(f, "/{org}")?;
        }
        if let Some(project) = &self.project {
            write!(f, "/{project}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Ident {
        Ident::parse(s).expect("valid ident")
    }

    #[test]
    fn identifiers_follow_the_documented_pattern() {
        for ok in ["a", "_", "A_b-9", "acme-prod", &"x".repeat(IDENT_MAX_LEN)] {
            assert!(Ident::parse(ok).is_ok(), "{ok:?} should be valid");
        }
        assert_eq!(Ident::parse(""), Err(IdentError::Empty));
        assert_eq!(Ident::parse("9lives"), Err(IdentError::BadStart('9')));
        assert_eq!(Ident::parse("-x"), Err(IdentError::BadStart('-')));
        assert_eq!(Ident::parse("a b"), Err(IdentError::BadChar(' ')));
        assert_eq!(Ident::parse("café"), Err(IdentError::BadChar('é')));
        assert!(matches!(
            Ident::parse(&"x".repeat(IDENT_MAX_LEN + 1)),
            Err(IdentError::TooLong(129))
        ));
    }

    #[test]
    fn a_project_needs_an_org() {
        assert_eq!(
            Scope::new(id("a"), None, Some(id("p"))),
            Err(ScopeError::ProjectWithoutOrg)
        );
        let err = serde_json::from_str::<Scope>(r#"{"account":"a","project":"p"}"#).unwrap_err();
        assert!(err.to_string().contains("needs an org"), "{err}");
    }

    #[test]
    fn scope_paths_round_trip() {
        for p in ["acme", "acme/eng", "acme/eng/web"] {
            assert_eq!(Scope::parse_path(p).expect("valid").path(), p);
        }
        assert!(Scope::parse_path("a/b/c/d").is_err());
        assert!(Scope::parse_path("a//c").is_err());
    }

    #[test]
    fn containment_follows_the_scope_rule() {
        let s = |p: &str| Scope::parse_path(p).expect("valid");
        let (acct, org, proj) = (s("a"), s("a/o"), s("a/o/p"));
        // An account-level delegate serves everything in its account.
        assert!(acct.contains(&acct) && acct.contains(&org) && acct.contains(&proj));
        // An org-level delegate serves its org and its projects, never the account level.
        assert!(!org.contains(&acct) && org.contains(&org) && org.contains(&proj));
        // A project-level delegate serves only its project.
        assert!(!proj.contains(&acct) && !proj.contains(&org) && proj.contains(&proj));
        // Nothing crosses accounts, orgs or projects.
        assert!(!acct.contains(&s("b")));
        assert!(!org.contains(&s("a/o2/p")));
        assert!(!proj.contains(&s("a/o/p2")));
    }

    #[test]
    fn scope_serializes_as_resource_fields() {
        let json = serde_json::to_value(Scope::parse_path("a/o").expect("valid")).expect("serializes");
        assert_eq!(json, serde_json::json!({"account": "a", "org": "o"}));
    }
}
