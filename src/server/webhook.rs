//! The admission app's webhook port: `POST /mutate` (admit under the in-flight cap and the
//! request timeout, read the body, decide, answer), `/healthz` and `/readyz`.
//!
//! [`decide`] is the one place that calls the admission core; the rest is HTTP around it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt as _;
use tracing::Instrument as _;

use super::app::{App, Shared};
use super::body;
use super::metrics::Mode;
use super::refusal::{Refusal, one_line};
use crate::admission::{self, Outcome, Triage};
use crate::core;

/// Bodies above this are parsed and mutated on the blocking pool rather than inline. Measured
/// (debug build, so an upper bound): a 17 KiB review takes ~0.3 ms, 256 KiB ~3.6 ms, 8 MiB
/// ~140 ms. Typical pods (5–20 KiB) stay inline, where a thread handoff would cost more than
/// the work; big ones must not stall a runtime worker that other connections share.
const BLOCKING_ABOVE: usize = 64 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(shared)
}

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.not_ready() {
        None => "ok\n".into_response(),
        Some(why) => one_line(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

pub(crate) async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    Refusal::NotFound
        .counted(&shared.metrics, Instant::now())
        .into_response()
}

async fn mutate(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let Ok(_permit) = shared.in_flight.try_acquire() else {
        let limit = shared.max_concurrent_requests;
        return Refusal::Overloaded { limit }
            .counted(&shared.metrics, started)
            .into_response();
    };
    let span = tracing::info_span!("admission", uid = tracing::field::Empty);
    let answer = admit(&shared, request.into_body(), started).instrument(span.clone());
    let limit = shared.request_timeout;
    let answered = tokio::time::timeout(limit, answer)
        .await
        .unwrap_or_else(|_| Err(Refusal::Timeout { limit }));
    match answered {
        Ok(response) => response,
        Err(refusal) => span.in_scope(|| refusal.counted(&shared.metrics, started).into_response()),
    }
}

/// Reads the body, decides, counts the admission and answers with the AdmissionReview.
async fn admit(shared: &Shared, body: Body, started: Instant) -> Result<Response, Refusal> {
    // The budget stays taken until the answer is rendered: parsing and mutating grow with it.
    let (body, _budget) = body::read(shared, body).await?;
    let decided = if body.len() > BLOCKING_ABOVE {
        // Big bodies are parsed and mutated on the blocking pool, so they do not stall a
        // runtime worker; a cache miss's lookup is driven from there.
        let app = shared.app.clone();
        let runtime = tokio::runtime::Handle::current();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                span.in_scope(|| runtime.block_on(decide(&app, &body, started)))
            }))
        })
        .await
        .map_err(|_| Refusal::Panicked)?
    } else {
        AssertUnwindSafe(decide(&shared.app, &body, started))
            .catch_unwind()
            .await
    };
    // A panic in the core is a bug; the API server gets a clear 500 and the process lives on.
    let decided = decided.map_err(|_| Refusal::Panicked)??;
    shared.metrics.admission(
        decided.outcome,
        decided.mode,
        started.elapsed().as_secs_f64(),
        decided.patch_bytes,
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(decided.json),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// The admission decision: everything the server asks of the admission core, and nothing else.
// Nothing outside this section calls `admission`, `core` or the cluster.

/// An AdmissionReview answer, encoded, and what it is counted as.
struct Decided {
    json: Vec<u8>,
    outcome: Outcome,
    mode: Mode,
    ops: usize,
    patch_bytes: Option<usize>,
}

impl Decided {
    fn of(response: admission::Response, mode: Mode) -> Self {
        let (json, patch_bytes) = response.encode();
        Self {
            json,
            outcome: response.outcome,
            mode,
            ops: response.ops(),
            patch_bytes,
        }
    }
}

/// Decides one review over the body it borrows: parse once, sort, look up the cluster's view
/// of an opted-in pod, run the core, encode. Logs one line per decided request. A body that
/// is not a review is a [`Refusal`].
async fn decide(app: &App, body: &[u8], started: Instant) -> Result<Decided, Refusal> {
    let request = admission::parse(body).map_err(Refusal::NotAReview)?;
    tracing::Span::current().record("uid", &*request.uid);
    let decided = match admission::triage(&request) {
        Triage::Answer(response) => Decided::of(*response, Mode::None),
        Triage::Pod {
            pod,
            namespace,
            service_account,
        } => match app.cluster.facts(namespace, service_account).await {
            Err(denial) => Decided::of(admission::Response::deny(&request.uid, denial), Mode::None),
            Ok(facts) => {
                let ctx = facts.context();
                let admission = core::admit(pod, namespace, &ctx, &app.defaults);
                Decided::of(
                    admission::Response::of(&request.uid, admission),
                    Mode::Of(ctx.identity_mode),
                )
            }
        },
    };
    tracing::info!(
        uid = &*request.uid,
        namespace = request.namespace(),
        name = request.display_name(),
        operation = request.operation.as_str(),
        dry_run = request.dry_run.unwrap_or(false),
        outcome = decided.outcome.as_str(),
        mode = decided.mode.as_str(),
        ops = decided.ops,
        patch_bytes = decided.patch_bytes.unwrap_or(0),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "admission"
    );
    Ok(decided)
}
