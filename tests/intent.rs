//! One test per rule of access intent (DESIGN §6), permission boundaries (§7) and telemetry
//! (§8), run through the pure core and applied with a JSON-patch engine.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use sbmesh::contract::boundary::{self, Key, Patterns};
use sbmesh::contract::{Context, Defaults, IdentityMode, Telemetry};
use sbmesh::core::{self, Admission};
use sbmesh::denial::{Denial, Reason};
use sbmesh::mutate::Mutation;
use support::*;

const APP: &str = "/spec/containers/0";
const SENDS: &str = "sbmesh.io/sends";
const RECEIVES: &str = "sbmesh.io/receives";
const ALLOWED_ENTITIES: &str = "sbmesh.io/allowed-entities";
const ALLOWED_BUSES: &str = "sbmesh.io/allowed-servicebus-namespaces";
const ALLOWED_CLIENT_IDS: &str = "sbmesh.io/allowed-client-ids";
const OTHER_CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";

const TELEMETRY_NAMES: [&str; 6] = [
    "SBMESH_POD_NAME",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "AZURE_EXPERIMENTAL_ENABLE_ACTIVITY_SOURCE",
    "AZURE_SDK_TRACING_IMPLEMENTATION",
];

static NONE: BTreeMap<String, String> = BTreeMap::new();

// ---------------------------------------------------------------- helpers

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Cluster lookups on: the pod's ServiceAccount and Namespace hold these annotations.
fn cluster<'a>(
    sa: &'a BTreeMap<String, String>,
    ns: &'a BTreeMap<String, String>,
    mode: IdentityMode,
) -> Context<'a> {
    Context {
        service_account_annotations: Some(sa),
        namespace_annotations: Some(ns),
        namespace_labels: None,
        identity_mode: mode,
    }
}

/// Cluster lookups on, a Namespace with these annotations and a bare ServiceAccount.
fn in_namespace(ns: &BTreeMap<String, String>) -> Context<'_> {
    cluster(&NONE, ns, IdentityMode::Inject)
}

fn offline() -> Context<'static> {
    Context::offline(IdentityMode::Inject)
}

fn patterns(key: Key, items: &[&str]) -> Patterns {
    let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    Patterns::parse_config(key, &items).expect("a valid config boundary")
}

/// [`defaults`] with config boundaries (`None` = not set).
fn with_boundaries(
    buses: Option<&[&str]>,
    entities: Option<&[&str]>,
    client_ids: Option<&[&str]>,
) -> Defaults {
    Defaults {
        boundaries: boundary::Defaults {
            servicebus_namespaces: buses.map(|b| patterns(Key::ServicebusNamespaces, b)),
            entities: entities.map(|e| patterns(Key::Entities, e)),
            client_ids: client_ids.map(|c| patterns(Key::ClientIds, c)),
        },
        ..defaults()
    }
}

/// The refusal of a pod that must be denied for `reason`, with its message.
#[track_caller]
fn refused(pod: &Value, ctx: &Context, d: &Defaults, reason: Reason) -> String {
    match run_with(pod, ctx, d) {
        Err(e) => {
            assert_eq!(e.reason(), reason, "denied for another reason: {e}");
            let message = e.to_string();
            assert!(message.starts_with("sbmesh: "), "{message}");
            message
        }
        Ok((_, m)) => panic!("expected a denial, got {:#?}", m.patch),
    }
}

#[track_caller]
fn admitted(pod: &Value, ctx: &Context, d: &Defaults) -> (Value, Mutation) {
    run_with(pod, ctx, d).unwrap_or_else(|e| panic!("denied: {e}"))
}

/// Whether a pod with `key: item` may run in a Namespace whose entity boundary is `allowed`:
/// true when admitted, false when refused for its boundary; any other outcome fails the test.
#[track_caller]
fn entity_allowed(allowed: &str, key: &str, item: &str) -> bool {
    let ns = map(&[(ALLOWED_ENTITIES, allowed)]);
    boundary_verdict(&pod(json!({ key: item })), &in_namespace(&ns), &defaults())
}

#[track_caller]
fn boundary_verdict(pod: &Value, ctx: &Context, d: &Defaults) -> bool {
    match run_with(pod, ctx, d) {
        Ok(_) => true,
        Err(e) if e.reason() == Reason::Boundary => false,
        Err(e) => panic!("denied for another reason: {e}"),
    }
}

fn env_value(pod: &Value, pointer: &str, name: &str) -> Option<String> {
    env(pod, pointer)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn status(pod: &Value) -> Value {
    serde_json::from_str(annotation(pod, "sbmesh.io/status").expect("status annotation"))
        .expect("status is JSON")
}

fn audit<'m>(m: &'m Mutation, key: &str) -> Option<&'m str> {
    m.audit
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

/// The identity and bus env every test pod gets first (public cloud, inject mode).
fn identity_env() -> Vec<(String, String)> {
    [
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_TENANT_ID", TENANT_ID),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/azure/tokens/azure-identity-token",
        ),
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/"),
        (
            "AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE",
            "payments-prod.servicebus.windows.net",
        ),
        ("AZURE_SERVICEBUS_CLIENTID", CLIENT_ID),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// A malformed access item: denied as an invalid value whose message names the annotation,
/// quotes the item and shows both accepted forms of its direction.
#[track_caller]
fn assert_malformed(key: &str, list: &str, item: &str) {
    let message = denied(&pod(json!({ key: list })), Reason::InvalidValue);
    let forms = if key == SENDS {
        "queue/<queue> or topic/<topic>"
    } else {
        "queue/<queue> or topic/<topic>:<subscription>"
    };
    assert!(message.contains(key), "{message}");
    assert!(message.contains(&format!("\"{item}\"")), "{message}");
    assert!(message.contains(forms), "{message}");
}

// ---------------------------------------------------------------- §6 access items

#[test]
fn sends_item_with_slash_is_the_queue_named_with_it() {
    let (out, _) = run(&pod(json!({SENDS: "queue/orders/eu"}))).unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_QUEUE_NAMES").as_deref(),
        Some("orders/eu")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SENDS").as_deref(),
        Some("queue/orders/eu")
    );
    assert_eq!(env_value(&out, APP, "AZURE_SERVICEBUS_TOPIC_NAMES"), None);
}

#[test]
fn sends_topic_item_is_the_topic() {
    let (out, _) = run(&pod(json!({SENDS: "topic/payments/v2"}))).unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_TOPIC_NAMES").as_deref(),
        Some("payments/v2")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SENDS").as_deref(),
        Some("topic/payments/v2")
    );
    assert_eq!(env_value(&out, APP, "AZURE_SERVICEBUS_QUEUE_NAMES"), None);
}

#[test]
fn receives_queue_item_is_the_queue() {
    let (out, _) = run(&pod(json!({RECEIVES: "queue/replies"}))).unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_QUEUE_NAMES").as_deref(),
        Some("replies")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("queue/replies")
    );
}

#[test]
fn receives_topic_item_splits_topic_and_subscription_at_the_colon() {
    let (out, _) = run(&pod(json!({RECEIVES: "topic/payments/v2:billing"}))).unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_TOPIC_NAMES").as_deref(),
        Some("payments/v2")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SUBSCRIPTION_NAME").as_deref(),
        Some("billing")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("topic/payments/v2:billing")
    );
}

#[test]
fn receives_topic_without_subscription_is_denied_quoting_the_item() {
    assert_malformed(RECEIVES, "queue/replies, topic/payments", "topic/payments");
}

#[test]
fn sends_to_a_subscription_is_denied_quoting_the_item() {
    assert_malformed(SENDS, "topic/payments:billing", "topic/payments:billing");
}

#[test]
fn uppercase_prefix_is_denied_quoting_the_item() {
    assert_malformed(SENDS, "Queue/orders", "Queue/orders");
    assert_malformed(SENDS, "TOPIC/payments", "TOPIC/payments");
    assert_malformed(RECEIVES, "Topic/payments:billing", "Topic/payments:billing");
}

#[test]
fn item_without_a_prefix_is_denied_quoting_the_item() {
    assert_malformed(SENDS, "orders", "orders");
    assert_malformed(RECEIVES, "subscription/billing", "subscription/billing");
}

#[test]
fn item_with_an_empty_name_is_denied_quoting_the_item() {
    assert_malformed(SENDS, "queue/", "queue/");
    assert_malformed(SENDS, "topic/", "topic/");
    assert_malformed(RECEIVES, "topic/payments:", "topic/payments:");
    assert_malformed(RECEIVES, "topic/:billing", "topic/:billing");
}

#[test]
fn item_with_characters_outside_service_bus_names_is_denied_quoting_the_item() {
    assert_malformed(SENDS, "queue/or ders", "queue/or ders");
    assert_malformed(SENDS, "queue/orders!", "queue/orders!");
    assert_malformed(SENDS, "queue/-orders", "queue/-orders");
    // A queue name cannot hold ':' (only a topic item splits at it).
    assert_malformed(RECEIVES, "queue/orders:x", "queue/orders:x");
    // Subscription names hold no '/' and no second ':'.
    assert_malformed(
        RECEIVES,
        "topic/payments:billing/eu",
        "topic/payments:billing/eu",
    );
    assert_malformed(RECEIVES, "topic/payments:a:b", "topic/payments:a:b");
}

#[test]
fn malformed_item_on_the_service_account_names_the_service_account() {
    let sa = map(&[(RECEIVES, "topic/payments")]);
    let ctx = cluster(&sa, &NONE, IdentityMode::Inject);
    let message = refused(&pod(json!({})), &ctx, &defaults(), Reason::InvalidValue);
    assert!(
        message.contains("ServiceAccount payments/orders") && message.contains(RECEIVES),
        "{message}"
    );
}

#[test]
fn duplicate_items_are_dropped_case_insensitively_keeping_the_first_spelling() {
    let p = pod(json!({
        SENDS: "queue/Orders, topic/Events, queue/orders, topic/EVENTS, queue/Orders",
        RECEIVES: "topic/events:Audit, topic/EVENTS:audit",
    }));
    let (out, _) = run(&p).unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SENDS").as_deref(),
        Some("queue/Orders,topic/Events")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("topic/events:Audit")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_QUEUE_NAMES").as_deref(),
        Some("Orders")
    );
    // The topic's first spelling is the send's.
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_TOPIC_NAMES").as_deref(),
        Some("Events")
    );
}

#[test]
fn the_same_queue_in_both_directions_is_kept_in_each_and_named_once() {
    let p = pod(json!({SENDS: "queue/orders", RECEIVES: "queue/ORDERS"}));
    let (out, m) = run(&p).unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SENDS").as_deref(),
        Some("queue/orders")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("queue/ORDERS")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_QUEUE_NAMES").as_deref(),
        Some("orders")
    );
    assert_eq!(
        audit(&m, "access"),
        Some("send queue/orders, receive queue/ORDERS")
    );
}

// ---------------------------------------------------------------- §6 env rows

#[test]
fn legacy_and_new_keys_give_the_env_rows_in_contract_order() {
    let mut p = pod(json!({
        "sbmesh.io/queues": "orders",
        "sbmesh.io/topics": "events",
        "sbmesh.io/subscription": "audit",
        SENDS: "queue/replies, topic/notify, queue/ORDERS",
        RECEIVES: "queue/inbox, topic/notify:mailer, topic/events:audit",
        "sbmesh.io/env-aliases": "sdk",
    }));
    p["spec"]["containers"][0]["env"] = json!([{"name": "LOG_LEVEL", "value": "info"}]);
    let (out, _) = run(&p).unwrap();
    let mut want = rows(&[("LOG_LEVEL", "info")]);
    want.extend(identity_env());
    want.extend(rows(&[
        // queues, then sends, then receives; first appearance wins.
        ("AZURE_SERVICEBUS_QUEUE_NAMES", "orders,replies,inbox"),
        ("AZURE_SERVICEBUS_TOPIC_NAMES", "events,notify"),
        // Two (topic, subscription) pairs: no SUBSCRIPTION_NAME.
        (
            "AZURE_SERVICEBUS_SENDS",
            "queue/orders,topic/events,queue/replies,topic/notify",
        ),
        (
            "AZURE_SERVICEBUS_RECEIVES",
            "queue/orders,topic/events:audit,queue/inbox,topic/notify:mailer",
        ),
        (
            "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
            "payments-prod.servicebus.windows.net",
        ),
    ]));
    assert_eq!(env(&out, APP), want);
}

#[test]
fn queue_and_topic_names_come_from_the_whole_access_set() {
    // Only receives: the names still come from them.
    let p = pod(json!({RECEIVES: "queue/inbox, topic/payments:billing"}));
    let (out, _) = run(&p).unwrap();
    let mut want = identity_env();
    want.extend(rows(&[
        ("AZURE_SERVICEBUS_QUEUE_NAMES", "inbox"),
        ("AZURE_SERVICEBUS_TOPIC_NAMES", "payments"),
        ("AZURE_SERVICEBUS_SUBSCRIPTION_NAME", "billing"),
        (
            "AZURE_SERVICEBUS_RECEIVES",
            "queue/inbox,topic/payments:billing",
        ),
    ]));
    assert_eq!(env(&out, APP), want);
}

#[test]
fn sends_and_receives_env_only_when_not_empty() {
    let (only_sends, _) = run(&pod(json!({SENDS: "queue/a"}))).unwrap();
    let names = env_names(&only_sends, APP);
    assert!(names.contains(&"AZURE_SERVICEBUS_SENDS".to_string()));
    assert!(!names.contains(&"AZURE_SERVICEBUS_RECEIVES".to_string()));

    let (only_receives, _) = run(&pod(json!({RECEIVES: "queue/a"}))).unwrap();
    let names = env_names(&only_receives, APP);
    assert!(!names.contains(&"AZURE_SERVICEBUS_SENDS".to_string()));
    assert!(names.contains(&"AZURE_SERVICEBUS_RECEIVES".to_string()));

    // An empty list is no access at all.
    let (none, _) = run(&pod(json!({SENDS: " , ", RECEIVES: ""}))).unwrap();
    assert_eq!(env(&none, APP), identity_env());
}

#[test]
fn subscription_name_is_set_for_exactly_one_pair() {
    let (out, _) = run(&pod(json!({RECEIVES: "topic/payments:billing, queue/x"}))).unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SUBSCRIPTION_NAME").as_deref(),
        Some("billing")
    );
    // The legacy subscription is one pair too.
    let (out, _) = run(&pod(
        json!({"sbmesh.io/topics": "events", "sbmesh.io/subscription": "audit"}),
    ))
    .unwrap();
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SUBSCRIPTION_NAME").as_deref(),
        Some("audit")
    );
}

#[test]
fn subscription_name_is_absent_with_two_subscriptions() {
    for p in [
        pod(json!({RECEIVES: "topic/payments:billing, topic/payments:audit"})),
        // Same subscription name under two topics: two pairs.
        pod(json!({RECEIVES: "topic/a:billing, topic/b:billing"})),
        pod(
            json!({"sbmesh.io/topics": "events", "sbmesh.io/subscription": "audit", RECEIVES: "topic/notify:mailer"}),
        ),
    ] {
        let (out, _) = run(&p).unwrap();
        assert_eq!(
            env_value(&out, APP, "AZURE_SERVICEBUS_SUBSCRIPTION_NAME"),
            None,
            "{p}"
        );
    }
}

#[test]
fn legacy_subscription_rule_counts_only_the_topics_key() {
    // One legacy topic: sends and receives of other topics do not count against it.
    let p = pod(json!({
        "sbmesh.io/topics": "events",
        "sbmesh.io/subscription": "audit",
        SENDS: "topic/notify",
        RECEIVES: "topic/notify:mailer",
    }));
    assert!(run(&p).is_ok());
    // No legacy topic: a receives topic does not stand in for it.
    let p = pod(json!({"sbmesh.io/subscription": "audit", RECEIVES: "topic/events:x"}));
    let message = denied(&p, Reason::Conflict);
    assert!(message.contains("found 0"), "{message}");
    // Two legacy topics: denied.
    let p = pod(json!({"sbmesh.io/topics": "a, b", "sbmesh.io/subscription": "audit"}));
    let message = denied(&p, Reason::Conflict);
    assert!(message.contains("found 2"), "{message}");
}

#[test]
fn sends_and_receives_are_read_from_the_service_account() {
    let sa = map(&[(SENDS, "queue/from-sa"), (RECEIVES, "topic/t:from-sa")]);
    let ctx = cluster(&sa, &NONE, IdentityMode::Inject);
    let (out, _) = admitted(&pod(json!({})), &ctx, &defaults());
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SENDS").as_deref(),
        Some("queue/from-sa")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("topic/t:from-sa")
    );
}

#[test]
fn sends_and_receives_are_read_from_the_namespace() {
    let ns = map(&[(SENDS, "queue/from-ns"), (RECEIVES, "topic/t:from-ns")]);
    let (out, _) = admitted(&pod(json!({})), &in_namespace(&ns), &defaults());
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SENDS").as_deref(),
        Some("queue/from-ns")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("topic/t:from-ns")
    );
}

#[test]
fn sends_and_receives_resolve_pod_then_service_account_then_namespace_per_key() {
    let sa = map(&[(SENDS, "queue/from-sa"), (RECEIVES, "queue/from-sa")]);
    let ns = map(&[(SENDS, "queue/from-ns"), (RECEIVES, "queue/from-ns")]);
    let ctx = cluster(&sa, &ns, IdentityMode::Inject);
    // The pod sets sends only: receives come from the ServiceAccount; nothing is merged.
    let (out, _) = admitted(&pod(json!({SENDS: "queue/from-pod"})), &ctx, &defaults());
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_SENDS").as_deref(),
        Some("queue/from-pod")
    );
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("queue/from-sa")
    );
    // Without the ServiceAccount's: the Namespace's.
    let ctx = cluster(&NONE, &ns, IdentityMode::Inject);
    let (out, _) = admitted(&pod(json!({SENDS: "queue/from-pod"})), &ctx, &defaults());
    assert_eq!(
        env_value(&out, APP, "AZURE_SERVICEBUS_RECEIVES").as_deref(),
        Some("queue/from-ns")
    );
}

// ---------------------------------------------------------------- §6 status and audit

#[test]
fn status_lists_sends_and_receives_as_normalised_items() {
    let p = pod(json!({
        "sbmesh.io/queues": "orders",
        SENDS: "topic/events, queue/ORDERS",
        RECEIVES: " topic/events:audit ",
    }));
    let (out, _) = run(&p).unwrap();
    let s = status(&out);
    assert_eq!(s["sends"], json!(["queue/orders", "topic/events"]));
    assert_eq!(s["receives"], json!(["queue/orders", "topic/events:audit"]));
}

#[test]
fn status_omits_empty_sends_and_receives() {
    let (out, _) = run(&pod(json!({RECEIVES: "queue/inbox"}))).unwrap();
    let s = status(&out);
    assert!(s.get("sends").is_none(), "{s}");
    assert_eq!(s["receives"], json!(["queue/inbox"]));

    let (out, _) = run(&pod(json!({}))).unwrap();
    let s = status(&out);
    assert!(
        s.get("sends").is_none() && s.get("receives").is_none(),
        "{s}"
    );
}

#[test]
fn audit_access_lists_sends_then_receives() {
    let p = pod(json!({
        "sbmesh.io/topics": "events",
        "sbmesh.io/subscription": "audit",
        SENDS: "queue/a",
        RECEIVES: "queue/b",
    }));
    let (_, m) = run(&p).unwrap();
    assert_eq!(
        audit(&m, "access"),
        Some("send topic/events, send queue/a, receive topic/events:audit, receive queue/b")
    );
}

#[test]
fn audit_access_is_absent_without_access() {
    let (_, m) = run(&pod(json!({}))).unwrap();
    assert_eq!(audit(&m, "access"), None);
    assert!(audit(&m, "subject").is_some());
}

/// `count` distinct queue names of `len` characters each.
fn long_queues(count: usize, len: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("q{i:03}{}", "x".repeat(len - 4)))
        .collect()
}

fn sends_of(queues: &[String]) -> String {
    queues
        .iter()
        .map(|q| format!("queue/{q}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn audit_access_of_1024_characters_is_kept_whole() {
    // 6 items of "send queue/" + 158 characters, joined by ", ": 6 * 169 + 5 * 2 = 1024.
    let queues = long_queues(6, 158);
    let (_, m) = run(&pod(json!({ SENDS: sends_of(&queues) }))).unwrap();
    let line = audit(&m, "access").unwrap();
    let want: Vec<String> = queues.iter().map(|q| format!("send queue/{q}")).collect();
    assert_eq!(line, want.join(", "));
    assert_eq!(line.chars().count(), 1024);
}

#[test]
fn audit_access_longer_than_1024_characters_keeps_1023_and_an_ellipsis() {
    let queues = long_queues(6, 159); // 1030 characters in full
    let (_, m) = run(&pod(json!({ SENDS: sends_of(&queues) }))).unwrap();
    let line = audit(&m, "access").unwrap();
    let full: Vec<String> = queues.iter().map(|q| format!("send queue/{q}")).collect();
    let full = full.join(", ");
    assert_eq!(full.chars().count(), 1030);
    let want: String = full.chars().take(1023).chain(['…']).collect();
    assert_eq!(line, want);
    assert_eq!(line.chars().count(), 1024);
}

// ---------------------------------------------------------------- §7 entity patterns

#[test]
fn entity_boundary_star_alone_allows_every_item() {
    for (key, item) in [
        (SENDS, "queue/orders/eu"),
        (SENDS, "topic/payments"),
        (RECEIVES, "queue/x"),
        (RECEIVES, "topic/payments:audit"),
    ] {
        assert!(entity_allowed("*", key, item), "{item}");
    }
}

#[test]
fn queue_glob_allows_both_directions_of_matching_queues_only() {
    for (key, item, want) in [
        (SENDS, "queue/billing-in", true),
        (RECEIVES, "queue/billing-out", true),
        (SENDS, "queue/billing-1", true),
        (SENDS, "queue/billing", false),
        (SENDS, "queue/orders", false),
        // A queue pattern says nothing of topics of the same name.
        (SENDS, "topic/billing-in", false),
        (RECEIVES, "topic/billing-in:s", false),
    ] {
        assert_eq!(entity_allowed("queue/billing-*", key, item), want, "{item}");
    }
}

#[test]
fn topic_glob_allows_send_to_the_topic_and_receive_from_any_of_its_subscriptions() {
    for (key, item, want) in [
        (SENDS, "topic/payments", true),
        (RECEIVES, "topic/payments:billing", true),
        (RECEIVES, "topic/payments:audit", true),
        (SENDS, "topic/payments-v2", false),
        (RECEIVES, "topic/refunds:billing", false),
        (SENDS, "queue/payments", false),
    ] {
        assert_eq!(entity_allowed("topic/payments", key, item), want, "{item}");
    }
    assert!(entity_allowed("topic/pay*", SENDS, "topic/payments-v2"));
    assert!(entity_allowed(
        "topic/pay*",
        RECEIVES,
        "topic/payments-v2:x"
    ));
}

#[test]
fn topic_subscription_glob_allows_only_those_subscriptions_and_not_a_send_to_the_topic() {
    for (key, item, want) in [
        (RECEIVES, "topic/payments:billing", true),
        (RECEIVES, "topic/payments:billing-eu", true),
        (RECEIVES, "topic/payments:audit", false),
        (RECEIVES, "topic/refunds:billing", false),
        (SENDS, "topic/payments", false),
    ] {
        assert_eq!(
            entity_allowed("topic/payments:billing*", key, item),
            want,
            "{item}"
        );
    }
    assert!(entity_allowed("topic/*:*", RECEIVES, "topic/a/b:c"));
    assert!(!entity_allowed("topic/*:*", SENDS, "topic/a/b"));
}

#[test]
fn entity_glob_star_matches_any_run_including_slashes() {
    assert!(entity_allowed("queue/orders*", SENDS, "queue/orders/eu/1"));
    assert!(entity_allowed("queue/*/eu", SENDS, "queue/orders/x/eu"));
    assert!(entity_allowed("queue/a*b*c", SENDS, "queue/aXbYc"));
    assert!(!entity_allowed("queue/a*b*c", SENDS, "queue/aXbY"));
    assert!(entity_allowed("topic/*", RECEIVES, "topic/a/b:s"));
}

#[test]
fn entity_glob_star_is_the_only_wildcard() {
    // '.' is a literal character of names, not "any character".
    assert!(entity_allowed("queue/a.c", SENDS, "queue/a.c"));
    assert!(!entity_allowed("queue/a.c", SENDS, "queue/abc"));
    // '?' is no wildcard: the pattern does not parse at all, and that refuses the pod.
    let ns = map(&[(ALLOWED_ENTITIES, "queue/a?c")]);
    refused(
        &pod(json!({SENDS: "queue/abc"})),
        &in_namespace(&ns),
        &defaults(),
        Reason::InvalidValue,
    );
}

#[test]
fn entity_patterns_match_case_insensitively() {
    assert!(entity_allowed("queue/Billing-*", SENDS, "queue/BILLING-in"));
    assert!(entity_allowed(
        "topic/PAYMENTS:Billing",
        RECEIVES,
        "topic/payments:billing"
    ));
}

#[test]
fn every_item_must_be_inside_the_entity_boundary() {
    let ns = map(&[(ALLOWED_ENTITIES, "queue/a, topic/t")]);
    let p = pod(json!({SENDS: "queue/a, topic/t, queue/b", RECEIVES: "topic/t:s"}));
    let message = refused(&p, &in_namespace(&ns), &defaults(), Reason::Boundary);
    assert!(message.contains("send queue/b is outside"), "{message}");
}

#[test]
fn legacy_keys_are_checked_in_both_directions() {
    // A legacy queue is sent to and received from: a topic-only boundary refuses it, and a
    // legacy subscription is a receive of its topic.
    assert!(!entity_allowed("topic/*", "sbmesh.io/queues", "orders"));
    assert!(entity_allowed("queue/orders", "sbmesh.io/queues", "orders"));
    let ns = map(&[(ALLOWED_ENTITIES, "topic/events:audit")]);
    let p = pod(json!({"sbmesh.io/topics": "events", "sbmesh.io/subscription": "audit"}));
    let message = refused(&p, &in_namespace(&ns), &defaults(), Reason::Boundary);
    assert!(
        message.contains("send topic/events is outside"),
        "{message}"
    );
}

// ---------------------------------------------------------------- §7 bus and client id

#[track_caller]
fn bus_allowed(allowed: &str, annotations: Value) -> bool {
    let ns = map(&[(ALLOWED_BUSES, allowed)]);
    boundary_verdict(&pod(annotations), &in_namespace(&ns), &defaults())
}

#[test]
fn bus_boundary_short_names_globs_fqdns_and_star() {
    for (allowed, want) in [
        ("payments-prod", true),
        ("PAYMENTS-PROD", true),
        ("payments-*", true),
        ("*-prod", true),
        ("payments-prod.servicebus.windows.net", true),
        ("payments-prod.servicebus.windows.net.", true),
        ("*.servicebus.windows.net", true),
        ("*", true),
        ("other-bus, payments-prod", true),
        ("payments", false),
        ("payments-dev", false),
        ("billing-*", false),
        ("payments-prod.servicebus.chinacloudapi.cn", false),
    ] {
        assert_eq!(bus_allowed(allowed, json!({})), want, "{allowed}");
    }
}

#[test]
fn bus_boundary_compares_fqdns_of_the_pods_own_cloud() {
    let china = json!({"sbmesh.io/cloud": "china"});
    for (allowed, want) in [
        ("payments-prod", true),
        ("payments-*", true),
        ("payments-prod.servicebus.chinacloudapi.cn", true),
        ("*.servicebus.chinacloudapi.cn", true),
        ("payments-prod.servicebus.windows.net", false),
        ("*.servicebus.windows.net", false),
    ] {
        assert_eq!(bus_allowed(allowed, china.clone()), want, "{allowed}");
    }
}

#[test]
fn bus_outside_the_boundary_is_denied_naming_the_bus() {
    let ns = map(&[(ALLOWED_BUSES, "billing-*")]);
    let message = refused(
        &pod(json!({})),
        &in_namespace(&ns),
        &defaults(),
        Reason::Boundary,
    );
    assert!(
        message.contains("Service Bus namespace payments-prod.servicebus.windows.net")
            && message.contains("sbmesh.io/allowed-servicebus-namespaces = \"billing-*\""),
        "{message}"
    );
}

#[track_caller]
fn client_id_allowed(allowed: &str) -> bool {
    let ns = map(&[(ALLOWED_CLIENT_IDS, allowed)]);
    boundary_verdict(&pod(json!({})), &in_namespace(&ns), &defaults())
}

#[test]
fn client_id_boundary_compares_guids_case_insensitively_and_takes_star() {
    assert!(client_id_allowed(CLIENT_ID));
    assert!(client_id_allowed(&CLIENT_ID.to_uppercase()));
    assert!(client_id_allowed(&format!(
        "{OTHER_CLIENT_ID}, {CLIENT_ID}"
    )));
    assert!(client_id_allowed("*"));
    assert!(!client_id_allowed(OTHER_CLIENT_ID));
    // The pod's own spelling does not matter either.
    let ns = map(&[(ALLOWED_CLIENT_IDS, CLIENT_ID)]);
    let p = pod(json!({"sbmesh.io/client-id": CLIENT_ID.to_uppercase()}));
    assert!(boundary_verdict(&p, &in_namespace(&ns), &defaults()));
}

#[test]
fn client_id_outside_the_boundary_is_denied_naming_the_client_id() {
    let ns = map(&[(ALLOWED_CLIENT_IDS, OTHER_CLIENT_ID)]);
    let message = refused(
        &pod(json!({})),
        &in_namespace(&ns),
        &defaults(),
        Reason::Boundary,
    );
    assert!(
        message.contains(&format!("client id {CLIENT_ID} is outside"))
            && message.contains(OTHER_CLIENT_ID),
        "{message}"
    );
}

#[test]
fn client_id_boundary_takes_no_partial_wildcard() {
    let ns = map(&[(ALLOWED_CLIENT_IDS, "6f0c3a4e-*")]);
    refused(
        &pod(json!({})),
        &in_namespace(&ns),
        &defaults(),
        Reason::InvalidValue,
    );
}

// ---------------------------------------------------------------- §7 messages

#[test]
fn boundary_denial_example_of_the_design_is_reproduced_exactly() {
    let ns = map(&[(ALLOWED_ENTITIES, "queue/billing-*, topic/payments:billing")]);
    let ctx = in_namespace(&ns);
    let admit = |p: &Value| core::admit_json(&p.to_string(), "billing", &ctx, &defaults());
    let p = pod(json!({RECEIVES: "topic/payments:audit"}));
    let Admission::Deny(d) = admit(&p) else {
        panic!("expected a denial");
    };
    assert_eq!(d.reason(), Reason::Boundary);
    assert_eq!(
        d.to_string(),
        "sbmesh: receive topic/payments:audit is outside the boundary of Namespace billing: \
         sbmesh.io/allowed-entities = \"queue/billing-*, topic/payments:billing\" (on Namespace \
         billing); ask its owners to widen it, or use an allowed entity"
    );
    // What the boundary allows is admitted in the same Namespace.
    let p = pod(json!({SENDS: "queue/billing-in", RECEIVES: "topic/payments:billing"}));
    assert!(matches!(admit(&p), Admission::Patch { .. }));
}

#[test]
fn boundary_denial_from_the_config_names_the_config_key() {
    let d = with_boundaries(None, Some(&["queue/a*"]), None);
    let empty_ns = map(&[]);
    let message = refused(
        &pod(json!({SENDS: "queue/b"})),
        &in_namespace(&empty_ns),
        &d,
        Reason::Boundary,
    );
    assert!(
        message.contains("send queue/b is outside the boundary of Namespace payments")
            && message.contains("boundaries.allowedEntities = \"queue/a*\"")
            && message.contains("webhook config")
            && !message.contains("not consulted"),
        "{message}"
    );
}

#[test]
fn with_lookups_off_config_boundaries_apply_and_the_namespace_is_not_consulted() {
    let d = with_boundaries(Some(&["billing-*"]), None, None);
    let message = refused(&pod(json!({})), &offline(), &d, Reason::Boundary);
    assert!(
        message.contains("boundaries.allowedServicebusNamespaces = \"billing-*\"")
            && message.contains("Namespace payments not consulted"),
        "{message}"
    );
    let d = with_boundaries(Some(&["payments-*"]), None, None);
    assert!(run_with(&pod(json!({})), &offline(), &d).is_ok());
}

// ---------------------------------------------------------------- §7 precedence

#[test]
fn namespace_boundary_replaces_the_config_default_per_key() {
    let d = with_boundaries(Some(&["payments-*"]), Some(&["queue/a*"]), None);
    let ns = map(&[(ALLOWED_ENTITIES, "queue/b*")]);
    let ctx = in_namespace(&ns);
    // No merging: the config's queue/a* no longer applies ...
    let message = refused(&pod(json!({SENDS: "queue/a1"})), &ctx, &d, Reason::Boundary);
    assert!(
        message.contains("sbmesh.io/allowed-entities = \"queue/b*\" (on Namespace payments"),
        "{message}"
    );
    assert!(run_with(&pod(json!({SENDS: "queue/b1"})), &ctx, &d).is_ok());
    // ... while the config's bus boundary, which the Namespace does not set, still does.
    let p = pod(json!({SENDS: "queue/b1", "sbmesh.io/servicebus-namespace": "billing-prod"}));
    let message = refused(&p, &ctx, &d, Reason::Boundary);
    assert!(
        message.contains("boundaries.allowedServicebusNamespaces"),
        "{message}"
    );
}

#[test]
fn present_but_empty_namespace_boundary_allows_nothing() {
    let ns = map(&[(ALLOWED_ENTITIES, "")]);
    let d = with_boundaries(None, Some(&["*"]), None);
    let message = refused(
        &pod(json!({SENDS: "queue/a"})),
        &in_namespace(&ns),
        &d,
        Reason::Boundary,
    );
    assert!(message.contains("allows nothing"), "{message}");
    // An empty bus boundary refuses every pod: each has a bus.
    let ns = map(&[(ALLOWED_BUSES, " ")]);
    refused(
        &pod(json!({})),
        &in_namespace(&ns),
        &defaults(),
        Reason::Boundary,
    );
}

#[test]
fn unparsable_namespace_boundary_denies_naming_the_namespace() {
    for (key, value) in [
        (ALLOWED_ENTITIES, "orders"),
        (ALLOWED_ENTITIES, "queue/a, Queue/b"),
        (ALLOWED_BUSES, "pay_ments"),
        (ALLOWED_CLIENT_IDS, "not-a-guid"),
    ] {
        let ns = map(&[(key, value)]);
        // Fail closed, even for a pod that uses no entity at all.
        let message = refused(
            &pod(json!({})),
            &in_namespace(&ns),
            &defaults(),
            Reason::InvalidValue,
        );
        assert!(
            message.contains(key)
                && message.contains(&format!("\"{value}\""))
                && message.contains("Namespace payments")
                && message.contains("does not parse"),
            "{message}"
        );
    }
}

#[test]
fn require_boundaries_denies_a_namespace_without_a_bus_boundary() {
    let d = Defaults {
        require_boundaries: true,
        ..with_boundaries(None, Some(&["*"]), None)
    };
    let ns = map(&[(ALLOWED_ENTITIES, "*")]);
    let message = refused(&pod(json!({})), &in_namespace(&ns), &d, Reason::Boundary);
    assert!(
        message.contains("no boundary set for Namespace payments")
            && message.contains("sbmesh.io/allowed-servicebus-namespaces")
            && !message.contains("not consulted"),
        "{message}"
    );
}

#[test]
fn require_boundaries_is_met_by_the_namespace_or_a_config_default() {
    let required = |buses: Option<&[&str]>| Defaults {
        require_boundaries: true,
        ..with_boundaries(buses, None, None)
    };
    let ns = map(&[(ALLOWED_BUSES, "payments-*")]);
    assert!(run_with(&pod(json!({})), &in_namespace(&ns), &required(None)).is_ok());
    let empty = map(&[]);
    let d = required(Some(&["*"]));
    assert!(run_with(&pod(json!({})), &in_namespace(&empty), &d).is_ok());
    assert!(run_with(&pod(json!({})), &offline(), &d).is_ok());
}

#[test]
fn require_boundaries_with_lookups_off_says_the_namespace_was_not_consulted() {
    let d = Defaults {
        require_boundaries: true,
        ..defaults()
    };
    let message = refused(&pod(json!({})), &offline(), &d, Reason::Boundary);
    assert!(
        message.contains("no boundary set for Namespace payments")
            && message.contains("not consulted"),
        "{message}"
    );
}

#[test]
fn boundaries_apply_in_both_identity_modes() {
    let ns = map(&[(ALLOWED_ENTITIES, "queue/a")]);
    for mode in [IdentityMode::Inject, IdentityMode::Delegate] {
        let ctx = cluster(&NONE, &ns, mode);
        refused(
            &pod(json!({SENDS: "queue/b"})),
            &ctx,
            &defaults(),
            Reason::Boundary,
        );
        assert!(run_with(&pod(json!({SENDS: "queue/a"})), &ctx, &defaults()).is_ok());
        let d = with_boundaries(Some(&["billing-*"]), None, None);
        refused(
            &pod(json!({})),
            &Context::offline(mode),
            &d,
            Reason::Boundary,
        );
    }
}

#[test]
fn boundary_denial_changes_nothing() {
    let ns = map(&[(ALLOWED_ENTITIES, "queue/a")]);
    let p = pod(json!({SENDS: "queue/b", "sbmesh.io/egress": "bypass"}));
    match core::admit_json(&p.to_string(), "payments", &in_namespace(&ns), &defaults()) {
        Admission::Deny(Denial::Boundary(_)) => {}
        other => panic!("expected a boundary denial and no patch, got {other:#?}"),
    }
}

// ---------------------------------------------------------------- §7 ignored keys

#[test]
fn boundary_keys_on_the_pod_are_ignored_with_a_warning() {
    let p = pod(json!({
        ALLOWED_ENTITIES: "queue/none",
        ALLOWED_BUSES: "nothing-*",
        ALLOWED_CLIENT_IDS: OTHER_CLIENT_ID,
        SENDS: "queue/a",
    }));
    let (_, m) = run(&p).expect("boundary keys on the pod have no effect");
    for key in [ALLOWED_ENTITIES, ALLOWED_BUSES, ALLOWED_CLIENT_IDS] {
        let w = m
            .warnings
            .iter()
            .find(|w| w.contains(key))
            .unwrap_or_else(|| panic!("no warning for {key}: {:?}", m.warnings));
        assert!(
            w.contains("on the pod is ignored") && w.contains("Namespace"),
            "{w}"
        );
        assert!(!w.contains("is not an sbmesh annotation"), "{w}");
    }
}

#[test]
fn boundary_keys_on_the_service_account_are_ignored_with_a_warning() {
    let sa = map(&[
        (ALLOWED_ENTITIES, "queue/none"),
        (ALLOWED_CLIENT_IDS, OTHER_CLIENT_ID),
    ]);
    let ctx = cluster(&sa, &NONE, IdentityMode::Inject);
    let (_, m) = admitted(&pod(json!({SENDS: "queue/a"})), &ctx, &defaults());
    for key in [ALLOWED_ENTITIES, ALLOWED_CLIENT_IDS] {
        assert!(
            m.warnings.iter().any(|w| w.contains(key)
                && w.contains("ServiceAccount payments/orders")
                && w.contains("is ignored")
                && w.contains("Namespace")),
            "{key}: {:?}",
            m.warnings
        );
    }
    assert!(
        m.warnings.iter().all(|w| !w.contains(ALLOWED_BUSES)),
        "{:?}",
        m.warnings
    );
}

#[test]
fn pod_allowed_entities_star_does_not_widen_the_namespace_boundary() {
    let ns = map(&[(ALLOWED_ENTITIES, "queue/a")]);
    let p = pod(json!({ALLOWED_ENTITIES: "*", SENDS: "queue/b"}));
    refused(&p, &in_namespace(&ns), &defaults(), Reason::Boundary);
    // Nor one on the ServiceAccount.
    let sa = map(&[(ALLOWED_ENTITIES, "*")]);
    let ctx = cluster(&sa, &ns, IdentityMode::Inject);
    refused(
        &pod(json!({SENDS: "queue/b"})),
        &ctx,
        &defaults(),
        Reason::Boundary,
    );
}

// ---------------------------------------------------------------- §8 telemetry

fn otel(extra: Value) -> Value {
    let mut p = pod(json!({"sbmesh.io/telemetry": "otel"}));
    for (k, v) in extra.as_object().unwrap() {
        p["metadata"]["annotations"][k] = v.clone();
    }
    p
}

/// The telemetry rows of a container, in the contract's order.
fn telemetry_rows(service: &str, container: &str, endpoint: Option<&str>) -> Vec<(String, String)> {
    let mut r = rows(&[
        ("SBMESH_POD_NAME", "<from>"),
        ("OTEL_SERVICE_NAME", service),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            &format!(
                "k8s.namespace.name=payments,k8s.pod.name=$(SBMESH_POD_NAME),k8s.container.name={container}"
            ),
        ),
    ]);
    if let Some(e) = endpoint {
        r.extend(rows(&[("OTEL_EXPORTER_OTLP_ENDPOINT", e)]));
    }
    r.extend(rows(&[
        ("AZURE_EXPERIMENTAL_ENABLE_ACTIVITY_SOURCE", "true"),
        ("AZURE_SDK_TRACING_IMPLEMENTATION", "opentelemetry"),
    ]));
    r
}

fn has_telemetry(pod: &Value, pointer: &str) -> bool {
    env_names(pod, pointer)
        .iter()
        .any(|n| TELEMETRY_NAMES.contains(&n.as_str()))
}

#[test]
fn telemetry_otel_adds_its_env_after_the_aliases_in_contract_order() {
    let p = otel(json!({
        SENDS: "queue/orders",
        "sbmesh.io/env-aliases": "sdk",
        "sbmesh.io/otlp-endpoint": "http://otel-collector.observability:4317",
    }));
    let (out, _) = run(&p).unwrap();
    let mut want = identity_env();
    want.extend(rows(&[
        ("AZURE_SERVICEBUS_QUEUE_NAMES", "orders"),
        ("AZURE_SERVICEBUS_SENDS", "queue/orders"),
        (
            "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
            "payments-prod.servicebus.windows.net",
        ),
    ]));
    want.extend(telemetry_rows(
        "orders",
        "app",
        Some("http://otel-collector.observability:4317"),
    ));
    assert_eq!(env(&out, APP), want);
}

#[test]
fn pod_name_comes_from_the_downward_api() {
    let p = otel(json!({}));
    let (out, m) = run(&p).unwrap();
    let entry = out["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SBMESH_POD_NAME")
        .unwrap();
    assert_eq!(
        entry,
        &json!({"name": "SBMESH_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
    // The bytes the webhook sends give the same pod.
    let wire: json_patch::Patch = serde_json::from_slice(&m.patch.to_json()).unwrap();
    let mut from_wire = p.clone();
    json_patch::patch(&mut from_wire, &wire).unwrap();
    assert_eq!(from_wire, out);
}

#[test]
fn service_name_is_the_app_kubernetes_io_name_label_first() {
    let mut p = otel(json!({}));
    p["metadata"]["labels"] = json!({"app.kubernetes.io/name": "checkout", "app": "orders"});
    let (out, _) = run(&p).unwrap();
    assert_eq!(
        env_value(&out, APP, "OTEL_SERVICE_NAME").as_deref(),
        Some("checkout")
    );
}

#[test]
fn service_name_falls_back_to_the_app_label() {
    let mut p = otel(json!({}));
    p["metadata"]["labels"] = json!({"app": "orders", "team": "payments"});
    let (out, _) = run(&p).unwrap();
    assert_eq!(
        env_value(&out, APP, "OTEL_SERVICE_NAME").as_deref(),
        Some("orders")
    );
}

#[test]
fn service_name_falls_back_to_the_container_name() {
    let mut p = otel(json!({}));
    p["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels")
        .unwrap();
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "worker", "image": "w"}));
    let (out, _) = run(&p).unwrap();
    assert_eq!(
        env_value(&out, APP, "OTEL_SERVICE_NAME").as_deref(),
        Some("app")
    );
    assert_eq!(
        env_value(&out, "/spec/containers/1", "OTEL_SERVICE_NAME").as_deref(),
        Some("worker")
    );
}

#[test]
fn resource_attributes_name_the_namespace_the_pod_and_each_container() {
    let mut p = otel(json!({}));
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    let (out, _) = run(&p).unwrap();
    assert_eq!(
        env_value(&out, APP, "OTEL_RESOURCE_ATTRIBUTES").as_deref(),
        Some("k8s.namespace.name=payments,k8s.pod.name=$(SBMESH_POD_NAME),k8s.container.name=app")
    );
    assert_eq!(
        env_value(&out, "/spec/initContainers/0", "OTEL_RESOURCE_ATTRIBUTES").as_deref(),
        Some(
            "k8s.namespace.name=payments,k8s.pod.name=$(SBMESH_POD_NAME),k8s.container.name=migrate"
        )
    );
}

#[test]
fn telemetry_env_differs_per_container_and_reaches_init_containers() {
    let mut p = otel(json!({}));
    p["metadata"].as_object_mut().unwrap().remove("labels");
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "worker", "image": "w"}));
    let (out, _) = run(&p).unwrap();
    for (pointer, name) in [
        ("/spec/initContainers/0", "migrate"),
        ("/spec/containers/0", "app"),
        ("/spec/containers/1", "worker"),
    ] {
        let all = env(&out, pointer);
        assert_eq!(all[all.len() - 5..], telemetry_rows(name, name, None)[..]);
    }
}

#[test]
fn telemetry_reaches_only_containers_in_scope() {
    let mut p = otel(json!({"sbmesh.io/skip-containers": "sidecar"}));
    p["spec"]["containers"].as_array_mut().unwrap().extend([
        json!({"name": "sidecar", "image": "s"}),
        json!({"name": "istio-proxy", "image": "i"}),
    ]);
    let (out, _) = run(&p).unwrap();
    assert!(has_telemetry(&out, "/spec/containers/0"));
    assert!(!has_telemetry(&out, "/spec/containers/1"));
    assert!(!has_telemetry(&out, "/spec/containers/2"));
}

#[test]
fn telemetry_is_read_from_the_service_account_the_namespace_and_the_config() {
    let on = map(&[("sbmesh.io/telemetry", "OTEL")]);
    let sa_ctx = cluster(&on, &NONE, IdentityMode::Inject);
    let ns_ctx = cluster(&NONE, &on, IdentityMode::Inject);
    let otel_config = Defaults {
        telemetry: Telemetry::Otel,
        ..defaults()
    };
    for (ctx, d) in [
        (sa_ctx, defaults()),
        (ns_ctx, defaults()),
        (offline(), otel_config.clone()),
    ] {
        let (out, _) = admitted(&pod(json!({})), &ctx, &d);
        assert!(has_telemetry(&out, APP));
    }
    // The pod's own `off` wins over the config's `otel`.
    let (out, _) = admitted(
        &pod(json!({"sbmesh.io/telemetry": "off"})),
        &offline(),
        &otel_config,
    );
    assert!(!has_telemetry(&out, APP));
}

#[test]
fn otlp_endpoint_env_only_when_one_is_set() {
    let (out, _) = run(&otel(json!({}))).unwrap();
    assert_eq!(env_value(&out, APP, "OTEL_EXPORTER_OTLP_ENDPOINT"), None);
    // From the config.
    let d = Defaults {
        otlp_endpoint: Some("https://collector.example:4318".parse().unwrap()),
        ..defaults()
    };
    let (out, _) = admitted(&otel(json!({})), &offline(), &d);
    assert_eq!(
        env_value(&out, APP, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("https://collector.example:4318")
    );
    // From the Namespace.
    let ns = map(&[("sbmesh.io/otlp-endpoint", "http://ns-collector:4317")]);
    let (out, _) = admitted(&otel(json!({})), &in_namespace(&ns), &d);
    assert_eq!(
        env_value(&out, APP, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://ns-collector:4317")
    );
}

#[test]
fn telemetry_off_adds_no_telemetry_env() {
    for p in [pod(json!({})), pod(json!({"sbmesh.io/telemetry": "Off"}))] {
        let (out, _) = run(&p).unwrap();
        assert!(!has_telemetry(&out, APP));
        let s = status(&out);
        let names: Vec<&str> = s["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(names.iter().all(|n| !TELEMETRY_NAMES.contains(n)), "{s}");
    }
}

#[test]
fn users_own_telemetry_values_are_kept_silently_unlike_other_env() {
    let mut p = otel(json!({"sbmesh.io/otlp-endpoint": "http://collector:4317"}));
    let theirs = json!([
        {"name": "SBMESH_POD_NAME", "value": "fixed"},
        {"name": "OTEL_SERVICE_NAME", "value": "their-service"},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "team=payments"},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://their-collector:4317"},
        {"name": "AZURE_EXPERIMENTAL_ENABLE_ACTIVITY_SOURCE", "value": "false"},
        {"name": "AZURE_SDK_TRACING_IMPLEMENTATION", "valueFrom": {"configMapKeyRef": {"name": "t", "key": "impl"}}},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.example/"},
    ]);
    p["spec"]["containers"][0]["env"] = theirs.clone();
    let (out, m) = run(&p).unwrap();
    let all = out["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(
        all[..7],
        theirs.as_array().unwrap()[..],
        "kept as they were"
    );
    for name in TELEMETRY_NAMES {
        assert_eq!(
            env_names(&out, APP).iter().filter(|n| *n == name).count(),
            1,
            "{name}"
        );
        assert!(
            m.warnings.iter().all(|w| !w.contains(name)),
            "{name}: {:?}",
            m.warnings
        );
    }
    // A name outside telemetry still warns when its value differs.
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("AZURE_AUTHORITY_HOST")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn invalid_telemetry_value_is_denied() {
    let message = denied(
        &pod(json!({"sbmesh.io/telemetry": "jaeger"})),
        Reason::InvalidValue,
    );
    assert!(
        message.contains("sbmesh.io/telemetry") && message.contains("\"jaeger\""),
        "{message}"
    );
}

#[test]
fn invalid_otlp_endpoint_is_denied_even_with_telemetry_off() {
    for endpoint in [
        "otel-collector:4317",
        "ftp://collector:21",
        "http://",
        "http://a b",
    ] {
        for telemetry in ["otel", "off"] {
            let p =
                pod(json!({"sbmesh.io/telemetry": telemetry, "sbmesh.io/otlp-endpoint": endpoint}));
            let message = denied(&p, Reason::InvalidValue);
            assert!(
                message.contains("sbmesh.io/otlp-endpoint") && message.contains(endpoint),
                "{message}"
            );
        }
    }
    // Also when telemetry is off by default and the endpoint stands on the Namespace.
    let ns = map(&[("sbmesh.io/otlp-endpoint", "collector")]);
    let message = refused(
        &pod(json!({})),
        &in_namespace(&ns),
        &defaults(),
        Reason::InvalidValue,
    );
    assert!(message.contains("Namespace payments"), "{message}");
}

#[test]
fn status_env_lists_the_telemetry_names() {
    let (out, _) = run(&otel(json!({"sbmesh.io/otlp-endpoint": "http://c:4317"}))).unwrap();
    let s = status(&out);
    let names: Vec<&str> = s["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names[names.len() - 6..], TELEMETRY_NAMES[..]);
    // Without an endpoint, its name is not listed.
    let (out, _) = run(&otel(json!({}))).unwrap();
    let s = status(&out);
    assert!(
        !s["env"]
            .as_array()
            .unwrap()
            .contains(&json!("OTEL_EXPORTER_OTLP_ENDPOINT")),
        "{s}"
    );
    assert!(
        s["env"]
            .as_array()
            .unwrap()
            .contains(&json!("OTEL_SERVICE_NAME"))
    );
}

#[test]
fn readmitting_telemetry_output_patches_nothing() {
    let mut p = otel(json!({SENDS: "queue/a", RECEIVES: "topic/t:s"}));
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    for mode in [IdentityMode::Inject, IdentityMode::Delegate] {
        let ctx = Context::offline(mode);
        let (out, _) = admitted(&p, &ctx, &defaults());
        let (again, m) = admitted(&out, &ctx, &defaults());
        assert!(m.patch.is_empty(), "{:#?}", m.patch);
        assert_eq!(again, out);
    }
}

#[test]
fn readmission_after_the_api_server_defaults_field_ref_api_version_patches_nothing() {
    let (mut out, _) = run(&otel(json!({}))).unwrap();
    let entry = out["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["name"] == "SBMESH_POD_NAME")
        .unwrap();
    entry["valueFrom"]["fieldRef"]["apiVersion"] = json!("v1");
    let (again, m) = run(&out).unwrap();
    assert!(m.patch.is_empty(), "{:#?}", m.patch);
    assert_eq!(again, out);
}

#[test]
fn legacy_topics_differing_only_in_case_are_one_topic_for_the_subscription() {
    let (out, _) = run(&pod(json!({
        "sbmesh.io/topics": "events, Events",
        "sbmesh.io/subscription": "audit",
    })))
    .unwrap();
    let e = env(&out, "/spec/containers/0");
    assert!(
        e.contains(&("AZURE_SERVICEBUS_SUBSCRIPTION_NAME".into(), "audit".into())),
        "{e:?}"
    );
    assert!(
        e.contains(&("AZURE_SERVICEBUS_TOPIC_NAMES".into(), "events".into())),
        "{e:?}"
    );
}
