//! `-o mermaid` (DESIGN §9): a flowchart for READMEs and reviews, producers → entities →
//! consumers. Each workload that is granted something is a node; each entity is a node in the
//! subgraph of its bus (queues as cylinders, topics as hexagons, subscriptions as stadiums); a
//! subscription hangs off its topic when that topic is in the graph. Node ids are numbered in
//! order of first appearance (`w1`, `e1`, `b1`), so the text is stable for the same input.

use std::fmt::Write as _;

use super::plan::Onboarding;
use crate::contract::access::{Direction, Entity};

struct WorkloadNode {
    reference: String,
    id: String,
    label: String,
}

struct EntityNode {
    id: String,
    key: (u8, String, String),
    entity: Entity,
}

struct BusGroup {
    id: String,
    fqdn: String,
    entities: Vec<EntityNode>,
}

/// The flowchart, newline-terminated, to paste inside a ```` ```mermaid ```` fence.
pub fn render(onboarding: &Onboarding) -> String {
    let mut workloads: Vec<WorkloadNode> = Vec::new();
    let mut buses: Vec<BusGroup> = Vec::new();
    let mut edges: Vec<(String, String, &'static str)> = Vec::new();
    let mut entity_count = 0usize;

    for w in onboarding.workloads.iter().filter(|w| !w.access.is_empty()) {
        let wid = match workloads.iter().position(|n| n.reference == w.reference) {
            Some(i) => workloads[i].id.clone(),
            None => {
                let id = format!("w{}", workloads.len() + 1);
                workloads.push(WorkloadNode {
                    reference: w.reference.clone(),
                    id: id.clone(),
                    label: workload_label(&w.reference, &w.service_account),
                });
                id
            }
        };
        let b = match buses.iter().position(|b| b.fqdn == w.bus.fqdn) {
            Some(b) => b,
            None => {
                buses.push(BusGroup {
                    id: format!("b{}", buses.len() + 1),
                    fqdn: w.bus.fqdn.clone(),
                    entities: Vec::new(),
                });
                buses.len() - 1
            }
        };
        let group = &mut buses[b];
        for (direction, entity) in w.access.items() {
            let key = entity.key();
            let eid = match group.entities.iter().position(|e| e.key == key) {
                Some(i) => group.entities[i].id.clone(),
                None => {
                    entity_count += 1;
                    let id = format!("e{entity_count}");
                    group.entities.push(EntityNode {
                        id: id.clone(),
                        key,
                        entity: entity.clone(),
                    });
                    id
                }
            };
            let edge = match direction {
                Direction::Send => (wid.clone(), eid, "send"),
                Direction::Receive => (eid, wid.clone(), "receive"),
            };
            if !edges.contains(&edge) {
                edges.push(edge);
            }
        }
    }

    let mut out = String::from("flowchart LR\n");
    for w in &workloads {
        let _ = writeln!(out, "    {}[{}]", w.id, quote(&w.label));
    }
    for bus in &buses {
        let _ = writeln!(out, "    subgraph {}[{}]", bus.id, quote(&bus.fqdn));
        for e in &bus.entities {
            let label = quote(&e.entity.to_string());
            let _ = match e.entity {
                Entity::Queue(_) => writeln!(out, "        {}[({label})]", e.id),
                Entity::Topic(_) => writeln!(out, "        {}{{{{{label}}}}}", e.id),
                Entity::Subscription { .. } => writeln!(out, "        {}([{label}])", e.id),
            };
        }
        for e in &bus.entities {
            if let Entity::Subscription { topic, .. } = &e.entity {
                let topic_key = Entity::Topic(topic.clone()).key();
                if let Some(t) = bus.entities.iter().find(|t| t.key == topic_key) {
                    let _ = writeln!(out, "        {} --> {}", t.id, e.id);
                }
            }
        }
        out.push_str("    end\n");
    }
    for (from, to, label) in &edges {
        let _ = writeln!(out, "    {from} -->|{label}| {to}");
    }
    out
}

/// `<Kind> <namespace>/<name> (sa <ServiceAccount>)`, from the reference
/// `<namespace>/<Kind>/<name>`; the ServiceAccount's namespace is shown when it differs.
fn workload_label(reference: &str, sa: &super::plan::ServiceAccount) -> String {
    let mut parts = reference.splitn(3, '/');
    let (ns, kind, name) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let sa = if sa.namespace == ns {
        sa.name.clone()
    } else {
        sa.to_string()
    };
    format!("{kind} {ns}/{name} (sa {sa})")
}

/// A label in double quotes, with what Mermaid would read as markup written as its entity
/// codes: `"` as `#quot;`, `#` (which starts an entity code) as `#35;`, `<`, `>` and `&` as
/// `#lt;`, `#gt;` and `#amp;`; control characters (a newline ends a statement) as spaces.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onboard::plan::Workload;

    fn workload(
        reference: &str,
        sa: &str,
        client: &str,
        bus: &str,
        sends: &[&str],
        receives: &[&str],
    ) -> Workload {
        Workload::from_items(reference, sa, client, None, bus, sends, receives).unwrap()
    }

    fn example() -> Onboarding {
        Onboarding::new(vec![
            workload(
                "shop/Deployment/api",
                "api",
                "c1",
                "orders",
                &["queue/in", "topic/events"],
                &[],
            ),
            workload("shop/Deployment/idle", "idle", "c3", "orders", &[], &[]),
            workload(
                "shop/StatefulSet/worker",
                "worker",
                "c2",
                "orders",
                &[],
                &["queue/in", "topic/events:audit", "topic/other:s1"],
            ),
            workload(
                "ops/CronJob/report",
                "api",
                "c1",
                "billing",
                &["queue/in"],
                &[],
            ),
        ])
    }

    #[test]
    fn producers_entities_consumers() {
        let expected = "\
flowchart LR
    w1[\"Deployment shop/api (sa api)\"]
    w2[\"StatefulSet shop/worker (sa worker)\"]
    w3[\"CronJob ops/report (sa api)\"]
    subgraph b1[\"orders.servicebus.windows.net\"]
        e1[(\"queue/in\")]
        e2{{\"topic/events\"}}
        e3([\"topic/events:audit\"])
        e4([\"topic/other:s1\"])
        e2 --> e3
    end
    subgraph b2[\"billing.servicebus.windows.net\"]
        e5[(\"queue/in\")]
    end
    w1 -->|send| e1
    w1 -->|send| e2
    e1 -->|receive| w2
    e3 -->|receive| w2
    e4 -->|receive| w2
    w3 -->|send| e5
";
        assert_eq!(render(&example()), expected);
    }

    #[test]
    fn a_workload_without_grants_appears_nowhere() {
        let out = render(&example());
        assert!(!out.contains("idle"), "{out}");
    }

    #[test]
    fn a_subscription_whose_topic_is_not_sent_to_stands_alone() {
        let out = render(&example());
        // e4 (topic/other:s1) has no topic node: only the receive edge touches it.
        assert_eq!(out.matches("e4").count(), 2, "{out}");
        assert!(!out.contains("topic/other\""), "{out}");
    }

    #[test]
    fn a_topic_sent_to_after_its_subscription_still_links_to_it() {
        let o = Onboarding::new(vec![
            workload("a/Pod/consumer", "c", "c1", "orders", &[], &["topic/t:s"]),
            workload("a/Pod/producer", "p", "c2", "orders", &["topic/t"], &[]),
        ]);
        let out = render(&o);
        assert!(out.contains("        e2 --> e1\n"), "{out}");
    }

    #[test]
    fn the_same_entity_on_two_buses_is_two_nodes_and_names_compare_case_insensitively() {
        let o = Onboarding::new(vec![
            workload("a/Pod/p", "p", "c1", "one", &["queue/Q"], &[]),
            workload("a/Pod/c", "c", "c2", "one", &[], &["queue/q"]),
            workload("a/Pod/x", "x", "c3", "two", &["queue/q"], &[]),
        ]);
        let out = render(&o);
        assert!(out.contains("e1[(\"queue/Q\")]"), "{out}");
        assert!(out.contains("e1 -->|receive| w2"), "{out}");
        assert!(out.contains("w3 -->|send| e2"), "{out}");
    }

    #[test]
    fn labels_escape_quotes_and_markup() {
        assert_eq!(quote("a\"b"), "\"a#quot;b\"");
        assert_eq!(quote("#quot;"), "\"#35;quot;\"");
        assert_eq!(quote("<b>&\n"), "\"#lt;b#gt;#amp; \"");
        let o = Onboarding::new(vec![workload(
            "shop/Deployment/we\"ird<x>",
            "api",
            "c1",
            "orders",
            &["queue/in"],
            &[],
        )]);
        let out = render(&o);
        assert!(
            out.contains("w1[\"Deployment shop/we#quot;ird#lt;x#gt; (sa api)\"]"),
            "{out}"
        );
        // Every label is one quoted string: no `"` inside it, so the line holds exactly two.
        for line in out.lines().filter(|l| l.contains('"')) {
            assert_eq!(line.matches('"').count(), 2, "{line}");
        }
    }

    #[test]
    fn a_service_account_of_another_namespace_is_shown_whole() {
        let mut w = workload("shop/Pod/p", "p", "c1", "orders", &["queue/q"], &[]);
        w.service_account.namespace = "other".into();
        let out = render(&Onboarding::new(vec![w]));
        assert!(out.contains("\"Pod shop/p (sa other/p)\""), "{out}");
    }

    #[test]
    fn nothing_granted_is_an_empty_flowchart() {
        assert_eq!(render(&Onboarding::default()), "flowchart LR\n");
    }

    #[test]
    fn deterministic_and_newline_terminated() {
        let a = render(&example());
        assert!(a.ends_with('\n'));
        for _ in 0..3 {
            assert_eq!(render(&example()), a);
        }
    }
}
