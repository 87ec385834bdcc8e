//! What every fuzz target checks once the core has answered: the response is a JSON
//! AdmissionReview with the request's uid, the patch applies with an RFC 6902 engine (as the
//! API server's does), and admitting the patched pod again gives no operations (idempotence).

use serde_json::Value;

use sbmesh::admission::{self, Outcome, Response};
use sbmesh::contract::{Context, Defaults};
use sbmesh::core;

#[path = "../../tests/shared/defaults.rs"]
mod shared_defaults;
pub use shared_defaults::{CLIENT_ID, TENANT_ID};

/// The tests' full config (tenant, client id and Service Bus namespace all defaulted, so that
/// most opted-in pods get as far as the mutation), with the optional Istio settings on,
/// telemetry on and an entity boundary whose globs some fuzzed items fit and others do not.
pub fn defaults() -> Defaults {
    use sbmesh::contract::boundary::{self, Key, Patterns};
    let entities = ["queue/*", "topic/*:*", "topic/a*b"].map(String::from);
    Defaults {
        mesh_exclude_outbound_ports: vec![15020],
        native_sidecar: true,
        telemetry: sbmesh::contract::Telemetry::Otel,
        boundaries: boundary::Defaults {
            entities: Some(Patterns::parse_config(Key::Entities, &entities).expect("patterns")),
            ..boundary::Defaults::default()
        },
        ..shared_defaults::full()
    }
}

/// The response body is an AdmissionReview with the uid, and a patch that decodes.
pub fn check_response(resp: &Response, uid: &str) -> Option<json_patch::Patch> {
    let body: Value =
        serde_json::from_slice(&resp.to_review_json()).expect("the response body is JSON");
    assert_eq!(body["apiVersion"], admission::API_VERSION);
    assert_eq!(body["kind"], admission::KIND);
    assert_eq!(
        body["response"]["uid"], uid,
        "the response carries the request's uid"
    );
    assert_eq!(body["response"]["allowed"], resp.allowed());
    if let Some((code, _, message)) = &resp.status {
        assert!(
            matches!(code, 400 | 403),
            "refusals are 400 or 403, got {code}"
        );
        assert!(!message.is_empty(), "a refusal says why");
    }
    let patch = resp.patch_json()?;
    assert!(resp.allowed(), "a denial carries no patch");
    Some(serde_json::from_slice(&patch).expect("the patch is an RFC 6902 document"))
}

/// Admits `pod`, applies the patch, admits the result: it must be allowed with no operations.
pub fn admit_apply_readmit(
    uid: &str,
    pod: &Value,
    namespace: &str,
    ctx: &Context,
    defaults: &Defaults,
) {
    let first = Response::of(
        uid,
        core::admit_json(&pod.to_string(), namespace, ctx, defaults),
    );
    let Some(patch) = check_response(&first, uid) else {
        return;
    };
    let mut patched = pod.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch) {
        panic!("the patch does not apply: {e}\npatch: {:?}", first.patch);
    }
    let second = Response::of(
        uid,
        core::admit_json(&patched.to_string(), namespace, ctx, defaults),
    );
    check_response(&second, uid);
    assert!(
        second.allowed() && second.patch.0.is_empty(),
        "admitting the patched pod again must change nothing, got {:?} {:?} ops {:?}",
        second.outcome,
        second.status,
        second.patch
    );
    assert_eq!(second.outcome, Outcome::Unchanged);
}
