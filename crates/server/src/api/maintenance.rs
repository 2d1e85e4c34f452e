//! Taking delegates out and back: pause and resume a delegate or one instance, and mint
//! the single-use (JIT) credentials an autoscaler gives to one-shot instances.
//!
//! All of it needs `delegates:edit` at the delegate's scope. A pause changes what
//! placement sees (rule 6, docs/rules.md), so every replica's next decision honours it; a
//! resume wakes placement everywhere, since tasks may have waited for it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use switchboard_domain::delegate::MAX_PAUSE_NOTE;
use switchboard_domain::duration::parse_duration;
use switchboard_domain::{
    DelegateToken, GroupId, Ident, InstanceId, JitGrant, Pause, Permission, SecretKind, TokenId, TokenStatus,
};
use switchboard_protocol::fleet::{DelegateView, JitCredential, MintJit, PauseRequest};

use super::delegates::{Views, full_view};
use crate::config::Settings;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPair, IdPath};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, FORBIDDEN, JSON_BODY, NOT_FOUND};
use crate::http::serve::Transport;
use crate::manager::dispatch::Placer;
use crate::secrets;

/// The longest a pause may be set to last by itself (`until` or `for`).
const MAX_PAUSE: chrono::Duration = chrono::Duration::days(30);

/// How long a JIT credential registers when the request does not say, and the bounds.
const JIT_DEFAULT: chrono::Duration = chrono::Duration::hours(1);
const JIT_MIN: chrono::Duration = chrono::Duration::minutes(1);
const JIT_MAX: chrono::Duration = chrono::Duration::hours(24);

/// Pause a delegate: none of its instances takes a new task until it is resumed or the
/// pause ends by itself; what they run goes on.
#[utoipa::path(
    post,
    path = "/delegates/{id}/pause",
    operation_id = "pause_delegate",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    request_body = PauseRequest,
    responses(
        (status = 200, description = "The delegate, paused.", body = DelegateView),
        Errors<{ API | JSON_BODY | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn pause_delegate(
    state: Views,
    caller: Caller,
    IdPath(id): IdPath<GroupId>,
    ApiJson(body): ApiJson<PauseRequest>,
) -> Result<Json<DelegateView>, ApiError> {
    let existing = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesEdit, &existing.scope, "delegate")?;
    let pause = pause_of(body, Utc::now())?;
    let group = state.store.set_group_pause(id, Some(&pause)).await?;
    tracing::info!(group.id = %id, group.name = %group.name, until = ?pause.until, note = %pause.note, "delegate paused");
    Ok(Json(full_view(&state, &group).await?))
}

/// Lift a delegate's pause (its instances' own pauses stay).
#[utoipa::path(
    post,
    path = "/delegates/{id}/resume",
    operation_id = "resume_delegate",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    responses(
        (status = 200, description = "The delegate, taking tasks again.", body = DelegateView),
        Errors<{ API | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn resume_delegate(
    State(placer): State<Placer>,
    state: Views,
    caller: Caller,
    IdPath(id): IdPath<GroupId>,
) -> Result<Json<DelegateView>, ApiError> {
    let existing = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesEdit, &existing.scope, "delegate")?;
    let group = state.store.set_group_pause(id, None).await?;
    tracing::info!(group.id = %id, group.name = %group.name, "delegate resumed");
    crate::manager::cluster::wake_everywhere(&placer, &state.sockets);
    Ok(Json(full_view(&state, &group).await?))
}

/// Pause one instance of a delegate: it takes no new task until resumed or until the
/// pause ends by itself; what it runs goes on.
#[utoipa::path(
    post,
    path = "/delegates/{id}/instances/{instance_id}/pause",
    operation_id = "pause_instance",
    tag = "delegates",
    security(("api_key" = [])),
    params(
        ("id" = GroupId, Path, description = "The delegate's id."),
        ("instance_id" = InstanceId, Path, description = "The instance's id.")
    ),
    request_body = PauseRequest,
    responses(
        (status = 200, description = "The delegate, with the instance paused.", body = DelegateView),
        Errors<{ API | JSON_BODY | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn pause_instance(
    state: Views,
    caller: Caller,
    IdPair(id, instance): IdPair<GroupId, InstanceId>,
    ApiJson(body): ApiJson<PauseRequest>,
) -> Result<Json<DelegateView>, ApiError> {
    let group = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesEdit, &group.scope, "delegate")?;
    instance_of(&state, id, instance).await?;
    let pause = pause_of(body, Utc::now())?;
    state.store.set_instance_pause(instance, Some(&pause)).await?;
    tracing::info!(group.id = %id, instance.id = %instance, until = ?pause.until, note = %pause.note, "instance paused");
    Ok(Json(full_view(&state, &group).await?))
}

/// Lift one instance's own pause (its delegate's pause, if any, stays).
#[utoipa::path(
    post,
    path = "/delegates/{id}/instances/{instance_id}/resume",
    operation_id = "resume_instance",
    tag = "delegates",
    security(("api_key" = [])),
    params(
        ("id" = GroupId, Path, description = "The delegate's id."),
        ("instance_id" = InstanceId, Path, description = "The instance's id.")
    ),
    responses(
        (status = 200, description = "The delegate, with the instance taking tasks again.", body = DelegateView),
        Errors<{ API | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn resume_instance(
    State(placer): State<Placer>,
    state: Views,
    caller: Caller,
    IdPair(id, instance): IdPair<GroupId, InstanceId>,
) -> Result<Json<DelegateView>, ApiError> {
    let group = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesEdit, &group.scope, "delegate")?;
    instance_of(&state, id, instance).await?;
    state.store.set_instance_pause(instance, None).await?;
    tracing::info!(group.id = %id, instance.id = %instance, "instance resumed");
    crate::manager::cluster::wake_everywhere(&placer, &state.sockets);
    Ok(Json(full_view(&state, &group).await?))
}

/// Mint a single-use registration credential for this delegate.
///
/// The credential (a delegate token, shown once, stored hashed) registers one instance of
/// this delegate, once, before it expires. That instance takes one task; once the task
/// ended it is told to exit (`drain`, then close code 4004) and is removed.
#[utoipa::path(
    post,
    path = "/delegates/{id}/jit",
    operation_id = "mint_jit_credential",
    tag = "delegates",
    security(("api_key" = [])),
    params(("id" = GroupId, Path, description = "The delegate's id.")),
    request_body = MintJit,
    responses(
        (status = 201, description = "The credential, shown once.", body = JitCredential),
        Errors<{ API | JSON_BODY | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn mint_jit(
    state: Views,
    caller: Caller,
    State(settings): State<Arc<Settings>>,
    transport: Option<Extension<Transport>>,
    headers: HeaderMap,
    IdPath(id): IdPath<GroupId>,
    ApiJson(body): ApiJson<MintJit>,
) -> Result<(StatusCode, Json<JitCredential>), ApiError> {
    let group = state.store.get_group(id).await?;
    caller.check(Permission::DelegatesEdit, &group.scope, "delegate")?;
    let lasts = match &body.expires_in {
        None => JIT_DEFAULT,
        Some(raw) => {
            let d = parse_duration(raw).map_err(|e| ApiError::validation("expires_in", e))?;
            chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        }
    };
    if !(JIT_MIN..=JIT_MAX).contains(&lasts) {
        return Err(ApiError::validation(
            "expires_in",
            "expires_in must be between 1m and 24h",
        ));
    }
    let now = Utc::now();
    let token_id = TokenId::new();
    let token = DelegateToken {
        id: token_id,
        // Unique in the account, like every token name; nobody types it.
        name: Ident::parse(&format!("jit-{}", token_id.0.simple())).map_err(|_| ApiError::internal())?,
        scope: group.scope.clone(),
        status: TokenStatus::Active,
        created_at: now,
        revoked_at: None,
        jit: Some(JitGrant {
            group_id: group.id,
            expires_at: now + lasts,
            used_at: None,
        }),
    };
    let secret = secrets::generate(SecretKind::DelegateToken);
    state.store.create_token(&token, &secret.hash()).await?;
    tracing::info!(group.id = %id, group.name = %group.name, token.id = %token_id, "JIT credential minted");
    let url = crate::http::serve::base_url(
        settings.public_url.as_deref(),
        transport.map_or(Transport::Plain, |Extension(t)| t),
        &headers,
        "http",
    );
    let config = serde_json::json!({"url": url, "token": secret.expose(), "name": group.name});
    let jit_config = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(config.to_string());
    Ok((
        StatusCode::CREATED,
        Json(JitCredential {
            id: token_id,
            group_id: group.id,
            name: group.name,
            expires_at: now + lasts,
            token: secret,
            jit_config,
        }),
    ))
}

/// The instance, if it belongs to the delegate `group` (else 404, as for an unknown id).
async fn instance_of(state: &Views, group: GroupId, instance: InstanceId) -> Result<(), ApiError> {
    match state.store.get_instance(instance).await {
        Ok(i) if i.group_id == group => Ok(()),
        Ok(_) | Err(switchboard_store::StoreError::NotFound(_)) => Err(ApiError::not_found(format!(
            "delegate {group} has no instance {instance}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The pause a request asks for, checked: a note of 1 to 500 printable characters, and
/// an end in the future, at most 30 days ahead, given as `until` or as `for` (not both).
fn pause_of(body: PauseRequest, now: DateTime<Utc>) -> Result<Pause, ApiError> {
    let note = body.note.trim();
    if note.is_empty() || note.chars().count() > MAX_PAUSE_NOTE || note.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "note",
            format!("note must be 1 to {MAX_PAUSE_NOTE} printable characters: say why, for the next operator"),
        ));
    }
    let until = match (body.until, body.duration) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation("for", "give until or for, not both"));
        }
        (Some(until), None) => {
            if until <= now {
                return Err(ApiError::validation("until", "until must be in the future"));
            }
            Some(until)
        }
        (None, Some(raw)) => {
            let d = parse_duration(&raw).map_err(|e| ApiError::validation("for", e))?;
            if d.is_zero() {
                return Err(ApiError::validation("for", "for must be longer than 0s"));
            }
            let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            Some(
                now.checked_add_signed(d.min(MAX_PAUSE + chrono::Duration::seconds(1)))
                    .unwrap_or(now),
            )
        }
        (None, None) => None,
    };
    if let Some(until) = until
        && until - now > MAX_PAUSE
    {
        let field = "until";
        return Err(ApiError::validation(
            field,
            "a pause may end by itself at most 30 days ahead; leave the end out for one that holds until resumed",
        ));
    }
    // Whole milliseconds, as placement compares them: the pause ends when the API says.
    let whole_ms = |t: DateTime<Utc>| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t);
    Ok(Pause {
        note: note.to_owned(),
        since: whole_ms(now),
        until: until.map(whole_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(note: &str, until: Option<DateTime<Utc>>, duration: Option<&str>) -> PauseRequest {
        PauseRequest {
            note: note.into(),
            until,
            duration: duration.map(Into::into),
        }
    }

    #[test]
    fn a_pause_needs_a_note_and_an_end_ahead_within_thirty_days() {
        let now = Utc::now();
        let ok = pause_of(request(" kernel upgrade ", None, Some("2h")), now).expect("valid");
        assert_eq!(ok.note, "kernel upgrade");
        let whole_ms = |t: DateTime<Utc>| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap();
        assert_eq!(ok.until, Some(whole_ms(now + chrono::Duration::hours(2))));
        assert_eq!(pause_of(request("x", None, None), now).expect("valid").until, None);
        for (bad, field) in [
            (request("", None, None), "note"),
            (request(&"n".repeat(501), None, None), "note"),
            (request("a\u{7}b", None, None), "note"),
            (request("x", Some(now), None), "until"),
            (request("x", Some(now + chrono::Duration::days(31)), None), "until"),
            (request("x", None, Some("31d")), "until"),
            (request("x", None, Some("0s")), "for"),
            (request("x", None, Some("soon")), "for"),
            (request("x", Some(now + chrono::Duration::hours(1)), Some("1h")), "for"),
        ] {
            let e = pause_of(bad, now).expect_err("refused");
            assert_eq!(e.field(), Some(field), "{e:?}");
        }
    }
}
