//! Prometheus metrics, served as OpenMetrics text on the admin port. Cache states are read
//! at scrape time; everything else is recorded as it happens.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::Cluster;

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

/// Why a request to `/mutate` got no AdmissionReview back.
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

pub(crate) struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    duration: Histogram,
    patch_bytes: Histogram,
    rejected: Family<ReasonLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    cert_not_after: Gauge,
    cache_synced: Family<CacheLabels, Gauge>,
    /// Encoding reads the registry while scrapes may race; one scrape at a time is plenty.
    scrape: Mutex<()>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
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
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Attempts to put a changed serving certificate in service",
            tls_reloads.clone(),
        );
        let cert_not_after = Gauge::default();
        registry.register_with_unit(
            "tls_cert_not_after",
            "Expiry of the serving certificate in service, seconds since the epoch",
            Unit::Seconds,
            cert_not_after.clone(),
        );
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

        // Series that exist from the start, so rates work from the first scrape.
        for reason in Rejection::ALL {
            let _ = rejected.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        for result in ["success", "failure"] {
            let _ = tls_reloads.get_or_create(&ResultLabels { result });
        }

        Self {
            registry,
            admissions,
            duration,
            patch_bytes,
            rejected,
            tls_reloads,
            cert_not_after,
            cache_synced,
            scrape: Mutex::new(()),
        }
    }

    pub(crate) fn admission(
        &self,
        outcome: &'static str,
        mode: &'static str,
        seconds: f64,
        patch_bytes: Option<usize>,
    ) {
        self.admissions
            .get_or_create(&AdmissionLabels { outcome, mode })
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

    pub(crate) fn tls_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(crate) fn set_cert_not_after(&self, not_after: Option<i64>) {
        // 0 says "unknown", which an expiry alert treats as already expired: loud, not silent.
        self.cert_not_after.set(not_after.unwrap_or(0));
    }

    /// The whole exposition, with cache states read now.
    pub(crate) fn encode(&self, cluster: &Cluster) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
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
