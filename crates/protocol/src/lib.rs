//! Switchboard's wire types, shared by the server and every client.
//!
//! These are the shapes that cross the network, kept apart from the domain types (which
//! they convert into at the edge) so the wire format can stay stable while the domain
//! evolves. Request bodies refuse unknown fields.

#![forbid(unsafe_code)]

pub mod connectors;
pub mod delegate;
pub mod fleet;
pub mod keys;
pub mod policies;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod secrets;
pub mod socket;
pub mod strict;
pub mod tasks;
pub mod tokens;
pub mod unique;
