//! Load-test helper for `bench/load.sh`.
//!
//! `baseline serve`: the **baseline** the webhook is measured against. The webhook's own shell,
//! `sbmesh::server::serve` with the default settings (TLS with the certificate reloaded from
//! disk, ALPN h2 then http/1.1, the same accept loop, HTTP/1 and HTTP/2 builders, timeouts,
//! stream cap and drain), hosting an axum router that reads the body under the same limit and
//! answers every `POST /mutate` with FIXED bytes: the response the webhook gives the typical
//! pod, encoded once at start. What the webhook costs beyond this is the admission itself
//! (parse, plan, mutate, encode), its logging and metrics.
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

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Limited};
use tokio::sync::Semaphore;

use sbmesh::admission;
use sbmesh::contract::{Context, IdentityMode};
use sbmesh::server::{self, Host, Listeners, Services, Settings, TlsFiles};

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
    /// Serve fixed response bytes in the webhook's server shell.
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

/// What the baseline answers with, and the webhook's limits it reads bodies under.
#[derive(Clone)]
struct Fixed {
    body: Bytes,
    body_limit: usize,
    in_flight: Arc<Semaphore>,
}

async fn mutate(State(fixed): State<Fixed>, body: Body) -> Response {
    let Ok(_permit) = fixed.in_flight.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    };
    // Read the body under the webhook's limit, then throw it away.
    match Limited::new(body, fixed.body_limit).collect().await {
        Ok(collected) => drop(collected.to_bytes()),
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "too large\n").into_response(),
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        fixed.body.clone(),
    )
        .into_response()
}

/// The webhook's shell (`sbmesh::server::serve`) with its default settings, hosting a router
/// that answers `POST /mutate` with fixed bytes.
fn serve(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> anyhow::Result<()> {
    let settings = Settings::default();
    let fixed = Fixed {
        body: fixed_response()?,
        body_limit: settings.body_limit,
        in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
    };
    let router = Router::new()
        .route("/mutate", post(mutate))
        .route("/readyz", get(|| async { "ok\n" }))
        .with_state(fixed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let webhook = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("baseline: serving fixed responses on {listen}");
        let listeners = Listeners {
            webhook,
            admin: None,
        };
        let services = |_: &Host| Services {
            webhook: router.clone(),
            admin: router,
        };
        let tls = TlsFiles { cert, key };
        // Stopped by a signal, like any process without a handler.
        server::serve(listeners, tls, services, settings, std::future::pending())
            .await
            .context("baseline server")
    })
}
