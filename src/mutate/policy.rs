//! Policy: plaintext Service Bus connection strings in env values defeat workload identity.

use serde_json::Value;

use crate::contract::{Denial, Policy, truncate};

/// A connection string holds `Endpoint=sb://` and a key or a signature, in any case.
pub fn is_connection_string(value: &str) -> bool {
    contains_ignore_case(value, "endpoint=sb://")
        && (contains_ignore_case(value, "sharedaccesskey=")
            || contains_ignore_case(value, "sharedaccesssignature="))
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Checks every container and init container (in scope or not). Never echoes the secret.
pub fn check_connection_strings(
    pod: &Value,
    policy: Policy,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    if policy == Policy::Off {
        return Ok(());
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = pod
            .get("spec")
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for c in containers {
            let Some(env) = c.get("env").and_then(Value::as_array) else {
                continue;
            };
            for e in env {
                let Some(value) = e.get("value").and_then(Value::as_str) else {
                    continue;
                };
                if !is_connection_string(value) {
                    continue;
                }
                let container = truncate(c.get("name").and_then(Value::as_str).unwrap_or("?"));
                let name = truncate(e.get("name").and_then(Value::as_str).unwrap_or("?"));
                let what = format!(
                    "container {container} env {name} holds a plaintext Service Bus connection \
                     string (Endpoint=sb://…;SharedAccessKey…); this pod gets workload identity: \
                     remove the variable and use AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE with a \
                     token credential"
                );
                if policy == Policy::Deny {
                    return Err(Denial::new(format!(
                        "sbmesh: {what} (webhook config connectionStringPolicy: deny)"
                    )));
                }
                warnings.push(format!("sbmesh: {what}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_connection_strings_in_any_case() {
        assert!(is_connection_string(
            "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=abc="
        ));
        assert!(is_connection_string(
            "ENDPOINT=SB://x/;SHAREDACCESSSIGNATURE=SharedAccessSignature sr=x"
        ));
        assert!(!is_connection_string(
            "Endpoint=sb://x.servicebus.windows.net/"
        ));
        assert!(!is_connection_string("SharedAccessKey=abc"));
        assert!(!is_connection_string(
            "Endpoint=https://x/;SharedAccessKey=abc"
        ));
    }
}
