//! The HTTPS admission server over real TLS on loopback: every behaviour over HTTP/1.1 and
//! HTTP/2 (ALPN checked), certificate rotation through a Secret-like symlink swap, and a
//! graceful drain under load.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode, Version};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use common::*;
use sbmesh::server::{Listeners, Settings};

const WAIT: Duration = Duration::from_secs(10);

fn expected_version(proto: Proto) -> Version {
    match proto {
        Proto::Http1 => Version::HTTP_11,
        Proto::Http2 => Version::HTTP_2,
    }
}

fn env_of(pod: &Value, container: usize) -> Vec<(String, String)> {
    pod["spec"]["containers"][container]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or_default().to_string(),
                        e["value"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn with_annotation(mut pod: Value, key: &str, value: &str) -> Value {
    pod["metadata"]["annotations"][key] = json!(value);
    pod
}

fn connection_string_pod() -> Value {
    let mut pod = controller_pod();
    pod["spec"]["containers"][0]["env"] = json!([{
        "name": "SERVICEBUS_CONNECTION",
        "value": "Endpoint=sb://payments.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"
    }]);
    pod
}

/// A review padded past `bytes` with an annotation.
fn oversized_review(bytes: usize) -> Vec<u8> {
    pod_review(
        "uid-too-large",
        with_annotation(controller_pod(), "example.com/padding", &"x".repeat(bytes)),
    )
}

/// The value of a gauge (or any series) on the admin port now.
async fn gauge(server: &TestServer, series: &str) -> f64 {
    let text = server.metrics().await;
    metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `Some` once `series` reads `value`: a check for [`eventually`].
async fn gauge_is(server: &TestServer, series: &str, value: f64) -> Option<()> {
    (gauge(server, series).await == value).then_some(())
}

// ---------------------------------------------------------------------------------------------
// /mutate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_in_pod_is_patched() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let uid = format!("0b3f6a1e-{proto:?}");
        let mut conn = server.connect(proto).await;
        assert_eq!(conn.alpn.as_deref(), Some(proto.alpn()));
        let reply = conn
            .review(pod_review(&uid, controller_pod()))
            .await
            .expect("review");
        assert_eq!(reply.version, expected_version(proto));
        assert_eq!(reply.content_type(), "application/json");
        let response = reply.admission();
        assert_eq!(response["uid"], uid.as_str());
        assert_eq!(response["allowed"], true);
        assert_eq!(
            response["auditAnnotations"]["subject"],
            "system:serviceaccount:shop:orders"
        );

        let patch = patch_of(&response).expect("a patch");
        let mut pod = controller_pod();
        json_patch::patch(&mut pod, &patch).expect("the patch applies");
        assert_eq!(
            pod["metadata"]["labels"]["azure.workload.identity/use"],
            "true"
        );
        let volume = pod["spec"]["volumes"]
            .as_array()
            .and_then(|v| {
                v.iter()
                    .find(|v| v["name"] == "sbmesh-azure-identity-token")
            })
            .expect("token volume");
        assert_eq!(
            volume["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "api://AzureADTokenExchange"
        );
        let mounts = pod["spec"]["containers"][0]["volumeMounts"].to_string();
        assert!(mounts.contains("/var/run/secrets/azure/tokens"), "{mounts}");
        let env = env_of(&pod, 0);
        assert!(
            env.contains(&("AZURE_CLIENT_ID".into(), CLIENT_ID.into())),
            "{env:?}"
        );
        assert!(
            env.contains(&(
                "AZURE_SERVICEBUS_FULLYQUALIFIEDNAMESPACE".into(),
                format!("{SERVICEBUS_NAMESPACE}.servicebus.windows.net")
            )),
            "{env:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_review_is_answered_like_a_small_one() {
    // Big enough to be decided on the blocking pool.
    let server = TestServer::start(test_settings()).await;
    let big = with_annotation(
        controller_pod(),
        "example.com/blob",
        &"x".repeat(512 * 1024),
    );
    for proto in Proto::BOTH {
        let response = server
            .review(proto, pod_review("uid-big", big.clone()))
            .await
            .admission();
        assert_eq!(response["uid"], "uid-big");
        assert_eq!(response["allowed"], true);
        let mut pod = big.clone();
        json_patch::patch(&mut pod, &patch_of(&response).expect("a patch"))
            .expect("the patch applies");
        assert_eq!(
            pod["metadata"]["labels"]["azure.workload.identity/use"],
            "true"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_without_the_annotation_is_allowed_unchanged() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let mut pod = controller_pod();
        pod["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("annotations");
        let response = server
            .review(proto, pod_review("uid-plain", pod))
            .await
            .admission();
        assert_eq!(response["uid"], "uid-plain");
        assert_eq!(response["allowed"], true);
        assert!(patch_of(&response).is_none(), "{response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_connection_string_is_denied_with_403() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let response = server
            .review(proto, pod_review("uid-secret", connection_string_pod()))
            .await
            .admission();
        assert_eq!(response["uid"], "uid-secret");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        let message = response["status"]["message"].as_str().expect("message");
        assert!(message.contains("SERVICEBUS_CONNECTION"), "{message}");
        assert!(patch_of(&response).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_inject_value_is_denied_with_403() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let pod = with_annotation(controller_pod(), "sbmesh.io/inject", "maybe");
        let response = server
            .review(proto, pod_review("uid-maybe", pod))
            .await
            .admission();
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        let message = response["status"]["message"].as_str().expect("message");
        assert!(message.contains("maybe"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_pod_kind_is_allowed_unchanged() {
    let server = TestServer::start(test_settings()).await;
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "annotations": {"sbmesh.io/inject": "true"}},
        "data": {"a": "b"}
    });
    for proto in Proto::BOTH {
        let body = review_for("uid-cm", "ConfigMap", "configmaps", config_map.clone());
        let response = server.review(proto, body).await.admission();
        assert_eq!(response["uid"], "uid-cm");
        assert_eq!(response["allowed"], true);
        assert!(patch_of(&response).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_that_is_not_json_gets_400_with_a_reason() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let reply = server.review(proto, "this is not json").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.content_type().starts_with("text/plain"));
        let text = reply.text();
        assert!(
            text.contains("not an AdmissionReview JSON document"),
            "{text}"
        );
        assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_without_request_gets_400() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let body =
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string();
        let reply = server.review(proto, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.text().contains("no request"), "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_gets_413_naming_the_limit() {
    let server = TestServer::start(Settings {
        body_limit: 16 * 1024,
        ..test_settings()
    })
    .await;
    for proto in Proto::BOTH {
        // Declared length over the limit.
        let reply = server.review(proto, oversized_review(32 * 1024)).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(reply.text().contains("16384 bytes"), "{}", reply.text());

        // No declared length: the limit trips while reading.
        let mut conn = server.connect(proto).await;
        let (tx, body) = streamed();
        let request = conn.request(Method::POST, "/mutate", body);
        let feeder = tokio::spawn(async move {
            for chunk in oversized_review(32 * 1024).chunks(4096) {
                if tx.send(chunk.to_vec().into()).await.is_err() {
                    break;
                }
            }
        });
        let reply = conn.send(request).await.expect("reply");
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(reply.text().contains("16384 bytes"), "{}", reply.text());
        feeder.abort();

        // Under the limit is fine.
        let response = server
            .review(proto, pod_review("uid-small", controller_pod()))
            .await
            .admission();
        assert_eq!(response["allowed"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404_and_other_methods_are_405() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        assert_eq!(
            server
                .call(proto, Method::POST, "/validate", "{}")
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            server.call(proto, Method::GET, "/mutate", "").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Probes and metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_are_ok_while_serving() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let healthz = server.call(proto, Method::GET, "/healthz", "").await;
        assert_eq!((healthz.status, healthz.text()), (StatusCode::OK, "ok\n"));
        let readyz = server.call(proto, Method::GET, "/readyz", "").await;
        assert_eq!(readyz.status, StatusCode::OK);
    }
    assert_eq!(server.admin_get("/livez").await.status, StatusCode::OK);
    assert_eq!(server.admin_get("/readyz").await.status, StatusCode::OK);
    assert_eq!(
        server.admin_get("/mutate").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_admissions_and_rejections() {
    let server = TestServer::start(Settings {
        body_limit: 16 * 1024,
        ..test_settings()
    })
    .await;
    let plain = {
        let mut pod = controller_pod();
        pod["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("annotations");
        pod
    };
    for proto in Proto::BOTH {
        server
            .review(proto, pod_review("u1", controller_pod()))
            .await
            .admission();
        server
            .review(proto, pod_review("u2", plain.clone()))
            .await
            .admission();
        server
            .review(proto, pod_review("u3", connection_string_pod()))
            .await
            .admission();
        assert_eq!(
            server.review(proto, "{").await.status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            server
                .review(proto, oversized_review(32 * 1024))
                .await
                .status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    let reply = server.admin_get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .content_type()
            .starts_with("application/openmetrics-text"),
        "{}",
        reply.content_type()
    );
    let text = reply.text();
    let value =
        |series: &str| metric(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        value(r#"sbmesh_admissions_total{outcome="patched",mode="inject"}"#),
        2.0
    );
    assert_eq!(
        value(r#"sbmesh_admissions_total{outcome="unchanged",mode="none"}"#),
        2.0
    );
    assert_eq!(
        value(r#"sbmesh_admissions_total{outcome="denied",mode="inject"}"#),
        2.0
    );
    assert_eq!(
        value(r#"sbmesh_admissions_total{outcome="invalid",mode="none"}"#),
        4.0
    );
    assert_eq!(
        value(r#"sbmesh_rejected_requests_total{reason="bad_request"}"#),
        2.0
    );
    assert_eq!(
        value(r#"sbmesh_rejected_requests_total{reason="body_too_large"}"#),
        2.0
    );
    assert_eq!(
        value(r#"sbmesh_rejected_requests_total{reason="timeout"}"#),
        0.0
    );
    assert_eq!(
        value(r#"sbmesh_rejected_requests_total{reason="overloaded"}"#),
        0.0
    );
    assert_eq!(value(IN_FLIGHT), 0.0);
    assert_eq!(value(BUDGET_HELD), 0.0);
    assert_eq!(value(BUDGET_WAITING), 0.0);
    // This scrape's own connection is open on the admin port.
    assert!(
        value(r#"sbmesh_connections{port="admin"}"#) >= 1.0,
        "{text}"
    );
    assert_eq!(value("sbmesh_admission_duration_seconds_count"), 10.0);
    assert!(
        text.contains(r#"sbmesh_admission_duration_seconds_bucket{le="0.00005"}"#),
        "{text}"
    );
    assert_eq!(value("sbmesh_patch_bytes_count"), 2.0);
    assert_eq!(value(r#"sbmesh_tls_reloads_total{result="success"}"#), 0.0);
    assert_eq!(value(r#"sbmesh_tls_reloads_total{result="failure"}"#), 0.0);
    assert_eq!(
        value(&format!(
            r#"sbmesh_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let not_after = value("sbmesh_tls_cert_not_after_seconds");
    assert!(not_after > now, "notAfter {not_after} is not in the future");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// TLS and connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_client_is_served() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let config = client_config(&server.roots, &[proto.alpn()], &[&rustls::version::TLS12]);
        let mut conn = Conn::open_with(server.addr, config, proto)
            .await
            .expect("TLS 1.2");
        assert_eq!(conn.alpn.as_deref(), Some(proto.alpn()));
        let response = conn
            .review(pod_review("uid-tls12", controller_pod()))
            .await
            .expect("review");
        assert_eq!(response.admission()["allowed"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_alpn_is_served_by_its_preface() {
    let server = TestServer::start(test_settings()).await;
    for proto in Proto::BOTH {
        let config = client_config(&server.roots, &[], rustls::DEFAULT_VERSIONS);
        let mut conn = Conn::open_with(server.addr, config, proto)
            .await
            .expect("connect");
        assert_eq!(conn.alpn, None);
        let request = conn.request(Method::GET, "/healthz", full(""));
        let reply = conn.send(request).await.expect("healthz");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.version, expected_version(proto));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_fails_at_start_naming_a_missing_key_file() {
    let pki = Pki::new("CA");
    let leaf = pki.leaf();
    let secret = SecretDir::new(&leaf.cert_pem, &leaf.key_pem);
    let mut files = secret.files();
    files.key = secret.dir.path().join("missing.key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = sbmesh::server::App {
        defaults: Arc::new(test_defaults()),
        cluster: sbmesh::cluster::Cluster::off(sbmesh::contract::IdentityMode::Inject),
        certs: None,
    };
    let err = sbmesh::server::serve_admission(
        Listeners {
            webhook: listener,
            admin: None,
        },
        files,
        app,
        test_settings(),
        std::future::pending(),
    )
    .await
    .expect_err("no key, no server");
    let message = err.to_string();
    assert!(message.contains("missing.key"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_fails_at_start_when_the_key_does_not_match_the_certificate() {
    let pki = Pki::new("CA");
    let leaf = pki.leaf();
    let secret = SecretDir::new(&leaf.cert_pem, &stray_key_pem());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = sbmesh::server::App {
        defaults: Arc::new(test_defaults()),
        cluster: sbmesh::cluster::Cluster::off(sbmesh::contract::IdentityMode::Inject),
        certs: None,
    };
    let err = sbmesh::server::serve_admission(
        Listeners {
            webhook: listener,
            admin: None,
        },
        secret.files(),
        app,
        test_settings(),
        std::future::pending(),
    )
    .await
    .expect_err("mismatched pair, no server");
    let message = err.to_string();
    assert!(
        message.contains("does not belong") && message.contains("tls.key"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_connection_is_closed_after_the_header_read_timeout() {
    let server = TestServer::start(Settings {
        header_read_timeout: Duration::from_millis(300),
        ..test_settings()
    })
    .await;
    let mut conn = server.connect(Proto::Http1).await;
    let reply = conn
        .review(pod_review("uid-idle", controller_pod()))
        .await
        .expect("review");
    assert_eq!(reply.status, StatusCode::OK);
    eventually(
        WAIT,
        "the server closes the idle keep-alive connection",
        || {
            let closed = conn.is_finished();
            async move { closed.then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_never_says_anything_is_closed() {
    let server = TestServer::start(Settings {
        header_read_timeout: Duration::from_millis(300),
        ..test_settings()
    })
    .await;
    // No TLS ClientHello: the handshake deadline closes it.
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "silent TCP connection still open: {read:?}"
    );

    // TLS done, HTTP/2 negotiated, no request: closed too (GOAWAY, then EOF).
    let config = client_config(&server.roots, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "silent HTTP/2 connection still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_beyond_the_cap_waits_for_a_free_slot() {
    let server = TestServer::start(Settings {
        max_connections: 1,
        ..test_settings()
    })
    .await;
    let mut first = server.connect(Proto::Http2).await;
    let reply = first
        .review(pod_review("uid-first", controller_pod()))
        .await
        .expect("first");
    assert_eq!(reply.status, StatusCode::OK);

    const OPEN: &str = r#"sbmesh_connections{port="webhook"}"#;
    eventually(WAIT, "the first connection takes the only slot", || {
        gauge_is(&server, OPEN, 1.0)
    })
    .await;

    let (addr, roots) = (server.addr, server.roots.clone());
    let second = tokio::spawn(async move {
        let mut conn = Conn::open(addr, &roots, Proto::Http1).await?;
        Ok::<_, Error>(
            conn.review(pod_review("uid-second", controller_pod()))
                .await?,
        )
    });
    // Not refused, not served: it waits in the listener's backlog while the only slot is taken.
    eventually(
        WAIT,
        "the second connection waits in the listener's backlog",
        || async move { (accept_queue(addr).expect("the listener's row") == 1).then_some(()) },
    )
    .await;
    assert!(
        !second.is_finished(),
        "a connection in the backlog finished"
    );
    assert_eq!(
        gauge(&server, OPEN).await,
        1.0,
        "a connection beyond the cap was accepted"
    );
    drop(first);
    let reply = tokio::time::timeout(WAIT, second)
        .await
        .expect("served once a slot is free")
        .expect("task")
        .expect("second request");
    assert_eq!(reply.admission()["uid"], "uid-second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_get_503() {
    let server = TestServer::start(Settings {
        max_concurrent_requests: 1,
        request_timeout: Duration::from_secs(30),
        ..test_settings()
    })
    .await;
    for proto in Proto::BOTH {
        // A request whose body is still arriving holds the only slot.
        let mut holder = server.connect(proto).await;
        let (tx, body) = streamed();
        let request = holder.request(Method::POST, "/mutate", body);
        let review = pod_review("uid-holder", controller_pod());
        let (head, tail) = review.split_at(review.len() / 2);
        tx.send(head.to_vec().into()).await.expect("first half");
        let held = tokio::spawn(async move { holder.send(request).await });
        eventually(WAIT, "the holder takes the only slot", || {
            gauge_is(&server, IN_FLIGHT, 1.0)
        })
        .await;

        let refused = server
            .review(proto, pod_review("uid-second", controller_pod()))
            .await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{proto:?}");
        assert!(refused.text().contains("in flight"), "{}", refused.text());

        tx.send(tail.to_vec().into()).await.expect("second half");
        drop(tx);
        let reply = held.await.expect("holder task").expect("holder reply");
        assert_eq!(reply.admission()["uid"], "uid-holder");
        let response = server
            .review(proto, pod_review("uid-third", controller_pod()))
            .await;
        assert_eq!(response.admission()["allowed"], true);
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"sbmesh_rejected_requests_total{reason="overloaded"}"#
        ),
        Some(2.0)
    );
    assert_eq!(metric(&metrics, IN_FLIGHT), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_not_answered_in_time_gets_504() {
    let server = TestServer::start(Settings {
        request_timeout: Duration::from_millis(300),
        ..test_settings()
    })
    .await;
    for proto in Proto::BOTH {
        let mut conn = server.connect(proto).await;
        let (tx, body) = streamed();
        let request = conn.request(Method::POST, "/mutate", body);
        tx.send(b"{\"apiVersion\":".to_vec().into())
            .await
            .expect("a start");
        let reply = tokio::time::timeout(WAIT, conn.send(request))
            .await
            .expect("an answer, not a hang")
            .expect("reply");
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            reply.text().contains("not answered within"),
            "{}",
            reply.text()
        );
        drop(tx);
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"sbmesh_rejected_requests_total{reason="timeout"}"#
        ),
        Some(2.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate rotation

/// A new connection, one review: the certificate the server presented, or why it failed.
async fn one_review_on_a_new_connection(
    addr: std::net::SocketAddr,
    roots: &[rustls::pki_types::CertificateDer<'static>],
    proto: Proto,
) -> Result<rustls::pki_types::CertificateDer<'static>, String> {
    let mut conn = Conn::open(addr, roots, proto)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let reply = conn
        .review(pod_review("uid-rotation", controller_pod()))
        .await
        .map_err(|e| format!("request: {e}"))?;
    if reply.status != StatusCode::OK {
        return Err(format!("status {}", reply.status));
    }
    conn.peer
        .clone()
        .ok_or_else(|| "no peer certificate".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_reaches_new_connections_without_a_failed_request() {
    let first_ca = Pki::new("first CA");
    let first = first_ca.leaf();
    let second_ca = Pki::new("second CA");
    let second = second_ca.leaf();
    let secret = SecretDir::new(&first.cert_pem, &first.key_pem);
    let mut server = TestServer::start_with(test_settings(), first_ca, first.clone(), secret).await;
    server.roots.push(second_ca.ca.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let with_first = Arc::new(AtomicUsize::new(0));
    let with_second = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, with_first, with_second) =
            (stop.clone(), with_first.clone(), with_second.clone());
        let (addr, roots) = (server.addr, server.roots.clone());
        let (first, second) = (first.der.clone(), second.der.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) {
                let proto = Proto::BOTH[n % 2];
                n += 1;
                match one_review_on_a_new_connection(addr, &roots, proto).await {
                    Ok(peer) if peer == first => {
                        with_first.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(peer) if peer == second => {
                        with_second.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(_) => failures.push("an unknown certificate".to_string()),
                    Err(e) => failures.push(format!("{proto:?}: {e}")),
                }
            }
            failures
        })
    };

    let count = |c: &Arc<AtomicUsize>| {
        let c = c.clone();
        move || {
            let n = c.load(Ordering::Acquire);
            async move { (n >= 5).then_some(()) }
        }
    };
    eventually(
        WAIT,
        "requests served with the first certificate",
        count(&with_first),
    )
    .await;
    server.secret.swap(&second.cert_pem, &second.key_pem);
    eventually(
        WAIT,
        "the second certificate is served",
        count(&with_second),
    )
    .await;
    stop.store(true, Ordering::Release);
    let failures = client.await.expect("client task");
    assert!(
        failures.is_empty(),
        "failed requests during rotation: {failures:?}"
    );

    let metrics = server.metrics().await;
    assert_eq!(tls_reloads(&metrics), (Some(1.0), Some(0.0)));
}

async fn reload_failures_reach(server: &TestServer, n: f64) -> Option<()> {
    let metrics = server.metrics().await;
    (metric(&metrics, r#"sbmesh_tls_reloads_total{result="failure"}"#) == Some(n)).then_some(())
}

async fn served_certificate(server: &TestServer) -> rustls::pki_types::CertificateDer<'static> {
    one_review_on_a_new_connection(server.addr, &server.roots, Proto::Http2)
        .await
        .expect("served")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_pair_keeps_the_old_one_and_counts_a_failure() {
    let mut server = TestServer::start(test_settings()).await;
    let first = server.leaf.clone();
    let second = server.pki.leaf();

    // The key belongs to no certificate in the file.
    server.secret.swap(&second.cert_pem, &stray_key_pem());
    eventually(WAIT, "a mismatched pair is counted", || {
        reload_failures_reach(&server, 1.0)
    })
    .await;
    assert_eq!(served_certificate(&server).await, first.der);

    // Half-written: the certificate is cut short.
    let half = &second.cert_pem[..second.cert_pem.len() / 2];
    server.secret.swap(half, &second.key_pem);
    eventually(WAIT, "a torn certificate is counted", || {
        reload_failures_reach(&server, 2.0)
    })
    .await;
    assert_eq!(served_certificate(&server).await, first.der);

    // Garbage, then a missing key file.
    server.secret.swap("garbage", "garbage");
    eventually(WAIT, "garbage is counted", || {
        reload_failures_reach(&server, 3.0)
    })
    .await;
    std::fs::remove_file(server.secret.current_dir().join("tls.key")).expect("remove key");
    eventually(WAIT, "a missing key is counted", || {
        reload_failures_reach(&server, 4.0)
    })
    .await;
    assert_eq!(served_certificate(&server).await, first.der);
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, r#"sbmesh_tls_reloads_total{result="success"}"#),
        Some(0.0)
    );

    // Repaired: the good pair goes into service.
    server.secret.swap(&second.cert_pem, &second.key_pem);
    eventually(WAIT, "the repaired pair is served", || async {
        (served_certificate(&server).await == second.der).then_some(())
    })
    .await;
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, r#"sbmesh_tls_reloads_total{result="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, r#"sbmesh_tls_reloads_total{result="failure"}"#),
        Some(4.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful drain

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    ok_after_signal: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().expect("tally").push(what);
    }
}

/// Sends reviews back to back, reconnecting whenever the server closes a connection, until
/// connecting fails after the shutdown signal (the listener is closed).
async fn keep_sending(
    addr: std::net::SocketAddr,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    proto: Proto,
    signalled: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let body = pod_review("uid-load", controller_pod());
    'connect: loop {
        let after_signal = signalled.load(Ordering::Acquire);
        let mut conn = match Conn::open(addr, &roots, proto).await {
            Ok(conn) => conn,
            // Refused, or reset in the backlog: the listener is closed, as it should be.
            Err(_) if after_signal => return,
            Err(e) => return tally.fail(format!("{proto:?}: connect before the signal: {e}")),
        };
        loop {
            // A closed connection took no request: open another.
            if conn.ready().await.is_err() {
                continue 'connect;
            }
            let sent_after_signal = signalled.load(Ordering::Acquire);
            match conn.review(body.clone()).await {
                Ok(reply)
                    if reply.status == StatusCode::OK && reply.admission()["allowed"] == true =>
                {
                    tally.ok.fetch_add(1, Ordering::AcqRel);
                    if sent_after_signal {
                        tally.ok_after_signal.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(reply) => tally.fail(format!(
                    "{proto:?}: status {}: {}",
                    reply.status,
                    reply.text()
                )),
                // Canceled, or the connection found closed when `send` checked it was ready
                // (it may close between the check above and that one): never sent.
                Err(e) if e.is_canceled() || e.is_closed() => continue 'connect,
                Err(e) => {
                    tally.fail(format!("{proto:?}: {e:?}"));
                    continue 'connect;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_sent_request_and_stops_being_ready_at_once() {
    let grace = Duration::from_millis(500);
    let settings = Settings {
        drain_grace: grace,
        shutdown_timeout: Duration::from_secs(5),
        ..test_settings()
    };
    let shutdown_timeout = settings.shutdown_timeout;
    let mut server = TestServer::start(settings).await;
    let signalled = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    let mut clients = Vec::new();
    for proto in [Proto::Http1, Proto::Http2, Proto::Http1, Proto::Http2] {
        clients.push(tokio::spawn(keep_sending(
            server.addr,
            server.roots.clone(),
            proto,
            signalled.clone(),
            tally.clone(),
        )));
    }

    // Slow requests: half the body before the signal, the rest after the listener closed.
    let mut slow = Vec::new();
    for proto in Proto::BOTH {
        let mut conn = server.connect(proto).await;
        let (tx, body) = streamed();
        let request = conn.request(Method::POST, "/mutate", body);
        let review = pod_review(&format!("uid-slow-{proto:?}"), controller_pod());
        let (head, tail) = review.split_at(review.len() / 2);
        tx.send(head.to_vec().into()).await.expect("first half");
        slow.push((
            tx,
            tail.to_vec(),
            tokio::spawn(async move { conn.send(request).await }),
        ));
    }

    eventually(WAIT, "load is flowing", || {
        let ok = tally.ok.load(Ordering::Acquire);
        async move { (ok >= 40).then_some(()) }
    })
    .await;
    signalled.store(true, Ordering::Release);
    server.shutdown();

    // Not ready at once, on both ports, while new connections are still accepted.
    eventually(
        grace,
        "webhook /readyz turns 503 during the grace",
        || async {
            let reply = server.call(Proto::Http2, Method::GET, "/readyz", "").await;
            (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;
    let admin = server.admin_get("/readyz").await;
    assert_eq!(admin.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.admin_get("/livez").await.status, StatusCode::OK);

    // After the grace the listener closes; then the slow requests finish their bodies.
    let addr = server.addr;
    eventually(WAIT, "the listener closes after the grace", || async move {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    for (tx, tail, reply) in slow {
        tx.send(tail.into()).await.expect("second half");
        drop(tx);
        let reply = reply
            .await
            .expect("slow task")
            .expect("slow request answered");
        assert_eq!(reply.admission()["allowed"], true);
    }

    server
        .stopped(grace + shutdown_timeout + Duration::from_secs(1))
        .await
        .expect("serve returns Ok");
    for client in clients {
        tokio::time::timeout(WAIT, client)
            .await
            .expect("load client stops")
            .expect("load client task");
    }
    let failures = tally.failures.lock().expect("tally").clone();
    assert!(
        failures.is_empty(),
        "requests sent but not answered: {failures:#?}"
    );
    assert!(
        tally.ok_after_signal.load(Ordering::Acquire) > 0,
        "no request was served during the grace period"
    );
}

const IN_FLIGHT: &str = "sbmesh_requests_in_flight";
const BUDGET_HELD: &str = "sbmesh_inflight_body_bytes";
const BUDGET_WAITING: &str = "sbmesh_requests_waiting_for_body_budget";

/// A pod review padded to about `bytes` with a large annotation.
fn padded_review(uid: &str, bytes: usize) -> Vec<u8> {
    let mut pod = controller_pod();
    pod["metadata"]["annotations"]["example.com/padding"] = json!("p".repeat(bytes));
    pod_review(uid, pod)
}

/// A server whose body limit and in-flight body budget are both 64 KiB.
async fn budget_server() -> TestServer {
    TestServer::start(Settings {
        body_limit: 64 * 1024,
        max_inflight_body_bytes: 64 * 1024,
        request_timeout: Duration::from_secs(30),
        ..test_settings()
    })
    .await
}

type Held = tokio::task::JoinHandle<Result<Reply, hyper::Error>>;

/// Starts a request that declares a 56 KiB body and sends only its first 50 KiB, and waits
/// until the server has reserved its length in the body budget; returns the body's sender,
/// the rest of the body, and the pending reply.
async fn hold_declared_body(
    server: &TestServer,
    proto: Proto,
) -> (tokio::sync::mpsc::Sender<axum::body::Bytes>, Vec<u8>, Held) {
    let mut holder = server.connect(proto).await;
    let (tx, body) = streamed();
    let big = padded_review("uid-holder", 56 * 1024);
    let mut request = holder.request(Method::POST, "/mutate", body);
    request.headers_mut().insert(
        axum::http::header::CONTENT_LENGTH,
        big.len().to_string().parse().unwrap(),
    );
    let (head, tail) = big.split_at(50 * 1024);
    tx.send(head.to_vec().into()).await.expect("head");
    let held = tokio::spawn(async move { holder.send(request).await });
    eventually(WAIT, "the holder's body is reserved", || async {
        (gauge(server, BUDGET_HELD).await >= 56.0 * 1024.0).then_some(())
    })
    .await;
    (tx, tail.to_vec(), held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_in_flight_byte_budget_wait_for_room() {
    let server = budget_server().await;
    for proto in Proto::BOTH {
        // The holder declared 56 KiB and has sent 50: its whole length is reserved.
        let (tx, tail, held) = hold_declared_body(&server, proto).await;
        let reserved = gauge(&server, BUDGET_HELD).await;

        // A 20 KiB body does not fit beside it: it waits instead of growing memory.
        let mut second = server.connect(proto).await;
        let waiting =
            tokio::spawn(
                async move { second.review(padded_review("uid-waiting", 20 * 1024)).await },
            );
        eventually(WAIT, "the second body waits for room", || {
            gauge_is(&server, BUDGET_WAITING, 1.0)
        })
        .await;
        assert!(
            !waiting.is_finished(),
            "{proto:?}: a waiting request was answered"
        );
        assert_eq!(
            gauge(&server, BUDGET_HELD).await,
            reserved,
            "{proto:?}: the second body was taken in beyond the budget"
        );

        tx.send(tail.into()).await.expect("tail");
        drop(tx);
        let reply = held.await.expect("holder task").expect("holder reply");
        assert_eq!(reply.admission()["uid"], "uid-holder");
        let reply = waiting.await.expect("waiting task").expect("waiting reply");
        assert_eq!(reply.admission()["uid"], "uid-waiting");
        assert_eq!(reply.admission()["allowed"], true);
        // Both answered: nothing waits and nothing is held.
        assert_eq!(gauge(&server, BUDGET_WAITING).await, 0.0, "{proto:?}");
        assert_eq!(gauge(&server, BUDGET_HELD).await, 0.0, "{proto:?}");
    }
}

#[tokio::test]
async fn serve_refuses_a_body_budget_below_the_body_limit() {
    let pki = Pki::new("budget");
    let leaf = pki.leaf();
    let secret = SecretDir::new(&leaf.cert_pem, &leaf.key_pem);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = sbmesh::server::App {
        defaults: Arc::new(test_defaults()),
        cluster: sbmesh::cluster::Cluster::off(sbmesh::contract::IdentityMode::Inject),
        certs: None,
    };
    let settings = Settings {
        body_limit: 1024 * 1024,
        max_inflight_body_bytes: 1024,
        ..test_settings()
    };
    let listeners = Listeners {
        webhook: listener,
        admin: None,
    };
    let err = sbmesh::server::serve_admission(listeners, secret.files(), app, settings, async {})
        .await
        .expect_err("a budget below the body limit is refused at start");
    assert!(err.to_string().contains("budget"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_body_beyond_the_budget_gets_503_not_a_deadlock() {
    let server = budget_server().await;
    for proto in Proto::BOTH {
        let (tx, tail, held) = hold_declared_body(&server, proto).await;

        // A streamed body of unknown length that does not fit is refused at once.
        let mut second = server.connect(proto).await;
        let (tx2, body2) = streamed();
        let request2 = second.request(Method::POST, "/mutate", body2);
        let refused = tokio::spawn(async move { second.send(request2).await });
        tx2.send(padded_review("uid-streamed", 20 * 1024).into())
            .await
            .expect("streamed");
        drop(tx2);
        let reply = refused.await.expect("task").expect("reply");
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{proto:?}");
        assert!(
            reply.text().contains("body bytes in flight"),
            "{}",
            reply.text()
        );

        tx.send(tail.into()).await.expect("tail");
        drop(tx);
        let reply = held.await.expect("holder task").expect("holder reply");
        assert_eq!(reply.admission()["uid"], "uid-holder");
    }
}
