//! Selectors: the tags a task asks for and the set an instance offers.
//!
//! Selectors are compared trimmed and case-insensitively, so they are normalized once, on
//! the way in: a [`Selector`] is always trimmed, lower-case and non-empty.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest selector accepted, in characters.
pub const SELECTOR_MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("a selector must not be empty or only spaces")]
    Empty,
    #[error("a selector must be at most {SELECTOR_MAX_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("a selector must not contain control characters")]
    Control,
}

/// One normalized selector (a tag, or an implicit selector such as a hostname).
///
/// Answers carry it normalized: trimmed, lower-case, 1 to 128 characters, no control
/// characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(transparent)]
pub struct Selector(String);

impl Selector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(SelectorError::Empty);
        }
        let n = t.chars().count();
        if n > SELECTOR_MAX_LEN {
            return Err(SelectorError::TooLong(n));
        }
        if t.chars().any(char::is_control) {
            return Err(SelectorError::Control);
        }
        Ok(Self(t.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Selector::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A set of selectors: a group's tags, a task's selectors, an instance's full selector set.
/// Ordered, so its JSON and its display are stable.
pub type Selectors = BTreeSet<Selector>;

/// Parses a list of raw strings into a set, naming the first bad one.
pub fn parse_selectors<'a, I: IntoIterator<Item = &'a str>>(raw: I) -> Result<Selectors, (String, SelectorError)> {
    raw.into_iter()
        .map(|s| Selector::parse(s).map_err(|e| (s.to_owned(), e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_trimmed_and_case_insensitive() {
        assert_eq!(
            Selector::parse("  GPU ").expect("valid"),
            Selector::parse("gpu").expect("valid")
        );
        assert_eq!(Selector::parse("   "), Err(SelectorError::Empty));
        assert_eq!(Selector::parse("a\nb"), Err(SelectorError::Control));
    }

    #[test]
    fn parse_selectors_names_the_bad_one() {
        let err = parse_selectors(["ok", " "]).unwrap_err();
        assert_eq!(err, (" ".to_owned(), SelectorError::Empty));
        let set = parse_selectors(["B", "a", "b"]).expect("valid");
        assert_eq!(set.iter().map(Selector::as_str).collect::<Vec<_>>(), ["a", "b"]);
    }
}
