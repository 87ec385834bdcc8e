//! Policy: plaintext Service Bus connection strings in env values defeat workload identity.

use crate::contract::{Policy, truncate};
use crate::denial::{Denial, PolicyViolation, connection_string_finding, warning};
use crate::pod::Pod;

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
    pod: &Pod,
    policy: Policy,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    if policy == Policy::Off {
        return Ok(());
    }
    let Some(spec) = pod.spec() else {
        return Ok(());
    };
    for list in [
        &spec.init_containers,
        &spec.containers,
        &spec.ephemeral_containers,
    ] {
        for c in list.get().into_iter().flatten() {
            for e in c.env.get().into_iter().flatten() {
                let Some(value) = e.value.as_deref() else {
                    continue;
                };
                if !is_connection_string(value) {
                    continue;
                }
                let container = truncate(c.name.get().map_or("?", |n| n.as_ref()));
                let env = truncate(e.name.as_deref().unwrap_or("?"));
                if policy == Policy::Deny {
                    return Err(Denial::Policy(PolicyViolation::ConnectionString {
                        container,
                        env,
                    }));
                }
                warnings.push(warning(connection_string_finding(&container, &env)));
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
