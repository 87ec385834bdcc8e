//! `mutate::istio::hold_until_proxy_starts` on arbitrary text: never a panic; a new value
//! parses as YAML (Istio reads the annotation as YAML) to a mapping with
//! `holdApplicationUntilProxyStarts: true` and every other key of the original kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use sbmesh::mutate::istio::{HoldEdit, hold_until_proxy_starts};

const HOLD: &str = "holdApplicationUntilProxyStarts";

/// The original as the function reads it: JSON first when it looks like JSON, then YAML.
fn original(text: &str) -> Option<Value> {
    if text.trim().is_empty() {
        return Some(Value::Object(Default::default()));
    }
    if text.trim_start().starts_with('{')
        && let Ok(v) = serde_json::from_str(text)
    {
        return Some(v);
    }
    serde_saphyr::from_str(text).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match hold_until_proxy_starts(Some(text)) {
        Err(why) => assert!(!why.is_empty()),
        Ok(HoldEdit::Keep) => {
            let v = original(text).expect("kept, so it parsed");
            assert_eq!(v[HOLD], Value::Bool(true));
        }
        Ok(HoldEdit::KeepUserFalse) => {
            let v = original(text).expect("kept, so it parsed");
            assert_eq!(v[HOLD], Value::Bool(false));
        }
        Ok(HoldEdit::Set(out)) => {
            let parsed: Value = serde_saphyr::from_str(&out)
                .unwrap_or_else(|e| panic!("the new proxy config is not YAML: {e}\n{out}"));
            let Value::Object(mut map) = parsed else {
                panic!("the new proxy config is not a mapping: {out}");
            };
            assert_eq!(map.remove(HOLD), Some(Value::Bool(true)), "{out}");
            let before = match original(text).expect("changed, so it parsed") {
                Value::Null => Default::default(),
                Value::Object(m) => m,
                other => panic!("changed a non-mapping {other}"),
            };
            assert_eq!(
                map, before,
                "other keys are kept\nbefore: {text}\nafter: {out}"
            );
        }
    }
});
