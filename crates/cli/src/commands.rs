//! Runs the operator commands against a manager through `switchboard-client`, prints the
//! answers (tables, or the API's JSON with `--output json`) and maps failures to the
//! documented exit codes: 1 refused (4xx), 3 unreachable or failing (5xx).

use serde::Serialize;
use switchboard_client::{Client, ClientError, LogEvent, ScopeFilter, TaskFilter, Tls};
use switchboard_domain::Secret;
use switchboard_domain::TaskState;
use switchboard_domain::tasklog::{self, LogChunk, LogPosition};
use switchboard_domain::vault::SecretReference;
use switchboard_protocol::connectors::{ConnectorView, CreateConnector, UpdateConnector};
use switchboard_protocol::fleet::{DeclareDelegate, DelegateView, MintJit, PauseRequest};
use switchboard_protocol::keys::{ApiKeyView, CreateApiKey};
use switchboard_protocol::policies::{ScopePolicyView, SetScopePolicy};
use switchboard_protocol::secrets::{CreateSecret, ReplaceSecret, SecretView};
use switchboard_protocol::tasks::{SubmitTask, TaskView};
use switchboard_protocol::tokens::{CreateToken, TokenView};

use super::table::{Table, fields, label, list, opt, scope};
use super::{
    Command, Connection, ConnectorsCommand, DelegatesCommand, KeysCommand, Output, PoliciesCommand, SecretSourceArgs,
    SecretsCommand, TaskArgs, TasksCommand, TokensCommand,
};

/// The manager refused the request (a 4xx answer).
pub const EXIT_REFUSED: u8 = 1;
/// The command line cannot work as given (clap's own code, and an unusable `--ca-cert`).
pub const EXIT_USAGE: u8 = 2;
/// The manager could not be reached, or failed (a 5xx answer).
pub const EXIT_UNREACHABLE: u8 = 3;
/// `tasks submit --wait`: the task ended, but not `succeeded`.
pub const EXIT_TASK_UNSUCCESSFUL: u8 = 4;

/// A failed command: the line for stderr (without `error: `) and the exit code.
struct Failed {
    code: u8,
    message: String,
}

impl Failed {
    fn from_client(error: ClientError, url: &str) -> Self {
        match error {
            ClientError::Api(p) => Self {
                code: if p.status >= 500 {
                    EXIT_UNREACHABLE
                } else {
                    EXIT_REFUSED
                },
                message: match p.detail.filter(|d| !d.is_empty()) {
                    Some(detail) => format!("{}: {detail}", p.title),
                    None => p.title,
                },
            },
            ClientError::Unexpected { status, .. } => Self {
                code: if status >= 500 { EXIT_UNREACHABLE } else { EXIT_REFUSED },
                message: format!("unexpected answer from the manager at {url} (HTTP {status})"),
            },
            ClientError::Transport(e) => {
                // The innermost cause reads best ("Connection refused").
                let mut cause: &dyn std::error::Error = &e;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                let hint = if switchboard_client::tls::is_certificate_error(&e) {
                    "; if the manager's certificate comes from a private CA, pass that CA with --ca-cert"
                } else {
                    ""
                };
                Self {
                    code: EXIT_UNREACHABLE,
                    message: format!("cannot reach the manager at {url}: {cause}{hint}"),
                }
            }
            ClientError::Closed => Self {
                code: EXIT_UNREACHABLE,
                message: "the connection to the manager was closed".to_owned(),
            },
        }
    }
}

/// Runs one operator command (anything but `serve`) and answers its exit code.
pub fn operate(connection: &Connection, command: Command) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_UNREACHABLE;
        }
    };
    let tls = match Tls::from_ca_file(connection.ca_cert.as_deref()) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let key = connection.api_key().map(|k| k.expose().to_owned());
    let client = match Client::with_tls(connection.url.clone(), key, &tls) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {}", Failed::from_client(e, &connection.url).message);
            return EXIT_UNREACHABLE;
        }
    };
    let out = Printer(connection.output);
    let result = runtime.block_on(async {
        wait_for_manager(&client, connection.wait_for_manager).await;
        match command {
            Command::Tokens(c) => tokens(&client, out, c).await.map(|()| Done::Ok),
            Command::Delegates(c) => delegates(&client, out, c).await.map(|()| Done::Ok),
            Command::Connectors(c) => connectors(&client, out, c).await.map(|()| Done::Ok),
            Command::Secrets(c) => secrets(&client, out, c).await,
            Command::Policies(c) => policies(&client, out, c).await.map(|()| Done::Ok),
            Command::Tasks(c) => tasks(&client, out, *c).await,
            Command::Keys(c) => keys(&client, out, c).await.map(|()| Done::Ok),
            Command::Queue {
                account,
                org,
                project,
                task_type,
                connector,
            } => {
                let filter = TaskFilter {
                    account,
                    org,
                    project,
                    task_type,
                    connector,
                    ..TaskFilter::default()
                };
                queue(&client, out, &filter).await.map(|()| Done::Ok)
            }
        }
    });
    match result {
        Ok(Done::Ok) => 0,
        Ok(Done::TaskUnsuccessful) => EXIT_TASK_UNSUCCESSFUL,
        Ok(Done::Usage(why)) => {
            eprintln!("error: {why}");
            EXIT_USAGE
        }
        Err(e) => {
            let failed = Failed::from_client(e, &connection.url);
            eprintln!("error: {}", failed.message.replace('\n', " "));
            failed.code
        }
    }
}

/// How a command that ran to its end went.
enum Done {
    Ok,
    /// `tasks submit --wait` saw the task end in another state than `succeeded`.
    TaskUnsuccessful,
    /// The command line cannot work as given (found only once it ran: a value file that
    /// cannot be read, a reference that does not parse).
    Usage(String),
}

/// Waits up to `patience` for the manager to accept connections (it may be starting, as
/// in `switchboard serve & switchboard tokens create ...`). Only a refused connection is
/// waited out; whatever else happens is left to the command itself to report.
async fn wait_for_manager(client: &Client, patience: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = std::time::Duration::from_millis(20);
    loop {
        match client.healthy().await {
            Err(ClientError::Transport(e)) if refused(&e) && tokio::time::Instant::now() + delay < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_millis(500));
            }
            _ => return,
        }
    }
}

/// Whether the connection was refused: nothing listens yet. Not a certificate the CLI
/// does not trust, nor a name that does not resolve: waiting does not fix those.
fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cause = e.source();
    }
    false
}

/// Prints an answer as a table (with `table`) or as the API's JSON.
#[derive(Debug, Clone, Copy)]
struct Printer(Output);

impl Printer {
    fn show<T: Serialize>(self, value: &T, table: impl FnOnce(&T)) {
        match self.0 {
            Output::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
            Output::Table => table(value),
        }
    }

    /// For answers without a body: a line for people, nothing for scripts.
    fn done(self, message: &str) {
        if self.0 == Output::Table {
            println!("{message}");
        }
    }
}

async fn tokens(client: &Client, out: Printer, command: TokensCommand) -> Result<(), ClientError> {
    match command {
        TokensCommand::Create { name, scope, quiet } => {
            let body = CreateToken {
                name,
                account: scope.account,
                org: scope.org,
                project: scope.project,
            };
            let created = client.create_token(&body).await?;
            if quiet {
                println!("{}", created.token.expose());
                return Ok(());
            }
            out.show(&created, |c| {
                token_table(std::slice::from_ref(&c.view));
                println!("\ntoken: {}", c.token.expose());
                println!("Keep the token now: it is not shown again.");
            });
        }
        TokensCommand::List => out.show(&client.list_tokens().await?, |l| token_table(&l.items)),
        TokensCommand::Get { id } => out.show(&client.get_token(&id).await?, |t| token_table(std::slice::from_ref(t))),
        TokensCommand::Revoke { id } => {
            out.show(&client.revoke_token(&id).await?, |t| {
                token_table(std::slice::from_ref(t))
            });
        }
        TokensCommand::Install {
            id,
            format,
            name,
            replicas,
            flavour,
            tags,
            capacity,
            org,
            project,
            new_token,
        } => {
            let mut query = vec![("format", format)];
            let optional = [
                ("name", name),
                ("flavour", flavour),
                ("tags", tags),
                ("org", org),
                ("project", project),
            ];
            query.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            query.extend(replicas.map(|r| ("replicas", r.to_string())));
            query.extend(capacity.map(|c| ("capacity", c.to_string())));
            if new_token {
                query.push(("new_token", "true".to_owned()));
            }
            let file = client.install_file(&id, &query).await?;
            if out.0 == Output::Json {
                out.show(&file, |_| {});
                return Ok(());
            }
            // The file alone on stdout, so `> delegate.yaml` keeps just it.
            print!("{}", file.content);
            if let Some(token) = &file.token {
                eprintln!(
                    "a new token was minted for this install ({}): {}",
                    file.token_id,
                    token.expose()
                );
                eprintln!("it is in the file; keep the file as you would the token.");
            }
            eprintln!("to install ({}):", file.filename);
            for step in &file.instructions {
                eprintln!("  {step}");
            }
        }
    }
    Ok(())
}

async fn keys(client: &Client, out: Printer, command: KeysCommand) -> Result<(), ClientError> {
    match command {
        KeysCommand::Create {
            name,
            scope,
            permissions,
            quiet,
        } => {
            let body = CreateApiKey {
                name,
                account: scope.account,
                org: scope.org,
                project: scope.project,
                permissions: permissions.into_iter().collect(),
            };
            let created = client.create_api_key(&body).await?;
            if quiet {
                println!("{}", created.key.expose());
                return Ok(());
            }
            out.show(&created, |c| {
                key_table(std::slice::from_ref(&c.view));
                println!("\nkey: {}", c.key.expose());
                println!("Keep the key now: it is not shown again.");
            });
        }
        KeysCommand::List => out.show(&client.list_api_keys().await?, |l| key_table(&l.items)),
        KeysCommand::Revoke { id } => out.show(&client.revoke_api_key(&id).await?, |k| {
            key_table(std::slice::from_ref(k))
        }),
    }
    Ok(())
}

fn key_table(keys: &[ApiKeyView]) {
    let mut t = Table::new(&["ID", "NAME", "SCOPE", "PERMISSIONS", "REVOKED"]);
    for key in keys {
        t.row(vec![
            key.id.to_string(),
            key.name.to_string(),
            scope(&key.account, key.org.as_ref(), key.project.as_ref()),
            list(key.permissions.iter().map(|p| p.as_str())),
            opt(key
                .revoked_at
                .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                .as_ref()),
        ]);
    }
    t.print();
}

fn token_table(tokens: &[TokenView]) {
    let mut t = Table::new(&["ID", "NAME", "SCOPE", "STATUS", "CREATED"]);
    for token in tokens {
        t.row(vec![
            token.id.to_string(),
            token.name.to_string(),
            scope(&token.account, token.org.as_ref(), token.project.as_ref()),
            label(&token.status),
            token.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    t.print();
}

async fn delegates(client: &Client, out: Printer, command: DelegatesCommand) -> Result<(), ClientError> {
    match command {
        DelegatesCommand::List => out.show(&client.list_delegates().await?, |l| delegate_table(&l.items)),
        DelegatesCommand::Declare {
            name,
            scope,
            tags,
            task_types,
            max_instances,
        } => {
            let body = DeclareDelegate {
                name,
                account: scope.account,
                org: scope.org,
                project: scope.project,
                tags,
                task_types,
                max_instances,
            };
            out.show(&client.declare_delegate(&body).await?, delegate_detail);
        }
        DelegatesCommand::Show { id } => out.show(&client.get_delegate(&id).await?, delegate_detail),
        DelegatesCommand::Tag { id, tags } => out.show(&client.set_delegate_tags(&id, tags).await?, delegate_detail),
        DelegatesCommand::Disable { id } => out.show(&client.disable_delegate(&id).await?, delegate_detail),
        DelegatesCommand::Enable { id } => out.show(&client.enable_delegate(&id).await?, delegate_detail),
        DelegatesCommand::Delete { id } => {
            client.delete_delegate(&id).await?;
            out.done(&format!("deleted delegate {id}"));
        }
        DelegatesCommand::Pause {
            id,
            instance,
            note,
            duration,
            until,
        } => {
            let body = PauseRequest { note, until, duration };
            out.show(&client.pause(&id, instance.as_deref(), &body).await?, delegate_detail);
        }
        DelegatesCommand::Resume { id, instance } => {
            out.show(&client.resume(&id, instance.as_deref()).await?, delegate_detail);
        }
        DelegatesCommand::Jit { id, expires_in } => {
            let credential = client.mint_jit(&id, &MintJit { expires_in }).await?;
            out.show(&credential, |c| {
                print!(
                    "{}",
                    fields(&[
                        ("id", c.id.to_string()),
                        ("delegate", format!("{} ({})", c.name, c.group_id)),
                        ("expires", c.expires_at.to_rfc3339()),
                        ("token", c.token.expose().to_owned()),
                        ("jit config", c.jit_config.clone()),
                    ])
                );
                println!("shown once: start the delegate with --jit-config <jit config>");
            });
        }
    }
    Ok(())
}

async fn queue(client: &Client, out: Printer, filter: &TaskFilter) -> Result<(), ClientError> {
    out.show(&client.queue(filter).await?, |q| {
        println!("{}", q.summary);
        if q.reasons.is_empty() {
            return;
        }
        println!();
        let mut t = Table::new(&["REASON", "TASKS", "OLDEST", "DELEGATES", "WHAT", "SAMPLE"]);
        for r in &q.reasons {
            t.row(vec![
                r.reason.clone(),
                r.tasks.to_string(),
                format!("{}s", r.oldest_queued_age_ms / 1000),
                if r.delegates.is_empty() {
                    "-".to_owned()
                } else {
                    list(&r.delegates)
                },
                r.line.clone(),
                r.sample_task_ids.first().map_or_else(String::new, ToString::to_string),
            ]);
        }
        t.print();
    });
    Ok(())
}

fn delegate_table(groups: &[DelegateView]) {
    let mut t = Table::new(&["ID", "NAME", "SCOPE", "TAGS", "DISABLED", "INSTANCES", "CONNECTED"]);
    for g in groups {
        let connected = g.instances.iter().filter(|i| label(&i.state) == "connected").count();
        t.row(vec![
            g.id.to_string(),
            g.name.to_string(),
            scope(&g.account, g.org.as_ref(), g.project.as_ref()),
            list(&g.tags),
            if g.disabled { "yes" } else { "no" }.to_owned(),
            g.instances.len().to_string(),
            connected.to_string(),
        ]);
    }
    t.print();
}

/// `no`, or `since ... until ...: note`.
fn pause_line(pause: Option<&switchboard_domain::Pause>) -> String {
    match pause {
        None => "no".to_owned(),
        Some(p) => {
            let until = p
                .until
                .map_or_else(|| "until resumed".to_owned(), |u| format!("until {}", u.to_rfc3339()));
            format!("paused {until}: {}", p.note)
        }
    }
}

fn delegate_detail(g: &DelegateView) {
    print!(
        "{}",
        fields(&[
            ("id", g.id.to_string()),
            ("name", g.name.to_string()),
            ("scope", scope(&g.account, g.org.as_ref(), g.project.as_ref())),
            ("tags", list(&g.tags)),
            ("disabled", if g.disabled { "yes" } else { "no" }.to_owned()),
            ("paused", pause_line(g.paused.as_ref())),
            (
                "declared",
                match &g.declared {
                    None => "no".to_owned(),
                    Some(d) => format!(
                        "yes: types {}, at most {} instances",
                        if d.task_types.is_empty() {
                            "any".to_owned()
                        } else {
                            list(&d.task_types)
                        },
                        d.max_instances
                            .map_or_else(|| "any number of".to_owned(), |n| n.to_string())
                    ),
                },
            ),
            ("created", g.created_at.to_rfc3339()),
        ])
    );
    println!();
    let mut t = Table::new(&[
        "INSTANCE",
        "HOSTNAME",
        "STATE",
        "TAKING",
        "HEARTBEAT",
        "LOAD",
        "VERSION",
        "FLAVOUR",
        "TOKEN",
    ]);
    for i in &g.instances {
        let taking = if i.draining {
            "no: draining".to_owned()
        } else if i.max_tasks.is_some_and(|m| i.tasks_taken >= m) {
            "no: single-use, done".to_owned()
        } else if let Some(p) = &i.paused {
            format!("no: {}", pause_line(Some(p)))
        } else if !i.accepting {
            "no: its delegate is paused or disabled".to_owned()
        } else {
            "yes".to_owned()
        };
        t.row(vec![
            i.id.to_string(),
            i.hostname.clone(),
            label(&i.state),
            taking,
            format!("{}s ago", i.heartbeat_age_ms / 1000),
            format!("{}/{}", i.load, i.capacity),
            i.version.clone(),
            label(&i.flavour),
            i.token_name
                .as_ref()
                .map_or_else(|| i.token_id.to_string(), ToString::to_string),
        ]);
    }
    t.print();
}

async fn connectors(client: &Client, out: Printer, command: ConnectorsCommand) -> Result<(), ClientError> {
    match command {
        ConnectorsCommand::Create { name, scope, selectors } => {
            let body = CreateConnector {
                name,
                account: scope.account,
                org: scope.org,
                project: scope.project,
                selectors,
            };
            out.show(&client.create_connector(&body).await?, |c| {
                connector_table(std::slice::from_ref(c));
            });
        }
        ConnectorsCommand::List { account, org, project } => {
            let filter = ScopeFilter { account, org, project };
            out.show(&client.list_connectors(&filter).await?, |l| connector_table(&l.items));
        }
        ConnectorsCommand::Get { id } => {
            out.show(&client.get_connector(&id).await?, |c| {
                connector_table(std::slice::from_ref(c))
            });
        }
        ConnectorsCommand::Update { id, name, selectors } => {
            let body = UpdateConnector { name, selectors };
            out.show(&client.update_connector(&id, &body).await?, |c| {
                connector_table(std::slice::from_ref(c));
            });
        }
        ConnectorsCommand::Delete { id } => {
            client.delete_connector(&id).await?;
            out.done(&format!("deleted connector {id}"));
        }
    }
    Ok(())
}

async fn secrets(client: &Client, out: Printer, command: SecretsCommand) -> Result<Done, ClientError> {
    match command {
        SecretsCommand::Create {
            name,
            scope,
            source,
            description,
        } => {
            let (value, reference) = match secret_source(source) {
                Ok(source) => source,
                Err(why) => return Ok(Done::Usage(why)),
            };
            let body = CreateSecret {
                name,
                account: scope.account,
                org: scope.org,
                project: scope.project,
                value,
                reference,
                description,
            };
            out.show(&client.create_secret(&body).await?, |s| {
                secret_table(std::slice::from_ref(s))
            });
        }
        SecretsCommand::List { account, org, project } => {
            let filter = ScopeFilter { account, org, project };
            out.show(&client.list_secrets(&filter).await?, |l| secret_table(&l.items));
        }
        SecretsCommand::Get { id } => {
            out.show(&client.get_secret(&id).await?, |s| {
                secret_table(std::slice::from_ref(s))
            });
        }
        SecretsCommand::Replace {
            id,
            source,
            description,
        } => {
            let (value, reference) = match secret_source(source) {
                Ok(source) => source,
                Err(why) => return Ok(Done::Usage(why)),
            };
            let body = ReplaceSecret {
                value,
                reference,
                description,
            };
            out.show(&client.replace_secret(&id, &body).await?, |s| {
                secret_table(std::slice::from_ref(s));
            });
        }
        SecretsCommand::Delete { id } => {
            client.delete_secret(&id).await?;
            out.done(&format!("deleted secret {id}"));
        }
    }
    Ok(Done::Ok)
}

/// The value (read from its file or stdin) or the reference the arguments give. A
/// reference that does not parse, or an unreadable file, is the usage error it is.
fn secret_source(source: SecretSourceArgs) -> Result<(Option<Secret>, Option<SecretReference>), String> {
    if let Some(reference) = source.reference {
        let reference = SecretReference::parse(&reference).map_err(|e| format!("--reference: {e}"))?;
        return Ok((None, Some(reference)));
    }
    let Some(path) = source.value_file else {
        return Err("give --value-file PATH (or -) or --reference".into());
    };
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| ())
    } else {
        std::fs::read_to_string(&path).map(|t| text = t)
    };
    read.map_err(|e| format!("cannot read the value from {}: {e}", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok((Some(Secret::presented(text)), None))
}

fn secret_table(secrets: &[SecretView]) {
    let mut t = Table::new(&["ID", "NAME", "SCOPE", "KIND", "VERSION", "UPDATED", "DESCRIPTION"]);
    for s in secrets {
        let kind = match &s.reference {
            Some(r) => format!("reference {r}"),
            None => "value".to_owned(),
        };
        t.row(vec![
            s.id.to_string(),
            s.name.to_string(),
            scope(&s.account, s.org.as_ref(), s.project.as_ref()),
            kind,
            s.version.to_string(),
            s.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            s.description.clone(),
        ]);
    }
    t.print();
}

async fn policies(client: &Client, out: Printer, command: PoliciesCommand) -> Result<(), ClientError> {
    match command {
        PoliciesCommand::Set { scope, weight, retry } => {
            let body = SetScopePolicy {
                account: scope.account,
                org: scope.org,
                project: scope.project,
                weight,
                retry,
            };
            out.show(&client.set_scope_policy(&body).await?, |p| {
                policy_table(std::slice::from_ref(p));
            });
        }
        PoliciesCommand::List { account, org, project } => {
            let filter = ScopeFilter { account, org, project };
            out.show(&client.scope_policies(&filter).await?, |l| policy_table(&l.items));
        }
        PoliciesCommand::Delete { scope } => {
            let filter = ScopeFilter {
                account: Some(scope.account.to_string()),
                org: scope.org.map(|o| o.to_string()),
                project: scope.project.map(|p| p.to_string()),
            };
            client.delete_scope_policy(&filter).await?;
            out.done("deleted the scope policy");
        }
    }
    Ok(())
}

fn policy_table(policies: &[ScopePolicyView]) {
    let mut t = Table::new(&["SCOPE", "WEIGHT", "RETRY", "UPDATED"]);
    for p in policies {
        let weight = if p.weight_set {
            p.weight.to_string()
        } else {
            format!("{} (default)", p.weight)
        };
        t.row(vec![
            scope(&p.account, p.org.as_ref(), p.project.as_ref()),
            weight,
            p.retry.as_ref().map_or_else(|| "-".to_owned(), retry_line),
            p.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    t.print();
}

fn connector_table(connectors: &[ConnectorView]) {
    let mut t = Table::new(&["ID", "NAME", "SCOPE", "SELECTORS", "UPDATED"]);
    for c in connectors {
        t.row(vec![
            c.id.to_string(),
            c.name.to_string(),
            scope(&c.account, c.org.as_ref(), c.project.as_ref()),
            list(&c.selectors),
            c.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    t.print();
}

fn submission(task: TaskArgs) -> SubmitTask {
    SubmitTask {
        account: task.scope.account,
        org: task.scope.org,
        project: task.scope.project,
        task_type: task.task_type,
        payload: task.payload.unwrap_or(serde_json::Value::Null),
        selectors: task.selectors,
        connector: task.connector,
        capabilities: task.capabilities,
        priority: task.priority,
        assign_timeout_ms: task.assign_timeout_ms,
        execution_timeout_ms: task.execution_timeout_ms,
        max_attempts: task.max_attempts,
        wait_for_delegate: task.wait_for_delegate,
        concurrency_key: task.concurrency_key,
        concurrency_limit: task.concurrency_limit,
        concurrency_strategy: task.concurrency_strategy,
        retry: task.retry,
        secrets: task.secrets,
    }
}

/// How long each long poll of `tasks watch` and `tasks submit --wait` waits by default:
/// the server's own default. The server lets a long poll run past `request_timeout`.
pub(super) const DEFAULT_POLL_MS: u64 = switchboard_protocol::tasks::WAIT_DEFAULT_MS;

/// Prints each state of task `id` until it ends (JSON lines with `--output json`); answers
/// the task as it ended.
async fn watch(client: &Client, out: Printer, id: &str, poll_ms: u64) -> Result<TaskView, ClientError> {
    let mut seen: Option<TaskState> = None;
    loop {
        let task = client.wait_task(id, seen, poll_ms).await?;
        if seen != Some(task.state) {
            match out.0 {
                // One JSON document per line, so a script can read them as they come.
                Output::Json => println!("{}", serde_json::to_string(&task).unwrap_or_default()),
                Output::Table => println!("{}  {}", task.updated_at.format("%H:%M:%S%.3f"), task.state),
            }
            seen = Some(task.state);
        }
        if task.state.is_terminal() {
            return Ok(task);
        }
    }
}

/// Prints a task's log: as text (a line where output was cut, and a line between
/// attempts), or with `--output json` one chunk per line. Pages through what is stored;
/// with `follow`, goes on with each chunk as it is stored until the task ends.
async fn task_logs(client: &Client, out: Printer, id: &str, follow: bool) -> Result<(), ClientError> {
    use std::io::Write as _;
    let mut attempt = None;
    let mut print = |chunk: &LogChunk| {
        let mut stdout = std::io::stdout().lock();
        if out.0 == Output::Json {
            let _ = writeln!(stdout, "{}", serde_json::to_string(chunk).unwrap_or_default());
            return;
        }
        if attempt.is_some_and(|a| a != chunk.at.attempt) {
            let _ = writeln!(stdout, "--- attempt {} ---", chunk.at.attempt);
        }
        attempt = Some(chunk.at.attempt);
        match chunk.cut_bytes {
            Some(bytes) => {
                let _ = write!(stdout, "{}", tasklog::cut_line(bytes));
            }
            None => {
                let _ = write!(stdout, "{}", chunk.text);
            }
        }
        let _ = stdout.flush();
    };
    if follow {
        let mut follower = client.follow_task_logs(id, LogPosition::default());
        while let Some(event) = follower.next().await? {
            if let LogEvent::Chunk(chunk) = event {
                print(&chunk);
            }
        }
        return Ok(());
    }
    let mut from = LogPosition::default();
    loop {
        let page = client.task_logs(id, from, None).await?;
        page.chunks.iter().for_each(&mut print);
        if page.chunks.is_empty() {
            return Ok(());
        }
        from = page.next;
    }
}

async fn tasks(client: &Client, out: Printer, command: TasksCommand) -> Result<Done, ClientError> {
    match command {
        TasksCommand::Submit {
            task,
            idempotency_key,
            wait,
        } => {
            let submitted = client
                .submit_task(&submission(task), idempotency_key.as_deref())
                .await?;
            if wait {
                let last = watch(client, out, &submitted.task.id.to_string(), DEFAULT_POLL_MS).await?;
                if last.state != TaskState::Succeeded {
                    return Ok(Done::TaskUnsuccessful);
                }
                return Ok(Done::Ok);
            }
            out.show(&submitted, |s| {
                task_detail(&s.task);
                if let Some(why) = &s.explanation {
                    println!("explanation: {why}");
                }
            });
        }
        TasksCommand::Get { id } => out.show(&client.get_task(&id).await?, task_detail),
        TasksCommand::List {
            account,
            org,
            project,
            state,
            task_type,
            connector,
            before,
            limit,
        } => {
            let filter = TaskFilter {
                account,
                org,
                project,
                state,
                task_type,
                connector,
                before,
                limit,
            };
            out.show(&client.list_tasks(&filter).await?, |page| {
                task_table(&page.items);
                if let Some(next) = page.next {
                    println!("\nmore: --before {next}");
                }
            });
        }
        TasksCommand::Watch { id, poll_ms } => {
            watch(client, out, &id, poll_ms).await?;
        }
        TasksCommand::Explain { task } => {
            out.show(&client.explain_task(&submission(task)).await?, |answer| {
                let why = answer["explanation"].as_str().unwrap_or("-");
                println!("explanation: {why}");
                println!("(--output json shows every delegate considered and each verdict)");
            });
        }
        TasksCommand::Cancel { id } => out.show(&client.cancel_task(&id).await?, task_detail),
        TasksCommand::Attempts { id } => {
            out.show(&client.task_attempts(&id).await?, |answer| {
                let mut t = Table::new(&[
                    "ATTEMPT", "INSTANCE", "ASSIGNED", "ACQUIRED", "ENDED", "OUTCOME", "WHY", "NEXT DUE",
                ]);
                let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
                for a in answer["items"].as_array().into_iter().flatten() {
                    let why = match &a["failure"] {
                        serde_json::Value::Null => "-".to_owned(),
                        f => {
                            let code = f["code"].as_str().map(|c| format!(" [{c}]")).unwrap_or_default();
                            format!("{}{code}: {}", text(&f["reason"]), text(&f["detail"]))
                        }
                    };
                    t.row(vec![
                        a["attempt"].to_string(),
                        text(&a["instance_id"]),
                        text(&a["assigned_at"]),
                        text(&a["acquired_at"]),
                        text(&a["ended_at"]),
                        text(&a["outcome"]),
                        why,
                        text(&a["retry_at"]),
                    ]);
                }
                t.print();
            });
        }
        TasksCommand::Logs { id, follow } => {
            task_logs(client, out, &id, follow).await?;
        }
        TasksCommand::Log { id } => {
            out.show(&client.selection_log(&id).await?, |log| {
                let mut t = Table::new(&["AT", "ATTEMPT", "KIND", "SUMMARY"]);
                for entry in log["items"].as_array().into_iter().flatten() {
                    t.row(vec![
                        entry["at"].as_str().unwrap_or("-").to_owned(),
                        entry["attempt"].to_string(),
                        entry["kind"].as_str().unwrap_or("-").to_owned(),
                        entry["summary"].as_str().unwrap_or("-").to_owned(),
                    ]);
                }
                t.print();
            });
        }
    }
    Ok(Done::Ok)
}

fn task_table(tasks: &[TaskView]) {
    let mut t = Table::new(&["ID", "TYPE", "STATE", "SCOPE", "PRIORITY", "INSTANCE", "CREATED"]);
    for task in tasks {
        t.row(vec![
            task.id.to_string(),
            task.task_type.to_string(),
            task.state.to_string(),
            scope(&task.account, task.org.as_ref(), task.project.as_ref()),
            task.priority.to_string(),
            opt(task.instance_id.as_ref()),
            task.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    t.print();
}

/// `on delegate_lost, failed [exit:137]; backoff 1s x2 up to 5m; another instance first`.
fn retry_line(r: &switchboard_protocol::tasks::RetryView) -> String {
    let on: Vec<String> =
        r.on.iter()
            .map(|e| {
                serde_json::to_value(e)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
    let codes = if r.error_codes.is_empty() {
        String::new()
    } else {
        format!(" [{}]", r.error_codes.join(", "))
    };
    let backoff = if r.initial_delay_ms == 0 {
        "at once".to_owned()
    } else {
        format!(
            "backoff {}ms x{} up to {}ms",
            r.initial_delay_ms, r.backoff_factor, r.max_delay_ms
        )
    };
    let instance = if r.prefer_different_instance {
        "another instance first"
    } else {
        "any instance"
    };
    format!("on {}{codes}; {backoff}; {instance}", on.join(", "))
}

fn task_detail(task: &TaskView) {
    let mut pairs = vec![
        ("id", task.id.to_string()),
        ("type", task.task_type.to_string()),
        ("state", task.state.to_string()),
        ("scope", scope(&task.account, task.org.as_ref(), task.project.as_ref())),
        ("attempt", task.attempt.to_string()),
        ("runs", format!("{}/{}", task.runs, task.max_attempts)),
        (
            "priority",
            match task.effective_priority {
                Some(effective) if effective != i64::from(task.priority) => {
                    format!("{} (effective {effective}: it has waited)", task.priority)
                }
                _ => task.priority.to_string(),
            },
        ),
        ("selectors", list(&task.selectors)),
        ("connector", opt(task.connector.as_ref())),
        ("instance", opt(task.instance_id.as_ref())),
        ("created", task.created_at.to_rfc3339()),
        ("updated", task.updated_at.to_rfc3339()),
    ];
    if let Some(key) = &task.concurrency_key {
        let strategy = task.concurrency_strategy.unwrap_or_default();
        let strategy = serde_json::to_value(strategy).unwrap_or_default();
        let limit = task.concurrency_limit.unwrap_or(1);
        pairs.push((
            "concurrency",
            format!("{key} (limit {limit}, {})", strategy.as_str().unwrap_or("keep_all")),
        ));
    }
    pairs.push(("retry", retry_line(&task.retry)));
    if let Some(at) = task.retry_at {
        pairs.push(("next attempt", format!("due at {}", at.to_rfc3339())));
    }
    if let Some(failure) = &task.failure {
        pairs.push(("failure", serde_json::to_string(failure).unwrap_or_default()));
    }
    if let Some(result) = &task.result {
        pairs.push(("result", result.to_string()));
    }
    print!("{}", fields(&pairs));
}
