//! The API's own description: the OpenAPI 3.1 document at `GET /openapi.json` and the
//! reference page rendered from it at `GET /docs`.
//!
//! The document is not written by hand. Every route is registered through
//! `utoipa_axum`'s `OpenApiRouter` (see [`crate::probes`]), which takes each handler's
//! `#[utoipa::path]` operation along with the handler, so a route cannot be served without
//! being documented. Bodies are described by `ToSchema` on the wire types themselves, and
//! each operation lists its error answers as a set of [`Problem`](crate::Problem) types
//! ([`errors`]). The conformance tests check the document against real answers.

pub mod errors;
mod page;
mod truths;

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use errors::ANY;
pub use errors::Errors;

/// The parts of the document that belong to no route: what the API is, how callers
/// authenticate, the tags, and the schemas no operation names directly (the error body,
/// the socket's frames).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "The manager of a delegate system: delegates register and take tasks over \
`/delegate/v1`; pipelines and operators use `/api/v1` with an API key.\n\n\
Every error answer is `application/problem+json` whose `type` is a stable URI \
(`https://switchboard.dev/problems/<slug>`, listed in `docs/errors.md`); each operation \
lists the types it can answer with, per status. Request bodies refuse unknown fields, an array \
where an object is required, numbers outside the `minimum`/`maximum` given, repeated items where \
`uniqueItems` is set, and any string or key holding U+0000 (422 `validation`, naming the field)."
    ),
    components(schemas(
        crate::http::error::ProblemBody,
        switchboard_protocol::socket::ServerMessage,
        switchboard_protocol::socket::DelegateMessage
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tasks", description = "Submit, follow, explain and cancel tasks (pipelines)."),
        (name = "delegates", description = "The registered delegates and their instances (operators)."),
        (name = "delegate-tokens", description = "The tokens delegates register with."),
        (name = "connectors", description = "Named connections to infrastructure, with the selectors their tasks inherit."),
        (name = "secrets", description = "Secrets that tasks use: sealed values, or references the delegate resolves. Values are never answered."),
        (name = "api-keys", description = "Scoped API keys with permissions."),
        (name = "audit", description = "Every change made through `/api/v1`."),
        (name = "status", description = "What this manager is."),
        (name = "delegate", description = "The delegate's own API: registration, the socket, task reports."),
        (name = "probes", description = "Liveness, readiness and metrics, without credentials."),
        (name = "reference", description = "This document and its HTML rendering."),
        (name = "dashboard", description = "The operator dashboard's page and files, at `/ui/`.")
    )
)]
struct Base;

/// The three bearer credentials; they never work in each other's place. Operations name
/// them in `security(...)`: `api_key` on `/api/v1`, `delegate_token` for registration,
/// `session` for the rest of `/delegate/v1`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                "api_key",
                "The admin key (`SWITCHBOARD_ADMIN_KEY`) or an API key (`sbk_...`), as \
                 `Authorization: Bearer <key>`.",
            ),
            (
                "delegate_token",
                "A delegate token (`sbd_...`), as `Authorization: Bearer <token>`.",
            ),
            (
                "session",
                "The session credential (`sbs_...`) answered by registration, as \
                 `Authorization: Bearer <credential>`.",
            ),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// The document's starting point, before the routes add their operations.
pub fn base() -> OpenApi {
    use utoipa::OpenApi as _;
    let mut document = Base::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
}

/// The finished document, serialized once, and the page rendered from it.
#[derive(Debug)]
pub struct Reference {
    json: Bytes,
    html: Bytes,
}

impl Reference {
    pub fn new(document: &OpenApi) -> Arc<Self> {
        let mut document = document.clone();
        truths::unsigned_int32(&mut document);
        truths::closed_tagged_variants(&mut document);
        // Serializing plain maps and strings cannot fail; the fallbacks keep the routes up.
        // The JSON keeps the document's order (fields as declared); the page reads it as a
        // `Value`, whose maps are sorted.
        let json = serde_json::to_string_pretty(&document).unwrap_or_default();
        let value = serde_json::from_str(&json).unwrap_or_default();
        Arc::new(Self {
            html: page::render(&value).into(),
            json: json.into(),
        })
    }
}

/// The OpenAPI 3.1 document of this server.
///
/// Generated from the code: every route the server answers is in it.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "reference",
    responses(
        (status = 200, description = "The OpenAPI document.", content_type = "application/json", body = serde_json::Value),
        Errors<ANY>
    )
)]
pub async fn document(Extension(reference): Extension<Arc<Reference>>) -> Response {
    answer("application/json", reference.json.clone())
}

/// A readable reference of the API, as one HTML page.
///
/// Rendered from the same document as `/openapi.json`, with no script and nothing loaded
/// from elsewhere.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "api_reference",
    tag = "reference",
    responses(
        (status = 200, description = "The reference page.", content_type = "text/html", body = String),
        Errors<ANY>
    )
)]
pub async fn docs(Extension(reference): Extension<Arc<Reference>>) -> Response {
    answer("text/html; charset=utf-8", reference.html.clone())
}

fn answer(content_type: &'static str, body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}
