//! Faults at the webhook's door, over real TLS on loopback: garbage, truncated and absurdly
//! nested bodies, wrong reviews, a 20 MiB body, slowloris headers, idle connections, TLS
//! garbage and aborted handshakes, and 1,000 connections at once. For each: the right status,
//! no hang, the server still serving afterwards, and memory that stays bounded (read from
//! `/proc/self/status`: the server runs in this process).
//!
//! The tests run one at a time (`SERIAL`), so that a memory figure belongs to its test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{self as http, Method, StatusCode};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use common::*;
use sbmesh::server::Settings;

/// One test at a time: memory is measured for the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(15);
const MIB: usize = 1024 * 1024;

/// The captured ReplicaSet-made review (~9 KiB), as the API server sends it.
fn captured_review() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reviews/replicaset-orders.json"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn captured_uid() -> String {
    let review: Value = serde_json::from_slice(&captured_review()).expect("fixture is JSON");
    review["request"]["uid"]
        .as_str()
        .expect("fixture uid")
        .to_string()
}

/// The server still answers a real review on both protocols.
async fn still_serving(server: &TestServer) {
    for proto in Proto::BOTH {
        let reply = tokio::time::timeout(WAIT, server.review(proto, captured_review()))
            .await
            .unwrap_or_else(|_| panic!("{proto:?}: a real review hung"));
        let response = reply.admission();
        assert_eq!(response["uid"], captured_uid().as_str());
        assert_eq!(response["allowed"], true, "{response}");
        assert!(
            patch_of(&response).is_some(),
            "{proto:?}: the captured pod is patched"
        );
    }
}

/// Every body gets 400 with a one-line reason on a kept-alive connection, over both protocols.
async fn each_gets_400(server: &TestServer, bodies: &[(&str, Vec<u8>)], reason: &str) {
    for proto in Proto::BOTH {
        let mut conn = server.connect(proto).await;
        for (what, body) in bodies {
            let reply = tokio::time::timeout(WAIT, conn.review(body.clone()))
                .await
                .unwrap_or_else(|_| panic!("{proto:?} {what}: no answer"))
                .unwrap_or_else(|e| panic!("{proto:?} {what}: {e}"));
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{proto:?} {what}: {}",
                reply.text()
            );
            assert!(
                reply.content_type().starts_with("text/plain"),
                "{proto:?} {what}"
            );
            let text = reply.text();
            assert!(
                text.starts_with("sbmesh: ") && text.contains(reason),
                "{proto:?} {what}: {text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory of this process (server and clients)

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// The peak resident size from now on, above the size now.
struct PeakRss {
    base_kib: u64,
}

impl PeakRss {
    fn start() -> Self {
        // "5" resets VmHWM to VmRSS (Linux 4.0+); without it the peak is the process's.
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        assert!(
            reset,
            "cannot reset the peak RSS through /proc/self/clear_refs"
        );
        Self {
            base_kib: status_kib("VmRSS:"),
        }
    }

    fn growth_mib(&self) -> f64 {
        status_kib("VmHWM:").saturating_sub(self.base_kib) as f64 / 1024.0
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TLS, for what a well-behaved client would never send

async fn raw_tls(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let config = client_config(roots, &[alpn], rustls::DEFAULT_VERSIONS);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Reads until the server closes the stream (EOF or an error), at most `within`; what it sent.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A real ClientHello (what rustls sends first), to cut short.
fn client_hello(roots: &[CertificateDer<'static>]) -> Vec<u8> {
    let config = client_config(roots, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let mut conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").expect("name"))
            .expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write ClientHello");
    }
    hello
}

/// Deterministic noise (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_get_400() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(test_settings()).await;
    let bodies = [
        ("empty", Vec::new()),
        ("plain text", b"hello, webhook".to_vec()),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x80, b'{']),
        (
            "XML",
            b"<AdmissionReview apiVersion=\"admission.k8s.io/v1\"/>".to_vec(),
        ),
        (
            "YAML",
            b"apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n".to_vec(),
        ),
        ("noise", noise(4096, 7)),
        ("NUL bytes", vec![0; 1024]),
        (
            "JSON then garbage",
            [captured_review(), b"}{".to_vec()].concat(),
        ),
        (
            "two documents",
            [captured_review(), captured_review()].concat(),
        ),
    ];
    each_gets_400(&server, &bodies, "not an AdmissionReview JSON document").await;
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_review_gets_400_at_every_cut() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(test_settings()).await;
    let review = captured_review();
    let mut cuts: Vec<usize> = (1..24).map(|i| review.len() * i / 24).collect();
    cuts.extend([1, review.len() - 1]);
    let bodies: Vec<(String, Vec<u8>)> = cuts
        .into_iter()
        .map(|cut| {
            (
                format!("cut at {cut} of {}", review.len()),
                review[..cut].to_vec(),
            )
        })
        .collect();
    let named: Vec<(&str, Vec<u8>)> = bodies
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    each_gets_400(&server, &named, "not an AdmissionReview JSON document").await;
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_nested_100000_levels_deep_gets_400_without_overflowing_the_stack() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(test_settings()).await;
    const DEPTH: usize = 100_000;
    let open = "[".repeat(DEPTH);
    let close = "]".repeat(DEPTH);
    let objects = "{\"a\":".repeat(DEPTH);
    let head = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"deep","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"shop","object":"#;
    let bodies = [
        ("open brackets", open.clone().into_bytes()),
        ("balanced brackets", format!("{open}{close}").into_bytes()),
        (
            "nested objects",
            format!("{objects}1{}", "}".repeat(DEPTH)).into_bytes(),
        ),
    ];
    // Not an AdmissionReview: 400 with a reason.
    each_gets_400(&server, &bodies, "").await;
    // A well-formed review whose pod nests deep where sbmesh does not read is skipped without
    // recursion (no stack is at risk) and answered on its merits: a pod that is a list is
    // refused as no pod (status 400 in the review), one whose deep field is not read is
    // admitted unchanged.
    let deep_object = format!("{head}{open}{close}}}}}");
    let deep_spec = format!("{head}{{\"metadata\":{{}},\"spec\":{{\"x\":{open}{close}}}}}}}}}");
    for proto in Proto::BOTH {
        let reply = tokio::time::timeout(WAIT, server.review(proto, deep_object.clone()))
            .await
            .unwrap_or_else(|_| panic!("{proto:?}: deep pod object hung"));
        let response = reply.admission();
        assert_eq!(response["uid"], "deep");
        assert_eq!(response["allowed"], false, "{response}");
        assert_eq!(response["status"]["code"], 400, "{response}");
        let reply = tokio::time::timeout(WAIT, server.review(proto, deep_spec.clone()))
            .await
            .unwrap_or_else(|_| panic!("{proto:?}: deep pod spec hung"));
        let response = reply.admission();
        assert_eq!(response["allowed"], true, "{response}");
        assert!(patch_of(&response).is_none(), "{response}");
    }
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_of_the_wrong_version_or_kind_gets_400_naming_v1() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(test_settings()).await;
    let mut v1beta1: Value = serde_json::from_slice(&captured_review()).expect("JSON");
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut pod_kind: Value = serde_json::from_slice(&captured_review()).expect("JSON");
    pod_kind["kind"] = json!("Pod");
    let mut no_version: Value = serde_json::from_slice(&captured_review()).expect("JSON");
    no_version
        .as_object_mut()
        .expect("object")
        .remove("apiVersion");
    let bodies = [
        ("v1beta1", serde_json::to_vec(&v1beta1).expect("JSON")),
        ("kind Pod", serde_json::to_vec(&pod_kind).expect("JSON")),
        (
            "no apiVersion",
            serde_json::to_vec(&no_version).expect("JSON"),
        ),
        (
            "a bare pod",
            serde_json::to_vec(&controller_pod()).expect("JSON"),
        ),
    ];
    each_gets_400(&server, &bodies, "admissionReviewVersions: [v1]").await;
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_without_request_or_uid_gets_400() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(test_settings()).await;
    let mut no_request: Value = serde_json::from_slice(&captured_review()).expect("JSON");
    no_request
        .as_object_mut()
        .expect("object")
        .remove("request");
    let mut null_request = no_request.clone();
    null_request["request"] = Value::Null;
    each_gets_400(
        &server,
        &[
            ("no request", serde_json::to_vec(&no_request).expect("JSON")),
            (
                "null request",
                serde_json::to_vec(&null_request).expect("JSON"),
            ),
        ],
        "has no request",
    )
    .await;
    let mut no_uid: Value = serde_json::from_slice(&captured_review()).expect("JSON");
    no_uid["request"]
        .as_object_mut()
        .expect("object")
        .remove("uid");
    let mut empty_uid = no_uid.clone();
    empty_uid["request"]["uid"] = json!("");
    each_gets_400(
        &server,
        &[
            ("no uid", serde_json::to_vec(&no_uid).expect("JSON")),
            ("empty uid", serde_json::to_vec(&empty_uid).expect("JSON")),
        ],
        "no uid",
    )
    .await;
    let mut request_not_object: Value = serde_json::from_slice(&captured_review()).expect("JSON");
    request_not_object["request"] = json!([1, 2, 3]);
    each_gets_400(
        &server,
        &[(
            "request is a list",
            serde_json::to_vec(&request_not_object).expect("JSON"),
        )],
        "not an AdmissionReview JSON document",
    )
    .await;
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_kinds_operations_and_subresources_are_allowed_unchanged() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(test_settings()).await;
    let opted_in_meta = json!({"name": "x", "annotations": {"sbmesh.io/inject": "true"}});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut review: Value = serde_json::from_slice(&captured_review()).expect("JSON");
        f(&mut review);
        serde_json::to_vec(&review).expect("JSON")
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Deployment",
            with(&|r| {
                r["request"]["kind"] =
                    json!({"group": "apps", "version": "v1", "kind": "Deployment"});
                r["request"]["object"] = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": opted_in_meta.clone(), "spec": {}});
            }),
        ),
        (
            "ConfigMap",
            with(&|r| {
                r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
                r["request"]["object"] = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": opted_in_meta.clone(), "data": {"a": "b"}});
            }),
        ),
        (
            "Pod of another group",
            with(&|r| {
                r["request"]["kind"] =
                    json!({"group": "example.com", "version": "v1", "kind": "Pod"})
            }),
        ),
        (
            "Pod UPDATE",
            with(&|r| r["request"]["operation"] = json!("UPDATE")),
        ),
        (
            "Pod DELETE",
            with(&|r| {
                r["request"]["operation"] = json!("DELETE");
                r["request"]["oldObject"] = r["request"]["object"].take();
            }),
        ),
        (
            "Pod ephemeralcontainers subresource",
            with(&|r| {
                r["request"]["operation"] = json!("UPDATE");
                r["request"]["subResource"] = json!("ephemeralcontainers");
            }),
        ),
        (
            "Pod binding CREATE",
            with(&|r| r["request"]["subResource"] = json!("binding")),
        ),
    ];
    for proto in Proto::BOTH {
        let mut conn = server.connect(proto).await;
        for (what, body) in &cases {
            let reply = conn
                .review(body.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let response = reply.admission();
            assert_eq!(response["uid"], captured_uid().as_str(), "{proto:?} {what}");
            assert_eq!(response["allowed"], true, "{proto:?} {what}: {response}");
            assert!(
                response.get("patch").is_none(),
                "{proto:?} {what}: {response}"
            );
        }
    }
    still_serving(&server).await;
}

// ---------------------------------------------------------------------------------------------
// A 20 MiB body

const HUGE: usize = 20 * MIB;
const CHUNK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_20_mib_with_a_declared_length_gets_413_before_a_byte_is_read() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(test_settings()).await;
    let peak = PeakRss::start();

    // HTTP/1.1, by hand: the headers alone must bring the answer.
    let mut tls = raw_tls(server.addr, &server.roots, b"http/1.1").await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {HUGE}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.expect("headers");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, tls.read(&mut answer))
        .await
        .expect("an answer before the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than the limit"), "{answer}");

    // HTTP/2: the stream declares 20 MiB and sends one chunk.
    let mut conn = server.connect(Proto::Http2).await;
    let (tx, body) = streamed();
    let mut request = conn.request(Method::POST, "/mutate", body);
    request.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        HUGE.to_string().parse().expect("header"),
    );
    tx.send(Bytes::from(vec![b' '; CHUNK]))
        .await
        .expect("first chunk");
    let reply = tokio::time::timeout(WAIT, conn.send(request))
        .await
        .expect("an answer before the body")
        .expect("reply");
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    drop(tx);

    let growth = peak.growth_mib();
    eprintln!("declared 20 MiB body: peak RSS growth {growth:.1} MiB");
    assert!(
        growth < 8.0,
        "peak RSS grew by {growth:.1} MiB for bodies that were never read"
    );
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_20_mib_without_a_length_gets_413_at_the_limit_and_is_not_buffered_whole() {
    let _serial = SERIAL.lock().await;
    let settings = test_settings();
    let limit_mib = settings.body_limit as f64 / MIB as f64;
    let server = TestServer::start(settings).await;
    let chunk = Bytes::from(vec![b' '; CHUNK]);
    let peak = PeakRss::start();

    // HTTP/1.1 chunked, by hand: write until the answer comes or 20 MiB are sent.
    let tls = raw_tls(server.addr, &server.roots, b"http/1.1").await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let reader = tokio::spawn(async move {
        let mut answer = vec![0u8; 512];
        let n = rd.read(&mut answer).await.unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).to_string()
    });
    wr.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("headers");
    let mut sent = 0;
    while sent < HUGE && !reader.is_finished() {
        let framed = [format!("{CHUNK:x}\r\n").as_bytes(), &chunk, b"\r\n"].concat();
        if wr.write_all(&framed).await.is_err() {
            break;
        }
        sent += CHUNK;
    }
    let answer = tokio::time::timeout(WAIT, reader)
        .await
        .expect("an answer")
        .expect("reader");
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "after {sent} bytes: {answer:?}"
    );
    assert!(sent < HUGE, "the whole 20 MiB was taken before the answer");

    // HTTP/2, no content-length.
    let mut conn = server.connect(Proto::Http2).await;
    let (tx, body) = streamed();
    let request = conn.request(Method::POST, "/mutate", body);
    let pending = tokio::spawn(async move { conn.send(request).await });
    let mut sent = 0;
    while sent < HUGE && !pending.is_finished() {
        if tx.send(chunk.clone()).await.is_err() {
            break;
        }
        sent += CHUNK;
    }
    drop(tx);
    let reply = tokio::time::timeout(WAIT, pending)
        .await
        .expect("an answer")
        .expect("task")
        .expect("reply");
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );

    let growth = peak.growth_mib();
    eprintln!("streamed 20 MiB body (limit {limit_mib} MiB): peak RSS growth {growth:.1} MiB");
    // The whole process is measured (client and server, two protocols, allocator slack), so
    // the bound sits between the limit and the 20 MiB a server buffering the body would hold.
    assert!(
        growth < limit_mib + 10.0,
        "peak RSS grew by {growth:.1} MiB: more than the {limit_mib} MiB limit was held"
    );
    still_serving(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Slow and idle clients

/// Short enough for a quick test, long enough for a loaded 2-core CI machine.
const HEADER_TIMEOUT: Duration = Duration::from_millis(800);
/// Scheduling slack on a shared machine.
const MARGIN: Duration = Duration::from_millis(2500);

fn slow_client_settings() -> Settings {
    Settings {
        header_read_timeout: HEADER_TIMEOUT,
        ..test_settings()
    }
}

/// Writes `bytes` one at a time every `gap` (bounded by their length) until the server closes
/// the connection; how long after the first byte that was, or `None` if it never was.
async fn trickle<S>(stream: S, bytes: &[u8], gap: Duration) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let started = Instant::now();
    let closed = tokio::spawn(async move {
        closed_within(&mut rd, WAIT)
            .await
            .map(|_| started.elapsed())
    });
    for b in bytes {
        if closed.is_finished() || wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    closed.await.expect("reader task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trickled_byte_by_byte_are_cut_off_at_the_header_timeout() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(slow_client_settings()).await;
    // Slower than the timeout allows, and long enough to outlast it several times.
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(400)
    );
    let gap = Duration::from_millis(20);
    let mut slow = Vec::new();
    for _ in 0..20 {
        let tls = raw_tls(server.addr, &server.roots, b"http/1.1").await;
        let head = head.clone();
        slow.push(tokio::spawn(async move {
            trickle(tls, head.as_bytes(), gap).await
        }));
    }
    // Twenty slowloris connections hold no worker: a real review is answered meanwhile.
    still_serving(&server).await;
    for s in slow {
        let after = s.await.expect("trickle task");
        let after = after.expect("the server never closed a trickling HTTP/1.1 connection");
        assert!(
            after <= HEADER_TIMEOUT + MARGIN,
            "closed {after:?} after the first byte; header timeout {HEADER_TIMEOUT:?}"
        );
    }
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_preface_trickled_byte_by_byte_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(slow_client_settings()).await;
    // The connection preface, an empty SETTINGS frame, then a HEADERS frame that never ends.
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 0x40, 0, 1, 4, 0, 0, 0, 1]);
    bytes.extend(std::iter::repeat_n(0u8, 400));
    let mut slow = Vec::new();
    for _ in 0..10 {
        let tls = raw_tls(server.addr, &server.roots, b"h2").await;
        let bytes = bytes.clone();
        slow.push(tokio::spawn(async move {
            trickle(tls, &bytes, Duration::from_millis(20)).await
        }));
    }
    still_serving(&server).await;
    for s in slow {
        let after = s.await.expect("trickle task");
        let after = after.expect("the server never closed a trickling HTTP/2 connection");
        // Asked to close when no request came in time, dropped when it did not.
        assert!(
            after <= 2 * HEADER_TIMEOUT + MARGIN,
            "closed {after:?} after the first byte; header timeout {HEADER_TIMEOUT:?}"
        );
    }
}

/// Idle connections of every kind: TCP without a ClientHello, TLS without a request (both
/// protocols), and a request line without its headers' end.
async fn idle_connections(
    server: &TestServer,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Option<Duration>>> {
    let mut idle = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let (addr, roots) = (server.addr, server.roots.clone());
        // Each is opened before the next, so that all are open when this returns.
        let handle = match i % 4 {
            0 => {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                tokio::spawn(async move {
                    closed_within(&mut tcp, WAIT)
                        .await
                        .map(|_| started.elapsed())
                })
            }
            1 => {
                let mut tls = raw_tls(addr, &roots, b"http/1.1").await;
                tokio::spawn(async move {
                    closed_within(&mut tls, WAIT)
                        .await
                        .map(|_| started.elapsed())
                })
            }
            2 => {
                let mut tls = raw_tls(addr, &roots, b"h2").await;
                tokio::spawn(async move {
                    closed_within(&mut tls, WAIT)
                        .await
                        .map(|_| started.elapsed())
                })
            }
            _ => {
                let mut tls = raw_tls(addr, &roots, b"http/1.1").await;
                tls.write_all(b"POST /mutate HTTP/1.1\r\n")
                    .await
                    .expect("request line");
                tokio::spawn(async move {
                    closed_within(&mut tls, WAIT)
                        .await
                        .map(|_| started.elapsed())
                })
            }
        };
        idle.push(handle);
    }
    idle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_worker_and_are_dropped_by_the_timeouts() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(slow_client_settings()).await;
    let idle = idle_connections(&server, 200).await;
    // Requests are answered at once with 200 idle connections open.
    let started = Instant::now();
    still_serving(&server).await;
    let served = started.elapsed();
    assert!(
        served < HEADER_TIMEOUT,
        "real reviews waited {served:?} behind idle connections"
    );
    for (i, handle) in idle.into_iter().enumerate() {
        let after = handle.await.expect("idle task");
        let after =
            after.unwrap_or_else(|| panic!("idle connection {i} (kind {}) never closed", i % 4));
        assert!(
            after <= 2 * HEADER_TIMEOUT + MARGIN,
            "idle connection {i} (kind {}) closed after {after:?}",
            i % 4
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_filling_the_cap_are_dropped_so_a_real_request_gets_through() {
    let _serial = SERIAL.lock().await;
    const CAP: usize = 16;
    let server = TestServer::start(Settings {
        max_connections: CAP,
        ..slow_client_settings()
    })
    .await;
    let idle = idle_connections(&server, CAP).await;
    // The cap is full of idle connections: this one waits in the backlog until they go.
    let started = Instant::now();
    let reply = tokio::time::timeout(WAIT, server.review(Proto::Http2, captured_review()))
        .await
        .expect("a real review behind idle connections at the cap");
    assert_eq!(reply.admission()["allowed"], true);
    let waited = started.elapsed();
    assert!(
        waited <= 2 * HEADER_TIMEOUT + MARGIN,
        "a real review waited {waited:?} for idle connections to be dropped"
    );
    for handle in idle {
        assert!(
            handle.await.expect("idle task").is_some(),
            "an idle connection was never closed"
        );
    }
    still_serving(&server).await;
}

// ---------------------------------------------------------------------------------------------
// TLS garbage and aborted handshakes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_and_aborted_handshakes_leave_the_server_serving() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(slow_client_settings()).await;
    let hello = client_hello(&server.roots);
    let garbage: Vec<(&str, Vec<u8>, bool)> = vec![
        // (what, bytes, then close at once)
        (
            "plain HTTP to the TLS port",
            captured_review_as_plain_http(),
            false,
        ),
        ("noise", noise(16 * 1024, 42), false),
        (
            "a record header promising 16 KiB",
            vec![0x16, 0x03, 0x01, 0x40, 0x00],
            false,
        ),
        (
            "half a ClientHello, then close",
            hello[..hello.len() / 2].to_vec(),
            true,
        ),
        (
            "half a ClientHello, then silence",
            hello[..hello.len() / 2].to_vec(),
            false,
        ),
        ("a whole ClientHello, then close", hello.clone(), true),
        (
            "a ClientHello with a corrupt tail",
            [&hello[..hello.len() - 8], &[0xff; 8][..]].concat(),
            false,
        ),
        (
            "SSLv2-style hello",
            vec![0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00],
            false,
        ),
    ];
    let mut open = Vec::new();
    for round in 0..10 {
        for (what, bytes, close) in &garbage {
            let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
            // The server may close as soon as it has seen enough: a write error is fine.
            let _ = tcp.write_all(bytes).await;
            if *close {
                drop(tcp);
            } else {
                let what = *what;
                open.push(tokio::spawn(async move {
                    (what, round, closed_within(&mut tcp, WAIT).await.is_some())
                }));
            }
        }
    }
    // A TLS connection dropped mid-handshake by rustls itself (after the ClientHello).
    for _ in 0..20 {
        let config = client_config(&server.roots, &[b"h2"], rustls::DEFAULT_VERSIONS);
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let connecting = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").expect("name"), tcp);
        // Poll it once or twice, then abandon it.
        let _ = tokio::time::timeout(Duration::from_micros(200), connecting).await;
    }
    still_serving(&server).await;
    for handle in open {
        let (what, round, closed) = handle.await.expect("garbage task");
        assert!(
            closed,
            "{what} (round {round}): the server never closed the connection"
        );
    }
    still_serving(&server).await;
}

fn captured_review_as_plain_http() -> Vec<u8> {
    let body = captured_review();
    [
        format!(
            "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body,
    ]
    .concat()
}

// ---------------------------------------------------------------------------------------------
// Many connections at once

/// Opens `N` connections (half HTTP/1.1, half HTTP/2), then sends a review on each at once.
/// Every request must get 200 with its uid or a 503 that says why, within a minute; returns
/// (200s, 503s, peak RSS growth in MiB).
async fn thousand_at_once(settings: Settings) -> (usize, usize, f64) {
    const N: usize = 1000;
    let fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        })
        .unwrap_or(u64::MAX);
    assert!(
        fds >= 2 * N as u64 + 200,
        "open-file limit {fds}: raise `ulimit -n` to run {N} connections"
    );

    // Opening 1,000 TLS connections takes seconds on a busy machine; the first ones must not
    // meet the idle timeout for a first request while the last ones are still connecting.
    let settings = Settings {
        header_read_timeout: settings.header_read_timeout.max(Duration::from_secs(60)),
        ..settings
    };
    let max_in_flight = settings.max_concurrent_requests;
    let server = Arc::new(TestServer::start(settings).await);
    let review = Bytes::from(captured_review());
    let uid = captured_uid();
    let peak = PeakRss::start();
    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (server, review, barrier) = (server.clone(), review.clone(), barrier.clone());
        let proto = Proto::BOTH[i % 2];
        tasks.spawn(async move {
            let conn = Conn::open(server.addr, &server.roots, proto).await;
            barrier.wait().await;
            let mut conn = conn.map_err(|e| format!("{proto:?} connect: {e}"))?;
            let reply = conn
                .review(review)
                .await
                .map_err(|e| format!("{proto:?} request: {e}"))?;
            Ok::<_, String>((proto, reply))
        });
    }
    let (mut ok, mut busy) = (0, 0);
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = tasks.join_next().await {
            let (proto, reply) = done.expect("client task").unwrap_or_else(|e| panic!("{e}"));
            match reply.status {
                StatusCode::OK => {
                    assert_eq!(reply.admission()["uid"], uid.as_str(), "{proto:?}");
                    ok += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(
                        reply.text().contains("in flight"),
                        "{proto:?}: {}",
                        reply.text()
                    );
                    busy += 1;
                }
                other => panic!(
                    "{proto:?}: {other}: {}",
                    String::from_utf8_lossy(&reply.body)
                ),
            }
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "{} of {N} requests hung ({ok} answered 200, {busy} 503)",
        N - ok - busy
    );
    let growth = peak.growth_mib();
    eprintln!(
        "{N} concurrent connections, in-flight cap {max_in_flight}: {ok} × 200, {busy} × 503, \
         {:?}, peak RSS growth {growth:.1} MiB (clients and server)",
        started.elapsed()
    );
    assert_eq!(ok + busy, N);
    assert!(ok > 0, "nothing was admitted");
    still_serving(&server).await;
    (ok, busy, growth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections_each_get_200_or_503_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let (_, _, growth) = thousand_at_once(test_settings()).await;
    // Both ends of 1,000 TLS connections live in this process.
    assert!(
        growth < 256.0,
        "peak RSS grew by {growth:.1} MiB for 1,000 connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_over_a_small_in_flight_cap_get_a_clear_503_not_a_hang() {
    let _serial = SERIAL.lock().await;
    let (ok, busy, growth) = thousand_at_once(Settings {
        max_concurrent_requests: 4,
        ..test_settings()
    })
    .await;
    eprintln!("in-flight cap 4: {ok} admitted, {busy} refused with 503");
    assert!(
        growth < 256.0,
        "peak RSS grew by {growth:.1} MiB for 1,000 connections"
    );
}

// ---------------------------------------------------------------------------------------------
// A certificate whose expiry is not ASCII

/// `leaf`'s certificate, PEM, with its notAfter (rcgen's default 4096-01-01, a
/// GeneralizedTime) holding multi-byte UTF-8 of the same byte length: still valid UTF-8 and
/// still ending in `Z`, but with a character boundary inside the year. The signature no longer
/// matches; nothing gets that far.
fn non_ascii_not_after(leaf: &Leaf) -> String {
    use base64::Engine as _;
    let time = b"40960101000000Z";
    let needle = [&[0x18, time.len() as u8][..], time].concat();
    let at = leaf
        .der
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("rcgen's default notAfter in the leaf");
    let with = "409\u{e9}010100000Z".as_bytes();
    assert_eq!(with.len(), time.len());
    let mut der = leaf.der.to_vec();
    der[at + 2..at + needle.len()].copy_from_slice(with);

    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// rcgen's default notAfter, which every test leaf has, in seconds since the epoch.
fn default_not_after() -> f64 {
    let date = time::Date::from_calendar_date(4096, time::Month::January, 1).expect("date");
    date.midnight().assume_utc().unix_timestamp() as f64
}

async fn reloads(server: &TestServer, result: &str) -> Option<f64> {
    let metrics = server.metrics().await;
    metric(
        &metrics,
        &format!(r#"sbmesh_tls_reloads_total{{result="{result}"}}"#),
    )
}

async fn served_certificate(server: &TestServer) -> CertificateDer<'static> {
    let conn = tokio::time::timeout(WAIT, server.connect(Proto::Http2))
        .await
        .expect("a TLS handshake hung");
    conn.peer.clone().expect("the server sent a certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_with_multi_byte_utf_8_in_its_expiry_is_refused_and_reloading_goes_on() {
    let _serial = SERIAL.lock().await;
    let mut server = TestServer::start(test_settings()).await;
    let first = server.leaf.clone();
    let bad = server.pki.leaf();

    server.secret.swap(&non_ascii_not_after(&bad), &bad.key_pem);
    eventually(
        WAIT,
        "the unparsable certificate is a failed reload",
        || async { (reloads(&server, "failure").await == Some(1.0)).then_some(()) },
    )
    .await;
    assert_eq!(served_certificate(&server).await, first.der);
    still_serving(&server).await;
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, r#"sbmesh_tls_reloads_total{result="success"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, "sbmesh_tls_cert_not_after_seconds"),
        Some(default_not_after()),
        "the expiry shown is the one of the certificate in service"
    );

    // The loop is alive: the next good pair goes into service.
    let good = server.pki.leaf();
    server.secret.swap(&good.cert_pem, &good.key_pem);
    eventually(WAIT, "the next good certificate is served", || async {
        (served_certificate(&server).await == good.der).then_some(())
    })
    .await;
    still_serving(&server).await;
    let metrics = server.metrics().await;
    assert_eq!(tls_reloads(&metrics), (Some(1.0), Some(1.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_with_multi_byte_utf_8_in_its_expiry_fails_the_start_with_an_error() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let pki = Pki::new("sbmesh test CA");
    let leaf = pki.leaf();
    let secret = SecretDir::new(&non_ascii_not_after(&leaf), &leaf.key_pem);
    let webhook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook");
    let app = sbmesh::server::App {
        defaults: Arc::new(test_defaults()),
        cluster: sbmesh::cluster::Cluster::off(sbmesh::contract::IdentityMode::Inject),
        certs: None,
    };
    // Spawned, so that a panic shows as one rather than failing the test some other way.
    let serve = tokio::spawn(sbmesh::server::serve_admission(
        sbmesh::server::Listeners {
            webhook,
            admin: None,
        },
        secret.files(),
        app,
        test_settings(),
        std::future::pending(),
    ));
    let result = tokio::time::timeout(WAIT, serve)
        .await
        .expect("serve returns at once")
        .expect("serve does not panic");
    match result {
        Err(sbmesh::server::ServeError::Tls(e @ sbmesh::server::TlsError::Certificate { .. })) => {
            let text = e.to_string();
            assert!(
                text.contains(&secret.files().cert.display().to_string()),
                "the error names the file: {text}"
            );
        }
        Err(e) => panic!("the wrong error: {e}"),
        Ok(()) => panic!("served with an unparsable certificate"),
    }
}
