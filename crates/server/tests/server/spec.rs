//! The OpenAPI document as the tests read it: the server's `/openapi.json`, the look-ups
//! the conformance tests need, and a small structural check of a JSON answer against a
//! schema of the document (types, enums, required fields, no undocumented fields; not a
//! full JSON Schema validator: no patterns, formats or bounds).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::support::TestApp;

/// The methods the routes of the server use, as the document spells them.
pub const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The document as the server serves it, with the look-ups the tests need.
pub struct Spec(pub Value);

impl Spec {
    pub async fn fetch(app: &TestApp) -> Spec {
        let response = app.get("/openapi.json", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        Spec(response.json().await.unwrap())
    }

    /// Every operation, as (method, path template, operation).
    pub fn operations(&self) -> Vec<(Method, String, &Value)> {
        let mut operations = Vec::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                    operations.push((method, path.clone(), op));
                }
            }
        }
        operations
    }

    pub fn operation(&self, method: &Method, template: &str) -> &Value {
        self.0["paths"][template]
            .get(method.as_str().to_lowercase())
            .unwrap_or_else(|| panic!("{method} {template} is not in the document"))
    }

    /// Follows `$ref`s to the schema they name.
    pub fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{reference} is not a component schema"));
            schema = &self.0["components"]["schemas"][name];
            assert!(!schema.is_null(), "{reference} does not resolve");
        }
        schema
    }

    /// The problem `type` URIs `op` documents for `status` (empty when it documents none).
    pub fn problem_types(&self, op: &Value, status: u16) -> Vec<String> {
        let schema = &op["responses"][status.to_string()]["content"]["application/problem+json"]["schema"];
        schema["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|part| part["properties"]["type"]["enum"].as_array())
            .flatten()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }

    /// Where `value` departs from `schema`: a wrong type, a value outside an enum, a missing
    /// required field, a field the schema does not list.
    pub fn mismatches(&self, value: &Value, schema: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(value, schema, "$", true, &mut errors);
        errors
    }

    /// `strict`: also refuse fields the schema does not list. Off for the parts of an
    /// `allOf`, which each list only some of the fields; the `allOf` checks their union.
    fn check(&self, value: &Value, schema: &Value, at: &str, strict: bool, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.check(value, part, at, false, errors);
            }
            if strict {
                self.undocumented(value, schema, at, errors);
            }
            return;
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let fits = branches.iter().any(|branch| {
                let mut e = Vec::new();
                self.check(value, branch, at, strict, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: {value} fits none of the alternatives of {schema}"));
            }
            return;
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {values:?}"));
        }
        match value {
            Value::Object(map) => {
                for name in schema["required"].as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap();
                    if !map.contains_key(name) {
                        errors.push(format!("{at}: the required field {name:?} is missing"));
                    }
                }
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (name, field) in map {
                        if let Some(property) = properties.get(name) {
                            self.check(field, property, &format!("{at}.{name}"), true, errors);
                        }
                    }
                    if strict {
                        self.undocumented(value, schema, at, errors);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.check(v, item, &format!("{at}[{i}]"), true, errors);
                    }
                }
            }
            _ => {}
        }
    }

    fn undocumented(&self, value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(map) = value.as_object() else { return };
        let known = self.fields(value, schema);
        for name in map.keys().filter(|name| !known.contains(*name)) {
            errors.push(format!("{at}: the field {name:?} is not in the document"));
        }
    }

    /// The fields `schema` lists for `value`: its properties, the union over an `allOf`,
    /// the branch of a `oneOf` that fits.
    fn fields(&self, value: &Value, schema: &Value) -> BTreeSet<String> {
        let schema = self.resolve(schema);
        let mut fields: BTreeSet<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            fields.extend(self.fields(value, part));
        }
        let fitting = schema["oneOf"].as_array().into_iter().flatten().find(|branch| {
            let mut e = Vec::new();
            self.check(value, branch, "", false, &mut e);
            e.is_empty()
        });
        if let Some(branch) = fitting {
            fields.extend(self.fields(value, branch));
        }
        fields
    }
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

/// Every string value in `value` under the key `key`, anywhere.
pub fn strings_under<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) if k == key => found.push(s),
                    _ => strings_under(v, key, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, found)),
        _ => {}
    }
}

/// A concrete path for `template`: each `{param}` becomes a fresh UUID.
pub fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                uuid::Uuid::new_v4().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn the_conformance_check_catches_missing_undocumented_and_mistyped_fields() {
    let spec = Spec(json!({"components": {"schemas": {
        "Base": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        "Kind": {"oneOf": [
            {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "enum": ["a"]}, "a": {"type": "integer"}}},
            {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "enum": ["b"]}, "b": {"type": ["string", "null"]}}}
        ]},
        "Both": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"$ref": "#/components/schemas/Kind"},
            {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}]}
    }}}));
    let schema = json!({"$ref": "#/components/schemas/Both"});
    let fits = |value: Value| spec.mismatches(&value, &schema);
    assert_eq!(
        fits(json!({"id": "x", "kind": "a", "a": 1, "tags": ["t"]})),
        Vec::<String>::new()
    );
    assert_eq!(fits(json!({"id": "x", "kind": "b", "b": null})), Vec::<String>::new());
    for (bad, why) in [
        (json!({"kind": "a"}), "required field \"id\""),
        (
            json!({"id": "x", "kind": "a", "b": "y"}),
            "field \"b\" is not in the document",
        ),
        (json!({"id": 1, "kind": "a"}), "is not [\"string\"]"),
        (json!({"id": "x", "kind": "c"}), "fits none of the alternatives"),
        (json!({"id": "x", "kind": "a", "tags": [1]}), "$.tags[0]"),
    ] {
        let errors = fits(bad.clone()).join("\n");
        assert!(errors.contains(why), "{bad}: {errors}");
    }
}
