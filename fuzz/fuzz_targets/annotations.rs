//! Arbitrary strings into every parser of `sbmesh::contract::values`, and a pod built from
//! fuzzed annotations (pod, ServiceAccount, Namespace) through `contract::plan`, the mutation,
//! the patch and re-admission.
//!
//! Input: records separated by NUL bytes, readable so seeds can be written by hand:
//! `p<key>=<value>` pod annotation, `s…`/`n…` ServiceAccount/Namespace annotation, `l…` pod
//! label, `c<name>`/`i<name>` container/init container, `a<name>` serviceAccountName.
#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

use sbmesh::contract::values::{self, parse_bool, parse_ports, split_list};
use sbmesh::contract::{
    self, ClientId, Cloud, Context, Decision, Defaults, Egress, EntityKind, EntityName, EnvAlias,
    IdentityMode, IdentityModeSetting, Policy, ServiceBusNamespace, TenantId, TokenExpiration,
};
use sbmesh::pod::Pod;

/// Messages quote user values truncated (annotations can be 256 KiB); a rule's text and a
/// denial stay a few sentences.
const MAX_MESSAGE: usize = 2048;

fn defaults() -> &'static Defaults {
    static D: OnceLock<Defaults> = OnceLock::new();
    D.get_or_init(sbmesh_fuzz::defaults)
}

fn check_rule<T>(r: &Result<T, values::RuleViolation>) {
    if let Err(v) = r {
        assert!(!v.0.is_empty());
        assert!(
            v.0.len() <= MAX_MESSAGE,
            "rule text of {} bytes: {}…",
            v.0.len(),
            v.0.chars().take(200).collect::<String>()
        );
    }
}

macro_rules! keyword_roundtrip {
    ($raw:expr, $($t:ty),+) => {$(
        let r = <$t>::parse($raw);
        check_rule(&r);
        if let Ok(x) = r {
            assert_eq!(<$t>::parse(x.as_str()), Ok(x));
            assert!($raw.trim().eq_ignore_ascii_case(x.as_str()));
        }
    )+};
}

/// Every value parser on one string, with its round trip.
fn parsers(raw: &str) {
    let b = parse_bool(raw);
    check_rule(&b);
    if let Ok(b) = b {
        assert!(
            raw.trim()
                .eq_ignore_ascii_case(if b { "true" } else { "false" })
        );
    }
    let c = ClientId::parse(raw);
    check_rule(&c);
    if let Ok(c) = c {
        assert_eq!(c.as_str().len(), 36);
        assert_eq!(c.as_str(), c.as_str().to_ascii_lowercase());
        assert_eq!(ClientId::parse(c.as_str()), Ok(c));
    }
    let t = TenantId::parse(raw);
    check_rule(&t);
    if let Ok(t) = t {
        assert_eq!(TenantId::parse(t.as_str()), Ok(t));
    }
    keyword_roundtrip!(
        raw,
        Cloud,
        Egress,
        EnvAlias,
        Policy,
        IdentityMode,
        IdentityModeSetting
    );
    for cloud in Cloud::ALL.iter().copied() {
        let ns = ServiceBusNamespace::parse(raw, cloud);
        check_rule(&ns);
        if let Ok(ns) = ns {
            assert!((6..=50).contains(&ns.short().len()));
            assert_eq!(
                ServiceBusNamespace::parse(ns.short(), cloud).as_ref(),
                Ok(&ns)
            );
            assert_eq!(ServiceBusNamespace::parse(&ns.fqdn(cloud), cloud), Ok(ns));
        }
    }
    for kind in [
        EntityKind::Queue,
        EntityKind::Topic,
        EntityKind::Subscription,
    ] {
        let e = EntityName::parse(raw, kind);
        check_rule(&e);
        if let Ok(e) = e {
            assert!(!e.as_str().is_empty() && !e.as_str().contains(','));
            assert_eq!(EntityName::parse(e.as_str(), kind), Ok(e));
        }
    }
    let te = TokenExpiration::parse(raw);
    check_rule(&te);
    if let Ok(te) = te {
        assert!((TokenExpiration::MIN..=TokenExpiration::MAX).contains(&te.seconds()));
    }
    let items = split_list(raw);
    let mut seen = HashSet::new();
    for item in &items {
        assert!(
            !item.is_empty() && item.trim() == *item && !item.contains(','),
            "{item:?}"
        );
        assert!(seen.insert(*item), "duplicate {item:?}");
    }
    let ports = parse_ports(raw);
    check_rule(&ports);
    if let Ok(ports) = ports {
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(!ports.contains(&0));
        let joined = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_ports(&joined), Ok(ports));
    }
}

fn container(name: &str) -> Value {
    json!({"name": name, "image": "ghcr.io/example/app:1", "env": [{"name": "LOG_LEVEL", "value": "info"}]})
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut pod_ann = Map::new();
    let mut labels = Map::new();
    let mut sa = BTreeMap::new();
    let mut ns = BTreeMap::new();
    let mut containers = Vec::new();
    let mut init = Vec::new();
    let mut service_account = "orders".to_string();
    for record in text.split('\0') {
        let mut chars = record.chars();
        let Some(place) = chars.next() else { continue };
        let rest = chars.as_str();
        parsers(rest);
        let kv = rest.split_once('=');
        match (place, kv) {
            ('p', Some((k, v))) => {
                parsers(v);
                pod_ann.insert(k.to_string(), Value::String(v.to_string()));
            }
            ('l', Some((k, v))) => {
                labels.insert(k.to_string(), Value::String(v.to_string()));
            }
            ('s', Some((k, v))) => {
                parsers(v);
                sa.insert(k.to_string(), v.to_string());
            }
            ('n', Some((k, v))) => {
                parsers(v);
                ns.insert(k.to_string(), v.to_string());
            }
            ('c', _) => containers.push(container(rest)),
            ('i', _) => init.push(container(rest)),
            ('a', _) => service_account = rest.to_string(),
            _ => {}
        }
    }
    pod_ann
        .entry("sbmesh.io/inject")
        .or_insert_with(|| Value::String("true".into()));
    if containers.is_empty() {
        containers.push(container("app"));
    }
    let mut spec = json!({"serviceAccountName": service_account, "containers": containers});
    if !init.is_empty() {
        spec["initContainers"] = Value::Array(init);
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "labels": labels, "annotations": pod_ann},
        "spec": spec,
    });
    let ns_labels = BTreeMap::from([("istio-injection".to_string(), "enabled".to_string())]);
    for mode in [IdentityMode::Inject, IdentityMode::Delegate] {
        for cluster in [false, true] {
            let ctx = if cluster {
                Context {
                    service_account_annotations: Some(&sa),
                    namespace_annotations: Some(&ns),
                    namespace_labels: Some(&ns_labels),
                    identity_mode: mode,
                }
            } else {
                Context::offline(mode)
            };
            let json = pod.to_string();
            let view = Pod::parse(&json).expect("a JSON pod");
            match contract::plan(&view, "payments", &ctx, defaults()) {
                Err(d) => {
                    let message = d.to_string();
                    assert!(
                        message.len() <= MAX_MESSAGE,
                        "denial of {} bytes: {}…",
                        message.len(),
                        message.chars().take(300).collect::<String>()
                    )
                }
                Ok(Decision::Skip) => {}
                Ok(Decision::Inject(plan)) => {
                    for w in &plan.warnings {
                        assert!(w.len() <= MAX_MESSAGE, "warning of {} bytes", w.len());
                    }
                }
            }
            sbmesh_fuzz::admit_apply_readmit("fuzz", &pod, "payments", &ctx, defaults());
        }
    }
});
