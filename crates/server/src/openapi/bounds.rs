//! What utoipa leaves untrue about unsigned 32-bit integers, made true once the document
//! is built.
//!
//! utoipa describes a `u32` as `format: int32, minimum: 0`. `int32` is a signed 32-bit
//! integer, so the document promised a maximum of 2^31 - 1 while the server takes any
//! `u32` (an `attempt` of 2147483648 parses). Every component schema that says `int32`
//! with a minimum of 0 or more and no maximum of its own is therefore rewritten to what
//! serde enforces: `int64` with `maximum: 4294967295` (past it, a 422). Schemas with a
//! real bound (`limit`, `capacity`, `max_attempts`) already say it and are left alone.

use utoipa::Number;
use utoipa::openapi::schema::{ArrayItems, KnownFormat, Schema, SchemaFormat};
use utoipa::openapi::{OpenApi, RefOr};

/// Rewrites every unbounded unsigned `int32` in the document's component schemas.
pub fn unsigned_int32(document: &mut OpenApi) {
    if let Some(components) = document.components.as_mut() {
        for schema in components.schemas.values_mut() {
            visit(schema);
        }
    }
}

fn visit(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(object) => {
            let int32 = matches!(object.format, Some(SchemaFormat::KnownFormat(KnownFormat::Int32)));
            let unsigned = match object.minimum {
                Some(Number::UInt(_)) => true,
                Some(Number::Int(n)) => n >= 0,
                Some(Number::Float(n)) => n >= 0.0,
                None => false,
            };
            if int32 && unsigned && object.maximum.is_none() {
                object.format = Some(SchemaFormat::KnownFormat(KnownFormat::Int64));
                object.maximum = Some(Number::UInt(u32::MAX as usize));
            }
            object.properties.values_mut().for_each(visit);
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                visit(items);
            }
        }
        Schema::OneOf(one) => one.items.iter_mut().for_each(visit),
        Schema::AllOf(all) => all.items.iter_mut().for_each(visit),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(visit),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_documented_with_the_range_of_a_u32_and_bounded_fields_keep_theirs() {
        let mut document = crate::openapi::base();
        let components = document.components.get_or_insert_with(Default::default);
        use utoipa::PartialSchema;
        components
            .schemas
            .insert("Attempt".into(), switchboard_domain::Attempt::schema());
        components
            .schemas
            .insert("SubmitTask".into(), switchboard_protocol::tasks::SubmitTask::schema());
        unsigned_int32(&mut document);
        let json = serde_json::to_value(&document).expect("serializes");
        let attempt = &json["components"]["schemas"]["Attempt"];
        assert_eq!(
            (&attempt["format"], &attempt["minimum"], &attempt["maximum"]),
            (
                &serde_json::json!("int64"),
                &serde_json::json!(0),
                &serde_json::json!(4294967295u64)
            ),
            "{attempt}"
        );
        let max_attempts = &json["components"]["schemas"]["SubmitTask"]["properties"]["max_attempts"];
        assert_eq!(max_attempts["maximum"], 10, "{max_attempts}");
    }
}
