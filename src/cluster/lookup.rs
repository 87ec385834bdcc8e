//! The one direct GET a cache miss may cost, and the denials when it cannot answer. The
//! webhook's failurePolicy is Fail: a pod whose ServiceAccount cannot be read is refused with the
//! reason, never admitted on a guess about its annotations.

use std::error::Error as StdError;
use std::fmt::Debug;
use std::time::Duration;

use kube::Api;
use serde::de::DeserializeOwned;

use crate::denial::{Denial, Unavailable};

/// The object a lookup is for, for messages.
pub(super) enum What<'a> {
    ServiceAccount { namespace: &'a str, name: &'a str },
    Namespace { name: &'a str },
}

impl What<'_> {
    fn describe(&self) -> String {
        match self {
            What::ServiceAccount { namespace, name } => {
                format!("ServiceAccount {namespace}/{name}")
            }
            What::Namespace { name } => format!("Namespace {name}"),
        }
    }

    fn resource(&self) -> &'static str {
        match self {
            What::ServiceAccount { .. } => "serviceaccounts",
            What::Namespace { .. } => "namespaces",
        }
    }

    fn missing(&self) -> Denial {
        Denial::Unavailable(match self {
            What::ServiceAccount { namespace, name } => Unavailable::NoServiceAccount {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            What::Namespace { name } => Unavailable::NoNamespace {
                name: name.to_string(),
            },
        })
    }

    fn unanswered(&self, cause: &str) -> Denial {
        Denial::Unavailable(Unavailable::Unanswered {
            object: self.describe(),
            cause: cause.to_string(),
        })
    }
}

/// GETs one object by name with `timeout`. Absent, failing or silent: a denial saying which.
pub(super) async fn get<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &What<'_>,
) -> Result<K, Denial>
where
    K: Clone + DeserializeOwned + Debug,
{
    tracing::debug!(object = %what.describe(), "cache miss: direct GET");
    match tokio::time::timeout(timeout, api.get_opt(name)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err(what.missing()),
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => Err(what.unanswered(&format!(
            "403 Forbidden: {}; sbmesh's ServiceAccount needs get, list and watch on {}",
            status.message,
            what.resource()
        ))),
        Ok(Err(e)) => {
            tracing::warn!(object = %what.describe(), error = %describe_error(&e), "direct GET failed");
            Err(what.unanswered(&describe_error(&e)))
        }
        Err(_) => {
            tracing::warn!(object = %what.describe(), ?timeout, "direct GET timed out");
            Err(what.unanswered(&format!("no answer within {}s", timeout.as_secs_f64())))
        }
    }
}

/// One line from an error and its sources, without the repetition that wrapped errors carry
/// (kube's `ApiError` prints its Status twice: use the message and code instead).
pub(super) fn describe_error(e: &(dyn StdError + 'static)) -> String {
    if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
        return api_status(status);
    }
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(kube::Error::Api(status)) = s.downcast_ref::<kube::Error>() {
            out.push_str(": ");
            out.push_str(&api_status(status));
            break;
        }
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// One line for a watch failure, naming the phase that failed.
pub(super) fn describe_watch_error(e: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(k) => format!("list failed: {}", describe_error(k)),
        W::WatchStartFailed(k) => format!("watch start failed: {}", describe_error(k)),
        W::WatchFailed(k) => format!("watch stream failed: {}", describe_error(k)),
        W::WatchError(status) => format!("watch error event: {}", api_status(status)),
        W::NoResourceVersion => e.to_string(),
    }
}

fn api_status(status: &kube::core::Status) -> String {
    match (status.code, status.reason.as_str()) {
        (0, "") => status.message.clone(),
        (code, "") => format!("HTTP {code}: {}", status.message),
        (code, reason) => format!("HTTP {code} {reason}: {}", status.message),
    }
}
