//! The one set of webhook-config defaults the tests, the benchmarks and the fuzz targets share
//! (included with `#[path]`), so that every suite speaks of the same identity.
#![allow(dead_code)]

use sbmesh::contract::Defaults;

pub const CLIENT_ID: &str = "6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6c";
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SERVICEBUS_NAMESPACE: &str = "payments-prod";

/// A typical install's config: the tenant only; the client id and the bus come from the pod
/// (or its ServiceAccount and Namespace).
pub fn tenant_only() -> Defaults {
    Defaults {
        tenant_id: Some(TENANT_ID.parse().expect("tenant id")),
        ..Defaults::default()
    }
}

/// Tenant, client id and bus all in the config: a pod with only the opt-in gets a full patch.
pub fn full() -> Defaults {
    Defaults {
        client_id: Some(CLIENT_ID.parse().expect("client id")),
        servicebus_namespace: Some(SERVICEBUS_NAMESPACE.into()),
        ..tenant_only()
    }
}
