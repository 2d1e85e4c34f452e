//! What utoipa's derives leave untrue in the document, made true once it is built.
//!
//! **Unsigned 32-bit integers.** utoipa describes a `u32` as `format: int32, minimum: 0`.
//! `int32` is a signed 32-bit integer, so the document promised a maximum of 2^31 - 1
//! while the server takes any `u32` (an `attempt` of 2147483648 parses). Every component
//! schema that says `int32` with a minimum of 0 or more and no maximum of its own is
//! therefore rewritten to what serde enforces: `int64` with `maximum: 4294967295` (past
//! it, a 422). Schemas with a real bound (`limit`, `capacity`, `max_attempts`) already
//! say it and are left alone.
//!
//! **Internally tagged enums refuse unknown fields.** utoipa writes
//! `additionalProperties: false` for a struct with `deny_unknown_fields`, but not for the
//! variants of a tagged enum, though every one of ours refuses them (`Capability` through
//! its `RawCapability`, the socket messages through `deny_unknown_fields`; a unit test
//! below holds them to it). Each object of a `oneOf` that carries a required
//! single-value tag is closed accordingly.

use utoipa::Number;
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, KnownFormat, Schema, SchemaFormat};
use utoipa::openapi::{OpenApi, RefOr};

/// Rewrites every unbounded unsigned `int32` in the document's component schemas.
pub fn unsigned_int32(document: &mut OpenApi) {
    if let Some(components) = document.components.as_mut() {
        for schema in components.schemas.values_mut() {
            visit(schema);
        }
    }
}

/// Closes (`additionalProperties: false`) every variant object of a tagged enum among the
/// document's component schemas: an object with a required property whose schema is a
/// one-value `enum` (the tag), inside a `oneOf`.
pub fn closed_tagged_variants(document: &mut OpenApi) {
    let Some(components) = document.components.as_mut() else {
        return;
    };
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::OneOf(one)) = schema else {
            continue;
        };
        for variant in &mut one.items {
            let RefOr::T(Schema::Object(object)) = variant else {
                continue;
            };
            let tagged = object.required.iter().any(|name| {
                matches!(
                    object.properties.get(name),
                    Some(RefOr::T(Schema::Object(tag))) if tag.enum_values.as_ref().is_some_and(|v| v.len() == 1)
                )
            });
            if tagged && object.additional_properties.is_none() {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
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
    fn every_tagged_enum_of_the_wire_refuses_unknown_fields_as_its_closed_variants_say() {
        use switchboard_domain::Capability;
        use switchboard_protocol::socket::{DelegateMessage, ServerMessage};
        let extra = |json: &str| json.replacen('{', r#"{"extra":1,"#, 1);
        let tcp = r#"{"kind":"tcp","host":"db","port":1}"#;
        assert!(serde_json::from_str::<Capability>(tcp).is_ok());
        assert!(serde_json::from_str::<Capability>(&extra(tcp)).is_err());
        let beat = r#"{"type":"heartbeat","running":[]}"#;
        assert!(serde_json::from_str::<DelegateMessage>(beat).is_ok());
        assert!(serde_json::from_str::<DelegateMessage>(&extra(beat)).is_err());
        let drain = r#"{"type":"drain","reason":"r"}"#;
        assert!(serde_json::from_str::<ServerMessage>(drain).is_ok());
        assert!(serde_json::from_str::<ServerMessage>(&extra(drain)).is_err());

        let mut document = crate::http::openapi::base();
        let components = document.components.get_or_insert_with(Default::default);
        use utoipa::PartialSchema;
        components.schemas.insert("Capability".into(), Capability::schema());
        closed_tagged_variants(&mut document);
        let json = serde_json::to_value(&document).expect("serializes");
        let variants = json["components"]["schemas"]["Capability"]["oneOf"]
            .as_array()
            .expect("oneOf")
            .clone();
        assert_eq!(variants.len(), 2);
        for variant in variants {
            assert_eq!(variant["additionalProperties"], false, "{variant}");
        }
    }

    #[test]
    fn an_attempt_is_documented_with_the_range_of_a_u32_and_bounded_fields_keep_theirs() {
        let mut document = crate::http::openapi::base();
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
