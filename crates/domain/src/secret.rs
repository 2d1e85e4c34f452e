//! Secrets (delegate tokens, session credentials, API keys) and their stored hashes.
//!
//! A secret exists in clear only twice: when it is generated (and shown once) and when a
//! caller presents it. Stores keep a [`SecretHash`]; lookups go by hash and the final
//! comparison is constant-time. `Debug` never prints the secret.
//!
//! Secrets are 32 random bytes, so a fast hash (SHA-256) is the right tool: there is no
//! low-entropy password to stretch, and the hash doubles as an index key.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Which kind of secret a string is. The prefix is part of the secret, so a delegate token
/// can never be mistaken for an API key or a session credential, even by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    DelegateToken,
    Session,
    ApiKey,
    /// The admin key a manager generates on a fresh store's first start.
    AdminKey,
}

impl SecretKind {
    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::DelegateToken => "sbd_",
            SecretKind::Session => "sbs_",
            SecretKind::ApiKey => "sbk_",
            SecretKind::AdminKey => "sba_",
        }
    }
}

/// A secret in clear. Cheap to move, impossible to print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Builds a secret of `kind` from 32 random bytes supplied by the caller (the domain
    /// does no I/O, so it takes the randomness rather than drawing it).
    pub fn from_random(kind: SecretKind, bytes: [u8; 32]) -> Self {
        let mut s = String::with_capacity(4 + 64);
        s.push_str(kind.prefix());
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    /// Wraps a secret presented by a caller.
    pub fn presented(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Whether the string carries the prefix of `kind`.
    pub fn is_kind(&self, kind: SecretKind) -> bool {
        self.0.starts_with(kind.prefix())
    }

    /// The clear text, for the one place that shows it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// On the wire a secret is its clear text (the one answer that shows it, or a client's
/// own copy); only `Debug` hides it, so a struct carrying one can be logged safely.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    /// Any string: what a secret must look like is checked where it is used.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::presented(s))
    }
}

/// The SHA-256 of a secret: what stores keep and look up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Constant-time comparison, so response timing says nothing about how much matched.
    pub fn verify(&self, presented: &Secret) -> bool {
        self.0.ct_eq(&presented.hash().0).into()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(SecretHash)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let s = Secret::from_random(SecretKind::ApiKey, [7; 32]);
        assert!(!format!("{s:?}").contains("0707"));
        assert!(s.expose().starts_with("sbk_0707"));
    }

    #[test]
    fn on_the_wire_a_secret_is_its_text_and_only_debug_hides_it() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        struct Answer {
            token: Secret,
        }
        let answer: Answer = serde_json::from_str(r#"{"token":"sbt_abc"}"#).unwrap();
        assert_eq!(answer.token.expose(), "sbt_abc");
        assert_eq!(serde_json::to_string(&answer).unwrap(), r#"{"token":"sbt_abc"}"#);
        assert!(!format!("{answer:?}").contains("abc"));
    }

    #[test]
    fn hash_verifies_only_the_same_secret() {
        let s = Secret::from_random(SecretKind::DelegateToken, [1; 32]);
        let h = s.hash();
        assert!(h.verify(&Secret::presented(s.expose())));
        assert!(!h.verify(&Secret::from_random(SecretKind::DelegateToken, [2; 32])));
    }

    #[test]
    fn kinds_are_told_apart_by_prefix() {
        let s = Secret::from_random(SecretKind::Session, [0; 32]);
        assert!(s.is_kind(SecretKind::Session));
        assert!(!s.is_kind(SecretKind::ApiKey));
    }
}
