//! Identity mode `auto`: watches MutatingWebhookConfigurations and delegates the token volume
//! and identity env to the Azure Workload Identity webhook while a configuration holding its
//! webhook exists. Only the verdict per configuration is kept, never the objects (their
//! caBundles are large and useless here).

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::contract::IdentityMode;
use crate::denial::{Denial, Unavailable};

use super::lookup;

/// The webhook name the Azure Workload Identity chart registers.
pub const AWI_WEBHOOK_NAME: &str = "mutation.azure-workload-identity.io";

pub(super) const CACHE_NAME: &str = "mutatingwebhookconfigurations";

pub(super) enum Identity {
    Fixed(IdentityMode),
    Auto(Arc<AwiDetector>),
}

impl Identity {
    /// The mode for an admission now. In `auto` before the first list, waits up to `timeout`
    /// for it, then denies: guessing `inject` on an AKS cluster would add a second token.
    pub async fn resolve(&self, timeout: Duration) -> Result<IdentityMode, Denial> {
        let detector = match self {
            Identity::Fixed(mode) => return Ok(*mode),
            Identity::Auto(d) => d,
        };
        if let Some(mode) = detector.current() {
            return Ok(mode);
        }
        let mut synced = detector.synced.subscribe();
        match tokio::time::timeout(timeout, synced.wait_for(|s| *s)).await {
            Ok(Ok(_)) => detector.current().ok_or_else(not_synced),
            _ => Err(not_synced()),
        }
    }

    pub fn current(&self) -> Option<IdentityMode> {
        match self {
            Identity::Fixed(mode) => Some(*mode),
            Identity::Auto(d) => d.current(),
        }
    }
}

fn not_synced() -> Denial {
    Denial::Unavailable(Unavailable::IdentityModeUnknown {
        awi_webhook: AWI_WEBHOOK_NAME,
    })
}

pub(super) struct AwiDetector {
    synced: watch::Sender<bool>,
    delegate: AtomicBool,
    configurations: AtomicUsize,
}

impl AwiDetector {
    pub fn start(client: Client, tasks: &mut Vec<AbortHandle>) -> Arc<Self> {
        let detector = Arc::new(AwiDetector {
            synced: watch::channel(false).0,
            delegate: AtomicBool::new(false),
            configurations: AtomicUsize::new(0),
        });
        let api: Api<MutatingWebhookConfiguration> = Api::all(client);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let d = detector.clone();
        let task = tokio::spawn(async move {
            let mut stream = pin!(stream);
            // Configuration name → whether it holds the AWI webhook. `listing` buffers a
            // relist so that the verdict flips only on complete knowledge.
            let mut seen: HashMap<String, bool> = HashMap::new();
            let mut listing: HashMap<String, bool> = HashMap::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => listing.clear(),
                    Ok(watcher::Event::InitApply(c)) => {
                        listing.insert(c.name_any(), holds_awi(&c));
                    }
                    Ok(watcher::Event::InitDone) => {
                        seen = std::mem::take(&mut listing);
                        d.update(&seen);
                        if !d.synced.send_replace(true) {
                            tracing::info!(
                                cache = CACHE_NAME,
                                objects = seen.len(),
                                "cache synced"
                            );
                        }
                    }
                    Ok(watcher::Event::Apply(c)) => {
                        seen.insert(c.name_any(), holds_awi(&c));
                        d.update(&seen);
                    }
                    Ok(watcher::Event::Delete(c)) => {
                        seen.remove(&c.name_any());
                        d.update(&seen);
                    }
                    Err(e) => tracing::warn!(
                        cache = CACHE_NAME,
                        error = %lookup::describe_watch_error(&e),
                        "watch failed; reconnecting with backoff (the identity mode stays as it was)"
                    ),
                }
            }
        });
        tasks.push(task.abort_handle());
        detector
    }

    fn update(&self, seen: &HashMap<String, bool>) {
        self.configurations.store(seen.len(), Ordering::Relaxed);
        let delegate = seen.values().any(|holds| *holds);
        if self.delegate.swap(delegate, Ordering::AcqRel) != delegate || !*self.synced.borrow() {
            let holders: Vec<&str> = seen
                .iter()
                .filter(|(_, h)| **h)
                .map(|(n, _)| n.as_str())
                .collect();
            tracing::info!(
                mode = if delegate { "delegate" } else { "inject" },
                awi_configurations = ?holders,
                "identity mode auto: {}",
                if delegate {
                    "the Azure Workload Identity webhook is installed; it adds the token and identity env"
                } else {
                    "no Azure Workload Identity webhook; sbmesh adds the token and identity env"
                }
            );
        }
    }

    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    pub fn configurations(&self) -> usize {
        self.configurations.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<IdentityMode> {
        self.synced().then(|| {
            if self.delegate.load(Ordering::Acquire) {
                IdentityMode::Delegate
            } else {
                IdentityMode::Inject
            }
        })
    }
}

fn holds_awi(c: &MutatingWebhookConfiguration) -> bool {
    c.webhooks
        .iter()
        .flatten()
        .any(|w| w.name == AWI_WEBHOOK_NAME)
}
