//! The AdmissionReview bodies that the benchmarks, the load test and the fault tests send:
//! the captured ReplicaSet-made pod as the API server sends it (compact JSON), and that pod
//! grown in the directions that once made injectors slow (many env vars, many containers,
//! a pod near the API server's size limit). Shared by `benches/mutation.rs` and
//! `examples/baseline.rs` (`baseline bodies DIR`), so every figure is measured on the same bytes.
#![allow(dead_code)]

use std::path::Path;

use serde_json::{Value, json};

use sbmesh::contract::Defaults;

#[path = "../../tests/shared/defaults.rs"]
mod shared_defaults;
#[allow(unused_imports)]
pub use shared_defaults::{CLIENT_ID, SERVICEBUS_NAMESPACE, TENANT_ID};

/// The webhook config the load test starts `sbmesh serve` with (`--client-id`,
/// `--tenant-id`, `--servicebus-namespace`), so the captured pod gets a full patch.
pub fn defaults() -> Defaults {
    shared_defaults::full()
}

/// One named request body.
pub struct Body {
    pub name: &'static str,
    pub what: &'static str,
    pub bytes: Vec<u8>,
}

/// The captured review `tests/fixtures/reviews/replicaset-orders.json`.
pub fn captured_review() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reviews/replicaset-orders.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn encode(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).expect("a Value always encodes")
}

fn containers(review: &mut Value) -> &mut Vec<Value> {
    review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .expect("the fixture has containers")
}

/// `n` env entries shaped like a generated config (`NAME_0042=value-0042-…`).
fn env_entries(prefix: &str, n: usize, value_len: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut value = format!("value-{i:05}-");
            while value.len() < value_len {
                value.push_str("abcdefghij");
            }
            value.truncate(value_len);
            json!({"name": format!("{prefix}_{i:05}"), "value": value})
        })
        .collect()
}

/// The captured pod, compact: 4 containers (2 init, one a native sidecar), ~6 KB.
pub fn typical() -> Vec<u8> {
    encode(&captured_review())
}

/// The captured pod whose main container has 1,500 more env vars (Istio's injector once took
/// 12 s on such a pod).
pub fn env1500() -> Vec<u8> {
    let mut review = captured_review();
    let c = &mut containers(&mut review)[0];
    c["env"]
        .as_array_mut()
        .expect("the fixture's container has env")
        .extend(env_entries("CONFIG", 1500, 24));
    encode(&review)
}

/// The captured pod with 30 containers (copies of its main container, renamed).
pub fn containers30() -> Vec<u8> {
    let mut review = captured_review();
    let list = containers(&mut review);
    let template = list[0].clone();
    list.clear();
    for i in 0..30 {
        let mut c = template.clone();
        c["name"] = json!(format!("worker-{i:02}"));
        list.push(c);
    }
    encode(&review)
}

/// The captured pod grown to ~1 MiB the way real pods get big: a 200 KiB
/// `last-applied-configuration` annotation (annotations are capped at 256 KiB in total) and
/// env vars spread over its containers.
pub fn pod1mib() -> Vec<u8> {
    const TARGET: usize = 1 << 20;
    let mut review = captured_review();
    let ann = &mut review["request"]["object"]["metadata"]["annotations"];
    ann["kubectl.kubernetes.io/last-applied-configuration"] = json!("x".repeat(200 * 1024));
    let base = encode(&review).len();
    // Each entry encodes to ~100 bytes; fill the remainder over every container.
    let per_entry = encode(&json!(env_entries("BULK", 1, 72)[0])).len() + 1;
    let list = containers(&mut review);
    let per_container = TARGET.saturating_sub(base) / per_entry / list.len();
    for (i, c) in list.iter_mut().enumerate() {
        let env = c
            .as_object_mut()
            .expect("a container is an object")
            .entry("env")
            .or_insert_with(|| json!([]));
        env.as_array_mut()
            .expect("env is a list")
            .extend(env_entries(&format!("BULK{i}"), per_container, 72));
    }
    encode(&review)
}

/// Every body, smallest first.
pub fn all() -> Vec<Body> {
    vec![
        Body {
            name: "typical",
            what: "captured ReplicaSet pod, 4 containers",
            bytes: typical(),
        },
        Body {
            name: "env1500",
            what: "1,500 extra env vars in one container",
            bytes: env1500(),
        },
        Body {
            name: "containers30",
            what: "30 containers",
            bytes: containers30(),
        },
        Body {
            name: "pod1mib",
            what: "~1 MiB pod: 200 KiB annotation + bulk env",
            bytes: pod1mib(),
        },
    ]
}
