//! Cluster knowledge end to end: kube's real client and watcher against an in-process fake API
//! server, through `Cluster::facts` and the contract. The resolution order is one table of
//! cases run through one helper; every other rule has its own test.

mod common;
mod fake_apiserver;

use std::time::{Duration, Instant};

use common::eventually;
use fake_apiserver::{FakeApiServer, Res, Verb};
use sbmesh::admission::Response;
use sbmesh::cluster::{AWI_WEBHOOK_NAME, Cluster, ClusterError, ClusterMode};
use sbmesh::contract::{
    self, ClientId, Defaults, Denial, IdentityMode, IdentityModeSetting, InjectionPlan, TenantId,
    keys,
};
use sbmesh::core::{self, Admission};
use sbmesh::pod::Pod;
use serde_json::{Value, json};

const NS: &str = "payments";
const POD_CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const SA_SBMESH_CLIENT: &str = "22222222-2222-2222-2222-222222222222";
const SA_AWI_CLIENT: &str = "33333333-3333-3333-3333-333333333333";
const NS_CLIENT: &str = "44444444-4444-4444-4444-444444444444";
const CONFIG_CLIENT: &str = "55555555-5555-5555-5555-555555555555";
const CONFIG_TENANT: &str = "66666666-6666-6666-6666-666666666666";
const SA_AWI_TENANT: &str = "77777777-7777-7777-7777-777777777777";

const LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);
const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// fixtures

fn defaults() -> Defaults {
    Defaults {
        client_id: Some(ClientId::parse(CONFIG_CLIENT).expect("guid")),
        tenant_id: Some(TenantId::parse(CONFIG_TENANT).expect("guid")),
        servicebus_namespace: Some("config-default".into()),
        ..Defaults::default()
    }
}

fn service_account(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "Helm" },
            "annotations": map(annotations),
            "managedFields": [{
                "manager": "helm", "operation": "Update", "apiVersion": "v1",
                "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": { "f:metadata": { "f:annotations": {}, "f:labels": {} } },
            }],
        },
    })
}

fn namespace(name: &str, annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> Value {
    let mut l = map(labels);
    l["kubernetes.io/metadata.name"] = json!(name);
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": l, "annotations": map(annotations) },
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" },
    })
}

fn map(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect(),
    )
}

/// A pod as a ReplicaSet creates it, opted in, with extra annotations.
fn pod(service_account: &str, annotations: &[(&str, &str)]) -> Value {
    let mut a = map(annotations);
    a[keys::INJECT] = json!("true");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "orders-7d9f8b6c5-",
            "namespace": NS,
            "labels": { "app": "orders", "pod-template-hash": "7d9f8b6c5" },
            "annotations": a,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7d9f8b6c5",
                "uid": "0a1b2c3d-0000-4000-8000-000000000001", "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{
                "name": "app",
                "image": "ghcr.io/example/orders:1.4.2",
                "env": [{ "name": "LOG_LEVEL", "value": "info" }],
                "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
            }],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
        },
    })
}

/// The Azure Workload Identity chart's configuration, as installed on AKS.
fn awi_webhook_configuration() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": "azure-wi-webhook-mutating-webhook-configuration",
            "labels": { "azure-workload-identity.io/system": "true" },
        },
        "webhooks": [{
            "name": AWI_WEBHOOK_NAME,
            "admissionReviewVersions": ["v1", "v1beta1"],
            "clientConfig": {
                "service": {
                    "name": "azure-wi-webhook-webhook-service",
                    "namespace": "kube-system",
                    "path": "/mutate-v1-pod",
                    "port": 443,
                },
                "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
            },
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "namespaceSelector": {},
            "objectSelector": { "matchLabels": { "azure.workload.identity/use": "true" } },
            "reinvocationPolicy": "IfNeeded",
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "*",
            }],
            "sideEffects": "None",
            "timeoutSeconds": 10,
        }],
    })
}

fn istio_webhook_configuration() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "istio-sidecar-injector" },
        "webhooks": [{
            "name": "rev.namespace.sidecar-injector.istio.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "service": { "name": "istiod", "namespace": "istio-system", "path": "/inject", "port": 443 },
                "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
            },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
            }],
        }],
    })
}

// ---------------------------------------------------------------------------------------------
// helpers

async fn ready_cluster(fake: &FakeApiServer, identity: IdentityModeSetting) -> Cluster {
    let cluster = Cluster::start_with_client(fake.client(), identity, LOOKUP_TIMEOUT);
    until_ready(&cluster).await;
    cluster
}

async fn until_ready(cluster: &Cluster) {
    eventually(DEADLINE, "every cache has synced", || async {
        cluster.ready().then_some(())
    })
    .await;
}

fn objects(cluster: &Cluster, cache: &str) -> usize {
    cluster
        .cache_objects()
        .into_iter()
        .find(|(name, _)| *name == cache)
        .map(|(_, n)| n)
        .unwrap_or_else(|| panic!("no cache named {cache}"))
}

// The core's entry points are called from here only (and `denial_text` reads a denial), so that
// a change in their shape is a change in these few lines.

/// Where a pod was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `Cluster::facts`: a lookup could not answer.
    Lookup,
    /// The contract: the facts were read, the pod's parameters do not resolve.
    Plan,
}

/// The plan for `pod` in `payments` under `config`, or the denial and where it came from.
async fn plan_with(
    cluster: &Cluster,
    pod: &Value,
    config: &Defaults,
) -> Result<InjectionPlan, (Stage, Denial)> {
    let json = pod.to_string();
    let view = Pod::parse(&json).expect("JSON pod");
    let facts = cluster
        .facts(NS, view.service_account_name())
        .await
        .map_err(|d| (Stage::Lookup, d))?;
    match core::admit(&view, NS, &facts.context(), config) {
        Admission::Patch { plan, .. } => Ok(*plan),
        Admission::Skip => panic!("the pod opted in"),
        Admission::Deny(d) => Err((Stage::Plan, d)),
    }
}

async fn plan_for(cluster: &Cluster, pod: &Value) -> Result<InjectionPlan, Denial> {
    plan_with(cluster, pod, &defaults())
        .await
        .map_err(|(_, d)| d)
}

async fn admit_with(cluster: &Cluster, pod: &Value, config: &Defaults) -> Response {
    let json = pod.to_string();
    let view = Pod::parse(&json).expect("JSON pod");
    match cluster.facts(NS, view.service_account_name()).await {
        Ok(facts) => Response::of("uid-1", core::admit(&view, NS, &facts.context(), config)),
        Err(d) => Response::deny("uid-1", d),
    }
}

async fn admit(cluster: &Cluster, pod: &Value) -> Response {
    admit_with(cluster, pod, &defaults()).await
}

fn denial_text(d: &Denial) -> String {
    d.to_string()
}

fn patch_text(r: &Response) -> String {
    String::from_utf8(r.patch_json().unwrap_or_default()).expect("utf-8 patch")
}

fn gets(fake: &FakeApiServer) -> usize {
    fake.count(Verb::Get, Res::ServiceAccounts) + fake.count(Verb::Get, Res::Namespaces)
}

/// A fake with the `payments` Namespace (no sbmesh annotations, in the mesh).
async fn fake_with_namespace() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.put(Res::Namespaces, namespace(NS, &[], MESH));
    fake
}

// ---------------------------------------------------------------------------------------------
// resolution order: pod → ServiceAccount (sbmesh.io, then AWI) → Namespace → config

type Pairs = &'static [(&'static str, &'static str)];

/// One resolution-order case: the annotations of the ServiceAccount `orders`, of the Namespace
/// `payments` (`None`: the object does not exist) and of the pod, the config, and the outcome.
struct Case {
    name: &'static str,
    service_account: Option<Pairs>,
    namespace: Option<Pairs>,
    pod: Pairs,
    config: fn() -> Defaults,
    expect: Expect,
}

enum Expect {
    /// Admitted, with a plan holding every field.
    Plan(&'static [Field]),
    /// Refused at `by`, with a message holding every `says` and no `never`.
    Denied {
        by: Stage,
        says: &'static [&'static str],
        never: &'static [&'static str],
    },
}

#[derive(Debug)]
enum Field {
    ClientId(&'static str),
    TenantId(&'static str),
    TokenExpiration(u32),
    Egress(contract::Egress),
    ServicebusNamespace(&'static str),
    /// The admitted pod's patch contains this text.
    PatchContains(&'static str),
}

impl Field {
    fn holds(&self, plan: &InjectionPlan, patch: &str) -> bool {
        match self {
            Field::ClientId(id) => plan.client_id.as_str() == *id,
            Field::TenantId(id) => plan.tenant_id.as_ref().map(TenantId::as_str) == Some(*id),
            Field::TokenExpiration(s) => plan.token_expiration.seconds() == *s,
            Field::Egress(e) => plan.egress == *e,
            Field::ServicebusNamespace(ns) => plan.servicebus_namespace.short() == *ns,
            Field::PatchContains(text) => patch.contains(text),
        }
    }
}

const MESH: Pairs = &[("istio-injection", "enabled")];
const SA_BOTH_CLIENTS: Pairs = &[
    (keys::CLIENT_ID, SA_SBMESH_CLIENT),
    (keys::AWI_CLIENT_ID, SA_AWI_CLIENT),
];
const NS_CLIENT_ONLY: Pairs = &[(keys::CLIENT_ID, NS_CLIENT)];
const NS_SERVICEBUS: Pairs = &[(keys::SERVICEBUS_NAMESPACE, "payments-prod")];

const CASES: &[Case] = &[
    Case {
        name: "pod annotation wins over ServiceAccount, Namespace and config",
        service_account: Some(SA_BOTH_CLIENTS),
        namespace: Some(NS_CLIENT_ONLY),
        pod: &[(keys::CLIENT_ID, POD_CLIENT)],
        config: defaults,
        expect: Expect::Plan(&[Field::ClientId(POD_CLIENT)]),
    },
    Case {
        name: "ServiceAccount sbmesh.io annotation wins over its AWI annotation, Namespace and \
               config",
        service_account: Some(SA_BOTH_CLIENTS),
        namespace: Some(NS_CLIENT_ONLY),
        pod: &[],
        config: defaults,
        expect: Expect::Plan(&[Field::ClientId(SA_SBMESH_CLIENT)]),
    },
    Case {
        name: "ServiceAccount AWI annotations supply client, tenant and token expiration",
        service_account: Some(&[
            (keys::AWI_CLIENT_ID, SA_AWI_CLIENT),
            (keys::AWI_TENANT_ID, SA_AWI_TENANT),
            (keys::AWI_TOKEN_EXPIRATION, "7200"),
        ]),
        namespace: Some(NS_CLIENT_ONLY),
        pod: &[],
        config: defaults,
        expect: Expect::Plan(&[
            Field::ClientId(SA_AWI_CLIENT),
            Field::TenantId(SA_AWI_TENANT),
            Field::TokenExpiration(7200),
        ]),
    },
    Case {
        name: "Namespace annotation wins over config",
        service_account: Some(&[]),
        namespace: Some(&[(keys::CLIENT_ID, NS_CLIENT), (keys::EGRESS, "bypass")]),
        pod: &[],
        config: defaults,
        expect: Expect::Plan(&[
            Field::ClientId(NS_CLIENT),
            Field::Egress(contract::Egress::Bypass),
        ]),
    },
    Case {
        name: "Namespace annotation sets the Service Bus namespace default",
        service_account: Some(&[]),
        namespace: Some(NS_SERVICEBUS),
        pod: &[],
        config: defaults,
        expect: Expect::Plan(&[
            Field::ServicebusNamespace("payments-prod"),
            Field::PatchContains("payments-prod.servicebus.windows.net"),
        ]),
    },
    Case {
        name: "ServiceAccount overrides the Namespace's Service Bus namespace",
        service_account: Some(&[(keys::SERVICEBUS_NAMESPACE, "billing-prod")]),
        namespace: Some(NS_SERVICEBUS),
        pod: &[],
        config: defaults,
        expect: Expect::Plan(&[Field::ServicebusNamespace("billing-prod")]),
    },
    Case {
        name: "pod overrides the Namespace's Service Bus namespace",
        service_account: Some(&[]),
        namespace: Some(NS_SERVICEBUS),
        pod: &[(keys::SERVICEBUS_NAMESPACE, "pod-choice")],
        config: defaults,
        expect: Expect::Plan(&[Field::ServicebusNamespace("pod-choice")]),
    },
    Case {
        name: "config is consulted last",
        service_account: Some(&[]),
        namespace: Some(&[]),
        pod: &[],
        config: defaults,
        expect: Expect::Plan(&[
            Field::ClientId(CONFIG_CLIENT),
            Field::TenantId(CONFIG_TENANT),
            Field::ServicebusNamespace("config-default"),
        ]),
    },
    Case {
        name: "denial for a missing parameter says ServiceAccount and Namespace were consulted",
        service_account: Some(&[]),
        namespace: Some(&[]),
        pod: &[],
        config: Defaults::default,
        expect: Expect::Denied {
            by: Stage::Plan,
            says: &["ServiceAccount payments/orders"],
            never: &["not consulted"],
        },
    },
    Case {
        name: "missing ServiceAccount is denied naming it",
        service_account: None,
        namespace: Some(&[]),
        pod: &[],
        config: defaults,
        expect: Expect::Denied {
            by: Stage::Lookup,
            says: &["ServiceAccount payments/orders does not exist"],
            never: &[],
        },
    },
    Case {
        name: "missing Namespace is denied naming it",
        service_account: Some(&[]),
        namespace: None,
        pod: &[],
        config: defaults,
        expect: Expect::Denied {
            by: Stage::Lookup,
            says: &["Namespace payments does not exist"],
            never: &[],
        },
    },
];

#[tokio::test]
async fn resolution_order() {
    let mut failures = Vec::new();
    for case in CASES {
        for problem in run_case(case).await {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Runs one case against its own fake API server; returns what did not match.
async fn run_case(case: &Case) -> Vec<String> {
    let fake = FakeApiServer::start().await;
    if let Some(annotations) = case.service_account {
        fake.put(
            Res::ServiceAccounts,
            service_account(NS, "orders", annotations),
        );
    }
    if let Some(annotations) = case.namespace {
        fake.put(Res::Namespaces, namespace(NS, annotations, MESH));
    }
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;
    let pod = pod("orders", case.pod);
    let config = (case.config)();

    match (&case.expect, plan_with(&cluster, &pod, &config).await) {
        (Expect::Plan(fields), Ok(plan)) => {
            let patch = patch_text(&admit_with(&cluster, &pod, &config).await);
            fields
                .iter()
                .filter(|f| !f.holds(&plan, &patch))
                .map(|f| format!("expected {f:?}; the plan is {plan:?}; the patch is {patch}"))
                .collect()
        }
        (Expect::Denied { by, says, never }, Err((stage, denial))) => {
            let text = denial_text(&denial);
            let mut problems = Vec::new();
            if stage != *by {
                problems.push(format!("denied by {stage:?}, not {by:?}: {text}"));
            }
            problems.extend(
                says.iter()
                    .filter(|s| !text.contains(*s))
                    .map(|s| format!("the denial lacks {s:?}: {text}")),
            );
            problems.extend(
                never
                    .iter()
                    .filter(|s| text.contains(*s))
                    .map(|s| format!("the denial holds {s:?}: {text}")),
            );
            problems
        }
        (Expect::Plan(_), Err((stage, denial))) => {
            vec![format!("denied by {stage:?}: {}", denial_text(&denial))]
        }
        (Expect::Denied { .. }, Ok(plan)) => vec![format!("admitted with {plan:?}")],
    }
}

#[tokio::test]
async fn cache_keeps_only_sbmesh_and_awi_annotations() {
    let fake = fake_with_namespace().await;
    fake.put(
        Res::ServiceAccounts,
        service_account(
            NS,
            "orders",
            &[
                (keys::AWI_CLIENT_ID, SA_AWI_CLIENT),
                (keys::QUEUES, "orders"),
                (
                    "kubectl.kubernetes.io/last-applied-configuration",
                    "{\"apiVersion\":\"v1\"}",
                ),
                ("meta.helm.sh/release-name", "orders"),
            ],
        ),
    );
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;

    let facts = cluster.facts(NS, "orders").await.expect("facts");
    let annotations = facts.service_account_annotations.expect("consulted");
    let kept: Vec<&str> = annotations.keys().map(String::as_str).collect();
    assert_eq!(kept, [keys::AWI_CLIENT_ID, keys::QUEUES]);
    let labels = facts.namespace_labels.expect("consulted");
    assert_eq!(
        labels.get("istio-injection").map(String::as_str),
        Some("enabled")
    );
}

// ---------------------------------------------------------------------------------------------
// caches and misses

#[tokio::test]
async fn service_account_added_after_start_is_used_from_the_cache_without_a_get() {
    let fake = fake_with_namespace().await;
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;
    assert_eq!(objects(&cluster, "serviceaccounts"), 0);

    fake.put(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::AWI_CLIENT_ID, SA_AWI_CLIENT)]),
    );
    eventually(DEADLINE, "the watch event reached the cache", || async {
        (objects(&cluster, "serviceaccounts") == 1).then_some(())
    })
    .await;

    let plan = plan_for(&cluster, &pod("orders", &[])).await.expect("plan");
    assert_eq!(plan.client_id.as_str(), SA_AWI_CLIENT);
    assert_eq!(gets(&fake), 0, "{:#?}", fake.requests());
}

#[tokio::test]
async fn service_account_modified_after_start_is_seen_from_the_cache() {
    let fake = fake_with_namespace().await;
    fake.put(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::AWI_CLIENT_ID, SA_AWI_CLIENT)]),
    );
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;

    fake.put(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::AWI_CLIENT_ID, SA_SBMESH_CLIENT)]),
    );
    let plan = eventually(DEADLINE, "the MODIFIED event reached the cache", || async {
        let plan = plan_for(&cluster, &pod("orders", &[])).await.expect("plan");
        (plan.client_id.as_str() == SA_SBMESH_CLIENT).then_some(plan)
    })
    .await;
    assert_eq!(plan.client_id.as_str(), SA_SBMESH_CLIENT);
    assert_eq!(gets(&fake), 0);
}

// ---------------------------------------------------------------------------------------------
// permission boundaries: read from the Namespace as the cache holds it now

/// Waits until admitting `p` in `payments` gives the wanted verdict (denied or not), and
/// returns the last answer: a Namespace change applies to the next admission, no restart.
async fn boundary_verdict(cluster: &Cluster, p: &Value, want_denied: bool) -> Result<(), String> {
    eventually(
        DEADLINE,
        "the Namespace event reached the cache",
        || async {
            let got = match plan_for(cluster, p).await {
                Ok(_) => Ok(()),
                Err(d) => Err(denial_text(&d)),
            };
            (got.is_err() == want_denied).then_some(got)
        },
    )
    .await
}

#[tokio::test]
async fn namespace_boundary_annotation_changed_while_running_applies_to_the_next_admission() {
    let fake = fake_with_namespace().await;
    fake.put(Res::ServiceAccounts, service_account(NS, "orders", &[]));
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;
    let producer = pod("orders", &[(keys::SENDS, "queue/orders-created")]);

    // No boundary: admitted.
    boundary_verdict(&cluster, &producer, false)
        .await
        .expect("admitted without a boundary");

    // The Namespace's owners fence it: the same pod is now refused, naming the fence.
    fake.put(
        Res::Namespaces,
        namespace(NS, &[(keys::ALLOWED_ENTITIES, "queue/billing-*")], MESH),
    );
    let message = boundary_verdict(&cluster, &producer, true)
        .await
        .expect_err("refused once the boundary is seen");
    assert!(
        message.contains("send queue/orders-created is outside the boundary of Namespace payments")
            && message.contains("sbmesh.io/allowed-entities = \"queue/billing-*\"")
            && message.contains("(on Namespace payments)"),
        "{message}"
    );

    // Widened: admitted again.
    fake.put(
        Res::Namespaces,
        namespace(
            NS,
            &[(keys::ALLOWED_ENTITIES, "queue/billing-*, queue/orders-*")],
            MESH,
        ),
    );
    boundary_verdict(&cluster, &producer, false)
        .await
        .expect("admitted once widened");

    // Broken by hand: refused (a broken fence is not an open gate), naming the Namespace.
    fake.put(
        Res::Namespaces,
        namespace(NS, &[(keys::ALLOWED_ENTITIES, "orders")], MESH),
    );
    let message = boundary_verdict(&cluster, &producer, true)
        .await
        .expect_err("refused while the boundary does not parse");
    assert!(
        message.contains("on Namespace payments does not parse"),
        "{message}"
    );

    // Removed: the config's boundary applies again (here: none).
    fake.put(Res::Namespaces, namespace(NS, &[], MESH));
    boundary_verdict(&cluster, &producer, false)
        .await
        .expect("admitted once the annotation is gone");
    assert_eq!(
        gets(&fake),
        0,
        "served from the cache: {:#?}",
        fake.requests()
    );
}

#[tokio::test]
async fn boundary_keys_on_a_service_account_are_ignored_with_a_warning() {
    let fake = FakeApiServer::start().await;
    fake.put(
        Res::Namespaces,
        namespace(NS, &[(keys::ALLOWED_ENTITIES, "queue/billing-*")], MESH),
    );
    fake.put(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::ALLOWED_ENTITIES, "*")]),
    );
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;

    let refused = plan_for(&cluster, &pod("orders", &[(keys::SENDS, "queue/orders")]))
        .await
        .expect_err("the ServiceAccount cannot widen its Namespace's boundary");
    assert_eq!(refused.reason(), sbmesh::denial::Reason::Boundary);

    let plan = plan_for(
        &cluster,
        &pod("orders", &[(keys::SENDS, "queue/billing-eu")]),
    )
    .await
    .expect("inside the Namespace's boundary");
    assert!(
        plan.warnings.iter().any(|w| w
            .contains("sbmesh.io/allowed-entities on ServiceAccount payments/orders is ignored")),
        "{:#?}",
        plan.warnings
    );
}

#[tokio::test]
async fn cache_miss_is_served_by_one_direct_get() {
    let fake = fake_with_namespace().await;
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;

    // Created a moment before its pod: the API server has it, the watch event is in flight.
    fake.put_unwatched(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::AWI_CLIENT_ID, SA_AWI_CLIENT)]),
    );
    let plan = plan_for(&cluster, &pod("orders", &[])).await.expect("plan");

    assert_eq!(plan.client_id.as_str(), SA_AWI_CLIENT);
    assert_eq!(fake.count(Verb::Get, Res::ServiceAccounts), 1);
    assert_eq!(fake.count(Verb::Get, Res::Namespaces), 0);
    let get = fake
        .requests()
        .into_iter()
        .find(|r| r.verb == Verb::Get)
        .expect("a GET");
    assert_eq!(
        get.uri,
        "/api/v1/namespaces/payments/serviceaccounts/orders"
    );
    assert!(
        get.accept.contains("as=PartialObjectMetadata;"),
        "metadata only: {}",
        get.accept
    );
}

#[tokio::test]
async fn missing_service_account_is_denied_naming_it() {
    let fake = fake_with_namespace().await;
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;

    let denial = cluster
        .facts(NS, "ghost")
        .await
        .expect_err("no such ServiceAccount");
    assert!(
        denial_text(&denial).contains("ServiceAccount payments/ghost does not exist"),
        "{}",
        denial_text(&denial)
    );
    let response = admit(&cluster, &pod("ghost", &[])).await;
    assert_eq!(response.status.as_ref().map(|s| s.0), Some(403));
    assert_eq!(fake.count(Verb::Get, Res::ServiceAccounts), 2);
}

#[tokio::test]
async fn deleted_service_account_is_denied_after_its_delete_event() {
    let fake = fake_with_namespace().await;
    fake.put(Res::ServiceAccounts, service_account(NS, "orders", &[]));
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;

    fake.delete(Res::ServiceAccounts, NS, "orders");
    eventually(DEADLINE, "the DELETED event reached the cache", || async {
        (objects(&cluster, "serviceaccounts") == 0).then_some(())
    })
    .await;
    let denial = cluster.facts(NS, "orders").await.expect_err("deleted");
    assert!(
        denial_text(&denial).contains("ServiceAccount payments/orders does not exist"),
        "{}",
        denial_text(&denial)
    );
}

#[tokio::test]
async fn api_server_down_during_a_get_is_a_denial_with_the_reason() {
    let mut fake = fake_with_namespace().await;
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;
    fake.shutdown().await;

    let denial = cluster
        .facts(NS, "orders")
        .await
        .expect_err("API server is gone");
    assert!(
        denial_text(&denial).contains("cannot read ServiceAccount payments/orders"),
        "{}",
        denial_text(&denial)
    );
    assert!(
        denial_text(&denial)
            .to_ascii_lowercase()
            .contains("connect"),
        "the reason names the connection failure: {}",
        denial_text(&denial)
    );
}

#[tokio::test]
async fn api_server_silent_during_a_get_is_a_denial_after_the_lookup_timeout() {
    let fake = fake_with_namespace().await;
    let timeout = Duration::from_millis(300);
    let cluster = Cluster::start_with_client(fake.client(), IdentityModeSetting::Inject, timeout);
    until_ready(&cluster).await;
    fake.stall_gets(true);

    let started = Instant::now();
    let denial = cluster.facts(NS, "orders").await.expect_err("no answer");
    let took = started.elapsed();
    assert!(
        denial_text(&denial).contains("no answer within 0.3s"),
        "{}",
        denial_text(&denial)
    );
    assert!(took >= timeout && took < timeout * 5, "took {took:?}");
}

#[tokio::test]
async fn forbidden_get_is_a_denial_naming_the_rbac_sbmesh_needs() {
    let fake = fake_with_namespace().await;
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;
    fake.fail_gets(Some(403));

    let denial = cluster.facts(NS, "orders").await.expect_err("forbidden");
    assert!(
        denial_text(&denial).contains("403 Forbidden"),
        "{}",
        denial_text(&denial)
    );
    assert!(
        denial_text(&denial).contains("get, list and watch on serviceaccounts"),
        "{}",
        denial_text(&denial)
    );
}

#[tokio::test]
async fn dropped_watch_resumes_from_its_resource_version_without_a_relist() {
    let fake = fake_with_namespace().await;
    let cluster = ready_cluster(&fake, IdentityModeSetting::Inject).await;
    eventually(DEADLINE, "the ServiceAccount watch is open", || async {
        (fake.open_watches(Res::ServiceAccounts) == 1).then_some(())
    })
    .await;
    let lists = fake.count(Verb::List, Res::ServiceAccounts);
    let watch_uris = || -> Vec<String> {
        fake.requests()
            .into_iter()
            .filter(|r| r.verb == Verb::Watch && r.res == Some(Res::ServiceAccounts))
            .map(|r| r.uri)
            .collect()
    };
    let first = watch_uris().pop().expect("a watch");

    fake.end_watches(Res::ServiceAccounts);
    fake.put(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::AWI_CLIENT_ID, SA_AWI_CLIENT)]),
    );

    eventually(
        DEADLINE,
        "the event after the drop reached the cache",
        || async { (objects(&cluster, "serviceaccounts") == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        watch_uris(),
        [first.clone(), first],
        "one reconnect, from the version last seen"
    );
    assert_eq!(
        fake.count(Verb::List, Res::ServiceAccounts),
        lists,
        "resumed, not relisted"
    );
    let plan = plan_for(&cluster, &pod("orders", &[])).await.expect("plan");
    assert_eq!(plan.client_id.as_str(), SA_AWI_CLIENT);
    assert_eq!(gets(&fake), 0);
}

#[tokio::test]
async fn watches_are_cluster_wide_and_metadata_only() {
    let fake = fake_with_namespace().await;
    let _cluster = ready_cluster(&fake, IdentityModeSetting::Auto).await;

    for r in fake.requests() {
        match (r.res, r.verb) {
            (Some(Res::ServiceAccounts | Res::Namespaces), Verb::List) => {
                assert!(
                    r.uri.starts_with("/api/v1/serviceaccounts?")
                        || r.uri.starts_with("/api/v1/namespaces?"),
                    "{}",
                    r.uri
                );
                assert!(
                    r.accept.contains("as=PartialObjectMetadataList"),
                    "{}",
                    r.accept
                );
            }
            (Some(Res::ServiceAccounts | Res::Namespaces), Verb::Watch) => {
                assert!(
                    r.accept.contains("as=PartialObjectMetadata"),
                    "{}",
                    r.accept
                );
            }
            (Some(Res::MutatingWebhookConfigurations), Verb::List | Verb::Watch) => {}
            _ => panic!("unexpected request {r:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// readiness and cost

#[tokio::test]
async fn not_ready_until_every_cache_has_synced() {
    let fake = fake_with_namespace().await;
    fake.hold_lists(true);
    let cluster =
        Cluster::start_with_client(fake.client(), IdentityModeSetting::Auto, LOOKUP_TIMEOUT);
    eventually(DEADLINE, "all three lists are in flight", || async {
        Res::CACHED
            .iter()
            .all(|r| fake.count(Verb::List, *r) > 0)
            .then_some(())
    })
    .await;

    assert!(!cluster.ready());
    assert_eq!(
        cluster.cache_states(),
        [
            ("serviceaccounts", false),
            ("namespaces", false),
            ("mutatingwebhookconfigurations", false)
        ]
    );
    assert_eq!(cluster.identity_mode(), None);

    fake.hold_lists(false);
    until_ready(&cluster).await;
    assert_eq!(
        cluster.cache_states(),
        [
            ("serviceaccounts", true),
            ("namespaces", true),
            ("mutatingwebhookconfigurations", true)
        ]
    );
}

#[tokio::test]
async fn fixed_identity_mode_does_not_watch_webhook_configurations() {
    let fake = fake_with_namespace().await;
    let cluster = ready_cluster(&fake, IdentityModeSetting::Delegate).await;

    assert_eq!(
        cluster.cache_states(),
        [("serviceaccounts", true), ("namespaces", true)]
    );
    assert_eq!(
        fake.count(Verb::List, Res::MutatingWebhookConfigurations),
        0
    );
    assert_eq!(
        fake.count(Verb::Watch, Res::MutatingWebhookConfigurations),
        0
    );
}

#[tokio::test]
async fn warm_cache_makes_zero_api_calls_per_admission() {
    let fake = fake_with_namespace().await;
    fake.put(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::AWI_CLIENT_ID, SA_AWI_CLIENT)]),
    );
    fake.put(
        Res::MutatingWebhookConfigurations,
        istio_webhook_configuration(),
    );
    let cluster = ready_cluster(&fake, IdentityModeSetting::Auto).await;
    let before = fake.total();

    for _ in 0..200 {
        let response = admit(&cluster, &pod("orders", &[])).await;
        assert!(response.allowed(), "{:?}", response.status);
    }
    assert_eq!(fake.total(), before, "{:#?}", &fake.requests()[before..]);
}

// ---------------------------------------------------------------------------------------------
// identity mode auto

fn has_token_volume(r: &Response) -> bool {
    patch_text(r).contains(sbmesh::mutate::identity::VOLUME_NAME)
}

#[tokio::test]
async fn auto_identity_delegates_while_the_awi_webhook_configuration_exists() {
    let fake = fake_with_namespace().await;
    fake.put(
        Res::ServiceAccounts,
        service_account(NS, "orders", &[(keys::AWI_CLIENT_ID, SA_AWI_CLIENT)]),
    );
    fake.put(
        Res::MutatingWebhookConfigurations,
        istio_webhook_configuration(),
    );
    let cluster = ready_cluster(&fake, IdentityModeSetting::Auto).await;

    assert_eq!(cluster.identity_mode(), Some(IdentityMode::Inject));
    let injected = admit(&cluster, &pod("orders", &[])).await;
    assert!(has_token_volume(&injected), "{}", patch_text(&injected));

    fake.put(
        Res::MutatingWebhookConfigurations,
        awi_webhook_configuration(),
    );
    eventually(DEADLINE, "auto switched to delegate", || async {
        (cluster.identity_mode() == Some(IdentityMode::Delegate)).then_some(())
    })
    .await;
    let facts = cluster.facts(NS, "orders").await.expect("facts");
    assert_eq!(facts.identity_mode, Some(IdentityMode::Delegate));
    let delegated = admit(&cluster, &pod("orders", &[])).await;
    let patch = patch_text(&delegated);
    assert!(delegated.allowed(), "{:?}", delegated.status);
    assert!(!has_token_volume(&delegated), "{patch}");
    for env in [
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
    ] {
        assert!(
            !patch.contains(&format!("\"{env}\"")),
            "{env} is left to the AWI webhook: {patch}"
        );
    }
    assert!(
        patch.contains("AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE"),
        "{patch}"
    );
    assert!(patch.contains("azure.workload.identity~1use"), "{patch}");

    fake.delete(
        Res::MutatingWebhookConfigurations,
        "",
        "azure-wi-webhook-mutating-webhook-configuration",
    );
    eventually(DEADLINE, "auto switched back to inject", || async {
        (cluster.identity_mode() == Some(IdentityMode::Inject)).then_some(())
    })
    .await;
    let injected = admit(&cluster, &pod("orders", &[])).await;
    assert!(has_token_volume(&injected), "{}", patch_text(&injected));
    assert_eq!(objects(&cluster, "mutatingwebhookconfigurations"), 1);
}

#[tokio::test]
async fn auto_identity_follows_the_awi_webhook_removed_from_a_configuration() {
    let fake = fake_with_namespace().await;
    fake.put(
        Res::MutatingWebhookConfigurations,
        awi_webhook_configuration(),
    );
    let cluster = ready_cluster(&fake, IdentityModeSetting::Auto).await;
    assert_eq!(
        cluster.identity_mode(),
        Some(IdentityMode::Delegate),
        "listed at start"
    );

    let mut emptied = awi_webhook_configuration();
    emptied["webhooks"] = json!([]);
    fake.put(Res::MutatingWebhookConfigurations, emptied);
    eventually(DEADLINE, "auto switched to inject", || async {
        (cluster.identity_mode() == Some(IdentityMode::Inject)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn auto_identity_before_the_first_list_is_a_denial_not_a_guess() {
    let fake = fake_with_namespace().await;
    fake.put(Res::ServiceAccounts, service_account(NS, "orders", &[]));
    fake.hold_lists(true);
    let cluster = Cluster::start_with_client(
        fake.client(),
        IdentityModeSetting::Auto,
        Duration::from_millis(200),
    );

    let denial = cluster
        .facts(NS, "orders")
        .await
        .expect_err("identity unknown");
    assert!(
        denial_text(&denial).contains("identity mode auto cannot tell yet"),
        "{}",
        denial_text(&denial)
    );
}

// ---------------------------------------------------------------------------------------------
// --cluster modes

#[test]
fn cluster_mode_parses_auto_on_off_case_insensitively() {
    assert_eq!("auto".parse::<ClusterMode>().ok(), Some(ClusterMode::Auto));
    assert_eq!("ON".parse::<ClusterMode>().ok(), Some(ClusterMode::On));
    assert_eq!(" Off ".parse::<ClusterMode>().ok(), Some(ClusterMode::Off));
    let err = "yes".parse::<ClusterMode>().expect_err("not a mode");
    assert!(err.to_string().contains("auto, on, off"), "{err}");
    assert_eq!(ClusterMode::On.to_string(), "on");
    assert_eq!(ClusterMode::default(), ClusterMode::Auto);
}

#[tokio::test]
async fn cluster_off_consults_only_the_pod_and_the_config() {
    let cluster = Cluster::start(ClusterMode::Off, IdentityModeSetting::Auto, LOOKUP_TIMEOUT)
        .await
        .expect("off never fails");
    assert!(cluster.ready());
    assert!(!cluster.lookups_enabled());
    assert!(cluster.cache_states().is_empty());

    let facts = cluster.facts(NS, "orders").await.expect("facts");
    assert!(facts.service_account_annotations.is_none() && facts.namespace_annotations.is_none());
    assert_eq!(
        facts.identity_mode,
        Some(IdentityMode::Inject),
        "auto without a cluster injects"
    );
    let (stage, denial) = plan_with(&cluster, &pod("orders", &[]), &Defaults::default())
        .await
        .expect_err("no namespace");
    assert_eq!(stage, Stage::Plan);
    assert!(
        denial_text(&denial).contains("not consulted: cluster lookups are off"),
        "{}",
        denial_text(&denial)
    );
}

#[tokio::test]
async fn cluster_off_with_a_configuration_never_calls_the_api_server() {
    let fake = fake_with_namespace().await;
    let cluster = Cluster::start_with_config(
        ClusterMode::Off,
        fake.config(),
        IdentityModeSetting::Delegate,
        LOOKUP_TIMEOUT,
    )
    .await
    .expect("off");
    let facts = cluster.facts(NS, "orders").await.expect("facts");
    assert_eq!(facts.identity_mode, Some(IdentityMode::Delegate));
    assert_eq!(fake.total(), 0);
}

#[tokio::test]
async fn cluster_on_fails_fast_naming_the_url_when_the_api_server_is_unreachable() {
    let mut fake = FakeApiServer::start().await;
    let (config, url) = (fake.config(), fake.url());
    fake.shutdown().await;

    let started = Instant::now();
    let err = Cluster::start_with_config(
        ClusterMode::On,
        config,
        IdentityModeSetting::Inject,
        LOOKUP_TIMEOUT,
    )
    .await
    .err()
    .expect("unreachable");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(matches!(err, ClusterError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&url), "names the URL: {message}");
    assert!(
        message.to_ascii_lowercase().contains("connect"),
        "names the cause: {message}"
    );
}

#[tokio::test]
async fn cluster_on_starts_when_the_api_server_answers() {
    let fake = fake_with_namespace().await;
    fake.put(Res::ServiceAccounts, service_account(NS, "orders", &[]));
    let cluster = Cluster::start_with_config(
        ClusterMode::On,
        fake.config(),
        IdentityModeSetting::Inject,
        LOOKUP_TIMEOUT,
    )
    .await
    .expect("on");
    assert!(fake.requests().iter().any(|r| r.uri == "/version"));
    until_ready(&cluster).await;
    assert!(cluster.lookups_enabled());
    cluster.facts(NS, "orders").await.expect("facts");
}

// ---------------------------------------------------------------------------------------------
// memory (run: cargo test --release --test cluster -- --ignored --nocapture cache_memory)

/// Counts live heap bytes, so the memory test can tell the caches' own share from RSS noise
/// (allocator arenas, thread stacks, freed pages the allocator keeps).
struct CountingAllocator;

static LIVE_HEAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_HEAP.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE_HEAP.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
        LIVE_HEAP.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_heap_kib() -> usize {
    LIVE_HEAP.load(std::sync::atomic::Ordering::Relaxed) / 1024
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_heap() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: glibc's malloc_trim only returns free heap pages to the kernel.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run on its own"]
async fn cache_memory_with_10000_service_accounts() {
    const SERVICE_ACCOUNTS: usize = 10_000;
    const NAMESPACES: usize = 200;
    let fake = FakeApiServer::start().await;
    fake.seed(
        Res::Namespaces,
        (0..NAMESPACES).map(|n| {
            namespace(
                &format!("team-{n:03}"),
                &[],
                &[("istio-injection", "enabled")],
            )
        }),
    );
    fake.seed(
        Res::ServiceAccounts,
        (0..SERVICE_ACCOUNTS).map(|i| {
            let name = format!("workload-{i:05}");
            let last_applied = format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\",\"metadata\":{{\"annotations\":\
                 {{\"azure.workload.identity/client-id\":\"{SA_AWI_CLIENT}\"}},\"name\":\"{name}\",\
                 \"namespace\":\"team-{:03}\"}}}}",
                i % NAMESPACES
            );
            service_account(
                &format!("team-{:03}", i % NAMESPACES),
                &name,
                &[
                    (keys::AWI_CLIENT_ID, SA_AWI_CLIENT),
                    (keys::AWI_TENANT_ID, SA_AWI_TENANT),
                    ("kubectl.kubernetes.io/last-applied-configuration", &last_applied),
                ],
            )
        }),
    );
    let client = fake.client();
    release_free_heap();
    let before = vm_rss_kib();
    let heap_before = live_heap_kib();

    let cluster = Cluster::start_with_client(client, IdentityModeSetting::Inject, LOOKUP_TIMEOUT);
    until_ready(&cluster).await;
    assert_eq!(objects(&cluster, "serviceaccounts"), SERVICE_ACCOUNTS);
    let synced = vm_rss_kib();
    release_free_heap();
    let trimmed = vm_rss_kib();
    let heap = live_heap_kib().saturating_sub(heap_before);

    println!(
        "{SERVICE_ACCOUNTS} ServiceAccounts and {NAMESPACES} Namespaces cached: live heap +{heap} KiB \
         ({} bytes per ServiceAccount); RSS +{} KiB right after sync, +{} KiB after returning free \
         heap (before {before} KiB, after {trimmed} KiB); list requests: {}",
        heap * 1024 / SERVICE_ACCOUNTS,
        synced.saturating_sub(before),
        trimmed.saturating_sub(before),
        fake.count(Verb::List, Res::ServiceAccounts)
    );
}
