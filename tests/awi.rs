//! One test per rule of DESIGN §10: Azure Workload Identity's pod annotations read after
//! sbmesh's own keys, its label's casing, and the warnings for when the Istio part cannot take
//! effect. Run through the pure core and applied with a JSON-patch engine.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use sbmesh::contract::{Context, Defaults, IdentityMode, TokenExpiration};
use sbmesh::denial::Reason;
use sbmesh::mutate::Mutation;
use support::*;

const AWI_SKIP: &str = "azure.workload.identity/skip-containers";
const AWI_EXPIRATION: &str = "azure.workload.identity/service-account-token-expiration";
const AWI_CLIENT_ID: &str = "azure.workload.identity/client-id";
const AWI_TENANT_ID: &str = "azure.workload.identity/tenant-id";
const AWI_PROXY: &str = "azure.workload.identity/inject-proxy-sidecar";
const AWI_PROXY_PORT: &str = "azure.workload.identity/proxy-sidecar-port";
const AWI_USE: &str = "azure.workload.identity/use";
const OTHER_CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";

static NONE: BTreeMap<String, String> = BTreeMap::new();

/// Pod annotations, ServiceAccount and Namespace annotations, and the expected outcome.
type Case<'a> = (
    Value,
    &'a BTreeMap<String, String>,
    &'a BTreeMap<String, String>,
    u64,
);

// ---------------------------------------------------------------- helpers

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Cluster lookups on: the ServiceAccount and Namespace hold these annotations.
fn cluster<'a>(sa: &'a BTreeMap<String, String>, ns: &'a BTreeMap<String, String>) -> Context<'a> {
    Context {
        service_account_annotations: Some(sa),
        namespace_annotations: Some(ns),
        namespace_labels: None,
        identity_mode: IdentityMode::Inject,
    }
}

/// A pod with containers `app` and `worker` (and `annotations` added to the opt-in).
fn two_containers(annotations: Value) -> Value {
    let mut p = pod(annotations);
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "worker", "image": "w"}));
    p
}

fn has_env(out: &Value, pointer: &str) -> bool {
    !env(out, pointer).is_empty()
}

fn expiration(out: &Value) -> &Value {
    &out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"]
}

/// The one warning that contains every needle.
#[track_caller]
fn warning<'m>(m: &'m Mutation, needles: &[&str]) -> &'m str {
    let found: Vec<&String> = m
        .warnings
        .iter()
        .filter(|w| needles.iter().all(|n| w.contains(n)))
        .collect();
    assert_eq!(found.len(), 1, "{needles:?} in {:#?}", m.warnings);
    assert!(found[0].starts_with("sbmesh: "), "{}", found[0]);
    found[0]
}

#[track_caller]
fn no_warning(m: &Mutation, needle: &str) {
    assert!(
        m.warnings.iter().all(|w| !w.contains(needle)),
        "unexpected warning with {needle:?}: {:#?}",
        m.warnings
    );
}

// ---------------------------------------------------------------- skip-containers

#[test]
fn awi_skip_containers_alone_leaves_the_named_out() {
    for list in ["worker", "worker;", " worker ; ", "worker,"] {
        let (out, m) = run(&two_containers(json!({ AWI_SKIP: list }))).unwrap();
        assert!(has_env(&out, "/spec/containers/0"), "{list}");
        assert!(!has_env(&out, "/spec/containers/1"), "{list}");
        assert!(m.warnings.is_empty(), "{list}: {:#?}", m.warnings);
    }
}

#[test]
fn awi_skip_containers_accepts_semicolons_and_commas() {
    let mut p = two_containers(json!({ AWI_SKIP: "worker;app,extra" }));
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "extra", "image": "e"}));
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "kept", "image": "k"}));
    let (out, _) = run(&p).unwrap();
    assert!(!has_env(&out, "/spec/containers/0"));
    assert!(!has_env(&out, "/spec/containers/1"));
    assert!(!has_env(&out, "/spec/containers/2"));
    assert!(has_env(&out, "/spec/containers/3"));
}

#[test]
fn awi_skip_containers_naming_an_unknown_container_warns_naming_the_awi_key() {
    let (out, m) = run(&two_containers(json!({ AWI_SKIP: "worker;ghost" }))).unwrap();
    assert!(!has_env(&out, "/spec/containers/1"));
    let w = warning(&m, &["ghost"]);
    assert_eq!(
        w,
        "sbmesh: azure.workload.identity/skip-containers names \"ghost\", which is not a \
         container or init container of this pod"
    );
}

#[test]
fn awi_skip_containers_equal_to_sbmesh_skip_containers_warns_nothing() {
    let (out, m) = run(&two_containers(json!({
        "sbmesh.io/skip-containers": "worker",
        AWI_SKIP: "worker",
    })))
    .unwrap();
    assert!(!has_env(&out, "/spec/containers/1"));
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

#[test]
fn awi_skip_containers_is_ignored_with_a_warning_when_sbmesh_skip_containers_differs() {
    let (out, m) = run(&two_containers(json!({
        "sbmesh.io/skip-containers": "worker",
        AWI_SKIP: "app",
    })))
    .unwrap();
    assert!(has_env(&out, "/spec/containers/0"), "sbmesh's key wins");
    assert!(!has_env(&out, "/spec/containers/1"));
    let w = warning(&m, &[AWI_SKIP, "ignored"]);
    assert!(w.contains("sbmesh.io/skip-containers"), "{w}");
}

#[test]
fn awi_skip_containers_is_ignored_with_a_warning_when_sbmesh_containers_is_set() {
    let (out, m) = run(&two_containers(json!({
        "sbmesh.io/containers": "worker",
        AWI_SKIP: "worker",
    })))
    .unwrap();
    assert!(!has_env(&out, "/spec/containers/0"));
    assert!(has_env(&out, "/spec/containers/1"), "sbmesh's key wins");
    let w = warning(&m, &[AWI_SKIP, "ignored"]);
    assert!(w.contains("sbmesh.io/containers"), "{w}");
}

#[test]
fn awi_skip_containers_that_is_not_a_string_is_denied_naming_it() {
    let msg = denied(&pod(json!({ AWI_SKIP: ["app"] })), Reason::InvalidValue);
    assert!(msg.contains(AWI_SKIP), "{msg}");
}

// ---------------------------------------------------------------- token expiration

#[test]
fn awi_token_expiration_on_the_pod_sets_the_volume() {
    let (out, m) = run(&pod(json!({ AWI_EXPIRATION: "7200" }))).unwrap();
    assert_eq!(expiration(&out), 7200);
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

#[test]
fn awi_token_expiration_equal_to_sbmesh_pod_key_warns_nothing() {
    let (out, m) = run(&pod(json!({
        "sbmesh.io/token-expiration": "7200",
        AWI_EXPIRATION: "7200",
    })))
    .unwrap();
    assert_eq!(expiration(&out), 7200);
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

#[test]
fn awi_token_expiration_differing_from_sbmesh_pod_key_loses_with_a_warning() {
    let (out, m) = run(&pod(json!({
        "sbmesh.io/token-expiration": "7200",
        AWI_EXPIRATION: "86400",
    })))
    .unwrap();
    assert_eq!(expiration(&out), 7200);
    let w = warning(&m, &[AWI_EXPIRATION]);
    assert_eq!(
        w,
        "sbmesh: pod annotation azure.workload.identity/service-account-token-expiration = \
         \"86400\" is ignored: pod annotation sbmesh.io/token-expiration = \"7200\" is set too, \
         and sbmesh's key wins; remove azure.workload.identity/service-account-token-expiration, \
         or give it the same value"
    );
}

#[test]
fn awi_token_expiration_shadowed_by_sbmesh_pod_key_is_not_validated() {
    let (out, m) = run(&pod(json!({
        "sbmesh.io/token-expiration": "7200",
        AWI_EXPIRATION: "forever",
    })))
    .unwrap();
    assert_eq!(expiration(&out), 7200);
    warning(&m, &[AWI_EXPIRATION, "forever"]);
}

#[test]
fn awi_token_expiration_invalid_is_denied_naming_the_awi_key() {
    let msg = denied(&pod(json!({ AWI_EXPIRATION: "60" })), Reason::InvalidValue);
    assert!(
        msg.starts_with(
            "sbmesh: pod annotation azure.workload.identity/service-account-token-expiration = \
             \"60\" is invalid: must be a whole number of seconds from 3600 to 86400."
        ),
        "{msg}"
    );
    assert!(
        msg.contains(
            "set sbmesh.io/token-expiration or \
             azure.workload.identity/service-account-token-expiration on the pod"
        ),
        "{msg}"
    );
}

#[test]
fn token_expiration_resolves_pod_sbmesh_pod_awi_sa_sbmesh_sa_awi_namespace_config() {
    let d = Defaults {
        token_expiration: TokenExpiration::parse("3700").unwrap(),
        ..defaults()
    };
    let ns = map(&[("sbmesh.io/token-expiration", "3800")]);
    let sa_awi = map(&[(AWI_EXPIRATION, "3900")]);
    let sa_both = map(&[
        (AWI_EXPIRATION, "3900"),
        ("sbmesh.io/token-expiration", "4000"),
    ]);
    let cases: [Case; 6] = [
        (json!({}), &NONE, &NONE, 3700),
        (json!({}), &NONE, &ns, 3800),
        (json!({}), &sa_awi, &ns, 3900),
        (json!({}), &sa_both, &ns, 4000),
        (json!({ AWI_EXPIRATION: "4100" }), &sa_both, &ns, 4100),
        (
            json!({ AWI_EXPIRATION: "4100", "sbmesh.io/token-expiration": "4200" }),
            &sa_both,
            &ns,
            4200,
        ),
    ];
    for (ann, sa, ns, want) in cases {
        let (out, _) = run_with(&pod(ann.clone()), &cluster(sa, ns), &d).unwrap();
        assert_eq!(expiration(&out), want, "{ann} {sa:?} {ns:?}");
    }
}

#[test]
fn awi_token_expiration_invalid_on_the_pod_wins_over_a_valid_service_account() {
    let sa = map(&[("sbmesh.io/token-expiration", "7200")]);
    let err = run_with(
        &pod(json!({ AWI_EXPIRATION: "soon" })),
        &cluster(&sa, &NONE),
        &defaults(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidValue);
    assert_eq!(err.key(), Some(AWI_EXPIRATION));
}

// ---------------------------------------------------------------- ServiceAccount: both keys

#[test]
fn service_account_with_both_client_id_keys_differing_warns_and_sbmesh_wins() {
    let sa = map(&[
        ("sbmesh.io/client-id", CLIENT_ID),
        (AWI_CLIENT_ID, OTHER_CLIENT_ID),
    ]);
    let p = pod(json!({"sbmesh.io/client-id": null}));
    let (out, m) = run_with(&p, &cluster(&sa, &NONE), &defaults()).unwrap();
    assert!(
        env(&out, "/spec/containers/0").contains(&("AZURE_CLIENT_ID".into(), CLIENT_ID.into()))
    );
    let w = warning(&m, &[AWI_CLIENT_ID]);
    assert_eq!(
        w,
        format!(
            "sbmesh: annotation azure.workload.identity/client-id = \"{OTHER_CLIENT_ID}\" of \
             ServiceAccount payments/orders is ignored: its sbmesh.io/client-id = \"{CLIENT_ID}\" \
             is set too, and sbmesh's key wins; remove azure.workload.identity/client-id, or give \
             it the same value"
        )
    );
}

#[test]
fn service_account_with_both_keys_agreeing_warns_nothing() {
    let sa = map(&[
        ("sbmesh.io/client-id", CLIENT_ID),
        (AWI_CLIENT_ID, &CLIENT_ID.to_uppercase()),
        ("sbmesh.io/tenant-id", TENANT_ID),
        (AWI_TENANT_ID, TENANT_ID),
        ("sbmesh.io/token-expiration", "7200"),
        (AWI_EXPIRATION, "7200"),
    ]);
    let p = pod(json!({"sbmesh.io/client-id": null}));
    let (_, m) = run_with(&p, &cluster(&sa, &NONE), &defaults()).unwrap();
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

#[test]
fn service_account_with_both_tenant_id_keys_differing_warns() {
    let sa = map(&[
        ("sbmesh.io/tenant-id", TENANT_ID),
        (AWI_TENANT_ID, OTHER_CLIENT_ID),
    ]);
    let (out, m) = run_with(&pod(json!({})), &cluster(&sa, &NONE), &defaults()).unwrap();
    assert!(
        env(&out, "/spec/containers/0").contains(&("AZURE_TENANT_ID".into(), TENANT_ID.into()))
    );
    warning(&m, &[AWI_TENANT_ID, "ignored", "sbmesh.io/tenant-id"]);
}

#[test]
fn service_account_with_both_token_expiration_keys_differing_warns() {
    let sa = map(&[
        ("sbmesh.io/token-expiration", "7200"),
        (AWI_EXPIRATION, "3600"),
    ]);
    let (out, m) = run_with(&pod(json!({})), &cluster(&sa, &NONE), &defaults()).unwrap();
    assert_eq!(expiration(&out), 7200);
    warning(
        &m,
        &[AWI_EXPIRATION, "ServiceAccount payments/orders", "ignored"],
    );
}

#[test]
fn service_account_keys_that_the_pod_overrides_warn_nothing() {
    let sa = map(&[
        ("sbmesh.io/token-expiration", "7200"),
        (AWI_EXPIRATION, "3600"),
    ]);
    let p = pod(json!({"sbmesh.io/token-expiration": "4000"}));
    let (_, m) = run_with(&p, &cluster(&sa, &NONE), &defaults()).unwrap();
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

// ---------------------------------------------------------------- token proxy

#[test]
fn awi_inject_proxy_sidecar_warns_that_sbmesh_adds_no_token_proxy() {
    let (out, m) = run(&pod(json!({ AWI_PROXY: "true" }))).unwrap();
    assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    let w = warning(&m, &[AWI_PROXY]);
    assert_eq!(
        w,
        "sbmesh: pod annotation azure.workload.identity/inject-proxy-sidecar is ignored: sbmesh \
         does not add Azure Workload Identity's token proxy sidecar; SDKs that read \
         AZURE_FEDERATED_TOKEN_FILE (every current Azure Identity library) do not need it: \
         remove the annotation, or update an application that gets its token only from the proxy"
    );
}

#[test]
fn awi_proxy_sidecar_port_warns_that_sbmesh_adds_no_token_proxy() {
    let (_, m) = run(&pod(json!({ AWI_PROXY_PORT: "8000" }))).unwrap();
    warning(&m, &[AWI_PROXY_PORT, "token proxy"]);
    let (_, m) = run(&pod(json!({ AWI_PROXY_PORT: "8000", AWI_PROXY: "true" }))).unwrap();
    warning(
        &m,
        &[&format!(
            "pod annotations {AWI_PROXY} and {AWI_PROXY_PORT} are ignored"
        )],
    );
}

#[test]
fn awi_inject_proxy_sidecar_false_or_delegate_mode_warns_nothing() {
    let (_, m) = run(&pod(json!({ AWI_PROXY: "false" }))).unwrap();
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
    // In delegate mode Azure Workload Identity's webhook adds the proxy itself.
    let (_, m) = run_with(
        &pod(json!({ AWI_PROXY: "true" })),
        &Context::offline(IdentityMode::Delegate),
        &defaults(),
    )
    .unwrap();
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

// ---------------------------------------------------------------- the use label

#[test]
fn workload_identity_label_in_another_case_of_true_is_replaced_by_true() {
    for value in ["True", "TRUE", "tRuE"] {
        let mut p = pod(json!({}));
        p["metadata"]["labels"][AWI_USE] = json!(value);
        let (out, m) = run(&p).unwrap();
        let op = m
            .patch
            .0
            .iter()
            .find(|o| o.path == "/metadata/labels/azure.workload.identity~1use")
            .unwrap_or_else(|| panic!("{value}: no op on the label: {:#?}", m.patch));
        let json: Value = serde_json::from_slice(&m.patch.to_json()).unwrap();
        assert!(
            json.as_array().unwrap().contains(&json!(
                {"op": "replace", "path": "/metadata/labels/azure.workload.identity~1use", "value": "true"}
            )),
            "{value}: {op:?}"
        );
        assert_eq!(out["metadata"]["labels"][AWI_USE], "true");
        assert_eq!(out["metadata"]["labels"]["app"], "orders");
        assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
    }
}

#[test]
fn workload_identity_label_replacement_is_idempotent() {
    let mut p = pod(json!({}));
    p["metadata"]["labels"][AWI_USE] = json!("True");
    let (out, _) = run(&p).unwrap();
    let (again, m) = run(&out).unwrap();
    assert!(m.patch.is_empty(), "{:#?}", m.patch);
    assert_eq!(again, out);
}

#[test]
fn workload_identity_label_of_any_other_value_is_still_denied() {
    for value in ["False", "false", "yes", "1", " true", ""] {
        let mut p = pod(json!({}));
        p["metadata"]["labels"][AWI_USE] = json!(value);
        let msg = denied(&p, Reason::Conflict);
        assert!(msg.contains(AWI_USE) && msg.contains("contradict"), "{msg}");
    }
}

// ---------------------------------------------------------------- mesh awareness

#[test]
fn host_network_warns_that_no_sidecar_is_injected() {
    let mut p = pod(json!({}));
    p["spec"]["hostNetwork"] = json!(true);
    let (_, m) = run(&p).unwrap();
    let w = warning(&m, &["hostNetwork"]);
    assert_eq!(
        w,
        "sbmesh: spec.hostNetwork is true, and Istio injects no sidecar into a pod on the host \
         network, so the Istio annotations sbmesh adds have no effect and Service Bus traffic \
         bypasses the mesh; remove hostNetwork, or set sbmesh.io/egress: none if this pod is not \
         meant to be in the mesh"
    );
    p["spec"]["hostNetwork"] = json!(false);
    let (_, m) = run(&p).unwrap();
    no_warning(&m, "hostNetwork");
}

#[test]
fn sidecar_inject_false_label_warns() {
    let mut p = pod(json!({}));
    p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    let (_, m) = run(&p).unwrap();
    let w = warning(&m, &["sidecar.istio.io/inject"]);
    assert_eq!(
        w,
        "sbmesh: pod label sidecar.istio.io/inject is \"false\", so Istio injects no sidecar \
         and the Istio annotations sbmesh adds have no effect; remove that label (or set it to \
         \"true\") to put the pod in the mesh, or set sbmesh.io/egress: none if this pod is not \
         meant to be in the mesh"
    );
}

#[test]
fn sidecar_inject_false_annotation_warns() {
    let (_, m) = run(&pod(json!({"sidecar.istio.io/inject": "False"}))).unwrap();
    warning(&m, &["pod annotation sidecar.istio.io/inject is \"false\""]);
}

#[test]
fn sidecar_inject_label_true_overrides_an_annotation_false_as_in_istio() {
    let mut p = pod(json!({"sidecar.istio.io/inject": "false"}));
    p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
    let (_, m) = run(&p).unwrap();
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

#[test]
fn sidecar_inject_false_replaces_the_namespace_warning() {
    let ns_labels = map(&[]);
    let mut p = pod(json!({}));
    p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    let ctx = Context {
        namespace_labels: Some(&ns_labels),
        ..Context::offline(IdentityMode::Inject)
    };
    let (_, m) = run_with(&p, &ctx, &defaults()).unwrap();
    assert_eq!(m.warnings.len(), 1, "{:#?}", m.warnings);
    warning(&m, &["pod label sidecar.istio.io/inject is \"false\""]);

    // Without a pod-level reason, the Namespace one is still said.
    let (_, m) = run_with(&pod(json!({})), &ctx, &defaults()).unwrap();
    warning(
        &m,
        &["this pod gets no Istio sidecar", "istio-injection=enabled"],
    );
}

#[test]
fn istio_proxy_already_in_containers_warns_that_the_hold_came_too_late() {
    let mut p = pod(json!({}));
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "proxyv2"}));
    let (out, m) = run(&p).unwrap();
    let w = warning(&m, &["istio-proxy"]);
    assert_eq!(
        w,
        "sbmesh: the pod already has an istio-proxy container (injected before sbmesh saw the \
         pod, e.g. by istioctl kube-inject), so the Istio annotations sbmesh adds come too late \
         for that sidecar (holdApplicationUntilProxyStarts: the application may start before \
         its proxy); let Istio's webhook inject the sidecar at admission instead of injecting it \
         beforehand, or set sbmesh.io/egress: none if this pod is not meant to be in the mesh"
    );
    // Istio injecting after sbmesh (reinvocation): sbmesh's status is already there.
    let (_, m) = run(&out).unwrap();
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
}

#[test]
fn istio_proxy_already_in_init_containers_warns() {
    let mut p = pod(json!({}));
    p["spec"]["initContainers"] =
        json!([{"name": "istio-proxy", "image": "proxyv2", "restartPolicy": "Always"}]);
    let (_, m) = run(&p).unwrap();
    warning(&m, &["already has an istio-proxy init container"]);
}

#[test]
fn egress_none_silences_the_three_istio_warnings_but_not_the_no_container_one() {
    let mut p = pod(json!({
        "sbmesh.io/egress": "none",
        "sidecar.istio.io/inject": "false",
        "sbmesh.io/skip-containers": "app",
    }));
    p["spec"]["hostNetwork"] = json!(true);
    p["spec"]["initContainers"] = json!([{"name": "istio-proxy", "image": "proxyv2"}]);
    let (_, m) = run(&p).unwrap();
    assert_eq!(m.warnings.len(), 1, "{:#?}", m.warnings);
    warning(&m, &["no container is in scope"]);

    p["metadata"]["annotations"]["sbmesh.io/egress"] = json!("mesh");
    let (_, m) = run(&p).unwrap();
    assert_eq!(m.warnings.len(), 4, "{:#?}", m.warnings);
}

#[test]
fn no_container_in_scope_warns_when_every_container_is_skipped() {
    let (out, m) = run(&two_containers(
        json!({"sbmesh.io/skip-containers": "app,worker"}),
    ))
    .unwrap();
    assert_eq!(out["metadata"]["labels"][AWI_USE], "true");
    let w = warning(&m, &["no container is in scope"]);
    assert_eq!(
        w,
        "sbmesh: no container is in scope: sbmesh.io/skip-containers leaves out every container \
         of this pod, so the pod gets the azure.workload.identity/use label and the token volume \
         but no container gets the Azure and Service Bus env; leave the containers that use \
         Service Bus out of sbmesh.io/skip-containers"
    );
}

#[test]
fn no_container_in_scope_warns_when_awi_skip_containers_skips_every_container() {
    let (_, m) = run(&pod(json!({ AWI_SKIP: "app" }))).unwrap();
    warning(
        &m,
        &["no container is in scope: azure.workload.identity/skip-containers leaves out"],
    );
}

#[test]
fn no_container_in_scope_warns_when_containers_names_none() {
    let (_, m) = run(&pod(json!({"sbmesh.io/containers": "ghost"}))).unwrap();
    warning(
        &m,
        &["no container is in scope: sbmesh.io/containers names none"],
    );
    // In delegate mode sbmesh adds no volume, and says so.
    let (_, m) = run_with(
        &pod(json!({"sbmesh.io/containers": "ghost"})),
        &Context::offline(IdentityMode::Delegate),
        &defaults(),
    )
    .unwrap();
    let w = warning(&m, &["no container is in scope"]);
    assert!(!w.contains("token volume"), "{w}");
}

#[test]
fn pod_that_is_fine_gets_none_of_the_warnings() {
    let mut p = two_containers(json!({"sbmesh.io/skip-containers": "worker"}));
    p["spec"]["hostNetwork"] = json!(false);
    p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
    p["metadata"]["labels"][AWI_USE] = json!("true");
    p["spec"]["initContainers"] = json!([{"name": "istio-init", "image": "proxyv2"}]);
    let (out, m) = run(&p).unwrap();
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
    assert!(has_env(&out, "/spec/containers/0"));
}
