//! Service Bus env: the namespace, the client id under Service Connector's name, the entities,
//! and the SDK aliases.

use crate::contract::access::join;
use crate::contract::{Cloud, EntityName, EnvAlias, InjectionPlan};

fn join_names(names: &[&EntityName]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Service Bus env in the contract's order, after the identity env: the bus, the client id,
/// the entities of the access set, the access items, then the aliases.
pub fn env(plan: &InjectionPlan, out: &mut Vec<(&'static str, String)>) {
    let fqdn = plan.servicebus_namespace.fqdn(plan.cloud);
    out.push(("AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE", fqdn.clone()));
    out.push(("AZURE_SERVICEBUS_CLIENTID", plan.client_id.to_string()));
    let access = &plan.access;
    let queues = access.queue_names();
    if !queues.is_empty() {
        out.push(("AZURE_SERVICEBUS_QUEUE_NAMES", join_names(&queues)));
    }
    let topics = access.topic_names();
    if !topics.is_empty() {
        out.push(("AZURE_SERVICEBUS_TOPIC_NAMES", join_names(&topics)));
    }
    if let [(_, subscription)] = access.subscriptions()[..] {
        out.push((
            "AZURE_SERVICEBUS_SUBSCRIPTION_NAME",
            subscription.as_str().to_string(),
        ));
    }
    if !access.sends.is_empty() {
        out.push(("AZURE_SERVICEBUS_SENDS", join(&access.sends)));
    }
    if !access.receives.is_empty() {
        out.push(("AZURE_SERVICEBUS_RECEIVES", join(&access.receives)));
    }
    for alias in &plan.env_aliases {
        match alias {
            EnvAlias::Sdk => out.push(("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", fqdn.clone())),
            EnvAlias::Dotnet => out.push(("ServiceBus__fullyQualifiedNamespace", fqdn.clone())),
            EnvAlias::Spring => {
                // Spring Cloud Azure appends the domain itself, so it takes the short name.
                out.push((
                    "SPRING_CLOUD_AZURE_SERVICEBUS_NAMESPACE",
                    plan.servicebus_namespace.short().to_string(),
                ));
                out.push((
                    "SPRING_CLOUD_AZURE_SERVICEBUS_CREDENTIAL_CLIENTID",
                    plan.client_id.to_string(),
                ));
                if plan.cloud != Cloud::Public {
                    out.push((
                        "SPRING_CLOUD_AZURE_SERVICEBUS_DOMAINNAME",
                        plan.cloud.servicebus_domain().to_string(),
                    ));
                }
            }
        }
    }
}
