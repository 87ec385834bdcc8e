//! Golden fixtures: whole pods as the API server sends them, wrapped in a real AdmissionReview,
//! answered by the webhook's handler, the patch applied, and the result compared with the
//! expected pod beside the fixture. `SBMESH_BLESS=1 cargo test --test golden` rewrites the
//! expected files (review the diff before committing them).

mod support;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

use sbmesh::admission;
use sbmesh::contract::{Context, Defaults, IdentityMode};

fn fixture_defaults() -> Defaults {
    support::full_defaults()
}

fn review_of(pod: &Value, uid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "payments",
            "operation": "CREATE",
            "object": pod,
            "dryRun": false
        }
    }))
    .unwrap()
}

/// Sends `body` through the handler and returns (patched object, response JSON).
fn admit(pod: &Value, body: &[u8], mode: IdentityMode) -> (Value, Value) {
    let resp = admission::review(body, &Context::offline(mode), &fixture_defaults()).unwrap();
    let json: Value = serde_json::from_slice(&resp.to_review_json()).unwrap();
    let r = &json["response"];
    let mut out = pod.clone();
    if let Some(b64) = r["patch"].as_str() {
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    (out, json)
}

fn compare_or_bless(expected_path: &Path, actual: &Value) {
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("SBMESH_BLESS").is_some() {
        std::fs::write(expected_path, &pretty).unwrap();
        return;
    }
    let want = std::fs::read_to_string(expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with SBMESH_BLESS=1 to create it)",
            expected_path.display()
        )
    });
    let want: Value = serde_json::from_str(&want).unwrap();
    assert_eq!(
        &want,
        actual,
        "{} differs from the webhook's result:\n{pretty}",
        expected_path.display()
    );
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pods");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".json") && !n.contains(".expected")
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

fn golden(mode: IdentityMode, suffix: &str) {
    for path in fixtures() {
        let pod: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (patched, response) = admit(&pod, &review_of(&pod, "golden-1"), mode);
        assert_eq!(response["response"]["uid"], "golden-1");
        assert_eq!(
            response["response"]["allowed"],
            true,
            "{}: {response:#}",
            path.display()
        );
        compare_or_bless(&path.with_extension(format!("{suffix}.json")), &patched);
        let (_, again) = admit(&patched, &review_of(&patched, "golden-2"), mode);
        assert!(
            again["response"].get("patch").is_none(),
            "{}: re-admission patched again: {again:#}",
            path.display()
        );
    }
}

#[test]
fn fixtures_are_patched_as_expected_in_inject_mode() {
    golden(IdentityMode::Inject, "expected");
}

#[test]
fn fixtures_are_patched_as_expected_in_delegate_mode() {
    golden(IdentityMode::Delegate, "expected-delegate");
}

#[test]
fn captured_review_is_answered_with_its_uid_and_a_base64_patch() {
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reviews/replicaset-orders.json"),
    )
    .unwrap();
    let review: Value = serde_json::from_slice(&body).unwrap();
    let pod = review["request"]["object"].clone();
    let (patched, response) = admit(&pod, &body, IdentityMode::Inject);
    let r = &response["response"];
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(r["uid"], review["request"]["uid"]);
    assert_eq!(
        r["auditAnnotations"]["subject"],
        "system:serviceaccount:payments:orders"
    );
    assert_eq!(
        patched["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    // The fixture's orders container takes AZURE_CLIENT_ID from a Secret: kept, no warning.
    assert_eq!(
        patched["spec"]["containers"][0]["env"][2]["valueFrom"]["secretKeyRef"]["name"],
        "orders-identity"
    );
}
