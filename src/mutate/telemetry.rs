//! Telemetry env (DESIGN §8): one opt-in names the pod's spans and turns on Service Bus
//! tracing in the Azure SDKs. The values differ per container (service and container name), and
//! a user's own value for any of these names wins, silently: their telemetry setup is theirs.

use crate::contract::{InjectionPlan, TelemetryPlan};

use super::Value;

/// Holds the pod's name (from the downward API) for the `$(…)` reference that follows it.
pub const POD_NAME: &str = "SBMESH_POD_NAME";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The .NET SDK emits Service Bus spans only with it.
pub const DOTNET_ACTIVITY_SOURCE: &str = "AZURE_EXPERIMENTAL_ENABLE_ACTIVITY_SOURCE";
/// The Python SDK's tracing plug-in.
pub const PYTHON_TRACING: &str = "AZURE_SDK_TRACING_IMPLEMENTATION";

/// The env names, in the contract's order (the endpoint only when one is set).
pub fn names(plan: &InjectionPlan) -> Vec<&'static str> {
    let Some(t) = &plan.telemetry else {
        return Vec::new();
    };
    let mut names = vec![POD_NAME, SERVICE_NAME, RESOURCE_ATTRIBUTES];
    if t.endpoint.is_some() {
        names.push(ENDPOINT);
    }
    names.extend([DOTNET_ACTIVITY_SOURCE, PYTHON_TRACING]);
    names
}

/// The env entries for one container, in the contract's order.
pub fn env(t: &TelemetryPlan, namespace: &str, container: &str) -> Vec<Value> {
    let literal = |name, value| Value::Env { name, value };
    let mut env = Vec::with_capacity(6);
    env.push(Value::EnvFieldRef {
        name: POD_NAME,
        field_path: "metadata.name",
    });
    env.push(literal(
        SERVICE_NAME,
        t.service_name.as_deref().unwrap_or(container).to_string(),
    ));
    env.push(literal(
        RESOURCE_ATTRIBUTES,
        format!(
            "k8s.namespace.name={namespace},k8s.pod.name=$({POD_NAME}),k8s.container.name={container}"
        ),
    ));
    if let Some(e) = &t.endpoint {
        env.push(literal(ENDPOINT, e.as_str().to_string()));
    }
    env.push(literal(DOTNET_ACTIVITY_SOURCE, "true".into()));
    env.push(literal(PYTHON_TRACING, "opentelemetry".into()));
    env
}
