//! AdmissionReview `admission.k8s.io/v1` in and out. A request always gets a review back with
//! its uid; "could not parse" (HTTP 400, [`BadRequest`]) and "denied" (`allowed: false`) are
//! different answers. The review is read in one pass that borrows from the body and parses
//! only what sbmesh reads of the pod ([`crate::pod`]); the patch is written as base64, not as
//! kube's array of numbers.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::contract::{Context, Defaults};
use crate::core::{self, Admission};
use crate::denial::{Denial, warning};
use crate::mutate::Patch;
use crate::pod::{Field, Pod};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body could not be answered with an AdmissionReview at all (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("body is not an AdmissionReview JSON document: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("body is not an AdmissionReview JSON document: it is not UTF-8 ({0})")]
    NotUtf8(#[from] std::str::Utf8Error),
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
struct ReviewIn<'a> {
    #[serde(rename = "apiVersion", default, borrow)]
    api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionKind<'a> {
    #[serde(default, borrow)]
    pub group: Cow<'a, str>,
    #[serde(default, borrow)]
    pub version: Cow<'a, str>,
    #[serde(default, borrow)]
    pub kind: Cow<'a, str>,
}

/// `request.operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Operation {
    #[serde(rename = "CREATE")]
    Create,
    #[serde(rename = "UPDATE")]
    Update,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "CONNECT")]
    Connect,
    /// Absent, or a value the API does not define.
    #[default]
    #[serde(other)]
    Other,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
            Operation::Other => "",
        }
    }
}

/// The parts of an AdmissionRequest sbmesh reads, borrowed from the body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    #[serde(default, borrow)]
    pub uid: Cow<'a, str>,
    #[serde(default, borrow)]
    pub kind: GroupVersionKind<'a>,
    #[serde(default, borrow)]
    pub sub_resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub operation: Operation,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default, borrow)]
    pub object: Field<Pod<'a>>,
}

impl Request<'_> {
    /// The pod's name, or its generateName, for logs.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| self.object.get().map(Pod::display_name))
            .unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

/// Parses a request body. Every error here is an HTTP 400.
pub fn parse(body: &[u8]) -> Result<Request<'_>, BadRequest> {
    // JSON is UTF-8: checked once for the whole body (fast for ASCII), so the parser need not
    // check again each string it borrows.
    let review: ReviewIn = serde_json::from_str(std::str::from_utf8(body)?)?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(BadRequest::WrongType(
            review.api_version.into_owned(),
            review.kind.into_owned(),
        ));
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
    pub patch: Patch,
    pub warnings: Vec<String>,
    pub audit: Vec<(&'static str, String)>,
    /// HTTP-like status code and message, for refusals.
    pub status: Option<(u16, &'static str, String)>,
    /// Why the pod was denied, when it was.
    pub denial: Option<Denial>,
}

impl Response {
    fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_string(),
            outcome: Outcome::Unchanged,
            patch: Patch::default(),
            warnings: Vec::new(),
            audit: Vec::new(),
            status: None,
            denial: None,
        }
    }

    pub fn deny(uid: &str, denial: Denial) -> Self {
        Self {
            outcome: Outcome::Denied,
            status: Some((403, "Forbidden", denial.to_string())),
            denial: Some(denial),
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

    /// The response to the core's answer.
    pub fn of(uid: &str, admission: Admission) -> Self {
        match admission {
            Admission::Skip => Self::allow(uid),
            Admission::Deny(d) => Self::deny(uid, d),
            Admission::Patch { mutation, .. } => Self {
                outcome: if mutation.patch.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Patched
                },
                patch: mutation.patch,
                warnings: bound_warnings(mutation.warnings),
                audit: mutation.audit,
                ..Self::allow(uid)
            },
        }
    }

    pub fn allowed(&self) -> bool {
        self.status.is_none()
    }

    /// The number of patch operations.
    pub fn ops(&self) -> usize {
        self.patch.len()
    }

    /// The JSON patch bytes, when there are operations.
    pub fn patch_json(&self) -> Option<Vec<u8>> {
        (!self.patch.is_empty()).then(|| self.patch.to_json())
    }

    /// The whole AdmissionReview response body.
    pub fn to_review_json(&self) -> Vec<u8> {
        self.encode().0
    }

    /// The AdmissionReview response body, and the size of the JSON patch it carries. Written
    /// straight into one buffer: the base64 patch (most of the bytes) needs no JSON escaping,
    /// so it is encoded in place rather than passed through a string serializer.
    pub fn encode(&self) -> (Vec<u8>, Option<usize>) {
        use base64::engine::general_purpose::STANDARD;
        let patch = self.patch_json();
        let patch_len = patch.as_ref().map(Vec::len);
        let b64_len = patch_len.map_or(0, |n| n.div_ceil(3) * 4);
        let mut out = Vec::with_capacity(256 + b64_len + self.text_len());
        out.extend_from_slice(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
        );
        // Serializing strings, numbers and lists of them into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &self.uid);
        out.extend_from_slice(if self.allowed() {
            br#","allowed":true"#
        } else {
            br#","allowed":false"#
        });
        if let Some(patch) = &patch {
            out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            let start = out.len();
            out.resize(start + b64_len, 0);
            let written = STANDARD.encode_slice(patch, &mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
        if let Some((code, reason, message)) = &self.status {
            out.extend_from_slice(br#","status":"#);
            let _ = serde_json::to_writer(
                &mut out,
                &StatusOut {
                    status: "Failure",
                    code: *code,
                    reason,
                    message,
                },
            );
        }
        if !self.warnings.is_empty() {
            out.extend_from_slice(br#","warnings":"#);
            let _ = serde_json::to_writer(&mut out, &self.warnings);
        }
        if !self.audit.is_empty() {
            out.extend_from_slice(br#","auditAnnotations":"#);
            let _ = serde_json::to_writer(&mut out, &AuditOut(&self.audit));
        }
        out.extend_from_slice(b"}}");
        (out, patch_len)
    }

    /// Roughly the bytes of the texts besides the patch, to size the buffer once.
    fn text_len(&self) -> usize {
        self.uid.len()
            + self.status.as_ref().map_or(0, |s| s.2.len() + 64)
            + self.warnings.iter().map(|w| w.len() + 3).sum::<usize>()
            + self
                .audit
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>()
    }
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
pub enum Triage<'r> {
    Answer(Box<Response>),
    Pod {
        pod: &'r Pod<'r>,
        namespace: &'r str,
        service_account: &'r str,
    },
}

/// Sorts a request: only Pod CREATEs that opt in need the cluster's view and the core. Non-Pod
/// kinds, other operations and subresources are allowed untouched.
pub fn triage<'r>(req: &'r Request<'r>) -> Triage<'r> {
    let is_pod = req.kind.group.is_empty() && req.kind.version == "v1" && req.kind.kind == "Pod";
    let subresource = req.sub_resource.as_deref().is_some_and(|s| !s.is_empty());
    if !is_pod || subresource || req.operation != Operation::Create {
        return Triage::Answer(Box::new(Response::allow(&req.uid)));
    }
    let Some(pod) = req.object.get() else {
        return Triage::Answer(Box::new(Response::invalid(
            &req.uid,
            warning("request.object is missing or not a Pod object"),
        )));
    };
    let service_account = match core::service_account(pod) {
        Ok(None) => return Triage::Answer(Box::new(Response::allow(&req.uid))),
        Err(d) => return Triage::Answer(Box::new(Response::deny(&req.uid, d))),
        Ok(Some(sa)) => sa,
    };
    let namespace = req
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.namespace());
    let Some(namespace) = namespace else {
        return Triage::Answer(Box::new(Response::invalid(
            &req.uid,
            warning("request.namespace is missing for a Pod"),
        )));
    };
    Triage::Pod {
        pod,
        namespace,
        service_account,
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
        warnings.push(warning(format_args!("{more} more warnings like these")));
    }
    warnings
}

/// The whole path without cluster lookups: body in, response out (tests, benchmarks, fuzzing).
pub fn review(body: &[u8], ctx: &Context, defaults: &Defaults) -> Result<Response, BadRequest> {
    let request = parse(body)?;
    Ok(match triage(&request) {
        Triage::Answer(r) => *r,
        Triage::Pod { pod, namespace, .. } => {
            Response::of(&request.uid, core::admit(pod, namespace, ctx, defaults))
        }
    })
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
