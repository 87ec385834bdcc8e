//! The admission app's admin port (plain HTTP/1.1, meant for the kubelet and Prometheus, not
//! the API server): `/metrics`, `/livez` and `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::app::Shared;
use super::metrics::CONTENT_TYPE;
use super::webhook::{healthz, not_found, readyz};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        shared
            .metrics
            .encode(&shared.app.cluster, shared.in_flight()),
    )
        .into_response()
}
