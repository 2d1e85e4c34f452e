//! The error answers of each operation, written next to its handler as a set of
//! [`Problem`] types: `responses(..., Errors<{ API | JSON_BODY | NOT_FOUND }>)`.
//!
//! [`Errors`] turns the set into one OpenAPI response per status: content
//! `application/problem+json`, the `Problem` schema narrowed so that its `type` is one of
//! the set's URIs. A client (and the conformance tests) can therefore tell from the
//! document exactly which `type`s an operation answers with, and with which status.
//!
//! The set is a bit mask because const generics cannot take a list of enum values on
//! stable Rust, and `#[utoipa::path]` can only name a type here, not call a function.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::header::Header;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};

use crate::http::error::{PROBLEM_JSON, Problem};

/// The bit of `problem` in an error set.
pub const fn bit(problem: Problem) -> u32 {
    1 << problem as u32
}

/// Whatever the route: it took longer than `request_timeout`, or a bug.
pub const ANY: u32 = bit(Problem::Timeout) | bit(Problem::Internal);
/// A route that reads or writes the store: also 503 while the database is unavailable.
pub const STORE: u32 = ANY | bit(Problem::Unavailable);
/// Every `/api/v1` and `/delegate/v1` route: over the credential's request rate (429), or
/// an `Accept` header that rules JSON out (406).
pub const LIMITED: u32 = bit(Problem::RateLimited) | bit(Problem::NotAcceptable);
/// Every `/api/v1` route: the store, behind the API-key check (the key lookup reads the
/// store too), and the limits.
pub const API: u32 = STORE | LIMITED | bit(Problem::Unauthorized);
/// A JSON request body: not JSON (400), over the body limit (413), not sent as JSON
/// (415), or JSON of the wrong shape: an unknown field, a wrong type, a bad identifier,
/// selector or capability (422).
pub const JSON_BODY: u32 = BODY | bit(Problem::UnsupportedMediaType);
/// Any request body parsed as JSON: not JSON (400), over the body limit (413), or JSON of
/// the wrong shape (422). The routes of a delegate's task reports take it whatever its
/// content type.
pub const BODY: u32 = bit(Problem::BadRequest) | bit(Problem::PayloadTooLarge) | bit(Problem::Validation);
/// A query string that does not fit the route's parameters: an unknown or repeated
/// parameter, or a value of the wrong kind (422 naming the parameter, see
/// [`crate::http::extract::ApiQuery`]).
pub const QUERY: u32 = bit(Problem::Validation);
/// A value that parses but is refused (a filter without its account, a bad state name).
pub const INVALID: u32 = bit(Problem::Validation);
/// The resource does not exist, or is outside the caller's scope (answered alike).
pub const NOT_FOUND: u32 = bit(Problem::NotFound);
/// The caller lacks the permission (or, for a delegate, asks for a wider scope).
pub const FORBIDDEN: u32 = bit(Problem::Forbidden);
/// A name already taken, or a task that already ended.
pub const CONFLICT: u32 = bit(Problem::Conflict);

/// The error responses of an operation: the problem types whose bits are in `SET`.
#[derive(Debug, Clone, Copy)]
pub struct Errors<const SET: u32>;

impl<const SET: u32> Errors<SET> {
    /// The problem types in the set, in the order of [`Problem::ALL`].
    pub fn problems() -> impl Iterator<Item = Problem> {
        Problem::ALL.into_iter().filter(|p| SET & bit(*p) != 0)
    }
}

impl<const SET: u32> IntoResponses for Errors<SET> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut by_status: BTreeMap<u16, Vec<Problem>> = BTreeMap::new();
        for problem in Self::problems() {
            by_status.entry(problem.status().as_u16()).or_default().push(problem);
        }
        by_status
            .into_iter()
            .map(|(status, problems)| (status.to_string(), RefOr::T(response(status, &problems))))
            .collect()
    }
}

/// One status's answer: the `Problem` schema with `type` narrowed to `problems`.
fn response(status: u16, problems: &[Problem]) -> Response {
    let types = ObjectBuilder::new().property(
        "type",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(problems.iter().map(|p| p.uri()))),
    );
    let schema = Schema::AllOf(
        AllOfBuilder::new()
            .item(Ref::from_schema_name("Problem"))
            .item(types)
            .build(),
    );
    let listed: Vec<String> = problems
        .iter()
        .map(|p| format!("`{}` ({})", p.slug(), p.title()))
        .collect();
    let mut response = ResponseBuilder::new()
        .description(format!("Problem types: {}.", listed.join(", ")))
        .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(schema)).build());
    if status == 401 {
        response = response.header(
            "WWW-Authenticate",
            header("The scheme that would work: `Bearer realm=\"switchboard\"`."),
        );
    }
    if problems.contains(&Problem::Unavailable) || problems.contains(&Problem::RateLimited) {
        response = response.header(
            "Retry-After",
            header("With `unavailable` or `rate-limited`: seconds to wait before retrying."),
        );
    }
    response.build()
}

fn header(description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
    header.description = Some(description.to_owned());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_sharing_a_status_share_one_response_listing_both_types() {
        let responses = Errors::<{ bit(Problem::Conflict) | bit(Problem::StaleAttempt) | API }>::responses();
        let keys: Vec<&str> = responses.keys().map(String::as_str).collect();
        assert_eq!(keys, ["401", "406", "409", "429", "500", "503"]);
        let limited = serde_json::to_value(&responses["429"]).expect("serializes");
        assert!(limited["headers"]["Retry-After"].is_object(), "{limited}");
        let json = serde_json::to_value(&responses["409"]).expect("serializes");
        let types = &json["content"][PROBLEM_JSON]["schema"]["allOf"][1]["properties"]["type"]["enum"];
        assert_eq!(
            *types,
            serde_json::json!([Problem::Conflict.uri(), Problem::StaleAttempt.uri()])
        );
        assert!(json["headers"].get("Retry-After").is_none());
        let unavailable = serde_json::to_value(&responses["503"]).expect("serializes");
        assert!(unavailable["headers"]["Retry-After"].is_object(), "{unavailable}");
    }
}
