//! Rendered Kubernetes objects, shared by the suites that check the deployment contract
//! (DESIGN §5): `tests/manifests.rs` (kustomize) and `tests/chart.rs` (Helm). Included with
//! `#[path]`. Rendering with `kubectl kustomize`, lookups by kind and name, and the check that a
//! rendered config file is one the webhook loads.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub const NAMESPACE: &str = "sbmesh-system";
pub const WEBHOOK_CONFIGURATION: &str = "00-sbmesh";
pub const WEBHOOK: &str = "sbmesh.sbmesh.io";
pub const OPT_IN_EXPRESSION: &str =
    "has(object.metadata.annotations) && 'sbmesh.io/inject' in object.metadata.annotations";

/// The keys of the webhook's config file (`sbmesh::config::FileConfig`).
pub const CONFIG_KEYS: [&str; 15] = [
    "tenantId",
    "clientId",
    "servicebusNamespace",
    "cloud",
    "egress",
    "identityMode",
    "connectionStringPolicy",
    "requireDedicatedServiceAccount",
    "nativeSidecar",
    "meshExcludeOutboundPorts",
    "tokenExpiration",
    "telemetry",
    "otlpEndpoint",
    "boundaries",
    "requireBoundaries",
];

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ----------------------------------------------------------------------------------------------
// Rendering

/// `kubectl kustomize DIR`, parsed into one JSON value per document.
pub fn kustomize(dir: &Path) -> Vec<Value> {
    let output = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed: these tests render manifests/ with `kubectl kustomize`. \
             Install kubectl (any version with kustomize v5; CI installs it) and run again."
        ),
        Err(e) => panic!("could not run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).expect("kustomize output is UTF-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("rendered {} is not YAML: {e}", dir.display()));
    assert!(!docs.is_empty(), "{} rendered no objects", dir.display());
    docs
}

/// Copies a directory tree (a chart, manifests/) to render a modified copy of it.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Lookups

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects"))
}

pub fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one webhook of `00-sbmesh`.
pub fn webhook(docs: &[Value]) -> &Value {
    let mwc = find(docs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION);
    let hooks = mwc["webhooks"].as_array().expect("webhooks is a list");
    assert_eq!(
        hooks.len(),
        1,
        "{WEBHOOK_CONFIGURATION} must hold exactly one webhook"
    );
    &hooks[0]
}

pub fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment", "sbmesh")
}

pub fn pod_spec(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]
}

pub fn container(docs: &[Value]) -> &Value {
    let containers = pod_spec(docs)["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "the webhook pod runs one container");
    &containers[0]
}

pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is not a list"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("{s} is not a string")))
        .collect()
}

pub fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .expect("matchLabels is a map")
        .iter()
        .all(|(k, v)| labels[k] == *v)
}

/// One permission a Role or ClusterRole grants: (apiGroup, resource, verb, resourceNames).
pub type Grant = (String, String, String, Vec<String>);

/// Every (apiGroup, resource, verb) a role's rules grant, each with the rule's resourceNames
/// (empty: any name). A rule with nonResourceURLs fails: sbmesh needs none.
pub fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut got = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        let names: Vec<String> = rule
            .get("resourceNames")
            .map(|n| strings(n).into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    got.insert((group.into(), resource.into(), verb.into(), names.clone()));
                }
            }
        }
    }
    got
}

// ----------------------------------------------------------------------------------------------
// The config file

/// Loads a config file's text as the webhook does at start (`ParamArgs::resolve`), after
/// checking that every key is one it knows. Panics, naming `context`, if the webhook would
/// refuse to start with it.
pub fn load_config(context: &str, text: &str) -> (Value, sbmesh::config::Params) {
    let config: Value =
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{context}: config.yaml: {e}"));
    for key in config
        .as_object()
        .unwrap_or_else(|| panic!("{context}: config.yaml is a mapping"))
        .keys()
    {
        assert!(
            CONFIG_KEYS.contains(&key.as_str()),
            "{context}: unknown config key {key}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    let params = sbmesh::config::ParamArgs {
        config: Some(path),
        ..Default::default()
    }
    .resolve()
    .unwrap_or_else(|e| panic!("{context}: sbmesh rejects its config.yaml: {e}"));
    (config, params)
}

/// The `config.yaml` of ConfigMap `sbmesh-config`, checked with [`load_config`].
pub fn config(context: &str, docs: &[Value]) -> Value {
    config_params(context, docs).0
}

/// [`config`], with the parameters the webhook resolves from it.
pub fn config_params(context: &str, docs: &[Value]) -> (Value, sbmesh::config::Params) {
    let cm = find(docs, "ConfigMap", "sbmesh-config");
    let text = cm["data"]["config.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: data.config.yaml"));
    load_config(context, text)
}
