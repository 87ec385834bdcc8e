//! One test per rule of the contract (DESIGN §1–3), run through the pure core and applied with
//! a JSON-patch engine.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use sbmesh::contract::{Context, Defaults, Egress, IdentityMode, Policy};
use sbmesh::denial::Reason;
use sbmesh::mutate;
use support::*;

const APP: &str = "/spec/containers/0";

fn sb_env() -> Vec<(String, String)> {
    vec![
        ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
        ("AZURE_TENANT_ID".into(), TENANT_ID.into()),
        (
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            "/var/run/secrets/azure/tokens/azure-identity-token".into(),
        ),
        (
            "AZURE_AUTHORITY_HOST".into(),
            "https://login.microsoftonline.com/".into(),
        ),
        (
            "AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE".into(),
            "payments-prod.servicebus.windows.net".into(),
        ),
        ("AZURE_SERVICEBUS_CLIENTID".into(), CLIENT_ID.into()),
    ]
}

fn delegate() -> Context<'static> {
    Context::offline(IdentityMode::Delegate)
}

// ---------------------------------------------------------------- opt-in

#[test]
fn pod_without_the_annotation_is_skipped() {
    let mut p = pod(json!({}));
    p["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("sbmesh.io/inject");
    assert!(skipped(&p));
}

#[test]
fn inject_false_is_skipped() {
    let p = pod(json!({"sbmesh.io/inject": "FALSE"}));
    assert!(skipped(&p));
}

#[test]
fn inject_parses_case_insensitively() {
    assert!(run(&pod(json!({"sbmesh.io/inject": "True"}))).is_ok());
}

#[test]
fn inject_value_that_is_not_a_boolean_is_denied() {
    let msg = denied(
        &pod(json!({"sbmesh.io/inject": "yes please"})),
        Reason::InvalidValue,
    );
    assert!(
        msg.contains("sbmesh.io/inject") && msg.contains("yes please"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- identity

#[test]
fn adds_the_workload_identity_label() {
    let (out, _) = run(&pod(json!({}))).unwrap();
    assert_eq!(
        out["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(out["metadata"]["labels"]["app"], "orders");
}

#[test]
fn creates_labels_map_when_the_pod_has_none() {
    let mut p = pod(json!({}));
    p["metadata"].as_object_mut().unwrap().remove("labels");
    let (out, m) = run(&p).unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"azure.workload.identity/use": "true"})
    );
    assert!(
        m.patch
            .0
            .iter()
            .any(|o| o.path.as_str() == "/metadata/labels")
    );
}

#[test]
fn workload_identity_label_with_another_value_is_denied() {
    let mut p = pod(json!({}));
    p["metadata"]["labels"]["azure.workload.identity/use"] = json!("false");
    let msg = denied(&p, Reason::Conflict);
    assert!(
        msg.contains("azure.workload.identity/use") && msg.contains("contradict"),
        "{msg}"
    );
}

#[test]
fn adds_projected_token_volume_with_audience_and_expiration() {
    let (out, _) = run(&pod(json!({"sbmesh.io/token-expiration": "7200"}))).unwrap();
    assert_eq!(
        out["spec"]["volumes"],
        json!([{
            "name": "sbmesh-azure-identity-token",
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": "api://AzureADTokenExchange",
                "expirationSeconds": 7200,
                "path": "azure-identity-token"
            }}]}
        }])
    );
}

#[test]
fn token_expiration_defaults_to_3600() {
    let (out, _) = run(&pod(json!({}))).unwrap();
    assert_eq!(
        out.pointer("/spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds"),
        Some(&json!(3600))
    );
}

#[test]
fn token_expiration_out_of_range_is_denied() {
    let msg = denied(
        &pod(json!({"sbmesh.io/token-expiration": "600"})),
        Reason::InvalidValue,
    );
    assert!(
        msg.contains("sbmesh.io/token-expiration")
            && msg.contains("\"600\"")
            && msg.contains("3600"),
        "{msg}"
    );
}

#[test]
fn mounts_token_read_only_in_every_container_and_init_container() {
    let mut p = pod(json!({}));
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "x"}]);
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "worker", "image": "y"}));
    let (out, _) = run(&p).unwrap();
    let mount = json!([{"name": "sbmesh-azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}]);
    for ptr in [
        "/spec/initContainers/0",
        "/spec/containers/0",
        "/spec/containers/1",
    ] {
        assert_eq!(
            out.pointer(&format!("{ptr}/volumeMounts")),
            Some(&mount),
            "{ptr}"
        );
        assert_eq!(env(&out, ptr), sb_env(), "{ptr}");
    }
}

#[test]
fn ephemeral_containers_are_never_touched() {
    let mut p = pod(json!({}));
    p["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
    let (out, m) = run(&p).unwrap();
    assert_eq!(
        out["spec"]["ephemeralContainers"],
        p["spec"]["ephemeralContainers"]
    );
    assert!(
        m.patch
            .0
            .iter()
            .all(|o| !o.path.as_str().starts_with("/spec/ephemeralContainers"))
    );
}

#[test]
fn existing_identical_volume_and_mount_are_left_alone() {
    let mut p = pod(json!({}));
    p["spec"]["volumes"] = json!([{"name": "sbmesh-azure-identity-token", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}}]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "sbmesh-azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}]);
    let (_, m) = run(&p).unwrap();
    assert!(
        m.patch.0.iter().all(|o| !o.path.as_str().contains("olume")),
        "{:#?}",
        m.patch
    );
}

#[test]
fn differing_volume_of_our_name_is_denied_not_overwritten() {
    let mut p = pod(json!({}));
    p["spec"]["volumes"] = json!([{"name": "sbmesh-azure-identity-token", "emptyDir": {}}]);
    let msg = denied(&p, Reason::Occupied);
    assert!(
        msg.contains("sbmesh-azure-identity-token") && msg.contains("does not overwrite"),
        "{msg}"
    );
}

#[test]
fn volume_with_other_expiration_is_denied() {
    let mut p = pod(json!({}));
    p["spec"]["volumes"] = json!([{"name": "sbmesh-azure-identity-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 7200, "path": "azure-identity-token"}}]}}]);
    assert!(denied(&p, Reason::Occupied).contains("expirationSeconds 3600"));
}

#[test]
fn differing_mount_at_our_path_is_denied() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "other", "mountPath": "/var/run/secrets/azure/tokens/"}]);
    let msg = denied(&p, Reason::Occupied);
    assert!(
        msg.contains("container app") && msg.contains("other"),
        "{msg}"
    );
}

#[test]
fn writable_mount_of_our_volume_is_denied() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "sbmesh-azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens"}]);
    denied(&p, Reason::Occupied);
}

// ---------------------------------------------------------------- env

#[test]
fn appends_env_after_user_env_in_contract_order() {
    let mut p = pod(
        json!({"sbmesh.io/queues": "orders, payments,orders", "sbmesh.io/topics": "events", "sbmesh.io/subscription": "audit"}),
    );
    p["spec"]["containers"][0]["env"] = json!([{"name": "LOG_LEVEL", "value": "info"}]);
    let (out, _) = run(&p).unwrap();
    let mut want = vec![("LOG_LEVEL".to_string(), "info".to_string())];
    want.extend(sb_env());
    want.push((
        "AZURE_SERVICEBUS_QUEUE_NAMES".into(),
        "orders,payments".into(),
    ));
    want.push(("AZURE_SERVICEBUS_TOPIC_NAMES".into(), "events".into()));
    want.push(("AZURE_SERVICEBUS_SUBSCRIPTION_NAME".into(), "audit".into()));
    // The legacy keys mean both directions (DESIGN §6).
    want.push((
        "AZURE_SERVICEBUS_SENDS".into(),
        "queue/orders,queue/payments,topic/events".into(),
    ));
    want.push((
        "AZURE_SERVICEBUS_RECEIVES".into(),
        "queue/orders,queue/payments,topic/events:audit".into(),
    ));
    assert_eq!(env(&out, APP), want);
}

#[test]
fn keeps_user_env_value_and_warns() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "AZURE_AUTHORITY_HOST", "value": "https://login.example/"}]);
    let (out, m) = run(&p).unwrap();
    let e = env(&out, APP);
    assert_eq!(
        e[0],
        (
            "AZURE_AUTHORITY_HOST".into(),
            "https://login.example/".into()
        )
    );
    assert_eq!(
        e.iter()
            .filter(|(n, _)| n == "AZURE_AUTHORITY_HOST")
            .count(),
        1
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("AZURE_AUTHORITY_HOST") && w.contains("login.example")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn keeps_user_env_with_same_value_silently() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["env"] = json!([{"name": "AZURE_CLIENT_ID", "value": CLIENT_ID}]);
    let (_, m) = run(&p).unwrap();
    assert!(
        m.warnings.iter().all(|w| !w.contains("AZURE_CLIENT_ID")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn keeps_user_env_value_from_silently() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["env"] = json!([{"name": "AZURE_CLIENT_ID", "valueFrom": {"secretKeyRef": {"name": "id", "key": "client"}}}]);
    let (out, m) = run(&p).unwrap();
    assert_eq!(
        out["spec"]["containers"][0]["env"][0],
        p["spec"]["containers"][0]["env"][0]
    );
    assert!(
        m.warnings.iter().all(|w| !w.contains("AZURE_CLIENT_ID")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn env_from_is_left_alone() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "cfg"}}]);
    let (out, _) = run(&p).unwrap();
    assert_eq!(
        out["spec"]["containers"][0]["envFrom"],
        p["spec"]["containers"][0]["envFrom"]
    );
}

#[test]
fn sdk_and_dotnet_aliases_carry_the_fqdn() {
    let (out, _) = run(&pod(json!({"sbmesh.io/env-aliases": "dotnet, SDK"}))).unwrap();
    let e = env(&out, APP);
    let tail: Vec<_> = e[sb_env().len()..].to_vec();
    assert_eq!(
        tail,
        vec![
            (
                "ServiceBus__fullyQualifiedNamespace".into(),
                "payments-prod.servicebus.windows.net".into()
            ),
            (
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE".into(),
                "payments-prod.servicebus.windows.net".into()
            ),
        ]
    );
}

#[test]
fn spring_alias_takes_the_short_namespace_name() {
    let (out, _) = run(&pod(json!({"sbmesh.io/env-aliases": "spring"}))).unwrap();
    let e: BTreeMap<_, _> = env(&out, APP).into_iter().collect();
    assert_eq!(
        e["SPRING_CLOUD_AZURE_SERVICEBUS_NAMESPACE"],
        "payments-prod"
    );
    assert_eq!(
        e["SPRING_CLOUD_AZURE_SERVICEBUS_CREDENTIAL_CLIENTID"],
        CLIENT_ID
    );
    assert!(!e.contains_key("SPRING_CLOUD_AZURE_SERVICEBUS_DOMAINNAME"));
}

#[test]
fn spring_alias_in_china_sets_the_domain_name() {
    let (out, _) = run(&pod(
        json!({"sbmesh.io/env-aliases": "spring", "sbmesh.io/cloud": "china"}),
    ))
    .unwrap();
    let e: BTreeMap<_, _> = env(&out, APP).into_iter().collect();
    assert_eq!(
        e["SPRING_CLOUD_AZURE_SERVICEBUS_DOMAINNAME"],
        "servicebus.chinacloudapi.cn"
    );
}

#[test]
fn unknown_env_alias_is_denied() {
    let msg = denied(
        &pod(json!({"sbmesh.io/env-aliases": "sdk,python"})),
        Reason::InvalidValue,
    );
    assert!(
        msg.contains("sbmesh.io/env-aliases") && msg.contains("sdk, dotnet, spring"),
        "{msg}"
    );
}

#[test]
fn cloud_picks_authority_host_and_servicebus_suffix() {
    for (cloud, host, fqdn) in [
        (
            "usgov",
            "https://login.microsoftonline.us/",
            "payments-prod.servicebus.usgovcloudapi.net",
        ),
        (
            "china",
            "https://login.chinacloudapi.cn/",
            "payments-prod.servicebus.chinacloudapi.cn",
        ),
    ] {
        let (out, _) = run(&pod(json!({"sbmesh.io/cloud": cloud}))).unwrap();
        let e: BTreeMap<_, _> = env(&out, APP).into_iter().collect();
        assert_eq!(e["AZURE_AUTHORITY_HOST"], host);
        assert_eq!(e["AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE"], fqdn);
    }
}

#[test]
fn servicebus_fqdn_of_another_cloud_is_denied() {
    let msg = denied(
        &pod(
            json!({"sbmesh.io/servicebus-namespace": "payments-prod.servicebus.chinacloudapi.cn"}),
        ),
        Reason::InvalidValue,
    );
    assert!(
        msg.contains("china") && msg.contains("sbmesh.io/servicebus-namespace"),
        "{msg}"
    );
}

#[test]
fn subscription_requires_exactly_one_topic() {
    let msg = denied(
        &pod(json!({"sbmesh.io/subscription": "audit", "sbmesh.io/topics": "a,b"})),
        Reason::Conflict,
    );
    assert!(msg.contains("exactly one topic"), "{msg}");
    denied(
        &pod(json!({"sbmesh.io/subscription": "audit"})),
        Reason::Conflict,
    );
}

#[test]
fn invalid_queue_name_is_denied() {
    let msg = denied(
        &pod(json!({"sbmesh.io/queues": "orders,-bad"})),
        Reason::InvalidValue,
    );
    assert!(
        msg.contains("sbmesh.io/queues") && msg.contains("-bad"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- scope

#[test]
fn containers_annotation_limits_scope_and_warns_for_unknown_names() {
    let mut p = pod(json!({"sbmesh.io/containers": "worker, ghost"}));
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "worker", "image": "y"}));
    let (out, m) = run(&p).unwrap();
    assert!(out.pointer("/spec/containers/0/env").is_none());
    assert_eq!(env(&out, "/spec/containers/1"), sb_env());
    assert!(
        m.warnings.iter().any(|w| w.contains("ghost")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn skip_containers_leaves_the_named_out() {
    let mut p = pod(json!({"sbmesh.io/skip-containers": "app"}));
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "worker", "image": "y"}));
    let (out, _) = run(&p).unwrap();
    assert!(out.pointer("/spec/containers/0/env").is_none());
    assert!(out.pointer("/spec/containers/0/volumeMounts").is_none());
    assert_eq!(env(&out, "/spec/containers/1"), sb_env());
}

#[test]
fn containers_and_skip_containers_together_are_denied() {
    let msg = denied(
        &pod(json!({"sbmesh.io/containers": "app", "sbmesh.io/skip-containers": "x"})),
        Reason::Conflict,
    );
    assert!(msg.contains("not both"), "{msg}");
}

#[test]
fn istio_containers_are_out_of_scope_unless_named() {
    let mut p = pod(json!({}));
    p["spec"]["initContainers"] = json!([{"name": "istio-init", "image": "proxyv2"}]);
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "proxyv2"}));
    let (out, _) = run(&p).unwrap();
    assert!(out.pointer("/spec/initContainers/0/env").is_none());
    assert!(out.pointer("/spec/containers/1/env").is_none());

    let mut named = p.clone();
    named["metadata"]["annotations"]["sbmesh.io/containers"] = json!("app,istio-proxy");
    let (out, _) = run(&named).unwrap();
    assert_eq!(env(&out, "/spec/containers/1"), sb_env());
}

#[test]
fn label_and_volume_are_added_even_if_no_container_is_in_scope() {
    let (out, m) = run(&pod(json!({"sbmesh.io/containers": "nothing-here"}))).unwrap();
    assert_eq!(
        out["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(
        out["spec"]["volumes"][0]["name"],
        "sbmesh-azure-identity-token"
    );
    assert!(out.pointer(&format!("{APP}/env")).is_none());
    assert!(!m.warnings.is_empty());
}

// ---------------------------------------------------------------- istio

#[test]
fn hold_application_until_proxy_starts_is_merged_into_proxy_config() {
    let (out, _) = run(&pod(json!({"proxy.istio.io/config": "concurrency: 2\n"}))).unwrap();
    let cfg = annotation(&out, "proxy.istio.io/config").unwrap();
    assert_eq!(
        cfg,
        "concurrency: 2\nholdApplicationUntilProxyStarts: true\n"
    );
}

#[test]
fn proxy_config_hold_false_is_kept_with_a_warning() {
    let (out, m) = run(&pod(
        json!({"proxy.istio.io/config": "holdApplicationUntilProxyStarts: false"}),
    ))
    .unwrap();
    assert_eq!(
        annotation(&out, "proxy.istio.io/config"),
        Some("holdApplicationUntilProxyStarts: false")
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("holdApplicationUntilProxyStarts"))
    );
}

#[test]
fn unparsable_proxy_config_is_denied_naming_the_annotation() {
    let msg = denied(
        &pod(json!({"proxy.istio.io/config": "{concurrency: [1"})),
        Reason::InvalidValue,
    );
    assert!(msg.contains("proxy.istio.io/config"), "{msg}");
}

#[test]
fn bypass_unions_pod_ports_mesh_default_and_amqp() {
    let d = Defaults {
        mesh_exclude_outbound_ports: vec![15020, 5671],
        ..defaults()
    };
    let p = pod(
        json!({"sbmesh.io/egress": "bypass", "traffic.sidecar.istio.io/excludeOutboundPorts": "9000, 15020"}),
    );
    let (out, _) = run_with(&p, &Context::offline(IdentityMode::Inject), &d).unwrap();
    assert_eq!(
        annotation(&out, "traffic.sidecar.istio.io/excludeOutboundPorts"),
        Some("9000,15020,5671,5672")
    );
}

#[test]
fn bypass_writes_nothing_when_every_port_is_there() {
    let p = pod(
        json!({"sbmesh.io/egress": "bypass", "traffic.sidecar.istio.io/excludeOutboundPorts": "5672, 5671"}),
    );
    let (_, m) = run(&p).unwrap();
    assert!(
        m.patch
            .0
            .iter()
            .all(|o| !o.path.as_str().contains("excludeOutboundPorts")),
        "{:#?}",
        m.patch
    );
}

#[test]
fn bypass_with_invalid_exclude_ports_is_denied() {
    let p = pod(
        json!({"sbmesh.io/egress": "bypass", "traffic.sidecar.istio.io/excludeOutboundPorts": "5671,http"}),
    );
    let msg = denied(&p, Reason::InvalidValue);
    assert!(
        msg.contains("excludeOutboundPorts") && msg.contains("http"),
        "{msg}"
    );
}

#[test]
fn mesh_egress_excludes_nothing() {
    let (out, _) = run(&pod(json!({}))).unwrap();
    assert!(annotation(&out, "traffic.sidecar.istio.io/excludeOutboundPorts").is_none());
    assert!(annotation(&out, "proxy.istio.io/config").is_some());
}

#[test]
fn egress_none_adds_no_istio_annotation() {
    let d = Defaults {
        native_sidecar: true,
        ..defaults()
    };
    let p = pod(json!({"sbmesh.io/egress": "none"}));
    let (out, _) = run_with(&p, &Context::offline(IdentityMode::Inject), &d).unwrap();
    let ann = out["metadata"]["annotations"].as_object().unwrap();
    assert!(ann.keys().all(|k| !k.contains("istio")), "{ann:?}");
}

#[test]
fn native_sidecar_annotation_comes_from_config() {
    let d = Defaults {
        native_sidecar: true,
        ..defaults()
    };
    let (out, _) = run_with(&pod(json!({})), &Context::offline(IdentityMode::Inject), &d).unwrap();
    assert_eq!(
        annotation(&out, "sidecar.istio.io/nativeSidecar"),
        Some("true")
    );
    let (out, _) = run(&pod(json!({}))).unwrap();
    assert_eq!(annotation(&out, "sidecar.istio.io/nativeSidecar"), None);
}

#[test]
fn egress_from_config_applies_when_the_pod_is_silent() {
    let d = Defaults {
        egress: Egress::Bypass,
        ..defaults()
    };
    let (out, _) = run_with(&pod(json!({})), &Context::offline(IdentityMode::Inject), &d).unwrap();
    assert_eq!(
        annotation(&out, "traffic.sidecar.istio.io/excludeOutboundPorts"),
        Some("5671,5672")
    );
}

// ---------------------------------------------------------------- policy

fn with_conn_string(list: &str) -> Value {
    let mut p = pod(json!({"sbmesh.io/containers": "app"}));
    let c = json!({"name": "legacy", "image": "x", "env": [{"name": "SB_CONN",
        "value": "endpoint=sb://legacy.servicebus.windows.net/;sharedaccesskeyname=Root;SHAREDACCESSKEY=c2VjcmV0"}]});
    p["spec"][list] = json!([c]);
    if list == "containers" {
        p["spec"]["containers"] = json!([{"name": "app", "image": "y"}, c]);
    }
    p
}

#[test]
fn plaintext_connection_string_is_denied_in_any_container_in_scope_or_not() {
    for list in ["containers", "initContainers"] {
        let msg = denied(&with_conn_string(list), Reason::Policy);
        assert!(
            msg.contains("legacy") && msg.contains("SB_CONN") && msg.contains("connection string"),
            "{msg}"
        );
        assert!(
            !msg.contains("c2VjcmV0"),
            "the message must not echo the secret: {msg}"
        );
    }
}

#[test]
fn connection_string_policy_warn_admits_with_a_warning() {
    let d = Defaults {
        connection_string_policy: Policy::Warn,
        ..defaults()
    };
    let (_, m) = run_with(
        &with_conn_string("containers"),
        &Context::offline(IdentityMode::Inject),
        &d,
    )
    .unwrap();
    assert!(
        m.warnings.iter().any(|w| w.contains("SB_CONN")),
        "{:?}",
        m.warnings
    );
    assert!(m.warnings.iter().all(|w| !w.contains("c2VjcmV0")));
}

#[test]
fn connection_string_policy_off_is_silent() {
    let d = Defaults {
        connection_string_policy: Policy::Off,
        ..defaults()
    };
    let (_, m) = run_with(
        &with_conn_string("containers"),
        &Context::offline(IdentityMode::Inject),
        &d,
    )
    .unwrap();
    assert!(m.warnings.iter().all(|w| !w.contains("SB_CONN")));
}

#[test]
fn connection_string_from_a_secret_reference_is_fine() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "SB_CONN", "valueFrom": {"secretKeyRef": {"name": "sb", "key": "conn"}}}]);
    assert!(run(&p).is_ok());
}

#[test]
fn default_service_account_warns_or_is_denied_by_config() {
    let mut p = pod(json!({}));
    p["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceAccountName");
    let (_, m) = run(&p).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("default ServiceAccount")),
        "{:?}",
        m.warnings
    );
    let d = Defaults {
        require_dedicated_service_account: Policy::Deny,
        ..defaults()
    };
    let err = run_with(&p, &Context::offline(IdentityMode::Inject), &d).unwrap_err();
    assert_eq!(err.reason(), Reason::Policy);
    assert!(err.to_string().contains("default ServiceAccount"));
}

#[test]
fn unknown_sbmesh_annotation_warns() {
    let (_, m) = run(&pod(json!({"sbmesh.io/queue": "orders"}))).unwrap();
    assert!(
        m.warnings.iter().any(|w| w.contains("sbmesh.io/queue ")),
        "{:?}",
        m.warnings
    );
}

// ---------------------------------------------------------------- resolution and denials

#[test]
fn missing_client_id_denial_names_every_place_to_set_it() {
    let msg = denied(
        &pod(json!({"sbmesh.io/client-id": null})),
        Reason::MissingParameter,
    );
    for want in [
        "sbmesh.io/client-id on the pod",
        "azure.workload.identity/client-id",
        "ServiceAccount payments/orders",
        "Namespace payments",
        "clientId in the webhook config",
        "not consulted",
    ] {
        assert!(msg.contains(want), "missing {want:?} in {msg}");
    }
}

#[test]
fn invalid_client_id_denial_names_annotation_value_and_rule() {
    let msg = denied(
        &pod(json!({"sbmesh.io/client-id": "my-app"})),
        Reason::InvalidValue,
    );
    assert!(msg.contains("pod annotation sbmesh.io/client-id"), "{msg}");
    assert!(msg.contains("\"my-app\"") && msg.contains("GUID"), "{msg}");
}

#[test]
fn missing_tenant_id_is_denied_in_inject_mode_only() {
    let d = Defaults::default();
    let p = pod(json!({}));
    let err = run_with(&p, &Context::offline(IdentityMode::Inject), &d).unwrap_err();
    assert_eq!(err.reason(), Reason::MissingParameter);
    assert_eq!(err.key(), Some("sbmesh.io/tenant-id"));
    assert!(err.to_string().contains("tenant id"), "{err}");
    assert!(run_with(&p, &delegate(), &d).is_ok());
}

#[test]
fn pod_annotation_wins_over_service_account_namespace_and_config() {
    let sa: BTreeMap<String, String> = [
        (
            "sbmesh.io/servicebus-namespace".to_string(),
            "from-sa-ns".to_string(),
        ),
        (
            "azure.workload.identity/client-id".to_string(),
            "11111111-1111-1111-1111-111111111111".to_string(),
        ),
    ]
    .into();
    let ns: BTreeMap<String, String> =
        [("sbmesh.io/queues".to_string(), "from-namespace".to_string())].into();
    let ctx = Context {
        service_account_annotations: Some(&sa),
        namespace_annotations: Some(&ns),
        namespace_labels: None,
        identity_mode: IdentityMode::Inject,
    };
    let p = pod(json!({"sbmesh.io/client-id": null}));
    let plan = plan_with(&p, &ctx, &defaults()).unwrap();
    assert_eq!(
        plan.servicebus_namespace.short(),
        "payments-prod",
        "pod wins"
    );
    assert_eq!(
        plan.client_id.as_str(),
        "11111111-1111-1111-1111-111111111111",
        "SA's AWI key"
    );
    assert_eq!(
        plan.access.queue_names()[0].as_str(),
        "from-namespace",
        "Namespace default"
    );
}

#[test]
fn invalid_value_on_the_service_account_names_it() {
    let sa: BTreeMap<String, String> =
        [("sbmesh.io/tenant-id".to_string(), "nope".to_string())].into();
    let ctx = Context {
        service_account_annotations: Some(&sa),
        namespace_annotations: None,
        namespace_labels: None,
        identity_mode: IdentityMode::Inject,
    };
    let err = run_with(&pod(json!({})), &ctx, &defaults()).unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidValue);
    let message = err.to_string();
    assert!(
        message.contains("ServiceAccount payments/orders") && message.contains("\"nope\""),
        "{message}"
    );
}

#[test]
fn federated_subject_uses_request_namespace_and_default_service_account() {
    let mut p = pod(json!({}));
    p["spec"]["serviceAccountName"] = json!("");
    let plan = plan(&p).unwrap();
    assert_eq!(
        plan.subject.federated(),
        "system:serviceaccount:payments:default"
    );
    assert_eq!(
        plan.subject.spiffe_id(),
        "spiffe://cluster.local/ns/payments/sa/default"
    );
}

// ---------------------------------------------------------------- delegate mode

#[test]
fn delegate_mode_leaves_token_and_identity_env_to_the_other_webhook() {
    let (out, m) = run_with(&pod(json!({})), &delegate(), &defaults()).unwrap();
    assert_eq!(
        out["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert!(out.pointer("/spec/volumes").is_none());
    assert!(out.pointer(&format!("{APP}/volumeMounts")).is_none());
    assert_eq!(
        env_names(&out, APP),
        vec![
            "AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE",
            "AZURE_SERVICEBUS_CLIENTID"
        ]
    );
    let status: Value =
        serde_json::from_str(annotation(&out, "sbmesh.io/status").unwrap()).unwrap();
    assert_eq!(status["mode"], "delegate");
    assert_eq!(status["volume"], Value::Null);
    assert!(m.audit.contains(&("identity-mode", "delegate".to_string())));
}

// ---------------------------------------------------------------- bookkeeping and idempotence

#[test]
fn status_annotation_records_the_end_state() {
    let (out, _) = run(&pod(json!({}))).unwrap();
    let status: Value =
        serde_json::from_str(annotation(&out, "sbmesh.io/status").unwrap()).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["mode"], "inject");
    assert_eq!(status["subject"], "system:serviceaccount:payments:orders");
    assert_eq!(status["containers"], json!(["app"]));
    assert_eq!(status["volume"], "sbmesh-azure-identity-token");
    assert_eq!(status["env"].as_array().unwrap().len(), 6);
}

#[test]
fn audit_annotation_keys_have_no_slash_and_fit_63_characters() {
    let (_, m) = run(&pod(json!({}))).unwrap();
    let keys: Vec<_> = m.audit.iter().map(|(k, _)| *k).collect();
    for k in ["subject", "client-id", "servicebus-namespace", "spiffe-id"] {
        assert!(keys.contains(&k), "{keys:?}");
    }
    assert!(keys.iter().all(|k| !k.contains('/') && k.len() <= 63));
    let audit: BTreeMap<_, _> = m.audit.into_iter().collect();
    assert_eq!(
        audit["servicebus-namespace"],
        "payments-prod.servicebus.windows.net"
    );
    assert_eq!(
        audit["spiffe-id"],
        "spiffe://cluster.local/ns/payments/sa/orders"
    );
}

#[test]
fn readmitting_our_output_yields_an_empty_patch() {
    let p =
        pod(json!({"sbmesh.io/egress": "bypass", "proxy.istio.io/config": "{\"concurrency\": 2}"}));
    let (out, _) = run(&p).unwrap();
    let (again, m) = run(&out).unwrap();
    assert!(m.patch.0.is_empty(), "{:#?}", m.patch);
    assert_eq!(again, out);
}

#[test]
fn reinvocation_after_another_webhook_adds_a_container_touches_only_that_container_and_status() {
    let (mut out, _) = run(&pod(json!({}))).unwrap();
    out["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "added", "image": "z"}));
    let before = out.clone();
    let (again, m) = run(&out).unwrap();
    let paths = paths(&m);
    assert!(
        paths.iter().all(|p| p.starts_with("/spec/containers/1/")
            || p == "/metadata/annotations/sbmesh.io~1status"),
        "{paths:?}"
    );
    assert_eq!(
        again["spec"]["containers"][0],
        before["spec"]["containers"][0]
    );
    assert_eq!(env(&again, "/spec/containers/1"), sb_env());
}

#[test]
fn annotation_keys_are_escaped_in_patch_paths() {
    let (_, m) = run(&pod(json!({}))).unwrap();
    assert!(
        m.patch
            .0
            .iter()
            .any(|o| o.path.as_str() == "/metadata/annotations/sbmesh.io~1status")
    );
    assert!(
        m.patch
            .0
            .iter()
            .any(|o| o.path.as_str() == "/metadata/labels/azure.workload.identity~1use")
    );
}

#[test]
fn malformed_pod_is_denied_not_a_panic() {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["env"] = json!("not a list");
    assert!(denied(&p, Reason::Malformed).contains("malformed"));
    let mut p = pod(json!({}));
    p["spec"]["containers"] = json!([{"image": "no name"}]);
    assert!(denied(&p, Reason::Malformed).contains("malformed"));
    let mut p = pod(json!({}));
    p.as_object_mut().unwrap().remove("spec");
    assert!(denied(&p, Reason::Malformed).contains("malformed"));
}

#[test]
fn env_values_the_webhook_sets_are_listed_by_desired_env() {
    let plan = plan(&pod(json!({}))).unwrap();
    let names: Vec<_> = mutate::desired_env(&plan)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        sb_env().into_iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
}
