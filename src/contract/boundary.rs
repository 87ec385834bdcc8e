//! Permission boundaries (DESIGN §7): which buses, entities and client ids a Namespace's
//! workloads may use. Set by the Namespace's owners (its annotations) or the webhook's operators
//! (config `boundaries`), never by the workload; checked before anything is patched.

use std::borrow::Cow;
use std::fmt;

use super::access::{Access, Direction, Entity};
use super::values::{ClientId, Cloud, EntityName, RuleViolation, split_list};

/// The three boundaries, with their Namespace annotation and config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    ServicebusNamespaces,
    Entities,
    ClientIds,
}

impl Key {
    pub const ALL: [Key; 3] = [Key::ServicebusNamespaces, Key::Entities, Key::ClientIds];

    pub fn annotation(self) -> &'static str {
        match self {
            Key::ServicebusNamespaces => super::keys::ALLOWED_SERVICEBUS_NAMESPACES,
            Key::Entities => super::keys::ALLOWED_ENTITIES,
            Key::ClientIds => super::keys::ALLOWED_CLIENT_IDS,
        }
    }

    /// The config key, as messages name it.
    pub fn config_key(self) -> &'static str {
        match self {
            Key::ServicebusNamespaces => "boundaries.allowedServicebusNamespaces",
            Key::Entities => "boundaries.allowedEntities",
            Key::ClientIds => "boundaries.allowedClientIds",
        }
    }

    /// What a pod would use instead, as the fix names it.
    fn what(self) -> &'static str {
        match self {
            Key::ServicebusNamespaces => "Service Bus namespace",
            Key::Entities => "entity",
            Key::ClientIds => "client id",
        }
    }

    fn parse(self, item: &str) -> Result<Pattern, RuleViolation> {
        match self {
            Key::ServicebusNamespaces => bus_pattern(item),
            Key::Entities => entity_pattern(item),
            Key::ClientIds => client_id_pattern(item),
        }
    }
}

/// One allowed item.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*` alone.
    Any,
    /// A bus: a short glob gets the pod's cloud suffix; one with a dot is a whole FQDN glob.
    Bus {
        glob: String,
        short: bool,
    },
    Queue(String),
    /// A topic and all its subscriptions.
    Topic(String),
    Subscription(String, String),
    ClientId(String),
}

/// A parsed list of allowed items, kept with the text it came from for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns {
    patterns: Vec<Pattern>,
    shown: String,
}

impl Patterns {
    /// An annotation's comma list. Present but empty allows nothing.
    pub fn parse_list(key: Key, raw: &str) -> Result<Self, RuleViolation> {
        Self::parse_items(key, split_list(raw), super::truncate(raw))
    }

    /// A config list of strings, validated at start.
    pub fn parse_config(key: Key, items: &[String]) -> Result<Self, RuleViolation> {
        let shown = super::truncate(&items.join(", "));
        Self::parse_items(key, items.iter().map(|s| s.trim()), shown)
    }

    fn parse_items<'s>(
        key: Key,
        items: impl IntoIterator<Item = &'s str>,
        shown: String,
    ) -> Result<Self, RuleViolation> {
        let patterns = items
            .into_iter()
            .map(|i| key.parse(i))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns, shown })
    }

    fn allows_bus(&self, fqdn: &str, cloud: Cloud) -> bool {
        self.patterns.iter().any(|p| match p {
            Pattern::Any => true,
            Pattern::Bus { glob, short: false } => glob_match(glob, fqdn),
            Pattern::Bus { glob, short: true } => fqdn
                .strip_suffix(cloud.servicebus_domain())
                .and_then(|s| s.strip_suffix('.'))
                .is_some_and(|short| glob_match(glob, short)),
            _ => false,
        })
    }

    fn allows_client_id(&self, id: &ClientId) -> bool {
        self.patterns.iter().any(|p| match p {
            Pattern::Any => true,
            Pattern::ClientId(allowed) => allowed == id.as_str(),
            _ => false,
        })
    }

    fn allows(&self, direction: Direction, entity: &Entity) -> bool {
        let m = |glob: &str, name: &EntityName| glob_match(glob, name.as_str());
        self.patterns.iter().any(|p| match (p, direction, entity) {
            (Pattern::Any, ..) => true,
            (Pattern::Queue(g), _, Entity::Queue(q)) => m(g, q),
            (Pattern::Topic(g), Direction::Send, Entity::Topic(t)) => m(g, t),
            (Pattern::Topic(g), Direction::Receive, Entity::Subscription { topic, .. }) => {
                m(g, topic)
            }
            (
                Pattern::Subscription(gt, gs),
                Direction::Receive,
                Entity::Subscription {
                    topic,
                    subscription,
                },
            ) => m(gt, topic) && m(gs, subscription),
            _ => false,
        })
    }
}

/// The webhook config's boundaries (each `None` when not set).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Defaults {
    pub servicebus_namespaces: Option<Patterns>,
    pub entities: Option<Patterns>,
    pub client_ids: Option<Patterns>,
}

impl Defaults {
    fn get(&self, key: Key) -> Option<&Patterns> {
        match key {
            Key::ServicebusNamespaces => self.servicebus_namespaces.as_ref(),
            Key::Entities => self.entities.as_ref(),
            Key::ClientIds => self.client_ids.as_ref(),
        }
    }
}

/// Who set the boundary in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetBy {
    Namespace,
    /// The webhook config; `namespace_consulted` is false when cluster lookups are off.
    Config {
        namespace_consulted: bool,
    },
}

/// The boundary a pod ran into: its key, its value as written, and who set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Key,
    pub value: String,
    pub set_by: SetBy,
    pub namespace: String,
}

/// Why boundaries refuse a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An item the pod uses is outside the boundary (`item` as a person reads it, e.g.
    /// `receive topic/payments:audit`).
    Outside { item: String, fence: Box<Fence> },
    /// A Namespace's boundary annotation does not parse: fail closed.
    Unparsable {
        namespace: String,
        key: Key,
        value: String,
        rule: String,
    },
    /// `requireBoundaries: true`, and no bus boundary is set for the Namespace.
    Required {
        namespace: String,
        namespace_consulted: bool,
    },
}

/// What the boundaries are checked against.
pub struct Use<'a> {
    pub servicebus_fqdn: &'a str,
    pub cloud: Cloud,
    pub client_id: &'a ClientId,
    pub access: &'a Access,
}

/// Checks the pod's bus, client id and access set against the boundaries of its Namespace:
/// each key from the Namespace's annotation when present (`namespace_annotations` is `None`
/// when cluster lookups are off), else from the config.
pub fn check(
    namespace: &str,
    namespace_annotations: Option<&std::collections::BTreeMap<String, String>>,
    config: &Defaults,
    require: bool,
    used: &Use,
) -> Result<(), Violation> {
    // The config's patterns are borrowed: admissions under a config boundary copy nothing.
    let fence = |key: Key| -> Result<Option<(Cow<'_, Patterns>, SetBy)>, Violation> {
        if let Some(raw) = namespace_annotations.and_then(|a| a.get(key.annotation())) {
            return Patterns::parse_list(key, raw)
                .map(|p| Some((Cow::Owned(p), SetBy::Namespace)))
                .map_err(|rule| Violation::Unparsable {
                    namespace: namespace.to_string(),
                    key,
                    value: super::truncate(raw),
                    rule: rule.0,
                });
        }
        Ok(config.get(key).map(|p| {
            (
                Cow::Borrowed(p),
                SetBy::Config {
                    namespace_consulted: namespace_annotations.is_some(),
                },
            )
        }))
    };
    let outside = |item: String, key: Key, p: &Patterns, set_by: &SetBy| Violation::Outside {
        item,
        fence: Box::new(Fence {
            key,
            value: p.shown.clone(),
            set_by: set_by.clone(),
            namespace: namespace.to_string(),
        }),
    };

    // Parse all three first: a broken fence refuses the pod whatever it uses.
    let bus = fence(Key::ServicebusNamespaces)?;
    let entities = fence(Key::Entities)?;
    let client_ids = fence(Key::ClientIds)?;

    match &bus {
        None if require => {
            return Err(Violation::Required {
                namespace: namespace.to_string(),
                namespace_consulted: namespace_annotations.is_some(),
            });
        }
        Some((p, by)) if !p.allows_bus(used.servicebus_fqdn, used.cloud) => {
            return Err(outside(
                format!("Service Bus namespace {}", used.servicebus_fqdn),
                Key::ServicebusNamespaces,
                p,
                by,
            ));
        }
        _ => {}
    }
    if let Some((p, by)) = &client_ids
        && !p.allows_client_id(used.client_id)
    {
        return Err(outside(
            format!("client id {}", used.client_id),
            Key::ClientIds,
            p,
            by,
        ));
    }
    if let Some((p, by)) = &entities
        && let Some((direction, entity)) = used.access.items().find(|(d, e)| !p.allows(*d, e))
    {
        return Err(outside(
            format!("{direction} {entity}"),
            Key::Entities,
            p,
            by,
        ));
    }
    Ok(())
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Outside { item, fence } => {
                let Fence {
                    key,
                    value,
                    set_by,
                    namespace,
                } = fence.as_ref();
                write!(
                    f,
                    "{item} is outside the boundary of Namespace {namespace}: "
                )?;
                let empty = if value.is_empty() {
                    "; an empty boundary allows nothing"
                } else {
                    ""
                };
                match set_by {
                    SetBy::Namespace => write!(
                        f,
                        "{} = \"{value}\" (on Namespace {namespace}{empty}); ask its owners to \
                         widen it, or use an allowed {}",
                        key.annotation(),
                        key.what()
                    ),
                    SetBy::Config {
                        namespace_consulted,
                    } => {
                        write!(
                            f,
                            "{} = \"{value}\" (in the webhook config{empty}",
                            key.config_key()
                        )?;
                        if !namespace_consulted {
                            write!(
                                f,
                                "; Namespace {namespace} not consulted: cluster lookups are off"
                            )?;
                        }
                        write!(
                            f,
                            "); ask the webhook's operators to widen it, or the Namespace's \
                             owners to set {} on Namespace {namespace}, or use an allowed {}",
                            key.annotation(),
                            key.what()
                        )
                    }
                }
            }
            Violation::Unparsable {
                namespace,
                key,
                value,
                rule,
            } => write!(
                f,
                "the boundary annotation {} = \"{value}\" on Namespace {namespace} does not \
                 parse: {rule}; pods of this Namespace are refused until its owners fix it (a \
                 broken boundary is not an open gate)",
                key.annotation()
            ),
            Violation::Required {
                namespace,
                namespace_consulted,
            } => {
                write!(
                    f,
                    "no boundary set for Namespace {namespace}: the webhook config has \
                     requireBoundaries: true, so the Namespace's owners must set {} on \
                     Namespace {namespace}",
                    Key::ServicebusNamespaces.annotation()
                )?;
                if !namespace_consulted {
                    f.write_str(" (not consulted: cluster lookups are off)")?;
                }
                write!(
                    f,
                    ", or the webhook's operators {} in its config",
                    Key::ServicebusNamespaces.config_key()
                )
            }
        }
    }
}

/// `*` matches any run of characters, `/` included, and is the only wildcard; the comparison
/// ignores ASCII case (Service Bus and DNS names do). Linear in practice: on a mismatch after a
/// `*`, only the last `*` is retried one character further.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi].eq_ignore_ascii_case(&t[ti]) {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

fn rule(item: &str, forms: &str) -> RuleViolation {
    RuleViolation(format!(
        "\"{}\" is not a boundary item: {forms}",
        super::truncate(item)
    ))
}

/// Whether a glob holds only the characters of a name of its kind, and `*`.
fn glob_ok(glob: &str, extra: &[u8]) -> bool {
    !glob.is_empty()
        && glob
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'*' || extra.contains(&c))
}

fn bus_pattern(item: &str) -> Result<Pattern, RuleViolation> {
    if item == "*" {
        return Ok(Pattern::Any);
    }
    let glob = item.trim_end_matches('.').to_ascii_lowercase();
    if !glob_ok(&glob, b"-.") {
        return Err(rule(
            item,
            "a Service Bus namespace boundary holds short names or FQDNs of letters, digits, \
             '-' and '.', with * as the only wildcard (payments-*, *.servicebus.windows.net, *)",
        ));
    }
    let short = !glob.contains('.');
    Ok(Pattern::Bus { glob, short })
}

fn entity_pattern(item: &str) -> Result<Pattern, RuleViolation> {
    const FORMS: &str = "an entity boundary item is queue/<glob>, topic/<glob> (the topic and all \
                         its subscriptions), topic/<glob>:<glob> (those subscriptions only) or * \
                         alone; a glob holds the characters of Service Bus names, with * as the \
                         only wildcard";
    if item == "*" {
        return Ok(Pattern::Any);
    }
    let name_glob = |g: &str| glob_ok(g, b"-._/").then(|| g.to_string());
    let subscription_glob = |g: &str| glob_ok(g, b"-._").then(|| g.to_string());
    let pattern = if let Some(q) = item.strip_prefix("queue/") {
        name_glob(q).map(Pattern::Queue)
    } else if let Some(rest) = item.strip_prefix("topic/") {
        match rest.split_once(':') {
            None => name_glob(rest).map(Pattern::Topic),
            Some((t, s)) => name_glob(t)
                .zip(subscription_glob(s))
                .map(|(t, s)| Pattern::Subscription(t, s)),
        }
    } else {
        None
    };
    pattern.ok_or_else(|| rule(item, FORMS))
}

fn client_id_pattern(item: &str) -> Result<Pattern, RuleViolation> {
    if item == "*" {
        return Ok(Pattern::Any);
    }
    ClientId::parse(item)
        .map(|id| Pattern::ClientId(id.as_str().to_string()))
        .map_err(|_| {
            rule(
                item,
                "a client id boundary holds GUIDs, or * alone (a client id takes no other \
                 wildcard)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_star_matches_any_run_including_slashes_and_nothing_else_is_special() {
        for (glob, text, expected) in [
            ("orders", "orders", true),
            ("orders", "ORDERS", true),
            ("orders", "orders2", false),
            ("orders*", "orders", true),
            ("orders*", "orders/eu/1", true),
            ("*", "", true),
            ("*", "a/b", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("*-eu", "orders/x-eu", true),
            ("*-eu", "orders-us", false),
            ("a.b", "aXb", false),
            ("a?b", "aXb", false),
            ("**x", "yyx", true),
            ("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ] {
            assert_eq!(glob_match(glob, text), expected, "{glob} vs {text}");
        }
    }

    #[test]
    fn items_that_do_not_parse_are_errors_naming_the_item() {
        for (key, item) in [
            (Key::Entities, "orders"),
            (Key::Entities, "queue/"),
            (Key::Entities, "topic/t:s/x"),
            (Key::Entities, "Queue/orders"),
            (Key::Entities, "queue/a b"),
            (Key::ServicebusNamespaces, "pay ments"),
            (Key::ServicebusNamespaces, "pay_ments"),
            (Key::ClientIds, "6f0c*"),
            (Key::ClientIds, "not-a-guid"),
        ] {
            let e = Patterns::parse_list(key, item).unwrap_err().0;
            assert!(e.contains(&format!("\"{item}\"")), "{e}");
        }
    }
}
