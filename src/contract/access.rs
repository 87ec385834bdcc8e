//! Access intent (DESIGN §6): which queues, topics and subscriptions a workload sends to and
//! receives from. The access set is what least-privilege grants are computed from and what the
//! pod's env, status and audit record; the older `queues`/`topics`/`subscription` keys fold
//! into it as "both directions".

use std::collections::HashSet;
use std::fmt;

use super::values::{EntityKind, EntityName, RuleViolation};

/// Which way messages flow between the workload and an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Send,
    Receive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Receive => "receive",
        }
    }

    /// The accepted item forms, as a denial shows them.
    fn forms(self) -> &'static str {
        match self {
            Direction::Send => "queue/<queue> or topic/<topic>",
            Direction::Receive => "queue/<queue> or topic/<topic>:<subscription>",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entity of the access set. A topic is sent to; a subscription (of a topic) is received
/// from; a queue is either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    Queue(EntityName),
    Topic(EntityName),
    Subscription {
        topic: EntityName,
        subscription: EntityName,
    },
}

impl Entity {
    /// Parses one `sbmesh.io/sends` or `sbmesh.io/receives` item. The prefixes are lowercase;
    /// names may hold `/`; `:` splits a topic from its subscription.
    pub fn parse(item: &str, direction: Direction) -> Result<Self, RuleViolation> {
        let malformed = |why: String| {
            RuleViolation(format!(
                "item \"{}\" is malformed: {why}; a {} item is {}",
                super::truncate(item),
                direction,
                direction.forms()
            ))
        };
        let name = |raw: &str, kind| EntityName::parse(raw, kind).map_err(|e| malformed(e.0));
        if let Some(queue) = item.strip_prefix("queue/") {
            return Ok(Entity::Queue(name(queue, EntityKind::Queue)?));
        }
        let Some(rest) = item.strip_prefix("topic/") else {
            return Err(malformed(
                "it must start with queue/ or topic/ (lowercase)".into(),
            ));
        };
        match (direction, rest.split_once(':')) {
            (Direction::Send, None) => Ok(Entity::Topic(name(rest, EntityKind::Topic)?)),
            (Direction::Send, Some(_)) => Err(malformed(
                "a workload sends to a topic, not to a subscription".into(),
            )),
            (Direction::Receive, None) => Err(malformed(
                "a workload receives from a subscription of a topic, which must be named".into(),
            )),
            (Direction::Receive, Some((topic, subscription))) => Ok(Entity::Subscription {
                topic: name(topic, EntityKind::Topic)?,
                subscription: name(subscription, EntityKind::Subscription)?,
            }),
        }
    }

    /// The topic this item names, for a topic or a subscription.
    pub fn topic(&self) -> Option<&EntityName> {
        match self {
            Entity::Queue(_) => None,
            Entity::Topic(t) | Entity::Subscription { topic: t, .. } => Some(t),
        }
    }

    /// Identity for deduplication: Service Bus compares entity names case-insensitively.
    /// What makes two items the same entity: Service Bus names compare case-insensitively.
    pub fn key(&self) -> (u8, String, String) {
        let lower = |n: &EntityName| n.as_str().to_ascii_lowercase();
        match self {
            Entity::Queue(q) => (0, lower(q), String::new()),
            Entity::Topic(t) => (1, lower(t), String::new()),
            Entity::Subscription {
                topic,
                subscription,
            } => (2, lower(topic), lower(subscription)),
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::Queue(q) => write!(f, "queue/{}", q.as_str()),
            Entity::Topic(t) => write!(f, "topic/{}", t.as_str()),
            Entity::Subscription {
                topic,
                subscription,
            } => write!(f, "topic/{}:{}", topic.as_str(), subscription.as_str()),
        }
    }
}

/// What the workload sends to and receives from, each list in the contract's order and without
/// duplicates (the first spelling kept).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    pub sends: Vec<Entity>,
    pub receives: Vec<Entity>,
    /// How many of the first `sends` and of the first `receives` come from the legacy keys
    /// (whose direction is "both", not the workload's word).
    legacy: (usize, usize),
}

/// The parameters the access set is made of.
pub struct Intent<'a> {
    pub queues: &'a [EntityName],
    pub topics: &'a [EntityName],
    pub subscription: Option<&'a EntityName>,
    pub sends: Vec<Entity>,
    pub receives: Vec<Entity>,
}

impl Access {
    /// The union of the legacy keys ("both directions") and `sends`/`receives`: sends are the
    /// legacy queues, the legacy topics, then `sends`; receives are the legacy queues, the
    /// legacy subscription (of the one legacy topic), then `receives`.
    pub fn of(intent: Intent) -> Self {
        let queues = || intent.queues.iter().cloned().map(Entity::Queue);
        let legacy_sends = dedupe(queues().chain(intent.topics.iter().cloned().map(Entity::Topic)));
        let legacy_subscription = intent.subscription.and_then(|s| {
            intent.topics.first().map(|t| Entity::Subscription {
                topic: t.clone(),
                subscription: s.clone(),
            })
        });
        let legacy_receives = dedupe(queues().chain(legacy_subscription));
        let legacy = (legacy_sends.len(), legacy_receives.len());
        Self {
            sends: dedupe(legacy_sends.into_iter().chain(intent.sends)),
            receives: dedupe(legacy_receives.into_iter().chain(intent.receives)),
            legacy,
        }
    }

    /// An access set of `sends` and `receives` alone (no legacy keys), duplicates dropped.
    pub fn new(sends: Vec<Entity>, receives: Vec<Entity>) -> Self {
        Self::of(Intent {
            queues: &[],
            topics: &[],
            subscription: None,
            sends,
            receives,
        })
    }

    /// The items that come from the legacy `queues`/`topics`/`subscription` keys, with their
    /// direction: sends first, then receives.
    pub fn legacy_items(&self) -> impl Iterator<Item = (Direction, &Entity)> {
        let (s, r) = self.legacy;
        self.sends[..s]
            .iter()
            .map(|e| (Direction::Send, e))
            .chain(self.receives[..r].iter().map(|e| (Direction::Receive, e)))
    }

    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.receives.is_empty()
    }

    /// Every item with its direction: sends first, then receives.
    pub fn items(&self) -> impl Iterator<Item = (Direction, &Entity)> {
        self.sends
            .iter()
            .map(|e| (Direction::Send, e))
            .chain(self.receives.iter().map(|e| (Direction::Receive, e)))
    }

    /// The queues, in order of first appearance, without duplicates.
    pub fn queue_names(&self) -> Vec<&EntityName> {
        names(self.items().filter_map(|(_, e)| match e {
            Entity::Queue(q) => Some(q),
            _ => None,
        }))
    }

    /// The topics (sent to, or received from through a subscription), in order of first
    /// appearance, without duplicates.
    pub fn topic_names(&self) -> Vec<&EntityName> {
        names(self.items().filter_map(|(_, e)| e.topic()))
    }

    /// The (topic, subscription) pairs received from.
    pub fn subscriptions(&self) -> Vec<(&EntityName, &EntityName)> {
        self.receives
            .iter()
            .filter_map(|e| match e {
                Entity::Subscription {
                    topic,
                    subscription,
                } => Some((topic, subscription)),
                _ => None,
            })
            .collect()
    }

    /// The audit line: `send queue/a, send topic/t, receive topic/t:s`, at most 1,024
    /// characters (a longer one keeps its first 1,023 and ends in `…`).
    pub fn audit(&self) -> String {
        const MAX: usize = 1024;
        let mut line = String::new();
        for (i, (direction, entity)) in self.items().enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            line.push_str(direction.as_str());
            line.push(' ');
            line.push_str(&entity.to_string());
            if line.len() > 4 * MAX {
                break; // enough to cut from; names are ASCII, so bytes are characters
            }
        }
        if line.chars().count() > MAX {
            let mut cut: String = line.chars().take(MAX - 1).collect();
            cut.push('…');
            return cut;
        }
        line
    }
}

/// Joins items as the env and the status list them: `queue/a,topic/t`.
pub fn join(items: &[Entity]) -> String {
    let mut out = String::new();
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&e.to_string());
    }
    out
}

fn dedupe(items: impl Iterator<Item = Entity>) -> Vec<Entity> {
    let mut seen = HashSet::new();
    items.filter(|e| seen.insert(e.key())).collect()
}

fn names<'a>(items: impl Iterator<Item = &'a EntityName>) -> Vec<&'a EntityName> {
    let mut seen = HashSet::new();
    items
        .filter(|n| seen.insert(n.as_str().to_ascii_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> EntityName {
        EntityName::parse(s, EntityKind::Queue).unwrap()
    }

    fn send(s: &str) -> Entity {
        Entity::parse(s, Direction::Send).unwrap()
    }

    fn receive(s: &str) -> Entity {
        Entity::parse(s, Direction::Receive).unwrap()
    }

    #[test]
    fn items_keep_slashes_in_names_and_split_subscriptions_at_the_colon() {
        assert_eq!(send("queue/orders/eu"), Entity::Queue(name("orders/eu")));
        assert_eq!(send("topic/a/b").to_string(), "topic/a/b");
        assert_eq!(
            receive("topic/payments/v2:audit").to_string(),
            "topic/payments/v2:audit"
        );
    }

    #[test]
    fn malformed_items_quote_the_item_and_show_both_forms() {
        for (item, direction) in [
            ("Queue/orders", Direction::Send),
            ("orders", Direction::Send),
            ("queue/", Direction::Send),
            ("topic/t:s", Direction::Send),
            ("topic/t", Direction::Receive),
            ("topic/t:", Direction::Receive),
            ("topic/:s", Direction::Receive),
            ("topic/t:s/x", Direction::Receive),
            ("topic/t:s:x", Direction::Receive),
        ] {
            let e = Entity::parse(item, direction).unwrap_err().0;
            assert!(e.contains(&format!("\"{item}\"")), "{e}");
            assert!(e.contains(direction.forms()), "{e}");
        }
    }

    #[test]
    fn legacy_items_are_the_ones_the_legacy_keys_gave_even_when_also_named_explicitly() {
        let queues = [name("orders")];
        let topics = [name("events")];
        let sub = name("billing");
        let access = Access::of(Intent {
            queues: &queues,
            topics: &topics,
            subscription: Some(&sub),
            sends: vec![send("queue/ORDERS"), send("topic/audit")],
            receives: vec![receive("queue/replies")],
        });
        let legacy: Vec<String> = access
            .legacy_items()
            .map(|(d, e)| format!("{d} {e}"))
            .collect();
        assert_eq!(
            legacy,
            [
                "send queue/orders",
                "send topic/events",
                "receive queue/orders",
                "receive topic/events:billing"
            ]
        );
        let explicit = Access::new(vec![send("queue/a")], vec![receive("queue/a")]);
        assert_eq!(explicit.legacy_items().count(), 0);
        assert_eq!(explicit.items().count(), 2);
    }

    #[test]
    fn legacy_keys_mean_both_directions_and_come_first() {
        let queues = [name("orders")];
        let topics = [name("events")];
        let sub = name("billing");
        let access = Access::of(Intent {
            queues: &queues,
            topics: &topics,
            subscription: Some(&sub),
            sends: vec![send("queue/ORDERS"), send("topic/audit")],
            receives: vec![receive("queue/replies"), receive("topic/Events:billing")],
        });
        assert_eq!(join(&access.sends), "queue/orders,topic/events,topic/audit");
        assert_eq!(
            join(&access.receives),
            "queue/orders,topic/events:billing,queue/replies"
        );
        let q: Vec<_> = access.queue_names().iter().map(|n| n.as_str()).collect();
        assert_eq!(q, ["orders", "replies"]);
        let t: Vec<_> = access.topic_names().iter().map(|n| n.as_str()).collect();
        assert_eq!(t, ["events", "audit"]);
        assert_eq!(access.subscriptions().len(), 1);
    }

    #[test]
    fn audit_line_is_capped_at_1024_characters() {
        let sends: Vec<Entity> = (0..200).map(|i| send(&format!("queue/q{i:04}"))).collect();
        let access = Access::of(Intent {
            queues: &[],
            topics: &[],
            subscription: None,
            sends,
            receives: vec![],
        });
        let line = access.audit();
        assert_eq!(line.chars().count(), 1024);
        assert!(line.starts_with("send queue/q0000, send queue/q0001"));
        assert!(line.ends_with('…'));
        let short = Access::of(Intent {
            queues: &[],
            topics: &[],
            subscription: None,
            sends: vec![send("queue/a")],
            receives: vec![receive("topic/t:s")],
        });
        assert_eq!(short.audit(), "send queue/a, receive topic/t:s");
    }
}
