//! Self-managed certificates against the in-process fake API server: the Secret is created and
//! the caBundle patched on first start, racing replicas end with one pair, a CA rotation keeps
//! both CAs trusted during the overlap, a restart reuses the Secret, a Secret edited into
//! garbage is replaced, nothing is written when nothing changed, and a replica is ready only
//! once the certificate it serves chains to the caBundle.

mod common;
#[path = "fake_apiserver/mod.rs"]
mod fake_apiserver;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use fake_apiserver::{FakeApiServer, Res};
use sbmesh::selfmanaged::{self, Change, Settings, keys};

const NAMESPACE: &str = "sbmesh-system";
const SECRET: &str = "sbmesh-serving-cert";
const MWC: &str = "00-sbmesh";

fn settings(dir: &Path, probe: SocketAddr) -> Settings {
    Settings {
        namespace: NAMESPACE.into(),
        secret: SECRET.into(),
        webhook_configuration: MWC.into(),
        service: "sbmesh".into(),
        dir: dir.to_path_buf(),
        probe,
        interval: Duration::from_millis(200),
        retry: Duration::from_millis(100),
        ca_days: selfmanaged::CA_DAYS,
        serving_days: selfmanaged::SERVING_DAYS,
    }
}

fn unused_probe() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The install's objects: the webhook configuration (no caBundle, or `bundle`) and, when
/// `empty_secret`, the empty Secret the chart creates.
async fn cluster(bundle: Option<&str>, empty_secret: bool) -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    let mut client_config = json!({"service": {"name": "sbmesh", "namespace": NAMESPACE, "path": "/mutate", "port": 443}});
    if let Some(b) = bundle {
        client_config["caBundle"] = json!(b64(b));
    }
    fake.put(
        Res::MutatingWebhookConfigurations,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": MWC, "annotations": {"team": "platform"}},
            "webhooks": [{
                "name": "inject.sbmesh.io",
                "clientConfig": client_config,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
            }]
        }),
    );
    if empty_secret {
        fake.put(
            Res::Secrets,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": SECRET, "namespace": NAMESPACE,
                                "labels": {"app.kubernetes.io/name": "sbmesh"}}}),
        );
    }
    fake
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret_data(fake: &FakeApiServer) -> serde_json::Map<String, Value> {
    let s = fake
        .object(Res::Secrets, NAMESPACE, SECRET)
        .expect("the Secret");
    s["data"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (k, Value::String(String::from_utf8(text).unwrap()))
        })
        .collect()
}

fn bundle(fake: &FakeApiServer) -> String {
    let mwc = fake
        .object(Res::MutatingWebhookConfigurations, "", MWC)
        .unwrap();
    let b = mwc["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or("");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
}

fn pems(bundle: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut bundle.as_bytes())
        .map(|c| c.unwrap().as_ref().to_vec())
        .collect()
}

fn der(pem: &str) -> Vec<u8> {
    let mut all = pems(pem);
    assert_eq!(all.len(), 1, "{pem}");
    all.remove(0)
}

fn data_str<'a>(d: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    d[k].as_str().unwrap()
}

#[tokio::test]
async fn first_start_fills_the_secret_patches_the_ca_bundle_and_writes_the_pair() {
    let fake = cluster(None, true).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), unused_probe());
    let (pair, changes) = selfmanaged::reconcile(&fake.client(), &s, now())
        .await
        .unwrap();
    assert_eq!(changes, [Change::Created]);
    let data = secret_data(&fake);
    for k in [keys::CA_CERT, keys::CA_KEY, keys::CERT, keys::KEY] {
        assert!(data.contains_key(k), "{k}");
    }
    assert!(!data.contains_key(keys::PREVIOUS_CA_CERT));
    assert_eq!(data_str(&data, keys::CERT), pair.cert);
    // The install's labels on the Secret are kept.
    let secret = fake.object(Res::Secrets, NAMESPACE, SECRET).unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/name"],
        "sbmesh"
    );
    // The caBundle is exactly the CA; the configuration's other fields are untouched.
    assert_eq!(pems(&bundle(&fake)), [der(&pair.ca_cert)]);
    let mwc = fake
        .object(Res::MutatingWebhookConfigurations, "", MWC)
        .unwrap();
    assert_eq!(mwc["metadata"]["annotations"]["team"], "platform");
    assert_eq!(
        mwc["webhooks"][0]["clientConfig"]["service"]["path"],
        "/mutate"
    );
    // The server's files hold the pair.
    assert_eq!(std::fs::read_to_string(s.cert_path()).unwrap(), pair.cert);
    assert_eq!(std::fs::read_to_string(s.key_path()).unwrap(), pair.key);
    assert_eq!(
        (
            fake.writes(Res::Secrets),
            fake.writes(Res::MutatingWebhookConfigurations)
        ),
        (1, 1)
    );

    // Nothing changed: nothing is written.
    let (again, changes) = selfmanaged::reconcile(&fake.client(), &s, now())
        .await
        .unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(again, pair);
    assert_eq!(
        (
            fake.writes(Res::Secrets),
            fake.writes(Res::MutatingWebhookConfigurations)
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn without_a_secret_it_is_created() {
    let fake = cluster(None, false).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), unused_probe());
    let (pair, _) = selfmanaged::reconcile(&fake.client(), &s, now())
        .await
        .unwrap();
    assert_eq!(data_str(&secret_data(&fake), keys::CERT), pair.cert);
}

#[tokio::test]
async fn a_restart_reuses_the_secret() {
    let fake = cluster(None, true).await;
    let first = tempfile::tempdir().unwrap();
    let (pair, _) = selfmanaged::reconcile(
        &fake.client(),
        &settings(first.path(), unused_probe()),
        now(),
    )
    .await
    .unwrap();
    let writes = (
        fake.writes(Res::Secrets),
        fake.writes(Res::MutatingWebhookConfigurations),
    );
    // A new process: a new folder, the same Secret.
    let second = tempfile::tempdir().unwrap();
    let s = settings(second.path(), unused_probe());
    let (again, changes) = selfmanaged::reconcile(&fake.client(), &s, now())
        .await
        .unwrap();
    assert!(changes.is_empty());
    assert_eq!(again, pair);
    assert_eq!(std::fs::read_to_string(s.cert_path()).unwrap(), pair.cert);
    assert_eq!(
        (
            fake.writes(Res::Secrets),
            fake.writes(Res::MutatingWebhookConfigurations)
        ),
        writes
    );
}

#[tokio::test]
async fn replicas_racing_on_the_first_start_end_with_one_pair_that_both_serve() {
    for empty_secret in [true, false] {
        let fake = cluster(None, empty_secret).await;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sa, sb) = (
            settings(a.path(), unused_probe()),
            settings(b.path(), unused_probe()),
        );
        let client = fake.client();
        let (ra, rb) = tokio::join!(
            selfmanaged::reconcile(&client, &sa, now()),
            selfmanaged::reconcile(&client, &sb, now())
        );
        let (pa, pb) = (ra.unwrap().0, rb.unwrap().0);
        assert_eq!(pa, pb, "both serve the winner's pair");
        let data = secret_data(&fake);
        assert_eq!(data_str(&data, keys::CERT), pa.cert);
        for s in [&sa, &sb] {
            assert_eq!(std::fs::read_to_string(s.cert_path()).unwrap(), pa.cert);
        }
        assert_eq!(pems(&bundle(&fake)), [der(&pa.ca_cert)]);
        // Settled: another pass by either writes nothing.
        let writes = fake.writes(Res::Secrets) + fake.writes(Res::MutatingWebhookConfigurations);
        let (_, changes) = selfmanaged::reconcile(&client, &sa, now()).await.unwrap();
        assert!(changes.is_empty());
        assert_eq!(
            fake.writes(Res::Secrets) + fake.writes(Res::MutatingWebhookConfigurations),
            writes
        );
    }
}

#[tokio::test]
async fn a_secret_edited_into_garbage_is_replaced_not_a_crash() {
    for garbage in [
        json!({"tls.crt": b64("not a certificate"), "tls.key": b64("nor a key")}),
        json!({"ca.crt": b64("x"), "ca.key": b64("y"), "tls.crt": b64("z"), "tls.key": b64("w")}),
        json!({"tls.crt": "!!not base64 text once decoded: \u{fffd}"}),
    ] {
        let fake = cluster(None, false).await;
        fake.put(
            Res::Secrets,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE},
                   "data": garbage}),
        );
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), unused_probe());
        let result = selfmanaged::reconcile(&fake.client(), &s, now()).await;
        match result {
            Ok((pair, changes)) => {
                assert!(matches!(changes[0], Change::Replaced(_)), "{changes:?}");
                assert_eq!(data_str(&secret_data(&fake), keys::CERT), pair.cert);
            }
            // A Secret whose data is not even base64 cannot be read by the client: an error
            // to retry (and log), never a panic.
            Err(e) => assert!(e.to_string().contains("Secret"), "{e}"),
        }
    }
}

#[tokio::test]
async fn a_ca_whose_key_does_not_match_is_garbage_too() {
    let fake = cluster(None, true).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), unused_probe());
    let (pair, _) = selfmanaged::reconcile(&fake.client(), &s, now())
        .await
        .unwrap();
    let mut secret = fake.object(Res::Secrets, NAMESPACE, SECRET).unwrap();
    secret["data"][keys::CA_KEY] = json!(b64(&KeyPair::generate().unwrap().serialize_pem()));
    fake.put(Res::Secrets, secret);
    let (fresh, changes) = selfmanaged::reconcile(&fake.client(), &s, now())
        .await
        .unwrap();
    assert!(
        matches!(&changes[0], Change::Replaced(why) if why.contains("ca.key")),
        "{changes:?}"
    );
    assert_ne!(fresh.ca_cert, pair.ca_cert);
}

// ---- rotation ---------------------------------------------------------------------------------

const DAY: i64 = 86_400;

/// Someone else's CA (a platform root), as PEM.
fn foreign_ca() -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "platform root");
    p.self_signed(&key).unwrap().pem()
}

/// A CA valid from `from` to `to` (seconds from now), named like the webhook's.
fn dated_ca(from: i64, to: i64) -> (String, String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(
        DnType::CommonName,
        format!("{} test {from}", selfmanaged::CA_NAME_PREFIX),
    );
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = OffsetDateTime::from_unix_timestamp(now() + from).unwrap();
    p.not_after = OffsetDateTime::from_unix_timestamp(now() + to).unwrap();
    let cert = p.self_signed(&key).unwrap();
    let (pem, key_pem) = (cert.pem(), key.serialize_pem());
    (pem, key_pem, Issuer::new(p, key))
}

/// A serving certificate for the webhook's Service names, valid from `from` to `to`.
fn dated_leaf(issuer: &Issuer<'static, KeyPair>, from: i64, to: i64) -> (String, String) {
    let names = sbmesh::certs::Request::for_service("sbmesh", NAMESPACE, &[], &[], 90).dns_names;
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name.push(DnType::CommonName, "sbmesh");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = OffsetDateTime::from_unix_timestamp(now() + from).unwrap();
    p.not_after = OffsetDateTime::from_unix_timestamp(now() + to).unwrap();
    (
        p.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

/// An install whose caBundle is `bundle` and whose Secret holds `entries`.
async fn installed(bundle: &str, entries: &[(&str, &str)]) -> FakeApiServer {
    let fake = cluster(Some(bundle), false).await;
    put_secret(&fake, entries);
    fake
}

/// One pass in a fresh folder.
async fn reconcile_once(fake: &FakeApiServer) -> (selfmanaged::Pair, Vec<Change>) {
    let dir = tempfile::tempdir().unwrap();
    selfmanaged::reconcile(&fake.client(), &settings(dir.path(), unused_probe()), now())
        .await
        .unwrap()
}

fn put_secret(fake: &FakeApiServer, entries: &[(&str, &str)]) {
    let data: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), json!(b64(v))))
        .collect();
    fake.put(
        Res::Secrets,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE},
               "data": data}),
    );
}

#[tokio::test]
async fn a_ca_rotation_keeps_both_cas_trusted_and_moves_the_serving_certificate_after_the_bundle() {
    // Someone else's CA in the bundle stays; the webhook's CA is at 800 of its 1,095 days.
    let foreign = foreign_ca();
    let (old_ca, old_key, old_issuer) = dated_ca(-800 * DAY, 295 * DAY);
    let (leaf, leaf_key) = dated_leaf(&old_issuer, -10 * DAY, 80 * DAY);
    let fake = installed(
        &format!("{foreign}{old_ca}"),
        &[
            (keys::CA_CERT, &old_ca),
            (keys::CA_KEY, &old_key),
            (keys::CERT, &leaf),
            (keys::KEY, &leaf_key),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), unused_probe());
    let client = fake.client();

    // Pass 1: a new CA; the old one becomes the previous; the bundle holds both (and the
    // foreign one first); the serving certificate stays on the old CA, which clients trust.
    let (p1, changes) = selfmanaged::reconcile(&client, &s, now()).await.unwrap();
    assert_eq!(changes, [Change::CaRotated]);
    assert_eq!(p1.previous_ca.as_deref(), Some(old_ca.as_str()));
    assert_ne!(p1.ca_cert, old_ca);
    assert_eq!(p1.cert, leaf);
    assert_eq!(
        pems(&bundle(&fake)),
        [der(&foreign), der(&old_ca), der(&p1.ca_cert)]
    );

    // Pass 2: the bundle holds the new CA, so the serving certificate moves to it.
    let mwc_writes = fake.writes(Res::MutatingWebhookConfigurations);
    let (p2, changes) = selfmanaged::reconcile(&client, &s, now()).await.unwrap();
    assert_eq!(changes, [Change::ServingMovedToNewCa]);
    assert_ne!(p2.cert, leaf);
    assert_eq!(p2.ca_cert, p1.ca_cert);
    assert_eq!(
        fake.writes(Res::MutatingWebhookConfigurations),
        mwc_writes,
        "bundle unchanged"
    );
    verifies(&p2.cert, &p2.ca_cert);
    assert_eq!(std::fs::read_to_string(s.cert_path()).unwrap(), p2.cert);

    // Pass 3: settled.
    let (_, changes) = selfmanaged::reconcile(&client, &s, now()).await.unwrap();
    assert!(changes.is_empty(), "{changes:?}");
}

#[tokio::test]
async fn an_expired_previous_ca_leaves_the_secret_and_the_bundle() {
    let (old_ca, _, _) = dated_ca(-1100 * DAY, -DAY);
    let (ca, ca_key, issuer) = dated_ca(-300 * DAY, 795 * DAY);
    let (leaf, leaf_key) = dated_leaf(&issuer, -DAY, 89 * DAY);
    let fake = installed(
        &format!("{old_ca}{ca}"),
        &[
            (keys::CA_CERT, &ca),
            (keys::CA_KEY, &ca_key),
            (keys::PREVIOUS_CA_CERT, &old_ca),
            (keys::CERT, &leaf),
            (keys::KEY, &leaf_key),
        ],
    )
    .await;
    let (pair, changes) = reconcile_once(&fake).await;
    assert_eq!(changes, [Change::PreviousCaDropped]);
    assert_eq!(pair.previous_ca, None);
    assert_eq!(pems(&bundle(&fake)), [der(&ca)]);
    assert!(!secret_data(&fake).contains_key(keys::PREVIOUS_CA_CERT));
}

#[tokio::test]
async fn a_serving_certificate_at_two_thirds_of_its_life_is_renewed_by_the_same_ca() {
    let (ca, ca_key, issuer) = dated_ca(-10 * DAY, 1085 * DAY);
    let (leaf, leaf_key) = dated_leaf(&issuer, -61 * DAY, 29 * DAY);
    let fake = installed(
        &ca,
        &[
            (keys::CA_CERT, &ca),
            (keys::CA_KEY, &ca_key),
            (keys::CERT, &leaf),
            (keys::KEY, &leaf_key),
        ],
    )
    .await;
    let (pair, changes) = reconcile_once(&fake).await;
    assert_eq!(changes, [Change::ServingRenewed]);
    assert_eq!(pair.ca_cert, ca);
    verifies(&pair.cert, &ca);
    assert_eq!(fake.writes(Res::MutatingWebhookConfigurations), 0);
}

/// The serving certificate verifies for the Service's name against `ca` alone (rustls).
fn verifies(cert_pem: &str, ca_pem: &str) {
    use rustls::client::danger::ServerCertVerifier as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca_pem).into()).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from("sbmesh.sbmesh-system.svc").unwrap();
    verifier
        .verify_server_cert(
            &der(cert_pem).into(),
            &[],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .expect("the serving certificate chains to the CA");
}

// ---- readiness --------------------------------------------------------------------------------

#[tokio::test]
async fn a_replica_is_ready_only_once_its_served_certificate_chains_to_the_ca_bundle() {
    use sbmesh::server::{self, Listeners};
    let fake = cluster(None, true).await;
    let dir = tempfile::tempdir().unwrap();
    let webhook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (webhook.local_addr().unwrap(), admin.local_addr().unwrap());
    let s = settings(dir.path(), addr);
    // The throwaway pair the process starts with: not the Secret's, trusted by no one.
    let placeholder = sbmesh::certs::generate(&s.request()).unwrap();
    sbmesh::certs::write(dir.path(), &placeholder).unwrap();
    let trusted = selfmanaged::Trusted::default();
    let app = server::App {
        defaults: Arc::new(common::test_defaults()),
        cluster: sbmesh::cluster::Cluster::off(sbmesh::contract::IdentityMode::Inject),
        certs: Some(trusted.clone()),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve_admission(
        Listeners {
            webhook,
            admin: Some(admin),
        },
        server::TlsFiles {
            cert: s.cert_path(),
            key: s.key_path(),
        },
        app,
        common::test_settings(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    // Serving, but not ready: the certificate does not chain to a caBundle (there is none).
    common::eventually(
        Duration::from_secs(10),
        "the server answers /readyz",
        || async { common::admin_get(admin_addr, "/readyz").await.ok() },
    )
    .await;
    let r = common::admin_get(admin_addr, "/readyz").await.unwrap();
    assert_ne!(
        r.status, 200,
        "ready before the caBundle trusts the served certificate"
    );

    let (stop_loop, loop_stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(selfmanaged::run(
        fake.client(),
        s.clone(),
        trusted.clone(),
        loop_stopped,
    ));
    let data = becomes_ready_serving_the_secrets_pair(&fake, admin_addr, addr).await;

    // Someone replaces the caBundle with their own CA: the loop puts the webhook's CA back
    // next to it.
    let other = foreign_ca();
    let mut mwc = fake
        .object(Res::MutatingWebhookConfigurations, "", MWC)
        .unwrap();
    mwc["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(&other));
    fake.put(Res::MutatingWebhookConfigurations, mwc);
    common::eventually(
        Duration::from_secs(15),
        "the caBundle is repaired",
        || async {
            let b = pems(&bundle(&fake));
            (b == [der(&other), der(data_str(&data, keys::CA_CERT))] && trusted.get()).then_some(())
        },
    )
    .await;

    stop_loop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .unwrap()
        .unwrap();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
}

/// The certificate the server presents (no verification: only to compare it).
async fn served_certificate(addr: SocketAddr) -> Vec<u8> {
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(Any))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// `sbmesh serve --certs self-managed` as the Deployment runs it: in-cluster-like credentials
/// (a kubeconfig here), the namespace from the environment; it fills the Secret and the
/// caBundle, becomes ready, and serves the Secret's certificate.
#[tokio::test]
async fn the_binary_in_self_managed_mode_becomes_ready_serving_the_secrets_pair() {
    let fake = cluster(None, true).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            fake.url()
        ),
    )
    .unwrap();
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let (https, admin) = (
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
    );
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_sbmesh"))
            .args([
                "serve",
                "--certs",
                "self-managed",
                "--cluster",
                "off",
                "--listen",
                &format!("127.0.0.1:{https}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
                "--certs-dir",
                &dir.path().join("pair").display().to_string(),
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("SBMESH_CERTS_NAMESPACE", NAMESPACE)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    becomes_ready_serving_the_secrets_pair(
        &fake,
        format!("127.0.0.1:{admin}").parse().unwrap(),
        format!("127.0.0.1:{https}").parse().unwrap(),
    )
    .await;
}

/// Waits until the replica is ready, then checks that it serves the Secret's certificate and
/// that the caBundle is the Secret's CA; returns the Secret's data.
async fn becomes_ready_serving_the_secrets_pair(
    fake: &FakeApiServer,
    admin: SocketAddr,
    https: SocketAddr,
) -> serde_json::Map<String, Value> {
    common::eventually(
        Duration::from_secs(30),
        "the replica becomes ready",
        || async {
            let r = common::admin_get(admin, "/readyz").await.ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
    let data = secret_data(fake);
    assert_eq!(pems(&bundle(fake)), [der(data_str(&data, keys::CA_CERT))]);
    assert_eq!(
        served_certificate(https).await,
        der(data_str(&data, keys::CERT))
    );
    data
}
