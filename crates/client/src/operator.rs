//! The operator endpoints of `/api/v1`, as typed methods on [`Client`]: delegate tokens,
//! delegates, connectors and tasks. The bodies are the wire types of
//! `switchboard-protocol`; where the server has no shared type for an answer (the task
//! list page, a dry run, a selection log), a small one lives here or the JSON is handed
//! back as it came.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchboard_domain::tasklog::{LogChunk, LogPosition};
use switchboard_domain::{TaskId, TaskState};
use switchboard_protocol::connectors::{ConnectorList, ConnectorView, CreateConnector, UpdateConnector};
use switchboard_protocol::fleet::{
    DeclareDelegate, DelegateList, DelegateView, JitCredential, MintJit, PauseRequest, QueueSummary, SetTags,
};
use switchboard_protocol::keys::{ApiKeyCreated, ApiKeyList, ApiKeyView, CreateApiKey};
use switchboard_protocol::policies::{ScopePolicyList, ScopePolicyView, SetScopePolicy};
use switchboard_protocol::secrets::{CreateSecret, ReplaceSecret, SecretList, SecretView};
use switchboard_protocol::tasks::{SubmitTask, Submitted, TaskLogPage, TaskView};
use switchboard_protocol::tokens::{CreateToken, InstallFile, TokenCreated, TokenList, TokenView};

use crate::{Client, ClientError, decode};

/// One page of `GET /api/v1/tasks`, newest first; `next` is the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    pub items: Vec<TaskView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<TaskId>,
}

/// What a followed task log brings.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    /// A stored chunk, in order.
    Chunk(LogChunk),
    /// The task ended and its whole log was read: nothing more comes.
    End(TaskState),
}

/// A task's log followed over `GET /api/v1/tasks/{id}/logs?follow=true` (server-sent
/// events). A stream that breaks (a replica restarting, a proxy's timeout) is opened
/// again from the last chunk read, so no chunk is missed or read twice.
#[derive(Debug)]
pub struct LogFollower<'a> {
    client: &'a Client,
    id: String,
    from: LogPosition,
    stream: Option<reqwest::Response>,
    buffer: Vec<u8>,
    done: bool,
}

/// How long one followed stream stays open before it is opened again (the client's usual
/// 30 s timeout would cut a quiet log short).
const FOLLOW_STREAM: std::time::Duration = std::time::Duration::from_secs(3600);

impl LogFollower<'_> {
    /// The next event; `None` after [`LogEvent::End`]. A refusal (the task is unknown,
    /// the key may not see it) is an error; a broken stream is reopened.
    pub async fn next(&mut self) -> Result<Option<LogEvent>, ClientError> {
        let mut reopened = 0u32;
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(event) = self.take_event()? {
                return Ok(Some(event));
            }
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => {
                    let resp = self
                        .client
                        .request(reqwest::Method::GET, &format!("/api/v1/tasks/{}/logs", seg(&self.id)))
                        .query(&[
                            ("follow", "true".to_owned()),
                            ("attempt", self.from.attempt.0.to_string()),
                            ("offset", self.from.offset.to_string()),
                        ])
                        .timeout(FOLLOW_STREAM)
                        .send()
                        .await?;
                    if !resp.status().is_success() {
                        return Err(decode::<serde_json::Value>(resp)
                            .await
                            .err()
                            .unwrap_or(ClientError::Closed));
                    }
                    self.buffer.clear();
                    self.stream.insert(resp)
                }
            };
            match stream.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) | Err(_) if reopened < 3 => {
                    // The stream ended without `end`: open it again from where we are.
                    reopened += 1;
                    self.stream = None;
                }
                Ok(None) => return Err(ClientError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next whole event in the buffer, if there is one.
    fn take_event(&mut self) -> Result<Option<LogEvent>, ClientError> {
        loop {
            let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") else {
                return Ok(None);
            };
            let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            let (mut kind, mut data) = ("message", String::new());
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = if v.trim() == "chunk" {
                        "chunk"
                    } else if v.trim() == "end" {
                        "end"
                    } else {
                        "other"
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            let unexpected = |e: serde_json::Error| ClientError::Unexpected {
                status: 200,
                body: format!("{e}: {data}"),
            };
            match kind {
                "chunk" => {
                    let chunk: LogChunk = serde_json::from_str(&data).map_err(unexpected)?;
                    self.from = chunk.next();
                    return Ok(Some(LogEvent::Chunk(chunk)));
                }
                "end" => {
                    #[derive(Deserialize)]
                    struct End {
                        state: TaskState,
                    }
                    let end: End = serde_json::from_str(&data).map_err(unexpected)?;
                    self.done = true;
                    return Ok(Some(LogEvent::End(end.state)));
                }
                // Keep-alive comments, and events this client does not know.
                _ => continue,
            }
        }
    }
}

/// The filters of `GET /api/v1/tasks`; `None` leaves a filter out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub account: Option<String>,
    pub org: Option<String>,
    pub project: Option<String>,
    /// Comma-separated states.
    pub state: Option<String>,
    pub task_type: Option<String>,
    pub connector: Option<String>,
    pub before: Option<String>,
    pub limit: Option<u32>,
}

impl TaskFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let mut add = |name: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                q.push((name, v.clone()));
            }
        };
        add("account", &self.account);
        add("org", &self.org);
        add("project", &self.project);
        add("state", &self.state);
        add("type", &self.task_type);
        add("connector", &self.connector);
        add("before", &self.before);
        if let Some(limit) = self.limit {
            q.push(("limit", limit.to_string()));
        }
        q
    }
}

/// A scope filter for `GET /api/v1/connectors`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeFilter {
    pub account: Option<String>,
    pub org: Option<String>,
    pub project: Option<String>,
}

impl ScopeFilter {
    /// The filters given, as query pairs.
    fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("account", &self.account),
            ("org", &self.org),
            ("project", &self.project),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
        .collect()
    }
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{}", self.base, path));
        match &self.api_key {
            Some(key) => req.bearer_auth(key.expose()),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        decode(req.send().await?).await
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::POST, path)).await
    }

    /// A request answered with no body (204).
    async fn no_content(&self, req: reqwest::RequestBuilder) -> Result<(), ClientError> {
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(());
        }
        decode::<serde_json::Value>(resp).await.map(|_| ())
    }

    // Delegate tokens.

    /// Creates a delegate token; its secret is in the answer, and only there.
    pub async fn create_token(&self, body: &CreateToken) -> Result<TokenCreated, ClientError> {
        self.post_json("/api/v1/delegate-tokens", body).await
    }

    pub async fn list_tokens(&self) -> Result<TokenList, ClientError> {
        self.send(self.request(reqwest::Method::GET, "/api/v1/delegate-tokens"))
            .await
    }

    pub async fn get_token(&self, id: &str) -> Result<TokenView, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/v1/delegate-tokens/{}", seg(id))))
            .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenView, ClientError> {
        self.post_empty(&format!("/api/v1/delegate-tokens/{}/revoke", seg(id)))
            .await
    }

    /// An install file for a delegate with this token; `query` holds the route's
    /// parameters (`format`, `name`, `replicas`, `flavour`, `tags`, `capacity`, `org`,
    /// `project`, `new_token`).
    pub async fn install_file(&self, id: &str, query: &[(&str, String)]) -> Result<InstallFile, ClientError> {
        self.send(
            self.request(
                reqwest::Method::GET,
                &format!("/api/v1/delegate-tokens/{}/install", seg(id)),
            )
            .query(query),
        )
        .await
    }

    // Secrets.

    /// Creates a secret (a value, sealed by the manager, or a reference); the answer never
    /// carries the value.
    pub async fn create_secret(&self, body: &CreateSecret) -> Result<SecretView, ClientError> {
        self.post_json("/api/v1/secrets", body).await
    }

    pub async fn list_secrets(&self, scope: &ScopeFilter) -> Result<SecretList, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, "/api/v1/secrets")
                .query(&scope.query()),
        )
        .await
    }

    pub async fn get_secret(&self, id: &str) -> Result<SecretView, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/v1/secrets/{}", seg(id))))
            .await
    }

    /// Replaces what the secret holds (a new version).
    pub async fn replace_secret(&self, id: &str, body: &ReplaceSecret) -> Result<SecretView, ClientError> {
        let req = self
            .request(reqwest::Method::PUT, &format!("/api/v1/secrets/{}", seg(id)))
            .json(body);
        self.send(req).await
    }

    pub async fn delete_secret(&self, id: &str) -> Result<(), ClientError> {
        self.no_content(self.request(reqwest::Method::DELETE, &format!("/api/v1/secrets/{}", seg(id))))
            .await
    }

    // API keys.

    pub async fn create_api_key(&self, body: &CreateApiKey) -> Result<ApiKeyCreated, ClientError> {
        self.post_json("/api/v1/api-keys", body).await
    }

    pub async fn list_api_keys(&self) -> Result<ApiKeyList, ClientError> {
        self.send(self.request(reqwest::Method::GET, "/api/v1/api-keys")).await
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKeyView, ClientError> {
        self.post_empty(&format!("/api/v1/api-keys/{}/revoke", seg(id))).await
    }

    // Delegates.

    pub async fn list_delegates(&self) -> Result<DelegateList, ClientError> {
        self.send(self.request(reqwest::Method::GET, "/api/v1/delegates")).await
    }

    /// Declares a delegate (a pool) ahead of any instance.
    pub async fn declare_delegate(&self, body: &DeclareDelegate) -> Result<DelegateView, ClientError> {
        self.post_json("/api/v1/delegates", body).await
    }

    pub async fn get_delegate(&self, id: &str) -> Result<DelegateView, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/v1/delegates/{}", seg(id))))
            .await
    }

    /// Replaces the group's tags.
    pub async fn set_delegate_tags(&self, id: &str, tags: Vec<String>) -> Result<DelegateView, ClientError> {
        let req = self
            .request(reqwest::Method::PUT, &format!("/api/v1/delegates/{}/tags", seg(id)))
            .json(&SetTags { tags });
        self.send(req).await
    }

    pub async fn disable_delegate(&self, id: &str) -> Result<DelegateView, ClientError> {
        self.post_empty(&format!("/api/v1/delegates/{}/disable", seg(id))).await
    }

    pub async fn enable_delegate(&self, id: &str) -> Result<DelegateView, ClientError> {
        self.post_empty(&format!("/api/v1/delegates/{}/enable", seg(id))).await
    }

    /// Pauses the delegate, or with `instance` one of its instances.
    pub async fn pause(
        &self,
        id: &str,
        instance: Option<&str>,
        body: &PauseRequest,
    ) -> Result<DelegateView, ClientError> {
        self.post_json(&maintenance_path(id, instance, "pause"), body).await
    }

    /// Lifts the pause of the delegate, or with `instance` of one of its instances.
    pub async fn resume(&self, id: &str, instance: Option<&str>) -> Result<DelegateView, ClientError> {
        self.post_empty(&maintenance_path(id, instance, "resume")).await
    }

    /// Mints a single-use registration credential for the delegate.
    pub async fn mint_jit(&self, id: &str, body: &MintJit) -> Result<JitCredential, ClientError> {
        self.post_json(&format!("/api/v1/delegates/{}/jit", seg(id)), body)
            .await
    }

    pub async fn delete_delegate(&self, id: &str) -> Result<(), ClientError> {
        self.no_content(self.request(reqwest::Method::DELETE, &format!("/api/v1/delegates/{}", seg(id))))
            .await
    }

    // Connectors.

    pub async fn create_connector(&self, body: &CreateConnector) -> Result<ConnectorView, ClientError> {
        self.post_json("/api/v1/connectors", body).await
    }

    pub async fn list_connectors(&self, scope: &ScopeFilter) -> Result<ConnectorList, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, "/api/v1/connectors")
                .query(&scope.query()),
        )
        .await
    }

    pub async fn get_connector(&self, id: &str) -> Result<ConnectorView, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/v1/connectors/{}", seg(id))))
            .await
    }

    /// Replaces the connector's name and selectors.
    pub async fn update_connector(&self, id: &str, body: &UpdateConnector) -> Result<ConnectorView, ClientError> {
        let req = self
            .request(reqwest::Method::PUT, &format!("/api/v1/connectors/{}", seg(id)))
            .json(body);
        self.send(req).await
    }

    pub async fn delete_connector(&self, id: &str) -> Result<(), ClientError> {
        self.no_content(self.request(reqwest::Method::DELETE, &format!("/api/v1/connectors/{}", seg(id))))
            .await
    }

    // Scope policies.

    /// Sets (replaces) one scope's policy: its share's weight, its default retry policy.
    pub async fn set_scope_policy(&self, body: &SetScopePolicy) -> Result<ScopePolicyView, ClientError> {
        self.send(self.request(reqwest::Method::PUT, "/api/v1/scope-policies").json(body))
            .await
    }

    pub async fn scope_policies(&self, scope: &ScopeFilter) -> Result<ScopePolicyList, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, "/api/v1/scope-policies")
                .query(&scope.query()),
        )
        .await
    }

    pub async fn delete_scope_policy(&self, scope: &ScopeFilter) -> Result<(), ClientError> {
        self.no_content(
            self.request(reqwest::Method::DELETE, "/api/v1/scope-policies")
                .query(&scope.query()),
        )
        .await
    }

    // Tasks.

    /// Submits a task; with `idempotency_key`, a retry answers the original task.
    pub async fn submit_task(
        &self,
        body: &SubmitTask,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, ClientError> {
        let mut req = self.request(reqwest::Method::POST, "/api/v1/tasks").json(body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.send(req).await
    }

    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<TaskPage, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, "/api/v1/tasks")
                .query(&filter.query()),
        )
        .await
    }

    /// The queue by reason (`GET /api/v1/queue`); of `filter`, the scope, type and
    /// connector apply.
    pub async fn queue(&self, filter: &TaskFilter) -> Result<QueueSummary, ClientError> {
        let q: Vec<(&str, String)> = filter
            .query()
            .into_iter()
            .filter(|(name, _)| ["account", "org", "project", "type", "connector"].contains(name))
            .collect();
        self.send(self.request(reqwest::Method::GET, "/api/v1/queue").query(&q))
            .await
    }

    pub async fn get_task(&self, id: &str) -> Result<TaskView, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/v1/tasks/{}", seg(id))))
            .await
    }

    /// A long poll: the task as soon as it is in a state other than `seen` (at once when
    /// `seen` is `None`), or as it is after `timeout_ms` (at most
    /// [`WAIT_MAX_MS`](switchboard_protocol::tasks::WAIT_MAX_MS); the server refuses more).
    ///
    /// The server gives a long poll its wait on top of its `request_timeout` (30 s by
    /// default), so this request's own timeout is the wait plus as much again.
    pub async fn wait_task(&self, id: &str, seen: Option<TaskState>, timeout_ms: u64) -> Result<TaskView, ClientError> {
        let mut q = vec![("timeout_ms", timeout_ms.to_string())];
        if let Some(state) = seen {
            q.push(("state", state.as_str().to_owned()));
        }
        let req = self
            .request(reqwest::Method::GET, &format!("/api/v1/tasks/{}/wait", seg(id)))
            .query(&q)
            .timeout(std::time::Duration::from_millis(timeout_ms.saturating_add(30_000)));
        self.send(req).await
    }

    pub async fn cancel_task(&self, id: &str) -> Result<TaskView, ClientError> {
        self.post_empty(&format!("/api/v1/tasks/{}/cancel", seg(id))).await
    }

    /// A dry run of a submission: which delegates would take it now, and why not the others.
    pub async fn explain_task(&self, body: &SubmitTask) -> Result<serde_json::Value, ClientError> {
        self.post_json("/api/v1/tasks/explain", body).await
    }

    /// Every attempt of the task, as `{"items": [...]}`.
    pub async fn task_attempts(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/v1/tasks/{}/attempts", seg(id))))
            .await
    }

    /// A page of the task's log from `from` (the first attempt's start by default), of
    /// about `limit_bytes` of text at most (the server's default without).
    pub async fn task_logs(
        &self,
        id: &str,
        from: LogPosition,
        limit_bytes: Option<u32>,
    ) -> Result<TaskLogPage, ClientError> {
        let mut q = vec![
            ("attempt", from.attempt.0.to_string()),
            ("offset", from.offset.to_string()),
        ];
        if let Some(limit) = limit_bytes {
            q.push(("limit_bytes", limit.to_string()));
        }
        self.send(
            self.request(reqwest::Method::GET, &format!("/api/v1/tasks/{}/logs", seg(id)))
                .query(&q),
        )
        .await
    }

    /// Follows the task's log from `from`: each chunk as it is stored, then the task's
    /// final state (see [`LogFollower::next`]).
    pub fn follow_task_logs(&self, id: &str, from: LogPosition) -> LogFollower<'_> {
        LogFollower {
            client: self,
            id: id.to_owned(),
            from,
            stream: None,
            buffer: Vec::new(),
            done: false,
        }
    }

    /// Every decision about the task, as `{"items": [...]}`.
    pub async fn selection_log(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/api/v1/tasks/{}/selection-log", seg(id)),
        ))
        .await
    }
}

/// An id as one path segment: anything that is not a plain identifier character is
/// percent-encoded, so an id can never reach another route.
fn seg(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/api/v1/delegates/{id}/{action}`, or `.../instances/{instance}/{action}`.
fn maintenance_path(id: &str, instance: Option<&str>, action: &str) -> String {
    match instance {
        None => format!("/api/v1/delegates/{}/{action}", seg(id)),
        Some(instance) => format!("/api/v1/delegates/{}/instances/{}/{action}", seg(id), seg(instance)),
    }
}
