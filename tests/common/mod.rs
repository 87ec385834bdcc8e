//! Helpers for tests that talk to a real server over loopback: a test PKI (rcgen), a
//! directory laid out like a mounted Secret, a TLS client that verifies against the test CA
//! only and speaks HTTP/1.1 or HTTP/2 (ALPN set explicitly), and realistic AdmissionReviews.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{self as http, HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use sbmesh::cluster::Cluster;
use sbmesh::contract::{Defaults, IdentityMode};
use sbmesh::server::{self, App, Listeners, ServeError, Settings, TlsFiles};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, Infallible>;

#[path = "../shared/defaults.rs"]
mod shared_defaults;
#[allow(unused_imports)]
pub use shared_defaults::{CLIENT_ID, SERVICEBUS_NAMESPACE, TENANT_ID};

// ---------------------------------------------------------------------------------------------
// PKI

/// A CA that signs serving certificates for `localhost` and `127.0.0.1`.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pub ca: CertificateDer<'static>,
}

/// A serving certificate and its key, PEM, and the certificate's DER to recognise it by.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&key).expect("CA cert").der().clone();
        Self {
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// An existing CA, e.g. one `sbmesh::certs` made: its certificate and private key, PEM.
    pub fn from_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Self {
        let key = KeyPair::from_pem(ca_key_pem).expect("CA key PEM");
        let ca = first_der(ca_cert_pem);
        Self {
            issuer: Issuer::from_ca_cert_der(&ca, key).expect("CA certificate"),
            ca,
        }
    }

    pub fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "sbmesh test");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    /// An existing serving certificate and key, e.g. ones `sbmesh::certs` made.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Self {
        Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            der: first_der(cert_pem),
        }
    }
}

/// The first certificate in `pem`, DER.
pub fn first_der(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a CERTIFICATE block")
        .expect("certificate PEM")
}

/// A fresh key in PEM that belongs to no certificate.
pub fn stray_key_pem() -> String {
    KeyPair::generate().expect("key").serialize_pem()
}

// ---------------------------------------------------------------------------------------------
// A directory laid out like a Secret that kubelet mounted

/// `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`, and a swap that works like
/// kubelet's atomic writer: new timestamped dir, `..data_tmp` symlink, rename over `..data`,
/// old dir removed.
pub struct SecretDir {
    pub dir: tempfile::TempDir,
    current: String,
    version: u32,
}

impl SecretDir {
    pub fn new(cert_pem: &str, key_pem: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = "..2026_01_01_00_00_00.000000001".to_string();
        write_version(dir.path(), &first, cert_pem, key_pem);
        symlink(&first, &dir.path().join("..data"));
        for file in ["tls.crt", "tls.key"] {
            symlink(&format!("..data/{file}"), &dir.path().join(file));
        }
        Self {
            dir,
            current: first,
            version: 1,
        }
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join("tls.crt"),
            key: self.dir.path().join("tls.key"),
        }
    }

    pub fn swap(&mut self, cert_pem: &str, key_pem: &str) {
        self.version += 1;
        let next = format!("..2026_01_01_00_00_{:02}.{:09}", self.version, self.version);
        write_version(self.dir.path(), &next, cert_pem, key_pem);
        let tmp = self.dir.path().join("..data_tmp");
        symlink(&next, &tmp);
        std::fs::rename(&tmp, self.dir.path().join("..data")).expect("rename ..data_tmp");
        std::fs::remove_dir_all(self.dir.path().join(&self.current)).expect("remove old version");
        self.current = next;
    }

    /// Where the current version's files really are.
    pub fn current_dir(&self) -> PathBuf {
        self.dir.path().join(&self.current)
    }
}

fn write_version(root: &Path, name: &str, cert_pem: &str, key_pem: &str) {
    let dir = root.join(name);
    std::fs::create_dir(&dir).expect("version dir");
    std::fs::write(dir.join("tls.crt"), cert_pem).expect("write tls.crt");
    std::fs::write(dir.join("tls.key"), key_pem).expect("write tls.key");
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

// ---------------------------------------------------------------------------------------------
// The server under test

pub fn test_defaults() -> Defaults {
    shared_defaults::full()
}

/// Settings with short timings for tests.
pub fn test_settings() -> Settings {
    Settings {
        drain_grace: Duration::from_millis(300),
        shutdown_timeout: Duration::from_secs(5),
        cert_reload_interval: Duration::from_millis(100),
        ..Settings::default()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub pki: Pki,
    pub secret: SecretDir,
    /// CAs the clients trust.
    pub roots: Vec<CertificateDer<'static>>,
    pub leaf: Leaf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    pub async fn start(settings: Settings) -> Self {
        let pki = Pki::new("sbmesh test CA");
        let leaf = pki.leaf();
        let secret = SecretDir::new(&leaf.cert_pem, &leaf.key_pem);
        Self::start_with(settings, pki, leaf, secret).await
    }

    pub async fn start_with(settings: Settings, pki: Pki, leaf: Leaf, secret: SecretDir) -> Self {
        init_tracing();
        let webhook = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let addr = webhook.local_addr().expect("webhook addr");
        let admin_addr = admin.local_addr().expect("admin addr");
        let (tx, rx) = oneshot::channel::<()>();
        let app = App {
            defaults: Arc::new(test_defaults()),
            cluster: Cluster::off(IdentityMode::Inject),
            certs: None,
        };
        let handle = tokio::spawn(server::serve_admission(
            Listeners {
                webhook,
                admin: Some(admin),
            },
            secret.files(),
            app,
            settings,
            async move {
                let _ = rx.await;
            },
        ));
        let roots = vec![pki.ca.clone()];
        let server = Self {
            addr,
            admin: admin_addr,
            pki,
            secret,
            roots,
            leaf,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        // Serving once ready: the files were read, so a test may change them now.
        eventually(
            Duration::from_secs(10),
            "the server becomes ready",
            || async {
                let ready = admin_get(admin_addr, "/readyz").await;
                ready
                    .is_ok_and(|r| r.status == StatusCode::OK)
                    .then_some(())
            },
        )
        .await;
        server
    }

    /// Fires the shutdown signal.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return, at most `within`.
    pub async fn stopped(&mut self, within: Duration) -> Result<(), ServeError> {
        let handle = self.handle.take().expect("server still running");
        tokio::time::timeout(within, handle)
            .await
            .unwrap_or_else(|_| panic!("serve did not return within {within:?}"))
            .expect("serve task panicked")
    }

    pub async fn connect(&self, proto: Proto) -> Conn {
        Conn::open(self.addr, &self.roots, proto)
            .await
            .unwrap_or_else(|e| panic!("cannot connect over {proto:?}: {e}"))
    }

    /// One request on a new connection.
    pub async fn call(
        &self,
        proto: Proto,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut conn = self.connect(proto).await;
        let request = conn.request(method, path, full(body));
        conn.send(request)
            .await
            .unwrap_or_else(|e| panic!("{path} over {proto:?}: {e}"))
    }

    pub async fn review(&self, proto: Proto, body: impl Into<Bytes>) -> Reply {
        self.call(proto, Method::POST, "/mutate", body).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        admin_get(self.admin, path).await.expect("admin request")
    }

    pub async fn metrics(&self) -> String {
        let reply = self.admin_get("/metrics").await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.text().to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// A value from Prometheus text: the sample whose name and labels are exactly `series`.
/// The certificate reload counters: (successes, failures).
pub fn tls_reloads(metrics: &str) -> (Option<f64>, Option<f64>) {
    (
        metric(metrics, r#"sbmesh_tls_reloads_total{result="success"}"#),
        metric(metrics, r#"sbmesh_tls_reloads_total{result="failure"}"#),
    )
}

pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()
    })
}

/// Connections waiting in the kernel's accept queue of the IPv4 listener on `addr`: the
/// `rx_queue` of its LISTEN row in `/proc/net/tcp` (Linux). `None` when there is no such row.
pub fn accept_queue(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    // The address as the kernel prints it: its bytes in network order read as a native u32.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address, rem_address, st, tx_queue:rx_queue, …; st 0A is LISTEN.
        if fields.get(1) != Some(&local.as_str()) || fields.get(3) != Some(&"0A") {
            return None;
        }
        let (_, rx) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// Polls `check` until it yields a value, failing the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

impl Proto {
    pub const BOTH: [Proto; 2] = [Proto::Http1, Proto::Http2];

    pub fn alpn(self) -> &'static [u8] {
        match self {
            Proto::Http1 => b"http/1.1",
            Proto::Http2 => b"h2",
        }
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts only `roots`, offers `alpn` and speaks `versions`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("add root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// A body whose chunks come from a channel; no length is declared.
pub fn streamed() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(hyper::body::Frame::data(chunk)), rx))
    });
    (tx, http_body_util::StreamBody::new(stream).boxed())
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// One client connection.
pub struct Conn {
    sender: Sender,
    proto: Proto,
    /// The ALPN protocol the server chose.
    pub alpn: Option<Vec<u8>>,
    /// The server's certificate.
    pub peer: Option<CertificateDer<'static>>,
    driver: JoinHandle<()>,
}

impl Conn {
    pub async fn open(
        addr: SocketAddr,
        roots: &[CertificateDer<'static>],
        proto: Proto,
    ) -> Result<Conn, Error> {
        let config = client_config(roots, &[proto.alpn()], rustls::DEFAULT_VERSIONS);
        let conn = Self::open_with(addr, config, proto).await?;
        if conn.alpn.as_deref() != Some(proto.alpn()) {
            return Err(format!("server chose ALPN {:?}, not {proto:?}", conn.alpn).into());
        }
        Ok(conn)
    }

    pub async fn open_with(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        proto: Proto,
    ) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost")?;
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let peer = session.peer_certificates().and_then(|c| c.first()).cloned();
        let io = TokioIo::new(tls);
        let (sender, driver) = match proto {
            Proto::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                (
                    Sender::H1(sender),
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
            Proto::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                (
                    Sender::H2(sender),
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
        };
        Ok(Conn {
            sender,
            proto,
            alpn,
            peer,
            driver,
        })
    }

    pub fn request(&self, method: Method, path: &str, body: Body) -> Request<Body> {
        let builder = match self.proto {
            Proto::Http1 => Request::builder()
                .uri(path)
                .header(http::header::HOST, "localhost"),
            Proto::Http2 => Request::builder()
                .uri(format!("https://localhost{path}"))
                .version(Version::HTTP_2),
        };
        builder
            .method(method)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request")
    }

    /// Waits until the connection can take a request; an error means it is closed.
    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match &mut self.sender {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// True once the connection's driver has finished (the server closed it).
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Reply, hyper::Error> {
        self.ready().await?;
        let response = match &mut self.sender {
            Sender::H1(s) => s.send_request(request).await?,
            Sender::H2(s) => s.send_request(request).await?,
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    pub async fn review(&mut self, body: impl Into<Bytes>) -> Result<Reply, hyper::Error> {
        let request = self.request(Method::POST, "/mutate", full(body));
        self.send(request).await
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The AdmissionReview's `response`.
    pub fn admission(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let review = self.json();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        review["response"].clone()
    }
}

/// A GET over plain HTTP/1.1 on a new connection.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Result<Reply, Error> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::builder()
        .uri(path)
        .header(http::header::HOST, "localhost")
        .body(full(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    driver.abort();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// AdmissionReviews

/// What the ReplicaSet controller sends (generateName, ownerReferences, template labels, no
/// namespace), opted in, running as the `orders` ServiceAccount.
pub fn controller_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-5d8f7c9b6d-",
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b6d"},
            "annotations": {"sbmesh.io/inject": "true"},
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-5d8f7c9b6d",
                "uid": "3f1c2a9e-8b7d-4c6e-9a51-2d0f4b7e6c13",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "serviceAccountName": "orders",
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"memory": "128Mi"}
                },
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true
        },
        "status": {}
    })
}

/// An AdmissionReview as the API server sends it for a CREATE of `object` (of `kind`, core
/// group v1) in namespace `shop`.
pub fn review_for(uid: &str, kind: &str, resource: &str, object: Value) -> Vec<u8> {
    let review = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": resource},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "b3a2f0c4-5d6e-4f70-8a91-b2c3d4e5f607",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    });
    serde_json::to_vec(&review).expect("review JSON")
}

pub fn pod_review(uid: &str, pod: Value) -> Vec<u8> {
    review_for(uid, "Pod", "pods", pod)
}

/// The JSON patch in an AdmissionResponse, decoded, or `None` when there is none.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    use base64::Engine as _;
    let encoded = response.get("patch")?.as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is base64");
    Some(serde_json::from_slice(&bytes).expect("patch is a JSON patch"))
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
