//! The HTTPS admission server: a thin shell that reads AdmissionReviews off TLS connections
//! (ALPN h2 and http/1.1, certificate hot-reloaded from disk), hands them to the pure core in
//! `admission`, and drains gracefully when told to stop. A plain-HTTP admin port serves
//! metrics and probes.
//!
//! [`serve`] takes bound listeners and its shutdown trigger as parameters, so a test binds
//! `127.0.0.1:0`, spawns it, and stops it with a channel.

mod admin;
mod conn;
mod metrics;
mod tls;
mod webhook;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use conn::IDLE_TIMEOUT;
pub use tls::TlsError;

use crate::cluster::Cluster;
use crate::contract::Defaults;

/// Limits and timings. The defaults suit a webhook called by the API server with
/// `timeoutSeconds: 5`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest request body; bigger ones get HTTP 413.
    pub body_limit: usize,
    /// HTTP/1 request headers must arrive within this (hyper also closes an idle keep-alive
    /// connection after it); it also bounds the TLS handshake, and the wait for an HTTP/2
    /// connection's first request.
    pub header_read_timeout: Duration,
    /// A `/mutate` request not answered within this gets HTTP 504; below the webhook's
    /// `timeoutSeconds`, so the API server sees why.
    pub request_timeout: Duration,
    /// Connections open at once per port; beyond it the listener is not accepted from, so new
    /// connections wait in the kernel's backlog until one closes (none is refused).
    pub max_connections: usize,
    /// `/mutate` requests in flight at once; beyond it, HTTP 503 at once.
    pub max_concurrent_requests: usize,
    /// Request body bytes held at once across all requests (bodies and the work on them are
    /// what memory grows with). A request whose body would exceed it waits for room, within
    /// `request_timeout`. Must be at least `body_limit`.
    pub max_inflight_body_bytes: usize,
    /// After the shutdown signal: not ready, but still accepting, for this long, so the
    /// Service's endpoints can drop this pod before the listener closes.
    pub drain_grace: Duration,
    /// After the listener closes: how long in-flight requests get to finish.
    pub shutdown_timeout: Duration,
    /// How often the certificate and key files are re-read.
    pub cert_reload_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            body_limit: 8 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(4),
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_inflight_body_bytes: 16 * 1024 * 1024,
            drain_grace: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(15),
            cert_reload_interval: Duration::from_secs(1),
        }
    }
}

/// The serving certificate (PEM, leaf first, chain after) and its private key (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What admissions are decided with.
#[derive(Clone)]
pub struct App {
    pub defaults: Arc<Defaults>,
    pub cluster: Cluster,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "the in-flight body budget ({budget} bytes) is smaller than the body limit ({limit} bytes): \
         a request at the limit could never be read"
    )]
    Budget { budget: usize, limit: usize },
}

/// Whether this replica should get traffic.
pub(crate) struct Health {
    serving: AtomicBool,
    draining: AtomicBool,
    cluster: Cluster,
}

impl Health {
    /// Why the replica is not ready, or `None` when it is.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if self.draining() {
            Some("shutting down")
        } else if !self.serving.load(Ordering::Acquire) {
            Some("not serving yet")
        } else if !self.cluster.ready() {
            Some("cluster caches not synced")
        } else {
            None
        }
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// State the routes share.
pub(crate) struct Shared {
    app: App,
    metrics: Arc<metrics::Metrics>,
    health: Arc<Health>,
    in_flight: Arc<Semaphore>,
    /// Request body bytes in flight, in KiB units.
    body_budget: Arc<Semaphore>,
    max_concurrent_requests: usize,
    body_limit: usize,
    request_timeout: Duration,
}

/// Serves admissions on `webhook` (TLS) and, when given, metrics and probes on `admin`, until
/// `shutdown` completes; then drains: not ready at once, still accepting for `drain_grace`,
/// then the listeners close and open connections finish their requests (HTTP/2 gets GOAWAY,
/// idle HTTP/1 connections close) within `shutdown_timeout`, and `serve` returns.
///
/// Fails at start when the certificate or key cannot be loaded.
pub async fn serve(
    webhook: TcpListener,
    admin: Option<TcpListener>,
    tls: TlsFiles,
    app: App,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let provider = tls::provider();
    let metrics = Arc::new(metrics::Metrics::new());
    let loaded = tls::load(&tls, &provider).await?;
    let (resolver, snapshot) = loaded.into_resolver(&metrics);
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(
        provider.clone(),
        resolver.clone(),
    )?));

    if settings.max_inflight_body_bytes < settings.body_limit {
        return Err(ServeError::Budget {
            budget: settings.max_inflight_body_bytes,
            limit: settings.body_limit,
        });
    }
    let health = Arc::new(Health {
        serving: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        cluster: app.cluster.clone(),
    });
    let shared = Arc::new(Shared {
        app,
        metrics: metrics.clone(),
        health: health.clone(),
        in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
        body_budget: Arc::new(Semaphore::new(budget_units(
            settings.max_inflight_body_bytes,
        ))),
        max_concurrent_requests: settings.max_concurrent_requests,
        body_limit: settings.body_limit,
        request_timeout: settings.request_timeout,
    });
    let limits = Arc::new(conn::Limits::new(&settings));
    // `stop`: stop accepting (and reloading); `drain`: ask open connections to close.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);

    let reload = tokio::spawn(tls::reload(
        tls,
        provider,
        resolver,
        snapshot,
        settings.cert_reload_interval,
        metrics,
        stop_rx.clone(),
    ));

    let webhook_addr = webhook.local_addr().ok();
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let mut ports = vec![tokio::spawn(conn::accept(
        webhook,
        conn::Port {
            name: "webhook",
            security: conn::Security::Tls(acceptor),
            router: webhook::router(shared.clone()),
            limits: limits.clone(),
            health: health.clone(),
        },
        stop_rx.clone(),
        drain_rx.clone(),
    ))];
    if let Some(admin) = admin {
        ports.push(tokio::spawn(conn::accept(
            admin,
            conn::Port {
                name: "admin",
                security: conn::Security::Plain,
                router: admin::router(shared.clone()),
                limits,
                health: health.clone(),
            },
            stop_rx,
            drain_rx,
        )));
    }
    health.serving.store(true, Ordering::Release);
    tracing::info!(webhook = ?webhook_addr, admin = ?admin_addr, "serving");

    shutdown.await;
    health.draining.store(true, Ordering::Release);
    tracing::info!(
        grace = ?settings.drain_grace,
        "shutting down: not ready; still accepting connections during the grace period"
    );
    tokio::time::sleep(settings.drain_grace).await;

    let _ = stop_tx.send(true);
    let mut open: Vec<JoinSet<()>> = Vec::new();
    for port in ports {
        match port.await {
            Ok(conns) => open.push(conns),
            Err(e) => tracing::error!("an accept loop failed: {e}"),
        }
    }
    let _ = drain_tx.send(true);
    let count: usize = open.iter().map(JoinSet::len).sum();
    tracing::info!(connections = count, timeout = ?settings.shutdown_timeout, "listeners closed; draining connections");
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        for conns in &mut open {
            while conns.join_next().await.is_some() {}
        }
    })
    .await;
    if drained.is_err() {
        let left: usize = open.iter().map(JoinSet::len).sum();
        tracing::warn!(
            connections = left,
            "connections still open after the shutdown timeout; closing them"
        );
        for conns in &mut open {
            conns.shutdown().await;
        }
    }
    // The loop survives anything a poll meets; should it still have died, say so.
    if let Err(e) = reload.await {
        tracing::error!("the certificate reload task failed: {e}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Body budget unit: KiB, so that a u32 of permits covers any realistic budget.
pub(crate) const BUDGET_UNIT: usize = 1024;

pub(crate) fn budget_units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT).min(Semaphore::MAX_PERMITS)
}
