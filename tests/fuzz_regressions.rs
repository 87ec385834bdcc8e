//! Inputs the fuzz targets (`fuzz/`) found, minimised, as plain tests: each is named for the
//! rule it broke. A test marked `#[ignore]` pins a finding whose fix is pending in `src/`;
//! remove the mark with the fix.

mod support;

use serde_json::{Value, json};

use sbmesh::contract::values::parse_ports;
use sbmesh::contract::{EntityKind, EntityName};
use sbmesh::mutate::istio::{HoldEdit, hold_until_proxy_starts};

/// What `fuzz/fuzz_targets/annotations.rs` allows a rule text or a denial to grow to.
const MAX_MESSAGE: usize = 2048;

/// fuzz target `proxy_config`, minimised input `{"\x7f":1}` (crash-7e11e99c…): valid JSON, but
/// DEL (and the C1 controls) are not printable YAML, and Istio reads the annotation as YAML. The
/// JSON path wrote `{"\x7f":1,"holdApplicationUntilProxyStarts":true}` back unchecked, a value
/// Istio's injector cannot read; the YAML path checks its candidate, the JSON one does not.
#[test]
fn proxy_config_json_that_is_not_yaml_is_denied_not_rewritten() {
    for text in ["{\"\u{7f}\":1}", "{\"a\":\"\u{85}\"}", "{\"a\u{9f}\":true}"] {
        match hold_until_proxy_starts(Some(text)) {
            Err(why) => assert!(why.contains("YAML"), "{text:?}: {why}"),
            Ok(HoldEdit::Set(out)) => {
                let yaml: Result<Value, _> = serde_saphyr::from_str(&out);
                assert!(
                    yaml.is_ok(),
                    "{text:?} became {out:?}, which Istio cannot read as YAML"
                );
            }
            Ok(other) => panic!("{text:?}: {other:?}"),
        }
    }
}

/// fuzz target `annotations`: a bad name is quoted whole in the rule text
/// (`'{t}' is not a valid name`), so a 256 KiB annotation gives a 256 KiB denial message,
/// although `contract::truncate` keeps quoted values to 120 characters everywhere else.
#[test]
fn denial_for_a_huge_bad_value_stays_short() {
    let huge = format!("-{}", "q".repeat(256 * 1024));
    for kind in [
        EntityKind::Queue,
        EntityKind::Topic,
        EntityKind::Subscription,
    ] {
        let rule = EntityName::parse(&huge, kind).expect_err("a leading '-' is invalid");
        assert!(
            rule.0.len() <= MAX_MESSAGE,
            "{kind:?}: rule text of {} bytes",
            rule.0.len()
        );
    }
    let rule = parse_ports(&format!("{huge},5671")).expect_err("not a port");
    assert!(
        rule.0.len() <= MAX_MESSAGE,
        "ports: rule text of {} bytes",
        rule.0.len()
    );

    let pod = support::pod(json!({ "sbmesh.io/queues": huge }));
    let message = support::denied(&pod, sbmesh::denial::Reason::InvalidValue);
    assert!(
        message.len() <= MAX_MESSAGE,
        "denial of {} bytes",
        message.len()
    );
}

/// fuzz target `admission_review`, crash-63432daa… (a seed with one byte of `"limits"` mutated
/// to 0xDB), minimised by hand: `review()` answered (with a patch) a body that is not UTF-8,
/// because the bad byte sat in a string the pod view skips, and serde_json skips strings
/// without checking them. Now the whole body's UTF-8 is checked before parsing: 400.
#[test]
fn a_body_that_is_not_utf8_is_a_bad_request() {
    use sbmesh::admission;
    use sbmesh::contract::{Context, IdentityMode};

    let bodies: [(&str, Vec<u8>); 2] = [
        ("0xDB in a container's image", [HEAD, b"\"\xdb\"}]}}}}"].concat()),
        (
            "0xFF in a field of the review sbmesh does not read",
            [
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","x":""#.as_slice(),
                b"\xff",
                br#"","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"payments","operation":"CREATE","object":{"metadata":{"annotations":{"sbmesh.io/inject":"true"}},"spec":{"containers":[{"name":"app"}]}}}}"#,
            ]
            .concat(),
        ),
    ];
    for (what, body) in &bodies {
        for mode in [IdentityMode::Inject, IdentityMode::Delegate] {
            let answer =
                admission::review(body, &Context::offline(mode), &support::full_defaults());
            assert!(
                matches!(answer, Err(admission::BadRequest::NotUtf8(_))),
                "{what} ({mode:?}): a body that is not UTF-8 must be a 400, got {:?}",
                answer.map(|r| (r.outcome, r.ops()))
            );
        }
    }
}

/// The same find with `"\ud800"` (a lone surrogate escape) in a container's image. That is JSON
/// by its grammar, and the API server's decoder (Go's encoding/json) reads it as U+FFFD; sbmesh
/// does not read the field, so the pod is answered on its merits, and the patch applies to the
/// pod as the API server holds it. A lone surrogate in a field sbmesh reads is refused.
#[test]
fn a_lone_surrogate_escape_where_sbmesh_does_not_read_is_answered_as_the_api_server_reads_it() {
    use sbmesh::admission;
    use sbmesh::contract::{Context, IdentityMode};

    let body = [HEAD, br#""\ud800"}]}}}}"#].concat();
    let ctx = Context::offline(IdentityMode::Inject);
    let answer = admission::review(&body, &ctx, &support::full_defaults()).expect("answered");
    assert!(answer.allowed() && answer.ops() > 0, "{:?}", answer.status);
    // The pod as Go decodes it: the lone surrogate becomes U+FFFD.
    let as_go_reads = String::from_utf8(body.clone())
        .expect("ASCII")
        .replace("\\ud800", "\u{fffd}");
    let review: Value = serde_json::from_str(&as_go_reads).expect("JSON");
    let patched = support::apply(&review["request"]["object"], &answer.patch);
    assert_eq!(patched["spec"]["containers"][0]["image"], "\u{fffd}");
    assert_eq!(
        patched["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );

    // Where sbmesh reads the string (the opt-in), the same escape is a 400.
    let read = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"payments","operation":"CREATE","object":{"metadata":{"name":"\ud800"}}}}"#;
    assert!(matches!(
        admission::review(read, &ctx, &support::full_defaults()),
        Err(admission::BadRequest::NotJson(_))
    ));
}

const HEAD: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"payments","operation":"CREATE","object":{"metadata":{"annotations":{"sbmesh.io/inject":"true"}},"spec":{"containers":[{"name":"app","image":"#;

/// The fuzz seeds as a plain test: every seed of `admission_review` gets an answer, and a
/// patch that applies and leaves nothing to do on re-admission (what the target checks).
#[test]
fn fuzz_seeds_are_answered_and_their_patches_are_idempotent() {
    use sbmesh::admission::{self, Triage};
    use sbmesh::contract::{Context, IdentityMode};
    use sbmesh::core::{self, Admission};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/admission_review");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.expect("dir entry").path();
        let body = std::fs::read(&path).expect("seed");
        for mode in [IdentityMode::Inject, IdentityMode::Delegate] {
            let ctx = Context::offline(mode);
            let defaults = sbmesh::contract::Defaults {
                client_id: Some(support::CLIENT_ID.parse().expect("client id")),
                servicebus_namespace: Some("payments-prod".into()),
                ..support::defaults()
            };
            let Ok(req) = admission::parse(&body) else {
                continue;
            };
            let Triage::Pod { pod, namespace, .. } = admission::triage(&req) else {
                continue;
            };
            let Admission::Patch { mutation, .. } = core::admit(pod, namespace, &ctx, &defaults)
            else {
                continue;
            };
            if mutation.patch.0.is_empty() {
                continue;
            }
            let review: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            let patched = support::apply(&review["request"]["object"], &mutation.patch);
            let again = core::admit_json(&patched.to_string(), namespace, &ctx, &defaults);
            assert!(
                matches!(&again, Admission::Patch { mutation, .. } if mutation.patch.0.is_empty()),
                "{} ({mode:?}): re-admission gave {again:?}",
                path.display(),
            );
        }
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} seeds in {dir}");
}
