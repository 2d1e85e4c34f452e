//! Types that exist only to describe request fields in the OpenAPI document, where the
//! Rust type (a plain `String`, so the server can name the offending value when it
//! refuses one) says less than the server enforces.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A selector or tag as a client sends it: the server trims and lower-cases it, and
/// refuses it unless it is then 1 to 128 characters without control characters
/// (`switchboard_domain::Selector::parse`).
#[derive(Debug)]
pub struct SelectorInput;

impl utoipa::PartialSchema for SelectorInput {
    fn schema() -> RefOr<Schema> {
        let max = switchboard_domain::selector::SELECTOR_MAX_LEN;
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(max))
            .description(Some(format!(
                "A selector or tag: trimmed and lower-cased by the server, then 1 to {max} characters \
                 without control characters."
            )))
            .into()
    }
}

impl utoipa::ToSchema for SelectorInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SelectorInput")
    }
}
