//! Cluster knowledge on the admission path: the pod's ServiceAccount and Namespace metadata and
//! the identity mode, from watch-fed caches, so that a warm admission makes no API call. A cache
//! miss costs one direct GET with a short timeout; when even that cannot answer, the pod is
//! denied rather than admitted on a guess.

mod caches;
mod identity;
mod lookup;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::contract::{Context, Denial, IdentityMode, IdentityModeSetting, RuleViolation};

pub use identity::AWI_WEBHOOK_NAME;

/// How long a cache miss may wait for the API server (well inside the webhook's 5 s budget).
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long `--cluster on` waits for the API server to answer at start.
pub const START_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether sbmesh talks to the API server (`--cluster`, env `SBMESH_CLUSTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClusterMode {
    /// Use the cluster when a configuration (in-cluster or kubeconfig) is found; otherwise
    /// behave as `off`.
    #[default]
    Auto,
    /// Use the cluster; fail at start when there is no configuration or the API server does
    /// not answer.
    On,
    /// Never call the API server: only the pod and the webhook config are consulted.
    Off,
}

impl ClusterMode {
    pub const ALL: &'static [ClusterMode] = &[ClusterMode::Auto, ClusterMode::On, ClusterMode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterMode::Auto => "auto",
            ClusterMode::On => "on",
            ClusterMode::Off => "off",
        }
    }
}

impl fmt::Display for ClusterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClusterMode {
    type Err = RuleViolation;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let t = raw.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|m| t.eq_ignore_ascii_case(m.as_str()))
            .ok_or_else(|| RuleViolation("must be one of: auto, on, off".into()))
    }
}

/// Why the cluster connection could not be started (the binary exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "--cluster on: no Kubernetes configuration found (neither the in-cluster ServiceAccount \
         nor KUBECONFIG / ~/.kube/config): {0}"
    )]
    NoConfig(#[source] kube::config::InferConfigError),
    #[error("--cluster {mode}: cannot build a Kubernetes client for {url}: {source}")]
    Client {
        mode: ClusterMode,
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("--cluster on: the API server at {url} did not answer: {cause}")]
    Unreachable { url: String, cause: String },
}

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

/// Handle to the cluster caches, cheap to clone. The watch tasks stop when the last handle is
/// dropped.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    identity: identity::Identity,
    caches: Option<caches::Caches>,
    lookup_timeout: Duration,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Cluster {
    /// No cluster: only the pod and the config are consulted.
    pub fn off(identity_mode: IdentityMode) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity: identity::Identity::Fixed(identity_mode),
                caches: None,
                lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
                tasks: Vec::new(),
            }),
        }
    }

    /// Starts cluster lookups as `--cluster` says. Must run inside a Tokio runtime: the caches
    /// are fed by background tasks.
    pub async fn start(
        mode: ClusterMode,
        identity: IdentityModeSetting,
        lookup_timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        match mode {
            ClusterMode::Off => {
                tracing::info!(
                    "cluster lookups are off (--cluster off): only the pod and the webhook config are consulted"
                );
                Ok(Self::offline(identity))
            }
            ClusterMode::Auto => match kube::Config::infer().await {
                Ok(config) => Self::start_with_config(mode, config, identity, lookup_timeout).await,
                Err(e) => {
                    tracing::info!(
                        cause = %e,
                        "no Kubernetes configuration found: cluster lookups are off \
                         (ServiceAccount and Namespace annotations are not consulted)"
                    );
                    Ok(Self::offline(identity))
                }
            },
            ClusterMode::On => {
                let config = kube::Config::infer()
                    .await
                    .map_err(ClusterError::NoConfig)?;
                Self::start_with_config(mode, config, identity, lookup_timeout).await
            }
        }
    }

    /// Starts cluster lookups with a given configuration. `On` probes the API server first and
    /// fails when it does not answer within [`START_PROBE_TIMEOUT`]; `Auto` starts the caches
    /// and lets readiness wait for them; `Off` ignores the configuration.
    pub async fn start_with_config(
        mode: ClusterMode,
        config: kube::Config,
        identity: IdentityModeSetting,
        lookup_timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        if mode == ClusterMode::Off {
            return Ok(Self::offline(identity));
        }
        let url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|source| ClusterError::Client {
            mode,
            url: url.clone(),
            source,
        })?;
        if mode == ClusterMode::On {
            match tokio::time::timeout(START_PROBE_TIMEOUT, client.apiserver_version()).await {
                Ok(Ok(version)) => {
                    tracing::info!(%url, version = %version.git_version, "connected to the API server");
                }
                Ok(Err(e)) => {
                    return Err(ClusterError::Unreachable {
                        url,
                        cause: lookup::describe_error(&e),
                    });
                }
                Err(_) => {
                    return Err(ClusterError::Unreachable {
                        url,
                        cause: format!("no answer within {}s", START_PROBE_TIMEOUT.as_secs_f32()),
                    });
                }
            }
        } else {
            tracing::info!(%url, "cluster lookups are on (--cluster auto found a configuration)");
        }
        Ok(Self::start_with_client(client, identity, lookup_timeout))
    }

    /// Starts the caches over an existing client (tests point it at a fake API server). Must
    /// run inside a Tokio runtime.
    pub fn start_with_client(
        client: kube::Client,
        identity: IdentityModeSetting,
        lookup_timeout: Duration,
    ) -> Cluster {
        let mut tasks = Vec::new();
        let caches = caches::Caches::start(client.clone(), &mut tasks);
        let identity = match identity {
            IdentityModeSetting::Inject => identity::Identity::Fixed(IdentityMode::Inject),
            IdentityModeSetting::Delegate => identity::Identity::Fixed(IdentityMode::Delegate),
            IdentityModeSetting::Auto => {
                identity::Identity::Auto(identity::AwiDetector::start(client, &mut tasks))
            }
        };
        Cluster {
            inner: Arc::new(Inner {
                identity,
                caches: Some(caches),
                lookup_timeout,
                tasks,
            }),
        }
    }

    fn offline(identity: IdentityModeSetting) -> Cluster {
        let mode = match identity {
            IdentityModeSetting::Inject => IdentityMode::Inject,
            IdentityModeSetting::Delegate => IdentityMode::Delegate,
            IdentityModeSetting::Auto => {
                tracing::info!(
                    "identity mode auto without cluster lookups cannot see the Azure Workload \
                     Identity webhook: using inject"
                );
                IdentityMode::Inject
            }
        };
        Cluster::off(mode)
    }

    /// Whether the API server is consulted at all.
    pub fn lookups_enabled(&self) -> bool {
        self.inner.caches.is_some()
    }

    /// Facts for a pod in `namespace` running as `service_account`: from the caches, or one
    /// direct GET per miss. A ServiceAccount or Namespace that does not exist, or an API server
    /// that cannot answer a needed GET, is a denial.
    pub async fn facts(&self, namespace: &str, service_account: &str) -> Result<Facts, Denial> {
        let timeout = self.inner.lookup_timeout;
        let Some(caches) = &self.inner.caches else {
            return Ok(Facts {
                identity_mode: Some(self.inner.identity.resolve(timeout).await?),
                ..Facts::default()
            });
        };
        let (identity_mode, sa, ns) = tokio::join!(
            self.inner.identity.resolve(timeout),
            caches.service_account(namespace, service_account, timeout),
            caches.namespace(namespace, timeout),
        );
        let sa = sa?;
        let ns = ns?;
        Ok(Facts {
            service_account_annotations: Some(sa.annotations),
            namespace_annotations: Some(ns.annotations),
            namespace_labels: Some(ns.labels),
            identity_mode: Some(identity_mode?),
        })
    }

    /// The identity mode in effect now; `None` while `auto` has not yet listed the
    /// MutatingWebhookConfigurations.
    pub fn identity_mode(&self) -> Option<IdentityMode> {
        self.inner.identity.current()
    }

    /// True once every cache has synced (always, without a cluster). Stays true when a watch
    /// later drops: the cache keeps serving while the watch reconnects.
    pub fn ready(&self) -> bool {
        self.cache_states().iter().all(|(_, synced)| *synced)
    }

    /// Each cache by name and whether it has synced, for metrics.
    pub fn cache_states(&self) -> Vec<(&'static str, bool)> {
        let mut states = Vec::with_capacity(3);
        if let Some(c) = &self.inner.caches {
            states.extend(c.states());
        }
        if let identity::Identity::Auto(d) = &self.inner.identity {
            states.push((identity::CACHE_NAME, d.synced()));
        }
        states
    }

    /// Each cache by name and how many objects it holds, for metrics.
    pub fn cache_objects(&self) -> Vec<(&'static str, usize)> {
        let mut counts = Vec::with_capacity(3);
        if let Some(c) = &self.inner.caches {
            counts.extend(c.objects());
        }
        if let identity::Identity::Auto(d) = &self.inner.identity {
            counts.push((identity::CACHE_NAME, d.configurations()));
        }
        counts
    }
}
