//! The HTTPS server: a shell that hosts any `tower::Service`, and the admission app it is
//! built for.
//!
//! The shell ([`serve`]) owns everything about connections: TLS with the certificate
//! hot-reloaded from disk (ALPN h2 and http/1.1), a capped accept loop per port, the HTTP/1
//! and HTTP/2 builders and their timeouts, a graceful drain when told to stop, and a
//! plain-HTTP admin port. The admission app (`app`, `webhook`, `body`, `admin`) reads
//! AdmissionReviews, hands them to the pure core in `admission` and answers;
//! [`serve_admission`] runs it in the shell. The load test's baseline runs a fixed-bytes
//! service in the same shell (`examples/baseline.rs`).
//!
//! Both take bound listeners and their shutdown trigger as parameters, so a test binds
//! `127.0.0.1:0`, spawns the server, and stops it with a channel.

mod admin;
mod app;
mod body;
mod conn;
mod metrics;
mod refusal;
mod tls;
mod webhook;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http;
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use app::App;
pub use conn::IDLE_TIMEOUT;
pub use tls::TlsError;
pub(crate) use tls::provider as tls_provider;

use metrics::ShellMetrics;

/// Limits and timings. The defaults suit a webhook called by the API server with
/// `timeoutSeconds: 5`. The shell uses the connection settings; the admission app the body
/// and request ones (`max_concurrent_requests` is both: it also caps HTTP/2 streams).
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
    /// `/mutate` requests in flight at once; beyond it, HTTP 503 at once. Also the HTTP/2
    /// concurrent-stream limit per connection.
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

/// The bound ports: the webhook port speaks TLS; the admin port, when there is one, plain
/// HTTP/1.1 (for the kubelet and Prometheus, not the API server).
pub struct Listeners {
    pub webhook: TcpListener,
    pub admin: Option<TcpListener>,
}

/// What answers on each port. `admin` is used only when there is an admin listener.
pub struct Services<S> {
    pub webhook: S,
    pub admin: S,
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

/// What the shell tells the services it hosts: whether it serves or drains, and the metrics
/// it records (for an app that serves metrics to expose).
#[derive(Clone)]
pub struct Host(Arc<HostState>);

struct HostState {
    serving: AtomicBool,
    draining: AtomicBool,
    metrics: ShellMetrics,
}

impl Host {
    fn new() -> Self {
        Self(Arc::new(HostState {
            serving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            metrics: ShellMetrics::new(),
        }))
    }

    /// Why the shell should get no traffic (not serving yet, or shutting down), or `None`.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining() {
            Some("shutting down")
        } else if !self.0.serving.load(Ordering::Acquire) {
            Some("not serving yet")
        } else {
            None
        }
    }

    /// True from the shutdown signal on.
    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    pub(crate) fn metrics(&self) -> &ShellMetrics {
        &self.0.metrics
    }
}

/// Serves admissions with `app` in the shell: `POST /mutate`, `/healthz` and `/readyz` on the
/// webhook port; `/metrics`, `/livez` and `/readyz` on the admin port. See [`serve`] for the
/// drain.
///
/// Fails at start when the certificate or key cannot be loaded, or the body budget is below
/// the body limit.
pub async fn serve_admission(
    listeners: Listeners,
    tls: TlsFiles,
    app: App,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    app::check(&settings)?;
    let limits = settings.clone();
    serve(
        listeners,
        tls,
        move |host| app::services(host, app, &limits),
        settings,
        shutdown,
    )
    .await
}

/// Serves what `services` builds (given the [`Host`], once) on `listeners.webhook` (TLS) and,
/// when given, `listeners.admin`, until `shutdown` completes; then drains: not ready at once,
/// still accepting for `drain_grace`, then the listeners close and open connections finish
/// their requests (HTTP/2 gets GOAWAY, idle HTTP/1 connections close, HTTP/1 responses say
/// `Connection: close`) within `shutdown_timeout`, and `serve` returns.
///
/// Any `tower::Service` can be hosted: each request is handed to a clone of it (after
/// `poll_ready`), so a `Router` or a service that sheds load in `poll_ready` both work.
///
/// Fails at start when the certificate or key cannot be loaded.
pub async fn serve<S, B>(
    listeners: Listeners,
    tls: TlsFiles,
    services: impl FnOnce(&Host) -> Services<S>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let host = Host::new();
    let provider = tls::provider();
    let loaded = tls::load(&tls, &provider).await?;
    let (resolver, snapshot) = loaded.into_resolver(host.metrics());
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(
        provider.clone(),
        resolver.clone(),
    )?));
    let services = services(&host);
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
        host.metrics().clone(),
        stop_rx.clone(),
    ));

    let webhook_addr = listeners.webhook.local_addr().ok();
    let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    let port = |name: &'static str, security, service| conn::Port {
        name,
        security,
        service,
        limits: limits.clone(),
        host: host.clone(),
        open: host.metrics().connections(name),
    };
    let mut ports = vec![tokio::spawn(conn::accept(
        listeners.webhook,
        port("webhook", conn::Security::Tls(acceptor), services.webhook),
        stop_rx.clone(),
        drain_rx.clone(),
    ))];
    if let Some(admin) = listeners.admin {
        ports.push(tokio::spawn(conn::accept(
            admin,
            port("admin", conn::Security::Plain, services.admin),
            stop_rx,
            drain_rx,
        )));
    }
    host.0.serving.store(true, Ordering::Release);
    tracing::info!(webhook = ?webhook_addr, admin = ?admin_addr, "serving");

    shutdown.await;
    host.0.draining.store(true, Ordering::Release);
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
