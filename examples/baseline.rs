//! Load-test helper for `bench/load.sh`.
//!
//! `baseline serve`: the **baseline** the webhook is measured against. The same TLS and HTTP
//! stack as `sbmesh serve` (rustls with ring, TLS 1.2/1.3, ALPN h2 then http/1.1, hyper-util's
//! HTTP/1 and HTTP/2 builders with the same timeouts and stream cap, an axum router, the body
//! read under the same limit), answering every `POST /mutate` with FIXED bytes: the response
//! the webhook gives the typical pod, encoded once at start. What the webhook costs beyond
//! this is the admission itself (parse, plan, mutate, encode), its logging and metrics.
//! `sbmesh::server::serve` cannot be reused for this: its handler is the real one.
//!
//! `baseline bodies DIR`: writes the request bodies the benchmarks use (`benches/support`).
//!
//! `baseline ready-time ADMIN_ADDR -- CMD ARGS…`: runs CMD and prints the milliseconds from
//! spawning it until `GET /readyz` on ADMIN_ADDR answers 200 (polled back to back), then
//! stops it with SIGTERM.
//!
//! `baseline core NAME N`: runs the admission core (`admission::review` and the response
//! encoding) N times on one of the bodies, in one thread, with no I/O: the workload to put
//! under `valgrind --tool=callgrind` or `perf record`.

#[path = "../benches/support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use sbmesh::admission;
use sbmesh::contract::{Context, IdentityMode};

#[derive(Parser)]
#[command(
    about = "sbmesh load-test helper: fixed-response baseline server, request bodies, start-up timer"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve fixed response bytes through the webhook's TLS + HTTP stack.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        #[arg(long)]
        tls_cert: PathBuf,
        #[arg(long)]
        tls_key: PathBuf,
    },
    /// Write the benchmark request bodies (typical.json, env1500.json, …) into DIR.
    Bodies { dir: PathBuf },
    /// Run the admission core N times on body NAME (typical, env1500, containers30, pod1mib).
    Core { name: String, n: u32 },
    /// Time from spawning CMD until GET /readyz on ADMIN answers 200, in milliseconds.
    ReadyTime {
        admin: SocketAddr,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// The webhook's defaults (`sbmesh::server::Settings::default()`), repeated here so the
/// baseline cannot drift silently: `bench/load.sh` starts both with their defaults.
const BODY_LIMIT: usize = 8 * 1024 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONCURRENT_REQUESTS: usize = 256;
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Serve {
            listen,
            tls_cert,
            tls_key,
        } => serve(listen, tls_cert, tls_key),
        Cmd::Bodies { dir } => bodies(&dir),
        Cmd::ReadyTime { admin, command } => ready_time(admin, &command),
        Cmd::Core { name, n } => core(&name, n),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baseline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bodies(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for body in support::all() {
        let path = dir.join(format!("{}.json", body.name));
        std::fs::write(&path, &body.bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}\t{}\t{}", path.display(), body.bytes.len(), body.what);
    }
    Ok(())
}

fn core(name: &str, n: u32) -> anyhow::Result<()> {
    let body = match name {
        "typical" => support::typical(),
        "env1500" => support::env1500(),
        "containers30" => support::containers30(),
        "pod1mib" => support::pod1mib(),
        other => bail!("no body named {other}"),
    };
    let (ctx, defaults) = (Context::offline(IdentityMode::Inject), support::defaults());
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        let response = admission::review(std::hint::black_box(&body), &ctx, &defaults)?;
        bytes += response.to_review_json().len();
    }
    let per = started.elapsed() / n.max(1);
    println!(
        "{name}: {n} admissions, {per:?} each, {} response bytes each",
        bytes / n.max(1) as usize
    );
    Ok(())
}

fn ready_time(admin: SocketAddr, command: &[String]) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("no command given")?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let deadline = started + Duration::from_secs(10);
    let ready = loop {
        if readyz(admin) {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    // SIGTERM, so the child drains and exits as it would under kubelet.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    match ready {
        Some(t) => {
            println!("{:.1}", t.as_secs_f64() * 1000.0);
            Ok(())
        }
        None => bail!("{program} was not ready on {admin} within 10 s"),
    }
}

fn readyz(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The webhook's answer to the typical pod: what the baseline sends for every request.
fn fixed_response() -> anyhow::Result<Bytes> {
    let response = admission::review(
        &support::typical(),
        &Context::offline(IdentityMode::Inject),
        &support::defaults(),
    )
    .context("the typical body is a valid review")?;
    Ok(Bytes::from(response.to_review_json()))
}

fn tls_config(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())?.context("no private key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    sniff: auto::Builder<TokioExecutor>,
}

fn builders() -> Builders {
    let mut base = auto::Builder::new(TokioExecutor::new());
    base.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(HEADER_READ_TIMEOUT);
    base.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_REQUESTS as u32)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    Builders {
        h1: base.clone().http1_only(),
        h2: base.clone().http2_only(),
        sniff: base,
    }
}

#[derive(Clone)]
struct Fixed {
    body: Bytes,
    in_flight: Arc<Semaphore>,
}

async fn mutate(axum::extract::State(fixed): axum::extract::State<Fixed>, body: Body) -> Response {
    let Ok(_permit) = fixed.in_flight.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    };
    // Read the body as the webhook does, then throw it away.
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => drop(collected.to_bytes()),
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "too large\n").into_response(),
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        fixed.body.clone(),
    )
        .into_response()
}

fn serve(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> anyhow::Result<()> {
    let fixed = Fixed {
        body: fixed_response()?,
        in_flight: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&cert, &key)?));
    let router = Router::new()
        .route("/mutate", post(mutate))
        .route("/readyz", get(|| async { "ok\n" }))
        .with_state(fixed);
    let builders = Arc::new(builders());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("baseline: serving fixed responses on {listen}");
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("baseline: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, router, builders) = (acceptor.clone(), router.clone(), builders.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let builder = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => &builders.h2,
                    Some(_) => &builders.h1,
                    None => &builders.sniff,
                };
                let service =
                    hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
                        let router = router.clone();
                        async move {
                            let response = router.oneshot(request.map(Body::new)).await;
                            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                        }
                    });
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    })
}
