//! The HTTP machinery every route shares, and none of the routes themselves: problem+json
//! errors ([`error`]), the extractors ([`extract`]), shared field checks ([`fields`]), the
//! middlewares (authentication and
//! timeouts in [`middleware`], rates and `Accept` in [`limits`], the audit trail in
//! [`audit`]), who is calling ([`auth`]), the accept loop and TLS ([`serve`], [`tls`]),
//! the OpenAPI document ([`openapi`]) and the dashboard's files ([`dashboard`]).
//!
//! Nothing here sees the server's state: a middleware gets the one part it needs as its
//! own state ([`auth::Keys`], a rate limit, the store).

pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod fields;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod serve;
pub mod tls;
