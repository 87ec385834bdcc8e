//! `sbmesh inject`, run in-process with byte buffers for stdin, stdout and stderr. Golden
//! files: each `tests/fixtures/inject/<name>.yaml` is rendered and compared with
//! `<name>.injected.yaml` beside it (a first line `# args: ...` adds flags);
//! `SBMESH_BLESS=1 cargo test --test inject` rewrites the expected files (review the diff).

mod fake_apiserver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory as _, Parser};
use serde_json::{Value, json};

use sbmesh::admission;
use sbmesh::cluster::{Cluster, ClusterMode};
use sbmesh::contract::{Context, IdentityMode, IdentityModeSetting};
use sbmesh::inject::{self, input};

const TENANT_ID: &str = "5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5";
const CLIENT_ID: &str = "3c1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51";

/// The subcommand as the binary mounts it.
#[derive(Parser)]
#[command(name = "sbmesh-inject")]
struct Cli {
    #[command(flatten)]
    args: inject::Args,
}

fn parse(args: &[&str]) -> inject::Args {
    let argv = std::iter::once("sbmesh-inject").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .args
}

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

async fn inject(args: &[&str], stdin: &str) -> Run {
    let args = parse(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = inject::run(&args, &mut stdin.as_bytes(), &mut out, &mut err).await;
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

/// Runs and expects success with no warnings.
async fn inject_ok(args: &[&str], stdin: &str) -> String {
    let r = inject(args, stdin).await;
    assert_eq!(r.code, 0, "exit code; stderr:\n{}", r.stderr);
    assert_eq!(r.stderr, "", "stderr");
    r.stdout
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/payments.yaml")
}

/// Every golden input, by name.
const GOLDEN: [&str; 11] = [
    "pod",
    "deployment",
    "statefulset",
    "daemonset",
    "replicaset",
    "replicationcontroller",
    "job",
    "cronjob",
    "podtemplate",
    "list",
    "deploymentconfig",
];

/// The flags a fixture is rendered with: the tenant, plus its `# args:` line.
fn fixture_args(input: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(input).unwrap();
    let mut args = vec!["-f".to_string(), input.display().to_string()];
    match text.lines().next().and_then(|l| l.strip_prefix("# args:")) {
        Some(extra) => args.extend(extra.split_whitespace().map(str::to_string)),
        None => args.extend(["--tenant-id".to_string(), TENANT_ID.to_string()]),
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Renders a golden input and returns (args, output).
async fn render_fixture(name: &str) -> (Vec<String>, String) {
    let args = fixture_args(&fixtures().join(format!("{name}.yaml")));
    let out = inject_ok(&strs(&args), "").await;
    (args, out)
}

fn compare_or_bless(expected: &Path, actual: &str) {
    if std::env::var_os("SBMESH_BLESS").is_some() {
        std::fs::write(expected, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(expected)
        .unwrap_or_else(|e| panic!("{}: {e} (SBMESH_BLESS=1 writes it)", expected.display()));
    if want != actual {
        let d = inject::diff::unified(&want, actual, "expected", "actual").unwrap_or_default();
        panic!(
            "{} differs (SBMESH_BLESS=1 rewrites it):\n{d}",
            expected.display()
        );
    }
}

async fn golden(name: &str) {
    let (_, out) = render_fixture(name).await;
    compare_or_bless(&fixtures().join(format!("{name}.injected.yaml")), &out);
    let injected = out.matches("sbmesh.io/status:").count();
    assert!(injected >= 1, "{name}: nothing was injected");
}

macro_rules! golden_tests {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            golden($name).await;
        }
    )*};
}

golden_tests! {
    pod_matches_its_golden_file => "pod",
    deployment_matches_its_golden_file => "deployment",
    statefulset_matches_its_golden_file => "statefulset",
    daemonset_in_delegate_mode_matches_its_golden_file => "daemonset",
    replicaset_matches_its_golden_file => "replicaset",
    replicationcontroller_matches_its_golden_file => "replicationcontroller",
    job_matches_its_golden_file => "job",
    cronjob_matches_its_golden_file => "cronjob",
    podtemplate_matches_its_golden_file => "podtemplate",
    list_matches_its_golden_file => "list",
    openshift_deploymentconfig_matches_its_golden_file => "deploymentconfig",
}

#[tokio::test]
async fn an_opted_in_template_in_a_kind_inject_cannot_render_is_named_in_a_warning() {
    let rollout = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {
            "metadata": {"annotations": {"sbmesh.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        }}
    });
    let r = inject(&["-f", "-", "-o", "json"], &rollout.to_string()).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).unwrap(),
        rollout,
        "unchanged"
    );
    assert!(
        r.stderr.starts_with(
            "warning: stdin: document 1: Rollout shop/web: a pod template at spec.template opts in, \
             but sbmesh inject renders the pod templates of Pod, Deployment"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("DeploymentConfig only"), "{}", r.stderr);
    // A kind that merely has a template without the opt-in is not worth a word.
    let quiet = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"}, "spec": {"template": {"metadata": {}}}});
    let r = inject(&["-f", "-"], &quiet.to_string()).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
}

#[tokio::test]
async fn payments_example_renders_offline_with_no_flags() {
    let path = example().display().to_string();
    let out = inject_ok(&["-f", &path], "").await;
    compare_or_bless(&fixtures().join("payments.injected.yaml"), &out);
    let docs = documents(&out);
    assert_eq!(docs.len(), 8);
    let injected: Vec<String> = docs
        .iter()
        .filter(|d| {
            serde_json::to_string(d)
                .unwrap()
                .contains("sbmesh.io/status")
        })
        .map(|d| {
            format!(
                "{} {}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        injected,
        [
            "Deployment orders",
            "Deployment billing",
            "CronJob ledger-reconcile"
        ]
    );
}

// ---- inputs ------------------------------------------------------------------------------

#[tokio::test]
async fn reads_manifests_from_stdin() {
    let text = std::fs::read_to_string(fixtures().join("deployment.yaml")).unwrap();
    let out = inject_ok(&["-f", "-", "--tenant-id", TENANT_ID], &text).await;
    let want = std::fs::read_to_string(fixtures().join("deployment.injected.yaml")).unwrap();
    assert_eq!(out, want);
}

#[tokio::test]
async fn reads_json_streams() {
    let deployment =
        &documents(&std::fs::read_to_string(fixtures().join("deployment.yaml")).unwrap())[0];
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders"}});
    let stream = format!(
        "{}\n{}\n",
        serde_json::to_string_pretty(deployment).unwrap(),
        service
    );
    let out = inject_ok(&["-f", "-", "--tenant-id", TENANT_ID], &stream).await;
    let want = std::fs::read_to_string(fixtures().join("deployment.injected.yaml")).unwrap();
    let docs = documents(&out);
    assert_eq!(docs[0], documents(&want)[0]);
    assert_eq!(docs[1], service);
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

#[tokio::test]
async fn reads_a_directory_in_name_order_and_only_manifest_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.yaml", &config_map("b"));
    write(
        dir.path(),
        "a.json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}"#,
    );
    write(
        dir.path(),
        "c.yml",
        &format!("{}---\n{}", config_map("c1"), config_map("c2")),
    );
    write(dir.path(), "notes.txt", "not: a manifest\n");
    write(dir.path(), "sub/d.yaml", &config_map("d"));
    let names = |out: &str| -> Vec<String> {
        documents(out)
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let path = dir.path().display().to_string();
    assert_eq!(
        names(&inject_ok(&["-f", &path], "").await),
        ["a", "b", "c1", "c2"]
    );
    assert_eq!(
        names(&inject_ok(&["-f", &path, "-R"], "").await),
        ["a", "b", "c1", "c2", "d"]
    );
}

#[tokio::test]
async fn an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = inject(&["-f", &dir.path().display().to_string()], "").await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("holds no *.yaml, *.yml or *.json files"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn expands_list_items_and_rewraps_them_in_order() {
    let (_, out) = render_fixture("list").await;
    let docs = documents(&out);
    assert_eq!(docs.len(), 1);
    let list = &docs[0];
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["refunds", "refunds", "fraud-model"]);
    assert!(
        items[1]
            .pointer("/spec/template/metadata/annotations/sbmesh.io~1status")
            .is_some()
    );
    let input = &documents(&std::fs::read_to_string(fixtures().join("list.yaml")).unwrap())[0];
    assert_eq!(items[0], input["items"][0], "the Service is unchanged");
    assert_eq!(
        items[2], input["items"][2],
        "the Deployment that did not opt in is unchanged"
    );
}

// ---- outputs -----------------------------------------------------------------------------

#[tokio::test]
async fn json_output_is_the_object_for_one_document_and_a_list_for_several() {
    let deployment = fixtures().join("deployment.yaml").display().to_string();
    let one = inject_ok(
        &["-f", &deployment, "--tenant-id", TENANT_ID, "-o", "json"],
        "",
    )
    .await;
    let one: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["kind"], "Deployment");
    assert!(
        one.pointer("/spec/template/metadata/annotations/sbmesh.io~1status")
            .is_some()
    );

    let path = example().display().to_string();
    let many = inject_ok(&["-f", &path, "-o", "json"], "").await;
    let many: Value = serde_json::from_str(&many).unwrap();
    assert_eq!(many["apiVersion"], "v1");
    assert_eq!(many["kind"], "List");
    let yaml = inject_ok(&["-f", &path], "").await;
    assert_eq!(many["items"].as_array().unwrap(), &documents(&yaml));
}

#[tokio::test]
async fn injecting_the_output_again_changes_nothing() {
    for name in GOLDEN {
        let (args, out) = render_fixture(name).await;
        let mut again: Vec<&str> = strs(&args);
        again[1] = "-";
        assert_eq!(inject_ok(&again, &out).await, out, "{name}");
    }
    let path = example().display().to_string();
    let out = inject_ok(&["-f", &path], "").await;
    assert_eq!(inject_ok(&["-f", "-"], &out).await, out, "payments");
}

#[tokio::test]
async fn documents_that_are_not_workloads_or_did_not_opt_in_come_out_unchanged() {
    let input = std::fs::read_to_string(example()).unwrap();
    let path = example().display().to_string();
    let out = inject_ok(&["-f", &path], "").await;
    let (before, after) = (documents(&input), documents(&out));
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        if !matches!(b["kind"].as_str(), Some("Deployment" | "CronJob")) {
            assert_eq!(a, b, "{}", b["kind"]);
        }
    }
    // A workload without the opt-in, and one that opted out, are not touched either.
    let mut d = before[5].clone();
    d["spec"]["template"]["metadata"]["annotations"] = json!({"sbmesh.io/inject": "false"});
    let text = serde_json::to_string(&json!([d.clone(), {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}}])).unwrap();
    let list = format!("{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": {text}}}");
    let out = inject_ok(&["-f", "-", "-o", "json"], &list).await;
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["items"][0], d);
}

/// The template's pod as the API server sends it to the webhook once a controller made it.
fn pod_from(template: &Value, namespace: &str) -> Value {
    let mut metadata = template["metadata"].clone();
    metadata["generateName"] = json!("from-template-");
    metadata["namespace"] = json!(namespace);
    metadata["labels"]["pod-template-hash"] = json!("7d9f8c6b5");
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// Every pod template of a document, with the namespace its pods run in.
fn templates(doc: &Value, default_ns: &str, out: &mut Vec<(Value, String)>) {
    if let Some(items) = doc.get("items").and_then(Value::as_array) {
        for i in items {
            templates(i, default_ns, out);
        }
        return;
    }
    let ns = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_ns)
        .to_string();
    let pointer = match doc["kind"].as_str() {
        Some("Pod") => "",
        Some("PodTemplate") => "/template",
        Some("CronJob") => "/spec/jobTemplate/spec/template",
        Some(
            "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "ReplicationController"
            | "Job"
            | "DeploymentConfig",
        ) => "/spec/template",
        _ => return,
    };
    out.push((doc.pointer(pointer).unwrap().clone(), ns));
}

#[tokio::test]
async fn the_webhook_admitting_a_pod_from_the_output_patches_nothing() {
    let mut cases: Vec<(Vec<String>, String)> = Vec::new();
    for name in GOLDEN {
        cases.push(render_fixture(name).await);
    }
    let path = example().display().to_string();
    let args = vec!["-f".to_string(), path.clone()];
    cases.push((args.clone(), inject_ok(&strs(&args), "").await));

    let mut checked = 0;
    for (args, out) in cases {
        let params = parse(&strs(&args)).input.params.resolve().unwrap();
        let mode = match params.identity_mode {
            IdentityModeSetting::Delegate => IdentityMode::Delegate,
            _ => IdentityMode::Inject,
        };
        let mut found = Vec::new();
        let docs = documents(&out);
        for d in &docs {
            templates(d, "default", &mut found);
        }
        // The ServiceAccounts and Namespaces of the output, as the cluster will hold them.
        let annotations = |kind: &str, ns: Option<&str>, name: &str, field: &str| {
            docs.iter()
                .find(|d| {
                    d["kind"] == kind
                        && d["metadata"]["name"] == name
                        && ns.is_none_or(|ns| d["metadata"]["namespace"] == ns)
                })
                .map(|d| {
                    d["metadata"][field]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect::<BTreeMap<String, String>>()
                })
        };
        for (template, ns) in found {
            let sa_name = template["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            let sa = annotations("ServiceAccount", Some(&ns), sa_name, "annotations");
            let ns_annotations = annotations("Namespace", None, &ns, "annotations");
            let ns_labels = annotations("Namespace", None, &ns, "labels");
            let ctx = Context {
                service_account_annotations: sa.as_ref(),
                namespace_annotations: ns_annotations.as_ref(),
                namespace_labels: ns_labels.as_ref(),
                identity_mode: mode,
            };
            let pod = pod_from(&template, &ns);
            let body = serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "b3a1c2d4-0000-4000-8000-000000000001",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": ns,
                    "operation": "CREATE",
                    "object": pod,
                }
            }))
            .unwrap();
            let resp = admission::review(&body, &ctx, &params.defaults).unwrap();
            assert!(resp.allowed(), "{args:?}: denied: {:?}", resp.status);
            assert_eq!(
                resp.ops(),
                0,
                "{args:?}: the webhook would still patch {template:#}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 13, "checked {checked} templates");
}

#[tokio::test]
async fn output_of_every_kind_reads_as_its_kubernetes_type() {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    fn check(doc: &Value) {
        let v = doc.clone();
        let r = match doc["kind"].as_str().unwrap() {
            "List" => {
                doc["items"].as_array().unwrap().iter().for_each(check);
                Ok(())
            }
            "Pod" => serde_json::from_value::<core::Pod>(v).map(drop),
            "PodTemplate" => serde_json::from_value::<core::PodTemplate>(v).map(drop),
            "ReplicationController" => {
                serde_json::from_value::<core::ReplicationController>(v).map(drop)
            }
            "Deployment" => serde_json::from_value::<apps::Deployment>(v).map(drop),
            "StatefulSet" => serde_json::from_value::<apps::StatefulSet>(v).map(drop),
            "DaemonSet" => serde_json::from_value::<apps::DaemonSet>(v).map(drop),
            "ReplicaSet" => serde_json::from_value::<apps::ReplicaSet>(v).map(drop),
            "Job" => serde_json::from_value::<batch::Job>(v).map(drop),
            "CronJob" => serde_json::from_value::<batch::CronJob>(v).map(drop),
            "Namespace" => serde_json::from_value::<core::Namespace>(v).map(drop),
            "ServiceAccount" => serde_json::from_value::<core::ServiceAccount>(v).map(drop),
            "ConfigMap" => serde_json::from_value::<core::ConfigMap>(v).map(drop),
            "Service" => serde_json::from_value::<core::Service>(v).map(drop),
            // OpenShift's type is not in k8s-openapi: its template is a core PodTemplateSpec.
            "DeploymentConfig" => {
                serde_json::from_value::<core::PodTemplateSpec>(v["spec"]["template"].clone())
                    .map(drop)
            }
            other => panic!("no type for {other}"),
        };
        r.unwrap_or_else(|e| panic!("{} does not read as its type: {e}", doc["kind"]));
    }
    for name in GOLDEN {
        let (_, out) = render_fixture(name).await;
        documents(&out).iter().for_each(check);
    }
    let path = example().display().to_string();
    documents(&inject_ok(&["-f", &path], "").await)
        .iter()
        .for_each(check);
}

const LOOK_ALIKES: [&str; 22] = [
    "true",
    "false",
    "True",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Y",
    "0755",
    "0x1F",
    "1e3",
    "1_000",
    "null",
    "~",
    "12:30",
    ".inf",
    "+1",
    "1.0",
    "2024-01-01",
    "",
];

#[tokio::test]
async fn yaml_1_1_look_alike_strings_stay_quoted() {
    let data: serde_json::Map<String, Value> = LOOK_ALIKES
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("k{i}"), json!(s)))
        .collect();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flags"}, "data": data});
    let out = inject_ok(&["-f", "-"], &serde_json::to_string(&cm).unwrap()).await;
    for (i, s) in LOOK_ALIKES.iter().enumerate() {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("k{i}:")))
            .unwrap_or_else(|| panic!("no line for k{i} in\n{out}"));
        let value = line.split_once(": ").map_or("", |(_, v)| v);
        assert!(
            value.starts_with(['"', '\'']),
            "{s:?} is written unquoted: {line}"
        );
    }
    // Read back as kubectl reads YAML (1.1: yes is true, 0755 is octal), they are the strings.
    assert_eq!(documents(&out)[0], cm);
    // And so would a pod-template annotation and env value.
    let (_, deployment) = render_fixture("deployment").await;
    assert!(deployment.contains("value: \"on\""), "{deployment}");
    assert!(deployment.contains("version: \"1.8\""), "{deployment}");
}

#[tokio::test]
async fn multi_line_strings_stay_strings() {
    let script = "#!/bin/sh\nset -eu\n  indented: line\n---\n# not a comment\n\ttab\nlast line without newline";
    let cases = [
        script,
        "trailing newlines\n\n\n",
        " leading space\nsecond\n",
        "a: b\n- c\n",
    ];
    let data: serde_json::Map<String, Value> = cases
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("s{i}"), json!(s)))
        .collect();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scripts"}, "data": data});
    let out = inject_ok(&["-f", "-"], &serde_json::to_string(&cm).unwrap()).await;
    assert!(
        out.contains("s1: |"),
        "multi-line strings are literal blocks:\n{out}"
    );
    assert_eq!(documents(&out)[0], cm);
    assert_eq!(inject_ok(&["-f", "-"], &out).await, out);
}

#[tokio::test]
async fn kubectl_style_octal_modes_are_read_as_octal() {
    let path = example().display().to_string();
    let out = inject_ok(&["-f", &path], "").await;
    // `defaultMode: 0444` in the example is 292 in decimal; a YAML 1.2 reader would say 444.
    assert!(out.contains("defaultMode: 292"), "{out}");
}

// ---- parameters ----------------------------------------------------------------------------

fn deployment(annotations: Value, namespace: Option<&str>) -> String {
    let mut d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "orders"},
        "spec": {
            "selector": {"matchLabels": {"app": "orders"}},
            "template": {
                "metadata": {"labels": {"app": "orders"}, "annotations": annotations},
                "spec": {
                    "serviceAccountName": "orders",
                    "containers": [{"name": "orders", "image": "ghcr.io/contoso/payments-orders:1.8.0"}]
                }
            }
        }
    });
    if let Some(ns) = namespace {
        d["metadata"]["namespace"] = json!(ns);
    }
    serde_json::to_string(&d).unwrap()
}

fn opted_in() -> Value {
    json!({
        "sbmesh.io/inject": "true",
        "sbmesh.io/client-id": CLIENT_ID,
        "sbmesh.io/servicebus-namespace": "payments-prod",
    })
}

fn subject(out: &str) -> String {
    let d = &documents(out)[0];
    let status = d
        .pointer("/spec/template/metadata/annotations/sbmesh.io~1status")
        .and_then(Value::as_str)
        .unwrap();
    serde_json::from_str::<Value>(status).unwrap()["subject"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn namespace_is_the_objects_else_the_flag_else_default() {
    let t = ["--tenant-id", TENANT_ID];
    let without = deployment(opted_in(), None);
    let with = deployment(opted_in(), Some("payments"));
    let run = |args: Vec<&'static str>, stdin: String| async move {
        let mut a = vec!["-f", "-"];
        a.extend(args);
        subject(&inject_ok(&a, &stdin).await)
    };
    assert_eq!(
        run(t.to_vec(), without.clone()).await,
        "system:serviceaccount:default:orders"
    );
    let flag = [&t[..], &["--namespace", "checkout"]].concat();
    assert_eq!(
        run(flag.clone(), without).await,
        "system:serviceaccount:checkout:orders"
    );
    assert_eq!(
        run(flag, with).await,
        "system:serviceaccount:payments:orders"
    );
}

#[tokio::test]
async fn parameter_flags_are_the_same_as_the_webhooks_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("tenantId: {TENANT_ID}\nservicebusNamespace: payments-prod\n"),
    )
    .unwrap();
    let only_opt_in = deployment(json!({"sbmesh.io/inject": "true"}), Some("payments"));
    let config = config.display().to_string();
    let out = inject_ok(
        &["-f", "-", "--config", &config, "--client-id", CLIENT_ID],
        &only_opt_in,
    )
    .await;
    let d = &documents(&out)[0];
    let env = d.pointer("/spec/template/spec/containers/0/env").unwrap();
    assert!(env.to_string().contains(TENANT_ID), "{env}");
    assert!(
        env.to_string()
            .contains("payments-prod.servicebus.windows.net"),
        "{env}"
    );
}

#[tokio::test]
async fn identity_mode_auto_offline_renders_inject_with_a_note() {
    let text = deployment(opted_in(), Some("payments"));
    let r = inject(
        &[
            "-f",
            "-",
            "--tenant-id",
            TENANT_ID,
            "--identity-mode",
            "auto",
        ],
        &text,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("note: identity mode auto needs --cluster on"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stdout,
        inject_ok(&["-f", "-", "--tenant-id", TENANT_ID], &text).await
    );
}

#[tokio::test]
async fn warnings_go_to_stderr_prefixed_with_the_object() {
    let mut pod =
        documents(&std::fs::read_to_string(fixtures().join("pod.yaml")).unwrap())[0].clone();
    pod["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceAccountName");
    let r = inject(&["-f", "-", "--tenant-id", TENANT_ID], &pod.to_string()).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(
            "warning: stdin: document 1: Pod payments/orders-debug: sbmesh: pod runs as the default ServiceAccount"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("system:serviceaccount:payments:default"));
}

// ---- --cluster on ----------------------------------------------------------------------------

/// A fake API server with the payments Namespace and the orders ServiceAccount as the example
/// declares them.
async fn payments_cluster() -> (fake_apiserver::FakeApiServer, Cluster) {
    use fake_apiserver::{FakeApiServer, Res};
    let fake = FakeApiServer::start().await;
    fake.put(
        Res::Namespaces,
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": "payments",
                "labels": {"istio-injection": "enabled"},
                "annotations": {"sbmesh.io/servicebus-namespace": "payments-prod"}
            }
        }),
    );
    fake.put(
        Res::ServiceAccounts,
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {
                "name": "orders", "namespace": "payments",
                "annotations": {
                    "azure.workload.identity/client-id": CLIENT_ID,
                    "azure.workload.identity/tenant-id": TENANT_ID
                }
            }
        }),
    );
    let cluster = Cluster::start_with_config(
        ClusterMode::On,
        fake.config(),
        IdentityModeSetting::Inject,
        Duration::from_secs(5),
    )
    .await
    .expect("the fake API server answers");
    (fake, cluster)
}

async fn inject_with_cluster(cluster: Cluster, args: &[&str], stdin: &str) -> Run {
    let args = parse(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code =
        inject::run_with_cluster(&args, cluster, &mut stdin.as_bytes(), &mut out, &mut err).await;
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

#[tokio::test]
async fn with_cluster_on_service_account_and_namespace_annotations_are_read() {
    let (_fake, cluster) = payments_cluster().await;
    let only_opt_in = deployment(json!({"sbmesh.io/inject": "true"}), Some("payments"));
    let r = inject_with_cluster(cluster, &["-f", "-", "--cluster", "on"], &only_opt_in).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let env = documents(&r.stdout)[0]
        .pointer("/spec/template/spec/containers/0/env")
        .unwrap()
        .to_string();
    for v in [CLIENT_ID, TENANT_ID, "payments-prod.servicebus.windows.net"] {
        assert!(env.contains(v), "{v} missing from {env}");
    }
    // Offline, the same manifest lacks all three.
    let offline = inject(&["-f", "-"], &only_opt_in).await;
    assert_eq!(offline.code, 2);
}

#[tokio::test]
async fn with_cluster_on_a_missing_service_account_is_a_denial() {
    let (_fake, cluster) = payments_cluster().await;
    let mut d: Value = serde_json::from_str(&deployment(
        json!({"sbmesh.io/inject": "true"}),
        Some("payments"),
    ))
    .unwrap();
    d["spec"]["template"]["spec"]["serviceAccountName"] = json!("ghost");
    let r = inject_with_cluster(cluster, &["-f", "-", "--cluster", "on"], &d.to_string()).await;
    assert_eq!((r.code, r.stdout.as_str()), (2, ""));
    assert!(
        r.stderr
            .starts_with("error: stdin: document 1: Deployment payments/orders: "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("ghost"), "{}", r.stderr);
}

#[tokio::test]
async fn an_opt_in_on_the_workload_instead_of_its_template_is_warned() {
    let mut d: Value = serde_json::from_str(&deployment(json!({}), Some("payments"))).unwrap();
    d["metadata"]["annotations"] = json!({"sbmesh.io/inject": "true"});
    let r = inject(&["-f", "-"], &d.to_string()).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(documents(&r.stdout)[0], d, "nothing is injected");
    assert_eq!(
        r.stderr,
        "warning: stdin: document 1: Deployment payments/orders: sbmesh.io/inject is set on the \
         Deployment itself, not on its pod template, so the webhook never sees it; move it to \
         spec.template.metadata.annotations\n"
    );
}

// ---- errors ------------------------------------------------------------------------------

#[tokio::test]
async fn a_document_that_does_not_parse_names_the_file_the_document_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}---\n# the broken one\napiVersion: v1\nkind: ConfigMap\ndata: [a,\n",
        config_map("ok")
    );
    write(dir.path(), "broken.yaml", &text);
    let path = dir.path().join("broken.yaml").display().to_string();
    let r = inject(&["-f", &path], "").await;
    assert_eq!(r.code, 2);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .starts_with(&format!("error: {path}: document 2: ")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("line 11"), "{}", r.stderr);
}

#[tokio::test]
async fn a_document_that_is_not_an_object_is_an_error() {
    let r = inject(&["-f", "-"], "- just\n- a list\n").await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("stdin: document 1: not a Kubernetes object"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn a_denial_names_the_object_gives_the_webhooks_message_and_prints_nothing() {
    let mut annotations = opted_in();
    annotations["sbmesh.io/queues"] = json!("orders,Not A Queue!");
    let bad = deployment(annotations, Some("payments"));
    let good = std::fs::read_to_string(fixtures().join("deployment.yaml")).unwrap();
    let stdin = format!("{good}---\n{bad}\n");
    let r = inject(&["-f", "-", "--tenant-id", TENANT_ID], &stdin).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stdout, "", "nothing is printed when a document is denied");

    // The webhook's own answer for a pod from that template.
    let d: Value = serde_json::from_str(&bad).unwrap();
    let pod = pod_from(&d["spec"]["template"], "payments");
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "payments", "operation": "CREATE", "object": pod}
    }))
    .unwrap();
    let params = parse(&["-f", "-", "--tenant-id", TENANT_ID])
        .input
        .params
        .resolve()
        .unwrap();
    let resp = admission::review(
        &body,
        &Context::offline(IdentityMode::Inject),
        &params.defaults,
    )
    .unwrap();
    let (_, _, message) = resp.status.expect("the webhook denies it");
    assert_eq!(
        r.stderr,
        format!("error: stdin: document 2: Deployment payments/orders: {message}\n")
    );
}

#[tokio::test]
async fn a_denial_offline_says_which_places_were_not_consulted() {
    let text = deployment(json!({"sbmesh.io/inject": "true"}), Some("payments"));
    let r = inject(&["-f", "-", "--tenant-id", TENANT_ID], &text).await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("Deployment payments/orders: sbmesh: no Service Bus namespace"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("not consulted: cluster lookups are off"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn an_invalid_opt_in_value_is_a_denial_not_silence() {
    let text = deployment(json!({"sbmesh.io/inject": "yes please"}), Some("payments"));
    let r = inject(&["-f", "-"], &text).await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("sbmesh.io/inject has the value \"yes please\""),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn a_missing_file_is_an_error() {
    let r = inject(&["-f", "/nonexistent/sbmesh/payments.yaml"], "").await;
    assert_eq!(r.code, 2);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .starts_with("error: /nonexistent/sbmesh/payments.yaml: cannot read:"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn every_error_is_reported_not_only_the_first() {
    let r = inject(
        &["-f", "/nonexistent/a.yaml", "-f", "/nonexistent/b.yaml"],
        "",
    )
    .await;
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.lines().count(), 2, "{}", r.stderr);
}

#[tokio::test]
async fn an_invalid_namespace_flag_is_an_error() {
    let r = inject(&["-f", "-", "--namespace", "Payments_Prod"], "").await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("--namespace \"Payments_Prod\" is not a valid namespace name"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn stdin_given_twice_is_an_error() {
    let r = inject(&["-f", "-", "-f", "-"], &config_map("a")).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("more than once"), "{}", r.stderr);
}

// ---- --diff ------------------------------------------------------------------------------

#[tokio::test]
async fn diff_shows_each_changed_document_and_exits_1() {
    let path = example().display().to_string();
    let r = inject(&["-f", &path, "--diff"], "").await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stdout.matches("\n+++ ").count() + usize::from(r.stdout.starts_with("+++ ")),
        3
    );
    assert!(
        r.stdout.starts_with(&format!(
            "--- {path}: document 6 (Deployment payments/orders)\n"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("+        azure.workload.identity/use: \"true\"\n"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("ConfigMap"),
        "unchanged documents are not shown"
    );
}

#[tokio::test]
async fn diff_exits_0_and_prints_nothing_when_nothing_would_change() {
    let path = example().display().to_string();
    let injected = inject_ok(&["-f", &path], "").await;
    let r = inject(&["-f", "-", "--diff"], &injected).await;
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    let untouched = inject(&["-f", "-", "--diff"], &config_map("a")).await;
    assert_eq!(untouched.code, 0);
}

#[tokio::test]
async fn diff_with_errors_exits_2() {
    let r = inject(
        &["-f", "-", "--diff"],
        &deployment(json!({"sbmesh.io/inject": "true"}), None),
    )
    .await;
    assert_eq!((r.code, r.stdout.as_str()), (2, ""));
}

#[test]
fn help_documents_exit_codes_and_that_comments_are_lost() {
    let help = Cli::command().render_long_help().to_string();
    for needle in [
        "Exit codes:",
        "0  success",
        "1  with --diff",
        "2  error",
        "comments",
        "--cluster",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

/// Parses a YAML or JSON stream the way the command reads its input.
fn documents(text: &str) -> Vec<Value> {
    input::documents(text)
        .unwrap_or_else(|e| panic!("document {}: {}\n{text}", e.document, e.message))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// the input as context: its ServiceAccounts and Namespaces are read as the cluster's would be

const OTHER_CLIENT: &str = "0b5e9c2d-4f1a-4e3b-9d8c-7a6b5c4d3e2f";

fn input_service_account(client_id: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "orders", "namespace": "payments", "annotations": {
            "azure.workload.identity/client-id": client_id,
            "azure.workload.identity/tenant-id": TENANT_ID,
        }}
    })
    .to_string()
}

fn input_namespace(annotations: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "payments", "labels": {"istio-injection": "enabled"},
                     "annotations": annotations}
    })
    .to_string()
}

fn first_env(stdout: &str, kind: &str) -> String {
    documents(stdout)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .and_then(|d| d.pointer("/spec/template/spec/containers/0/env").cloned())
        .unwrap_or_else(|| panic!("no {kind} with env in {stdout}"))
        .to_string()
}

#[tokio::test]
async fn offline_service_account_and_namespace_in_the_input_are_read() {
    let input = [
        input_namespace(json!({"sbmesh.io/servicebus-namespace": "payments-prod"})),
        input_service_account(CLIENT_ID),
        deployment(json!({"sbmesh.io/inject": "true"}), Some("payments")),
    ]
    .join("\n");
    let r = inject(&["-f", "-"], &input).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{}", r.stderr);
    let env = first_env(&r.stdout, "Deployment");
    for v in [CLIENT_ID, TENANT_ID, "payments-prod.servicebus.windows.net"] {
        assert!(env.contains(v), "{v} missing from {env}");
    }
    // Objects of another namespace are not this pod's.
    let elsewhere = input.replace("\"namespace\":\"payments\"", "\"namespace\":\"billing\"");
    assert_eq!(inject(&["-f", "-"], &elsewhere).await.code, 2);
}

#[tokio::test]
async fn offline_namespace_boundary_in_the_input_applies() {
    let input = [
        input_namespace(json!({"sbmesh.io/allowed-entities": "queue/billing-*"})),
        deployment(
            json!({"sbmesh.io/inject": "true", "sbmesh.io/client-id": CLIENT_ID,
                   "sbmesh.io/servicebus-namespace": "payments-prod",
                   "sbmesh.io/sends": "queue/orders"}),
            Some("payments"),
        ),
    ]
    .join("\n");
    let r = inject(&["-f", "-", "--tenant-id", TENANT_ID], &input).await;
    assert_eq!((r.code, r.stdout.as_str()), (2, ""), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "send queue/orders is outside the boundary of Namespace payments: \
             sbmesh.io/allowed-entities = \"queue/billing-*\" (on Namespace payments)"
        ),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn with_cluster_on_the_input_wins_over_the_cluster() {
    let (_fake, cluster) = payments_cluster().await;
    let input = [
        input_service_account(OTHER_CLIENT),
        deployment(json!({"sbmesh.io/inject": "true"}), Some("payments")),
    ]
    .join("\n");
    let r = inject_with_cluster(cluster, &["-f", "-", "--cluster", "on"], &input).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{}", r.stderr);
    let env = first_env(&r.stdout, "Deployment");
    assert!(env.contains(OTHER_CLIENT), "the input's client id: {env}");
    assert!(!env.contains(CLIENT_ID), "not the cluster's: {env}");
    // The Namespace is not in the input: the cluster's bus is used.
    assert!(
        env.contains("payments-prod.servicebus.windows.net"),
        "{env}"
    );
}

#[tokio::test]
async fn with_cluster_on_a_service_account_only_in_the_input_is_used() {
    let (_fake, cluster) = payments_cluster().await;
    let mut d: Value = serde_json::from_str(&deployment(
        json!({"sbmesh.io/inject": "true"}),
        Some("payments"),
    ))
    .unwrap();
    d["spec"]["template"]["spec"]["serviceAccountName"] = json!("fresh");
    let sa = input_service_account(OTHER_CLIENT).replace("\"orders\"", "\"fresh\"");
    let ns = input_namespace(json!({"sbmesh.io/servicebus-namespace": "payments-prod"}));
    let input = [ns, sa, d.to_string()].join("\n");
    let r = inject_with_cluster(cluster, &["-f", "-", "--cluster", "on"], &input).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{}", r.stderr);
    assert!(first_env(&r.stdout, "Deployment").contains(OTHER_CLIENT));
}
