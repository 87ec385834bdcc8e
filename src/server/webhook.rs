//! The webhook port's routes: `POST /mutate` (read the body under a limit, hand it to the pure
//! core, look up the cluster's facts for an opted-in pod, answer), `/healthz` and `/readyz`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use super::Shared;
use super::metrics::Rejection;
use crate::admission::{self, Triage};
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
    match shared.health.not_ready() {
        None => "ok\n".into_response(),
        Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

pub(crate) async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found".into())
}

/// A one-line plain-text answer.
pub(crate) fn text(status: StatusCode, message: String) -> Response {
    let mut line = message.replace(['\n', '\r'], " ");
    line.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        line,
    )
        .into_response()
}

async fn mutate(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let Ok(_permit) = shared.in_flight.clone().try_acquire_owned() else {
        shared.metrics.rejected(Rejection::Overloaded);
        let limit = shared.max_concurrent_requests;
        tracing::warn!(limit, "admission request refused: too many in flight");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("sbmesh: {limit} admission requests already in flight; try again"),
        );
    };
    let span = tracing::info_span!("admission", uid = tracing::field::Empty);
    let answer =
        admit(&shared, request.into_body(), started, span.clone()).instrument(span.clone());
    match tokio::time::timeout(shared.request_timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            shared.metrics.rejected(Rejection::Timeout);
            let limit = shared.request_timeout;
            span.in_scope(|| {
                tracing::warn!(
                    latency_us = micros(started),
                    "admission request not answered within {limit:?}"
                );
            });
            text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("sbmesh: the admission request was not answered within {limit:?}"),
            )
        }
    }
}

/// A response ready to send, and what the log line and metrics say of it.
struct Rendered {
    outcome: admission::Outcome,
    mode: &'static str,
    ops: usize,
    patch_bytes: Option<usize>,
    json: Vec<u8>,
}

impl Rendered {
    fn of(response: admission::Response, mode: &'static str) -> Self {
        let (json, patch_bytes) = response.encode();
        Rendered {
            outcome: response.outcome,
            mode,
            ops: response.ops(),
            patch_bytes,
            json,
        }
    }
}

async fn admit(shared: &Shared, body: Body, started: Instant, span: tracing::Span) -> Response {
    // The budget stays taken until the answer is rendered: parsing and mutating grow with it.
    let (body, _budget) = match read_body(shared, body, started).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let decided = if body.len() > BLOCKING_ABOVE {
        // Big bodies are parsed and mutated on the blocking pool, so they do not stall a
        // runtime worker; a cache miss's lookup is driven from there.
        let app = shared.app.clone();
        let runtime = tokio::runtime::Handle::current();
        let span = span.clone();
        tokio::task::spawn_blocking(move || {
            catch(|| runtime.block_on(decide(&app, &body, started, &span)))
        })
        .await
        .unwrap_or(Err(Panicked))
    } else {
        match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(decide(
            &shared.app,
            &body,
            started,
            &span,
        )))
        .await
        {
            Ok(decided) => Ok(decided),
            Err(_) => Err(Panicked),
        }
    };
    let rendered = match decided {
        Ok(Ok(rendered)) => rendered,
        Ok(Err(bad)) => {
            shared.metrics.rejected(Rejection::BadRequest);
            shared
                .metrics
                .admission("invalid", "none", seconds(started), None);
            tracing::info!(outcome = "invalid", latency_us = micros(started), error = %bad, "admission");
            return text(StatusCode::BAD_REQUEST, format!("sbmesh: {bad}"));
        }
        Err(panic) => return panic.into_response(shared, started),
    };
    shared.metrics.admission(
        rendered.outcome.as_str(),
        rendered.mode,
        seconds(started),
        rendered.patch_bytes,
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(rendered.json),
    )
        .into_response()
}

/// The admission itself, over the body borrowed: parse once, sort, look up the cluster's view
/// of an opted-in pod, run the core, encode, and write the request's log line.
async fn decide(
    app: &super::App,
    body: &[u8],
    started: Instant,
    span: &tracing::Span,
) -> Result<Rendered, admission::BadRequest> {
    let request = admission::parse(body)?;
    span.record("uid", &*request.uid);
    let rendered = match admission::triage(&request) {
        Triage::Answer(response) => Rendered::of(*response, "none"),
        Triage::Pod {
            pod,
            namespace,
            service_account,
        } => match app.cluster.facts(namespace, service_account).await {
            Err(denial) => Rendered::of(admission::Response::deny(&request.uid, denial), "none"),
            Ok(facts) => {
                let ctx = facts.context();
                let admission = core::admit(pod, namespace, &ctx, &app.defaults);
                Rendered::of(
                    admission::Response::of(&request.uid, admission),
                    ctx.identity_mode.as_str(),
                )
            }
        },
    };
    tracing::info!(
        uid = %request.uid,
        namespace = %request.namespace(),
        name = %request.display_name(),
        operation = request.operation.as_str(),
        dry_run = request.dry_run.unwrap_or(false),
        outcome = rendered.outcome.as_str(),
        mode = rendered.mode,
        ops = rendered.ops,
        patch_bytes = rendered.patch_bytes.unwrap_or(0),
        latency_us = micros(started),
        "admission"
    );
    Ok(rendered)
}

/// The whole body with the share of the body budget it holds, or the answer to send instead
/// (413 over the limit, 400 if unreadable).
async fn read_body(
    shared: &Shared,
    body: Body,
    started: Instant,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Response> {
    let limit = shared.body_limit;
    let too_large = || {
        shared.metrics.rejected(Rejection::BodyTooLarge);
        shared
            .metrics
            .admission("invalid", "none", seconds(started), None);
        tracing::info!(
            outcome = "invalid",
            limit,
            latency_us = micros(started),
            "admission body over the limit"
        );
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("sbmesh: the request body is larger than the limit of {limit} bytes"),
        )
    };
    // A declared length over the limit is refused before reading a byte of it.
    if axum::body::HttpBody::size_hint(&body)
        .exact()
        .is_some_and(|n| n > limit as u64)
    {
        return Err(too_large());
    }
    // A declared length reserves its whole share of the budget before a byte is read, waiting
    // for room (bounded by the request timeout): holders of a reservation never wait again, so
    // requests cannot deadlock on each other. A body of unknown length (the API server always
    // declares one) takes its share as it arrives and is refused with 503 when there is none.
    let declared = axum::body::HttpBody::size_hint(&body)
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    let mut held: Option<OwnedSemaphorePermit> = None;
    if let Some(n) = declared {
        let units = u32::try_from(super::budget_units(n)).unwrap_or(u32::MAX);
        if units > 0 {
            held = shared
                .body_budget
                .clone()
                .acquire_many_owned(units)
                .await
                .ok();
        }
    }
    let mut body = Limited::new(body, limit);
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let read = loop {
        match body.frame().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if declared.is_none() {
                    let units = super::budget_units(buf.len() + data.len())
                        - super::budget_units(buf.len());
                    if units > 0 {
                        let Ok(permit) = shared
                            .body_budget
                            .clone()
                            .try_acquire_many_owned(u32::try_from(units).unwrap_or(u32::MAX))
                        else {
                            return Err(budget_exhausted(shared));
                        };
                        match &mut held {
                            Some(h) => h.merge(permit),
                            None => held = Some(permit),
                        }
                    }
                }
                buf.extend_from_slice(&data);
            }
        }
    };
    match read {
        Ok(()) => Ok((Bytes::from(buf), held)),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => {
            shared.metrics.rejected(Rejection::BadRequest);
            shared
                .metrics
                .admission("invalid", "none", seconds(started), None);
            tracing::info!(outcome = "invalid", error = %e, latency_us = micros(started), "admission body could not be read");
            Err(text(
                StatusCode::BAD_REQUEST,
                format!("sbmesh: could not read the request body: {e}"),
            ))
        }
    }
}

fn budget_exhausted(shared: &Shared) -> Response {
    shared.metrics.rejected(Rejection::Overloaded);
    tracing::warn!("admission request refused: the in-flight body budget is exhausted");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "sbmesh: too many request body bytes in flight; try again".into(),
    )
}

/// A panic in the core is a bug; the API server gets a clear 500 and the process lives on.
struct Panicked;

impl Panicked {
    fn into_response(self, shared: &Shared, started: Instant) -> Response {
        shared
            .metrics
            .admission("invalid", "none", seconds(started), None);
        tracing::error!("the admission core panicked; this is a bug");
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sbmesh: internal error while answering the admission request (a bug; see the webhook's log)".into(),
        )
    }
}

/// Runs work, turning a panic into [`Panicked`].
fn catch<T>(work: impl FnOnce() -> T) -> Result<T, Panicked> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|_| Panicked)
}

fn seconds(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
