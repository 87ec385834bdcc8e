//! Property tests over generated pods: the patch applies, re-running on the result yields zero
//! operations, and every field of the input survives except the listed replacements. Pods with
//! random access sets, boundaries and telemetry also get the verdict DESIGN §7 gives them
//! (computed here from simple rules, independently of sbmesh's matching), the access set §6
//! gives them, and the telemetry env §8 gives them.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use sbmesh::contract::boundary::{self, Key, Patterns};
use sbmesh::contract::{Context, Defaults, IdentityMode, Telemetry};
use sbmesh::denial::Reason;
use support::*;

/// Annotation values sbmesh may replace (all others must survive byte for byte).
const REPLACEABLE: [&str; 4] = [
    "/metadata/labels/azure.workload.identity~1use",
    "/metadata/annotations/proxy.istio.io~1config",
    "/metadata/annotations/traffic.sidecar.istio.io~1excludeOutboundPorts",
    "/metadata/annotations/sbmesh.io~1status",
];

fn unknown_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z ]{0,8}".prop_map(Value::from),
        Just(json!({"nested": {"list": [1, "two", null]}})),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        "[A-Z_]{1,12}",
        Just("AZURE_CLIENT_ID".to_string()),
        Just("AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE".to_string()),
        Just("AZURE_AUTHORITY_HOST".to_string()),
        Just("OTEL_SERVICE_NAME".to_string()),
        Just("SBMESH_POD_NAME".to_string()),
    ];
    (
        name,
        prop_oneof![
            "[ -~]{0,20}".prop_map(|v| json!({"value": v})),
            Just(json!({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
            Just(json!({})),
        ],
    )
        .prop_map(|(n, mut v)| {
            v["name"] = json!(n);
            v
        })
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(env_entry(), 0..8)),
        prop::option::of(prop::collection::vec(("[a-z]{1,6}", "/[a-z]{1,8}"), 0..4)),
        prop::option::of(unknown_value()),
        any::<bool>(),
    )
        .prop_map(move |(env, mounts, extra, our_mount)| {
            let mut c = json!({"name": name, "image": "registry.example/app:1"});
            if let Some(env) = env {
                c["env"] = Value::Array(env);
            }
            let mut ms: Vec<Value> = mounts
                .unwrap_or_default()
                .into_iter()
                .map(|(n, p)| json!({"name": n, "mountPath": p}))
                .collect();
            if our_mount {
                ms.push(json!({"name": "sbmesh-azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}));
            }
            if !ms.is_empty() {
                c["volumeMounts"] = Value::Array(ms);
            }
            if let Some(x) = extra {
                c["x-unknown-field"] = x;
            }
            c
        })
}

fn containers(
    prefix: &'static str,
    range: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(any::<u8>(), range).prop_flat_map(move |seeds| {
        seeds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = match s % 16 {
                    0 => format!("istio-proxy-{prefix}{i}"),
                    1 if i == 0 => "istio-proxy".to_string(),
                    _ => format!("{prefix}{i}"),
                };
                container(name)
            })
            .collect::<Vec<_>>()
    })
}

fn annotations() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of(prop_oneof![Just("mesh"), Just("bypass"), Just("none")]),
        prop::option::of(prop_oneof![
            Just("".to_string()),
            Just("concurrency: 2\n".to_string()),
            Just("{\"tracing\": {\"sampling\": 5}}".to_string()),
            Just("holdApplicationUntilProxyStarts: true".to_string()),
        ]),
        prop::option::of(prop::collection::vec(1u16..=65535, 0..4)),
        prop::option::of(prop_oneof![
            Just("sdk"),
            Just("spring,dotnet"),
            Just("sdk,sdk")
        ]),
        prop::option::of("[a-z]{1,5}"),
        prop::collection::btree_map("[a-z]{1,6}\\.example/[a-z]{1,6}", "[ -~]{0,10}", 0..4),
    )
        .prop_map(|(egress, proxy, ports, aliases, queue, extra)| {
            let mut a = Map::new();
            a.insert("sbmesh.io/inject".into(), json!("true"));
            a.insert("sbmesh.io/client-id".into(), json!(CLIENT_ID));
            a.insert(
                "sbmesh.io/servicebus-namespace".into(),
                json!("payments-prod"),
            );
            if let Some(e) = egress {
                a.insert("sbmesh.io/egress".into(), json!(e));
            }
            if let Some(p) = proxy {
                a.insert("proxy.istio.io/config".into(), json!(p));
            }
            if let Some(ports) = ports {
                let s = ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                a.insert(
                    "traffic.sidecar.istio.io/excludeOutboundPorts".into(),
                    json!(s),
                );
            }
            if let Some(al) = aliases {
                a.insert("sbmesh.io/env-aliases".into(), json!(al));
            }
            if let Some(q) = queue {
                a.insert("sbmesh.io/queues".into(), json!(format!("{q}-orders")));
            }
            for (k, v) in extra {
                a.insert(k, json!(v));
            }
            a
        })
}

/// Azure Workload Identity's pod keys (DESIGN §10) and its label in any case of true.
#[derive(Debug, Clone)]
struct Awi {
    /// Containers (`c<i>`) and init containers (`init<i>`) to skip, and the separator.
    skip: Option<(Vec<String>, &'static str)>,
    /// `azure.workload.identity/service-account-token-expiration` and sbmesh's key.
    expiration: Option<u32>,
    sbmesh_expiration: Option<u32>,
    use_label: Option<&'static str>,
}

impl Awi {
    fn apply(&self, ann: &mut Map<String, Value>, our_volume: bool) {
        if let Some((names, sep)) = &self.skip {
            ann.insert(
                "azure.workload.identity/skip-containers".into(),
                json!(names.join(sep)),
            );
        }
        // A volume of ours already in the pod holds 3600 seconds: another value is a denial.
        let fit = |e: u32| if our_volume { 3600 } else { e };
        if let Some(e) = self.expiration {
            ann.insert(
                "azure.workload.identity/service-account-token-expiration".into(),
                json!(fit(e).to_string()),
            );
        }
        if let Some(e) = self.sbmesh_expiration {
            ann.insert(
                "sbmesh.io/token-expiration".into(),
                json!(fit(e).to_string()),
            );
        }
    }
}

fn awi() -> impl Strategy<Value = Awi> {
    let name = prop_oneof![
        (0usize..21).prop_map(|i| format!("c{i}")),
        (0usize..20).prop_map(|i| format!("init{i}")),
    ];
    (
        prop::option::of((
            prop::collection::vec(name, 0..4),
            prop_oneof![Just(";"), Just(","), Just(" ; ")],
        )),
        prop::option::of(3600u32..=86400),
        prop::option::of(3600u32..=86400),
        prop::option::of(prop_oneof![Just("true"), Just("True"), Just("TRUE")]),
    )
        .prop_map(|(skip, expiration, sbmesh_expiration, use_label)| Awi {
            skip,
            expiration,
            sbmesh_expiration,
            use_label,
        })
}

fn pod_strategy() -> impl Strategy<Value = Value> {
    (
        annotations(),
        prop::option::of(prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..4)),
        containers("c", 1..21),
        prop::option::of(containers("init", 0..20)),
        prop::option::of(prop::collection::vec("[a-z]{1,8}", 0..4)),
        prop::option::of(unknown_value()),
        any::<bool>(),
        awi(),
    )
        .prop_map(|(mut ann, labels, cs, inits, vols, extra, our_volume, awi)| {
            awi.apply(&mut ann, our_volume);
            let mut p = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "gen-", "annotations": ann},
                "spec": {"serviceAccountName": "orders", "containers": cs},
            });
            if let Some(l) = labels {
                p["metadata"]["labels"] = json!(l);
            }
            if let Some(v) = awi.use_label {
                if !p["metadata"]["labels"].is_object() {
                    p["metadata"]["labels"] = json!({});
                }
                p["metadata"]["labels"]["azure.workload.identity/use"] = json!(v);
            }
            if let Some(i) = inits {
                p["spec"]["initContainers"] = Value::Array(i);
            }
            let mut volumes: Vec<Value> = vols
                .unwrap_or_default()
                .into_iter()
                .map(|n| json!({"name": format!("v-{n}"), "emptyDir": {}}))
                .collect();
            if our_volume {
                volumes.push(json!({"name": "sbmesh-azure-identity-token", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}}));
            }
            if !volumes.is_empty() {
                p["spec"]["volumes"] = Value::Array(volumes);
            }
            if let Some(x) = extra {
                p["spec"]["x-unknown-spec-field"] = x.clone();
                p["metadata"]["x-unknown-meta-field"] = x;
            }
            p
        })
}

/// Every leaf of `before` (by JSON pointer) is equal in `after`, except allowed replacements.
fn assert_survives(before: &Value, after: &Value, pointer: &str) {
    if REPLACEABLE.contains(&pointer) {
        return;
    }
    match before {
        Value::Object(m) => {
            for (k, v) in m {
                let child = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                assert_survives(v, after, &child);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                assert_survives(v, after, &format!("{pointer}/{i}"));
            }
        }
        leaf => assert_eq!(
            after.pointer(pointer),
            Some(leaf),
            "field {pointer} changed"
        ),
    }
}

fn check(pod: &Value, mode: IdentityMode) {
    let d = Defaults {
        mesh_exclude_outbound_ports: vec![15020],
        ..defaults()
    };
    let out = check_with(pod, &Context::offline(mode), &d);
    check_awi_skip(pod, &out);
}

/// Containers named in Azure Workload Identity's skip-containers (`;` or `,` separated) keep
/// their env and mounts as they were; the use label ends up exactly "true".
fn check_awi_skip(pod: &Value, out: &Value) {
    assert_eq!(
        out["metadata"]["labels"]["azure.workload.identity/use"], "true",
        "{pod:#}"
    );
    let Some(list) = annotation(pod, "azure.workload.identity/skip-containers") else {
        return;
    };
    let skipped: Vec<&str> = list.split([';', ',']).map(str::trim).collect();
    for field in ["initContainers", "containers"] {
        for (i, c) in pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if skipped.contains(&c["name"].as_str().unwrap()) {
                let after = &out["spec"][field][i];
                assert_eq!(after["env"], c["env"], "{field}/{i} env\n{pod:#}");
                assert_eq!(
                    after["volumeMounts"], c["volumeMounts"],
                    "{field}/{i} mounts"
                );
            }
        }
    }
}

/// Admits `pod`, checks that the patch applies, keeps every field, puts parents before
/// children and is idempotent; returns the patched pod.
fn check_with(pod: &Value, ctx: &Context, d: &Defaults) -> Value {
    let (out, m) = run_with(pod, ctx, d).unwrap_or_else(|e| panic!("denied: {e}\n{pod:#}"));
    assert_survives(pod, &out, "");
    let (again, m2) = run_with(&out, ctx, d).unwrap();
    assert!(
        m2.patch.0.is_empty(),
        "second round patched: {:#?}",
        m2.patch
    );
    assert_eq!(again, out);
    // Parents come before children: no op's path lies under a path added by a later op.
    let paths = paths(&m);
    for (i, op) in paths.iter().enumerate() {
        for later in &paths[i + 1..] {
            assert!(
                !op.starts_with(&format!("{later}/")),
                "{op:?} before its parent {later:?}"
            );
        }
    }
    out
}

// ---------------------------------------------------------------- access, boundaries, telemetry

/// Queue and topic names (they may hold '/') and subscription names that items and boundary
/// patterns are drawn from.
static NAMES: [&str; 6] = [
    "orders",
    "orders/eu",
    "billing",
    "Events",
    "audit.log",
    "a_b-c",
];
static SUBSCRIPTIONS: [&str; 3] = ["s1", "mail", "Audit"];

/// Service Bus namespace boundary items, and whether each allows the generated pods' bus
/// (`payments-prod`, public cloud).
static BUS_PATTERNS: [(&str, bool); 9] = [
    ("payments-prod", true),
    ("PAYMENTS-*", true),
    ("*-prod", true),
    ("payments-prod.servicebus.windows.net", true),
    ("*.servicebus.windows.net", true),
    ("*", true),
    ("billing-*", false),
    ("payments", false),
    ("payments-prod.servicebus.chinacloudapi.cn", false),
];

/// Client id boundary items, and whether each allows the generated pods' client id.
static CLIENT_ID_PATTERNS: [(&str, bool); 4] = [
    (CLIENT_ID, true),
    ("6F0C3A4E-2B9D-4C1E-8F7A-1D2E3F4A5B6C", true),
    ("*", true),
    ("11111111-1111-1111-1111-111111111111", false),
];

const OTLP_ENDPOINT: &str = "http://collector.observability:4317";

/// A name of `pool`, as written or in upper case (Service Bus compares names ignoring case).
fn spelled(pool: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    (prop::sample::select(pool), any::<bool>()).prop_map(|(n, upper)| {
        if upper {
            n.to_uppercase()
        } else {
            n.to_string()
        }
    })
}

/// One item of the access set; a topic is only sent to, a subscription only received from.
#[derive(Debug, Clone)]
enum Item {
    Queue(String),
    Topic(String),
    Subscription(String, String),
}

impl Item {
    fn render(&self) -> String {
        match self {
            Item::Queue(q) => format!("queue/{q}"),
            Item::Topic(t) => format!("topic/{t}"),
            Item::Subscription(t, s) => format!("topic/{t}:{s}"),
        }
    }
}

fn send_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        spelled(&NAMES).prop_map(Item::Queue),
        spelled(&NAMES).prop_map(Item::Topic),
    ]
}

fn receive_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        spelled(&NAMES).prop_map(Item::Queue),
        (spelled(&NAMES), spelled(&SUBSCRIPTIONS)).prop_map(|(t, s)| Item::Subscription(t, s)),
    ]
}

/// Where an inherited parameter stands.
#[derive(Debug, Clone, Copy)]
enum Place {
    Pod,
    ServiceAccount,
    Namespace,
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::Pod),
        Just(Place::ServiceAccount),
        Just(Place::Namespace)
    ]
}

/// What a pod says it uses: the legacy keys (on the pod) and sends/receives (anywhere).
#[derive(Debug, Clone)]
struct Intent {
    queues: Vec<String>,
    topics: Vec<String>,
    /// Only with exactly one legacy topic.
    subscription: Option<String>,
    sends: Vec<Item>,
    sends_at: Place,
    receives: Vec<Item>,
    receives_at: Place,
}

fn intent() -> impl Strategy<Value = Intent> {
    (
        prop::collection::vec(spelled(&NAMES), 0..3),
        prop::collection::vec(spelled(&NAMES), 0..3),
        prop::option::of(spelled(&SUBSCRIPTIONS)),
        prop::collection::vec(send_item(), 0..4),
        place(),
        prop::collection::vec(receive_item(), 0..4),
        place(),
    )
        .prop_map(
            |(queues, topics, subscription, sends, sends_at, receives, receives_at)| {
                let subscription = subscription.filter(|_| topics.len() == 1);
                Intent {
                    queues,
                    topics,
                    subscription,
                    sends,
                    sends_at,
                    receives,
                    receives_at,
                }
            },
        )
}

impl Intent {
    /// The access set as DESIGN §6 builds it: sends are the legacy queues and topics, then
    /// `sends`; receives are the legacy queues and subscription, then `receives`; duplicates
    /// dropped ignoring case, the first spelling kept.
    fn access(&self) -> (Vec<Item>, Vec<Item>) {
        let queues = self.queues.iter().cloned().map(Item::Queue);
        let sends = queues
            .clone()
            .chain(self.topics.iter().cloned().map(Item::Topic))
            .chain(self.sends.iter().cloned());
        let legacy = self
            .subscription
            .iter()
            .map(|s| Item::Subscription(self.topics[0].clone(), s.clone()));
        let receives = queues.chain(legacy).chain(self.receives.iter().cloned());
        (dedupe(sends), dedupe(receives))
    }
}

fn dedupe(items: impl Iterator<Item = Item>) -> Vec<Item> {
    let mut seen = Vec::new();
    items
        .filter(|i| {
            let key = i.render().to_ascii_lowercase();
            let new = !seen.contains(&key);
            seen.push(key);
            new
        })
        .collect()
}

fn join(items: &[Item]) -> String {
    items
        .iter()
        .map(Item::render)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A glob of the simplest two kinds: a name, or a name's prefix followed by `*`.
#[derive(Debug, Clone)]
struct Glob {
    text: String,
    prefix: bool,
}

impl Glob {
    fn render(&self) -> String {
        if self.prefix {
            format!("{}*", self.text)
        } else {
            self.text.clone()
        }
    }

    fn matches(&self, name: &str) -> bool {
        let (glob, name) = (self.text.to_ascii_lowercase(), name.to_ascii_lowercase());
        if self.prefix {
            name.starts_with(&glob)
        } else {
            name == glob
        }
    }
}

fn glob(pool: &'static [&'static str]) -> impl Strategy<Value = Glob> + Clone {
    (spelled(pool), any::<bool>(), 0usize..10).prop_map(|(name, prefix, cut)| Glob {
        text: if prefix {
            name[..cut.min(name.len())].to_string()
        } else {
            name
        },
        prefix,
    })
}

#[derive(Debug, Clone)]
enum EntityPattern {
    Any,
    Queue(Glob),
    /// The topic and all its subscriptions.
    Topic(Glob),
    /// Those subscriptions only.
    Subscription(Glob, Glob),
}

impl EntityPattern {
    fn render(&self) -> String {
        match self {
            EntityPattern::Any => "*".into(),
            EntityPattern::Queue(g) => format!("queue/{}", g.render()),
            EntityPattern::Topic(g) => format!("topic/{}", g.render()),
            EntityPattern::Subscription(t, s) => format!("topic/{}:{}", t.render(), s.render()),
        }
    }

    /// DESIGN §7: a send to a topic needs a topic pattern without `:`; a receive from a
    /// subscription is allowed by either topic pattern.
    fn allows(&self, item: &Item) -> bool {
        match (self, item) {
            (EntityPattern::Any, _) => true,
            (EntityPattern::Queue(g), Item::Queue(q)) => g.matches(q),
            (EntityPattern::Topic(g), Item::Topic(t) | Item::Subscription(t, _)) => g.matches(t),
            (EntityPattern::Subscription(gt, gs), Item::Subscription(t, s)) => {
                gt.matches(t) && gs.matches(s)
            }
            _ => false,
        }
    }
}

fn entity_pattern() -> impl Strategy<Value = EntityPattern> + Clone {
    prop_oneof![
        1 => Just(EntityPattern::Any),
        4 => glob(&NAMES).prop_map(EntityPattern::Queue),
        4 => glob(&NAMES).prop_map(EntityPattern::Topic),
        4 => (glob(&NAMES), glob(&SUBSCRIPTIONS)).prop_map(|(t, s)| EntityPattern::Subscription(t, s)),
    ]
}

/// A pattern that covers `item`, of a form `seed` picks (exact or prefix, upper or lower
/// case, and for a subscription its topic or the subscription itself).
fn covering(item: &Item, seed: u8) -> EntityPattern {
    let g = |n: &str| Glob {
        text: match (seed & 1 == 1, seed & 2 == 2) {
            (false, false) => n.to_string(),
            (true, false) => n.to_uppercase(),
            (_, true) => n[..n.len() / 2].to_string(),
        },
        prefix: seed & 2 == 2,
    };
    match item {
        Item::Queue(q) => EntityPattern::Queue(g(q)),
        Item::Topic(t) => EntityPattern::Topic(g(t)),
        Item::Subscription(t, _) if seed & 4 == 0 => EntityPattern::Topic(g(t)),
        Item::Subscription(t, s) => EntityPattern::Subscription(g(t), g(s)),
    }
}

/// One boundary key: the config's list and the Namespace's (each `None` when not set).
#[derive(Debug, Clone)]
struct Bound<P> {
    config: Option<Vec<P>>,
    namespace: Option<Vec<P>>,
}

impl<P> Bound<P> {
    /// The Namespace's value replaces the config's; no merging.
    fn in_effect(&self) -> Option<&[P]> {
        self.namespace.as_deref().or(self.config.as_deref())
    }
}

fn bound<P: std::fmt::Debug + Clone>(
    item: impl Strategy<Value = P> + Clone,
) -> impl Strategy<Value = Bound<P>> {
    (
        prop::option::weighted(0.4, prop::collection::vec(item.clone(), 0..4)),
        prop::option::weighted(0.4, prop::collection::vec(item, 0..4)),
    )
        .prop_map(|(config, namespace)| Bound { config, namespace })
}

fn config_patterns(key: Key, items: &Option<Vec<String>>) -> Option<Patterns> {
    items
        .as_ref()
        .map(|i| Patterns::parse_config(key, i).expect("generated patterns parse"))
}

#[derive(Debug, Clone)]
struct TelemetrySetting {
    config_on: bool,
    /// The pod's `sbmesh.io/telemetry`.
    pod: Option<&'static str>,
    endpoint: bool,
    name_label: Option<String>,
    app_label: Option<String>,
}

fn telemetry() -> impl Strategy<Value = TelemetrySetting> {
    (
        any::<bool>(),
        prop::option::of(prop_oneof![Just("otel"), Just("OTel"), Just("off")]),
        any::<bool>(),
        prop::option::of("[a-z][a-z0-9-]{0,8}"),
        prop::option::of("[a-z][a-z0-9-]{0,8}"),
    )
        .prop_map(
            |(config_on, pod, endpoint, name_label, app_label)| TelemetrySetting {
                config_on,
                pod,
                endpoint,
                name_label,
                app_label,
            },
        )
}

impl TelemetrySetting {
    fn on(&self) -> bool {
        self.pod
            .map_or(self.config_on, |v| v.eq_ignore_ascii_case("otel"))
    }
}

/// A generated pod with its ServiceAccount, Namespace and config, and what the contract says
/// of it.
#[derive(Debug)]
struct Scenario {
    pod: Value,
    service_account: BTreeMap<String, String>,
    namespace: BTreeMap<String, String>,
    defaults: Defaults,
    mode: IdentityMode,
    /// Every item, the bus and the client id are inside the boundaries in effect (and a bus
    /// boundary is set when one is required).
    inside: bool,
    sends: Vec<Item>,
    receives: Vec<Item>,
    telemetry: bool,
    endpoint: bool,
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    mut pod: Value,
    intent: Intent,
    mut entities: Bound<EntityPattern>,
    cover: Option<Vec<u8>>,
    buses: Bound<usize>,
    client_ids: Bound<usize>,
    require: bool,
    tel: TelemetrySetting,
    delegate: bool,
) -> Scenario {
    let mut service_account = BTreeMap::new();
    let mut namespace = BTreeMap::new();
    let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
    annotations.remove("sbmesh.io/queues");
    for (key, list) in [
        ("sbmesh.io/queues", intent.queues.join(", ")),
        ("sbmesh.io/topics", intent.topics.join(", ")),
        (
            "sbmesh.io/subscription",
            intent.subscription.clone().unwrap_or_default(),
        ),
    ] {
        if !list.is_empty() {
            annotations.insert(key.into(), json!(list));
        }
    }
    for (key, items, at) in [
        ("sbmesh.io/sends", &intent.sends, intent.sends_at),
        ("sbmesh.io/receives", &intent.receives, intent.receives_at),
    ] {
        if items.is_empty() {
            continue;
        }
        let list = join(items);
        match at {
            Place::Pod => {
                annotations.insert(key.into(), json!(list));
            }
            Place::ServiceAccount => {
                service_account.insert(key.to_string(), list);
            }
            Place::Namespace => {
                namespace.insert(key.to_string(), list);
            }
        }
    }
    if let Some(t) = tel.pod {
        annotations.insert("sbmesh.io/telemetry".into(), json!(t));
    }
    for (key, value) in [
        ("app.kubernetes.io/name", &tel.name_label),
        ("app", &tel.app_label),
    ] {
        if let Some(v) = value {
            if !pod["metadata"]["labels"].is_object() {
                pod["metadata"]["labels"] = json!({});
            }
            pod["metadata"]["labels"][key] = json!(v);
        }
    }

    // Most random boundaries leave some item out; a covering one gets a pattern for every
    // item of the access set but (perhaps) one, so that pods inside are common too.
    let (sends, receives) = intent.access();
    if let Some(seeds) = cover {
        let items: Vec<&Item> = sends.iter().chain(&receives).collect();
        let skip = usize::from(seeds[0]) % (2 * items.len() + 1);
        let extra = items
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(i, item)| covering(item, seeds[(i + 1) % seeds.len()]));
        if let Some(l) = entities.namespace.as_mut().or(entities.config.as_mut()) {
            l.extend(extra);
        }
    }

    let bus_items = |l: &Vec<usize>| -> Vec<String> {
        l.iter().map(|i| BUS_PATTERNS[*i].0.to_string()).collect()
    };
    let client_items = |l: &Vec<usize>| -> Vec<String> {
        l.iter()
            .map(|i| CLIENT_ID_PATTERNS[*i].0.to_string())
            .collect()
    };
    let entity_items =
        |l: &Vec<EntityPattern>| -> Vec<String> { l.iter().map(EntityPattern::render).collect() };
    for (key, items) in [
        (
            "sbmesh.io/allowed-servicebus-namespaces",
            buses.namespace.as_ref().map(bus_items),
        ),
        (
            "sbmesh.io/allowed-client-ids",
            client_ids.namespace.as_ref().map(client_items),
        ),
        (
            "sbmesh.io/allowed-entities",
            entities.namespace.as_ref().map(entity_items),
        ),
    ] {
        if let Some(items) = items {
            namespace.insert(key.to_string(), items.join(", "));
        }
    }
    let defaults = Defaults {
        mesh_exclude_outbound_ports: vec![15020],
        telemetry: if tel.config_on {
            Telemetry::Otel
        } else {
            Telemetry::Off
        },
        otlp_endpoint: tel.endpoint.then(|| OTLP_ENDPOINT.parse().unwrap()),
        boundaries: boundary::Defaults {
            servicebus_namespaces: config_patterns(
                Key::ServicebusNamespaces,
                &buses.config.as_ref().map(bus_items),
            ),
            entities: config_patterns(Key::Entities, &entities.config.as_ref().map(entity_items)),
            client_ids: config_patterns(
                Key::ClientIds,
                &client_ids.config.as_ref().map(client_items),
            ),
        },
        require_boundaries: require,
        ..defaults()
    };

    // The verdict, from DESIGN §7's rules.
    let bus_ok = match buses.in_effect() {
        None => !require,
        Some(l) => l.iter().any(|i| BUS_PATTERNS[*i].1),
    };
    let client_ok = client_ids
        .in_effect()
        .is_none_or(|l| l.iter().any(|i| CLIENT_ID_PATTERNS[*i].1));
    let entities_ok = entities.in_effect().is_none_or(|l| {
        sends
            .iter()
            .chain(&receives)
            .all(|item| l.iter().any(|p| p.allows(item)))
    });

    Scenario {
        pod,
        service_account,
        namespace,
        defaults,
        mode: if delegate {
            IdentityMode::Delegate
        } else {
            IdentityMode::Inject
        },
        inside: bus_ok && client_ok && entities_ok,
        sends,
        receives,
        telemetry: tel.on(),
        endpoint: tel.endpoint,
    }
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        pod_strategy(),
        intent(),
        bound(entity_pattern()),
        prop::option::weighted(0.6, prop::collection::vec(any::<u8>(), 8)),
        bound(0..BUS_PATTERNS.len()),
        bound(0..CLIENT_ID_PATTERNS.len()),
        prop::bool::weighted(0.2),
        telemetry(),
        any::<bool>(),
    )
        .prop_map(
            |(pod, intent, entities, cover, buses, client_ids, require, tel, delegate)| {
                scenario(
                    pod, intent, entities, cover, buses, client_ids, require, tel, delegate,
                )
            },
        )
}

impl Scenario {
    fn context(&self) -> Context<'_> {
        Context {
            service_account_annotations: Some(&self.service_account),
            namespace_annotations: Some(&self.namespace),
            namespace_labels: None,
            identity_mode: self.mode,
        }
    }

    fn check(&self) {
        let ctx = self.context();
        match run_with(&self.pod, &ctx, &self.defaults) {
            Err(e) if self.inside => panic!("denied a pod inside its boundaries: {e}\n{self:#?}"),
            Err(e) => assert_eq!(e.reason(), Reason::Boundary, "{e}\n{self:#?}"),
            Ok((_, m)) if !self.inside => {
                panic!("admitted a pod outside its boundaries: {m:#?}\n{self:#?}")
            }
            Ok(_) => {
                let out = check_with(&self.pod, &ctx, &self.defaults);
                self.check_status(&out);
                self.check_telemetry(&out);
            }
        }
    }

    /// The status lists the access set, each list omitted when empty.
    fn check_status(&self, out: &Value) {
        let status: Value =
            serde_json::from_str(annotation(out, "sbmesh.io/status").unwrap()).unwrap();
        for (key, items) in [("sends", &self.sends), ("receives", &self.receives)] {
            let want = (!items.is_empty())
                .then(|| json!(items.iter().map(Item::render).collect::<Vec<_>>()));
            assert_eq!(status.get(key), want.as_ref(), "{key}\n{self:#?}");
        }
    }

    /// Each container in scope gets each telemetry entry it lacks, with its own values; an
    /// entry the user has is kept as it was; nothing is added with telemetry off.
    fn check_telemetry(&self, out: &Value) {
        let labels = &self.pod["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str().filter(|v| !v.is_empty());
        for list in ["initContainers", "containers"] {
            let Some(containers) = self.pod["spec"][list].as_array() else {
                continue;
            };
            for (i, c) in containers.iter().enumerate() {
                let name = c["name"].as_str().unwrap();
                let skipped = annotation(&self.pod, "azure.workload.identity/skip-containers")
                    .is_some_and(|l| l.split([';', ',']).any(|n| n.trim() == name));
                let in_scope =
                    !skipped && !["istio-proxy", "istio-validation", "istio-init"].contains(&name);
                let service = label("app.kubernetes.io/name")
                    .or(label("app"))
                    .unwrap_or(name);
                let expected = [
                    (
                        "SBMESH_POD_NAME",
                        json!({"name": "SBMESH_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
                    ),
                    (
                        "OTEL_SERVICE_NAME",
                        json!({"name": "OTEL_SERVICE_NAME", "value": service}),
                    ),
                    (
                        "OTEL_RESOURCE_ATTRIBUTES",
                        json!({"name": "OTEL_RESOURCE_ATTRIBUTES", "value": format!(
                            "k8s.namespace.name=payments,k8s.pod.name=$(SBMESH_POD_NAME),k8s.container.name={name}"
                        )}),
                    ),
                    (
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": OTLP_ENDPOINT}),
                    ),
                    (
                        "AZURE_EXPERIMENTAL_ENABLE_ACTIVITY_SOURCE",
                        json!({"name": "AZURE_EXPERIMENTAL_ENABLE_ACTIVITY_SOURCE", "value": "true"}),
                    ),
                    (
                        "AZURE_SDK_TRACING_IMPLEMENTATION",
                        json!({"name": "AZURE_SDK_TRACING_IMPLEMENTATION", "value": "opentelemetry"}),
                    ),
                ];
                let named = |pod: &Value, n: &str| -> Vec<Value> {
                    pod["spec"][list][i]["env"]
                        .as_array()
                        .map(|l| l.iter().filter(|e| e["name"] == n).cloned().collect())
                        .unwrap_or_default()
                };
                for (n, entry) in expected {
                    let before = named(&self.pod, n);
                    let after = named(out, n);
                    let added = self.telemetry
                        && in_scope
                        && before.is_empty()
                        && (n != "OTEL_EXPORTER_OTLP_ENDPOINT" || self.endpoint);
                    let want = if added { vec![entry] } else { before };
                    assert_eq!(after, want, "{list}/{i} {n}\n{self:#?}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn patch_applies_keeps_every_field_and_is_idempotent(pod in pod_strategy()) {
        check(&pod, IdentityMode::Inject);
    }

    #[test]
    fn delegate_mode_patch_applies_and_is_idempotent(pod in pod_strategy()) {
        check(&pod, IdentityMode::Delegate);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, .. ProptestConfig::default() })]

    /// A pod whose every item, bus and client id lies inside its boundaries is admitted with a
    /// patch that applies, keeps every field, is idempotent, records its access set and gives
    /// each container its telemetry env; a pod with anything outside is refused for its
    /// boundary.
    #[test]
    fn access_sets_boundaries_and_telemetry_keep_their_contract(s in scenario_strategy()) {
        s.check();
    }
}
