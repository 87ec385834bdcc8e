//! Identity mode `auto`: watches MutatingWebhookConfigurations and delegates the token volume
//! and identity env to the Azure Workload Identity webhook while a configuration holding its
//! webhook exists. Only the verdict per configuration is kept, never the objects (their
//! caBundles are large and useless here).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::contract::IdentityMode;
use crate::denial::{Denial, Unavailable};

use super::watch::Store;

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
    synced: Arc<watch::Sender<bool>>,
    delegate: AtomicBool,
    configurations: AtomicUsize,
}

impl AwiDetector {
    pub fn start(client: Client, tasks: &mut Vec<AbortHandle>) -> Arc<Self> {
        let synced = Arc::new(watch::channel(false).0);
        let detector = Arc::new(AwiDetector {
            synced: synced.clone(),
            delegate: AtomicBool::new(false),
            configurations: AtomicUsize::new(0),
        });
        let verdicts = Verdicts {
            detector: detector.clone(),
            seen: HashMap::new(),
            listing: HashMap::new(),
        };
        super::watch::spawn(Api::all(client), CACHE_NAME, verdicts, synced, tasks);
        detector
    }

    fn update(&self, seen: &HashMap<String, bool>) {
        self.configurations.store(seen.len(), Ordering::Relaxed);
        let delegate = seen.values().any(|holds| *holds);
        // The first list is always logged: the watch loop sets `synced` only after
        // `finish_relist` has called this.
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

/// The watch's side of the detector: configuration name → whether it holds the AWI webhook.
/// A relist is buffered in `listing` so that the verdict flips only on complete knowledge.
struct Verdicts {
    detector: Arc<AwiDetector>,
    seen: HashMap<String, bool>,
    listing: HashMap<String, bool>,
}

impl Store for Verdicts {
    type Object = MutatingWebhookConfiguration;
    const WHILE_DOWN: &'static str = "the identity mode stays as it was";

    fn begin_relist(&mut self) {
        self.listing.clear();
    }

    fn relist_apply(&mut self, c: MutatingWebhookConfiguration) {
        self.listing.insert(c.name_any(), holds_awi(&c));
    }

    fn finish_relist(&mut self) -> usize {
        self.seen = std::mem::take(&mut self.listing);
        self.detector.update(&self.seen);
        self.seen.len()
    }

    fn apply(&mut self, c: MutatingWebhookConfiguration) {
        self.seen.insert(c.name_any(), holds_awi(&c));
        self.detector.update(&self.seen);
    }

    fn delete(&mut self, c: MutatingWebhookConfiguration) {
        self.seen.remove(&c.name_any());
        self.detector.update(&self.seen);
    }
}

fn holds_awi(c: &MutatingWebhookConfiguration) -> bool {
    c.webhooks
        .iter()
        .flatten()
        .any(|w| w.name == AWI_WEBHOOK_NAME)
}
