//! `sbmesh onboard -o istio` as a user runs it, checked against the project's own egress objects:
//! every object it writes has the field shape of its counterpart in
//! `manifests/istio/egress-gateway` (with the label that directory's kustomization adds), and the
//! AuthorizationPolicy pairs each ServiceAccount with exactly the buses of its own grants.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use sbmesh::inject::input::documents;
use sbmesh::onboard::plan::{Onboarding, Workload};
use sbmesh::onboard::{istio, mermaid};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sbmesh");

const C1: &str = "11111111-1111-4111-8111-111111111111";
const C2: &str = "22222222-2222-4222-8222-222222222222";
const C3: &str = "33333333-3333-4333-8333-333333333333";
const TENANT: &str = "99999999-9999-4999-8999-999999999999";

/// Two buses (`shop-orders`, the Namespace `shop`'s; `ops-billing`, the Namespace `ops`'s and
/// one shop workload's own). `shop/api` reaches `shop-orders` only; `shop/worker` both (one
/// workload each); `ops/audit` shares `shop/api`'s identity but reaches `ops-billing` only;
/// `shop/idle` opts in and names no entity, so it is granted nothing.
fn input() -> String {
    let namespace = |name: &str, bus: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  annotations:\n    \
             sbmesh.io/servicebus-namespace: {bus}\n"
        )
    };
    let sa = |ns: &str, name: &str, client: &str| {
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
             annotations:\n    azure.workload.identity/client-id: {client}\n    \
             azure.workload.identity/tenant-id: {TENANT}\n"
        )
    };
    let deployment = |ns: &str, name: &str, sa: &str, annotations: &[(&str, &str)]| {
        let mut a = String::from("        sbmesh.io/inject: \"true\"\n");
        for (k, v) in annotations {
            a.push_str(&format!("        sbmesh.io/{k}: {v}\n"));
        }
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      \
             labels:\n        app: {name}\n      annotations:\n{a}    spec:\n      \
             serviceAccountName: {sa}\n      containers:\n      - name: app\n        image: app:1\n"
        )
    };
    [
        namespace("shop", "shop-orders"),
        namespace("ops", "ops-billing"),
        sa("shop", "api", C1),
        sa("shop", "worker", C2),
        sa("shop", "idle", C3),
        sa("ops", "audit", C1),
        deployment("shop", "api", "api", &[("sends", "queue/in")]),
        deployment("shop", "idle", "idle", &[]),
        deployment("shop", "worker", "worker", &[("receives", "queue/in")]),
        deployment(
            "shop",
            "worker-billing",
            "worker",
            &[
                ("servicebus-namespace", "ops-billing"),
                ("sends", "topic/invoices"),
            ],
        ),
        deployment(
            "ops",
            "audit",
            "audit",
            &[("receives", "topic/invoices:audit")],
        ),
    ]
    .join("---\n")
}

/// `sbmesh onboard -f - -o istio ARGS` over `input`: its stdout, after checking it succeeded.
fn onboard(input: &str, args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["onboard", "-f", "-", "-o", "istio"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn parse(text: &str) -> Vec<Value> {
    documents(text)
        .unwrap_or_else(|e| panic!("the output does not parse: {e:?}\n{text}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn egress_gateway(file: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/istio/egress-gateway");
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut docs = parse(&text);
    assert_eq!(docs.len(), 1, "{file}");
    docs.remove(0)
}

/// The manifest as `kubectl apply -k manifests/istio/egress-gateway` creates it: with the labels
/// of the kustomization's `labels` entries.
fn as_applied(file: &str) -> Value {
    let mut object = egress_gateway(file);
    let kustomization = egress_gateway("kustomization.yaml");
    for entry in kustomization["labels"].as_array().unwrap() {
        for (k, v) in entry["pairs"].as_object().unwrap() {
            object["metadata"]["labels"][k] = v.clone();
        }
    }
    object
}

/// The field shape of a value: mappings by their keys, sequences by their first element's
/// shape, scalars by their type.
#[derive(Debug, PartialEq)]
enum Shape {
    Map(BTreeMap<String, Shape>),
    Seq(Option<Box<Shape>>),
    String,
    Number,
    Bool,
    Null,
}

fn shape(v: &Value) -> Shape {
    match v {
        Value::Object(m) => Shape::Map(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Shape::Seq(a.first().map(|first| Box::new(shape(first)))),
        Value::String(_) => Shape::String,
        Value::Number(_) => Shape::Number,
        Value::Bool(_) => Shape::Bool,
        Value::Null => Shape::Null,
    }
}

/// The first place where two shapes differ, as a path and what each side has there.
fn shape_difference(a: &Shape, b: &Shape, path: &str) -> Option<String> {
    match (a, b) {
        (Shape::Map(x), Shape::Map(y)) => {
            let (kx, ky): (Vec<_>, Vec<_>) = (x.keys().collect(), y.keys().collect());
            if kx != ky {
                return Some(format!("{path}: keys {kx:?} vs {ky:?}"));
            }
            x.iter()
                .find_map(|(k, v)| shape_difference(v, &y[k], &format!("{path}.{k}")))
        }
        (Shape::Seq(Some(x)), Shape::Seq(Some(y))) => shape_difference(x, y, &format!("{path}[0]")),
        (x, y) if x == y => None,
        (x, y) => Some(format!("{path}: {x:?} vs {y:?}")),
    }
}

fn assert_same_shape(rendered: &Value, manifest: &Value) {
    assert_eq!(rendered["apiVersion"], manifest["apiVersion"]);
    assert_eq!(rendered["kind"], manifest["kind"]);
    if let Some(d) = shape_difference(&shape(rendered), &shape(manifest), "") {
        panic!(
            "{} {} differs from manifests/istio/egress-gateway at {d}\nrendered: {rendered:#}\n\
             manifest: {manifest:#}",
            rendered["kind"], rendered["metadata"]["name"]
        );
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// Each rule of the policy as (principals, SNI values).
fn pairing(policy: &Value) -> Vec<(Vec<&str>, Vec<&str>)> {
    policy["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["when"][0]["key"], "connection.sni", "{r}");
            (
                strings(&r["from"][0]["source"]["principals"]),
                strings(&r["when"][0]["values"]),
            )
        })
        .collect()
}

#[test]
fn the_shape_check_catches_a_difference() {
    let manifest = egress_gateway("serviceentry.yaml");
    let mut changed = manifest.clone();
    changed["spec"]["ports"][0]["number"] = Value::String("443".into());
    assert!(shape_difference(&shape(&changed), &shape(&manifest), "").is_some());
    let mut changed = manifest.clone();
    changed["spec"]["exportTo"] = serde_json::json!(["."]);
    assert!(shape_difference(&shape(&changed), &shape(&manifest), "").is_some());
    assert!(shape_difference(&shape(&manifest), &shape(&manifest), "").is_none());
}

#[test]
fn objects_have_the_shape_of_the_egress_gateway_manifests() {
    let docs = parse(&onboard(&input(), &[]));
    let names: Vec<(&str, &str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ServiceEntry", "istio-system", "servicebus-shop-orders"),
            ("ServiceEntry", "istio-system", "servicebus-ops-billing"),
            ("AuthorizationPolicy", "istio-system", "servicebus-egress"),
        ]
    );
    let service_entry = as_applied("serviceentry.yaml");
    let policy = as_applied("authorizationpolicy.yaml");
    assert_same_shape(&docs[0], &service_entry);
    assert_same_shape(&docs[1], &service_entry);
    assert_same_shape(&docs[2], &policy);
    // Beyond the shape, the fixed values are the manifests' too.
    for se in &docs[..2] {
        for field in ["location", "ports", "resolution"] {
            assert_eq!(se["spec"][field], service_entry["spec"][field], "{field}");
        }
    }
    assert_eq!(
        strings(&docs[0]["spec"]["hosts"]),
        ["shop-orders.servicebus.windows.net"]
    );
    assert_eq!(
        strings(&docs[1]["spec"]["hosts"]),
        ["ops-billing.servicebus.windows.net"]
    );
    for field in ["selector", "action"] {
        assert_eq!(docs[2]["spec"][field], policy["spec"][field], "{field}");
    }
    for rule in docs[2]["spec"]["rules"].as_array().unwrap() {
        assert_eq!(rule.get("to"), policy["spec"]["rules"][0].get("to"));
    }
}

#[test]
fn each_service_account_reaches_only_the_buses_of_its_own_grants() {
    let docs = parse(&onboard(&input(), &[]));
    assert_eq!(
        pairing(&docs[2]),
        [
            (
                vec![
                    "cluster.local/ns/shop/sa/api",
                    "cluster.local/ns/shop/sa/worker"
                ],
                vec!["shop-orders.servicebus.windows.net"]
            ),
            (
                vec![
                    "cluster.local/ns/ops/sa/audit",
                    "cluster.local/ns/shop/sa/worker"
                ],
                vec!["ops-billing.servicebus.windows.net"]
            ),
        ]
    );
}

#[test]
fn trust_domain_and_egress_namespace() {
    let out = onboard(
        &input(),
        &[
            "--trust-domain",
            "prod.example.com",
            "--egress-namespace",
            "egress",
        ],
    );
    let docs = parse(&out);
    assert_eq!(docs.len(), 3);
    for d in &docs {
        assert_eq!(d["metadata"]["namespace"], "egress", "{d}");
    }
    let principals: Vec<&str> = pairing(&docs[2]).into_iter().flat_map(|(p, _)| p).collect();
    assert!(
        principals
            .iter()
            .all(|p| p.starts_with("prod.example.com/ns/")),
        "{principals:?}"
    );
    assert!(!out.contains("cluster.local"), "{out}");
}

#[test]
fn the_output_is_deterministic() {
    assert_eq!(onboard(&input(), &[]), onboard(&input(), &[]));
}

#[test]
fn nothing_granted_is_a_comment_and_no_policy() {
    let idle = input()
        .split("---\n")
        .filter(|d| !d.contains("kind: Deployment") || d.contains("name: idle"))
        .collect::<Vec<_>>()
        .join("---\n");
    let out = onboard(&idle, &[]);
    assert!(
        !out.is_empty() && out.lines().all(|l| l.starts_with('#')),
        "{out}"
    );
    assert!(parse(&out).is_empty(), "{out}");
}

/// The library's renderers over a plan built directly: the same pairing, and a mermaid graph
/// with both buses.
#[test]
fn the_library_renderers_agree() {
    let workload =
        |ns: &str, sa: &str, client: &str, bus: &str, sends: &[&str], receives: &[&str]| {
            let reference = format!("{ns}/Deployment/{sa}");
            Workload::from_items(&reference, sa, client, Some(TENANT), bus, sends, receives)
                .unwrap()
        };
    let onboarding = Onboarding::new(vec![
        workload("shop", "api", C1, "shop-orders", &["queue/in"], &[]),
        workload("shop", "worker", C2, "shop-orders", &[], &["queue/in"]),
        workload(
            "shop",
            "worker",
            C2,
            "ops-billing",
            &["topic/invoices"],
            &[],
        ),
        workload(
            "ops",
            "audit",
            C1,
            "ops-billing",
            &[],
            &["topic/invoices:audit"],
        ),
    ]);
    let docs = parse(&istio::render(&onboarding, "cluster.local", "istio-system"));
    let cli = parse(&onboard(&input(), &[]));
    assert_eq!(pairing(&docs[2]), pairing(&cli[2]));
    let graph = mermaid::render(&onboarding);
    assert!(graph.starts_with("flowchart LR\n"), "{graph}");
    assert!(
        graph.contains("subgraph b1[\"shop-orders.servicebus.windows.net\"]"),
        "{graph}"
    );
    assert!(
        graph.contains("subgraph b2[\"ops-billing.servicebus.windows.net\"]"),
        "{graph}"
    );
}
