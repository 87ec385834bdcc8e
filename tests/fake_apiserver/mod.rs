//! An in-process fake Kubernetes API server on 127.0.0.1, plain HTTP, for kube's real client,
//! watcher and reflector. It serves list (paginated, `PartialObjectMetadataList` when asked),
//! watch (newline-delimited events replayed from the requested resourceVersion, then live, until
//! the test ends the stream) and get (404 Status when absent) for ServiceAccounts, Namespaces and
//! MutatingWebhookConfigurations, plus `/version`; and the writes the webhook's self-managed
//! certificates make: create, replace (optimistic concurrency: a stale resourceVersion is a 409
//! Conflict) and patch (JSON patch, `test` ops included; merge patch) of Secrets and
//! MutatingWebhookConfigurations. Every request is logged so tests can count API calls, and
//! faults can be switched on: held lists, stalled or failing GETs, failing writes, a dead server.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Res {
    ServiceAccounts,
    Namespaces,
    MutatingWebhookConfigurations,
    Secrets,
}

impl Res {
    /// What the webhook's caches list and watch.
    pub const CACHED: [Res; 3] = [
        Res::ServiceAccounts,
        Res::Namespaces,
        Res::MutatingWebhookConfigurations,
    ];
    pub const ALL: [Res; 4] = [
        Res::ServiceAccounts,
        Res::Namespaces,
        Res::MutatingWebhookConfigurations,
        Res::Secrets,
    ];

    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Res::ServiceAccounts => ("v1", "ServiceAccountList"),
            Res::Namespaces => ("v1", "NamespaceList"),
            Res::MutatingWebhookConfigurations => (
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfigurationList",
            ),
            Res::Secrets => ("v1", "SecretList"),
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Res::ServiceAccounts => "serviceaccounts",
            Res::Namespaces => "namespaces",
            Res::MutatingWebhookConfigurations => "mutatingwebhookconfigurations",
            Res::Secrets => "secrets",
        }
    }
}

/// What a logged request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    List,
    Watch,
    Get,
    Create,
    Replace,
    Patch,
    Other,
}

impl Verb {
    pub fn is_write(self) -> bool {
        matches!(self, Verb::Create | Verb::Replace | Verb::Patch)
    }
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub uri: String,
    pub accept: String,
    pub verb: Verb,
    pub res: Option<Res>,
}

type Key = (String, String);

#[derive(Clone)]
enum Msg {
    Event(u64, &'static str, Value),
    End,
}

struct Collection {
    objects: BTreeMap<Key, Value>,
    /// Every change since start, for watches that resume from a resourceVersion.
    history: Vec<(u64, &'static str, Value)>,
    live: broadcast::Sender<Msg>,
}

struct State {
    rv: u64,
    collections: HashMap<Res, Collection>,
}

impl State {
    /// Creates or replaces an object under a new resourceVersion: listed, watched (ADDED or
    /// MODIFIED) and got. Returns it as stored.
    fn store(&mut self, res: Res, mut obj: Value) -> Value {
        self.rv += 1;
        let rv = self.rv;
        stamp(&mut obj, rv);
        let key = key_of(&obj);
        let c = self.collections.get_mut(&res).expect("collection");
        let ty = if c.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.objects.insert(key, obj.clone());
        c.history.push((rv, ty, obj.clone()));
        let _ = c.live.send(Msg::Event(rv, ty, obj.clone()));
        obj
    }
}

struct Shared {
    state: Mutex<State>,
    log: Mutex<Vec<Logged>>,
    hold_lists: watch::Sender<bool>,
    stall_gets: AtomicBool,
    /// HTTP status every single-object GET fails with (0: off).
    fail_gets: AtomicU16,
    /// HTTP status every write fails with (0: off).
    fail_writes: AtomicU16,
}

pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let collections = Res::ALL
            .into_iter()
            .map(|r| {
                (
                    r,
                    Collection {
                        objects: BTreeMap::new(),
                        history: Vec::new(),
                        live: broadcast::channel(4096).0,
                    },
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 100,
                collections,
            }),
            log: Mutex::new(Vec::new()),
            hold_lists: watch::channel(false).0,
            stall_gets: AtomicBool::new(false),
            fail_gets: AtomicU16::new(0),
            fail_writes: AtomicU16::new(0),
        });
        let s = shared.clone();
        let (stop, mut stopped) = watch::channel(false);
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = stopped.wait_for(|s| *s) => break,
                };
                let s = s.clone();
                connections.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(&s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
            // The API server dies: the port closes, then every open connection is cut.
            drop(listener);
            connections.shutdown().await;
        });
        FakeApiServer {
            addr,
            shared,
            accept: Some(accept),
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("loopback url"))
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("kube client for the fake")
    }

    /// Creates or replaces an object: it is listed, watched (ADDED or MODIFIED) and got.
    pub fn put(&self, res: Res, obj: Value) {
        lock(&self.shared.state).store(res, obj);
    }

    /// Creates an object that GET finds but no watch has reported yet: a ServiceAccount
    /// created a moment before its pod, with the event still in flight.
    pub fn put_unwatched(&self, res: Res, mut obj: Value) {
        let mut st = lock(&self.shared.state);
        st.rv += 1;
        let rv = st.rv;
        stamp(&mut obj, rv);
        let key = key_of(&obj);
        st.collections
            .get_mut(&res)
            .expect("collection")
            .objects
            .insert(key, obj);
    }

    /// Loads objects before any client starts, without watch history (a big initial list).
    pub fn seed(&self, res: Res, objs: impl IntoIterator<Item = Value>) {
        let mut st = lock(&self.shared.state);
        for mut obj in objs {
            st.rv += 1;
            let rv = st.rv;
            stamp(&mut obj, rv);
            let key = key_of(&obj);
            st.collections
                .get_mut(&res)
                .expect("collection")
                .objects
                .insert(key, obj);
        }
    }

    pub fn delete(&self, res: Res, namespace: &str, name: &str) {
        let mut st = lock(&self.shared.state);
        st.rv += 1;
        let rv = st.rv;
        let c = st.collections.get_mut(&res).expect("collection");
        if let Some(mut obj) = c.objects.remove(&(namespace.to_string(), name.to_string())) {
            stamp(&mut obj, rv);
            c.history.push((rv, "DELETED", obj.clone()));
            let _ = c.live.send(Msg::Event(rv, "DELETED", obj));
        }
    }

    /// Ends every open watch stream of `res`, as a load balancer or API server restart does.
    pub fn end_watches(&self, res: Res) {
        let st = lock(&self.shared.state);
        let _ = st.collections[&res].live.send(Msg::End);
    }

    /// Open watch streams of `res`.
    pub fn open_watches(&self, res: Res) -> usize {
        lock(&self.shared.state).collections[&res]
            .live
            .receiver_count()
    }

    /// While held, list requests wait (the caches cannot sync).
    pub fn hold_lists(&self, hold: bool) {
        self.shared.hold_lists.send_replace(hold);
    }

    /// While stalled, single-object GETs never answer.
    pub fn stall_gets(&self, stall: bool) {
        self.shared.stall_gets.store(stall, Ordering::SeqCst);
    }

    /// Single-object GETs answer with this HTTP status (`None`: normally).
    pub fn fail_gets(&self, status: Option<u16>) {
        self.shared
            .fail_gets
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Writes (create, replace, patch) answer with this HTTP status (`None`: normally).
    pub fn fail_writes(&self, status: Option<u16>) {
        self.shared
            .fail_writes
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// The object as stored now.
    pub fn object(&self, res: Res, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.shared.state).collections[&res]
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Writes (create, replace, patch) so far.
    pub fn writes(&self, res: Res) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|l| l.verb.is_write() && l.res == Some(res))
            .count()
    }

    /// Kills the server and returns once the port is closed and every open connection is cut.
    pub async fn shutdown(&mut self) {
        self.stop.send_replace(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }

    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.shared.log).clone()
    }

    pub fn count(&self, verb: Verb, res: Res) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|l| l.verb == verb && l.res == Some(res))
            .count()
    }

    /// All requests so far, of any kind.
    pub fn total(&self) -> usize {
        lock(&self.shared.log).len()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
    }
}

fn stamp(obj: &mut Value, rv: u64) {
    let meta = obj
        .as_object_mut()
        .expect("object")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    meta["resourceVersion"] = json!(rv.to_string());
    if meta.get("uid").is_none() {
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
    }
    if meta.get("creationTimestamp").is_none() {
        meta["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
}

fn key_of(obj: &Value) -> Key {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// The PartialObjectMetadata form of an object, as the API server sends for metadata requests.
fn partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn full(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("response")
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, serde_json::to_vec(v).expect("json"))
}

fn status(code: u16, reason: &str, message: String) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}

fn query(uri: &hyper::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.to_string(),
                v.replace("%2F", "/")
                    .replace("%3D", "=")
                    .replace("%2C", ","),
            )
        })
        .collect()
}

/// Which collection and object a path names: (resource, namespace, name).
fn route(path: &str) -> Option<(Res, String, Option<String>)> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    match seg.as_slice() {
        ["api", "v1", "serviceaccounts"] => Some((Res::ServiceAccounts, String::new(), None)),
        ["api", "v1", "namespaces", ns, "serviceaccounts", name] => {
            Some((Res::ServiceAccounts, ns.to_string(), Some(name.to_string())))
        }
        ["api", "v1", "namespaces"] => Some((Res::Namespaces, String::new(), None)),
        ["api", "v1", "namespaces", name] => {
            Some((Res::Namespaces, String::new(), Some(name.to_string())))
        }
        ["api", "v1", "namespaces", ns, "secrets"] => Some((Res::Secrets, ns.to_string(), None)),
        ["api", "v1", "namespaces", ns, "secrets", name] => {
            Some((Res::Secrets, ns.to_string(), Some(name.to_string())))
        }
        [
            "apis",
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
        ] => Some((Res::MutatingWebhookConfigurations, String::new(), None)),
        [
            "apis",
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            name,
        ] => Some((
            Res::MutatingWebhookConfigurations,
            String::new(),
            Some(name.to_string()),
        )),
        _ => None,
    }
}

async fn handle(s: &Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let q = query(req.uri());
    let routed = route(req.uri().path());
    let verb = match (&routed, req.method()) {
        (Some((_, _, Some(_))), &Method::GET) => Verb::Get,
        (Some((_, _, None)), &Method::GET)
            if q.get("watch").map(String::as_str) == Some("true") =>
        {
            Verb::Watch
        }
        (Some((_, _, None)), &Method::GET) => Verb::List,
        (Some((_, _, None)), &Method::POST) => Verb::Create,
        (Some((_, _, Some(_))), &Method::PUT) => Verb::Replace,
        (Some((_, _, Some(_))), &Method::PATCH) => Verb::Patch,
        _ => Verb::Other,
    };
    lock(&s.log).push(Logged {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        accept: accept.clone(),
        verb,
        res: routed.as_ref().map(|r| r.0),
    });

    if req.uri().path() == "/version" {
        return json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0",
                "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
                "compiler": "gc", "platform": "linux/amd64",
            }),
        );
    }
    let Some((res, namespace, name)) = routed else {
        return status(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({})",
                req.uri().path()
            ),
        );
    };
    if verb.is_write() {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status(400, "BadRequest", format!("body: {e}")),
        };
        return write(s, verb, res, namespace, name, &content_type, &body);
    }
    match verb {
        Verb::Get => get(s, res, namespace, name.unwrap_or_default(), &accept).await,
        Verb::List => list(s, res, &q, &accept).await,
        Verb::Watch => watch_stream(s, res, &q, &accept),
        _ => status(405, "MethodNotAllowed", "unsupported".into()),
    }
}

/// Create, replace or patch, as the API server does them: a create of an existing object is 409
/// AlreadyExists; a replace whose metadata.resourceVersion is not the stored one is 409
/// Conflict; a JSON patch whose `test` fails is 422 Invalid. Every write bumps the
/// resourceVersion and is seen by watches.
fn write(
    s: &Arc<Shared>,
    verb: Verb,
    res: Res,
    namespace: String,
    name: Option<String>,
    content_type: &str,
    body: &[u8],
) -> Response<Body> {
    let fail = s.fail_writes.load(Ordering::SeqCst);
    if fail != 0 {
        return status(fail, "InternalError", "writes fail (fault injected)".into());
    }
    let mut st = lock(&s.state);
    let plural = res.plural();
    let (key, stored) = match (&verb, &name) {
        (Verb::Create, _) => {
            let Ok(obj) = serde_json::from_slice::<Value>(body) else {
                return status(400, "BadRequest", "the body is not JSON".into());
            };
            let mut key = key_of(&obj);
            if key.0.is_empty() {
                key.0 = namespace.clone();
            }
            if st.collections[&res].objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{plural} \"{}\" already exists", key.1),
                );
            }
            (key, obj)
        }
        (_, Some(name)) => {
            let key = (namespace.clone(), name.clone());
            let Some(current) = st.collections[&res].objects.get(&key).cloned() else {
                return status(404, "NotFound", format!("{plural} \"{name}\" not found"));
            };
            let next = if verb == Verb::Replace {
                let Ok(obj) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "the body is not JSON".into());
                };
                if obj.pointer("/metadata/resourceVersion")
                    != current.pointer("/metadata/resourceVersion")
                {
                    return status(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {plural} \"{name}\": the object has been \
                             modified; please apply your changes to the latest version and try again"
                        ),
                    );
                }
                obj
            } else if content_type.starts_with("application/json-patch+json") {
                let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(body) else {
                    return status(400, "BadRequest", "the body is not a JSON patch".into());
                };
                let mut obj = current.clone();
                if let Err(e) = json_patch::patch(&mut obj, &patch) {
                    return status(422, "Invalid", format!("the patch does not apply: {e}"));
                }
                obj
            } else if content_type.starts_with("application/merge-patch+json") {
                let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "the body is not JSON".into());
                };
                let mut obj = current.clone();
                json_patch::merge(&mut obj, &patch);
                obj
            } else {
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!("patch type {content_type}"),
                );
            };
            (key, next)
        }
        _ => return status(405, "MethodNotAllowed", "unsupported".into()),
    };
    let mut obj = stored;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        // The object lands where the path says (its key), whatever its body claims.
        meta.remove("namespace");
        if !key.0.is_empty() {
            meta.insert("namespace".into(), json!(key.0));
        }
    }
    let obj = st.store(res, obj);
    let code = if verb == Verb::Create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(code, &obj)
}

async fn get(
    s: &Arc<Shared>,
    res: Res,
    namespace: String,
    name: String,
    accept: &str,
) -> Response<Body> {
    if s.stall_gets.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let fail = s.fail_gets.load(Ordering::SeqCst);
    if fail != 0 {
        return status(
            fail,
            if fail == 403 {
                "Forbidden"
            } else {
                "InternalError"
            },
            format!(
                "{} \"{name}\" is forbidden: User \"system:serviceaccount:sbmesh:sbmesh\" cannot get resource \"{}\"",
                res.plural(),
                res.plural()
            ),
        );
    }
    let obj = lock(&s.state).collections[&res]
        .objects
        .get(&(namespace, name.clone()))
        .cloned();
    match obj {
        Some(o) if accept.contains("as=PartialObjectMetadata") => {
            json_response(StatusCode::OK, &partial(&o))
        }
        Some(o) => json_response(StatusCode::OK, &o),
        None => status(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.plural()),
        ),
    }
}

async fn list(
    s: &Arc<Shared>,
    res: Res,
    q: &HashMap<String, String>,
    accept: &str,
) -> Response<Body> {
    let mut held = s.hold_lists.subscribe();
    let _ = held.wait_for(|h| !*h).await;
    let metadata_only = accept.contains("as=PartialObjectMetadataList");
    let offset: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (rv, items, more) = {
        let st = lock(&s.state);
        let objects = &st.collections[&res].objects;
        let items: Vec<Value> = objects
            .values()
            .skip(offset)
            .take(limit)
            .map(|o| if metadata_only { partial(o) } else { o.clone() })
            .collect();
        let more = offset.saturating_add(items.len()) < objects.len();
        (st.rv, items, more)
    };
    let (api_version, kind) = if metadata_only {
        ("meta.k8s.io/v1", "PartialObjectMetadataList")
    } else {
        res.list_kind()
    };
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if more {
        metadata["continue"] = json!((offset + items.len()).to_string());
    }
    json_response(
        StatusCode::OK,
        &json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items }),
    )
}

fn event_line(ty: &str, obj: &Value, metadata_only: bool) -> Bytes {
    let object = if metadata_only {
        partial(obj)
    } else {
        obj.clone()
    };
    let mut line = serde_json::to_vec(&json!({ "type": ty, "object": object })).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

/// A watch: the changes after the requested resourceVersion, then live ones, until ended.
/// `resourceVersion` empty or "0" (or `sendInitialEvents=true`) starts with every current
/// object as ADDED, as the API server does.
fn watch_stream(
    s: &Arc<Shared>,
    res: Res,
    q: &HashMap<String, String>,
    accept: &str,
) -> Response<Body> {
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    let from: Option<u64> = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v != 0);
    let initial_events = q.get("sendInitialEvents").map(String::as_str) == Some("true");
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");

    let (backlog, mut live, current_rv) = {
        let st = lock(&s.state);
        let c = &st.collections[&res];
        let backlog: Vec<(u64, &'static str, Value)> = match from {
            Some(rv) if !initial_events => c
                .history
                .iter()
                .filter(|(r, _, _)| *r > rv)
                .cloned()
                .collect(),
            _ => c
                .objects
                .values()
                .map(|o| (st.rv, "ADDED", o.clone()))
                .collect(),
        };
        (backlog, c.live.subscribe(), st.rv)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut last = 0;
        for (rv, ty, obj) in &backlog {
            last = last.max(*rv);
            if tx.send(event_line(ty, obj, metadata_only)).await.is_err() {
                return;
            }
        }
        if initial_events && bookmarks {
            let bookmark = json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": "PartialObjectMetadata" ,
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {
                        "resourceVersion": current_rv.to_string(),
                        "annotations": { "k8s.io/initial-events-end": "true" },
                    },
                },
            });
            let mut line = serde_json::to_vec(&bookmark).expect("json");
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
        loop {
            match live.recv().await {
                Ok(Msg::Event(rv, ty, obj)) if rv > last => {
                    last = rv;
                    if tx.send(event_line(ty, &obj, metadata_only)).await.is_err() {
                        return;
                    }
                }
                Ok(Msg::Event(..)) => {}
                // Lagging behind ends the stream too: the client resumes from its last version.
                Ok(Msg::End) | Err(_) => return,
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .body(StreamBody::new(body).boxed_unsync())
        .expect("response")
}
