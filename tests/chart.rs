//! The Helm chart `charts/sbmesh` (DESIGN §5): rendered and linted by Helm v4's own engine (the
//! Go SDK, through helm-python-sdk; see `tests/chart/helm.rs`), its objects validated against
//! the Kubernetes 1.33 OpenAPI schema, and held to `manifests/base` (rendered with `kubectl
//! kustomize`, as `tests/manifests.rs` checks it) field by field: the chart may differ from the
//! base only where this file says so.
//!
//! Without python3 or PyPI the tests that need Helm say "SKIPPED" on stderr and return (under CI
//! they fail instead); the ones that read the chart's files always run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Value, json};

#[path = "shared/objects.rs"]
mod objects;
use objects::{
    CONFIG_KEYS, Grant, NAMESPACE, WEBHOOK, WEBHOOK_CONFIGURATION, all_of, config_params,
    container, copy_tree, deployment, find, grants, kustomize, load_config, repo, strings, webhook,
};

#[path = "chart/helm.rs"]
mod helm;
use helm::{Helm, Rendered};

/// The release name that makes the names manifests/base uses (`sbmesh`, `00-sbmesh`, ...).
const RELEASE: &str = "sbmesh";
const KUBE_VERSION: &str = "1.33";
const MODES: [&str; 3] = ["selfManaged", "certManager", "existingSecret"];
/// The Secret of existingSecret mode in these tests.
const EXISTING_SECRET: &str = "webhook-serving-tls";

// ----------------------------------------------------------------------------------------------
// Rendering

fn base() -> &'static [Value] {
    static CELL: OnceLock<Vec<Value>> = OnceLock::new();
    CELL.get_or_init(|| kustomize(&repo().join("manifests/base")))
}

fn cert_manager_overlay() -> &'static [Value] {
    static CELL: OnceLock<Vec<Value>> = OnceLock::new();
    CELL.get_or_init(|| kustomize(&repo().join("manifests/overlays/cert-manager")))
}

fn chart_file(name: &str) -> String {
    let path = repo().join("charts/sbmesh").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn chart_yaml(name: &str) -> Value {
    serde_saphyr::from_str(&chart_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn app_version() -> String {
    chart_yaml("Chart.yaml")["appVersion"]
        .as_str()
        .expect("appVersion is a string")
        .to_owned()
}

/// A CA certificate as the chart takes it: base64 of its PEM.
fn ca_bundle() -> String {
    static CELL: OnceLock<String> = OnceLock::new();
    CELL.get_or_init(|| {
        let ca = rcgen::generate_simple_self_signed(vec!["sbmesh-test-ca".into()])
            .expect("a self-signed certificate");
        base64::engine::general_purpose::STANDARD.encode(ca.cert.pem())
    })
    .clone()
}

/// The least values each cert mode needs.
fn mode_values(mode: &str) -> Value {
    match mode {
        "selfManaged" => json!({}),
        "certManager" => json!({"certs": {"mode": "certManager"}}),
        "existingSecret" => json!({"certs": {
            "mode": "existingSecret",
            "existingSecret": {"name": EXISTING_SECRET, "caBundle": ca_bundle()},
        }}),
        other => panic!("no cert mode {other}"),
    }
}

/// Every value the chart has, set away from its default (release `payments`, namespace `mesh`).
fn everything_values() -> Value {
    json!({
        "image": {
            "repository": "registry.example/sbmesh",
            "tag": "9.9.9",
            "pullPolicy": "Always",
            "pullSecrets": ["regcred", {"name": "other-regcred"}],
        },
        "replicas": 3,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "podLabels": {"team": "platform"},
        "commonLabels": {"cost-center": "cc-42"},
        "commonAnnotations": {"owner": "platform@example.com"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "node-role", "operator": "In", "values": ["system"]}]}]}}},
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "sbmesh"}},
        }],
        "priorityClassName": "system-cluster-critical",
        "podDisruptionBudget": {"minAvailable": 2},
        "webhook": {
            "failurePolicy": "Ignore",
            "timeoutSeconds": 10,
            "namespaceSelector": {"matchLabels": {"sbmesh.io/enabled": "true"}},
            "objectSelector": {"matchExpressions": [
                {"key": "sbmesh.io/skip", "operator": "DoesNotExist"}]},
        },
        "logFormat": "text",
        "logLevel": "sbmesh=debug",
        "config": every_config_value(),
    })
}

/// Every key of the webhook's config file, set.
fn every_config_value() -> Value {
    json!({
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "clientId": "6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6c",
        "servicebusNamespace": "payments-prod",
        "cloud": "china",
        "egress": "bypass",
        "identityMode": "delegate",
        "connectionStringPolicy": "warn",
        "requireDedicatedServiceAccount": "deny",
        "nativeSidecar": true,
        "meshExcludeOutboundPorts": [15020, 15021],
        "tokenExpiration": 7200,
        "telemetry": "otel",
        "otlpEndpoint": "http://otel-collector.observability:4317",
        "requireBoundaries": true,
        "boundaries": {
            "allowedServicebusNamespaces": ["payments-*"],
            "allowedEntities": ["queue/orders-*", "topic/payments:audit"],
            "allowedClientIds": ["*"],
        },
    })
}

fn render_in(helm: &Helm, values: &Value, release: &str, namespace: &str) -> Rendered {
    helm.render(values, release, namespace)
        .unwrap_or_else(|e| panic!("the chart does not render with {values}: {e}"))
}

fn render(helm: &Helm, values: &Value) -> Vec<Value> {
    render_in(helm, values, RELEASE, NAMESPACE).objects()
}

/// The message of a render that must fail.
fn render_error(helm: &Helm, values: &Value) -> helm::HelmError {
    match helm.render(values, RELEASE, NAMESPACE) {
        Ok(_) => panic!("the chart renders with {values}, which it must refuse"),
        Err(e) => e,
    }
}

// ----------------------------------------------------------------------------------------------
// Normalizing: what the chart adds to the base's objects, and nothing else

/// The labels the chart puts on every object (besides commonLabels).
fn chart_labels(release: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "sbmesh",
        "app.kubernetes.io/part-of": "sbmesh",
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/version": app_version(),
        "helm.sh/chart": format!("sbmesh-{}", chart_yaml("Chart.yaml")["version"].as_str().unwrap()),
    })
}

/// The selector of the pods: the base's, plus the release.
fn selector_labels(release: &str) -> Value {
    json!({"app.kubernetes.io/name": "sbmesh", "app.kubernetes.io/instance": release})
}

/// An object without its labels and annotations (checked on their own), and without the
/// annotations `keep` names.
fn without_labels(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let meta = doc["metadata"].as_object_mut().expect("metadata");
    meta.remove("labels");
    meta.remove("annotations");
    doc
}

fn set_selector(doc: &mut Value, pointer: &str, selector: &Value) {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = selector.clone();
}

/// What the chart's Deployment must be in `mode`: the base's, with exactly the chart's
/// documented differences applied.
fn expected_deployment(mode: &str, checksum: &Value) -> Value {
    let mut d = without_labels(deployment(base()));
    let selector = selector_labels(RELEASE);
    set_selector(&mut d, "/spec/selector/matchLabels", &selector);
    set_selector(
        &mut d,
        "/spec/template/spec/topologySpreadConstraints/0/labelSelector/matchLabels",
        &selector,
    );
    // Pod labels: the chart's labels and the base's sidecar opt-out; the config's checksum.
    let mut labels = chart_labels(RELEASE);
    labels["sidecar.istio.io/inject"] = json!("false");
    d["spec"]["template"]["metadata"] = json!({
        "labels": labels,
        "annotations": {"checksum/config": checksum},
    });
    let c = &mut d["spec"]["template"]["spec"]["containers"][0];
    c["image"] = json!(format!("ghcr.io/sbmesh/sbmesh:{}", app_version()));
    let env = c["env"].as_array_mut().expect("env");
    let at = env
        .iter()
        .position(|e| e["name"] == "SBMESH_LOG_FORMAT")
        .expect("SBMESH_LOG_FORMAT");
    env.insert(at + 1, json!({"name": "SBMESH_LOG", "value": "info"}));
    match mode {
        "selfManaged" => {
            c["args"] = json!([
                "serve",
                "--certs",
                "self-managed",
                "--certs-secret",
                "sbmesh-serving-cert",
                "--service",
                "sbmesh",
                "--webhook-configuration",
                WEBHOOK_CONFIGURATION,
            ]);
            let env = c["env"].as_array_mut().expect("env");
            env.retain(|e| e["name"] != "SBMESH_TLS_CERT" && e["name"] != "SBMESH_TLS_KEY");
            let at = env
                .iter()
                .position(|e| e["name"] == "SBMESH_CONFIG")
                .expect("SBMESH_CONFIG");
            env.insert(
                at + 1,
                json!({"name": "SBMESH_CERTS_NAMESPACE",
                       "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
            );
            // The pair is written into an in-memory folder (the root filesystem is read-only).
            env.insert(
                at + 2,
                json!({"name": "SBMESH_CERTS_DIR", "value": "/var/run/sbmesh/certs"}),
            );
            let mounts = c["volumeMounts"].as_array_mut().expect("volumeMounts");
            let tls = mounts.iter().position(|m| m["name"] == "tls").expect("tls");
            mounts[tls] = json!({"name": "certs", "mountPath": "/var/run/sbmesh/certs"});
            let volumes = d["spec"]["template"]["spec"]["volumes"]
                .as_array_mut()
                .expect("volumes");
            let tls = volumes
                .iter()
                .position(|v| v["name"] == "tls")
                .expect("tls");
            volumes[tls] =
                json!({"name": "certs", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}});
        }
        "certManager" => {} // the base's Secret sbmesh-tls, from the chart's Certificate
        "existingSecret" => {
            let volumes = d["spec"]["template"]["spec"]["volumes"]
                .as_array_mut()
                .expect("volumes");
            let tls = volumes
                .iter_mut()
                .find(|v| v["name"] == "tls")
                .expect("tls volume");
            tls["secret"]["secretName"] = json!(EXISTING_SECRET);
        }
        other => panic!("no cert mode {other}"),
    }
    d
}

/// Effective permissions: (ServiceAccount, where ("cluster" or a namespace), grant), through
/// every binding.
fn permissions(docs: &[Value]) -> BTreeSet<(String, String, Grant)> {
    let mut out = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let role = find(
            docs,
            role_kind,
            binding["roleRef"]["name"].as_str().unwrap(),
        );
        let scope = if binding["kind"] == "RoleBinding" {
            binding["metadata"]["namespace"]
                .as_str()
                .expect("a RoleBinding's namespace")
                .to_owned()
        } else {
            "cluster".to_owned()
        };
        for subject in binding["subjects"].as_array().expect("subjects") {
            assert_eq!(subject["kind"], "ServiceAccount", "{binding}");
            let who = format!(
                "{}/{}",
                subject["namespace"].as_str().unwrap(),
                subject["name"].as_str().unwrap()
            );
            for grant in grants(role) {
                out.insert((who.clone(), scope.clone(), grant));
            }
        }
    }
    out
}

fn kinds_and_names(docs: &[Value]) -> BTreeSet<(String, String)> {
    docs.iter()
        .map(|d| {
            (
                d["kind"].as_str().expect("kind").to_owned(),
                d["metadata"]["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect()
}

fn pair(kind: &str, name: &str) -> (String, String) {
    (kind.to_owned(), name.to_owned())
}

// ----------------------------------------------------------------------------------------------
// Chart.yaml, values.yaml, README (no Helm needed)

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart = chart_yaml("Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "sbmesh");
    assert_eq!(chart["version"], "0.1.0");
    assert_eq!(
        chart["kubeVersion"], ">=1.30.0-0",
        "matchConditions are GA in 1.30"
    );
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion (the default image tag) must be the version in Cargo.toml"
    );
}

fn top_level_values() -> Vec<String> {
    chart_yaml("values.yaml")
        .as_object()
        .expect("values.yaml is a mapping")
        .keys()
        .cloned()
        .collect()
}

/// Dotted paths of the nested values a user sets one by one.
fn nested_values() -> Vec<String> {
    let values = chart_yaml("values.yaml");
    let mut out = Vec::new();
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    for key in ["image", "podDisruptionBudget", "webhook", "certs", "config"] {
        walk(key, &values[key], &mut out);
    }
    out
}

#[test]
fn chart_readme_lists_every_value_in_its_table() {
    let readme = chart_file("README.md");
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "## Values")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .collect();
    assert!(!table.is_empty(), "README.md has a values table");
    // A row for the key itself, or for keys under it (`image.tag` lists `image`).
    let listed = |key: &str| {
        table.iter().any(|row| {
            row.starts_with(&format!("| `{key}`")) || row.starts_with(&format!("| `{key}."))
        })
    };
    for key in top_level_values().iter().chain(nested_values().iter()) {
        assert!(
            listed(key),
            "charts/sbmesh/README.md: the values table has no row for `{key}`"
        );
    }
    // And lists nothing values.yaml does not have.
    let known: BTreeSet<String> = top_level_values()
        .into_iter()
        .chain(nested_values())
        .collect();
    for row in table {
        let key = row
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or_default();
        assert!(
            known.contains(key),
            "README.md lists `{key}`, which values.yaml does not have"
        );
    }
}

#[test]
fn values_schema_covers_exactly_the_values_and_the_webhooks_config_keys() {
    let schema = chart_yaml("values.schema.json");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level keys are refused"
    );
    let properties: BTreeSet<String> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect();
    let mut values: BTreeSet<String> = top_level_values().into_iter().collect();
    values.insert("global".into()); // Helm's own, always allowed
    assert_eq!(properties, values, "values.schema.json vs values.yaml");

    // The config section is the webhook's FileConfig: the loader's own list of fields.
    let config = &schema["properties"]["config"];
    assert_eq!(config["additionalProperties"], false);
    let keys: BTreeSet<&str> = config["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, file_config_fields(), "values.schema.json config");
    assert_eq!(
        keys,
        CONFIG_KEYS.into_iter().collect(),
        "tests/shared/objects.rs CONFIG_KEYS"
    );
    let boundaries: BTreeSet<String> = config["properties"]["boundaries"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| format!("boundaries.{k}"))
        .collect();
    let want: BTreeSet<String> = sbmesh::contract::boundary::Key::ALL
        .iter()
        .map(|k| k.config_key().to_owned())
        .collect();
    assert_eq!(boundaries, want, "values.schema.json config.boundaries");
}

/// The fields `sbmesh::config::FileConfig` accepts, as its loader names them when it meets one
/// it does not know.
fn file_config_fields() -> BTreeSet<&'static str> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "notAKey: 1\n").unwrap();
    let e = sbmesh::config::FileConfig::load(&path)
        .expect_err("an unknown key is refused")
        .to_string();
    // "unknown field `notAKey`, expected one of tenantId, clientId, ...": to the line's end.
    let expected = e
        .split_once("expected one of")
        .unwrap_or_else(|| panic!("the loader lists its fields: {e}"))
        .1
        .lines()
        .next()
        .unwrap_or_default();
    let fields: BTreeSet<&str> = expected
        .split(',')
        .map(|f| f.trim().trim_matches('`'))
        .filter(|f| !f.is_empty())
        .collect();
    assert!(!fields.is_empty(), "{e}");
    // Leak: a handful of short strings, once per test.
    fields
        .into_iter()
        .map(|f| &*Box::leak(f.to_owned().into_boxed_str()))
        .collect()
}

// ----------------------------------------------------------------------------------------------
// (1) Every cert mode renders, and helm lint --strict is clean

#[test]
fn every_cert_mode_renders_and_lints_strict() {
    let Some(helm) = helm::helm("every_cert_mode_renders_and_lints_strict") else {
        return;
    };
    for mode in MODES {
        let values = mode_values(mode);
        let objects = render(helm, &values);
        assert!(objects.len() >= 8, "{mode}: {} objects", objects.len());
        let report = helm
            .lint(&values, NAMESPACE, &format!("v{KUBE_VERSION}.0"))
            .unwrap_or_else(|e| panic!("{mode}: helm lint could not run: {e}"));
        assert_eq!(report["total_charts_linted"], 1, "{mode}: {report}");
        assert_eq!(report["errors"], json!([]), "{mode}: helm lint --strict");
        for message in report["messages"].as_array().expect("messages") {
            assert!(
                message["severity"].as_u64().unwrap_or(3) < 2,
                "{mode}: helm lint --strict: {message}"
            );
        }
    }
    // Lint also runs the schema: a bad value is an error there, too.
    let report = helm
        .lint(
            &json!({"certs": {"mode": "vault"}}),
            NAMESPACE,
            &format!("v{KUBE_VERSION}.0"),
        )
        .expect("helm lint runs");
    assert!(
        report["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e.as_str().unwrap_or_default().contains("/certs/mode")),
        "helm lint reports the bad cert mode: {report}"
    );
}

#[test]
fn every_cert_mode_makes_the_base_objects_and_only_its_own_extras() {
    let Some(helm) = helm::helm("every_cert_mode_makes_the_base_objects_and_only_its_own_extras")
    else {
        return;
    };
    // The chart installs into a namespace Helm is given (--create-namespace); the base makes its
    // Namespace.
    let mut common = kinds_and_names(base());
    assert!(common.remove(&pair("Namespace", NAMESPACE)));
    for mode in MODES {
        let objects = render(helm, &mode_values(mode));
        let got = kinds_and_names(&objects);
        let extras: BTreeSet<(String, String)> = match mode {
            "selfManaged" => [
                pair("Secret", "sbmesh-serving-cert"),
                pair("Role", "sbmesh-certs"),
                pair("RoleBinding", "sbmesh-certs"),
                pair("ClusterRole", "sbmesh-cabundle"),
                pair("ClusterRoleBinding", "sbmesh-cabundle"),
            ]
            .into(),
            "certManager" => [
                pair("Issuer", "sbmesh-selfsigned"),
                pair("Issuer", "sbmesh-ca"),
                pair("Certificate", "sbmesh-ca"),
                pair("Certificate", "sbmesh-serving"),
            ]
            .into(),
            _ => BTreeSet::new(),
        };
        let want: BTreeSet<_> = common.union(&extras).cloned().collect();
        assert_eq!(got, want, "{mode}: the chart's objects");
        assert_eq!(objects.len(), want.len(), "{mode}: no object twice");
        for doc in &objects {
            let cluster_scoped = matches!(
                doc["kind"].as_str().unwrap(),
                "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration"
            );
            assert_eq!(
                doc["metadata"].get("namespace").is_none(),
                cluster_scoped,
                "{mode}: {} {} namespace",
                doc["kind"],
                doc["metadata"]["name"]
            );
            if !cluster_scoped {
                assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{mode}: {doc}");
            }
            let labels = &doc["metadata"]["labels"];
            for (k, v) in chart_labels(RELEASE).as_object().unwrap() {
                assert_eq!(
                    &labels[k], v,
                    "{mode}: {} {} label {k}",
                    doc["kind"], doc["metadata"]["name"]
                );
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// (2) The contract: the chart's objects are the base's

#[test]
fn webhook_configuration_is_the_bases_in_every_mode() {
    let Some(helm) = helm::helm("webhook_configuration_is_the_bases_in_every_mode") else {
        return;
    };
    let base_mwc = find(
        base(),
        "MutatingWebhookConfiguration",
        WEBHOOK_CONFIGURATION,
    );
    for mode in MODES {
        let docs = render(helm, &mode_values(mode));
        let mwc = find(&docs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION);
        let mut hook = webhook(&docs).clone();
        let ca = hook["clientConfig"]
            .as_object_mut()
            .unwrap()
            .remove("caBundle");
        match mode {
            "existingSecret" => assert_eq!(ca, Some(json!(ca_bundle())), "{mode}: caBundle"),
            // selfManaged: the webhook writes it (lookup is empty outside a cluster);
            // certManager: cainjector does.
            _ => assert_eq!(ca, None, "{mode}: no caBundle in the manifest"),
        }
        // Name, rules, matchConditions, failurePolicy, reinvocationPolicy, sideEffects,
        // timeoutSeconds, admissionReviewVersions, matchPolicy, objectSelector (none),
        // namespaceSelector, clientConfig.service: all of it.
        assert_eq!(
            hook,
            *webhook(base()),
            "{mode}: the chart's webhook differs from manifests/base's"
        );
        assert_eq!(without_labels(mwc)["webhooks"][0]["name"], WEBHOOK);
        let annotations = mwc["metadata"]["annotations"].clone();
        match mode {
            "certManager" => assert_eq!(
                annotations,
                find(
                    cert_manager_overlay(),
                    "MutatingWebhookConfiguration",
                    WEBHOOK_CONFIGURATION
                )["metadata"]["annotations"],
                "{mode}: the overlay's cert-manager.io/inject-ca-from"
            ),
            _ => assert_eq!(annotations, Value::Null, "{mode}: no annotations"),
        }
        assert_eq!(
            base_mwc["metadata"].get("annotations"),
            None,
            "the base has none"
        );
    }
}

#[test]
fn deployment_is_the_bases_with_only_the_charts_differences() {
    let Some(helm) = helm::helm("deployment_is_the_bases_with_only_the_charts_differences") else {
        return;
    };
    for mode in MODES {
        let docs = render(helm, &mode_values(mode));
        let d = deployment(&docs);
        assert_eq!(
            d["metadata"]["labels"],
            chart_labels(RELEASE),
            "{mode}: Deployment labels"
        );
        let checksum = &d["spec"]["template"]["metadata"]["annotations"]["checksum/config"];
        assert!(
            checksum
                .as_str()
                .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())),
            "{mode}: checksum/config is a SHA-256: {checksum}"
        );
        // securityContext (pod and container), probes, ports, resources, replicas, strategy,
        // topology spread, volumes, env, args: all of the spec.
        assert_eq!(
            without_labels(d),
            expected_deployment(mode, checksum),
            "{mode}: the chart's Deployment differs from manifests/base's beyond the documented \
             differences"
        );
    }
}

#[test]
fn pdb_service_service_account_and_config_are_the_bases() {
    let Some(helm) = helm::helm("pdb_service_service_account_and_config_are_the_bases") else {
        return;
    };
    let selector = selector_labels(RELEASE);
    for mode in MODES {
        let docs = render(helm, &mode_values(mode));

        let mut pdb = without_labels(find(base(), "PodDisruptionBudget", "sbmesh"));
        set_selector(&mut pdb, "/spec/selector/matchLabels", &selector);
        assert_eq!(
            without_labels(find(&docs, "PodDisruptionBudget", "sbmesh")),
            pdb,
            "{mode}: PodDisruptionBudget"
        );

        let mut service = without_labels(find(base(), "Service", "sbmesh"));
        set_selector(&mut service, "/spec/selector", &selector);
        assert_eq!(
            without_labels(find(&docs, "Service", "sbmesh")),
            service,
            "{mode}: Service"
        );

        assert_eq!(
            without_labels(find(&docs, "ServiceAccount", "sbmesh")),
            without_labels(find(base(), "ServiceAccount", "sbmesh")),
            "{mode}: ServiceAccount"
        );

        // The chart writes only the keys that are set (none by default); the base spells out
        // the built-in defaults. The webhook must read the same settings from both.
        let (chart_config, chart_params) = config_params(mode, &docs);
        assert_eq!(chart_config, json!({}), "{mode}: no key set by default");
        let (_, base_params) = config_params("base", base());
        assert_eq!(chart_params, base_params, "{mode}: config.yaml");
    }
}

#[test]
fn rbac_is_the_bases_and_self_managed_adds_exactly_its_named_grants() {
    let Some(helm) = helm::helm("rbac_is_the_bases_and_self_managed_adds_exactly_its_named_grants")
    else {
        return;
    };
    let sa = format!("{NAMESPACE}/sbmesh");
    let base_permissions = permissions(base());
    assert!(!base_permissions.is_empty());
    for mode in MODES {
        let docs = render(helm, &mode_values(mode));
        let got = permissions(&docs);
        // Every role is bound: nothing granted that nobody holds, nothing bound that is absent.
        for role in docs
            .iter()
            .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        {
            let name = &role["metadata"]["name"];
            assert!(
                docs.iter()
                    .any(|b| b["roleRef"]["name"] == *name && b["roleRef"]["kind"] == role["kind"]),
                "{mode}: {} {name} is bound",
                role["kind"]
            );
        }
        let extra: BTreeSet<_> = got.difference(&base_permissions).cloned().collect();
        let missing: BTreeSet<_> = base_permissions.difference(&got).cloned().collect();
        assert!(missing.is_empty(), "{mode}: lacks {missing:?}");
        let want: BTreeSet<(String, String, Grant)> = if mode == "selfManaged" {
            let secret = |verb: &str| {
                (
                    sa.clone(),
                    NAMESPACE.to_owned(),
                    (
                        String::new(),
                        "secrets".to_owned(),
                        verb.to_owned(),
                        vec!["sbmesh-serving-cert".to_owned()],
                    ),
                )
            };
            let mwc = |verb: &str| {
                (
                    sa.clone(),
                    "cluster".to_owned(),
                    (
                        "admissionregistration.k8s.io".to_owned(),
                        "mutatingwebhookconfigurations".to_owned(),
                        verb.to_owned(),
                        vec![WEBHOOK_CONFIGURATION.to_owned()],
                    ),
                )
            };
            [secret("get"), secret("update"), mwc("get"), mwc("patch")].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            extra, want,
            "{mode}: the chart's RBAC beyond manifests/base's"
        );
        for (_, _, (_, resource, verb, names)) in &got {
            assert!(
                verb != "create" && verb != "delete" && verb != "*" && resource != "*",
                "{mode}: {verb} on {resource}"
            );
            if resource == "secrets" {
                assert!(!names.is_empty(), "{mode}: secrets only by name");
            }
        }
    }
}

#[test]
fn self_managed_secret_is_empty_kept_and_never_mounted() {
    let Some(helm) = helm::helm("self_managed_secret_is_empty_kept_and_never_mounted") else {
        return;
    };
    let docs = render(helm, &mode_values("selfManaged"));
    let secret = find(&docs, "Secret", "sbmesh-serving-cert");
    assert_eq!(secret["type"], "Opaque");
    assert!(
        secret.get("data").is_none() && secret.get("stringData").is_none(),
        "the chart never writes the pair: {secret}"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "an uninstall or a mode change must not delete a live CA"
    );
    let spec = &deployment(&docs)["spec"]["template"]["spec"];
    assert!(
        !spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.get("secret").is_some()),
        "no Secret volume: the pair is served from memory"
    );
}

/// The lookup of the live webhook configuration in the chart's template.
const LIVE_LOOKUP: &str =
    r#"lookup "admissionregistration.k8s.io/v1" "MutatingWebhookConfiguration" "" $name"#;

#[test]
fn self_managed_carries_the_live_ca_bundle_over_an_upgrade() {
    let Some(helm) = helm::helm("self_managed_carries_the_live_ca_bundle_over_an_upgrade") else {
        return;
    };
    // Outside a cluster lookup is empty (checked by webhook_configuration_is_the_bases_...). To
    // see what an upgrade against a live cluster renders, a copy of the chart has the lookup
    // answer what the API server would: the live object, whose caBundle the webhook wrote,
    // with another webhook beside it.
    let template = chart_file("templates/mutatingwebhookconfiguration.yaml");
    assert_eq!(
        template.matches(LIVE_LOOKUP).count(),
        1,
        "the chart looks the live webhook configuration up"
    );
    let live = format!(
        r#"dict "webhooks" (list (dict "name" "other.example.com" "clientConfig" (dict "caBundle" "T1RIRVI=")) (dict "name" "{WEBHOOK}" "clientConfig" (dict "caBundle" "TElWRQ==")))"#
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("sbmesh");
    copy_tree(&repo().join("charts/sbmesh"), &copy);
    std::fs::write(
        copy.join("templates/mutatingwebhookconfiguration.yaml"),
        template.replace(LIVE_LOOKUP, &live),
    )
    .unwrap();
    let render = |values: &Value| {
        helm.render_chart(&copy, values, RELEASE, NAMESPACE)
            .unwrap_or_else(|e| panic!("{values}: {e}"))
            .objects()
    };
    assert_eq!(
        webhook(&render(&json!({})))["clientConfig"]["caBundle"],
        "TElWRQ==",
        "selfManaged keeps the CA the webhook wrote"
    );
    // The other modes own the caBundle: never the live one.
    assert!(
        webhook(&render(&mode_values("certManager")))["clientConfig"]
            .get("caBundle")
            .is_none()
    );
    assert_eq!(
        webhook(&render(&mode_values("existingSecret")))["clientConfig"]["caBundle"],
        json!(ca_bundle())
    );
}

#[test]
fn cert_manager_objects_are_the_overlays() {
    let Some(helm) = helm::helm("cert_manager_objects_are_the_overlays") else {
        return;
    };
    let docs = render(helm, &mode_values("certManager"));
    for kind in ["Issuer", "Certificate"] {
        let ours = all_of(&docs, kind);
        let theirs = all_of(cert_manager_overlay(), kind);
        assert_eq!(ours.len(), theirs.len(), "{kind}s");
        for theirs in theirs {
            let name = theirs["metadata"]["name"].as_str().unwrap();
            assert_eq!(
                without_labels(find(&docs, kind, name)),
                without_labels(theirs),
                "{kind} {name}: the chart's differs from manifests/overlays/cert-manager's"
            );
        }
    }
    // The Certificate fills the Secret the Deployment mounts.
    let mounted = deployment(&docs)["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("tls volume")["secret"]["secretName"]
        .clone();
    assert_eq!(
        find(&docs, "Certificate", "sbmesh-serving")["spec"]["secretName"],
        mounted
    );
}

#[test]
fn existing_secret_mode_requires_its_secret_and_a_ca() {
    let Some(helm) = helm::helm("existing_secret_mode_requires_its_secret_and_a_ca") else {
        return;
    };
    let e = render_error(helm, &json!({"certs": {"mode": "existingSecret"}}));
    assert!(
        e.message.contains("certs.existingSecret.name is required"),
        "{e}"
    );
    let e = render_error(
        helm,
        &json!({"certs": {"mode": "existingSecret", "existingSecret": {"name": "mine"}}}),
    );
    assert!(
        e.message.contains("certs.existingSecret.caBundle") && e.message.contains("is required"),
        "{e}"
    );
    let not_pem = base64::engine::general_purpose::STANDARD.encode("hello");
    let e = render_error(
        helm,
        &json!({"certs": {"mode": "existingSecret",
                          "existingSecret": {"name": "mine", "caBundle": not_pem}}}),
    );
    assert!(e.message.contains("base64-encoded PEM"), "{e}");

    // Or cert-manager's cainjector copies the Secret's ca.crt.
    let docs = render(
        helm,
        &json!({"certs": {"mode": "existingSecret",
                          "existingSecret": {"name": "mine", "injectCaFromSecret": true}}}),
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION);
    assert_eq!(
        mwc["metadata"]["annotations"],
        json!({"cert-manager.io/inject-ca-from-secret": format!("{NAMESPACE}/mine")})
    );
    assert!(webhook(&docs)["clientConfig"].get("caBundle").is_none());
}

// ----------------------------------------------------------------------------------------------
// (3) Kubernetes 1.33 OpenAPI schema, strict

#[test]
fn rendered_objects_validate_against_kubernetes_1_33_strictly() {
    let Some(helm) = helm::helm("rendered_objects_validate_against_kubernetes_1_33_strictly")
    else {
        return;
    };
    let mut sets: Vec<(String, Vec<Value>)> = MODES
        .iter()
        .map(|mode| (mode.to_string(), render(helm, &mode_values(mode))))
        .collect();
    for mode in MODES {
        let mut values = everything_values();
        values["certs"] = json!({"mode": mode});
        if mode == "existingSecret" {
            values["certs"] = mode_values(mode)["certs"].clone();
        }
        sets.push((
            format!("{mode}, every value set"),
            render_in(helm, &values, "payments", "mesh").objects(),
        ));
    }
    for (what, objects) in sets {
        // cert-manager's CRDs are not part of the Kubernetes schema.
        let (custom, core): (Vec<Value>, Vec<Value>) = objects.into_iter().partition(|o| {
            o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("cert-manager.io/"))
        });
        assert!(
            custom
                .iter()
                .all(|o| o["kind"] == "Issuer" || o["kind"] == "Certificate"),
            "{what}"
        );
        let results = helm.validate(KUBE_VERSION, &core);
        assert_eq!(results.len(), core.len());
        for r in results {
            assert!(
                r.error.is_none(),
                "{what}: {} {} is not a valid Kubernetes {KUBE_VERSION} object: {}",
                r.kind,
                r.name,
                r.error.unwrap()
            );
        }
    }
}

#[test]
fn the_schema_check_refuses_what_kubernetes_would() {
    // The validation above can fail: unknown fields and wrong types are caught.
    let Some(helm) = helm::helm("the_schema_check_refuses_what_kubernetes_would") else {
        return;
    };
    let docs = render(helm, &mode_values("certManager"));
    let mut unknown = deployment(&docs).clone();
    unknown["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = json!({});
    let mut wrong_type = find(&docs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION).clone();
    wrong_type["webhooks"][0]["timeoutSeconds"] = json!("5");
    let mut no_kind_schema = deployment(&docs).clone();
    no_kind_schema["kind"] = json!("Deploymint");
    let results = helm.validate(KUBE_VERSION, &[unknown, wrong_type, no_kind_schema]);
    for r in &results {
        assert!(r.error.is_some(), "{} {} passed", r.kind, r.name);
    }
    assert!(
        results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("securityContxt"),
        "{:?}",
        results[0].error
    );
}

// ----------------------------------------------------------------------------------------------
// (4) Values reach the config file, which the webhook loads

fn config_text(docs: &[Value], fullname: &str) -> String {
    find(docs, "ConfigMap", &format!("{fullname}-config"))["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml")
        .to_owned()
}

#[test]
fn a_boundary_value_reaches_the_config_file_the_webhook_loads() {
    let Some(helm) = helm::helm("a_boundary_value_reaches_the_config_file_the_webhook_loads")
    else {
        return;
    };
    let docs = render(
        helm,
        &json!({"config": {"boundaries": {"allowedEntities": ["queue/*"]}}}),
    );
    let text = config_text(&docs, "sbmesh");
    assert!(text.contains("queue/*"), "{text}");
    let (config, params) = load_config("allowedEntities", &text);
    assert_eq!(
        config,
        json!({"boundaries": {"allowedEntities": ["queue/*"]}}),
        "only the key set is written"
    );
    let b = &params.defaults.boundaries;
    assert!(b.entities.is_some(), "the entity boundary is in force");
    assert!(b.servicebus_namespaces.is_none() && b.client_ids.is_none());
    // The mounted file is this ConfigMap's config.yaml, where SBMESH_CONFIG points.
    let c = container(&docs);
    assert_eq!(
        objects::env_value(c, "SBMESH_CONFIG"),
        Some("/etc/sbmesh/config/config.yaml")
    );
}

#[test]
fn every_config_key_reaches_the_file_and_means_what_it_says() {
    let Some(helm) = helm::helm("every_config_key_reaches_the_file_and_means_what_it_says") else {
        return;
    };
    let given = every_config_value();
    let docs = render(helm, &json!({"config": given}));
    let (config, params) = load_config("every key", &config_text(&docs, "sbmesh"));
    assert_eq!(config, given, "every key written as given");
    let keys: BTreeSet<&str> = config
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, file_config_fields(), "every FileConfig key");
    // The same settings as the values written straight into a file (JSON is YAML).
    let (_, direct) = load_config("direct", &given.to_string());
    assert_eq!(params, direct);
    let d = &params.defaults;
    assert_eq!(d.cloud, sbmesh::contract::Cloud::China);
    assert_eq!(d.egress, sbmesh::contract::Egress::Bypass);
    assert_eq!(d.token_expiration.seconds(), 7200);
    assert_eq!(d.mesh_exclude_outbound_ports, vec![15020, 15021]);
    assert!(d.native_sidecar && d.require_boundaries);
    assert_eq!(d.telemetry, sbmesh::contract::Telemetry::Otel);
    assert!(d.boundaries.client_ids.is_some());

    // Set-but-empty values are values: false, [] (an empty boundary allows nothing).
    let docs = render(
        helm,
        &json!({"config": {"nativeSidecar": false, "meshExcludeOutboundPorts": [],
                           "telemetry": "off", "boundaries": {"allowedEntities": []}}}),
    );
    let (config, params) = load_config("empty values", &config_text(&docs, "sbmesh"));
    assert_eq!(
        config,
        json!({"nativeSidecar": false, "meshExcludeOutboundPorts": [], "telemetry": "off",
               "boundaries": {"allowedEntities": []}})
    );
    assert!(params.defaults.boundaries.entities.is_some());
}

#[test]
fn a_config_change_rolls_the_pods() {
    let Some(helm) = helm::helm("a_config_change_rolls_the_pods") else {
        return;
    };
    let checksum = |values: Value| {
        deployment(&render(helm, &values))["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .clone()
    };
    assert_ne!(
        checksum(json!({})),
        checksum(json!({"config": {"egress": "bypass"}})),
        "the server reads its config once, at start"
    );
}

// ----------------------------------------------------------------------------------------------
// (5) values.schema.json refuses what the webhook or the chart cannot use

#[test]
fn values_schema_refuses_a_bad_cert_mode_an_unknown_key_and_bad_enums() {
    let Some(helm) =
        helm::helm("values_schema_refuses_a_bad_cert_mode_an_unknown_key_and_bad_enums")
    else {
        return;
    };
    let cases = [
        (json!({"certs": {"mode": "vault"}}), "/certs/mode"),
        (
            json!({"replicaCount": 3}),
            "additional properties 'replicaCount'",
        ),
        (json!({"config": {"cloud": "mars"}}), "/config/cloud"),
        (json!({"config": {"egress": "direct"}}), "/config/egress"),
        (
            json!({"config": {"identityMode": "workload"}}),
            "/config/identityMode",
        ),
        (
            json!({"config": {"connectionStringPolicy": "allow"}}),
            "/config/connectionStringPolicy",
        ),
        (
            json!({"config": {"requireDedicatedServiceAccount": "yes"}}),
            "/config/requireDedicatedServiceAccount",
        ),
        (json!({"config": {"telemetry": "on"}}), "/config/telemetry"),
        (
            json!({"config": {"tenantID": "x"}}),
            "additional properties 'tenantID'",
        ),
        (
            json!({"config": {"boundaries": {"allowedQueues": ["a"]}}}),
            "additional properties 'allowedQueues'",
        ),
        (
            json!({"config": {"tokenExpiration": 60}}),
            "/config/tokenExpiration",
        ),
        (
            json!({"config": {"tenantId": "not-a-guid"}}),
            "/config/tenantId",
        ),
        (
            json!({"webhook": {"failurePolicy": "Retry"}}),
            "/webhook/failurePolicy",
        ),
        (
            json!({"webhook": {"timeoutSeconds": 31}}),
            "/webhook/timeoutSeconds",
        ),
        (json!({"logFormat": "xml"}), "/logFormat"),
        // null deletes a default in Helm: the chart would have no cert mode at all.
        (json!({"certs": null}), "certs"),
    ];
    for (values, says) in cases {
        let e = render_error(helm, &values);
        assert_eq!(e.kind, "HelmValuesError", "{values}: {e}");
        assert!(
            e.message
                .contains("values don't meet the specifications of the schema")
                && e.message.contains(says),
            "{values}: the schema error names {says}: {e}"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// (6) is chart_app_version_is_the_crate_version above. The values and what they reach:

#[test]
fn every_value_reaches_its_object() {
    let Some(helm) = helm::helm("every_value_reaches_its_object") else {
        return;
    };
    let (release, namespace, fullname) = ("payments", "mesh", "payments-sbmesh");
    let docs = render_in(helm, &everything_values(), release, namespace).objects();
    let mwc_name = format!("00-{fullname}");

    let d = find(&docs, "Deployment", fullname);
    let pod = &d["spec"]["template"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(c["image"], "registry.example/sbmesh:9.9.9");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(
        spec["imagePullSecrets"],
        json!([{"name": "regcred"}, {"name": "other-regcred"}])
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        pod["metadata"]["labels"]["sidecar.istio.io/inject"],
        "false"
    );
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(spec["tolerations"], everything_values()["tolerations"]);
    assert_eq!(spec["affinity"], everything_values()["affinity"]);
    assert_eq!(
        spec["topologySpreadConstraints"],
        everything_values()["topologySpreadConstraints"]
    );
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["serviceAccountName"], fullname);
    let env = |name: &str| objects::env_value(c, name).map(str::to_owned);
    assert_eq!(env("SBMESH_LOG_FORMAT").as_deref(), Some("text"));
    assert_eq!(env("SBMESH_LOG").as_deref(), Some("sbmesh=debug"));
    assert_eq!(
        env("SBMESH_REQUEST_TIMEOUT_MS").as_deref(),
        Some("9000"),
        "the server answers within webhook.timeoutSeconds"
    );
    assert_eq!(
        strings(&c["args"]),
        [
            "serve",
            "--certs",
            "self-managed",
            "--certs-secret",
            &format!("{fullname}-serving-cert"),
            "--service",
            fullname,
            "--webhook-configuration",
            &mwc_name,
        ]
    );
    assert_eq!(
        find(&docs, "PodDisruptionBudget", fullname)["spec"]["minAvailable"],
        2
    );

    let mwc = find(&docs, "MutatingWebhookConfiguration", &mwc_name);
    let hook = &mwc["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["timeoutSeconds"], 10);
    assert_eq!(
        hook["namespaceSelector"],
        json!({"matchLabels": {"sbmesh.io/enabled": "true"}})
    );
    assert_eq!(
        hook["objectSelector"],
        everything_values()["webhook"]["objectSelector"]
    );
    assert_eq!(
        hook["clientConfig"]["service"],
        json!({"name": fullname, "namespace": namespace, "path": "/mutate", "port": 443})
    );
    assert!(find(&docs, "Service", fullname).is_object());

    // The self-managed RBAC names this release's Secret and webhook configuration.
    assert_eq!(
        find(&docs, "Role", &format!("{fullname}-certs"))["rules"][0]["resourceNames"],
        json!([format!("{fullname}-serving-cert")])
    );
    assert_eq!(
        find(&docs, "ClusterRole", &format!("{fullname}-cabundle"))["rules"][0]["resourceNames"],
        json!([mwc_name])
    );
    find(&docs, "Secret", &format!("{fullname}-serving-cert"));

    for doc in &docs {
        let what = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
        assert_eq!(doc["metadata"]["labels"]["cost-center"], "cc-42", "{what}");
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/instance"], release,
            "{what}"
        );
        assert_eq!(
            doc["metadata"]["annotations"]["owner"], "platform@example.com",
            "{what}"
        );
        if doc["metadata"].get("namespace").is_some() {
            assert_eq!(doc["metadata"]["namespace"], namespace, "{what}");
        }
    }
    assert_eq!(
        pod["metadata"]["labels"]["cost-center"], "cc-42",
        "commonLabels on the pods too"
    );
    // The selector is never widened by labels a user adds.
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        selector_labels(release)
    );

    // Defaults of the same release: the namespace it runs in is the one the webhook skips.
    let docs = render_in(helm, &json!({}), release, namespace).objects();
    let hook = &find(&docs, "MutatingWebhookConfiguration", &mwc_name)["webhooks"][0];
    assert_eq!(
        strings(&hook["namespaceSelector"]["matchExpressions"][0]["values"]),
        ["kube-system", namespace]
    );
    assert!(hook.get("objectSelector").is_none());
    let c = &find(&docs, "Deployment", fullname)["spec"]["template"]["spec"]["containers"][0];
    assert!(
        objects::env_value(c, "SBMESH_REQUEST_TIMEOUT_MS").is_none(),
        "the built-in 4000 ms fits the default 5 s"
    );

    // topologySpreadConstraints: [] spreads nothing.
    let docs = render(helm, &json!({"topologySpreadConstraints": []}));
    assert!(
        deployment(&docs)["spec"]["template"]["spec"]
            .get("topologySpreadConstraints")
            .is_none()
    );
}

#[test]
fn notes_say_how_to_opt_a_pod_in_and_how_to_check_it() {
    use sbmesh::contract::keys;
    let Some(helm) = helm::helm("notes_say_how_to_opt_a_pod_in_and_how_to_check_it") else {
        return;
    };
    let mut seen = BTreeMap::new();
    for mode in MODES {
        let rendered = render_in(helm, &mode_values(mode), RELEASE, NAMESPACE);
        let notes = rendered.notes().to_owned();
        for needle in [
            format!("{}: \"true\"", keys::INJECT),
            keys::AWI_CLIENT_ID.to_owned(),
            keys::AWI_TENANT_ID.to_owned(),
            keys::SERVICEBUS_NAMESPACE.to_owned(),
            format!(
                "kubectl -n <ns> get pod <pod> -o jsonpath='{{.metadata.annotations.{}}}'",
                keys::STATUS.replace('.', "\\.")
            ),
            format!(
                "kubectl annotate namespace <ns> {}=",
                keys::SERVICEBUS_NAMESPACE
            ),
        ] {
            assert!(
                notes.contains(&needle),
                "{mode}: NOTES.txt lacks {needle}:\n{notes}"
            );
        }
        seen.insert(mode, notes);
    }
    assert!(seen["selfManaged"].contains("sbmesh-serving-cert"));
    assert!(seen["certManager"].contains("cert-manager"));
    assert!(seen["existingSecret"].contains(EXISTING_SECRET));
}

#[test]
fn helm_engine_is_the_pinned_one() {
    let Some(helm) = helm::helm("helm_engine_is_the_pinned_one") else {
        return;
    };
    let versions = helm.versions();
    let requirements = std::fs::read_to_string(repo().join("tests/chart/requirements.txt"))
        .expect("requirements.txt");
    for (package, key) in [
        ("helm-python-sdk", "helm_python_sdk"),
        ("kubernetes-validate", "kubernetes_validate"),
    ] {
        let pin = format!("{package}=={}", versions[key].as_str().unwrap());
        assert!(
            requirements.lines().any(|l| l.trim() == pin),
            "the venv runs {pin}, requirements.txt pins otherwise"
        );
    }
    assert!(
        versions["helm_sdk"].as_str().unwrap().starts_with("v4."),
        "Helm v4's engine: {versions}"
    );
}
