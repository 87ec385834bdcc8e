//! Cluster knowledge on the admission path: the pod's ServiceAccount and Namespace metadata and
//! the identity mode, from caches, so that a warm admission makes no API call.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::contract::{Context, Denial, IdentityMode};

/// What the cluster says about one pod's ServiceAccount and Namespace.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub service_account_annotations: Option<BTreeMap<String, String>>,
    pub namespace_annotations: Option<BTreeMap<String, String>>,
    pub namespace_labels: Option<BTreeMap<String, String>>,
    pub identity_mode: Option<IdentityMode>,
}

impl Facts {
    pub fn context(&self) -> Context<'_> {
        Context {
            service_account_annotations: self.service_account_annotations.as_ref(),
            namespace_annotations: self.namespace_annotations.as_ref(),
            namespace_labels: self.namespace_labels.as_ref(),
            identity_mode: self.identity_mode.unwrap_or(IdentityMode::Inject),
        }
    }
}

/// Handle to the cluster caches, cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    identity_mode: IdentityMode,
}

impl Cluster {
    /// No cluster: only the pod and the config are consulted.
    pub fn off(identity_mode: IdentityMode) -> Self {
        Self {
            inner: Arc::new(Inner { identity_mode }),
        }
    }

    /// Facts for a pod in `namespace` running as `service_account`.
    pub async fn facts(&self, _namespace: &str, _service_account: &str) -> Result<Facts, Denial> {
        Ok(Facts {
            identity_mode: Some(self.inner.identity_mode),
            ..Facts::default()
        })
    }

    /// True once every cache has synced (always, without a cluster).
    pub fn ready(&self) -> bool {
        true
    }

    /// Each cache by name and whether it has synced, for metrics.
    pub fn cache_states(&self) -> Vec<(&'static str, bool)> {
        Vec::new()
    }
}
