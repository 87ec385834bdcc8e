//! Accepting and driving connections, whatever service answers on them: a capped accept loop
//! per port, the TLS handshake under a deadline, the protocol picked by ALPN, and a connection
//! that closes gracefully (HTTP/2 GOAWAY, HTTP/1 close once idle) when it has been idle too
//! long or the server drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{CONNECTION, HeaderValue};
use axum::http::{Request, Response, Version};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::metrics::Held;
use super::{Host, Settings};

/// A connection with no request in flight for this long is closed gracefully. hyper closes
/// idle HTTP/1 keep-alive connections itself after `header_read_timeout`; this bounds HTTP/2,
/// whose keep-alive pings only catch dead peers. Longer than the API server's own idle
/// timeout (90 s), so it is normally the client that closes, and GOAWAY makes it race-free
/// when it is not.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// HTTP/2 keep-alive: a peer that does not answer a ping within the timeout is dropped.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause after an accept error (such as running out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a port talks.
#[derive(Clone)]
pub(crate) enum Security {
    Tls(TlsAcceptor),
    /// Plain HTTP/1.1, for the admin port.
    Plain,
}

/// The connection builders and limits shared by every connection.
pub(crate) struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    /// No ALPN offered: tell HTTP/2 from HTTP/1 by its preface.
    sniff: auto::Builder<TokioExecutor>,
}

impl Limits {
    pub(crate) fn new(settings: &Settings) -> Self {
        let mut base = auto::Builder::new(TokioExecutor::new());
        base.http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(settings.header_read_timeout);
        base.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(
                u32::try_from(settings.max_concurrent_requests.max(1)).unwrap_or(u32::MAX),
            )
            .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
        Self {
            max_connections: settings.max_connections.max(1),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: IDLE_TIMEOUT,
            h1: base.clone().http1_only(),
            h2: base.clone().http2_only(),
            sniff: base,
        }
    }
}

/// Everything a port's connections need.
#[derive(Clone)]
pub(crate) struct Port<S> {
    pub(crate) name: &'static str,
    pub(crate) security: Security,
    /// What answers the port's requests; cloned for each.
    pub(crate) service: S,
    pub(crate) limits: Arc<Limits>,
    pub(crate) host: Host,
    /// Connections open on this port.
    pub(crate) open: Gauge,
}

/// What the shell can host: a `tower::Service` answering hyper's requests, that never fails
/// (every error is an HTTP response), with a body hyper can send.
pub(crate) trait Hosted<B>:
    tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> Hosted<B> for S where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body hyper can send from any thread.
pub(crate) trait Body:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> Body for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// Accepts connections until `stop` turns true, then closes the listener and returns the
/// connections still open. At `max_connections` it stops accepting: new connections wait in
/// the kernel's backlog until one closes, rather than being refused.
pub(crate) async fn accept<S, B>(
    listener: TcpListener,
    port: Port<S>,
    mut stop: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
) -> JoinSet<()>
where
    S: Hosted<B>,
    B: Body,
{
    let mut conns = JoinSet::new();
    let mut warned_full = false;
    loop {
        let room = conns.len() < port.limits.max_connections;
        if !room && !warned_full {
            tracing::warn!(
                port = port.name,
                max_connections = port.limits.max_connections,
                "connection limit reached; new connections wait until one closes"
            );
        }
        warned_full = !room;
        tokio::select! {
            biased;
            _ = fired(&mut stop) => break,
            Some(done) = conns.join_next() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(port = port.name, "a connection task panicked: {e}");
                }
            }
            accepted = listener.accept(), if room => match accepted {
                Ok((tcp, peer)) => {
                    let open = Held::new(&port.open);
                    conns.spawn(connection(tcp, peer, port.clone(), drain.clone(), open));
                }
                Err(e) => {
                    tracing::warn!(port = port.name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    conns
}

/// One connection, counted as open while it lives (`_open`).
async fn connection<S, B>(
    tcp: TcpStream,
    peer: SocketAddr,
    port: Port<S>,
    drain: watch::Receiver<bool>,
    _open: Held,
) where
    S: Hosted<B>,
    B: Body,
{
    let _ = tcp.set_nodelay(true);
    match &port.security {
        Security::Plain => drive(TokioIo::new(tcp), &port.limits.h1, &port, drain).await,
        Security::Tls(acceptor) => {
            let handshake =
                tokio::time::timeout(port.limits.header_read_timeout, acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(port = port.name, %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(port = port.name, %peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => &port.limits.h2,
                Some(_) => &port.limits.h1,
                None => &port.limits.sniff,
            };
            drive(TokioIo::new(tls), builder, &port, drain).await
        }
    }
}

/// Serves one connection to its end; on drain or idleness it is asked to close gracefully
/// (in-flight requests finish) and driven until it has.
async fn drive<I, S, B>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    port: &Port<S>,
    mut drain: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Hosted<B>,
    B: Body,
{
    let activity = Activity::new();
    let service = {
        let activity = activity.clone();
        let hosted = port.service.clone();
        let host = port.host.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = activity.busy();
            let hosted = hosted.clone();
            let host = host.clone();
            async move {
                let http1 = request.version() < Version::HTTP_2;
                let mut response = hosted.oneshot(request).await?;
                // While draining, HTTP/1 clients are told not to reuse the connection, so few
                // idle keep-alive connections are left to close under a client's feet.
                if http1 && host.draining() {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let limits = &port.limits;
    // `closing`: asked to close gracefully. `draining`: the server drains, but this connection
    // has not received a request yet; hyper would close it at once and race a request the
    // client may be writing, so it is asked to close once its first request arrives (or when
    // none arrives in time). Meanwhile HTTP/1 responses carry `Connection: close`.
    let mut closing = false;
    let mut draining = false;
    loop {
        // Once asked to close, a connection with nothing in flight gets `header_read_timeout`
        // to do so: an HTTP/2 client that never finished its preface ignores GOAWAY.
        let idle = if closing {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(port = port.name, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = fired(&mut drain), if !closing && !draining => {
                draining = true;
                if activity.served() > 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = activity.first_request(), if draining && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.idle(limits.header_read_timeout, idle) => {
                if closing {
                    tracing::debug!(port = port.name, "connection did not close when asked; dropping it");
                    return;
                }
                tracing::debug!(port = port.name, "closing idle connection");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Completes once the flag is true (or its sender is gone).
pub(crate) async fn fired(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

#[derive(Clone, Copy, Default)]
struct Load {
    in_flight: usize,
    served: u64,
}

/// Requests in flight on one connection, to tell when it has been idle for long enough.
#[derive(Clone)]
struct Activity(Arc<watch::Sender<Load>>);

struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.0.send_modify(|l| l.in_flight -= 1);
    }
}

impl Activity {
    fn new() -> Self {
        Self(Arc::new(watch::Sender::new(Load::default())))
    }

    fn busy(&self) -> Busy {
        self.0.send_modify(|l| {
            l.in_flight += 1;
            l.served += 1;
        });
        Busy(self.clone())
    }

    fn served(&self) -> u64 {
        self.0.borrow().served
    }

    /// Completes once a request has arrived.
    async fn first_request(&self) {
        let _ = self.0.subscribe().wait_for(|l| l.served > 0).await;
    }

    /// Completes once nothing has been in flight for `idle` (`first` before the first
    /// request, which a client that opens a connection sends at once).
    async fn idle(&self, first: Duration, idle: Duration) {
        let mut load = self.0.subscribe();
        loop {
            let now = *load.borrow_and_update();
            if now.in_flight == 0 {
                let wait = if now.served == 0 { first } else { idle };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => return,
                    _ = load.changed() => {}
                }
            } else {
                // The sender lives as long as `self`, so this does not fail.
                let _ = load.changed().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(2);
    const IDLE: Duration = Duration::from_secs(120);

    async fn idles_within(activity: &Activity, limit: Duration) -> bool {
        tokio::time::timeout(limit, activity.idle(FIRST, IDLE))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_connection_is_idle_after_first_timeout() {
        let activity = Activity::new();
        assert!(!idles_within(&activity, FIRST - Duration::from_millis(1)).await);
        assert!(idles_within(&activity, FIRST + Duration::from_millis(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn connection_with_request_in_flight_is_never_idle() {
        let activity = Activity::new();
        let busy = activity.busy();
        assert!(!idles_within(&activity, IDLE * 3).await);
        drop(busy);
        assert!(!idles_within(&activity, IDLE - Duration::from_millis(1)).await);
        assert!(idles_within(&activity, IDLE + Duration::from_millis(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_restarts_the_idle_clock() {
        let activity = Activity::new();
        drop(activity.busy());
        let idle = activity.idle(FIRST, IDLE);
        tokio::pin!(idle);
        assert!(tokio::time::timeout(IDLE / 2, idle.as_mut()).await.is_err());
        drop(activity.busy());
        assert!(
            tokio::time::timeout(IDLE / 2 + IDLE / 4, idle.as_mut())
                .await
                .is_err()
        );
        assert!(tokio::time::timeout(IDLE / 2, idle.as_mut()).await.is_ok());
    }
}
