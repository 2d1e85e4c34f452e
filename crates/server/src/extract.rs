//! [`ApiJson`]: the JSON body extractor of every handler, whose rejection is an
//! [`ApiError`] rather than axum's plain-text one.
//!
//! It tells the client precisely what was wrong: a missing or wrong content type (415), a
//! body over the limit (413), text that is not JSON (400), or JSON of the wrong shape
//! (422, with the path of the offending field, e.g. `selectors[2]`). Request types use
//! `#[serde(deny_unknown_fields)]`, so a misspelt field is a 422 naming it rather than a
//! silently ignored one.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::{ApiError, Problem};

/// A JSON request body, deserialized into `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                Problem::UnsupportedMediaType,
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    Problem::PayloadTooLarge,
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::bad_request(format!("the request body could not be read: {}", rejection.body_text()))
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes`, sorting serde's errors into syntax (400) and shape (422).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Data if path == "." => ApiError::new(Problem::Validation, format!("invalid body: {inner}")),
            Category::Data => ApiError::validation(path.clone(), format!("invalid value at {path}: {inner}")),
            Category::Eof => ApiError::bad_request(format!("the body is not complete JSON: {inner}")),
            Category::Syntax | Category::Io => ApiError::bad_request(format!("the body is not valid JSON: {inner}")),
        }
    })?;
    // Trailing text after the value (`{}{}`) is malformed input, not something to ignore.
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// `application/json` or any `application/*+json`, parameters (`; charset=utf-8`) allowed.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized
    struct Body {
        name: String,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        size: u32,
    }

    #[test]
    fn a_wrong_type_deep_in_the_body_is_a_422_naming_the_field() {
        let error = parse::<Body>(br#"{"name":"a","items":[{"size":1},{"size":"big"}]}"#).expect_err("wrong type");
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.detail().contains("items[1].size"), "{}", error.detail());
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let error = parse::<Body>(br#"{"name":"a","items":[],"colour":"red"}"#).expect_err("unknown field");
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.detail().contains("colour"), "{}", error.detail());
    }

    #[test]
    fn a_missing_field_is_a_422() {
        let error = parse::<Body>(br#"{"items":[]}"#).expect_err("missing field");
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.detail().contains("name"), "{}", error.detail());
    }

    #[test]
    fn text_that_is_not_json_is_a_400() {
        for body in [&b"{\"name\": "[..], b"name=a", b"{}{}", b""] {
            let error = parse::<serde_json::Value>(body).expect_err("not json");
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{body:?}");
        }
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonp", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), json, "{value}");
        }
    }
}
