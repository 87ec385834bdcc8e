//! `sbmesh onboard` end to end, through the same entry point as the binary: the golden outputs
//! of examples/payments.yaml in every format, the JSON contract, merging, and every way the
//! input can be refused (exit 2, the place, the webhook's message, nothing on stdout).

#[path = "fake_apiserver/mod.rs"]
mod fake_apiserver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};

use sbmesh::cluster::{Cluster, ClusterMode};
use sbmesh::contract::IdentityModeSetting;
use sbmesh::onboard::{self, Report};

const TENANT_ID: &str = "5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5";
const CLIENT_A: &str = "3c1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51";
const CLIENT_B: &str = "8a2f4c6e-1d3b-4f5a-9c7e-2b4d6f8a0c13";
const ISSUER: &str = "https://westeurope.oic.prod-aks.azure.com/5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5/1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/";

/// The subcommand as the binary mounts it.
#[derive(Parser)]
#[command(name = "sbmesh-onboard")]
struct Cli {
    #[command(flatten)]
    args: onboard::Args,
}

fn parse(args: &[&str]) -> Result<onboard::Args, clap::Error> {
    let argv = std::iter::once("sbmesh-onboard").chain(args.iter().copied());
    Cli::try_parse_from(argv).map(|c| c.args)
}

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

async fn onboard(args: &[&str], stdin: &str) -> Run {
    let args = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = onboard::run(&args, &mut stdin.as_bytes(), &mut out, &mut err).await;
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> String {
    repo().join("examples/payments.yaml").display().to_string()
}

fn compare_or_bless(expected: &Path, actual: &str) {
    if std::env::var_os("SBMESH_BLESS").is_some() {
        std::fs::create_dir_all(expected.parent().unwrap()).unwrap();
        std::fs::write(expected, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(expected)
        .unwrap_or_else(|e| panic!("{}: {e} (SBMESH_BLESS=1 writes it)", expected.display()));
    assert!(
        want == actual,
        "{} differs (SBMESH_BLESS=1 rewrites it):\n--- expected\n{want}\n+++ actual\n{actual}",
        expected.display()
    );
}

/// The example's arguments per output, and the golden file each output is compared with.
fn golden_cases() -> Vec<(Vec<String>, &'static str)> {
    let base = vec!["-f".to_string(), example()];
    let with = |extra: &[&str]| {
        let mut a = base.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    vec![
        (base.clone(), "payments.table.txt"),
        (with(&["-o", "json"]), "payments.json"),
        (
            with(&["-o", "az", "--issuer", ISSUER, "--cluster-name", "prod-weu"]),
            "payments.az.sh",
        ),
        (with(&["-o", "istio"]), "payments.istio.yaml"),
        (with(&["-o", "mermaid"]), "payments.mermaid"),
    ]
}

#[tokio::test]
async fn payments_example_renders_every_output_as_its_golden_file() {
    for (args, golden) in golden_cases() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = onboard(&args, "").await;
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr, "", "{args:?}: the example warns about nothing");
        compare_or_bless(
            &repo().join("tests/fixtures/onboard").join(golden),
            &r.stdout,
        );
        // Same input, same bytes.
        let again = onboard(&args, "").await;
        assert_eq!(again.stdout, r.stdout, "{args:?}: not deterministic");
    }
}

#[tokio::test]
async fn json_is_the_contracts_shape_and_round_trips() {
    let r = onboard(&["-f", &example(), "-o", "json"], "").await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: Report = serde_json::from_str(&r.stdout).expect("the contract's shape");
    let mut again = serde_json::to_string_pretty(&report).unwrap();
    again.push('\n');
    assert_eq!(again, r.stdout);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v,
        json!({"identities": [
            {
                "clientId": CLIENT_A,
                "tenantId": TENANT_ID,
                "subjects": ["system:serviceaccount:payments:orders"],
                "workloads": ["payments/Deployment/orders"],
                "grants": [
                    grant("queue/order-created", "Sender"),
                    grant("queue/payment-requested", "Sender"),
                    grant("topic/payments", "Sender"),
                ]
            },
            {
                "clientId": CLIENT_B,
                "tenantId": TENANT_ID,
                "subjects": ["system:serviceaccount:payments:billing"],
                "workloads": ["payments/Deployment/billing", "payments/CronJob/ledger-reconcile"],
                "grants": [grant("topic/payments:billing", "Receiver")]
            }
        ]})
    );
}

fn grant(entity: &str, role: &str) -> Value {
    let id = match role {
        "Sender" => "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
        _ => "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
    };
    json!({
        "servicebusNamespace": "payments-prod.servicebus.windows.net",
        "entity": entity,
        "role": format!("Azure Service Bus Data {role}"),
        "roleId": id,
    })
}

fn deployment(namespace: &str, name: &str, sa: &str, annotations: Value) -> String {
    let mut ann = json!({"sbmesh.io/inject": "true"});
    for (k, v) in annotations.as_object().unwrap() {
        ann[k] = v.clone();
    }
    serde_json::to_string(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {
            "metadata": {"annotations": ann},
            "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]}
        }}
    }))
    .unwrap()
}

fn service_account(namespace: &str, name: &str, client_id: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "annotations": {
            "azure.workload.identity/client-id": client_id,
            "azure.workload.identity/tenant-id": TENANT_ID,
        }}
    }))
    .unwrap()
}

fn namespace(name: &str, annotations: Value) -> String {
    let mut ann = json!({"sbmesh.io/servicebus-namespace": format!("{name}-bus")});
    for (k, v) in annotations.as_object().unwrap() {
        ann[k] = v.clone();
    }
    serde_json::to_string(&json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "annotations": ann}
    }))
    .unwrap()
}

fn stream(docs: &[String]) -> String {
    docs.join("\n")
}

async fn report(docs: &[String], extra: &[&str]) -> (Report, String) {
    let mut args = vec!["-f", "-", "-o", "json"];
    args.extend(extra);
    let r = onboard(&args, &stream(docs)).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    (serde_json::from_str(&r.stdout).unwrap(), r.stderr)
}

#[tokio::test]
async fn workloads_sharing_a_service_account_merge_and_several_namespaces_stay_apart() {
    let docs = [
        namespace("shop", json!({})),
        namespace("ops", json!({})),
        service_account("shop", "api", CLIENT_A),
        service_account("ops", "audit", CLIENT_B),
        deployment(
            "shop",
            "web",
            "api",
            json!({"sbmesh.io/sends": "queue/orders"}),
        ),
        deployment(
            "shop",
            "worker",
            "api",
            json!({"sbmesh.io/receives": "queue/orders, queue/ORDERS"}),
        ),
        deployment(
            "ops",
            "audit",
            "audit",
            json!({"sbmesh.io/receives": "topic/events:audit"}),
        ),
        deployment(
            "shop",
            "web-canary",
            "api",
            json!({"sbmesh.io/sends": "queue/orders"}),
        ),
    ];
    let (report, stderr) = report(&docs, &[]).await;
    assert_eq!(stderr, "");
    assert_eq!(report.identities.len(), 2);
    let shop = &report.identities[0];
    assert_eq!(shop.client_id, CLIENT_A);
    assert_eq!(shop.subjects, ["system:serviceaccount:shop:api"]);
    assert_eq!(
        shop.workloads,
        [
            "shop/Deployment/web",
            "shop/Deployment/worker",
            "shop/Deployment/web-canary"
        ]
    );
    let grants: Vec<(&str, &str, &str)> = shop
        .grants
        .iter()
        .map(|g| {
            (
                g.servicebus_namespace.as_str(),
                g.entity.as_str(),
                g.role.as_str(),
            )
        })
        .collect();
    assert_eq!(
        grants,
        [
            (
                "shop-bus.servicebus.windows.net",
                "queue/orders",
                "Azure Service Bus Data Sender"
            ),
            (
                "shop-bus.servicebus.windows.net",
                "queue/orders",
                "Azure Service Bus Data Receiver"
            ),
        ]
    );
    let ops = &report.identities[1];
    assert_eq!(ops.subjects, ["system:serviceaccount:ops:audit"]);
    assert_eq!(
        ops.grants[0].servicebus_namespace,
        "ops-bus.servicebus.windows.net"
    );
    assert_eq!(ops.grants[0].entity, "topic/events:audit");
}

#[tokio::test]
async fn an_openshift_deploymentconfig_is_onboarded_like_a_deployment() {
    let dc = repo().join("tests/fixtures/inject/deploymentconfig.yaml");
    let r = onboard(
        &[
            "-f",
            &dc.display().to_string(),
            "-o",
            "json",
            "--tenant-id",
            TENANT_ID,
        ],
        "",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: Report = serde_json::from_str(&r.stdout).unwrap();
    let identity = &report.identities[0];
    assert_eq!(identity.workloads, ["billing/DeploymentConfig/invoices"]);
    assert_eq!(
        identity.subjects,
        ["system:serviceaccount:billing:invoices"]
    );
    let grants: Vec<(&str, &str)> = identity
        .grants
        .iter()
        .map(|g| (g.entity.as_str(), g.role.as_str()))
        .collect();
    assert_eq!(
        grants,
        [
            ("topic/invoice-events", "Azure Service Bus Data Sender"),
            ("queue/invoices", "Azure Service Bus Data Receiver"),
        ]
    );
}

#[tokio::test]
async fn warnings_go_to_stderr_and_the_output_is_still_written() {
    let docs = [
        namespace("shop", json!({})),
        service_account("shop", "api", CLIENT_A),
        service_account("shop", "batch", CLIENT_A),
        deployment("shop", "web", "api", json!({"sbmesh.io/queues": "orders"})),
        deployment(
            "shop",
            "nightly",
            "batch",
            json!({"sbmesh.io/sends": "topic/t"}),
        ),
    ];
    let (report, stderr) = report(&docs, &[]).await;
    assert_eq!(report.identities[0].subjects.len(), 2);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "warning: client id {CLIENT_A} is shared by 2 ServiceAccounts (shop/api, shop/batch)"
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("warning: shop/Deployment/web: sbmesh.io/queues"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("Data Sender on queue/orders, Data Receiver on queue/orders"),
        "{stderr}"
    );
}

#[tokio::test]
async fn input_without_opted_in_workloads_grants_nothing_and_says_so() {
    let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}"#;
    let r = onboard(&["-f", "-", "-o", "json"], cm).await;
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "{\n  \"identities\": []\n}\n");
    assert!(r.stderr.contains("nothing to grant"), "{}", r.stderr);
}

/// Runs and expects exit 2, nothing on stdout; returns stderr.
async fn refused(args: &[&str], stdin: &str) -> String {
    let r = onboard(args, stdin).await;
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "", "nothing half-written on stdout");
    r.stderr
}

#[tokio::test]
async fn every_denied_workload_is_reported_with_its_place_and_the_webhooks_message() {
    let docs = [
        namespace("shop", json!({})),
        service_account("shop", "api", CLIENT_A),
        deployment(
            "shop",
            "ok",
            "api",
            json!({"sbmesh.io/sends": "queue/orders"}),
        ),
        deployment(
            "shop",
            "bad-item",
            "api",
            json!({"sbmesh.io/receives": "topic/payments"}),
        ),
        deployment("shop", "no-client", "nobody", json!({})),
    ];
    let stderr = refused(&["-f", "-"], &stream(&docs)).await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("error: stdin: document 4: Deployment shop/bad-item: sbmesh: pod annotation sbmesh.io/receives = \"topic/payments\" is invalid"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(
            "error: stdin: document 5: Deployment shop/no-client: sbmesh: no client id"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_boundary_violation_is_a_denial() {
    let docs = [
        namespace(
            "shop",
            json!({"sbmesh.io/allowed-entities": "queue/orders"}),
        ),
        service_account("shop", "api", CLIENT_A),
        deployment(
            "shop",
            "web",
            "api",
            json!({"sbmesh.io/sends": "queue/orders, queue/ledger"}),
        ),
    ];
    let stderr = refused(&["-f", "-", "-o", "az", "--issuer", ISSUER], &stream(&docs)).await;
    assert!(
        stderr.starts_with("error: stdin: document 3: Deployment shop/web: sbmesh: send queue/ledger is outside the boundary of Namespace shop"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_workload_kind_onboard_cannot_read_is_an_error_not_a_missing_grant() {
    let rollout = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {
            "metadata": {"annotations": {"sbmesh.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        }}
    });
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [rollout]});
    let stderr = refused(&["-f", "-"], &list.to_string()).await;
    assert!(
        stderr.starts_with(
            "error: stdin: document 1: Rollout shop/web: a pod template at spec.template opts in"
        ),
        "{stderr}"
    );
    // Kinds without an opted-in template (a Service, a ConfigMap) are simply not workloads.
    let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}"#;
    assert_eq!(onboard(&["-f", "-"], svc).await.code, 0);
}

#[tokio::test]
async fn bad_input_and_bad_flags_are_refused() {
    let stderr = refused(&["-f", "-"], "kind: [unclosed").await;
    assert!(stderr.starts_with("error: stdin: document 1:"), "{stderr}");
    let stderr = refused(&["-f", "/nonexistent/manifests.yaml"], "").await;
    assert!(stderr.contains("/nonexistent/manifests.yaml"), "{stderr}");
    for (issuer, why) in [
        ("http://issuer.example/", "is not an https URL"),
        ("not a url", "is not a URL"),
        ("https://issuer.example/?x=1", "has a query or fragment"),
    ] {
        let stderr = refused(&["-f", &example(), "-o", "az", "--issuer", issuer], "").await;
        assert!(stderr.contains(why), "{issuer}: {stderr}");
    }
    let stderr = refused(
        &[
            "-f",
            &example(),
            "-o",
            "istio",
            "--egress-namespace",
            "Istio_System",
        ],
        "",
    )
    .await;
    assert!(stderr.contains("--egress-namespace"), "{stderr}");
    let stderr = refused(&["-f", &example(), "--trust-domain", "bad domain"], "").await;
    assert!(stderr.contains("--trust-domain"), "{stderr}");
    let e = parse(&["-f", &example(), "-o", "az"])
        .map(|_| ())
        .expect_err("-o az needs --issuer");
    assert!(e.to_string().contains("--issuer"), "{e}");
}

#[tokio::test]
async fn with_cluster_on_the_cluster_fills_in_what_the_input_lacks() {
    use fake_apiserver::{FakeApiServer, Res};
    let fake = FakeApiServer::start().await;
    fake.put(
        Res::Namespaces,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "shop", "annotations": {"sbmesh.io/servicebus-namespace": "cluster-bus"}}}),
    );
    fake.put(
        Res::ServiceAccounts,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": "api", "namespace": "shop", "annotations": {
                "azure.workload.identity/client-id": CLIENT_B,
                "azure.workload.identity/tenant-id": TENANT_ID}}}),
    );
    let cluster = Cluster::start_with_config(
        ClusterMode::On,
        fake.config(),
        IdentityModeSetting::Inject,
        Duration::from_secs(5),
    )
    .await
    .expect("the fake API server answers");
    // The Namespace in the input wins over the cluster's; the ServiceAccount comes from the
    // cluster.
    let docs = [
        namespace("shop", json!({})),
        deployment(
            "shop",
            "web",
            "api",
            json!({"sbmesh.io/sends": "queue/orders"}),
        ),
    ];
    let args = parse(&["-f", "-", "-o", "json", "--cluster", "on"]).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = onboard::run_with_cluster(
        &args,
        cluster,
        &mut stream(&docs).as_bytes(),
        &mut out,
        &mut err,
    )
    .await;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let report: Report = serde_json::from_slice(&out).unwrap();
    assert_eq!(report.identities[0].client_id, CLIENT_B);
    assert_eq!(
        report.identities[0].grants[0].servicebus_namespace,
        "shop-bus.servicebus.windows.net"
    );
}

#[test]
fn docs_show_the_real_outputs_of_the_example() {
    let docs = std::fs::read_to_string(repo().join("docs/onboard.md")).unwrap();
    for (_, golden) in golden_cases() {
        let text =
            std::fs::read_to_string(repo().join("tests/fixtures/onboard").join(golden)).unwrap();
        assert!(
            docs.contains(text.trim_end()),
            "docs/onboard.md does not show the current {golden}: paste it again"
        );
    }
}
