//! Shared helpers for the core's tests: run the contract and the mutation the way the webhook
//! does, and apply the patch with a JSON-patch engine.
#![allow(dead_code)]

use serde_json::{Value, json};

use sbmesh::contract::{self, Context, Decision, Defaults, IdentityMode, InjectionPlan};
use sbmesh::core::{self, Admission};
use sbmesh::denial::{Denial, Reason};
use sbmesh::mutate::{Mutation, Patch};
use sbmesh::pod::Pod;

#[path = "../shared/defaults.rs"]
mod shared_defaults;
#[allow(unused_imports)]
pub use shared_defaults::{CLIENT_ID, SERVICEBUS_NAMESPACE, TENANT_ID};

/// Webhook config defaults as a typical install sets them: the tenant only.
pub fn defaults() -> Defaults {
    shared_defaults::tenant_only()
}

/// Tenant, client id and bus in the config.
pub fn full_defaults() -> Defaults {
    shared_defaults::full()
}

/// A minimal opted-in pod with `annotations` added to the opt-in.
pub fn pod(annotations: Value) -> Value {
    let mut ann = json!({
        "sbmesh.io/inject": "true",
        "sbmesh.io/client-id": CLIENT_ID,
        "sbmesh.io/servicebus-namespace": "payments-prod",
    });
    for (k, v) in annotations.as_object().unwrap() {
        if v.is_null() {
            ann.as_object_mut().unwrap().remove(k);
        } else {
            ann[k] = v.clone();
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "orders-7d9f8-", "labels": {"app": "orders"}, "annotations": ann},
        "spec": {
            "serviceAccountName": "orders",
            "containers": [{"name": "app", "image": "ghcr.io/example/orders:1.4.2"}]
        }
    })
}

pub fn plan_with(pod: &Value, ctx: &Context, defaults: &Defaults) -> Result<InjectionPlan, Denial> {
    let json = pod.to_string();
    let view = Pod::parse(&json).expect("the test pod is JSON");
    match contract::plan(&view, "payments", ctx, defaults)? {
        Decision::Inject(p) => Ok(*p),
        Decision::Skip => Err(Denial::Internal("(test) pod was skipped".into())),
    }
}

pub fn plan(pod: &Value) -> Result<InjectionPlan, Denial> {
    plan_with(pod, &Context::offline(IdentityMode::Inject), &defaults())
}

/// Admits with the offline context and [`defaults`], through the core's one entry point.
pub fn run(pod: &Value) -> Result<(Value, Mutation), Denial> {
    run_with(pod, &Context::offline(IdentityMode::Inject), &defaults())
}

pub fn run_with(
    pod: &Value,
    ctx: &Context,
    defaults: &Defaults,
) -> Result<(Value, Mutation), Denial> {
    match core::admit_json(&pod.to_string(), "payments", ctx, defaults) {
        Admission::Patch { mutation, .. } => Ok((apply(pod, &mutation.patch), mutation)),
        Admission::Deny(d) => Err(d),
        Admission::Skip => Err(Denial::Internal("(test) pod was skipped".into())),
    }
}

/// Applies a patch with json-patch (RFC 6902), as the API server does.
pub fn apply(pod: &Value, patch: &Patch) -> Value {
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch.to_json_patch())
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\n{patch:#?}"));
    out
}

/// The denial of a pod that must be refused for `reason`; its message, to check that it names
/// what the user must change.
#[track_caller]
pub fn denied(pod: &Value, reason: Reason) -> String {
    match run(pod) {
        Err(d) => {
            assert_eq!(d.reason(), reason, "denied for another reason: {d}");
            let message = d.to_string();
            assert!(message.starts_with("sbmesh: "), "{message}");
            message
        }
        Ok((_, m)) => panic!("expected a denial, got {:#?}", m.patch),
    }
}

/// Whether the core skips the pod (it did not opt in).
pub fn skipped(pod: &Value) -> bool {
    matches!(
        core::admit_json(
            &pod.to_string(),
            "payments",
            &Context::offline(IdentityMode::Inject),
            &defaults()
        ),
        Admission::Skip
    )
}

/// The paths of a mutation's operations.
pub fn paths(m: &Mutation) -> Vec<String> {
    m.patch.0.iter().map(|o| o.path.clone()).collect()
}

/// `(name, value)` of a container's env; `valueFrom` entries show as `<from>`.
pub fn env(pod: &Value, pointer: &str) -> Vec<(String, String)> {
    pod.pointer(&format!("{pointer}/env"))
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|e| {
                    let v = if e.get("valueFrom").is_some() {
                        "<from>".to_string()
                    } else {
                        e["value"].as_str().unwrap_or("").to_string()
                    };
                    (e["name"].as_str().unwrap().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn env_names(pod: &Value, pointer: &str) -> Vec<String> {
    env(pod, pointer).into_iter().map(|(n, _)| n).collect()
}

pub fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")?.get(key)?.as_str()
}

pub fn load_fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
