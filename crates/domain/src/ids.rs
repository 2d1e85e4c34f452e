//! Typed identifiers, so a task id can never be passed where an instance id is meant.
//!
//! All are UUIDv7: time-ordered, which keeps B-tree inserts at the right edge of the
//! index and lets "newest first" listings sort by id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = "uuid"))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

typed_id!(
    /// A delegate group: the named delegate that replicas join.
    GroupId
);
typed_id!(
    /// One running process (replica) of a delegate.
    InstanceId
);
typed_id!(
    /// A delegate token.
    TokenId
);
typed_id!(
    /// A connector to external infrastructure.
    ConnectorId
);
typed_id!(
    /// A task.
    TaskId
);
typed_id!(
    /// An API key.
    ApiKeyId
);
typed_id!(
    /// A secret that tasks name (see [`crate::vault`]).
    SecretId
);
