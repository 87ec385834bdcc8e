//! Prometheus metrics, served as OpenMetrics text on the admin port: the shell's (TLS reloads,
//! certificate expiry, open connections, recorded by the shell for whatever it hosts) and the
//! admission app's (admissions, refusals, the body budget), in one registry. Cache states are
//! read at scrape time, like the requests in flight; everything else is recorded as it happens.
//! Every label value comes from an enum here or in `admission`, never from a literal at the
//! call site.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::admission::Outcome;
use crate::cluster::Cluster;
use crate::contract::IdentityMode;

pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    outcome: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: &'static str,
}

/// Why a request to `/mutate` got no AdmissionReview back: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    BodyTooLarge,
    BadRequest,
    Timeout,
    Overloaded,
}

impl Rejection {
    const ALL: [Rejection; 4] = [
        Rejection::BodyTooLarge,
        Rejection::BadRequest,
        Rejection::Timeout,
        Rejection::Overloaded,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BadRequest => "bad_request",
            Rejection::Timeout => "timeout",
            Rejection::Overloaded => "overloaded",
        }
    }
}

/// The identity mode an admission was decided in: the `mode` label. `None` when no mode
/// applied (not an opted-in pod, refused before the cluster was asked, or invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    None,
    Of(IdentityMode),
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Of(mode) => mode.as_str(),
        }
    }
}

/// Whether a changed certificate went into service: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    Success,
    Failure,
}

impl Reload {
    const ALL: [Reload; 2] = [Reload::Success, Reload::Failure];

    fn as_str(self) -> &'static str {
        match self {
            Reload::Success => "success",
            Reload::Failure => "failure",
        }
    }
}

/// What the shell records, whatever service it hosts. A hosted app that serves metrics
/// registers these beside its own ([`ShellMetrics::register`]).
#[derive(Clone, Default)]
pub(crate) struct ShellMetrics {
    tls_reloads: Family<ResultLabels, Counter>,
    cert_not_after: Gauge,
    connections: Family<PortLabels, Gauge>,
}

impl ShellMetrics {
    pub(crate) fn new() -> Self {
        let metrics = Self::default();
        // Series that exist from the start, so rates work from the first scrape.
        for result in Reload::ALL {
            let _ = metrics.tls_reloads.get_or_create(&ResultLabels {
                result: result.as_str(),
            });
        }
        metrics
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_reloads",
            "Attempts to put a changed serving certificate in service",
            self.tls_reloads.clone(),
        );
        registry.register_with_unit(
            "tls_cert_not_after",
            "Expiry of the serving certificate in service, seconds since the epoch",
            Unit::Seconds,
            self.cert_not_after.clone(),
        );
        registry.register(
            "connections",
            "Connections open, by port",
            self.connections.clone(),
        );
    }

    pub(crate) fn tls_reload(&self, result: Reload) {
        self.tls_reloads
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub(crate) fn set_cert_not_after(&self, not_after: i64) {
        self.cert_not_after.set(not_after);
    }

    /// The gauge of connections open on `port`, for its accept loop to keep.
    pub(crate) fn connections(&self, port: &'static str) -> Gauge {
        self.connections.get_or_create(&PortLabels { port }).clone()
    }
}

/// The admission app's metrics, with the shell's in the same registry.
pub(crate) struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    duration: Histogram,
    patch_bytes: Histogram,
    rejected: Family<ReasonLabels, Counter>,
    cache_synced: Family<CacheLabels, Gauge>,
    in_flight: Gauge,
    budget_waiting: Gauge,
    budget_held: Gauge,
    /// Encoding reads the registry while scrapes may race; one scrape at a time is plenty.
    scrape: Mutex<()>,
}

impl Metrics {
    pub(crate) fn new(shell: &ShellMetrics) -> Self {
        let mut registry = Registry::with_prefix("sbmesh");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "AdmissionReviews answered, by outcome and identity mode",
            admissions.clone(),
        );
        // 50 µs to ~6.5 s: a warm admission takes well under a millisecond.
        let duration = Histogram::new(
            [
                50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
            ]
            .into_iter()
            .chain([0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        );
        registry.register_with_unit(
            "admission_duration",
            "Time from the request's arrival to its answer on /mutate",
            Unit::Seconds,
            duration.clone(),
        );
        let patch_bytes = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(64.0, 4.0, 9),
        );
        registry.register_with_unit(
            "patch",
            "Size of the JSON patch returned (before base64)",
            Unit::Bytes,
            patch_bytes.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests to /mutate answered without an AdmissionReview, by reason",
            rejected.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests to /mutate being answered",
            in_flight.clone(),
        );
        let budget_waiting = Gauge::default();
        registry.register(
            "requests_waiting_for_body_budget",
            "Requests to /mutate whose declared body waits for room in the in-flight body budget",
            budget_waiting.clone(),
        );
        let budget_held = Gauge::default();
        registry.register_with_unit(
            "inflight_body",
            "Request body bytes reserved in the in-flight body budget",
            Unit::Bytes,
            budget_held.clone(),
        );
        shell.register(&mut registry);
        let cache_synced = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_synced",
            "1 once the cluster cache has synced",
            cache_synced.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register("build_info", "The running build", build_info.clone());
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);

        for reason in Rejection::ALL {
            let _ = rejected.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }

        Self {
            registry,
            admissions,
            duration,
            patch_bytes,
            rejected,
            cache_synced,
            in_flight,
            budget_waiting,
            budget_held,
            scrape: Mutex::new(()),
        }
    }

    /// One answered `/mutate` request: an AdmissionReview, or a refusal counted as invalid.
    pub(crate) fn admission(
        &self,
        outcome: Outcome,
        mode: Mode,
        seconds: f64,
        patch_bytes: Option<usize>,
    ) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                outcome: outcome.as_str(),
                mode: mode.as_str(),
            })
            .inc();
        self.duration.observe(seconds);
        if let Some(bytes) = patch_bytes {
            self.patch_bytes.observe(bytes as f64);
        }
    }

    pub(crate) fn rejected(&self, reason: Rejection) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Request body bytes reserved in the body budget now.
    pub(crate) fn body_budget_held(&self) -> &Gauge {
        &self.budget_held
    }

    /// Counts a request as waiting for body budget while the guard lives.
    pub(crate) fn waiting_for_body_budget(&self) -> Held {
        Held::new(&self.budget_waiting)
    }

    /// The whole exposition, with cache states and the requests `in_flight` read now.
    pub(crate) fn encode(&self, cluster: &Cluster, in_flight: usize) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        for (cache, synced) in cluster.cache_states() {
            self.cache_synced
                .get_or_create(&CacheLabels { cache })
                .set(i64::from(synced));
        }
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One counted in a gauge while it lives (dropped, cancelled or aborted alike).
pub(crate) struct Held(Gauge);

impl Held {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}
