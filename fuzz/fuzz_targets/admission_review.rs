//! AdmissionReview bytes → `admission::review` (offline, both identity modes). Never a panic;
//! a patch applies, and admitting the patched pod again gives zero operations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use sbmesh::admission::{self, Triage};
use sbmesh::contract::{Context, Defaults, IdentityMode};

fn defaults() -> &'static Defaults {
    static D: OnceLock<Defaults> = OnceLock::new();
    D.get_or_init(sbmesh_fuzz::defaults)
}

fuzz_target!(|data: &[u8]| {
    for mode in [IdentityMode::Inject, IdentityMode::Delegate] {
        let ctx = Context::offline(mode);
        // The whole path as the server runs it: 400 or a review.
        let Ok(resp) = admission::review(data, &ctx, defaults()) else {
            continue;
        };
        let req = admission::parse(data).expect("review() accepted it, so parse() does");
        sbmesh_fuzz::check_response(&resp, &req.uid);
        if let Triage::Pod { namespace, .. } = admission::triage(&req) {
            // The pod as the API server holds it, to apply the patch to.
            let Ok(review) = serde_json::from_slice::<serde_json::Value>(data) else {
                // A lone surrogate escape (`"\ud800"`) in a string the pod view skips: JSON by
                // its grammar, answered on its merits (tests/fuzz_regressions.rs), but serde_json
                // will not decode it into a Value, so there is no pod here to apply the patch to.
                // Bodies that are not UTF-8 never get here: review() refuses them.
                assert!(std::str::from_utf8(data).is_ok(), "review() accepted non-UTF-8");
                continue;
            };
            let pod = &review["request"]["object"];
            sbmesh_fuzz::admit_apply_readmit(&req.uid, pod, namespace, &ctx, defaults());
        }
    }
});
