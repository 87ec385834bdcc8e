//! Reading a `/mutate` body: under the body limit, and within the in-flight body budget,
//! which a body holds a share of until its answer is rendered.

use axum::body::{Body, Bytes, HttpBody as _};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};

use super::app::{BUDGET_UNIT, Shared, budget_units};
use super::refusal::Refusal;

/// A request's share of the body budget, counted in `inflight_body_bytes` while held.
pub(crate) struct Share {
    permit: OwnedSemaphorePermit,
    held: Gauge,
}

impl Share {
    fn new(permit: OwnedSemaphorePermit, held: &Gauge) -> Self {
        held.inc_by(bytes_of(&permit));
        Self {
            permit,
            held: held.clone(),
        }
    }

    fn merge(&mut self, more: OwnedSemaphorePermit) {
        self.held.inc_by(bytes_of(&more));
        self.permit.merge(more);
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.held.dec_by(bytes_of(&self.permit));
    }
}

fn bytes_of(permit: &OwnedSemaphorePermit) -> i64 {
    i64::try_from(permit.num_permits().saturating_mul(BUDGET_UNIT)).unwrap_or(i64::MAX)
}

/// The whole body with the share of the body budget it holds, or why there is none: over
/// the limit (413), unreadable (400), or no room in the budget for a body of unknown length
/// (503).
pub(crate) async fn read(shared: &Shared, body: Body) -> Result<(Bytes, Option<Share>), Refusal> {
    let limit = shared.body_limit;
    let too_large = || Refusal::TooLarge { limit };
    let declared = body.size_hint().exact();
    // A declared length over the limit is refused before reading a byte of it.
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let declared = declared.and_then(|n| usize::try_from(n).ok());
    // A declared length reserves its whole share of the budget before a byte is read, waiting
    // for room (bounded by the request timeout): holders of a reservation never wait again, so
    // requests cannot deadlock on each other. A body of unknown length (the API server always
    // declares one) takes its share as it arrives and is refused with 503 when there is none.
    let mut held = match declared {
        Some(n) => reserve(shared, n).await,
        None => None,
    };
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
                    let units = budget_units(buf.len() + data.len()) - budget_units(buf.len());
                    if units > 0 {
                        let Ok(permit) = shared
                            .body_budget
                            .clone()
                            .try_acquire_many_owned(u32::try_from(units).unwrap_or(u32::MAX))
                        else {
                            return Err(Refusal::BudgetExhausted);
                        };
                        match &mut held {
                            Some(share) => share.merge(permit),
                            None => {
                                held = Some(Share::new(permit, shared.metrics.body_budget_held()))
                            }
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
        Err(e) => Err(Refusal::Unreadable(e)),
    }
}

/// Reserves the budget for a body of `bytes`, waiting for room if there is none now (counted
/// in `requests_waiting_for_body_budget` meanwhile).
async fn reserve(shared: &Shared, bytes: usize) -> Option<Share> {
    let units = u32::try_from(budget_units(bytes)).unwrap_or(u32::MAX);
    if units == 0 {
        return None;
    }
    let permit = match shared.body_budget.clone().try_acquire_many_owned(units) {
        Ok(permit) => Some(permit),
        Err(TryAcquireError::NoPermits) => {
            let _waiting = shared.metrics.waiting_for_body_budget();
            shared
                .body_budget
                .clone()
                .acquire_many_owned(units)
                .await
                .ok()
        }
        // The budget is never closed.
        Err(TryAcquireError::Closed) => None,
    }?;
    Some(Share::new(permit, shared.metrics.body_budget_held()))
}
