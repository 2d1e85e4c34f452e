//! [`ApiJson`]: the JSON body extractor of every handler, and [`ApiQuery`]: the query
//! string extractor of every handler; both reject with an [`ApiError`] rather than
//! axum's plain-text rejection.
//!
//! It tells the client precisely what was wrong: a missing or wrong content type (415), a
//! body over the limit (413), text that is not JSON (400), or JSON of the wrong shape
//! (422, with the path of the offending field, e.g. `selectors[2]`). Request types use
//! `#[serde(deny_unknown_fields)]`, so a misspelt field is a 422 naming it rather than a
//! silently ignored one.
//!
//! A query string is held to the same rules: an unknown parameter, a repeated one, or a
//! value of the wrong kind is a 422 `validation` whose `field` is the parameter and whose
//! detail says what the parameter accepts (taken from the route's documented parameters,
//! so the answer and `/openapi.json` cannot disagree).
//!
//! [`parse`] (and [`decode`] under it, which the delegate socket uses for its frames) is
//! the one JSON parse of the server. It reads through
//! [`Strict`](switchboard_protocol::strict::Strict), so an array where an object is
//! required and a string or key holding U+0000 are 422s naming the field, the same on
//! SQLite and PostgreSQL (which cannot store U+0000). Every handler's body comes through
//! [`ApiJson`], or [`AnyJson`] for the delegate's task reports, which are documented to be
//! taken whatever their content type.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use utoipa::IntoParams;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, Object, Schema, SchemaFormat, SchemaType, Type};

use switchboard_protocol::strict;

use crate::http::error::{ApiError, Problem};

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
        require_json(req.headers())?;
        parse(&body(req, state).await?).map(ApiJson)
    }
}

/// Like [`ApiJson`], but taken whatever the request's `Content-Type` says: the delegate's
/// task reports (acquire, progress, result) have always been read that way, and their
/// operations in the OpenAPI document list no 415 ([`super::openapi::errors::BODY`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyJson<T>(pub T);

impl<T, S> FromRequest<S> for AnyJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse(&body(req, state).await?).map(AnyJson)
    }
}

/// The whole body, within the body limit.
async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Problem::PayloadTooLarge,
                "the request body is larger than the server accepts",
            )
        } else {
            ApiError::bad_request(format!("the request body could not be read: {}", rejection.body_text()))
        }
    })
}

/// 415 unless the request says its body is JSON: the one wording of that refusal.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        Ok(())
    } else {
        Err(ApiError::new(
            Problem::UnsupportedMediaType,
            "the body must be JSON, sent with Content-Type: application/json",
        ))
    }
}

/// Deserializes `bytes`, sorting serde's errors into syntax (400) and shape (422).
///
/// Every JSON body of the API comes through here (and every delegate socket frame, through
/// [`decode`]), so this is where the document's rules that serde's derives do not keep
/// are kept: no array in place of an object, no U+0000 in a string or key (see
/// [`strict`]).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    decode(bytes).map_err(|refusal| match refusal.kind {
        RefusalKind::Shape if refusal.path.is_empty() => {
            ApiError::new(Problem::Validation, format!("invalid body: {}", refusal.message))
        }
        RefusalKind::Shape => ApiError::validation(
            refusal.path.clone(),
            format!("invalid value at {}: {}", refusal.path, refusal.message),
        ),
        RefusalKind::Incomplete => ApiError::bad_request(format!("the body is not complete JSON: {}", refusal.message)),
        RefusalKind::Syntax => ApiError::bad_request(format!("the body is not valid JSON: {}", refusal.message)),
    })
}

/// Why a JSON text was refused by [`decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// Where, as `payload.a` or `capabilities[0]`; empty for the whole document.
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not JSON: bad syntax, a lone surrogate escape, nesting past the limit, trailing text.
    Syntax,
    /// JSON that stops before its end.
    Incomplete,
    /// JSON of the wrong shape: a wrong type, an unknown field, an array for an object, a
    /// string holding U+0000, a value the type refuses.
    Shape,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.path, self.message)
        }
    }
}

/// Deserializes one JSON text into `T` under the rules of [`strict`], with the path of
/// whatever was refused.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let strict = strict::Strict::new(&mut deserializer, strict::may_hold_nul(bytes));
    let value = serde_path_to_error::deserialize(strict).map_err(|error| {
        let path = path_text(error.path());
        let inner = error.into_inner();
        let kind = match inner.classify() {
            Category::Data => RefusalKind::Shape,
            Category::Eof => RefusalKind::Incomplete,
            Category::Syntax | Category::Io => RefusalKind::Syntax,
        };
        Refusal {
            kind,
            path,
            message: inner.to_string(),
        }
    });
    // A shape refusal can come before the parser has seen the whole text (an array
    // refused at its `[`): text that is not JSON at all is told so (400), whatever its
    // shape. Only refusals pay for this second, shape-free read.
    let value = match value {
        Err(refusal) if refusal.kind == RefusalKind::Shape => match syntax_error(bytes) {
            Some(syntax) => return Err(syntax),
            None => return Err(refusal),
        },
        other => other?,
    };
    // Trailing text after the value (`{}{}`) is malformed input, not something to ignore.
    deserializer.end().map_err(|e| Refusal {
        kind: RefusalKind::Syntax,
        path: String::new(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// A query string, deserialized into `T`: the only way a handler reads one.
///
/// `T` is the route's documented parameters (`IntoParams`): a parameter it does not list
/// is refused by name, and so is one given twice (no parameter is repeatable; lists are
/// comma-separated, like `state=queued,running`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + IntoParams,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// The id of the resource a route names (`/tasks/{id}`): the one path parameter, parsed
/// as `T`. A malformed id names nothing that exists, so it is a 404 problem+json in the
/// words of every other "not found" (`there is no task "x" (ids are UUIDs)`), not axum's
/// plain-text 400.
#[derive(Debug, Clone, Copy)]
pub struct IdPath<T>(pub T);

/// What a resource's id is called in a 404 (see [`IdPath`]).
pub trait Named {
    /// `task`, `delegate`, `delegate token`...
    const NAME: &'static str;
}

impl<T, S> FromRequestParts<S> for IdPath<T>
where
    T: Named + std::str::FromStr + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // A segment that does not even decode (bad percent-encoding) names nothing either.
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found(format!("there is no such {}: its id does not decode", T::NAME)))?;
        raw.parse()
            .map(IdPath)
            .map_err(|_| ApiError::not_found(format!("there is no {} {raw:?} (ids are UUIDs)", T::NAME)))
    }
}

/// Two ids from a path of two (`/delegates/{id}/instances/{instance_id}`), each answered
/// as [`IdPath`] answers when it does not parse.
#[derive(Debug, Clone, Copy)]
pub struct IdPair<A, B>(pub A, pub B);

impl<A, B, S> FromRequestParts<S> for IdPair<A, B>
where
    A: Named + std::str::FromStr + Send,
    B: Named + std::str::FromStr + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path((a, b)) = axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found(format!("there is no such {}: an id does not decode", B::NAME)))?;
        let a = a
            .parse()
            .map_err(|_| ApiError::not_found(format!("there is no {} {a:?} (ids are UUIDs)", A::NAME)))?;
        let b = b
            .parse()
            .map_err(|_| ApiError::not_found(format!("there is no {} {b:?} (ids are UUIDs)", B::NAME)))?;
        Ok(IdPair(a, b))
    }
}

macro_rules! named {
    ($($id:ty => $name:literal),+ $(,)?) => {
        $(impl Named for $id {
            const NAME: &'static str = $name;
        })+
    };
}

named!(
    switchboard_domain::TaskId => "task",
    switchboard_domain::GroupId => "delegate",
    switchboard_domain::InstanceId => "delegate instance",
    switchboard_domain::TokenId => "delegate token",
    switchboard_domain::ConnectorId => "connector",
    switchboard_domain::SecretId => "secret",
    switchboard_domain::ApiKeyId => "API key",
);

/// The query string of a list route that has no filters: every parameter is refused by
/// name, so a filter the route does not have (`/api-keys?account=acme`) is never silently
/// ignored to answer everything.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoFilters {}

/// Deserializes a raw query string (without the `?`) into `T`, every refusal naming its
/// parameter.
pub fn parse_query<T: DeserializeOwned + IntoParams>(raw: &str) -> Result<T, ApiError> {
    let params = T::into_params(|| Some(ParameterIn::Query));
    let names = || {
        params
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut seen = std::collections::HashSet::new();
    for (key, _) in form_urlencoded::parse(raw.as_bytes()) {
        if !params.iter().any(|p| p.name == key) {
            let takes = if params.is_empty() {
                "this route takes no query parameters".to_owned()
            } else {
                format!("this route takes {}", names())
            };
            return Err(ApiError::validation(
                key.as_ref(),
                format!("unknown query parameter `{key}`; {takes}"),
            ));
        }
        if !seen.insert(key.clone()) {
            return Err(ApiError::validation(
                key.as_ref(),
                format!("the query parameter `{key}` is given more than once; give it once"),
            ));
        }
    }
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        let inner = error.into_inner();
        match params.iter().find(|p| p.name == field) {
            Some(param) => ApiError::validation(
                field.as_str(),
                format!(
                    "the query parameter `{field}` is not valid: {inner}; it takes {}",
                    accepted(param)
                ),
            ),
            // Every parameter was checked above: this is a whole-query rule of `T`.
            None => ApiError::new(Problem::Validation, format!("invalid query string: {inner}")),
        }
    })
}

/// What a documented parameter accepts, in words: its kind (from the schema) and its
/// description.
fn accepted(param: &Parameter) -> String {
    let kind = match &param.schema {
        Some(RefOr::T(Schema::Object(object))) => kind(object),
        Some(RefOr::Ref(reference)) => {
            let name = reference.ref_location.rsplit('/').next().unwrap_or_default();
            let article = if name.starts_with(['A', 'E', 'I', 'O', 'U']) {
                "an"
            } else {
                "a"
            };
            format!("{article} {name}")
        }
        _ => "a value".to_owned(),
    };
    // Doc comments wrap: one line reads better in a detail.
    let description = param
        .description
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if description.is_empty() {
        kind
    } else {
        format!("{kind} ({description})")
    }
}

fn kind(object: &Object) -> String {
    if let Some(values) = &object.enum_values {
        let values: Vec<String> = values
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        return format!("one of {}", values.join(", "));
    }
    let is = |t: Type| {
        matches!(&object.schema_type, SchemaType::Type(x) if *x == t)
            || matches!(&object.schema_type, SchemaType::Array(xs) if xs.contains(&t))
    };
    let format = match &object.format {
        Some(SchemaFormat::KnownFormat(known)) => Some(known),
        _ => None,
    };
    if is(Type::Integer) {
        let low = object.minimum.as_ref().map(number);
        let high = object.maximum.as_ref().map(number);
        return match (low, high) {
            (Some(low), Some(high)) => format!("a whole number from {low} to {high}"),
            (Some(low), None) => format!("a whole number of at least {low}"),
            _ => "a whole number".to_owned(),
        };
    }
    if is(Type::Boolean) {
        return "true or false".to_owned();
    }
    match format {
        Some(KnownFormat::DateTime) => "an RFC 3339 date and time such as 2026-01-31T12:00:00Z".to_owned(),
        _ if matches!(&object.format, Some(SchemaFormat::Custom(f)) if f == "uuid") => "a UUID".to_owned(),
        _ => "text".to_owned(),
    }
}

fn number(n: &utoipa::Number) -> String {
    match n {
        utoipa::Number::Int(n) => n.to_string(),
        utoipa::Number::UInt(n) => n.to_string(),
        utoipa::Number::Float(n) => n.to_string(),
    }
}

/// Why `bytes` is not one complete JSON text, if it is not.
fn syntax_error(bytes: &[u8]) -> Option<Refusal> {
    let error = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).err()?;
    let kind = match error.classify() {
        Category::Eof => RefusalKind::Incomplete,
        Category::Syntax | Category::Io => RefusalKind::Syntax,
        Category::Data => return None,
    };
    Some(Refusal {
        kind,
        path: String::new(),
        message: error.to_string(),
    })
}

/// The path as `a.b[0]`, without the `?` that `serde_path_to_error` writes for a key that
/// failed before it was read (a key holding U+0000): the object is what is named then.
fn path_text(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut text = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => text.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Segment::Enum { variant } => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(variant);
            }
            Segment::Unknown => break,
        }
    }
    text
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
    use switchboard_domain::TaskId;
    use tower::ServiceExt;

    use super::*;

    /// What a route taking `IdPath<TaskId>` answers for `path`: status and body.
    async fn id_route(path: &str) -> (StatusCode, String) {
        let app = axum::Router::new().route(
            "/tasks/{id}",
            axum::routing::get(|IdPath(id): IdPath<TaskId>| async move { id.to_string() }),
        );
        let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn an_id_in_the_path_is_parsed_and_a_malformed_one_is_a_404_naming_the_resource() {
        let id = TaskId::new();
        assert_eq!(
            id_route(&format!("/tasks/{id}")).await,
            (StatusCode::OK, id.to_string())
        );
        let (status, body) = id_route("/tasks/not-a-uuid").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let problem: serde_json::Value = serde_json::from_str(&body).expect("problem+json");
        assert_eq!(problem["status"], 404);
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(r#"there is no task "not-a-uuid""#)),
            "{problem}"
        );
        let (status, _) = id_route("/tasks/%FF%FE").await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "an id that does not decode names nothing"
        );
    }

    /// What `extract` makes of a POST of `body` with `content_type`, through a router with
    /// a body limit of 64 bytes: the value's `n`, or the refusal's status.
    async fn body_route(strict: bool, content_type: Option<&str>, body: &str) -> Result<u64, StatusCode> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        let app = axum::Router::new()
            .route(
                "/strict",
                axum::routing::post(|ApiJson(b): ApiJson<N>| async move { b.n.to_string() }),
            )
            .route(
                "/any",
                axum::routing::post(|AnyJson(b): AnyJson<N>| async move { b.n.to_string() }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64));
        let mut request = axum::http::Request::post(if strict { "/strict" } else { "/any" });
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(axum::body::Body::from(body.to_owned())).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let text = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        if status == StatusCode::OK {
            Ok(String::from_utf8_lossy(&text).parse().unwrap())
        } else {
            Err(status)
        }
    }

    #[tokio::test]
    async fn api_json_needs_a_json_content_type_and_any_json_takes_the_body_as_it_comes() {
        let json = Some("application/json");
        assert_eq!(body_route(true, json, r#"{"n":7}"#).await, Ok(7));
        assert_eq!(body_route(false, json, r#"{"n":7}"#).await, Ok(7));
        for content_type in [None, Some("text/plain")] {
            assert_eq!(
                body_route(true, content_type, r#"{"n":7}"#).await,
                Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            );
            assert_eq!(body_route(false, content_type, r#"{"n":7}"#).await, Ok(7));
        }
        // The rest is the same for both: 400 not JSON, 422 the wrong shape, 413 too large.
        let large = format!(r#"{{"n":7,"pad":"{}"}}"#, "x".repeat(100));
        for strict in [true, false] {
            assert_eq!(body_route(strict, json, "{").await, Err(StatusCode::BAD_REQUEST));
            assert_eq!(
                body_route(strict, json, r#"{"n":"seven"}"#).await,
                Err(StatusCode::UNPROCESSABLE_ENTITY)
            );
            assert_eq!(
                body_route(strict, json, &large).await,
                Err(StatusCode::PAYLOAD_TOO_LARGE)
            );
        }
    }

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

    /// A query like the routes' own: a number, an enum, a date, an identifier.
    #[derive(Debug, Deserialize, utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(dead_code)] // only deserialized
    struct Filter {
        /// At most this many.
        limit: Option<u32>,
        /// The state last seen.
        state: Option<switchboard_domain::TaskState>,
        /// Only after this time.
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only in this account.
        account: Option<switchboard_domain::Ident>,
    }

    fn refused(query: &str) -> ApiError {
        parse_query::<Filter>(query).expect_err(query)
    }

    #[test]
    fn a_good_query_string_parses_and_an_empty_one_is_no_filter() {
        let filter = parse_query::<Filter>("limit=5&state=queued&since=2026-01-31T12%3A00%3A00Z&account=acme").unwrap();
        assert_eq!(filter.limit, Some(5));
        assert_eq!(filter.state, Some(switchboard_domain::TaskState::Queued));
        assert!(filter.since.is_some() && filter.account.is_some());
        assert!(parse_query::<Filter>("").unwrap().limit.is_none());
    }

    #[test]
    fn every_bad_query_string_is_a_422_naming_the_parameter_and_what_it_takes() {
        for (query, field, says) in [
            ("limt=5", "limt", "`limit`, `state`, `since`, `account`"),
            ("limit=1&limit=2", "limit", "more than once"),
            ("limit=-1", "limit", "a whole number of at least 0"),
            ("limit=", "limit", "At most this many"),
            ("state=bogus", "state", "queued"),
            ("since=notadate", "since", "RFC 3339"),
            ("account=1acme", "account", "Only in this account"),
        ] {
            let error = refused(query);
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
            assert_eq!(error.problem(), Problem::Validation, "{query}");
            assert_eq!(error.field(), Some(field), "{query}: {}", error.detail());
            assert!(error.detail().contains(says), "{query}: {}", error.detail());
        }
    }

    /// A nested struct and an internally tagged enum, as the request types have them.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Option<Item>,
        #[serde(default)]
        checks: Vec<switchboard_domain::Capability>,
        #[serde(default)]
        payload: serde_json::Value,
    }

    #[test]
    fn an_array_where_an_object_is_required_is_a_422_at_any_depth() {
        for (body, field) in [
            (&br#"["a", []]"#[..], None),
            (br#"{"inner":[1]}"#, Some("inner")),
            (br#"{"checks":[["tcp","db",5432]]}"#, Some("checks[0]")),
        ] {
            let error = parse::<Outer>(body).expect_err("an array for an object");
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
            assert!(
                error.detail().contains("an array where an object"),
                "{}",
                error.detail()
            );
            assert_eq!(error.field(), field, "{body:?}");
        }
        // Where the schema takes any JSON, an array is a value like any other.
        let ok = parse::<Outer>(br#"{"payload":[[1],{"a":[2]}],"checks":[{"kind":"tcp","host":"db","port":1}]}"#);
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_nul_in_a_string_or_a_key_is_a_422_naming_where() {
        for (body, field) in [
            (&br#"{"payload":{"a":"x\u0000y"}}"#[..], "payload.a"),
            (br#"{"payload":["ok","\u0000"]}"#, "payload[1]"),
            (br#"{"payload":{"a":{"b\u0000":1}}}"#, "payload.a"),
            (
                br#"{"checks":[{"kind":"tcp","host":"d\u0000b","port":1}]}"#,
                "checks[0].host",
            ),
        ] {
            let error = parse::<Outer>(body).expect_err("a NUL");
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
            assert!(error.detail().contains("U+0000"), "{}", error.detail());
            assert_eq!(error.field(), Some(field), "{}", error.detail());
        }
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        let outer = parse::<Outer>(br#"{"payload":{"a":"\\u0000"}}"#).expect("no NUL");
        assert_eq!(outer.payload["a"], "\\u0000");
    }

    #[test]
    fn a_lone_surrogate_or_deep_nesting_is_a_400() {
        let deep = format!("{{\"payload\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        for body in [
            &br#"{"payload":"\ud800"}"#[..],
            br#"{"payload":{"\udc00":1}}"#,
            deep.as_bytes(),
        ] {
            let error = parse::<Outer>(body).expect_err("refused");
            assert_eq!(error.problem(), Problem::BadRequest, "{}", error.detail());
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
