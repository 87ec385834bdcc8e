//! Every answer the admission app gives instead of an AdmissionReview (413, 400, 503, 504,
//! 500, 404), in one place: a [`Refusal`] says why; turned into a response it counts itself
//! in the metrics, logs, and says why in one line of plain text.

use std::time::{Duration, Instant};

use axum::BoxError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::metrics::{Metrics, Mode, Rejection};
use crate::admission::{BadRequest, Outcome};

/// Why a request got no AdmissionReview.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// 413: the body is over the body limit, by its declared length or as it was read.
    TooLarge { limit: usize },
    /// 400: the body could not be read off the connection.
    Unreadable(BoxError),
    /// 400: the body is not an AdmissionReview the core can answer.
    NotAReview(BadRequest),
    /// 503: `limit` requests are in flight already.
    Overloaded { limit: usize },
    /// 503: a body of undeclared length found no room in the in-flight body budget.
    BudgetExhausted,
    /// 504: not answered within the request timeout.
    Timeout { limit: Duration },
    /// 500: the admission core panicked, which is a bug.
    Panicked,
    /// 404: no such route.
    NotFound,
}

/// How loudly a refusal is logged.
enum Level {
    /// Nothing to see: a wrong path.
    Debug,
    /// The client sent something wrong.
    Info,
    /// The server is at a limit.
    Warn,
    /// A bug.
    Error,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Unreadable(_) | Refusal::NotAReview(_) => StatusCode::BAD_REQUEST,
            Refusal::Overloaded { .. } | Refusal::BudgetExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The `reason` it is counted under in `rejected_requests`, if any.
    fn rejection(&self) -> Option<Rejection> {
        match self {
            Refusal::TooLarge { .. } => Some(Rejection::BodyTooLarge),
            Refusal::Unreadable(_) | Refusal::NotAReview(_) => Some(Rejection::BadRequest),
            Refusal::Overloaded { .. } | Refusal::BudgetExhausted => Some(Rejection::Overloaded),
            Refusal::Timeout { .. } => Some(Rejection::Timeout),
            Refusal::Panicked | Refusal::NotFound => None,
        }
    }

    /// Whether it is counted as an admission with outcome `invalid`: the request was taken
    /// in and answered (a body that is wrong, or a bug), not turned away at a limit.
    fn counts_as_invalid(&self) -> bool {
        matches!(
            self,
            Refusal::TooLarge { .. }
                | Refusal::Unreadable(_)
                | Refusal::NotAReview(_)
                | Refusal::Panicked
        )
    }

    fn level(&self) -> Level {
        match self {
            Refusal::NotFound => Level::Debug,
            Refusal::TooLarge { .. } | Refusal::Unreadable(_) | Refusal::NotAReview(_) => {
                Level::Info
            }
            Refusal::Overloaded { .. } | Refusal::BudgetExhausted | Refusal::Timeout { .. } => {
                Level::Warn
            }
            Refusal::Panicked => Level::Error,
        }
    }

    /// What the client is told.
    fn message(&self) -> String {
        match self {
            Refusal::TooLarge { limit } => {
                format!("sbmesh: the request body is larger than the limit of {limit} bytes")
            }
            Refusal::Unreadable(e) => format!("sbmesh: could not read the request body: {e}"),
            Refusal::NotAReview(bad) => format!("sbmesh: {bad}"),
            Refusal::Overloaded { limit } => {
                format!("sbmesh: {limit} admission requests already in flight; try again")
            }
            Refusal::BudgetExhausted => {
                "sbmesh: too many request body bytes in flight; try again".into()
            }
            Refusal::Timeout { limit } => {
                format!("sbmesh: the admission request was not answered within {limit:?}")
            }
            Refusal::Panicked => "sbmesh: internal error while answering the admission request \
                                  (a bug; see the webhook's log)"
                .into(),
            Refusal::NotFound => "not found".into(),
        }
    }

    /// Ready to answer a request that arrived at `started`, counted in `metrics`.
    pub(crate) fn counted(self, metrics: &Metrics, started: Instant) -> Refused<'_> {
        Refused {
            refusal: self,
            metrics,
            started,
        }
    }
}

/// A refusal with what it is counted in. The only way a [`Refusal`] becomes a response, so
/// none goes uncounted or unlogged.
pub(crate) struct Refused<'a> {
    refusal: Refusal,
    metrics: &'a Metrics,
    started: Instant,
}

impl IntoResponse for Refused<'_> {
    fn into_response(self) -> Response {
        let Refused {
            refusal,
            metrics,
            started,
        } = self;
        let elapsed = started.elapsed();
        if let Some(reason) = refusal.rejection() {
            metrics.rejected(reason);
        }
        if refusal.counts_as_invalid() {
            metrics.admission(Outcome::Invalid, Mode::None, elapsed.as_secs_f64(), None);
        }
        let status = refusal.status();
        let message = refusal.message();
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let code = status.as_u16();
        let outcome = refusal
            .counts_as_invalid()
            .then_some(Outcome::Invalid.as_str());
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    status = code,
                    outcome,
                    latency_us,
                    why = message.as_str(),
                    "admission request refused"
                )
            };
        }
        match refusal.level() {
            Level::Debug => log!(debug),
            Level::Info => log!(info),
            Level::Warn => log!(warn),
            Level::Error => log!(error),
        }
        one_line(status, message)
    }
}

/// A one-line plain-text answer.
pub(crate) fn one_line(status: StatusCode, message: String) -> Response {
    let mut line = message.replace(['\n', '\r'], " ");
    line.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        line,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::cluster::Cluster;
    use crate::contract::IdentityMode;
    use crate::server::metrics::ShellMetrics;

    fn every_refusal() -> Vec<Refusal> {
        vec![
            Refusal::TooLarge { limit: 1024 },
            Refusal::Unreadable("connection reset\nby peer".into()),
            Refusal::NotAReview(BadRequest::NoRequest),
            Refusal::Overloaded { limit: 4 },
            Refusal::BudgetExhausted,
            Refusal::Timeout {
                limit: Duration::from_secs(4),
            },
            Refusal::Panicked,
            Refusal::NotFound,
        ]
    }

    #[tokio::test]
    async fn every_refusal_is_one_line_of_text_with_its_status_and_is_counted_once() {
        let metrics = Metrics::new(&ShellMetrics::new());
        for refusal in every_refusal() {
            let status = refusal.status();
            let response = refusal.counted(&metrics, Instant::now()).into_response();
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            let body = response.into_body().collect().await.expect("body");
            let text = String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8");
            assert!(
                text.ends_with('\n') && text.lines().count() == 1,
                "{status}: {text:?}"
            );
        }

        let text = metrics.encode(&Cluster::off(IdentityMode::Inject), 0);
        for (series, value) in [
            (
                r#"sbmesh_rejected_requests_total{reason="body_too_large"}"#,
                1,
            ),
            (r#"sbmesh_rejected_requests_total{reason="bad_request"}"#, 2),
            (r#"sbmesh_rejected_requests_total{reason="overloaded"}"#, 2),
            (r#"sbmesh_rejected_requests_total{reason="timeout"}"#, 1),
            // Taken in and found wrong (or a bug), not turned away at a limit.
            (
                r#"sbmesh_admissions_total{outcome="invalid",mode="none"}"#,
                4,
            ),
            ("sbmesh_admission_duration_seconds_count", 4),
        ] {
            assert!(
                text.lines().any(|l| l == format!("{series} {value}")),
                "{series} is not {value} in\n{text}"
            );
        }
    }
}
