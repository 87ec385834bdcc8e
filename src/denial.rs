//! Why a pod is refused: a [`Reason`] callers and tests can match on, and the facts the
//! message is built from. The text a person reads (and its `sbmesh: ` prefix) is rendered here
//! and nowhere else.

use std::fmt::{self, Write as _};

use crate::contract::boundary::Violation;
use crate::contract::keys;
use crate::contract::values::Cloud;
use crate::pod::JsonType;

/// The kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A parameter or annotation holds a value that breaks its rule.
    InvalidValue,
    /// A required parameter is set nowhere.
    MissingParameter,
    /// Two settings contradict each other.
    Conflict,
    /// A policy of the webhook config refuses the pod.
    Policy,
    /// The pod already holds something where sbmesh adds its own, and sbmesh never overwrites.
    Occupied,
    /// A field sbmesh must read or extend does not have the shape of a pod's.
    Malformed,
    /// The pod uses a bus, entity or client id outside its Namespace's boundary.
    Boundary,
    /// The cluster could not say what the pod's ServiceAccount or Namespace hold.
    Unavailable,
    /// A bug in sbmesh.
    Internal,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidValue => "invalid-value",
            Reason::MissingParameter => "missing-parameter",
            Reason::Conflict => "conflict",
            Reason::Policy => "policy",
            Reason::Occupied => "occupied",
            Reason::Boundary => "boundary",
            Reason::Malformed => "malformed",
            Reason::Unavailable => "unavailable",
            Reason::Internal => "internal",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a value was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Pod {
        key: &'static str,
    },
    ServiceAccount {
        key: &'static str,
        namespace: String,
        name: String,
    },
    Namespace {
        key: &'static str,
        name: String,
    },
}

impl Origin {
    pub fn key(&self) -> &'static str {
        match self {
            Origin::Pod { key }
            | Origin::ServiceAccount { key, .. }
            | Origin::Namespace { key, .. } => key,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Pod { key } => write!(f, "pod annotation {key}"),
            Origin::ServiceAccount {
                key,
                namespace,
                name,
            } => write!(f, "annotation {key} of ServiceAccount {namespace}/{name}"),
            Origin::Namespace { key, name } => write!(f, "annotation {key} of Namespace {name}"),
        }
    }
}

/// Every place a parameter may be set, and which of them were consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    pub key: &'static str,
    /// Also on the ServiceAccount and the Namespace.
    pub inherited: bool,
    /// Other pod keys for the same parameter, read after `key` (Azure Workload Identity's).
    pub pod_extra: &'static [&'static str],
    /// Other ServiceAccount keys for the same parameter (Azure Workload Identity's).
    pub sa_extra: &'static [&'static str],
    /// The webhook config setting.
    pub config: Option<keys::settings::Setting>,
    pub namespace: String,
    pub service_account: String,
    pub service_account_consulted: bool,
    pub namespace_consulted: bool,
}

impl fmt::Display for Places {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NOT_CONSULTED: &str = " (not consulted: cluster lookups are off)";
        write!(f, "set {}", self.key)?;
        for k in self.pod_extra {
            write!(f, " or {k}")?;
        }
        f.write_str(" on the pod")?;
        if self.inherited {
            f.write_str(", ")?;
            for (i, k) in std::iter::once(&self.key).chain(self.sa_extra).enumerate() {
                if i > 0 {
                    f.write_str(" or ")?;
                }
                f.write_str(k)?;
            }
            write!(
                f,
                " on ServiceAccount {}/{}{}, {} on Namespace {}{}",
                self.namespace,
                self.service_account,
                if self.service_account_consulted {
                    ""
                } else {
                    NOT_CONSULTED
                },
                self.key,
                self.namespace,
                if self.namespace_consulted {
                    ""
                } else {
                    NOT_CONSULTED
                },
            )?;
        }
        if let Some(setting) = self.config {
            write!(
                f,
                ", or {} in the webhook config ({})",
                setting.key, setting.flag
            )?;
        }
        Ok(())
    }
}

/// Settings that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Both `containers` and `skip-containers` are set on the pod.
    ContainerScope,
    /// `subscription` is set, but `topics` does not hold exactly one topic.
    SubscriptionTopics { found: usize },
    /// The workload-identity label holds another value than "true".
    IdentityLabel { value: String },
}

/// What a webhook-config policy refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyViolation {
    ConnectionString { container: String, env: String },
    DefaultServiceAccount { namespace: String },
}

/// What the pod already holds where sbmesh adds its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occupied {
    Volume { expiration_seconds: u32 },
    Mount { container: String, volume: String },
}

/// What the cluster could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    NoServiceAccount {
        namespace: String,
        name: String,
    },
    NoNamespace {
        name: String,
    },
    /// Not in the cache, and a direct GET failed.
    Unanswered {
        object: String,
        cause: String,
    },
    /// Identity mode auto before the first list of webhook configurations.
    IdentityModeUnknown {
        awi_webhook: &'static str,
    },
}

/// A refusal to admit the pod, with the facts its message is built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// `sbmesh.io/inject` holds neither true nor false (`value` is the string, or the JSON
    /// text of a non-string).
    OptIn {
        value: String,
        string: bool,
    },
    /// A pod annotation sbmesh reads is not a string.
    NotAString {
        key: &'static str,
        json: String,
    },
    /// A parameter's value breaks its rule.
    Invalid {
        origin: Origin,
        value: String,
        rule: String,
        places: Box<Places>,
    },
    /// The webhook config's value does not fit this pod (for example another cloud's FQDN).
    ConfigDoesNotFit {
        config_key: &'static str,
        value: String,
        cloud: Cloud,
        rule: String,
        pod_key: &'static str,
    },
    /// A pod annotation outside the parameters (an Istio one sbmesh extends) is invalid.
    Annotation {
        key: &'static str,
        value: Option<String>,
        rule: String,
        fix: &'static str,
    },
    Missing {
        what: &'static str,
        places: Box<Places>,
    },
    Conflict(Conflict),
    Policy(PolicyViolation),
    Occupied(Occupied),
    /// Permission boundaries refuse the pod (DESIGN §7).
    Boundary(crate::contract::boundary::Violation),
    /// A field sbmesh reads or extends has another JSON type than a pod's.
    Malformed {
        pointer: String,
        expected: &'static str,
    },
    Unavailable(Unavailable),
    Internal(String),
}

impl Denial {
    pub fn reason(&self) -> Reason {
        match self {
            Denial::OptIn { .. }
            | Denial::NotAString { .. }
            | Denial::Invalid { .. }
            | Denial::ConfigDoesNotFit { .. }
            | Denial::Annotation { .. } => Reason::InvalidValue,
            Denial::Missing { .. } => Reason::MissingParameter,
            Denial::Conflict(_) => Reason::Conflict,
            Denial::Policy(_) => Reason::Policy,
            Denial::Occupied(_) => Reason::Occupied,
            Denial::Boundary(Violation::Unparsable { .. }) => Reason::InvalidValue,
            Denial::Boundary(_) => Reason::Boundary,
            Denial::Malformed { .. } => Reason::Malformed,
            Denial::Unavailable(_) => Reason::Unavailable,
            Denial::Internal(_) => Reason::Internal,
        }
    }

    /// The annotation, label or config key the user must change, when there is one.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Denial::OptIn { .. } => Some(keys::INJECT),
            Denial::NotAString { key, .. } | Denial::Annotation { key, .. } => Some(key),
            Denial::Invalid { origin, .. } => Some(origin.key()),
            Denial::ConfigDoesNotFit { pod_key, .. } => Some(pod_key),
            Denial::Missing { places, .. } => Some(places.key),
            Denial::Conflict(Conflict::ContainerScope) => Some(keys::SKIP_CONTAINERS),
            Denial::Conflict(Conflict::SubscriptionTopics { .. }) => Some(keys::SUBSCRIPTION),
            Denial::Conflict(Conflict::IdentityLabel { .. }) => Some(keys::AWI_USE),
            Denial::Boundary(Violation::Outside { fence, .. }) => Some(fence.key.annotation()),
            Denial::Boundary(Violation::Unparsable { key, .. }) => Some(key.annotation()),
            Denial::Boundary(Violation::Required { .. }) => {
                Some(keys::ALLOWED_SERVICEBUS_NAMESPACES)
            }
            _ => None,
        }
    }

    /// The malformed field's JSON pointer and the type it must have.
    pub fn malformed(pointer: impl Into<String>, expected: JsonType) -> Self {
        Denial::Malformed {
            pointer: pointer.into(),
            expected: expected.describe(),
        }
    }

    /// The message without the `sbmesh: ` prefix.
    pub fn detail(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_detail(&mut s);
        s
    }

    fn write_detail(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        match self {
            Denial::OptIn {
                value,
                string: true,
            } => write!(
                f,
                "pod annotation {} has the value \"{value}\", which must be \"true\" or \"false\"; \
                 set it to \"true\" to inject, or remove it",
                keys::INJECT
            ),
            Denial::OptIn {
                value,
                string: false,
            } => write!(
                f,
                "pod annotation {} must be a string \"true\" or \"false\", not {value}",
                keys::INJECT
            ),
            Denial::NotAString { key, json } => {
                write!(f, "pod annotation {key} must be a string, not {json}")
            }
            Denial::Invalid {
                origin,
                value,
                rule,
                places,
            } => write!(
                f,
                "{origin} = \"{value}\" is invalid: {rule}. Where it may be set: {places}"
            ),
            Denial::ConfigDoesNotFit {
                config_key,
                value,
                cloud,
                rule,
                pod_key,
            } => write!(
                f,
                "the webhook config's {config_key} \"{value}\" does not fit the cloud {cloud} in \
                 effect for this pod: it {rule}; set {pod_key} on the pod"
            ),
            Denial::Annotation {
                key,
                value,
                rule,
                fix,
            } => {
                write!(f, "pod annotation {key}")?;
                match value {
                    Some(v) => write!(f, " = \"{v}\" is invalid: {rule}")?,
                    None => write!(f, " {rule}")?,
                }
                f.write_str(fix)
            }
            Denial::Missing { what, places } => write!(f, "no {what} for this pod: {places}"),
            Denial::Conflict(Conflict::ContainerScope) => write!(
                f,
                "set either {} or {} on the pod, not both",
                keys::CONTAINERS,
                keys::SKIP_CONTAINERS
            ),
            Denial::Conflict(Conflict::SubscriptionTopics { found }) => write!(
                f,
                "{} needs exactly one topic in {}, found {found}; a subscription belongs to one \
                 topic",
                keys::SUBSCRIPTION,
                keys::TOPICS
            ),
            Denial::Conflict(Conflict::IdentityLabel { value }) => write!(
                f,
                "pod label {} is \"{value}\", but the pod opts in with {}: \"true\", which needs \
                 that label to be \"true\"; the two contradict each other: remove the label or \
                 the annotation",
                keys::AWI_USE,
                keys::INJECT
            ),
            Denial::Policy(PolicyViolation::ConnectionString { container, env }) => write!(
                f,
                "{} (webhook config {}: deny)",
                connection_string_finding(container, env),
                keys::settings::CONNECTION_STRING_POLICY.key
            ),
            Denial::Policy(PolicyViolation::DefaultServiceAccount { namespace }) => {
                f.write_str(&default_service_account_finding(namespace))
            }
            Denial::Occupied(Occupied::Volume { expiration_seconds }) => write!(
                f,
                "the pod already has a volume named {} that differs from the one sbmesh adds \
                 (projected serviceAccountToken, audience {}, expirationSeconds \
                 {expiration_seconds}, path {}); sbmesh does not overwrite it: rename or remove \
                 that volume",
                crate::mutate::identity::VOLUME_NAME,
                crate::mutate::identity::TOKEN_AUDIENCE,
                crate::mutate::identity::TOKEN_PATH
            ),
            Denial::Occupied(Occupied::Mount { container, volume }) => write!(
                f,
                "container {container} already mounts {volume} at {}, where sbmesh mounts its \
                 token volume {} read-only; sbmesh does not overwrite it: move that mount, or \
                 leave the container out with {}",
                crate::mutate::identity::MOUNT_PATH,
                crate::mutate::identity::VOLUME_NAME,
                keys::SKIP_CONTAINERS
            ),
            Denial::Boundary(v) => write!(f, "{v}"),
            Denial::Malformed { pointer, expected } => {
                write!(f, "malformed pod: {pointer} must be {expected}")
            }
            Denial::Unavailable(Unavailable::NoServiceAccount { namespace, name }) => write!(
                f,
                "ServiceAccount {namespace}/{name} does not exist; create it before the pod, or \
                 set spec.serviceAccountName to an existing ServiceAccount (sbmesh reads the \
                 client id, tenant id and Service Bus parameters from its annotations)"
            ),
            Denial::Unavailable(Unavailable::NoNamespace { name }) => write!(
                f,
                "Namespace {name} does not exist; sbmesh reads Service Bus defaults from its \
                 annotations"
            ),
            Denial::Unavailable(Unavailable::Unanswered { object, cause }) => write!(
                f,
                "cannot read {object} (not in the cache yet, and a direct GET from the API server \
                 failed: {cause}); the pod is refused rather than admitted without its \
                 parameters: retry shortly"
            ),
            Denial::Unavailable(Unavailable::IdentityModeUnknown { awi_webhook }) => write!(
                f,
                "identity mode auto cannot tell yet whether the Azure Workload Identity webhook \
                 ({awi_webhook}) is installed: the MutatingWebhookConfigurations have not been \
                 listed (sbmesh's ServiceAccount needs list and watch on them); the pod is \
                 refused rather than given a possibly duplicate token: retry shortly, or set \
                 --identity-mode inject or delegate"
            ),
            Denial::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        self.write_detail(f)
    }
}

/// Every message sbmesh gives a person starts with this.
pub const PREFIX: &str = "sbmesh: ";

/// A warning's text: the prefix and the sentence.
pub fn warning(text: impl fmt::Display) -> String {
    let mut s = String::from(PREFIX);
    let _ = write!(s, "{text}");
    s
}

/// The connection-string finding, shared by the denial and the `warn` policy's warning.
pub fn connection_string_finding(container: &str, env: &str) -> String {
    format!(
        "container {container} env {env} holds a plaintext Service Bus connection string \
         (Endpoint=sb://…;SharedAccessKey…); this pod gets workload identity: remove the variable \
         and use AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE with a token credential"
    )
}

/// The default-ServiceAccount finding, shared by the denial and the `warn` policy's warning.
pub fn default_service_account_finding(namespace: &str) -> String {
    format!(
        "pod runs as the default ServiceAccount of {namespace}; a federated credential is bound \
         to one ServiceAccount, so give this workload its own (spec.serviceAccountName)"
    )
}
