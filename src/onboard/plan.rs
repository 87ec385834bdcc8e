//! The onboarding plan (DESIGN §9): from the workloads the webhook would admit, the identities
//! they use and the least-privilege grants each identity needs. Pure: the renderers (table,
//! json, az, istio, mermaid) only read it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::contract::InjectionPlan;
use crate::contract::access::{Access, Direction, Entity};
use crate::contract::values::Cloud;

/// A built-in Service Bus data role. Never Data Owner: it carries management actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Sender,
    Receiver,
}

impl Role {
    pub fn of(direction: Direction) -> Self {
        match direction {
            Direction::Send => Role::Sender,
            Direction::Receive => Role::Receiver,
        }
    }

    /// The role's name in Azure.
    pub fn name(self) -> &'static str {
        match self {
            Role::Sender => "Azure Service Bus Data Sender",
            Role::Receiver => "Azure Service Bus Data Receiver",
        }
    }

    /// The role definition's built-in id, the same in every tenant and cloud.
    pub fn id(self) -> &'static str {
        match self {
            Role::Sender => "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
            Role::Receiver => "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
        }
    }

    /// The name without `Azure Service Bus `, for narrow columns.
    pub fn short_name(self) -> &'static str {
        match self {
            Role::Sender => "Data Sender",
            Role::Receiver => "Data Receiver",
        }
    }
}

/// The Kubernetes identity a federated credential names: a ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// `system:serviceaccount:<namespace>:<name>`, the subject of the federated credential.
    pub fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// The mesh principal of the ServiceAccount: `<trust-domain>/ns/<namespace>/sa/<name>`.
    pub fn principal(&self, trust_domain: &str) -> String {
        format!("{trust_domain}/ns/{}/sa/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service Bus namespace: its short name (how Azure finds it) and its FQDN (how clients and
/// the mesh reach it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bus {
    pub name: String,
    pub fqdn: String,
}

/// One opted-in workload as the webhook would admit it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `<namespace>/<Kind>/<name>`.
    pub reference: String,
    pub service_account: ServiceAccount,
    pub client_id: String,
    /// `None` in delegate mode, where the Azure Workload Identity webhook supplies it.
    pub tenant_id: Option<String>,
    pub bus: Bus,
    pub access: Access,
}

impl Workload {
    /// The workload of a resolved injection plan.
    pub fn new(namespace: &str, kind: &str, name: &str, plan: &InjectionPlan) -> Self {
        Self {
            reference: format!("{namespace}/{kind}/{name}"),
            service_account: ServiceAccount {
                namespace: plan.subject.namespace.clone(),
                name: plan.subject.service_account.clone(),
            },
            client_id: plan.client_id.as_str().to_string(),
            tenant_id: plan.tenant_id.as_ref().map(|t| t.as_str().to_string()),
            bus: Bus {
                name: plan.servicebus_namespace.short().to_string(),
                fqdn: plan.servicebus_namespace.fqdn(plan.cloud),
            },
            access: plan.access.clone(),
        }
    }
}

impl Workload {
    /// A workload from its parts, with its access written as in `sbmesh.io/sends` and
    /// `sbmesh.io/receives` (`queue/q`, `topic/t`, `topic/t:s`) and its bus in the public cloud:
    /// for tools and tests that build a plan without manifests.
    pub fn from_items(
        reference: &str,
        service_account: &str,
        client_id: &str,
        tenant_id: Option<&str>,
        bus: &str,
        sends: &[&str],
        receives: &[&str],
    ) -> Result<Self, String> {
        let parse = |items: &[&str], d| {
            items
                .iter()
                .map(|i| Entity::parse(i, d).map_err(|e| e.0))
                .collect::<Result<Vec<_>, _>>()
        };
        let namespace = reference
            .split_once('/')
            .map(|(ns, _)| ns)
            .ok_or_else(|| format!("{reference}: not <namespace>/<Kind>/<name>"))?;
        Ok(Self {
            reference: reference.to_string(),
            service_account: ServiceAccount {
                namespace: namespace.to_string(),
                name: service_account.to_string(),
            },
            client_id: client_id.to_string(),
            tenant_id: tenant_id.map(str::to_string),
            bus: Bus {
                name: bus.to_string(),
                fqdn: format!("{bus}.{}", Cloud::Public.servicebus_domain()),
            },
            access: Access::new(
                parse(sends, Direction::Send)?,
                parse(receives, Direction::Receive)?,
            ),
        })
    }
}

/// One role on one entity, for one identity, with who needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub bus: Bus,
    pub entity: Entity,
    pub role: Role,
    /// The ServiceAccounts whose workloads need it, in order of first appearance.
    pub service_accounts: Vec<ServiceAccount>,
    /// The workloads that need it, in document order.
    pub workloads: Vec<String>,
}

impl Grant {
    /// The ARM scope of the grant under the bus's ARM id: `<bus>/queues/q`, `<bus>/topics/t`,
    /// `<bus>/topics/t/subscriptions/s`. Entity names are used literally (`queues/orders/eu`).
    pub fn scope(&self, bus_arm_id: &str) -> String {
        match &self.entity {
            Entity::Queue(q) => format!("{bus_arm_id}/queues/{}", q.as_str()),
            Entity::Topic(t) => format!("{bus_arm_id}/topics/{}", t.as_str()),
            Entity::Subscription {
                topic,
                subscription,
            } => format!(
                "{bus_arm_id}/topics/{}/subscriptions/{}",
                topic.as_str(),
                subscription.as_str()
            ),
        }
    }

    fn same(&self, bus: &Bus, entity: &Entity, role: Role) -> bool {
        self.role == role && self.bus.fqdn == bus.fqdn && self.entity.key() == entity.key()
    }
}

/// An Entra identity, (client id, tenant id), and everything granted to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub client_id: String,
    pub tenant_id: Option<String>,
    /// In order of the first workload that uses each.
    pub service_accounts: Vec<ServiceAccount>,
    pub workloads: Vec<String>,
    /// In each workload's access-set order, workloads in document order, duplicates dropped.
    pub grants: Vec<Grant>,
}

/// Everything `sbmesh onboard` renders.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Onboarding {
    /// In document order.
    pub workloads: Vec<Workload>,
    /// In order of the first workload that resolves to each.
    pub identities: Vec<Identity>,
}

/// Entra ID's limit of federated identity credentials on one identity.
pub const MAX_FEDERATED_CREDENTIALS: usize = 20;

impl Onboarding {
    /// Groups the workloads (in document order) by identity and derives their grants.
    pub fn new(workloads: Vec<Workload>) -> Self {
        let mut identities: Vec<Identity> = Vec::new();
        for w in &workloads {
            let i = match identities
                .iter()
                .position(|i| i.client_id == w.client_id && i.tenant_id == w.tenant_id)
            {
                Some(i) => i,
                None => {
                    identities.push(Identity {
                        client_id: w.client_id.clone(),
                        tenant_id: w.tenant_id.clone(),
                        service_accounts: Vec::new(),
                        workloads: Vec::new(),
                        grants: Vec::new(),
                    });
                    identities.len() - 1
                }
            };
            let identity = &mut identities[i];
            push_new(&mut identity.service_accounts, &w.service_account);
            push_new(&mut identity.workloads, &w.reference);
            for (direction, entity) in w.access.items() {
                let role = Role::of(direction);
                let grant = match identity
                    .grants
                    .iter_mut()
                    .position(|g| g.same(&w.bus, entity, role))
                {
                    Some(g) => &mut identity.grants[g],
                    None => {
                        identity.grants.push(Grant {
                            bus: w.bus.clone(),
                            entity: entity.clone(),
                            role,
                            service_accounts: Vec::new(),
                            workloads: Vec::new(),
                        });
                        identity.grants.last_mut().expect("just pushed")
                    }
                };
                push_new(&mut grant.service_accounts, &w.service_account);
                push_new(&mut grant.workloads, &w.reference);
            }
        }
        Self {
            workloads,
            identities,
        }
    }

    /// The warnings of DESIGN §9, in a stable order: per identity (more than 20 subjects; a
    /// client id shared by several ServiceAccounts), then per workload (legacy keys; nothing
    /// to grant).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in &self.identities {
            let n = i.service_accounts.len();
            if n > MAX_FEDERATED_CREDENTIALS {
                out.push(format!(
                    "client id {} is used by {n} ServiceAccounts, and Entra ID allows at most \
                     {MAX_FEDERATED_CREDENTIALS} federated identity credentials on one identity \
                     (one per ServiceAccount and cluster issuer): split them across identities",
                    i.client_id
                ));
            }
            if n > 1 {
                out.push(format!(
                    "client id {} is shared by {n} ServiceAccounts ({}): each of them can do \
                     everything granted to the identity, so the grants no longer follow one \
                     workload; give each ServiceAccount its own identity",
                    i.client_id,
                    list(&i.service_accounts, 5)
                ));
            }
        }
        for w in &self.workloads {
            let legacy: Vec<String> = w
                .access
                .legacy_items()
                .map(|(d, e)| format!("{} on {e}", Role::of(d).short_name()))
                .collect();
            if !legacy.is_empty() {
                out.push(format!(
                    "{}: sbmesh.io/queues, sbmesh.io/topics and sbmesh.io/subscription do not say \
                     which way messages flow, so they grant both ways: {}; say what the workload \
                     does with sbmesh.io/sends and sbmesh.io/receives",
                    w.reference,
                    legacy.join(", ")
                ));
            }
            if w.access.is_empty() {
                out.push(format!(
                    "{}: it names no entity (sbmesh.io/sends, sbmesh.io/receives), so it is \
                     granted nothing",
                    w.reference
                ));
            }
        }
        out
    }

    /// The stable JSON form of DESIGN §9.
    pub fn report(&self) -> Report {
        Report {
            identities: self
                .identities
                .iter()
                .map(|i| IdentityReport {
                    client_id: i.client_id.clone(),
                    tenant_id: i.tenant_id.clone(),
                    subjects: i.service_accounts.iter().map(|s| s.subject()).collect(),
                    workloads: i.workloads.clone(),
                    grants: i
                        .grants
                        .iter()
                        .map(|g| GrantReport {
                            servicebus_namespace: g.bus.fqdn.clone(),
                            entity: g.entity.to_string(),
                            role: g.role.name().to_string(),
                            role_id: g.role.id().to_string(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Each ServiceAccount with a grant, with the buses of its own grants, in order of first
    /// appearance.
    pub fn service_account_buses(&self) -> Vec<(ServiceAccount, Vec<Bus>)> {
        let mut out: Vec<(ServiceAccount, Vec<Bus>)> = Vec::new();
        for g in self.identities.iter().flat_map(|i| &i.grants) {
            for sa in &g.service_accounts {
                match out.iter_mut().find(|(s, _)| s == sa) {
                    Some((_, buses)) => push_new(buses, &g.bus),
                    None => out.push((sa.clone(), vec![g.bus.clone()])),
                }
            }
        }
        out
    }
}

fn push_new<T: PartialEq + Clone>(list: &mut Vec<T>, item: &T) {
    if !list.contains(item) {
        list.push(item.clone());
    }
}

/// The first `max` items, then how many more.
fn list<T: fmt::Display>(items: &[T], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// `-o json`: identities in order of first appearance, grants in access-set order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    pub identities: Vec<IdentityReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityReport {
    pub client_id: String,
    /// `null` in delegate mode, where the Azure Workload Identity webhook supplies it.
    pub tenant_id: Option<String>,
    pub subjects: Vec<String>,
    pub workloads: Vec<String>,
    pub grants: Vec<GrantReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantReport {
    /// The bus's FQDN.
    pub servicebus_namespace: String,
    /// `queue/q`, `topic/t` or `topic/t:s`.
    pub entity: String,
    pub role: String,
    pub role_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::access::Intent;
    use crate::contract::values::{EntityKind, EntityName};

    const C1: &str = "3c1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51";
    const C2: &str = "8a2f4c6e-1d3b-4f5a-9c7e-2b4d6f8a0c13";

    fn workload(
        reference: &str,
        sa: &str,
        client: &str,
        bus_name: &str,
        sends: &[&str],
        receives: &[&str],
    ) -> Workload {
        let tenant = Some("5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5");
        Workload::from_items(reference, sa, client, tenant, bus_name, sends, receives).unwrap()
    }

    fn grants(i: &Identity) -> Vec<String> {
        i.grants
            .iter()
            .map(|g| format!("{} {} {}", g.role.short_name(), g.bus.name, g.entity))
            .collect()
    }

    #[test]
    fn roles_are_the_built_in_data_roles_never_owner() {
        assert_eq!(
            Role::of(Direction::Send).id(),
            "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
        );
        assert_eq!(
            Role::of(Direction::Receive).id(),
            "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
        );
        assert_eq!(Role::Sender.name(), "Azure Service Bus Data Sender");
        assert_eq!(Role::Receiver.name(), "Azure Service Bus Data Receiver");
    }

    #[test]
    fn scopes_are_the_narrowest_arm_ids_with_names_used_literally() {
        let bus_id =
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ServiceBus/namespaces/b";
        let o = Onboarding::new(vec![workload(
            "ns/Deployment/a",
            "a",
            C1,
            "b",
            &["queue/orders/eu", "topic/events"],
            &["topic/events:audit"],
        )]);
        let scopes: Vec<String> = o.identities[0]
            .grants
            .iter()
            .map(|g| g.scope(bus_id))
            .collect();
        assert_eq!(
            scopes,
            [
                format!("{bus_id}/queues/orders/eu"),
                format!("{bus_id}/topics/events"),
                format!("{bus_id}/topics/events/subscriptions/audit"),
            ]
        );
    }

    #[test]
    fn identities_in_order_of_first_workload_grants_in_access_order_duplicates_dropped() {
        let o = Onboarding::new(vec![
            workload(
                "b/Deployment/x",
                "x",
                C2,
                "bus-one",
                &["queue/q1"],
                &["queue/q2"],
            ),
            workload("a/Deployment/y", "y", C1, "bus-one", &["topic/t"], &[]),
            workload(
                "b/Job/z",
                "z",
                C2,
                "bus-one",
                &["queue/Q1", "queue/q3"],
                &["queue/q1"],
            ),
            workload("b/Job/w", "x", C2, "bus-two", &["queue/q1"], &[]),
        ]);
        let ids: Vec<&str> = o.identities.iter().map(|i| i.client_id.as_str()).collect();
        assert_eq!(ids, [C2, C1]);
        let first = &o.identities[0];
        assert_eq!(
            grants(first),
            [
                "Data Sender bus-one queue/q1",
                "Data Receiver bus-one queue/q2",
                "Data Sender bus-one queue/q3",
                "Data Receiver bus-one queue/q1",
                "Data Sender bus-two queue/q1",
            ]
        );
        assert_eq!(first.workloads, ["b/Deployment/x", "b/Job/z", "b/Job/w"]);
        let subjects: Vec<String> = first.service_accounts.iter().map(|s| s.subject()).collect();
        assert_eq!(
            subjects,
            ["system:serviceaccount:b:x", "system:serviceaccount:b:z"]
        );
        // The first spelling is kept; both workloads are recorded on the shared grant.
        assert_eq!(first.grants[0].workloads, ["b/Deployment/x", "b/Job/z"]);
        assert_eq!(first.grants[0].entity.to_string(), "queue/q1");
    }

    #[test]
    fn the_same_client_id_in_another_tenant_is_another_identity() {
        let mut other = workload("a/Deployment/b", "b", C1, "bus-one", &["queue/q"], &[]);
        other.tenant_id = Some("00000000-0000-0000-0000-000000000001".into());
        let o = Onboarding::new(vec![
            workload("a/Deployment/a", "a", C1, "bus-one", &["queue/q"], &[]),
            other,
        ]);
        assert_eq!(o.identities.len(), 2);
    }

    #[test]
    fn service_accounts_are_paired_with_the_buses_of_their_own_grants() {
        let o = Onboarding::new(vec![
            workload("a/Deployment/a", "a", C1, "bus-one", &["queue/q"], &[]),
            workload("a/Deployment/b", "b", C1, "bus-two", &["queue/q"], &[]),
            workload("a/Deployment/c", "c", C2, "bus-two", &[], &[]),
        ]);
        let pairs: Vec<String> = o
            .service_account_buses()
            .iter()
            .map(|(sa, buses)| {
                let names: Vec<&str> = buses.iter().map(|b| b.name.as_str()).collect();
                format!("{sa}={}", names.join("+"))
            })
            .collect();
        assert_eq!(pairs, ["a/a=bus-one", "a/b=bus-two"]);
    }

    #[test]
    fn warnings_name_shared_identities_the_twenty_credential_limit_legacy_grants_and_empty_access()
    {
        let mut ws: Vec<Workload> = (0..21)
            .map(|i| {
                workload(
                    &format!("n{i}/Deployment/w"),
                    "w",
                    C1,
                    "bus-one",
                    &["queue/q"],
                    &[],
                )
            })
            .collect();
        let queues = [EntityName::parse("legacy", EntityKind::Queue).unwrap()];
        let mut legacy = workload("old/Deployment/l", "l", C2, "bus-one", &[], &[]);
        legacy.access = Access::of(Intent {
            queues: &queues,
            topics: &[],
            subscription: None,
            sends: vec![],
            receives: vec![],
        });
        ws.push(legacy);
        ws.push(workload("e/Deployment/e", "e", "c3", "bus-one", &[], &[]));
        let warnings = Onboarding::new(ws).warnings();
        assert_eq!(warnings.len(), 4, "{warnings:#?}");
        assert!(
            warnings[0].contains("used by 21 ServiceAccounts")
                && warnings[0].contains("at most 20")
        );
        assert!(
            warnings[1].contains(
                "shared by 21 ServiceAccounts (n0/w, n1/w, n2/w, n3/w, n4/w and 16 more)"
            )
        );
        assert!(
            warnings[2].starts_with("old/Deployment/l: ")
                && warnings[2]
                    .contains("Data Sender on queue/legacy, Data Receiver on queue/legacy")
                && warnings[2].contains("sbmesh.io/sends")
        );
        assert!(
            warnings[3].starts_with("e/Deployment/e: ") && warnings[3].contains("granted nothing")
        );
        let one = Onboarding::new(vec![workload(
            "a/Deployment/a",
            "a",
            C1,
            "bus-one",
            &["queue/q"],
            &[],
        )]);
        assert!(one.warnings().is_empty());
    }

    #[test]
    fn the_report_is_the_json_shape_of_the_contract() {
        let o = Onboarding::new(vec![workload(
            "a/Deployment/a",
            "a",
            C1,
            "bus-one",
            &["queue/q"],
            &["topic/t:s"],
        )]);
        let json = serde_json::to_value(o.report()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"identities": [{
                "clientId": C1,
                "tenantId": "5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5",
                "subjects": ["system:serviceaccount:a:a"],
                "workloads": ["a/Deployment/a"],
                "grants": [
                    {"servicebusNamespace": "bus-one.servicebus.windows.net", "entity": "queue/q",
                     "role": "Azure Service Bus Data Sender", "roleId": "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"},
                    {"servicebusNamespace": "bus-one.servicebus.windows.net", "entity": "topic/t:s",
                     "role": "Azure Service Bus Data Receiver", "roleId": "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"}
                ]
            }]})
        );
    }
}
