//! The deployment contract (DESIGN §5, issue 4): every kustomization under `manifests/` is
//! rendered with `kubectl kustomize` and the objects are checked field by field. The dev and e2e
//! overlays are rendered from a temporary copy of `manifests/` after `certs/make-dev-certs.sh`
//! has run there with the `sbmesh` binary of this build, so the repository is never written.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::Value;

#[path = "shared/objects.rs"]
mod objects;
use objects::{
    NAMESPACE, OPT_IN_EXPRESSION, WEBHOOK, WEBHOOK_CONFIGURATION, all_of, config, container,
    copy_tree, deployment, env_value, find, grants, kustomize, labels_match, pod_spec, repo,
    strings, webhook,
};

// ----------------------------------------------------------------------------------------------
// Rendering

fn rendered(cell: &'static OnceLock<Vec<Value>>, dir: &str) -> &'static [Value] {
    cell.get_or_init(|| kustomize(&repo().join(dir)))
}

fn base() -> &'static [Value] {
    static CELL: OnceLock<Vec<Value>> = OnceLock::new();
    rendered(&CELL, "manifests/base")
}

fn cert_manager() -> &'static [Value] {
    static CELL: OnceLock<Vec<Value>> = OnceLock::new();
    rendered(&CELL, "manifests/overlays/cert-manager")
}

fn istio() -> &'static [Value] {
    static CELL: OnceLock<Vec<Value>> = OnceLock::new();
    rendered(&CELL, "manifests/istio")
}

fn egress_gateway() -> &'static [Value] {
    static CELL: OnceLock<Vec<Value>> = OnceLock::new();
    rendered(&CELL, "manifests/istio/egress-gateway")
}

/// A copy of `manifests/` with the dev overlay's certificate made by `certs/make-dev-certs.sh`
/// and this build's `sbmesh certs`, as a developer (or the e2e runner) would.
struct DevCopy {
    _dir: tempfile::TempDir,
    generated: PathBuf,
    dev: Vec<Value>,
    e2e: Vec<Value>,
}

fn dev_copy() -> &'static DevCopy {
    static CELL: OnceLock<DevCopy> = OnceLock::new();
    CELL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let manifests = dir.path().join("manifests");
        copy_tree(&repo().join("manifests"), &manifests);
        let overlay = manifests.join("overlays/dev");
        let generated = overlay.join("generated");
        // A developer's own generated files must not stand in for the script's.
        for entry in std::fs::read_dir(&generated).expect("overlays/dev/generated exists") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name != "README.md" && name != ".gitignore" {
                std::fs::remove_file(&path).expect("remove generated file");
            }
        }
        let output = Command::new("bash")
            .arg(repo().join("certs/make-dev-certs.sh"))
            .arg("--sbmesh")
            .arg(env!("CARGO_BIN_EXE_sbmesh"))
            .arg("--out")
            .arg(dir.path().join("certs-out"))
            .arg("--overlay")
            .arg(&overlay)
            .output()
            .expect("run certs/make-dev-certs.sh");
        assert!(
            output.status.success(),
            "certs/make-dev-certs.sh failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let dev = kustomize(&overlay);
        let e2e = kustomize(&manifests.join("overlays/e2e"));
        DevCopy {
            _dir: dir,
            generated,
            dev,
            e2e,
        }
    })
}

/// The overlays that install the webhook and render on any checkout (no generated certificate).
/// The dev and e2e overlays are held to the same contract by comparing them with the base.
fn installable() -> [(&'static str, &'static [Value]); 2] {
    [("base", base()), ("cert-manager", cert_manager())]
}

// ----------------------------------------------------------------------------------------------
// Every object

#[test]
fn every_rendered_object_has_api_version_kind_and_name() {
    // The dev and e2e overlays' objects are the base's (dev_and_e2e_overlays_change_only_...).
    let sets: [(&str, &[Value]); 4] = [
        ("base", base()),
        ("cert-manager", cert_manager()),
        ("istio", istio()),
        ("istio/egress-gateway", egress_gateway()),
    ];
    for (overlay, docs) in sets {
        for doc in docs {
            for field in ["apiVersion", "kind"] {
                assert!(
                    doc[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{overlay}: an object has no {field}: {doc}"
                );
            }
            assert!(
                doc["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{overlay}: a {} has no metadata.name",
                doc["kind"]
            );
        }
    }
}

#[test]
fn namespaced_objects_live_in_sbmesh_system() {
    const CLUSTER_SCOPED: [&str; 4] = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    ];
    for (overlay, docs) in installable() {
        find(docs, "Namespace", NAMESPACE);
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if CLUSTER_SCOPED.contains(&kind) {
                assert!(
                    doc["metadata"].get("namespace").is_none(),
                    "{overlay}: {kind} is cluster-scoped"
                );
            } else {
                assert_eq!(
                    doc["metadata"]["namespace"], NAMESPACE,
                    "{overlay}: {kind} {}",
                    doc["metadata"]["name"]
                );
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// MutatingWebhookConfiguration (DESIGN §5)

#[test]
fn webhook_configuration_is_named_00_sbmesh_to_run_before_istio_and_azure_wi() {
    for (overlay, docs) in installable() {
        let mwcs = all_of(docs, "MutatingWebhookConfiguration");
        assert_eq!(mwcs.len(), 1, "{overlay}: one webhook configuration");
        assert_eq!(
            mwcs[0]["metadata"]["name"], WEBHOOK_CONFIGURATION,
            "{overlay}"
        );
        assert!(WEBHOOK_CONFIGURATION < "azure-wi-webhook-mutating-webhook-configuration");
        assert!(WEBHOOK_CONFIGURATION < "istio-sidecar-injector");
        assert!(WEBHOOK_CONFIGURATION < "istio-revision-tag-default");
    }
}

#[test]
fn webhook_configuration_holds_one_webhook_named_sbmesh_sbmesh_io() {
    for (overlay, docs) in installable() {
        assert_eq!(webhook(docs)["name"], WEBHOOK, "{overlay}");
    }
}

#[test]
fn webhook_speaks_admission_review_v1_only() {
    for (overlay, docs) in installable() {
        assert_eq!(
            strings(&webhook(docs)["admissionReviewVersions"]),
            ["v1"],
            "{overlay}"
        );
    }
}

#[test]
fn webhook_declares_no_side_effects() {
    for (overlay, docs) in installable() {
        assert_eq!(webhook(docs)["sideEffects"], "None", "{overlay}");
    }
}

#[test]
fn webhook_is_reinvoked_if_needed() {
    for (overlay, docs) in installable() {
        assert_eq!(webhook(docs)["reinvocationPolicy"], "IfNeeded", "{overlay}");
    }
}

#[test]
fn webhook_fails_closed() {
    for (overlay, docs) in installable() {
        assert_eq!(webhook(docs)["failurePolicy"], "Fail", "{overlay}");
    }
}

#[test]
fn webhook_times_out_after_5_seconds() {
    for (overlay, docs) in installable() {
        assert_eq!(webhook(docs)["timeoutSeconds"], 5, "{overlay}");
    }
}

#[test]
fn webhook_match_policy_is_equivalent() {
    for (overlay, docs) in installable() {
        assert_eq!(webhook(docs)["matchPolicy"], "Equivalent", "{overlay}");
    }
}

#[test]
fn webhook_rules_are_pod_create_only() {
    for (overlay, docs) in installable() {
        let rules = webhook(docs)["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 1, "{overlay}: one rule");
        let rule = &rules[0];
        assert_eq!(strings(&rule["operations"]), ["CREATE"], "{overlay}");
        assert_eq!(strings(&rule["apiGroups"]), [""], "{overlay}");
        assert_eq!(strings(&rule["apiVersions"]), ["v1"], "{overlay}");
        assert_eq!(strings(&rule["resources"]), ["pods"], "{overlay}");
        assert_eq!(rule["scope"], "Namespaced", "{overlay}");
    }
}

#[test]
fn webhook_match_condition_tests_only_the_presence_of_the_inject_annotation() {
    for (overlay, docs) in installable() {
        let conditions = webhook(docs)["matchConditions"]
            .as_array()
            .expect("matchConditions");
        assert_eq!(conditions.len(), 1, "{overlay}: one match condition");
        assert_eq!(conditions[0]["name"], "opted-in", "{overlay}");
        assert_eq!(conditions[0]["expression"], OPT_IN_EXPRESSION, "{overlay}");
    }
}

#[test]
fn webhook_skips_kube_system_and_its_own_namespace() {
    for (overlay, docs) in installable() {
        let selector = &webhook(docs)["namespaceSelector"];
        assert!(
            selector.get("matchLabels").is_none(),
            "{overlay}: no matchLabels"
        );
        let exprs = selector["matchExpressions"]
            .as_array()
            .expect("matchExpressions");
        assert_eq!(exprs.len(), 1, "{overlay}: one expression");
        assert_eq!(exprs[0]["key"], "kubernetes.io/metadata.name", "{overlay}");
        assert_eq!(exprs[0]["operator"], "NotIn", "{overlay}");
        let values: BTreeSet<&str> = strings(&exprs[0]["values"]).into_iter().collect();
        assert_eq!(
            values,
            BTreeSet::from(["kube-system", NAMESPACE]),
            "{overlay}"
        );
    }
}

#[test]
fn webhook_calls_service_sbmesh_on_443_at_mutate() {
    for (overlay, docs) in installable() {
        let client = &webhook(docs)["clientConfig"];
        assert!(client.get("url").is_none(), "{overlay}: service, not url");
        let service = &client["service"];
        assert_eq!(service["name"], "sbmesh", "{overlay}");
        assert_eq!(service["namespace"], NAMESPACE, "{overlay}");
        assert_eq!(service["path"], "/mutate", "{overlay}");
        assert_eq!(service["port"], 443, "{overlay}");
        // The Service it names exists and maps 443 to the webhook's port.
        let svc = find(docs, "Service", "sbmesh");
        assert!(
            svc["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["port"] == 443),
            "{overlay}: Service sbmesh has port 443"
        );
    }
}

#[test]
fn cert_manager_overlay_leaves_the_webhook_as_in_the_base() {
    // The caBundle comes from cainjector at run time, not from the manifests.
    assert_eq!(webhook(cert_manager()), webhook(base()));
}

#[test]
fn dev_and_e2e_overlays_change_only_certificate_image_and_config() {
    let base = base();
    for (overlay, docs) in [("dev", &dev_copy().dev), ("e2e", &dev_copy().e2e)] {
        for doc in docs {
            let (kind, name) = (
                doc["kind"].as_str().unwrap(),
                doc["metadata"]["name"].as_str().unwrap(),
            );
            if (kind, name) == ("Secret", "sbmesh-tls") {
                continue; // the overlay's own object, checked by dev_overlay_carries_...
            }
            let mut doc = doc.clone();
            match kind {
                "MutatingWebhookConfiguration" => {
                    let client = doc["webhooks"][0]["clientConfig"]
                        .as_object_mut()
                        .expect("clientConfig");
                    assert!(
                        client.remove("caBundle").is_some(),
                        "{overlay}: caBundle set"
                    );
                }
                "ConfigMap" if overlay == "e2e" => continue, // e2e_overlay_injects_with_...
                "Deployment" if overlay == "e2e" => undo_e2e_component(&mut doc, overlay),
                _ => {}
            }
            assert_eq!(
                &doc,
                find(base, kind, name),
                "{overlay}: {kind} {name} differs from the base"
            );
        }
        assert_eq!(
            docs.len(),
            base.len() + 1,
            "{overlay}: the base's objects and Secret sbmesh-tls"
        );
    }
}

/// Takes back from a Deployment what components/e2e changes: the image, its pull policy, the
/// identity mode and cluster lookups.
fn undo_e2e_component(deployment: &mut Value, overlay: &str) {
    let c = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "sbmesh:e2e", "{overlay}");
    assert_eq!(c["imagePullPolicy"], "Never", "{overlay}");
    c["image"] = Value::from("ghcr.io/sbmesh/sbmesh:latest");
    c["imagePullPolicy"] = Value::from("IfNotPresent");
    let env = c["env"].as_array_mut().expect("env");
    env.retain(|e| e["name"] != "SBMESH_IDENTITY_MODE" && e["name"] != "SBMESH_CLUSTER");
}

/// The cert-manager e2e overlay is the cert-manager overlay with the same e2e changes as the
/// dev one (components/e2e): the same objects, certificates and cainjector annotation.
#[test]
fn e2e_cert_manager_overlay_is_the_cert_manager_overlay_with_the_e2e_component() {
    let e2e = kustomize(&repo().join("manifests/overlays/e2e-cert-manager"));
    let cm = cert_manager();
    assert_eq!(e2e.len(), cm.len(), "the same objects");
    for doc in &e2e {
        let (kind, name) = (
            doc["kind"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap(),
        );
        let mut doc = doc.clone();
        match kind {
            "ConfigMap" => {
                let config = doc["data"]["config.yaml"].as_str().expect("config.yaml");
                assert!(config.contains("tenantId: e2e0e2e0-"), "{config}");
                continue;
            }
            "Deployment" => undo_e2e_component(&mut doc, "e2e-cert-manager"),
            _ => {}
        }
        assert_eq!(
            &doc,
            find(cm, kind, name),
            "e2e-cert-manager: {kind} {name} differs from the cert-manager overlay"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Deployment hardening

#[test]
fn deployment_runs_two_replicas_spread_over_nodes() {
    for (overlay, docs) in installable() {
        let spec = &deployment(docs)["spec"];
        assert!(
            spec["replicas"].as_u64().is_some_and(|r| r >= 2),
            "{overlay}: 2+ replicas"
        );
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{overlay}: surge, never drop below replicas"
        );
        let spread = pod_spec(docs)["topologySpreadConstraints"]
            .as_array()
            .expect("topologySpreadConstraints");
        let by_host = spread
            .iter()
            .find(|c| c["topologyKey"] == "kubernetes.io/hostname")
            .unwrap_or_else(|| panic!("{overlay}: no spread over kubernetes.io/hostname"));
        assert_eq!(by_host["whenUnsatisfiable"], "ScheduleAnyway", "{overlay}");
        assert_eq!(by_host["maxSkew"], 1, "{overlay}");
        let labels = &deployment(docs)["spec"]["template"]["metadata"]["labels"];
        assert!(
            labels_match(&by_host["labelSelector"]["matchLabels"], labels),
            "{overlay}: spread selects the webhook pods"
        );
    }
}

#[test]
fn probes_use_the_plain_http_admin_port() {
    for (overlay, docs) in installable() {
        let c = container(docs);
        let admin = c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["containerPort"] == 9090)
            .unwrap_or_else(|| panic!("{overlay}: container port 9090"));
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{overlay}: {probe}");
            assert!(
                get["port"] == 9090 || get["port"] == admin["name"],
                "{overlay}: {probe} on the admin port, saw {}",
                get["port"]
            );
            assert!(
                get.get("scheme").is_none() || get["scheme"] == "HTTP",
                "{overlay}: {probe} is plain HTTP"
            );
        }
    }
}

#[test]
fn container_requests_and_limits() {
    for (overlay, docs) in installable() {
        let resources = &container(docs)["resources"];
        assert_eq!(resources["requests"]["cpu"], "50m", "{overlay}");
        assert_eq!(resources["requests"]["memory"], "32Mi", "{overlay}");
        assert_eq!(resources["limits"]["memory"], "128Mi", "{overlay}");
        assert!(
            resources["limits"].get("cpu").is_none(),
            "{overlay}: no CPU limit (throttling adds admission latency)"
        );
    }
}

#[test]
fn pod_runs_as_non_root_uid_65532() {
    for (overlay, docs) in installable() {
        let sc = &pod_spec(docs)["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{overlay}");
        assert_eq!(sc["runAsUser"], 65532, "{overlay}");
        assert_eq!(sc["runAsGroup"], 65532, "{overlay}");
        assert_eq!(sc["fsGroup"], 65532, "{overlay}");
    }
}

#[test]
fn pod_seccomp_profile_is_runtime_default() {
    for (overlay, docs) in installable() {
        assert_eq!(
            pod_spec(docs)["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault",
            "{overlay}"
        );
    }
}

#[test]
fn container_root_filesystem_is_read_only() {
    for (overlay, docs) in installable() {
        assert_eq!(
            container(docs)["securityContext"]["readOnlyRootFilesystem"],
            true,
            "{overlay}"
        );
    }
}

#[test]
fn container_cannot_escalate_privileges() {
    for (overlay, docs) in installable() {
        let sc = &container(docs)["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}");
        assert!(
            sc.get("privileged").is_none() || sc["privileged"] == false,
            "{overlay}"
        );
    }
}

#[test]
fn container_drops_all_capabilities() {
    for (overlay, docs) in installable() {
        let caps = &container(docs)["securityContext"]["capabilities"];
        assert_eq!(strings(&caps["drop"]), ["ALL"], "{overlay}");
        assert!(caps.get("add").is_none(), "{overlay}: adds no capability");
    }
}

#[test]
fn pod_is_kept_out_of_the_istio_mesh() {
    for (overlay, docs) in installable() {
        let labels = &deployment(docs)["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            labels["sidecar.istio.io/inject"], "false",
            "{overlay}: a string label \"false\""
        );
    }
}

#[test]
fn pod_mounts_its_service_account_token_for_the_api() {
    for (overlay, docs) in installable() {
        let spec = pod_spec(docs);
        assert_eq!(spec["automountServiceAccountToken"], true, "{overlay}");
        assert_eq!(spec["serviceAccountName"], "sbmesh", "{overlay}");
        find(docs, "ServiceAccount", "sbmesh");
    }
}

#[test]
fn container_logs_json() {
    for (overlay, docs) in installable() {
        assert_eq!(
            env_value(container(docs), "SBMESH_LOG_FORMAT"),
            Some("json"),
            "{overlay}"
        );
    }
}

#[test]
fn base_image_is_published_image_pulled_if_not_present() {
    for (overlay, docs) in installable() {
        let c = container(docs);
        assert_eq!(c["image"], "ghcr.io/sbmesh/sbmesh:latest", "{overlay}");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{overlay}");
    }
}

#[test]
fn termination_grace_covers_drain_and_shutdown() {
    for (overlay, docs) in installable() {
        let c = container(docs);
        let seconds = |name: &str, default: u64| {
            env_value(c, name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{overlay}: {name}={v}"))
            })
        };
        let drain = seconds("SBMESH_DRAIN_GRACE_SECONDS", 5);
        let shutdown = seconds("SBMESH_SHUTDOWN_TIMEOUT_SECONDS", 15);
        let pre_stop = &c["lifecycle"]["preStop"];
        assert!(
            pre_stop.get("exec").is_none(),
            "{overlay}: the image is distroless, an exec preStop cannot run"
        );
        let sleep = pre_stop["sleep"]["seconds"].as_u64().unwrap_or(0);
        let grace = pod_spec(docs)["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace >= sleep + drain + shutdown + 5,
            "{overlay}: terminationGracePeriodSeconds {grace} < preStop {sleep} + drain {drain} + shutdown {shutdown} + 5 s margin"
        );
    }
}

#[test]
fn tls_and_config_are_mounted_whole_for_hot_reload() {
    for (overlay, docs) in installable() {
        let c = container(docs);
        let spec = pod_spec(docs);
        let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
        for (dir, source, name) in [
            ("/etc/sbmesh/tls", "secret", "sbmesh-tls"),
            ("/etc/sbmesh/config", "configMap", "sbmesh-config"),
        ] {
            let mount = mounts
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("{overlay}: nothing mounted at {dir}"));
            assert!(
                mount.get("subPath").is_none(),
                "{overlay}: a subPath mount never sees kubelet's updates ({dir})"
            );
            assert_eq!(mount["readOnly"], true, "{overlay}: {dir} read-only");
            let volume = spec["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("{overlay}: volume {}", mount["name"]));
            let named = if source == "secret" {
                &volume[source]["secretName"]
            } else {
                &volume[source]["name"]
            };
            assert_eq!(named, name, "{overlay}: {dir} comes from {source} {name}");
        }
        assert_eq!(
            env_value(c, "SBMESH_TLS_CERT"),
            Some("/etc/sbmesh/tls/tls.crt"),
            "{overlay}"
        );
        assert_eq!(
            env_value(c, "SBMESH_TLS_KEY"),
            Some("/etc/sbmesh/tls/tls.key"),
            "{overlay}"
        );
        assert_eq!(
            env_value(c, "SBMESH_CONFIG"),
            Some("/etc/sbmesh/config/config.yaml"),
            "{overlay}"
        );
    }
}

#[test]
fn config_map_holds_a_config_yaml_with_known_keys_and_no_tenant() {
    for (overlay, docs) in installable() {
        let config = config(overlay, docs);
        // The tenant and the identities are the user's to set, never a shipped default.
        for key in ["tenantId", "clientId", "servicebusNamespace"] {
            assert!(
                config.get(key).is_none(),
                "{overlay}: {key} is left for the user"
            );
        }
    }
}

#[test]
fn selectors_match_the_pod_template_labels() {
    for (overlay, docs) in installable() {
        let labels = &deployment(docs)["spec"]["template"]["metadata"]["labels"];
        let selector = &deployment(docs)["spec"]["selector"]["matchLabels"];
        assert_eq!(
            selector["app.kubernetes.io/name"], "sbmesh",
            "{overlay}: the selector CI's log collection uses"
        );
        assert!(
            labels_match(selector, labels),
            "{overlay}: Deployment selector"
        );
        assert!(
            labels_match(&find(docs, "Service", "sbmesh")["spec"]["selector"], labels),
            "{overlay}: Service selector"
        );
        assert!(
            labels_match(
                &find(docs, "PodDisruptionBudget", "sbmesh")["spec"]["selector"]["matchLabels"],
                labels
            ),
            "{overlay}: PDB selector"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// RBAC, PDB, Service

#[test]
fn cluster_role_grants_exactly_the_verbs_sbmesh_uses() {
    // (apiGroup, resource, verb), none limited to names. Anything else is a finding.
    let want: BTreeSet<objects::Grant> = [
        ("", "serviceaccounts", "get"),
        ("", "serviceaccounts", "list"),
        ("", "serviceaccounts", "watch"),
        ("", "namespaces", "get"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "list",
        ),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "watch",
        ),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.into(), r.into(), v.into(), Vec::new()))
    .collect();
    for (overlay, docs) in installable() {
        let roles: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
            .collect();
        assert_eq!(
            roles.len(),
            1,
            "{overlay}: one role, the ClusterRole sbmesh"
        );
        let role = find(docs, "ClusterRole", "sbmesh");
        assert_eq!(grants(role), want, "{overlay}: ClusterRole sbmesh");
        assert!(
            role.get("aggregationRule").is_none(),
            "{overlay}: no aggregation"
        );
    }
}

#[test]
fn cluster_role_binding_binds_only_the_sbmesh_service_account() {
    for (overlay, docs) in installable() {
        let binding = find(docs, "ClusterRoleBinding", "sbmesh");
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole", "{overlay}");
        assert_eq!(binding["roleRef"]["name"], "sbmesh", "{overlay}");
        let subjects = binding["subjects"].as_array().expect("subjects");
        assert_eq!(subjects.len(), 1, "{overlay}: one subject");
        assert_eq!(subjects[0]["kind"], "ServiceAccount", "{overlay}");
        assert_eq!(subjects[0]["name"], "sbmesh", "{overlay}");
        assert_eq!(subjects[0]["namespace"], NAMESPACE, "{overlay}");
    }
}

#[test]
fn pod_disruption_budget_keeps_one_replica_available() {
    for (overlay, docs) in installable() {
        let pdb = find(docs, "PodDisruptionBudget", "sbmesh");
        assert_eq!(pdb["apiVersion"], "policy/v1", "{overlay}");
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{overlay}");
        assert!(pdb["spec"].get("maxUnavailable").is_none(), "{overlay}");
    }
}

#[test]
fn service_maps_https_443_to_8443_and_metrics_9090() {
    for (overlay, docs) in installable() {
        let ports = find(docs, "Service", "sbmesh")["spec"]["ports"]
            .as_array()
            .expect("ports")
            .clone();
        let port = |name: &str| {
            ports
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{overlay}: Service port {name}"))
                .clone()
        };
        let https = port("https");
        assert_eq!(
            (&https["port"], &https["targetPort"]),
            (&Value::from(443), &Value::from(8443)),
            "{overlay}"
        );
        let metrics = port("metrics");
        assert_eq!(
            (&metrics["port"], &metrics["targetPort"]),
            (&Value::from(9090), &Value::from(9090)),
            "{overlay}"
        );
        let container_ports: Vec<&Value> = container(docs)["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| &p["containerPort"])
            .collect();
        assert!(
            container_ports.contains(&&Value::from(8443))
                && container_ports.contains(&&Value::from(9090)),
            "{overlay}"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// cert-manager overlay

#[test]
fn cert_manager_overlay_injects_the_ca_of_the_serving_certificate() {
    let docs = cert_manager();
    let mwc = find(docs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION);
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "sbmesh-system/sbmesh-serving"
    );
    find(docs, "Certificate", "sbmesh-serving");
}

#[test]
fn cert_manager_certificate_names_the_service_and_fills_sbmesh_tls() {
    let docs = cert_manager();
    let cert = &find(docs, "Certificate", "sbmesh-serving")["spec"];
    let service = &webhook(docs)["clientConfig"]["service"];
    let host = format!(
        "{}.{}.svc",
        service["name"].as_str().unwrap(),
        service["namespace"].as_str().unwrap()
    );
    let names: BTreeSet<&str> = strings(&cert["dnsNames"]).into_iter().collect();
    assert!(
        names.contains(host.as_str()),
        "dnsNames {names:?} lack {host}, the name the API server checks"
    );
    assert!(
        names.contains(format!("{host}.cluster.local").as_str()),
        "dnsNames {names:?}"
    );
    assert_eq!(
        cert["secretName"], "sbmesh-tls",
        "the Secret the Deployment mounts"
    );
}

#[test]
fn cert_manager_certificate_renews_early_with_a_new_key() {
    let docs = cert_manager();
    for name in ["sbmesh-serving", "sbmesh-ca"] {
        let spec = &find(docs, "Certificate", name)["spec"];
        assert!(
            spec["renewBefore"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: renewBefore"
        );
        assert_eq!(spec["privateKey"]["rotationPolicy"], "Always", "{name}");
    }
}

#[test]
fn cert_manager_issuer_chain_is_complete() {
    let docs = cert_manager();
    let issuers: BTreeSet<&str> = all_of(docs, "Issuer")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    for cert in all_of(docs, "Certificate") {
        let issuer = &cert["spec"]["issuerRef"];
        assert_eq!(issuer["kind"], "Issuer", "{}", cert["metadata"]["name"]);
        assert!(
            issuers.contains(issuer["name"].as_str().unwrap()),
            "{}: issuer {} missing",
            cert["metadata"]["name"],
            issuer["name"]
        );
    }
    let ca_issuer = find(docs, "Issuer", "sbmesh-ca");
    let ca_cert = find(docs, "Certificate", "sbmesh-ca");
    assert_eq!(ca_cert["spec"]["isCA"], true);
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca_cert["spec"]["secretName"]
    );
    assert_eq!(
        find(docs, "Certificate", "sbmesh-serving")["spec"]["issuerRef"]["name"],
        "sbmesh-ca"
    );
}

// ----------------------------------------------------------------------------------------------
// dev and e2e overlays

#[test]
fn dev_overlay_carries_a_ca_bundle_and_the_tls_secret() {
    let dev = dev_copy();
    let bundle = webhook(&dev.dev)["clientConfig"]["caBundle"]
        .as_str()
        .expect("caBundle is set");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .expect("caBundle is base64");
    let pem = String::from_utf8(pem).expect("caBundle decodes to text");
    assert!(
        pem.contains("-----BEGIN CERTIFICATE-----"),
        "caBundle is a PEM certificate"
    );
    let ca = std::fs::read_to_string(dev.generated.join("ca.crt")).expect("generated/ca.crt");
    assert_eq!(
        pem.trim_end(),
        ca.trim_end(),
        "caBundle is the CA that certs/make-dev-certs.sh wrote"
    );

    let secret = find(&dev.dev, "Secret", "sbmesh-tls");
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            secret["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "Secret sbmesh-tls has {key}"
        );
    }
}

#[test]
fn e2e_overlay_runs_the_local_image_without_pulling() {
    let c = container(&dev_copy().e2e);
    assert_eq!(c["image"], "sbmesh:e2e");
    assert_eq!(c["imagePullPolicy"], "Never");
}

#[test]
fn e2e_overlay_injects_with_cluster_caches_and_a_tenant() {
    let docs = &dev_copy().e2e;
    let c = container(docs);
    assert_eq!(env_value(c, "SBMESH_IDENTITY_MODE"), Some("inject"));
    assert_eq!(env_value(c, "SBMESH_CLUSTER"), Some("on"));
    let config = config("e2e", docs);
    assert!(
        config["tenantId"].as_str().is_some_and(|t| t.len() == 36),
        "a GUID tenantId, saw {}",
        config["tenantId"]
    );
}

// ----------------------------------------------------------------------------------------------
// Istio

fn port(ports: &Value, number: u64) -> &Value {
    ports
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["number"] == number)
        .unwrap_or_else(|| panic!("no port {number} in {ports}"))
}

#[test]
fn istio_service_entry_admits_service_bus_on_443_and_5671_as_tls() {
    let se = &find(istio(), "ServiceEntry", "azure-servicebus")["spec"];
    assert_eq!(strings(&se["hosts"]), ["*.servicebus.windows.net"]);
    assert_eq!(se["location"], "MESH_EXTERNAL");
    assert_eq!(se["resolution"], "NONE");
    assert_eq!(port(&se["ports"], 443)["protocol"], "TLS");
    let amqps = port(&se["ports"], 5671);
    assert_eq!(amqps["protocol"], "TLS");
    assert_eq!(amqps["name"], "amqps");
}

#[test]
fn istio_service_entry_admits_the_entra_authority() {
    let entra = istio()
        .iter()
        .find(|d| {
            d["kind"] == "ServiceEntry"
                && strings(&d["spec"]["hosts"]).contains(&"login.microsoftonline.com")
        })
        .expect("a ServiceEntry for login.microsoftonline.com");
    assert_eq!(entra["spec"]["location"], "MESH_EXTERNAL");
    assert_eq!(port(&entra["spec"]["ports"], 443)["protocol"], "TLS");
}

#[test]
fn istio_example_sidecar_allows_only_registered_destinations() {
    let sidecars = all_of(istio(), "Sidecar");
    assert_eq!(sidecars.len(), 1);
    assert_eq!(
        sidecars[0]["spec"]["outboundTrafficPolicy"]["mode"],
        "REGISTRY_ONLY"
    );
    let hosts: Vec<&str> = sidecars[0]["spec"]["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .flat_map(|e| strings(&e["hosts"]))
        .collect();
    assert!(
        hosts.contains(&"istio-system/*"),
        "the ServiceEntries live in istio-system: {hosts:?}"
    );
}

#[test]
fn egress_gateway_accepts_sidecars_with_istio_mutual_tls() {
    let docs = egress_gateway();
    let gateways = all_of(docs, "Gateway");
    assert_eq!(gateways.len(), 1);
    let gw = &gateways[0]["spec"];
    assert_eq!(gw["selector"]["istio"], "egressgateway");
    let servers = gw["servers"].as_array().expect("servers");
    let https = servers
        .iter()
        .find(|s| s["port"]["number"] == 443)
        .expect("a server on 443");
    assert_eq!(https["port"]["protocol"], "TLS");
    assert_eq!(https["tls"]["mode"], "ISTIO_MUTUAL");
    assert_eq!(strings(&https["hosts"]), ["*.servicebus.windows.net"]);
    for server in servers {
        assert_eq!(
            server["tls"]["mode"], "ISTIO_MUTUAL",
            "every server: {server}"
        );
    }
}

#[test]
fn egress_gateway_destination_rule_speaks_istio_mutual_with_the_service_bus_sni() {
    let docs = egress_gateway();
    let rules = all_of(docs, "DestinationRule");
    assert_eq!(rules.len(), 1);
    let dr = &rules[0]["spec"];
    assert_eq!(
        dr["host"],
        "istio-egressgateway.istio-system.svc.cluster.local"
    );
    for subset in dr["subsets"].as_array().expect("subsets") {
        for setting in subset["trafficPolicy"]["portLevelSettings"]
            .as_array()
            .expect("portLevelSettings")
        {
            assert_eq!(setting["tls"]["mode"], "ISTIO_MUTUAL", "{setting}");
            assert!(
                setting["tls"]["sni"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(".servicebus.windows.net")),
                "sni set to the Service Bus host: {setting}"
            );
        }
    }
}

#[test]
fn egress_gateway_routes_mesh_to_gateway_and_gateway_to_service_bus() {
    let docs = egress_gateway();
    let vs = &find(docs, "VirtualService", "servicebus-through-egress-gateway")["spec"];
    let gateway = "istio-system/servicebus-egress";
    let gateways = strings(&vs["gateways"]);
    assert!(
        gateways.contains(&"mesh") && gateways.contains(&gateway),
        "{gateways:?}"
    );
    let hosts = strings(&vs["hosts"]);
    let mut mesh_ports = BTreeSet::new();
    for route in vs["tls"].as_array().expect("tls routes") {
        for m in route["match"].as_array().expect("match") {
            assert_eq!(strings(&m["gateways"]), ["mesh"]);
            assert_eq!(
                strings(&m["sniHosts"]),
                hosts,
                "sniHosts are the Service Bus hosts"
            );
            mesh_ports.insert(m["port"].as_u64().expect("port"));
        }
        let dest = &route["route"][0]["destination"];
        assert_eq!(
            dest["host"],
            "istio-egressgateway.istio-system.svc.cluster.local"
        );
        assert!(
            dest["subset"].is_string(),
            "through the ISTIO_MUTUAL subset"
        );
    }
    let mut gateway_ports = BTreeSet::new();
    for route in vs["tcp"].as_array().expect("tcp routes") {
        let m = &route["match"][0];
        assert_eq!(strings(&m["gateways"]), [gateway]);
        let p = m["port"].as_u64().expect("port");
        assert_eq!(
            route["route"][0]["destination"]["port"]["number"], p,
            "same port outward"
        );
        assert!(hosts.contains(&route["route"][0]["destination"]["host"].as_str().unwrap()));
        gateway_ports.insert(p);
    }
    assert!(mesh_ports.contains(&443), "{mesh_ports:?}");
    assert_eq!(mesh_ports, gateway_ports);
}

#[test]
fn egress_gateway_authorization_admits_only_listed_principals_to_the_service_bus_sni() {
    let docs = egress_gateway();
    let policy = &find(docs, "AuthorizationPolicy", "servicebus-egress")["spec"];
    assert_eq!(policy["action"], "ALLOW");
    assert_eq!(policy["selector"]["matchLabels"]["istio"], "egressgateway");
    let rules = policy["rules"].as_array().expect("rules");
    assert!(!rules.is_empty());
    let sni_hosts: BTreeSet<&str> = all_of(docs, "DestinationRule")
        .iter()
        .flat_map(|dr| dr["spec"]["subsets"].as_array().unwrap().iter())
        .flat_map(|s| {
            s["trafficPolicy"]["portLevelSettings"]
                .as_array()
                .unwrap()
                .iter()
        })
        .map(|p| p["tls"]["sni"].as_str().unwrap())
        .collect();
    for rule in rules {
        let principals: Vec<&str> = rule["from"]
            .as_array()
            .expect("from")
            .iter()
            .flat_map(|f| strings(&f["source"]["principals"]))
            .collect();
        assert!(
            !principals.is_empty(),
            "every rule names principals: {rule}"
        );
        assert!(
            principals.iter().all(|p| p.starts_with("cluster.local/ns/")
                && p.contains("/sa/")
                && !p.contains('*'))
        );
        let when = rule["when"].as_array().expect("when");
        let sni = when
            .iter()
            .find(|w| w["key"] == "connection.sni")
            .expect("a connection.sni condition");
        for value in strings(&sni["values"]) {
            assert!(
                sni_hosts.contains(value),
                "SNI {value} is one the DestinationRule sends"
            );
        }
    }
    let example = strings(&rules[0]["from"][0]["source"]["principals"]);
    assert_eq!(example, ["cluster.local/ns/payments/sa/orders"]);
}
