//! The admission app the shell hosts: what admissions are decided with ([`App`]), the state
//! its routes share, and the assembly of its two routers (webhook and admin port).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::Semaphore;

use super::metrics::Metrics;
use super::{Host, ServeError, Services, Settings};
use crate::cluster::Cluster;
use crate::contract::Defaults;

/// What admissions are decided with.
#[derive(Clone)]
pub struct App {
    pub defaults: Arc<Defaults>,
    pub cluster: Cluster,
    /// With self-managed certificates: whether the served certificate chains to the caBundle
    /// (not ready until it does).
    pub certs: Option<crate::selfmanaged::Trusted>,
}

/// State the routes share.
pub(crate) struct Shared {
    pub(crate) app: App,
    pub(crate) host: Host,
    pub(crate) metrics: Metrics,
    /// `/mutate` requests in flight.
    pub(crate) in_flight: Semaphore,
    pub(crate) max_concurrent_requests: usize,
    /// Request body bytes in flight, in [`BUDGET_UNIT`]s.
    pub(crate) body_budget: Arc<Semaphore>,
    pub(crate) body_limit: usize,
    pub(crate) request_timeout: Duration,
}

impl Shared {
    /// `/mutate` requests being answered now.
    pub(crate) fn in_flight(&self) -> usize {
        self.max_concurrent_requests
            .saturating_sub(self.in_flight.available_permits())
    }

    /// Why this replica should get no traffic, or `None` when it should.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        self.host
            .not_ready()
            .or_else(|| (!self.app.cluster.ready()).then_some("cluster caches not synced"))
            .or_else(|| {
                self.app
                    .certs
                    .as_ref()
                    .is_some_and(|t| !t.get())
                    .then_some("the served certificate does not chain to the caBundle yet")
            })
    }
}

/// Refuses settings the app cannot work with.
pub(crate) fn check(settings: &Settings) -> Result<(), ServeError> {
    if settings.max_inflight_body_bytes < settings.body_limit {
        return Err(ServeError::Budget {
            budget: settings.max_inflight_body_bytes,
            limit: settings.body_limit,
        });
    }
    Ok(())
}

/// The webhook and admin routers, sharing one state.
pub(crate) fn services(host: &Host, app: App, settings: &Settings) -> Services<Router> {
    let shared = Arc::new(Shared {
        app,
        host: host.clone(),
        metrics: Metrics::new(host.metrics()),
        in_flight: Semaphore::new(settings.max_concurrent_requests),
        max_concurrent_requests: settings.max_concurrent_requests,
        body_budget: Arc::new(Semaphore::new(budget_units(
            settings.max_inflight_body_bytes,
        ))),
        body_limit: settings.body_limit,
        request_timeout: settings.request_timeout,
    });
    Services {
        webhook: super::webhook::router(shared.clone()),
        admin: super::admin::router(shared),
    }
}

/// Body budget unit: KiB, so that a u32 of permits covers any realistic budget.
pub(crate) const BUDGET_UNIT: usize = 1024;

pub(crate) fn budget_units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT).min(Semaphore::MAX_PERMITS)
}
