//! Bookkeeping: the `sbmesh.io/status` annotation (the end state, byte-identical on
//! re-admission) and the response's audit annotations.

use serde::Serialize;

use crate::contract::{IdentityMode, InjectionPlan};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    version: &'static str,
    mode: IdentityMode,
    subject: String,
    servicebus_namespace: String,
    containers: &'a [&'a str],
    env: &'a [&'static str],
    volume: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sends: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    receives: Vec<String>,
}

/// The status annotation's value for this plan and these in-scope containers.
pub fn status(plan: &InjectionPlan, containers: &[&str], env: &[&'static str]) -> String {
    let s = Status {
        version: env!("CARGO_PKG_VERSION"),
        mode: plan.mode,
        subject: plan.subject.federated(),
        servicebus_namespace: plan.servicebus_namespace.fqdn(plan.cloud),
        containers,
        env,
        volume: (plan.mode == IdentityMode::Inject).then_some(super::identity::VOLUME_NAME),
        sends: plan.access.sends.iter().map(ToString::to_string).collect(),
        receives: plan
            .access
            .receives
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    // Serializing a struct of strings and lists cannot fail.
    serde_json::to_string(&s).unwrap_or_default()
}

/// Audit annotation keys carry no `/` and stay under 63 characters: the API server prefixes
/// them with the webhook's name.
pub fn audit_annotations(plan: &InjectionPlan) -> Vec<(&'static str, String)> {
    let mut audit = vec![
        ("subject", plan.subject.federated()),
        ("client-id", plan.client_id.to_string()),
        (
            "servicebus-namespace",
            plan.servicebus_namespace.fqdn(plan.cloud),
        ),
        ("spiffe-id", plan.subject.spiffe_id()),
        ("identity-mode", plan.mode.to_string()),
    ];
    if !plan.access.is_empty() {
        audit.push(("access", plan.access.audit()));
    }
    audit
}
