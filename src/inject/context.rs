//! The input as context: ServiceAccounts and Namespaces present in the manifests are consulted
//! as the cluster would be (pod → ServiceAccount → Namespace → config), and win over what the
//! cluster says, because they are what will be applied.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::cluster::Facts;
use crate::contract::{Denial, IdentityMode};

type Strings = BTreeMap<String, String>;

/// The ServiceAccounts and Namespaces of the input, by (namespace, name) and by name.
#[derive(Debug, Default)]
pub struct Given {
    service_accounts: HashMap<(String, String), Strings>,
    namespaces: HashMap<String, (Strings, Strings)>,
}

impl Given {
    /// Collects every core/v1 ServiceAccount and Namespace of the documents (List items too).
    /// A later document of the same object replaces an earlier one, as `kubectl apply` would.
    pub fn collect<'a>(docs: impl Iterator<Item = &'a Value>, default_namespace: &str) -> Self {
        let mut given = Self::default();
        for doc in docs {
            given.visit(doc, default_namespace);
        }
        given
    }

    fn visit(&mut self, obj: &Value, default_namespace: &str) {
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let core = s("/apiVersion") == Some("v1");
        match s("/kind") {
            Some(kind) if kind.ends_with("List") => {
                for item in obj
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.visit(item, default_namespace);
                }
            }
            Some("ServiceAccount") if core => {
                if let Some(name) = s("/metadata/name") {
                    let ns = s("/metadata/namespace").unwrap_or(default_namespace);
                    self.service_accounts.insert(
                        (ns.to_string(), name.to_string()),
                        strings(obj, "/metadata/annotations"),
                    );
                }
            }
            Some("Namespace") if core => {
                if let Some(name) = s("/metadata/name") {
                    self.namespaces.insert(
                        name.to_string(),
                        (
                            strings(obj, "/metadata/annotations"),
                            strings(obj, "/metadata/labels"),
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    /// What the pod's ServiceAccount and Namespace say: the input's objects over the cluster's
    /// answer (`looked_up`, when the cluster was asked). A lookup that failed is the answer
    /// unless the input holds both objects.
    pub fn facts(
        &self,
        namespace: &str,
        service_account: Option<&str>,
        looked_up: Option<Result<Facts, Denial>>,
        offline_mode: IdentityMode,
    ) -> Result<Facts, Denial> {
        let sa = service_account.and_then(|sa| {
            self.service_accounts
                .get(&(namespace.to_string(), sa.to_string()))
        });
        let ns = self.namespaces.get(namespace);
        let mut facts = match looked_up {
            Some(Ok(f)) => f,
            Some(Err(_)) if sa.is_some() && ns.is_some() => Facts::default(),
            Some(Err(d)) => return Err(d),
            None => Facts::default(),
        };
        facts.identity_mode = facts.identity_mode.or(Some(offline_mode));
        if let Some(a) = sa {
            facts.service_account_annotations = Some(a.clone());
        }
        if let Some((a, l)) = ns {
            facts.namespace_annotations = Some(a.clone());
            facts.namespace_labels = Some(l.clone());
        }
        Ok(facts)
    }
}

/// The string entries of a map field (annotations, labels); other values are not the
/// API server's to accept, and the contract reads strings only.
fn strings(obj: &Value, pointer: &str) -> Strings {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
