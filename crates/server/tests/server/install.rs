//! Install files: the Kubernetes file parsed into the real API types (k8s-openapi) and
//! checked field by field, a minted token that registers, the other formats, and bad
//! input. (The Compose file is run for real by the reference delegate's tests.)

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret as K8sSecret;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use switchboard_protocol::delegate::RegisterRequest;

use super::support::{ADMIN_KEY, TestApp, problem, spawn_app};

async fn token(app: &TestApp, name: &str) -> Value {
    app.post(
        "/api/v1/delegate-tokens",
        Some(ADMIN_KEY),
        &json!({"name": name, "account": "acme"}),
    )
    .await
    .json()
    .await
    .unwrap()
}

async fn install(app: &TestApp, id: &str, query: &str) -> Value {
    let answer = app
        .get(
            &format!("/api/v1/delegate-tokens/{id}/install?{query}"),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

/// `value` as the API type `T`, and back: what does not survive the round trip (a field
/// the type does not have, a misspelt one) fails the check.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("not a valid object: {e}: {value}"));
    assert_eq!(
        &serde_json::to_value(&typed).unwrap(),
        value,
        "fields the API type does not know"
    );
    typed
}

#[tokio::test]
async fn the_kubernetes_file_is_real_api_objects_with_a_minted_token_that_registers() {
    let app = spawn_app().await;
    let created = token(&app, "ci").await;
    let id = created["id"].as_str().unwrap();
    let file = install(
        &app,
        id,
        "format=kubernetes&name=builders&replicas=3&capacity=20&tags=gpu,Linux&org=eng&flavour=full&new_token=true",
    )
    .await;
    assert_eq!(file["filename"], "delegate.yaml");
    let minted = file["token"].as_str().unwrap().to_owned();
    assert_ne!(file["token_id"], created["id"], "a new token");
    let list: Value = serde_json::from_str(file["content"].as_str().unwrap()).expect("JSON, which is YAML");
    assert_eq!(
        (list["apiVersion"].as_str(), list["kind"].as_str()),
        (Some("v1"), Some("List"))
    );
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);

    let secret: K8sSecret = typed(&items[0]);
    assert_eq!(secret.metadata.name.as_deref(), Some("builders-token"));
    assert_eq!(secret.string_data.as_ref().unwrap()["token"], minted);
    let deployment: Deployment = typed(&items[1]);
    assert_eq!(deployment.metadata.name.as_deref(), Some("builders"));
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let labels = spec.selector.match_labels.unwrap();
    assert_eq!(labels["switchboard.dev/delegate"], "builders");
    let template = spec.template;
    assert_eq!(
        template.metadata.unwrap().labels.unwrap()["switchboard.dev/delegate"],
        "builders"
    );
    let pod = template.spec.unwrap();
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(630),
        "the drain, and a margin"
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(
            format!(
                "ghcr.io/switchboard-dev/switchboard-delegate:{}-full",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        )
    );
    let args = container.args.clone().unwrap().join(" ");
    assert!(args.contains(&format!("--manager {}", app.url(""))), "{args}");
    for part in [
        "--name builders",
        "--capacity 20",
        "--flavour full",
        "--tags gpu,linux",
        "--org eng",
        "--health-listen 0.0.0.0:8081",
        "--drain-timeout 600s",
    ] {
        assert!(args.contains(part), "{part} in {args}");
    }
    // The token comes from the Secret, never as a literal in the Deployment.
    let env = container.env.clone().unwrap();
    assert_eq!(env.len(), 1);
    assert_eq!(env[0].name, "SWITCHBOARD_TOKEN");
    assert!(env[0].value.is_none());
    let from = env[0].value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!((from.name.as_str(), from.key.as_str()), ("builders-token", "token"));
    assert!(!items[1].to_string().contains(&minted));
    // 20 tasks: twice the size table's 2 GiB and 0.5 CPU.
    let resources = container.resources.clone().unwrap();
    let requests = resources.requests.unwrap();
    assert_eq!(requests["memory"], Quantity("4096Mi".into()));
    assert_eq!(requests["cpu"], Quantity("1000m".into()));
    assert_eq!(resources.limits.unwrap()["memory"], Quantity("4096Mi".into()));
    let liveness = container.liveness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(
        (liveness.path.as_deref(), liveness.port),
        (Some("/healthz"), IntOrString::Int(8081))
    );
    assert!(container.readiness_probe.is_some());

    // The minted token registers, in the org the file says.
    let request: RegisterRequest =
        serde_json::from_value(json!({"name": "builders", "hostname": "pod-1", "version": "1.0.0", "org": "eng"}))
            .unwrap();
    let registered = switchboard_client::delegate::register(&app.client, &app.url(""), &minted, &request)
        .await
        .expect("the minted token registers");
    assert_eq!(registered.org.as_ref().map(|o| o.as_str()), Some("eng"));
}

#[tokio::test]
async fn without_a_new_token_the_file_names_a_secret_to_create_and_other_formats_follow() {
    let app = spawn_app().await;
    let created = token(&app, "ci").await;
    let id = created["id"].as_str().unwrap();
    let file = install(&app, id, "").await;
    assert_eq!(
        (file["format"].clone(), file["token_id"].clone()),
        (json!("kubernetes"), created["id"].clone())
    );
    assert!(file.get("token").is_none());
    let list: Value = serde_json::from_str(file["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "no Secret: the token's secret is not kept"
    );
    let deployment: Deployment = typed(&list["items"][0]);
    assert_eq!(deployment.metadata.name.as_deref(), Some("ci"), "named after the token");
    let steps = file["instructions"].as_array().unwrap();
    assert!(
        steps[0]
            .as_str()
            .unwrap()
            .starts_with("kubectl create secret generic ci-token"),
        "{steps:?}"
    );

    let compose = install(&app, id, "format=compose&replicas=2").await;
    let parsed: Value = serde_json::from_str(compose["content"].as_str().unwrap()).unwrap();
    let service = &parsed["services"]["ci"];
    assert_eq!(service["deploy"]["replicas"], 2);
    assert!(
        service["environment"]["SWITCHBOARD_TOKEN"]
            .as_str()
            .unwrap()
            .starts_with("${SWITCHBOARD_TOKEN:?")
    );
    let systemd = install(&app, id, "format=systemd&capacity=5").await;
    let unit = systemd["content"].as_str().unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/switchboard-delegate --manager"),
        "{unit}"
    );
    assert!(
        unit.contains("--capacity 5") && unit.contains("TimeoutStopSec=630"),
        "{unit}"
    );
    assert!(unit.contains("EnvironmentFile=/etc/switchboard/ci.env"), "{unit}");

    // Bad input names the parameter; a revoked token gets no file.
    for (query, field) in [
        ("replicas=0", "replicas"),
        ("replicas=101", "replicas"),
        ("flavour=huge", "flavour"),
        ("capacity=0", "capacity"),
        ("tags=a%01b", "tags"),
        ("project=web", "project"),
        ("format=helm", "format"),
    ] {
        let answer = app
            .get(
                &format!("/api/v1/delegate-tokens/{id}/install?{query}"),
                Some(ADMIN_KEY),
            )
            .await;
        let body = problem(answer, 422, "validation").await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let org_token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "eng", "account": "acme", "org": "eng"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let outside = app
        .get(
            &format!(
                "/api/v1/delegate-tokens/{}/install?org=ops",
                org_token["id"].as_str().unwrap()
            ),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(problem(outside, 422, "validation").await["field"], "org");
    app.post(
        &format!("/api/v1/delegate-tokens/{id}/revoke"),
        Some(ADMIN_KEY),
        &json!({}),
    )
    .await;
    problem(
        app.get(&format!("/api/v1/delegate-tokens/{id}/install"), Some(ADMIN_KEY))
            .await,
        409,
        "conflict",
    )
    .await;
}
