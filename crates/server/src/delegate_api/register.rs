//! `POST /delegate/v1/register`: a delegate process presents its token and describes
//! itself; it gets an instance id, a session credential of its own, and where to open its
//! socket.
//!
//! The token is checked (the [`Token`] extractor, from the headers alone) before the body
//! is read, so an unauthenticated caller costs no body read and learns nothing about what
//! a valid body looks like.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use switchboard_domain::delegate::Version;
use switchboard_domain::{
    Capacity, DelegateGroup, DelegateInstance, DelegateToken, InstanceId, JitGrant, Scope, Secret, SecretKind,
    Selectors, TokenStatus,
};
use switchboard_protocol::delegate::{MAX_TASKS_LIMIT, RegisterRequest, Registered};
use switchboard_store::Store;

use crate::config::Settings;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::ApiJson;
use crate::http::fields;
use crate::http::middleware::bearer_token;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{FORBIDDEN, JSON_BODY, LIMITED, STORE, bit};
use crate::http::serve::Transport;
use crate::secrets;

/// Register a delegate process, with a delegate token.
///
/// Creates the delegate (group) of that name in the token's scope, or joins it, and
/// answers the instance's id, its own session credential (shown once) and where to open
/// its socket. The token is checked before the body is parsed.
#[utoipa::path(
    post,
    path = "/register",
    operation_id = "register_delegate",
    tag = "delegate",
    security(("delegate_token" = [])),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The instance, with its session credential.", body = Registered),
        Errors<{
            STORE
                | LIMITED
                | JSON_BODY
                | FORBIDDEN
                | bit(Problem::Unauthorized)
                | bit(Problem::TokenRevoked)
                | bit(Problem::DelegateTooOld)
        }>
    )
)]
pub async fn register(
    State(store): State<Arc<dyn Store>>,
    State(settings): State<Arc<Settings>>,
    transport: Option<Extension<Transport>>,
    headers: HeaderMap,
    Token(token): Token,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    check_version(&settings, &request.version)?;
    let max_tasks = match request.max_tasks {
        Some(n) if n == 0 || n > MAX_TASKS_LIMIT => {
            return Err(ApiError::validation(
                "max_tasks",
                format!("max_tasks must be between 1 and {MAX_TASKS_LIMIT}, got {n}"),
            ));
        }
        n => n,
    };
    let tags = fields::tags(&request.tags)?;
    let capacity = Capacity::new(
        request
            .capacity
            .unwrap_or(switchboard_domain::delegate::DEFAULT_CAPACITY),
    )
    .map_err(|e| ApiError::validation("capacity", e))?;
    check_text("hostname", &request.hostname, 253)?;
    fields::task_types(&request.task_types)?;

    let now = Utc::now();
    let (group, max_tasks) = match &token.jit {
        None => {
            let scope = narrowed_scope(&token, &request)?;
            // A group's own tags are the operators' (set through the API); what a process
            // declares stays its instance's, so one replica's tags never leak onto its
            // siblings.
            let group = store
                .upsert_group(&scope, &request.name, &Selectors::new(), now)
                .await?;
            (group, max_tasks)
        }
        Some(jit) => (jit_group(store.as_ref(), jit, &request, now).await?, Some(1)),
    };
    let scope = group.scope.clone();
    let session = secrets::generate(SecretKind::Session);
    let instance = DelegateInstance {
        id: InstanceId::new(),
        group_id: group.id,
        token_id: token.id,
        hostname: request.hostname.trim().to_owned(),
        version: request.version.trim().to_owned(),
        flavour: request.flavour,
        tags,
        task_types: request.task_types,
        capacity,
        active_tasks: 0,
        registered_at: now,
        last_heartbeat_at: now,
        connected: false,
        paused: None,
        draining: false,
        max_tasks,
        tasks_taken: 0,
    };
    match &token.jit {
        None => store.register_instance(&instance, &session.hash()).await?,
        // The credential is used in the same transaction that stores the instance: of
        // two registrations racing with it one gets in, and a failed one leaves it unused.
        Some(jit) => {
            if !store.register_jit_instance(&instance, &session.hash(), now).await? {
                return Err(jit_refused(jit, now));
            }
        }
    }
    tracing::info!(
        instance.id = %instance.id, group.name = %group.name, scope = %scope, token.name = %token.name,
        version = %instance.version, "delegate registered"
    );
    let registered = Registered {
        instance_id: instance.id,
        group_id: group.id,
        account: scope.account_id().clone(),
        org: scope.org().cloned(),
        project: scope.project().cloned(),
        session_token: session,
        heartbeat_interval_ms: u64::try_from(settings.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
        stream_url: stream_url(
            settings.public_url.as_deref(),
            transport.map_or(Transport::Plain, |Extension(t)| t),
            &headers,
        ),
        max_tasks,
    };
    Ok((StatusCode::CREATED, Json(registered)))
}

/// The group a JIT credential registers into: the registration must name it (the
/// credential's `jit_config` carries the name), and the request's `org` and `project`
/// must be absent or the group's. The credential is used later, with the instance's
/// insert ([`Store::register_jit_instance`]).
async fn jit_group(
    store: &dyn Store,
    jit: &JitGrant,
    request: &RegisterRequest,
    now: chrono::DateTime<Utc>,
) -> Result<DelegateGroup, ApiError> {
    let group = store.get_group(jit.group_id).await.map_err(|e| match e {
        switchboard_store::StoreError::NotFound(_) => {
            ApiError::unauthorized("the delegate this JIT credential registers into was deleted")
        }
        e => e.into(),
    })?;
    if request.name != group.name {
        return Err(ApiError::validation(
            "name",
            format!(
                "this JIT credential registers an instance of {:?}, not {:?}",
                group.name.as_str(),
                request.name.as_str()
            ),
        ));
    }
    let narrower = [
        ("org", request.org.as_ref(), group.scope.org()),
        ("project", request.project.as_ref(), group.scope.project()),
    ];
    for (field, asked, theirs) in narrower {
        if asked.is_some() && asked != theirs {
            return Err(ApiError::validation(
                field,
                format!("a JIT credential registers into {} only", group.scope),
            ));
        }
    }
    // Checked here for the answer; the store checks again as it uses the credential.
    if jit.expires_at <= now || jit.used_at.is_some() {
        return Err(jit_refused(jit, now));
    }
    Ok(group)
}

/// Why a JIT credential registers nothing (it expired, or it was used).
fn jit_refused(jit: &JitGrant, now: chrono::DateTime<Utc>) -> ApiError {
    ApiError::unauthorized(if jit.expires_at <= now {
        "this JIT credential expired; mint a new one"
    } else {
        "this JIT credential was already used: each registers one instance, once"
    })
}

/// The extractor of registration: the request's delegate token, if it is a known, active
/// one. It reads only the headers, so it runs before the body is read.
#[derive(Debug, Clone)]
pub struct Token(pub DelegateToken);

impl<S> FromRequestParts<S> for Token
where
    S: Send + Sync,
    Arc<dyn Store>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        authenticate(Arc::<dyn Store>::from_ref(state).as_ref(), &parts.headers)
            .await
            .map(Token)
    }
}

/// The token of the request, if it is a known, active delegate token.
async fn authenticate(store: &dyn Store, headers: &HeaderMap) -> Result<DelegateToken, ApiError> {
    let presented = bearer_token(headers).ok_or_else(|| {
        ApiError::unauthorized("registration needs a delegate token, sent as Authorization: Bearer <token>")
    })?;
    let secret = Secret::presented(presented);
    if !secret.is_kind(SecretKind::DelegateToken) {
        return Err(ApiError::unauthorized(
            "that credential is not a delegate token (delegate tokens start with sbd_; API keys and \
             session credentials do not work here)",
        ));
    }
    let hash = secret.hash();
    let token = store
        .token_by_secret(&hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown delegate token: check the token the delegate is given"))?;
    match token.status {
        TokenStatus::Active => Ok(token),
        TokenStatus::Revoked => Err(ApiError::new(
            Problem::TokenRevoked,
            format!(
                "the delegate token {:?} was revoked; ask an operator for a new token",
                token.name.as_str()
            ),
        )),
    }
}

fn check_version(settings: &Settings, version: &str) -> Result<(), ApiError> {
    check_text("version", version, 64)?;
    let Some(minimum) = &settings.min_delegate_version else {
        return Ok(());
    };
    let too_old = || {
        ApiError::new(
            Problem::DelegateTooOld,
            format!(
                "delegate version {version} is older than {minimum}, the oldest this manager accepts; upgrade the delegate"
            ),
        )
    };
    let min = Version::parse(minimum).ok_or_else(ApiError::internal)?;
    match Version::parse(version) {
        Some(v) if v.at_least(&min) => Ok(()),
        Some(_) => Err(too_old()),
        None => Err(too_old().with_field("version")),
    }
}

/// The scope the instance lands in: the token's, narrowed by the request's org and
/// project, never wider.
fn narrowed_scope(token: &DelegateToken, request: &RegisterRequest) -> Result<Scope, ApiError> {
    let org = request.org.clone().or_else(|| token.scope.org().cloned());
    let project = request.project.clone().or_else(|| token.scope.project().cloned());
    let scope = Scope::new(token.scope.account_id().clone(), org, project)
        .map_err(|e| ApiError::validation("project", e.to_string()))?;
    if !token.scope.contains(&scope) {
        return Err(ApiError::new(
            Problem::Forbidden,
            format!(
                "the token {:?} is scoped to {}; a delegate registered with it cannot serve {scope}",
                token.name.as_str(),
                token.scope
            ),
        ));
    }
    Ok(scope)
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            format!("{field} must be 1 to {max} printable characters"),
        ));
    }
    Ok(())
}

/// Where the instance opens its socket: the configured public URL (`https://` becomes
/// `wss://`), or the host it used to reach this registration, over TLS (`wss://`) when the
/// registration came over TLS.
fn stream_url(public_url: Option<&str>, transport: Transport, headers: &HeaderMap) -> String {
    format!(
        "{}/delegate/v1/stream",
        crate::http::serve::base_url(public_url, transport, headers, "ws")
    )
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::*;

    fn host(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_socket_url_keeps_the_scheme_the_delegate_used() {
        let headers = host("manager:8443");
        assert_eq!(
            stream_url(None, Transport::Plain, &headers),
            "ws://manager:8443/delegate/v1/stream"
        );
        assert_eq!(
            stream_url(None, Transport::Tls, &headers),
            "wss://manager:8443/delegate/v1/stream"
        );
    }

    #[test]
    fn a_public_url_decides_the_socket_url() {
        let headers = host("10.0.0.5:8080");
        assert_eq!(
            stream_url(Some("https://switchboard.example.com"), Transport::Plain, &headers),
            "wss://switchboard.example.com/delegate/v1/stream"
        );
        assert_eq!(
            stream_url(Some("http://switchboard.internal"), Transport::Tls, &headers),
            "ws://switchboard.internal/delegate/v1/stream"
        );
    }
}
