//! Property tests over generated pods: the patch applies, re-running on the result yields zero
//! operations, and every field of the input survives except the listed replacements.

mod support;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use sbmesh::contract::{Context, Defaults, IdentityMode};
use support::*;

/// Annotation values sbmesh may replace (all others must survive byte for byte).
const REPLACEABLE: [&str; 3] = [
    "/metadata/annotations/proxy.istio.io~1config",
    "/metadata/annotations/traffic.sidecar.istio.io~1excludeOutboundPorts",
    "/metadata/annotations/sbmesh.io~1status",
];

fn unknown_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z ]{0,8}".prop_map(Value::from),
        Just(json!({"nested": {"list": [1, "two", null]}})),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        "[A-Z_]{1,12}",
        Just("AZURE_CLIENT_ID".to_string()),
        Just("AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE".to_string()),
        Just("AZURE_AUTHORITY_HOST".to_string()),
    ];
    (
        name,
        prop_oneof![
            "[ -~]{0,20}".prop_map(|v| json!({"value": v})),
            Just(json!({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
            Just(json!({})),
        ],
    )
        .prop_map(|(n, mut v)| {
            v["name"] = json!(n);
            v
        })
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(env_entry(), 0..8)),
        prop::option::of(prop::collection::vec(("[a-z]{1,6}", "/[a-z]{1,8}"), 0..4)),
        prop::option::of(unknown_value()),
        any::<bool>(),
    )
        .prop_map(move |(env, mounts, extra, our_mount)| {
            let mut c = json!({"name": name, "image": "registry.example/app:1"});
            if let Some(env) = env {
                c["env"] = Value::Array(env);
            }
            let mut ms: Vec<Value> = mounts
                .unwrap_or_default()
                .into_iter()
                .map(|(n, p)| json!({"name": n, "mountPath": p}))
                .collect();
            if our_mount {
                ms.push(json!({"name": "sbmesh-azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}));
            }
            if !ms.is_empty() {
                c["volumeMounts"] = Value::Array(ms);
            }
            if let Some(x) = extra {
                c["x-unknown-field"] = x;
            }
            c
        })
}

fn containers(
    prefix: &'static str,
    range: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(any::<u8>(), range).prop_flat_map(move |seeds| {
        seeds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = match s % 16 {
                    0 => format!("istio-proxy-{prefix}{i}"),
                    1 if i == 0 => "istio-proxy".to_string(),
                    _ => format!("{prefix}{i}"),
                };
                container(name)
            })
            .collect::<Vec<_>>()
    })
}

fn annotations() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of(prop_oneof![Just("mesh"), Just("bypass"), Just("none")]),
        prop::option::of(prop_oneof![
            Just("".to_string()),
            Just("concurrency: 2\n".to_string()),
            Just("{\"tracing\": {\"sampling\": 5}}".to_string()),
            Just("holdApplicationUntilProxyStarts: true".to_string()),
        ]),
        prop::option::of(prop::collection::vec(1u16..=65535, 0..4)),
        prop::option::of(prop_oneof![
            Just("sdk"),
            Just("spring,dotnet"),
            Just("sdk,sdk")
        ]),
        prop::option::of("[a-z]{1,5}"),
        prop::collection::btree_map("[a-z]{1,6}\\.example/[a-z]{1,6}", "[ -~]{0,10}", 0..4),
    )
        .prop_map(|(egress, proxy, ports, aliases, queue, extra)| {
            let mut a = Map::new();
            a.insert("sbmesh.io/inject".into(), json!("true"));
            a.insert("sbmesh.io/client-id".into(), json!(CLIENT_ID));
            a.insert(
                "sbmesh.io/servicebus-namespace".into(),
                json!("payments-prod"),
            );
            if let Some(e) = egress {
                a.insert("sbmesh.io/egress".into(), json!(e));
            }
            if let Some(p) = proxy {
                a.insert("proxy.istio.io/config".into(), json!(p));
            }
            if let Some(ports) = ports {
                let s = ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                a.insert(
                    "traffic.sidecar.istio.io/excludeOutboundPorts".into(),
                    json!(s),
                );
            }
            if let Some(al) = aliases {
                a.insert("sbmesh.io/env-aliases".into(), json!(al));
            }
            if let Some(q) = queue {
                a.insert("sbmesh.io/queues".into(), json!(format!("{q}-orders")));
            }
            for (k, v) in extra {
                a.insert(k, json!(v));
            }
            a
        })
}

fn pod_strategy() -> impl Strategy<Value = Value> {
    (
        annotations(),
        prop::option::of(prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..4)),
        containers("c", 1..21),
        prop::option::of(containers("init", 0..20)),
        prop::option::of(prop::collection::vec("[a-z]{1,8}", 0..4)),
        prop::option::of(unknown_value()),
        any::<bool>(),
    )
        .prop_map(|(ann, labels, cs, inits, vols, extra, our_volume)| {
            let mut p = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "gen-", "annotations": ann},
                "spec": {"serviceAccountName": "orders", "containers": cs},
            });
            if let Some(l) = labels {
                p["metadata"]["labels"] = json!(l);
            }
            if let Some(i) = inits {
                p["spec"]["initContainers"] = Value::Array(i);
            }
            let mut volumes: Vec<Value> = vols
                .unwrap_or_default()
                .into_iter()
                .map(|n| json!({"name": format!("v-{n}"), "emptyDir": {}}))
                .collect();
            if our_volume {
                volumes.push(json!({"name": "sbmesh-azure-identity-token", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}}));
            }
            if !volumes.is_empty() {
                p["spec"]["volumes"] = Value::Array(volumes);
            }
            if let Some(x) = extra {
                p["spec"]["x-unknown-spec-field"] = x.clone();
                p["metadata"]["x-unknown-meta-field"] = x;
            }
            p
        })
}

/// Every leaf of `before` (by JSON pointer) is equal in `after`, except allowed replacements.
fn assert_survives(before: &Value, after: &Value, pointer: &str) {
    if REPLACEABLE.contains(&pointer) {
        return;
    }
    match before {
        Value::Object(m) => {
            for (k, v) in m {
                let child = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                assert_survives(v, after, &child);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                assert_survives(v, after, &format!("{pointer}/{i}"));
            }
        }
        leaf => assert_eq!(
            after.pointer(pointer),
            Some(leaf),
            "field {pointer} changed"
        ),
    }
}

fn check(pod: &Value, mode: IdentityMode) {
    let ctx = Context::offline(mode);
    let d = Defaults {
        mesh_exclude_outbound_ports: vec![15020],
        ..defaults()
    };
    let (out, m) = run_with(pod, &ctx, &d).unwrap_or_else(|e| panic!("denied: {e}\n{pod:#}"));
    assert_survives(pod, &out, "");
    let (again, m2) = run_with(&out, &ctx, &d).unwrap();
    assert!(
        m2.patch.0.is_empty(),
        "second round patched: {:#?}",
        m2.patch
    );
    assert_eq!(again, out);
    // Parents come before children: no op's path lies under a path added by a later op.
    let paths = paths(&m);
    for (i, op) in paths.iter().enumerate() {
        for later in &paths[i + 1..] {
            assert!(
                !op.starts_with(&format!("{later}/")),
                "{op:?} before its parent {later:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn patch_applies_keeps_every_field_and_is_idempotent(pod in pod_strategy()) {
        check(&pod, IdentityMode::Inject);
    }

    #[test]
    fn delegate_mode_patch_applies_and_is_idempotent(pod in pod_strategy()) {
        check(&pod, IdentityMode::Delegate);
    }
}
