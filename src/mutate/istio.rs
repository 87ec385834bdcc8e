//! Istio annotations, read by Istio's injector after sbmesh: hold the application until the
//! proxy is up, keep AMQP off the sidecar in `bypass` mode, and optionally native sidecars.

use serde_json::{Map, Value};

use crate::contract::{Egress, InjectionPlan, keys, truncate, values::parse_ports};
use crate::denial::{Denial, warning};
use crate::pod::JsonType;

use super::patch::MapEdits;

const HOLD: &str = "holdApplicationUntilProxyStarts";
/// AMQP over TLS and plain AMQP.
const AMQP_PORTS: [u16; 2] = [5671, 5672];

pub fn annotate(
    plan: &InjectionPlan,
    ann: &mut MapEdits,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    if plan.egress == Egress::None {
        return Ok(());
    }
    match hold_until_proxy_starts(ann.get(keys::ISTIO_PROXY_CONFIG).as_deref()) {
        Ok(HoldEdit::Keep) => {}
        Ok(HoldEdit::KeepUserFalse) => warnings.push(warning(format_args!(
            "{} sets {HOLD}: false, which is kept; the application may start before its proxy \
             and fail its first Service Bus connection",
            keys::ISTIO_PROXY_CONFIG
        ))),
        Ok(HoldEdit::Set(text)) => ann.set(keys::ISTIO_PROXY_CONFIG, text),
        Err(why) => {
            return Err(Denial::Annotation {
                key: keys::ISTIO_PROXY_CONFIG,
                value: None,
                rule: why,
                fix: "; fix it, or set sbmesh.io/egress: none to leave Istio annotations alone",
            });
        }
    }
    if plan.egress == Egress::Bypass {
        let current = ann
            .get(keys::ISTIO_EXCLUDE_OUTBOUND_PORTS)
            .unwrap_or_default();
        let mut ports = parse_ports(&current).map_err(|rule| Denial::Annotation {
            key: keys::ISTIO_EXCLUDE_OUTBOUND_PORTS,
            value: Some(truncate(&current)),
            rule: rule.0,
            fix: "",
        })?;
        let given = ports.len();
        // Istio replaces the mesh default with the pod's value, so the union is made here.
        for p in plan.mesh_exclude_outbound_ports.iter().chain(&AMQP_PORTS) {
            if !ports.contains(p) {
                ports.push(*p);
            }
        }
        if ports.len() > given {
            let joined = ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            ann.set(keys::ISTIO_EXCLUDE_OUTBOUND_PORTS, joined);
        }
    }
    if plan.native_sidecar && ann.get(keys::ISTIO_NATIVE_SIDECAR).is_none() {
        ann.set(keys::ISTIO_NATIVE_SIDECAR, "true".to_string());
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
pub enum HoldEdit {
    Keep,
    KeepUserFalse,
    Set(String),
}

/// Merges `holdApplicationUntilProxyStarts: true` into a proxy config, keeping every other
/// key. JSON stays JSON; YAML gets one line appended (so its comments and layout survive),
/// checked by parsing the result, with JSON (also valid YAML) as the fallback.
pub fn hold_until_proxy_starts(existing: Option<&str>) -> Result<HoldEdit, String> {
    let text = existing.unwrap_or("");
    if text.trim().is_empty() {
        return Ok(HoldEdit::Set(format!("{HOLD}: true")));
    }
    let is_json = text.trim_start().starts_with('{');
    let parsed: Value = if is_json {
        serde_json::from_str(text).or_else(|_| serde_saphyr::from_str(text))
    } else {
        serde_saphyr::from_str(text)
    }
    .map_err(|e| format!("is not valid YAML or JSON ({})", first_line(&e.to_string())))?;
    let mut map = match parsed {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            return Err(format!(
                "must be a mapping (an object) of ProxyConfig fields, not {}",
                JsonType::of(&other)
            ));
        }
    };
    match map.get(HOLD) {
        Some(Value::Bool(true)) => return Ok(HoldEdit::Keep),
        Some(Value::Bool(false)) => return Ok(HoldEdit::KeepUserFalse),
        Some(other) => {
            return Err(format!(
                "sets {HOLD} to {other}, which must be true or false"
            ));
        }
        None => {}
    }
    if !is_json {
        let candidate = format!("{}\n{HOLD}: true\n", text.trim_end());
        let mut expected = map.clone();
        expected.insert(HOLD.to_string(), Value::Bool(true));
        if serde_saphyr::from_str::<Value>(&candidate).ok() == Some(Value::Object(expected)) {
            return Ok(HoldEdit::Set(candidate));
        }
    }
    map.insert(HOLD.to_string(), Value::Bool(true));
    let out = serde_json::to_string(&Value::Object(map.clone()))
        .map_err(|e| format!("cannot be written back ({e})"))?;
    // Istio reads the annotation as YAML. JSON with characters YAML cannot carry (DEL, C1
    // controls) parses here but not there: refuse it rather than write what Istio cannot read.
    if serde_saphyr::from_str::<Value>(&out).ok() != Some(Value::Object(map)) {
        return Err(
            "is JSON that does not read back as YAML (Istio's injector reads it as YAML); \
             remove control characters from it"
                .to_string(),
        );
    }
    Ok(HoldEdit::Set(out))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(existing: Option<&str>) -> String {
        match hold_until_proxy_starts(existing) {
            Ok(HoldEdit::Set(s)) => s,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn absent_or_empty_config_gets_hold() {
        assert_eq!(set(None), "holdApplicationUntilProxyStarts: true");
        assert_eq!(set(Some("  \n")), "holdApplicationUntilProxyStarts: true");
    }

    #[test]
    fn yaml_config_keeps_its_text_and_gains_one_line() {
        let yaml = "# tuned\nconcurrency: 2\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n";
        let out = set(Some(yaml));
        assert!(out.starts_with(yaml.trim_end()), "{out}");
        let v: Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(v["concurrency"], 2);
        assert_eq!(v["proxyMetadata"]["ISTIO_META_DNS_CAPTURE"], "true");
        assert_eq!(v[HOLD], true);
    }

    #[test]
    fn json_config_stays_json_with_key_order() {
        let out = set(Some(r#"{"concurrency":2,"tracing":{"sampling":10}}"#));
        assert_eq!(
            out,
            r#"{"concurrency":2,"tracing":{"sampling":10},"holdApplicationUntilProxyStarts":true}"#
        );
    }

    #[test]
    fn indented_yaml_falls_back_to_json() {
        let out = set(Some("  concurrency: 2\n  terminationDrainDuration: 5s\n"));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["concurrency"], 2);
        assert_eq!(v[HOLD], true);
    }

    #[test]
    fn hold_true_is_left_alone_and_false_is_kept() {
        assert_eq!(
            hold_until_proxy_starts(Some("holdApplicationUntilProxyStarts: true")),
            Ok(HoldEdit::Keep)
        );
        assert_eq!(
            hold_until_proxy_starts(Some("{\"holdApplicationUntilProxyStarts\": false}")),
            Ok(HoldEdit::KeepUserFalse)
        );
    }

    #[test]
    fn unparsable_or_non_mapping_config_is_refused() {
        assert!(hold_until_proxy_starts(Some("a: [1, 2")).is_err());
        assert!(
            hold_until_proxy_starts(Some("- a\n- b\n"))
                .unwrap_err()
                .contains("a list")
        );
        assert!(
            hold_until_proxy_starts(Some("just text"))
                .unwrap_err()
                .contains("a string")
        );
        assert!(
            hold_until_proxy_starts(Some("holdApplicationUntilProxyStarts: sometimes")).is_err()
        );
    }
}
