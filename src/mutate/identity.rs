//! Workload identity: the pod label, the projected token volume and its mount, and the
//! `AZURE_*` identity env (the last three only in `inject` mode).

use serde_json::Value;
use serde_json::value::RawValue;

use crate::contract::{IdentityMode, InjectionPlan, keys};
use crate::denial::{Conflict, Denial};
use crate::pod::Mount;

use super::patch::MapEdits;

pub const VOLUME_NAME: &str = "sbmesh-azure-identity-token";
pub const TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const TOKEN_PATH: &str = "azure-identity-token";
pub const MOUNT_PATH: &str = "/var/run/secrets/azure/tokens";
pub const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

/// Identity env in the contract's order (empty in `delegate` mode).
pub fn env(plan: &InjectionPlan, out: &mut Vec<(&'static str, String)>) {
    if plan.mode != IdentityMode::Inject {
        return;
    }
    out.push(("AZURE_CLIENT_ID", plan.client_id.to_string()));
    if let Some(t) = &plan.tenant_id {
        out.push(("AZURE_TENANT_ID", t.to_string()));
    }
    out.push(("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE.to_string()));
    out.push((
        "AZURE_AUTHORITY_HOST",
        plan.cloud.authority_host().to_string(),
    ));
}

/// Sets `azure.workload.identity/use: "true"`; another case of true (`True`) is replaced by
/// `true`, which Azure Workload Identity's objectSelector matches; any other value contradicts
/// the opt-in.
pub fn label(labels: &mut MapEdits) -> Result<(), Denial> {
    match labels.get(keys::AWI_USE).as_deref() {
        Some("true") => Ok(()),
        Some(v) if v.eq_ignore_ascii_case("true") => {
            labels.set(keys::AWI_USE, "true".to_string());
            Ok(())
        }
        Some(other) => Err(Denial::Conflict(Conflict::IdentityLabel {
            value: crate::contract::truncate(other),
        })),
        None => {
            labels.set(keys::AWI_USE, "true".to_string());
            Ok(())
        }
    }
}

/// The projected token volume sbmesh adds.
pub fn volume(plan: &InjectionPlan) -> super::Value {
    super::Value::Volume {
        expiration_seconds: plan.token_expiration.seconds(),
    }
}

/// The read-only mount of the token volume.
pub fn mount() -> super::Value {
    super::Value::Mount
}

/// Whether an existing volume of our name is the one we would add, ignoring fields the API
/// server defaults (`defaultMode`).
pub fn volume_matches(existing: &RawValue, plan: &InjectionPlan) -> bool {
    let Ok(existing) = serde_json::from_str::<Value>(existing.get()) else {
        return false;
    };
    let Some(v) = existing.as_object() else {
        return false;
    };
    if v.keys().any(|k| k != "name" && k != "projected") {
        return false;
    }
    let Some(projected) = v.get("projected").and_then(Value::as_object) else {
        return false;
    };
    if projected
        .keys()
        .any(|k| k != "sources" && k != "defaultMode")
    {
        return false;
    }
    let Some([source]) = projected
        .get("sources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    else {
        return false;
    };
    let Some(source) = source.as_object() else {
        return false;
    };
    if source.len() != 1 {
        return false;
    }
    let Some(sat) = source.get("serviceAccountToken").and_then(Value::as_object) else {
        return false;
    };
    sat.len() == 3
        && sat.get("audience").and_then(Value::as_str) == Some(TOKEN_AUDIENCE)
        && sat.get("path").and_then(Value::as_str) == Some(TOKEN_PATH)
        && sat.get("expirationSeconds").and_then(Value::as_u64)
            == Some(u64::from(plan.token_expiration.seconds()))
}

/// Whether an existing mount at our path is ours (name, read-only, nothing else).
pub fn mount_matches(existing: &Mount) -> bool {
    existing.is_object
        && existing.name.as_deref() == Some(VOLUME_NAME)
        && existing.read_only == Some(true)
        && !existing.other_fields
}
