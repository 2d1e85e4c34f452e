//! `GET /api/v1/delegate-tokens/{id}/install`: a file that installs the reference
//! delegate with a token, ready to apply: Kubernetes (a Deployment, and the token's
//! Secret), Docker Compose, or a systemd unit (docs/operations.md, "Installing a
//! delegate").
//!
//! Tokens are kept only as hashes, so the file cannot carry an existing token's secret:
//! it names a Kubernetes Secret (or an environment file) and the answer says how to
//! create it from the token shown at its creation; or, with `new_token=true`
//! (`delegates:edit`), a token is minted for this install and embedded in the file,
//! shown in that answer only.
//!
//! The Kubernetes and Compose files are JSON, which is YAML too: `kubectl apply -f` and
//! `docker compose -f` read them as they are, and no YAML writer is needed to build them.
//! Sizes follow the size table of delegate-overview.md: 2 GiB and 0.5 CPU for 10 parallel
//! tasks, scaled by `capacity` (at least 256 MiB and 0.1 CPU).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_domain::selector::parse_selectors;
use switchboard_domain::{
    Capacity, DelegateToken, Ident, ImageFlavour, Permission, Scope, Secret, SecretKind, TokenId, TokenStatus,
};
use switchboard_protocol::tokens::{InstallFile, InstallFormat};
use switchboard_store::Store;
use utoipa::IntoParams;

use crate::config::Settings;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, IdPath};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, CONFLICT, FORBIDDEN, NOT_FOUND, QUERY};
use crate::http::serve::Transport;

/// The most replicas a file asks for.
const MAX_REPLICAS: u32 = 100;

/// Where the delegate serves `/healthz` inside its container.
const HEALTH_PORT: u16 = 8081;

/// How long a stopping delegate may finish its tasks (its `--drain-timeout`), and the
/// grace its orchestrator gives it on top before killing it.
const DRAIN_SECS: u64 = 600;
const GRACE_SECS: u64 = DRAIN_SECS + 30;

/// The query string of the install route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstallQuery {
    /// `kubernetes` (default), `compose` or `systemd`.
    format: Option<InstallFormat>,
    /// The delegate's name (default: the token's name).
    name: Option<Ident>,
    /// Replicas (Kubernetes, Compose): 1 to 100, default 1.
    #[param(minimum = 1, maximum = 100)]
    replicas: Option<u32>,
    /// `minimal` (default) or `full`: the image, and what the delegate reports.
    flavour: Option<String>,
    /// Comma-separated delegate tags.
    tags: Option<String>,
    /// Parallel tasks per replica (default 10); resources are scaled by it.
    #[param(minimum = 1)]
    capacity: Option<u32>,
    /// Register in this org (within the token's scope).
    org: Option<Ident>,
    /// Register in this project of `org`.
    project: Option<Ident>,
    /// Mint a new token for this install and embed it (needs `delegates:edit`).
    new_token: Option<bool>,
}

/// An install file for a delegate registering with this token.
///
/// Needs to see the token (`delegates:view`); `new_token=true` mints one for this install
/// (`delegates:edit`), else the file names a Secret (Kubernetes) or an environment file to
/// create from the token's secret.
#[utoipa::path(
    get,
    path = "/delegate-tokens/{id}/install",
    operation_id = "delegate_install_file",
    tag = "delegate-tokens",
    security(("api_key" = [])),
    params(("id" = TokenId, Path, description = "The token's id."), InstallQuery),
    responses(
        (status = 200, description = "The file, and how to apply it.", body = InstallFile),
        Errors<{ API | NOT_FOUND | QUERY | FORBIDDEN | CONFLICT }>
    )
)]
pub async fn install(
    State(store): State<Arc<dyn Store>>,
    State(settings): State<Arc<Settings>>,
    caller: Caller,
    transport: Option<axum::Extension<Transport>>,
    headers: HeaderMap,
    IdPath(id): IdPath<TokenId>,
    ApiQuery(q): ApiQuery<InstallQuery>,
) -> Result<Json<InstallFile>, ApiError> {
    let token = store.get_token(id).await?;
    caller.check(Permission::DelegatesView, &token.scope, "delegate token")?;
    if token.status != TokenStatus::Active {
        return Err(ApiError::new(
            crate::http::error::Problem::Conflict,
            "this token is revoked; a delegate cannot register with it",
        ));
    }
    let spec = Spec::from_query(&token, q, &settings, transport.map(|t| t.0), &headers)?;
    let (token_id, minted) = if spec.new_token {
        caller.check(Permission::DelegatesEdit, &token.scope, "delegate token")?;
        let (minted, secret) = mint(store.as_ref(), &token, &spec.name).await?;
        (minted.id, Some(secret))
    } else {
        (token.id, None)
    };
    Ok(Json(spec.render(token_id, minted)))
}

/// Mints a token in `like`'s scope for this install, named after the delegate.
async fn mint(store: &dyn Store, like: &DelegateToken, name: &Ident) -> Result<(DelegateToken, Secret), ApiError> {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let base: String = name.as_str().chars().take(40).collect();
    let token_name = Ident::parse(&format!("{base}-install-{suffix}"))
        .map_err(|e| ApiError::validation("name", format!("cannot name the new token: {e}")))?;
    let token = DelegateToken {
        id: TokenId::new(),
        name: token_name,
        scope: like.scope.clone(),
        status: TokenStatus::Active,
        created_at: Utc::now(),
        revoked_at: None,
        jit: None,
    };
    let secret = crate::secrets::generate(SecretKind::DelegateToken);
    store.create_token(&token, &secret.hash()).await?;
    tracing::info!(token.id = %token.id, token.name = %token.name, "delegate token minted for an install file");
    Ok((token, secret))
}

/// What the file installs.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub format: InstallFormat,
    pub name: Ident,
    pub replicas: u32,
    pub flavour: ImageFlavour,
    pub tags: Vec<String>,
    pub capacity: u32,
    pub scope: Scope,
    pub manager: String,
    pub image: String,
    pub new_token: bool,
}

impl Spec {
    fn from_query(
        token: &DelegateToken,
        q: InstallQuery,
        settings: &Settings,
        transport: Option<Transport>,
        headers: &HeaderMap,
    ) -> Result<Spec, ApiError> {
        let replicas = q.replicas.unwrap_or(1);
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(ApiError::validation(
                "replicas",
                format!("replicas must be 1 to {MAX_REPLICAS}; got {replicas}"),
            ));
        }
        let flavour = match q.flavour.as_deref() {
            None => ImageFlavour::Minimal,
            Some(f) => ImageFlavour::parse(f)
                .ok_or_else(|| ApiError::validation("flavour", format!("flavour is minimal or full; got {f:?}")))?,
        };
        let capacity = q.capacity.unwrap_or(10);
        Capacity::new(capacity).map_err(|e| ApiError::validation("capacity", e.to_string()))?;
        let tags: Vec<String> = match &q.tags {
            None => Vec::new(),
            Some(raw) => parse_selectors(raw.split(',').filter(|t| !t.trim().is_empty()))
                .map_err(|(t, e)| ApiError::validation("tags", format!("tag {t:?}: {e}")))?
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        let scope = match q.org {
            None if q.project.is_some() => return Err(ApiError::validation("project", "a project needs its org")),
            None => token.scope.clone(),
            Some(org) => Scope::new(token.scope.account_id().clone(), Some(org), q.project)
                .map_err(|e| ApiError::validation("project", e.to_string()))?,
        };
        if !token.scope.contains(&scope) {
            return Err(ApiError::validation(
                "org",
                format!("the token belongs to {}, which does not contain {scope}", token.scope),
            ));
        }
        let manager = crate::http::serve::base_url(
            settings.public_url.as_deref(),
            transport.unwrap_or(Transport::Plain),
            headers,
            "http",
        );
        let version = env!("CARGO_PKG_VERSION");
        let image = match flavour {
            ImageFlavour::Minimal => format!("{}:{version}", settings.delegate_image),
            ImageFlavour::Full => format!("{}:{version}-full", settings.delegate_image),
        };
        Ok(Spec {
            format: q.format.unwrap_or_default(),
            name: q.name.unwrap_or_else(|| token.name.clone()),
            replicas,
            flavour,
            tags,
            capacity,
            scope,
            manager,
            image,
            new_token: q.new_token.unwrap_or(false),
        })
    }

    /// The delegate's command line (after the program name).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--manager".to_owned(),
            self.manager.clone(),
            "--name".to_owned(),
            self.name.to_string(),
            "--capacity".to_owned(),
            self.capacity.to_string(),
            "--flavour".to_owned(),
            self.flavour.as_str().to_owned(),
            "--drain-timeout".to_owned(),
            format!("{DRAIN_SECS}s"),
            "--health-listen".to_owned(),
            format!("0.0.0.0:{HEALTH_PORT}"),
        ];
        if !self.tags.is_empty() {
            args.push("--tags".to_owned());
            args.push(self.tags.join(","));
        }
        // Narrower than the token's scope, or the same: either way what it registers in.
        if let Some(org) = self.scope.org() {
            args.extend(["--org".to_owned(), org.to_string()]);
        }
        if let Some(project) = self.scope.project() {
            args.extend(["--project".to_owned(), project.to_string()]);
        }
        args
    }

    /// Requests and limits from the size table (2 GiB, 0.5 CPU per 10 tasks).
    pub fn resources(&self) -> (u64, u64) {
        let memory_mib = (u64::from(self.capacity) * 2048).div_ceil(10).max(256);
        let cpu_milli = (u64::from(self.capacity) * 50).max(100);
        (memory_mib, cpu_milli)
    }

    fn secret_name(&self) -> String {
        format!("{}-token", self.name)
    }

    fn render(&self, token_id: TokenId, minted: Option<Secret>) -> InstallFile {
        let (filename, content, instructions) = match self.format {
            InstallFormat::Kubernetes => self.kubernetes(minted.as_ref()),
            InstallFormat::Compose => self.compose(minted.as_ref()),
            InstallFormat::Systemd => self.systemd(minted.as_ref()),
        };
        InstallFile {
            format: self.format,
            filename,
            content,
            token_id,
            token: minted,
            instructions,
        }
    }

    fn kubernetes(&self, minted: Option<&Secret>) -> (String, String, Vec<String>) {
        let (memory, cpu) = self.resources();
        let labels =
            json!({"app.kubernetes.io/name": "switchboard-delegate", "switchboard.dev/delegate": self.name.as_str()});
        let probe = |initial: u64| {
            json!({
                "httpGet": {"path": "/healthz", "port": HEALTH_PORT},
                "initialDelaySeconds": initial, "periodSeconds": 10, "failureThreshold": 3
            })
        };
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.name.as_str(), "labels": labels},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": {"switchboard.dev/delegate": self.name.as_str()}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": GRACE_SECS,
                        "containers": [{
                            "name": "delegate",
                            "image": self.image,
                            "args": self.args(),
                            "env": [{
                                "name": "SWITCHBOARD_TOKEN",
                                "valueFrom": {"secretKeyRef": {"name": self.secret_name(), "key": "token"}}
                            }],
                            "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
                            "resources": {
                                "requests": {"memory": format!("{memory}Mi"), "cpu": format!("{cpu}m")},
                                "limits": {"memory": format!("{memory}Mi"), "cpu": format!("{}m", cpu * 2)}
                            },
                            "livenessProbe": probe(10),
                            "readinessProbe": probe(2)
                        }]
                    }
                }
            }
        });
        let mut items = Vec::new();
        let mut instructions = Vec::new();
        match minted {
            Some(secret) => items.push(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": self.secret_name(), "labels": labels},
                "type": "Opaque",
                "stringData": {"token": secret.expose()}
            })),
            None => instructions.push(format!(
                "kubectl create secret generic {} --from-literal=token=<the token's secret, shown when it was created>",
                self.secret_name()
            )),
        }
        items.push(deployment);
        instructions.push("kubectl apply -f delegate.yaml".to_owned());
        instructions.push(format!("kubectl rollout status deployment/{}", self.name));
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        ("delegate.yaml".to_owned(), pretty(&list), instructions)
    }

    fn compose(&self, minted: Option<&Secret>) -> (String, String, Vec<String>) {
        let (memory, cpu) = self.resources();
        let mut instructions = Vec::new();
        let token = match minted {
            Some(secret) => secret.expose().to_owned(),
            None => {
                instructions
                    .push("echo 'SWITCHBOARD_TOKEN=<the token's secret, shown when it was created>' > .env".to_owned());
                "${SWITCHBOARD_TOKEN:?set SWITCHBOARD_TOKEN to the delegate token}".to_owned()
            }
        };
        let service = json!({
            "image": self.image,
            "command": self.args(),
            "environment": {"SWITCHBOARD_TOKEN": token},
            "restart": "unless-stopped",
            "stop_signal": "SIGTERM",
            "stop_grace_period": format!("{GRACE_SECS}s"),
            "deploy": {
                "replicas": self.replicas,
                "resources": {
                    "reservations": {"memory": format!("{memory}M"), "cpus": format!("{:.2}", cpu as f64 / 1000.0)},
                    "limits": {"memory": format!("{memory}M"), "cpus": format!("{:.2}", cpu as f64 * 2.0 / 1000.0)}
                }
            }
        });
        let file = json!({"services": {self.name.as_str(): service}});
        instructions.push("docker compose -f delegate.compose.yaml up -d".to_owned());
        ("delegate.compose.yaml".to_owned(), pretty(&file), instructions)
    }

    fn systemd(&self, minted: Option<&Secret>) -> (String, String, Vec<String>) {
        let env_file = format!("/etc/switchboard/{}.env", self.name);
        let args: Vec<String> = self.args().iter().map(|a| quote(a)).collect();
        let unit = format!(
            "[Unit]\n\
             Description=Switchboard delegate {name}\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             ExecStart=/usr/local/bin/switchboard-delegate {args}\n\
             EnvironmentFile={env_file}\n\
             DynamicUser=yes\n\
             StateDirectory=switchboard-{name}\n\
             WorkingDirectory=/var/lib/switchboard-{name}\n\
             Restart=always\n\
             RestartSec=5\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec={GRACE_SECS}\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            name = self.name,
            args = args.join(" "),
        );
        let secret = minted.map_or("<the token's secret, shown when it was created>", Secret::expose);
        let instructions = vec![
            format!(
                "install -d -m 700 /etc/switchboard && (umask 077; echo 'SWITCHBOARD_TOKEN={secret}' > {env_file})"
            ),
            format!("cp switchboard-delegate-{}.service /etc/systemd/system/", self.name),
            format!(
                "systemctl daemon-reload && systemctl enable --now switchboard-delegate-{}",
                self.name
            ),
        ];
        (
            format!("switchboard-delegate-{}.service", self.name),
            unit,
            instructions,
        )
    }
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// A systemd command-line word: quoted when it holds anything but plain characters.
fn quote(word: &str) -> String {
    if word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c)) {
        word.to_owned()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(capacity: u32) -> Spec {
        Spec {
            format: InstallFormat::Kubernetes,
            name: Ident::parse("builder").unwrap(),
            replicas: 3,
            flavour: ImageFlavour::Minimal,
            tags: vec!["gpu".into()],
            capacity,
            scope: Scope::parse_path("acme/eng").unwrap(),
            manager: "https://sb.example.com".into(),
            image: "ghcr.io/x/delegate:1".into(),
            new_token: false,
        }
    }

    #[test]
    fn resources_follow_the_size_table_scaled_by_capacity() {
        assert_eq!(spec(10).resources(), (2048, 500));
        assert_eq!(spec(20).resources(), (4096, 1000));
        assert_eq!(spec(1).resources(), (256, 100));
    }

    #[test]
    fn the_command_line_carries_the_scope_tags_and_health_port() {
        let args = spec(10).args().join(" ");
        assert!(
            args.contains("--manager https://sb.example.com --name builder --capacity 10"),
            "{args}"
        );
        assert!(
            args.contains("--health-listen 0.0.0.0:8081") && args.contains("--tags gpu"),
            "{args}"
        );
        assert!(args.contains("--org eng") && !args.contains("--project"), "{args}");
        assert_eq!(quote("a b\"c"), "\"a b\\\"c\"");
        assert_eq!(quote("--tags=a,b"), "--tags=a,b");
    }
}
