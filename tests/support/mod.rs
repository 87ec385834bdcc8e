//! Shared helpers for the core's tests: run the contract and the mutation the way the webhook
//! does, and apply the patch with a JSON-patch engine.
#![allow(dead_code)]

use serde_json::{Value, json};

use sbmesh::contract::{self, Context, Decision, Defaults, Denial, IdentityMode, InjectionPlan};
use sbmesh::mutate::{self, Mutation};

pub const CLIENT_ID: &str = "6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6c";
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// Webhook config defaults as a typical install sets them: the tenant only.
pub fn defaults() -> Defaults {
    Defaults {
        tenant_id: Some(TENANT_ID.parse().unwrap()),
        ..Defaults::default()
    }
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
    match contract::plan(pod, "payments", ctx, defaults)? {
        Decision::Inject(p) => Ok(*p),
        Decision::Skip => Err(Denial::new("(test) pod was skipped")),
    }
}

pub fn plan(pod: &Value) -> Result<InjectionPlan, Denial> {
    plan_with(pod, &Context::offline(IdentityMode::Inject), &defaults())
}

/// Plans and mutates with the offline context and [`defaults`].
pub fn run(pod: &Value) -> Result<(Value, Mutation), Denial> {
    run_with(pod, &Context::offline(IdentityMode::Inject), &defaults())
}

pub fn run_with(
    pod: &Value,
    ctx: &Context,
    defaults: &Defaults,
) -> Result<(Value, Mutation), Denial> {
    let plan = plan_with(pod, ctx, defaults)?;
    let m = mutate::mutate(pod, &plan)?;
    Ok((apply(pod, &m.ops), m))
}

/// Applies operations with json-patch (RFC 6902), as the API server does.
pub fn apply(pod: &Value, ops: &[mutate::Op]) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\n{ops:#?}"));
    out
}

/// The denial message for a pod that must be refused.
pub fn denied(pod: &Value) -> String {
    match run(pod) {
        Err(d) => d.message,
        Ok((_, m)) => panic!("expected a denial, got {:#?}", m.ops),
    }
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
