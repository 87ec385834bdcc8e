//! AdmissionReview `admission.k8s.io/v1` in and out. A request always gets a review back with
//! its uid; "could not parse" (HTTP 400, [`BadRequest`]) and "denied" (`allowed: false`) are
//! different answers. The patch is written as base64, not as kube's array of numbers.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::{self, Context, Decision, Defaults, Denial};
use crate::mutate;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body could not be answered with an AdmissionReview at all (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("body is not an AdmissionReview JSON document: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error(
        "expected apiVersion {API_VERSION} and kind {KIND}, got apiVersion {0:?} kind {1:?} \
         (set admissionReviewVersions: [v1] in the webhook configuration)"
    )]
    WrongType(String, String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
}

#[derive(Deserialize)]
struct ReviewIn {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<Request>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// The parts of an AdmissionRequest sbmesh reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub object: Option<Value>,
}

impl Request {
    /// The pod's name, or its generateName, for logs.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                self.object
                    .as_ref()
                    .and_then(|o| o.pointer("/metadata/generateName"))
                    .and_then(Value::as_str)
            })
            .unwrap_or("")
    }
}

/// Parses a request body. Every error here is an HTTP 400.
pub fn parse(body: &[u8]) -> Result<Request, BadRequest> {
    let review: ReviewIn = serde_json::from_slice(body)?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(BadRequest::WrongType(review.api_version, review.kind));
    }
    let request = review.request.ok_or(BadRequest::NoRequest)?;
    if request.uid.is_empty() {
        return Err(BadRequest::NoUid);
    }
    Ok(request)
}

/// How an admission ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Patched,
    Unchanged,
    Denied,
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// An AdmissionResponse.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub uid: String,
    pub outcome: Outcome,
    pub ops: Vec<mutate::Op>,
    pub warnings: Vec<String>,
    pub audit: Vec<(&'static str, String)>,
    /// HTTP-like status code and message, for refusals.
    pub status: Option<(u16, &'static str, String)>,
}

impl Response {
    fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_string(),
            outcome: Outcome::Unchanged,
            ops: Vec::new(),
            warnings: Vec::new(),
            audit: Vec::new(),
            status: None,
        }
    }

    pub fn deny(uid: &str, denial: Denial) -> Self {
        Self {
            outcome: Outcome::Denied,
            status: Some((403, "Forbidden", denial.message)),
            ..Self::allow(uid)
        }
    }

    fn invalid(uid: &str, message: String) -> Self {
        Self {
            outcome: Outcome::Invalid,
            status: Some((400, "BadRequest", message)),
            ..Self::allow(uid)
        }
    }

    pub fn allowed(&self) -> bool {
        self.status.is_none()
    }

    /// The JSON patch bytes, when there are operations.
    pub fn patch_json(&self) -> Option<Vec<u8>> {
        (!self.ops.is_empty()).then(|| serde_json::to_vec(&self.ops).unwrap_or_default())
    }

    /// The whole AdmissionReview response body.
    pub fn to_review_json(&self) -> Vec<u8> {
        self.encode().0
    }

    /// The AdmissionReview response body, and the size of the JSON patch it carries.
    pub fn encode(&self) -> (Vec<u8>, Option<usize>) {
        let patch = self.patch_json();
        let patch_len = patch.as_ref().map(Vec::len);
        let review = ReviewOut {
            api_version: API_VERSION,
            kind: KIND,
            response: ResponseOut {
                uid: &self.uid,
                allowed: self.allowed(),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch: patch.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
                status: self
                    .status
                    .as_ref()
                    .map(|(code, reason, message)| StatusOut {
                        status: "Failure",
                        code: *code,
                        reason,
                        message,
                    }),
                warnings: &self.warnings,
                audit_annotations: AuditOut(&self.audit),
            },
        };
        // Serializing borrowed strings and numbers cannot fail.
        (serde_json::to_vec(&review).unwrap_or_default(), patch_len)
    }
}

/// The response document, serialized straight from borrowed parts.
#[derive(Serialize)]
struct ReviewOut<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "AuditOut::is_empty")]
    audit_annotations: AuditOut<'a>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    status: &'static str,
    code: u16,
    reason: &'a str,
    message: &'a str,
}

/// Audit annotations as a JSON object, in the order given.
struct AuditOut<'a>(&'a [(&'static str, String)]);

impl AuditOut<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for AuditOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// What the request needs next: an answer already, or the cluster's view of an opted-in pod.
pub enum Triage<'a> {
    Answer(Response),
    Pod {
        pod: &'a Value,
        namespace: &'a str,
        service_account: &'a str,
    },
}

/// Sorts a request: only Pod CREATEs that opt in need planning. Non-Pod kinds, other
/// operations and subresources are allowed untouched.
pub fn triage(req: &Request) -> Triage<'_> {
    let is_pod = req.kind.group.is_empty() && req.kind.version == "v1" && req.kind.kind == "Pod";
    let subresource = req.sub_resource.as_deref().is_some_and(|s| !s.is_empty());
    if !is_pod || subresource || req.operation != "CREATE" {
        return Triage::Answer(Response::allow(&req.uid));
    }
    let Some(pod) = req.object.as_ref().filter(|o| o.is_object()) else {
        return Triage::Answer(Response::invalid(
            &req.uid,
            "sbmesh: request.object is missing or not a Pod object".into(),
        ));
    };
    match contract::opted_in(pod) {
        Ok(false) => return Triage::Answer(Response::allow(&req.uid)),
        Err(d) => return Triage::Answer(Response::deny(&req.uid, d)),
        Ok(true) => {}
    }
    let namespace = req
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .filter(|n| !n.is_empty());
    let Some(namespace) = namespace else {
        return Triage::Answer(Response::invalid(
            &req.uid,
            "sbmesh: request.namespace is missing for a Pod".into(),
        ));
    };
    Triage::Pod {
        pod,
        namespace,
        service_account: contract::service_account_name(pod),
    }
}

/// Plans and mutates an opted-in pod with the cluster's view in `ctx`.
pub fn admit_pod(
    uid: &str,
    pod: &Value,
    namespace: &str,
    ctx: &Context,
    defaults: &Defaults,
) -> Response {
    let plan = match contract::plan(pod, namespace, ctx, defaults) {
        Ok(Decision::Inject(plan)) => plan,
        Ok(Decision::Skip) => return Response::allow(uid),
        Err(d) => return Response::deny(uid, d),
    };
    match mutate::mutate(pod, &plan) {
        Ok(m) => Response {
            uid: uid.to_string(),
            outcome: if m.ops.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Patched
            },
            ops: m.ops,
            warnings: bound_warnings(m.warnings),
            audit: m.audit,
            status: None,
        },
        Err(d) => Response::deny(uid, d),
    }
}

/// The API server may truncate warnings over 256 characters and long lists of them; keep each
/// whole sentence within that and say how many more there were.
pub const MAX_WARNING_CHARS: usize = 256;
pub const MAX_WARNINGS: usize = 16;

fn bound_warnings(mut warnings: Vec<String>) -> Vec<String> {
    for w in &mut warnings {
        if w.chars().count() > MAX_WARNING_CHARS {
            *w = w
                .chars()
                .take(MAX_WARNING_CHARS - 1)
                .chain(std::iter::once('…'))
                .collect();
        }
    }
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - (MAX_WARNINGS - 1);
        warnings.truncate(MAX_WARNINGS - 1);
        warnings.push(format!("sbmesh: {more} more warnings like these"));
    }
    warnings
}

/// The whole path without cluster lookups: body in, response out.
pub fn review(body: &[u8], ctx: &Context, defaults: &Defaults) -> Result<Response, BadRequest> {
    Ok(answer(&parse(body)?, ctx, defaults))
}

/// Answers a parsed request with the cluster's view in `ctx` (triage, then admission).
pub fn answer(req: &Request, ctx: &Context, defaults: &Defaults) -> Response {
    match triage(req) {
        Triage::Answer(r) => r,
        Triage::Pod { pod, namespace, .. } => admit_pod(&req.uid, pod, namespace, ctx, defaults),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_stay_within_what_the_api_server_keeps() {
        let many: Vec<String> = (0..40)
            .map(|i| format!("w{i} {}", "x".repeat(400)))
            .collect();
        let out = bound_warnings(many);
        assert_eq!(out.len(), MAX_WARNINGS);
        assert!(out.iter().all(|w| w.chars().count() <= MAX_WARNING_CHARS));
        assert_eq!(out.last().unwrap(), "sbmesh: 25 more warnings like these");
        assert_eq!(
            bound_warnings(vec!["short".into()]),
            vec!["short".to_string()]
        );
    }
}
