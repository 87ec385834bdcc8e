//! The annotation contract: reads a pod's opt-in and parameters (pod → ServiceAccount →
//! Namespace → webhook config, first hit wins), parses each into a typed value once, and
//! yields an [`InjectionPlan`] or a [`Denial`] that says what is wrong and where to fix it.

pub mod access;
pub mod boundary;
pub mod values;

use std::collections::BTreeMap;

use crate::denial::{
    Conflict, Origin, Places, PolicyViolation, default_service_account_finding, warning,
};
use crate::pod::{Pod, Str, StrMap, raw_str};

pub use crate::denial::{Denial, Reason};

pub use access::{Access, Direction, Entity};
pub use values::{
    ClientId, Cloud, Egress, EntityKind, EntityName, EnvAlias, IdentityMode, IdentityModeSetting,
    OtlpEndpoint, Policy, RuleViolation, ServiceBusNamespace, Telemetry, TenantId, TokenExpiration,
};

/// Annotation and label names of the contract.
pub mod keys {
    pub const PREFIX: &str = "sbmesh.io/";
    pub const INJECT: &str = "sbmesh.io/inject";
    pub const STATUS: &str = "sbmesh.io/status";
    pub const SERVICEBUS_NAMESPACE: &str = "sbmesh.io/servicebus-namespace";
    pub const QUEUES: &str = "sbmesh.io/queues";
    pub const TOPICS: &str = "sbmesh.io/topics";
    pub const SUBSCRIPTION: &str = "sbmesh.io/subscription";
    pub const CLIENT_ID: &str = "sbmesh.io/client-id";
    pub const TENANT_ID: &str = "sbmesh.io/tenant-id";
    pub const TOKEN_EXPIRATION: &str = "sbmesh.io/token-expiration";
    pub const CONTAINERS: &str = "sbmesh.io/containers";
    pub const SKIP_CONTAINERS: &str = "sbmesh.io/skip-containers";
    pub const CLOUD: &str = "sbmesh.io/cloud";
    pub const EGRESS: &str = "sbmesh.io/egress";
    pub const ENV_ALIASES: &str = "sbmesh.io/env-aliases";
    pub const SENDS: &str = "sbmesh.io/sends";
    pub const RECEIVES: &str = "sbmesh.io/receives";
    pub const TELEMETRY: &str = "sbmesh.io/telemetry";
    pub const OTLP_ENDPOINT: &str = "sbmesh.io/otlp-endpoint";

    /// Boundary keys: read from the Namespace only.
    pub const ALLOWED_SERVICEBUS_NAMESPACES: &str = "sbmesh.io/allowed-servicebus-namespaces";
    pub const ALLOWED_ENTITIES: &str = "sbmesh.io/allowed-entities";
    pub const ALLOWED_CLIENT_IDS: &str = "sbmesh.io/allowed-client-ids";

    /// Pod labels that name the service, for `OTEL_SERVICE_NAME`, in precedence order.
    pub const SERVICE_NAME_LABELS: [&str; 2] = ["app.kubernetes.io/name", "app"];

    /// Azure Workload Identity's keys, read from the ServiceAccount (the token expiration also
    /// from the pod, after sbmesh's own key).
    pub const AWI_CLIENT_ID: &str = "azure.workload.identity/client-id";
    pub const AWI_TENANT_ID: &str = "azure.workload.identity/tenant-id";
    pub const AWI_TOKEN_EXPIRATION: &str =
        "azure.workload.identity/service-account-token-expiration";
    /// Azure Workload Identity's pod annotations: skip-containers is read after sbmesh's own
    /// key; the token proxy ones are not supported (a warning).
    pub const AWI_SKIP_CONTAINERS: &str = "azure.workload.identity/skip-containers";
    pub const AWI_INJECT_PROXY_SIDECAR: &str = "azure.workload.identity/inject-proxy-sidecar";
    pub const AWI_PROXY_SIDECAR_PORT: &str = "azure.workload.identity/proxy-sidecar-port";
    /// The workload-identity pod label.
    pub const AWI_USE: &str = "azure.workload.identity/use";

    pub const ISTIO_PROXY_CONFIG: &str = "proxy.istio.io/config";
    pub const ISTIO_EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    pub const ISTIO_NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
    pub const ISTIO_SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
    pub const NS_ISTIO_INJECTION: &str = "istio-injection";
    pub const NS_ISTIO_REV: &str = "istio.io/rev";

    /// Webhook-config settings as messages name them: the config-file key and its flag (each
    /// flag is also an `SBMESH_*` variable). `config.rs` tests that each one is real.
    pub mod settings {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Setting {
            pub key: &'static str,
            pub flag: &'static str,
        }

        pub const SERVICEBUS_NAMESPACE: Setting = Setting {
            key: "servicebusNamespace",
            flag: "--servicebus-namespace",
        };
        pub const CLIENT_ID: Setting = Setting {
            key: "clientId",
            flag: "--client-id",
        };
        pub const TENANT_ID: Setting = Setting {
            key: "tenantId",
            flag: "--tenant-id",
        };
        pub const TOKEN_EXPIRATION: Setting = Setting {
            key: "tokenExpiration",
            flag: "--token-expiration",
        };
        pub const CLOUD: Setting = Setting {
            key: "cloud",
            flag: "--cloud",
        };
        pub const EGRESS: Setting = Setting {
            key: "egress",
            flag: "--egress",
        };
        pub const CONNECTION_STRING_POLICY: Setting = Setting {
            key: "connectionStringPolicy",
            flag: "--connection-string-policy",
        };
        pub const TELEMETRY: Setting = Setting {
            key: "telemetry",
            flag: "--telemetry",
        };
        pub const OTLP_ENDPOINT: Setting = Setting {
            key: "otlpEndpoint",
            flag: "--otlp-endpoint",
        };
        pub const REQUIRE_BOUNDARIES: Setting = Setting {
            key: "requireBoundaries",
            flag: "--require-boundaries",
        };

        /// Every setting named in a message.
        pub const ALL: &[Setting] = &[
            SERVICEBUS_NAMESPACE,
            CLIENT_ID,
            TENANT_ID,
            TOKEN_EXPIRATION,
            CLOUD,
            EGRESS,
            CONNECTION_STRING_POLICY,
            TELEMETRY,
            OTLP_ENDPOINT,
            REQUIRE_BOUNDARIES,
        ];
    }

    /// Every `sbmesh.io/*` key a pod may carry.
    pub const POD_KEYS: &[&str] = &[
        INJECT,
        STATUS,
        SERVICEBUS_NAMESPACE,
        QUEUES,
        TOPICS,
        SUBSCRIPTION,
        CLIENT_ID,
        TENANT_ID,
        TOKEN_EXPIRATION,
        CONTAINERS,
        SKIP_CONTAINERS,
        CLOUD,
        EGRESS,
        ENV_ALIASES,
        SENDS,
        RECEIVES,
        TELEMETRY,
        OTLP_ENDPOINT,
    ];
}

/// The webhook's own parameter defaults (the last place looked in), validated at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub client_id: Option<ClientId>,
    pub tenant_id: Option<TenantId>,
    /// Short name or FQDN; parsed again against the cloud in effect for each pod.
    pub servicebus_namespace: Option<String>,
    pub cloud: Cloud,
    pub egress: Egress,
    pub token_expiration: TokenExpiration,
    pub connection_string_policy: Policy,
    pub require_dedicated_service_account: Policy,
    pub native_sidecar: bool,
    pub mesh_exclude_outbound_ports: Vec<u16>,
    pub telemetry: Telemetry,
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// The boundaries of Namespaces that set none of their own.
    pub boundaries: boundary::Defaults,
    /// A Namespace without a Service Bus namespace boundary (its own or the config's) is refused.
    pub require_boundaries: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            client_id: None,
            tenant_id: None,
            servicebus_namespace: None,
            cloud: Cloud::Public,
            egress: Egress::Mesh,
            token_expiration: TokenExpiration::DEFAULT,
            connection_string_policy: Policy::Deny,
            require_dedicated_service_account: Policy::Warn,
            native_sidecar: false,
            mesh_exclude_outbound_ports: Vec::new(),
            telemetry: Telemetry::Off,
            otlp_endpoint: None,
            boundaries: boundary::Defaults::default(),
            require_boundaries: false,
        }
    }
}

/// What the cluster knows about the pod's ServiceAccount and Namespace. `None` means the place
/// was not consulted (cluster lookups are off), which denial messages say.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub service_account_annotations: Option<&'a BTreeMap<String, String>>,
    pub namespace_annotations: Option<&'a BTreeMap<String, String>>,
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    pub identity_mode: IdentityMode,
}

impl Context<'static> {
    /// No cluster knowledge: only the pod and the webhook config are consulted.
    pub fn offline(identity_mode: IdentityMode) -> Self {
        Self {
            service_account_annotations: None,
            namespace_annotations: None,
            namespace_labels: None,
            identity_mode,
        }
    }
}

/// The federated credential subject: the pod's namespace and ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub namespace: String,
    pub service_account: String,
}

impl Subject {
    pub fn federated(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// Which containers get env and mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(Vec<String>),
    /// The containers to leave out, and the key that named them (`sbmesh.io/skip-containers`,
    /// or Azure Workload Identity's when sbmesh's scope keys are not set).
    Skip {
        names: Vec<String>,
        key: &'static str,
    },
}

/// Everything the mutation needs, resolved and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionPlan {
    pub mode: IdentityMode,
    pub subject: Subject,
    pub client_id: ClientId,
    /// Present in `inject` mode (required there); in `delegate` mode the other webhook owns it.
    pub tenant_id: Option<TenantId>,
    pub cloud: Cloud,
    pub servicebus_namespace: ServiceBusNamespace,
    /// What the workload sends to and receives from (legacy keys folded in).
    pub access: Access,
    pub token_expiration: TokenExpiration,
    pub scope: Scope,
    pub egress: Egress,
    pub env_aliases: Vec<EnvAlias>,
    pub native_sidecar: bool,
    pub mesh_exclude_outbound_ports: Vec<u16>,
    pub connection_string_policy: Policy,
    /// Set when `telemetry: otel`.
    pub telemetry: Option<TelemetryPlan>,
    /// Warnings found while resolving (the mutation adds its own).
    pub warnings: Vec<String>,
}

/// What the telemetry env is made of (DESIGN §8).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryPlan {
    pub endpoint: Option<OtlpEndpoint>,
    /// From the pod's labels; each container's name otherwise.
    pub service_name: Option<String>,
}

/// The outcome of reading the contract off a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The pod did not opt in: admit it unchanged.
    Skip,
    Inject(Box<InjectionPlan>),
}

/// Whether the pod opted in. A value other than true/false is a denial, not silence.
pub fn opted_in(pod: &Pod) -> Result<bool, Denial> {
    let Some(raw) = pod.annotations().and_then(|a| a.raw(keys::INJECT)) else {
        return Ok(false);
    };
    match raw_str(raw) {
        Some(s) => values::parse_bool(&s).map_err(|_| Denial::OptIn {
            value: truncate(&s),
            string: true,
        }),
        None => Err(Denial::OptIn {
            value: truncate(raw.get()),
            string: false,
        }),
    }
}

/// Where a parameter may be set, besides its `sbmesh.io/*` pod annotation.
struct Param {
    key: &'static str,
    /// The parameter may also stand on the ServiceAccount and the Namespace.
    inherited: bool,
    /// Other pod annotation keys, read after `key` (Azure Workload Identity's).
    pod_extra: &'static [&'static str],
    /// Other ServiceAccount annotation keys (Azure Workload Identity's).
    sa_extra: &'static [&'static str],
    /// The webhook config setting, when it has one.
    config: Option<keys::settings::Setting>,
}

const P_NAMESPACE: Param = Param {
    key: keys::SERVICEBUS_NAMESPACE,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: Some(keys::settings::SERVICEBUS_NAMESPACE),
};
const P_CLIENT_ID: Param = Param {
    key: keys::CLIENT_ID,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[keys::AWI_CLIENT_ID],
    config: Some(keys::settings::CLIENT_ID),
};
const P_TENANT_ID: Param = Param {
    key: keys::TENANT_ID,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[keys::AWI_TENANT_ID],
    config: Some(keys::settings::TENANT_ID),
};
const P_TOKEN_EXPIRATION: Param = Param {
    key: keys::TOKEN_EXPIRATION,
    inherited: true,
    pod_extra: &[keys::AWI_TOKEN_EXPIRATION],
    sa_extra: &[keys::AWI_TOKEN_EXPIRATION],
    config: Some(keys::settings::TOKEN_EXPIRATION),
};
const P_CLOUD: Param = Param {
    key: keys::CLOUD,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: Some(keys::settings::CLOUD),
};
const P_EGRESS: Param = Param {
    key: keys::EGRESS,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: Some(keys::settings::EGRESS),
};
const P_QUEUES: Param = Param {
    key: keys::QUEUES,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};
const P_TOPICS: Param = Param {
    key: keys::TOPICS,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};
const P_SUBSCRIPTION: Param = Param {
    key: keys::SUBSCRIPTION,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};
const P_ENV_ALIASES: Param = Param {
    key: keys::ENV_ALIASES,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};
const P_SENDS: Param = Param {
    key: keys::SENDS,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};
const P_RECEIVES: Param = Param {
    key: keys::RECEIVES,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};
const P_TELEMETRY: Param = Param {
    key: keys::TELEMETRY,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: Some(keys::settings::TELEMETRY),
};
const P_OTLP_ENDPOINT: Param = Param {
    key: keys::OTLP_ENDPOINT,
    inherited: true,
    pod_extra: &[],
    sa_extra: &[],
    config: Some(keys::settings::OTLP_ENDPOINT),
};
const P_CONTAINERS: Param = Param {
    key: keys::CONTAINERS,
    inherited: false,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};
const P_SKIP_CONTAINERS: Param = Param {
    key: keys::SKIP_CONTAINERS,
    inherited: false,
    pod_extra: &[],
    sa_extra: &[],
    config: None,
};

/// Reads parameters in resolution order for one pod.
struct Resolver<'a> {
    pod: Option<&'a StrMap<'a>>,
    ctx: &'a Context<'a>,
    subject: &'a Subject,
    /// Warnings for keys that lost to sbmesh's own key for the same thing.
    shadowed: std::cell::RefCell<Vec<String>>,
}

/// Two values of one parameter that say different things (GUIDs and numbers: ignoring case
/// and surrounding blanks).
fn differ(a: &str, b: &str) -> bool {
    !a.trim().eq_ignore_ascii_case(b.trim())
}

impl<'a> Resolver<'a> {
    /// First hit among the annotations (pod → ServiceAccount → Namespace). Within one place,
    /// sbmesh's key comes first; a later key there that says otherwise is named in a warning.
    fn find(&self, p: &Param) -> Result<Option<(Str<'a>, Origin)>, Denial> {
        let mut found: Option<(Str<'a>, &'static str)> = None;
        for k in std::iter::once(&p.key).chain(p.pod_extra) {
            let Some(raw) = self.pod.and_then(|a| a.raw(k)) else {
                continue;
            };
            match (&found, raw_str(raw)) {
                (None, Some(s)) => found = Some((s, k)),
                (None, None) => {
                    return Err(Denial::NotAString {
                        key: k,
                        json: truncate(raw.get()),
                    });
                }
                (Some((winner, wk)), theirs) => {
                    let theirs = theirs.map_or_else(|| raw.get().to_string(), Str::into_owned);
                    if differ(winner, &theirs) {
                        self.shadow(warning(format_args!(
                            "pod annotation {k} = \"{}\" is ignored: pod annotation {wk} = \"{}\" \
                             is set too, and sbmesh's key wins; remove {k}, or give it the same \
                             value",
                            truncate(&theirs),
                            truncate(winner)
                        )));
                    }
                }
            }
        }
        if let Some((s, key)) = found {
            return Ok(Some((s, Origin::Pod { key })));
        }
        if !p.inherited {
            return Ok(None);
        }
        if let Some(sa) = self.ctx.service_account_annotations {
            let mut found: Option<(&'a str, &'static str)> = None;
            for k in std::iter::once(&p.key).chain(p.sa_extra) {
                let Some(v) = sa.get(*k) else { continue };
                match found {
                    None => found = Some((v.as_str(), k)),
                    Some((winner, wk)) if differ(winner, v) => {
                        self.shadow(warning(format_args!(
                            "annotation {k} = \"{}\" of ServiceAccount {}/{} is ignored: its {wk} = \
                             \"{}\" is set too, and sbmesh's key wins; remove {k}, or give it the \
                             same value",
                            truncate(v),
                            self.subject.namespace,
                            self.subject.service_account,
                            truncate(winner)
                        )));
                    }
                    Some(_) => {}
                }
            }
            if let Some((v, key)) = found {
                return Ok(Some((
                    Str::Borrowed(v),
                    Origin::ServiceAccount {
                        key,
                        namespace: self.subject.namespace.clone(),
                        name: self.subject.service_account.clone(),
                    },
                )));
            }
        }
        if let Some(ns) = self.ctx.namespace_annotations
            && let Some(v) = ns.get(p.key)
        {
            return Ok(Some((
                Str::Borrowed(v.as_str()),
                Origin::Namespace {
                    key: p.key,
                    name: self.subject.namespace.clone(),
                },
            )));
        }
        Ok(None)
    }

    fn shadow(&self, w: String) {
        let mut all = self.shadowed.borrow_mut();
        if !all.contains(&w) {
            all.push(w);
        }
    }

    /// Where the parameter may be set, and which of those places were consulted.
    fn places(&self, p: &Param) -> Box<Places> {
        Box::new(Places {
            key: p.key,
            inherited: p.inherited,
            pod_extra: p.pod_extra,
            sa_extra: p.sa_extra,
            config: p.config,
            namespace: self.subject.namespace.clone(),
            service_account: self.subject.service_account.clone(),
            service_account_consulted: self.ctx.service_account_annotations.is_some(),
            namespace_consulted: self.ctx.namespace_annotations.is_some(),
        })
    }

    fn invalid(&self, p: &Param, raw: &str, origin: Origin, rule: RuleViolation) -> Denial {
        Denial::Invalid {
            origin,
            value: truncate(raw),
            rule: rule.0,
            places: self.places(p),
        }
    }

    fn missing(&self, p: &Param, what: &'static str) -> Denial {
        Denial::Missing {
            what,
            places: self.places(p),
        }
    }

    /// Resolves one parameter: annotations, then the config fallback.
    fn get<T>(
        &self,
        p: &Param,
        parse: impl Fn(&str) -> Result<T, RuleViolation>,
        fallback: Option<T>,
    ) -> Result<Option<T>, Denial> {
        match self.find(p)? {
            Some((raw, origin)) => parse(&raw)
                .map(Some)
                .map_err(|r| self.invalid(p, &raw, origin, r)),
            None => Ok(fallback),
        }
    }

    fn list<T>(
        &self,
        p: &Param,
        parse: impl Fn(&str) -> Result<T, RuleViolation>,
    ) -> Result<Vec<T>, Denial> {
        match self.find(p)? {
            None => Ok(Vec::new()),
            Some((raw, origin)) => {
                let mut out = Vec::new();
                for item in values::split_list(&raw) {
                    match parse(item) {
                        Ok(v) => out.push(v),
                        Err(r) => return Err(self.invalid(p, &raw, origin, r)),
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Reads the contract off a pod. `namespace` is `request.namespace` (always set by the API
/// server, unlike `metadata.namespace` of controller-made pods).
pub fn plan(
    pod: &Pod,
    namespace: &str,
    ctx: &Context,
    defaults: &Defaults,
) -> Result<Decision, Denial> {
    if !opted_in(pod)? {
        return Ok(Decision::Skip);
    }
    let annotations = pod.annotations();
    let subject = Subject {
        namespace: namespace.to_string(),
        service_account: pod.service_account_name().to_string(),
    };
    let r = Resolver {
        pod: annotations,
        ctx,
        subject: &subject,
        shadowed: Default::default(),
    };
    let mut warnings = Vec::new();

    let cloud = r
        .get(&P_CLOUD, values::Cloud::parse, Some(defaults.cloud))?
        .unwrap_or_default();

    let servicebus_namespace = match r.find(&P_NAMESPACE)? {
        Some((raw, origin)) => ServiceBusNamespace::parse(&raw, cloud)
            .map_err(|rule| r.invalid(&P_NAMESPACE, &raw, origin, rule))?,
        None => match &defaults.servicebus_namespace {
            Some(raw) => {
                ServiceBusNamespace::parse(raw, cloud).map_err(|rule| Denial::ConfigDoesNotFit {
                    config_key: keys::settings::SERVICEBUS_NAMESPACE.key,
                    value: truncate(raw),
                    cloud,
                    rule: rule.0,
                    pod_key: keys::SERVICEBUS_NAMESPACE,
                })?
            }
            None => return Err(r.missing(&P_NAMESPACE, "Service Bus namespace")),
        },
    };

    let client_id = r
        .get(&P_CLIENT_ID, ClientId::parse, defaults.client_id.clone())?
        .ok_or_else(|| {
            r.missing(
                &P_CLIENT_ID,
                "client id (the Entra application id of the workload identity)",
            )
        })?;

    let mode = ctx.identity_mode;
    let tenant_id = r.get(&P_TENANT_ID, TenantId::parse, defaults.tenant_id.clone())?;
    if mode == IdentityMode::Inject && tenant_id.is_none() {
        return Err(r.missing(&P_TENANT_ID, "tenant id"));
    }
    let token_expiration = r
        .get(
            &P_TOKEN_EXPIRATION,
            TokenExpiration::parse,
            Some(defaults.token_expiration),
        )?
        .unwrap_or_default();
    let egress = r
        .get(&P_EGRESS, Egress::parse, Some(defaults.egress))?
        .unwrap_or(Egress::Mesh);

    let queues = r.list(&P_QUEUES, |s| EntityName::parse(s, EntityKind::Queue))?;
    let mut topics = r.list(&P_TOPICS, |s| EntityName::parse(s, EntityKind::Topic))?;
    // Service Bus compares entity names case-insensitively: `events, Events` is one topic.
    let mut seen = std::collections::HashSet::new();
    topics.retain(|t| seen.insert(t.as_str().to_ascii_lowercase()));
    let subscription = r.get(
        &P_SUBSCRIPTION,
        |s| EntityName::parse(s, EntityKind::Subscription),
        None,
    )?;
    if subscription.is_some() && topics.len() != 1 {
        return Err(Denial::Conflict(Conflict::SubscriptionTopics {
            found: topics.len(),
        }));
    }
    let sends = r.list(&P_SENDS, |s| Entity::parse(s, Direction::Send))?;
    let receives = r.list(&P_RECEIVES, |s| Entity::parse(s, Direction::Receive))?;
    let access = Access::of(access::Intent {
        queues: &queues,
        topics: &topics,
        subscription: subscription.as_ref(),
        sends,
        receives,
    });
    let env_aliases = r.list(&P_ENV_ALIASES, EnvAlias::parse)?;
    let telemetry = r
        .get(&P_TELEMETRY, Telemetry::parse, Some(defaults.telemetry))?
        .unwrap_or(Telemetry::Off);
    // Validated whenever it is set, even with telemetry off.
    let endpoint = r.get(
        &P_OTLP_ENDPOINT,
        OtlpEndpoint::parse,
        defaults.otlp_endpoint.clone(),
    )?;
    let telemetry = (telemetry == Telemetry::Otel).then(|| TelemetryPlan {
        endpoint,
        service_name: keys::SERVICE_NAME_LABELS
            .iter()
            .find_map(|k| pod.label(k).filter(|v| !v.is_empty()))
            .map(|v| v.into_owned()),
    });

    let only = r.find(&P_CONTAINERS)?.map(|(raw, _)| names(&raw));
    let skip = r.find(&P_SKIP_CONTAINERS)?.map(|(raw, _)| names(&raw));
    // Azure Workload Identity's list (`;`-separated, `,` accepted) counts only when neither of
    // sbmesh's scope keys is set.
    let awi_skip = match annotations.and_then(|a| a.raw(keys::AWI_SKIP_CONTAINERS)) {
        None => None,
        Some(raw) => Some(raw_str(raw).ok_or_else(|| Denial::NotAString {
            key: keys::AWI_SKIP_CONTAINERS,
            json: truncate(raw.get()),
        })?),
    };
    let mut awi_skip = awi_skip.map(|raw| names(&raw.replace(';', ",")));
    let scope = match (only, skip) {
        (Some(_), Some(_)) => return Err(Denial::Conflict(Conflict::ContainerScope)),
        (Some(only), None) => Scope::Only(only),
        (None, Some(skip)) => Scope::Skip {
            names: skip,
            key: keys::SKIP_CONTAINERS,
        },
        (None, None) => match awi_skip.take() {
            Some(names) => Scope::Skip {
                names,
                key: keys::AWI_SKIP_CONTAINERS,
            },
            None => Scope::All,
        },
    };
    if let Some(theirs) = awi_skip {
        let same = matches!(&scope, Scope::Skip { names, .. }
            if names.len() == theirs.len() && theirs.iter().all(|n| names.contains(n)));
        if !same {
            let wins = match scope {
                Scope::Only(_) => keys::CONTAINERS,
                _ => keys::SKIP_CONTAINERS,
            };
            warnings.push(warning(format_args!(
                "pod annotation {} is ignored: pod annotation {wins} is set too, and sbmesh's key \
                 wins; remove {}, and say in {wins} which containers get the env",
                keys::AWI_SKIP_CONTAINERS,
                keys::AWI_SKIP_CONTAINERS,
            )));
        }
    }

    let fqdn = servicebus_namespace.fqdn(cloud);
    boundary::check(
        namespace,
        ctx.namespace_annotations,
        &defaults.boundaries,
        defaults.require_boundaries,
        &boundary::Use {
            servicebus_fqdn: &fqdn,
            cloud,
            client_id: &client_id,
            access: &access,
        },
    )
    .map_err(Denial::Boundary)?;

    for key in annotations.into_iter().flat_map(StrMap::keys) {
        if let Some(b) = boundary::Key::ALL.iter().find(|b| b.annotation() == key) {
            warnings.push(ignored_boundary(*b, "on the pod"));
        } else if key.starts_with(keys::PREFIX) && !keys::POD_KEYS.contains(&key) {
            warnings.push(warning(format_args!(
                "{key} is not an sbmesh annotation and is ignored"
            )));
        }
    }

    if let Some(sa) = ctx.service_account_annotations {
        for b in boundary::Key::ALL
            .iter()
            .filter(|b| sa.contains_key(b.annotation()))
        {
            warnings.push(ignored_boundary(
                *b,
                format_args!(
                    "on ServiceAccount {}/{}",
                    subject.namespace, subject.service_account
                ),
            ));
        }
    }

    if subject.service_account == "default" {
        match defaults.require_dedicated_service_account {
            Policy::Deny => {
                return Err(Denial::Policy(PolicyViolation::DefaultServiceAccount {
                    namespace: subject.namespace.clone(),
                }));
            }
            Policy::Warn => {
                warnings.push(warning(default_service_account_finding(&subject.namespace)))
            }
            Policy::Off => {}
        }
    }

    if egress != Egress::None {
        mesh_warnings(pod, ctx, &mut warnings);
    }

    // Azure Workload Identity's token proxy: its webhook adds it, so in `delegate` mode it
    // still does; sbmesh itself never does.
    if mode == IdentityMode::Inject {
        let proxy_asked = pod
            .annotation(keys::AWI_INJECT_PROXY_SIDECAR)
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"));
        let port = pod.annotation(keys::AWI_PROXY_SIDECAR_PORT).is_some();
        let named: Vec<&str> = [
            (proxy_asked, keys::AWI_INJECT_PROXY_SIDECAR),
            (port, keys::AWI_PROXY_SIDECAR_PORT),
        ]
        .into_iter()
        .filter_map(|(set, k)| set.then_some(k))
        .collect();
        if !named.is_empty() {
            let (s, are, them) = if named.len() > 1 {
                ("s", "are", "them")
            } else {
                ("", "is", "the annotation")
            };
            warnings.push(warning(format_args!(
                "pod annotation{s} {} {are} ignored: sbmesh does not add Azure Workload \
                 Identity's token proxy sidecar; SDKs that read AZURE_FEDERATED_TOKEN_FILE (every \
                 current Azure Identity library) do not need it: remove {them}, or update an \
                 application that gets its token only from the proxy",
                named.join(" and ")
            )));
        }
    }

    warnings.extend(r.shadowed.take());

    Ok(Decision::Inject(Box::new(InjectionPlan {
        mode,
        subject,
        client_id,
        tenant_id: if mode == IdentityMode::Inject {
            tenant_id
        } else {
            None
        },
        cloud,
        servicebus_namespace,
        access,
        token_expiration,
        scope,
        egress,
        env_aliases,
        native_sidecar: defaults.native_sidecar,
        mesh_exclude_outbound_ports: defaults.mesh_exclude_outbound_ports.clone(),
        connection_string_policy: defaults.connection_string_policy,
        telemetry,
        warnings,
    })))
}

/// A boundary key where the workload could set it: ignored, and the warning says where
/// boundaries are set.
fn ignored_boundary(key: boundary::Key, place: impl std::fmt::Display) -> String {
    warning(format_args!(
        "{} {place} is ignored: a boundary is set only on the Namespace, by its owners, or in \
         the webhook config ({}), never by the workload it bounds",
        key.annotation(),
        key.config_key()
    ))
}

fn names(raw: &str) -> Vec<String> {
    values::split_list(raw)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The ways the Istio part of the patch can fail to take effect, each with what to change.
/// The Namespace-level one is said only when nothing on the pod already explains it.
fn mesh_warnings(pod: &Pod, ctx: &Context, warnings: &mut Vec<String>) {
    const OR_NONE: &str =
        "or set sbmesh.io/egress: none if this pod is not meant to be in the mesh";
    let before = warnings.len();
    if pod.spec().and_then(|s| s.host_network) == Some(true) {
        warnings.push(warning(format_args!(
            "spec.hostNetwork is true, and Istio injects no sidecar into a pod on the host \
             network, so the Istio annotations sbmesh adds have no effect and Service Bus \
             traffic bypasses the mesh; remove hostNetwork, {OR_NONE}"
        )));
    }
    let label = pod.label(keys::ISTIO_SIDECAR_INJECT);
    let off = match &label {
        Some(v) => v.trim().eq_ignore_ascii_case("false").then_some("label"),
        // Istio reads the annotation only when the label is absent.
        None => pod
            .annotation(keys::ISTIO_SIDECAR_INJECT)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
            .then_some("annotation"),
    };
    if let Some(place) = off {
        warnings.push(warning(format_args!(
            "pod {place} {} is \"false\", so Istio injects no sidecar and the Istio \
             annotations sbmesh adds have no effect; remove that {place} (or set it to \"true\") \
             to put the pod in the mesh, {OR_NONE}",
            keys::ISTIO_SIDECAR_INJECT
        )));
    }
    // After sbmesh's own first pass (its status annotation is there), a sidecar is Istio's
    // injection following sbmesh's, as it should.
    let ours_before = pod.annotation(keys::STATUS).is_some();
    if !ours_before && let Some(list) = istio_proxy_in(pod) {
        warnings.push(warning(format_args!(
            "the pod already has an istio-proxy {list} (injected before sbmesh saw the pod, e.g. \
             by istioctl kube-inject), so the Istio annotations sbmesh adds come too late for \
             that sidecar (holdApplicationUntilProxyStarts: the application may start before \
             its proxy); let Istio's webhook inject the sidecar at admission instead of \
             injecting it beforehand, {OR_NONE}"
        )));
    }
    if warnings.len() == before && label.as_deref() != Some("true") && !namespace_injects(ctx) {
        warnings.push(warning(
            "this pod gets no Istio sidecar (pod label sidecar.istio.io/inject is not \
             \"true\" and its Namespace has neither istio-injection=enabled nor istio.io/rev), so \
             the Istio egress annotations have no effect",
        ));
    }
}

/// Whether the Namespace asks Istio for sidecars. Without Namespace knowledge the benefit of
/// the doubt goes to the mesh.
fn namespace_injects(ctx: &Context) -> bool {
    match ctx.namespace_labels {
        None => true,
        Some(ns) => {
            ns.get(keys::NS_ISTIO_INJECTION).map(String::as_str) == Some("enabled")
                || ns.contains_key(keys::NS_ISTIO_REV)
        }
    }
}

/// "container" or "init container" when the pod already has an `istio-proxy`.
fn istio_proxy_in(pod: &Pod) -> Option<&'static str> {
    let spec = pod.spec()?;
    [
        ("container", &spec.containers),
        ("init container", &spec.init_containers),
    ]
    .into_iter()
    .find_map(|(what, list)| {
        list.get()?
            .iter()
            .any(|c| c.name.get().is_some_and(|n| n == "istio-proxy"))
            .then_some(what)
    })
}

/// Keeps user values in messages short (annotations can be 256 KiB).
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
