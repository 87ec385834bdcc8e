//! What `sbmesh::certs` makes verifies where it is used: against a bundle of the old and the new
//! CA (every caBundle rotation has one), with rustls (webpki) and with OpenSSL, both the `openssl`
//! CLI and, through a real server whose Secret is rotated under load, Python's `ssl` module.
//!
//! OpenSSL looks a certificate's issuer up by subject name and, among CAs named alike, by the
//! authorityKeyIdentifier: when every CA was called `CN=sbmesh webhook CA` and serving
//! certificates had no authorityKeyIdentifier, it took the wrong CA of the two and failed with
//! "certificate signature failure". rustls tries every candidate, which is why the rustls-based
//! rotation test in tests/server.rs never saw it.

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{ServerName, UnixTime};
use serde_json::Value;

use common::*;
use sbmesh::certs::{self, Generated, Request};

fn pair() -> Generated {
    certs::generate(&Request::localhost(30)).expect("generate")
}

/// Verifies `leaf_pem` for `localhost` with rustls' webpki verifier, trusting `bundle_pem`.
fn rustls_verify(bundle_pem: &str, leaf_pem: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut bundle_pem.as_bytes()) {
        roots.add(der.expect("bundle PEM")).expect("root");
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    verifier
        .verify_server_cert(
            &first_der(leaf_pem),
            &[],
            &ServerName::try_from("localhost").expect("name"),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

/// Whether the `openssl` CLI is on PATH; says so on stderr when it is not.
fn openssl_available(test: &str) -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "{test}: SKIPPED the `openssl verify` part: no openssl on PATH (CI installs it, \
             see .ci/run); the rustls part ran"
        );
    }
    found
}

/// `openssl verify -CAfile bundle.pem tls.crt`: Ok, or its output.
fn openssl_verify(dir: &Path, bundle_pem: &str, leaf_pem: &str) -> Result<(), String> {
    let (bundle, leaf) = (dir.join("bundle.pem"), dir.join("tls.crt"));
    std::fs::write(&bundle, bundle_pem).expect("write bundle");
    std::fs::write(&leaf, leaf_pem).expect("write tls.crt");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&bundle)
        .arg(&leaf)
        .output()
        .expect("run openssl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim() == format!("{}: OK", leaf.display()) {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn each_serving_certificate_verifies_against_a_bundle_of_old_and_new_ca() {
    let (old, new) = (pair(), pair());
    let openssl = openssl_available("each_serving_certificate_verifies");
    let dir = tempfile::tempdir().expect("temp dir");
    for (order, bundle) in [
        ("old+new", format!("{}{}", old.ca_pem, new.ca_pem)),
        ("new+old", format!("{}{}", new.ca_pem, old.ca_pem)),
    ] {
        for (which, leaf) in [("old", &old.cert_pem), ("new", &new.cert_pem)] {
            rustls_verify(&bundle, leaf)
                .unwrap_or_else(|e| panic!("rustls, bundle {order}, {which} cert: {e}"));
            if openssl {
                openssl_verify(dir.path(), &bundle, leaf).unwrap_or_else(|e| {
                    panic!("openssl verify, bundle {order}, {which} cert: {e}")
                });
            }
        }
    }
}

/// A pair made the way `certs::generate` made them before: every CA named
/// `CN=sbmesh webhook CA`, serving certificates without authorityKeyIdentifier.
fn pair_made_the_old_way() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "sbmesh webhook CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf_pem = leaf.signed_by(&leaf_key, &issuer).expect("leaf").pem();
    (ca_pem, leaf_pem)
}

/// The control: the test above would have caught the old certificates. rustls accepted them,
/// OpenSSL did not. (Should a future OpenSSL try every CA of a name, this control fails and can
/// go; the test above still stands.)
#[test]
fn two_cas_of_one_name_without_key_identifiers_defeat_openssl_not_rustls() {
    let (old_ca, old_leaf) = pair_made_the_old_way();
    let (new_ca, new_leaf) = pair_made_the_old_way();
    let bundle = format!("{old_ca}{new_ca}");
    for leaf in [&old_leaf, &new_leaf] {
        rustls_verify(&bundle, leaf).expect("rustls tries every CA of the name");
    }
    if !openssl_available("two_cas_of_one_name_without_key_identifiers") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let failures: Vec<String> = [&old_leaf, &new_leaf]
        .into_iter()
        .filter_map(|leaf| openssl_verify(dir.path(), &bundle, leaf).err())
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "OpenSSL takes one CA of the name for both certificates: {failures:?}"
    );
    assert!(failures[0].contains("signature failure"), "{}", failures[0]);
}

// ---------------------------------------------------------------------------------------------
// Rotation under load, OpenSSL client

/// How long the client may run at most, whatever happens.
const CLIENT_LIMIT: Duration = Duration::from_secs(14);
/// The new certificate must be served this soon after the swap.
const NEW_CERT_WITHIN: Duration = Duration::from_secs(10);
/// Requests with the new certificate to see after the swap before stopping.
const AFTER_SWAP: usize = 20;
/// How long the client keeps going before the swap, and after it once the new certificate is
/// served.
const STEADY: Duration = Duration::from_secs(1);

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One request of the Python client.
#[derive(Debug, Clone)]
struct Record {
    t: f64,
    ok: bool,
    fp: Option<String>,
    err: Option<String>,
}

/// The Python client (tests/tls_client/handshakes.py), its output read into `records`.
struct Client {
    child: std::process::Child,
    reader: std::thread::JoinHandle<Option<String>>,
    records: Arc<Mutex<Vec<Record>>>,
    stop: PathBuf,
}

impl Client {
    fn start(port: u16, cafile: &Path, stop: PathBuf) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_client/handshakes.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(cafile)
            .arg(&stop)
            .arg(CLIENT_LIMIT.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 ({e}): this test needs Python 3 on PATH for its \
                     OpenSSL-based client (CI installs it, see .ci/run)"
                )
            });
        let stdout = child.stdout.take().expect("stdout");
        let records = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let records = records.clone();
            std::thread::spawn(move || {
                let mut openssl = None;
                for line in std::io::BufReader::new(stdout).lines() {
                    let line = line.expect("client output");
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("client printed {line:?}: {e}"));
                    if let Some(version) = v["openssl"].as_str() {
                        openssl = Some(version.to_string());
                        continue;
                    }
                    records.lock().expect("records").push(Record {
                        t: v["t"].as_f64().expect("t"),
                        ok: v["ok"].as_bool().expect("ok"),
                        fp: v["fp"].as_str().map(str::to_string),
                        err: v["err"].as_str().map(str::to_string),
                    });
                }
                openssl
            })
        };
        Self {
            child,
            reader,
            records,
            stop,
        }
    }

    fn snapshot(&self) -> Vec<Record> {
        self.records.lock().expect("records").clone()
    }

    /// Polls until `enough` holds for the records so far, `within` passes or the client exits;
    /// whether it held.
    async fn until(&mut self, within: Duration, enough: impl Fn(&[Record]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if enough(&self.snapshot()) {
                return true;
            }
            if let Some(status) = self.child.try_wait().expect("client status") {
                eprintln!("the client exited early: {status}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        enough(&self.snapshot())
    }

    /// Tells the client to stop and waits for it: every record and the OpenSSL version.
    fn finish(mut self) -> (Vec<Record>, Option<String>) {
        std::fs::write(&self.stop, "").expect("stop file");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait().expect("client status") {
                Some(status) => {
                    assert!(status.success(), "the client failed: {status}");
                    break;
                }
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("the client did not stop within 10 s");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let openssl = self.reader.join().expect("reader");
        let records = self.records.lock().expect("records").clone();
        (records, openssl)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_to_a_new_ca_under_load_fails_no_openssl_handshake() {
    let (a, b) = (pair(), pair());
    let (fp_a, fp_b) = (
        sha256_hex(&first_der(&a.cert_pem)),
        sha256_hex(&first_der(&b.cert_pem)),
    );
    let secret = SecretDir::new(&a.cert_pem, &a.key_pem);
    let mut server = TestServer::start_with(
        test_settings(),
        Pki::from_pem(&a.ca_pem, &a.ca_key_pem),
        Leaf::from_pem(&a.cert_pem, &a.key_pem),
        secret,
    )
    .await;

    // The client trusts both CAs, as a caBundle does while it rotates.
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", a.ca_pem, b.ca_pem)).expect("bundle");
    let mut client = Client::start(server.addr.port(), &bundle, dir.path().join("stop"));

    // Requests with the first pair, then the kubelet-style swap to the pair of the other CA.
    let before = client
        .until(Duration::from_secs(10), |r| r.len() >= 10)
        .await;
    assert!(
        before,
        "the client made no 10 requests: not within 10 s, or it exited (its stderr is above)"
    );
    tokio::time::sleep(STEADY).await;
    let swapped_at = unix_now();
    server.secret.swap(&b.cert_pem, &b.key_pem);
    let served = |fp: &String| {
        let fp = fp.clone();
        move |r: &[Record]| {
            r.iter()
                .filter(|r| r.ok && r.fp.as_ref() == Some(&fp))
                .count()
        }
    };
    let (count_a, count_b) = (served(&fp_a), served(&fp_b));
    client
        .until(NEW_CERT_WITHIN, |r| count_b(r) >= AFTER_SWAP)
        .await;
    tokio::time::sleep(STEADY).await;
    let (records, openssl) = client.finish();

    let failed: Vec<&Record> = records.iter().filter(|r| !r.ok).collect();
    let (with_a, with_b) = (count_a(&records), count_b(&records));
    let first_b = records
        .iter()
        .position(|r| r.ok && r.fp.as_ref() == Some(&fp_b));
    let after_swap = first_b.map(|i| records[i].t - swapped_at);
    let unknown = records
        .iter()
        .filter(|r| r.fp.as_ref().is_some_and(|fp| *fp != fp_a && *fp != fp_b))
        .count();
    let a_after_b = first_b.map_or(0, |i| {
        records[i..]
            .iter()
            .filter(|r| r.fp.as_ref() == Some(&fp_a))
            .count()
    });
    let summary = format!(
        "{} requests ({}), {} failed, {with_a} with the first certificate, {with_b} with the \
         new one, first seen {} after the swap; first failures: {:?}",
        records.len(),
        openssl.as_deref().unwrap_or("OpenSSL ?"),
        failed.len(),
        after_swap.map_or("never".to_string(), |s| format!("{s:.3} s")),
        failed
            .iter()
            .take(3)
            .map(|r| r.err.as_deref().unwrap_or("?"))
            .collect::<Vec<_>>(),
    );
    eprintln!("rotation under load: {summary}");

    assert!(failed.is_empty(), "failed requests: {summary}");
    assert!(with_a >= 10, "too few requests before the swap: {summary}");
    let after_swap = after_swap.unwrap_or_else(|| panic!("new certificate never seen: {summary}"));
    assert!(
        after_swap <= NEW_CERT_WITHIN.as_secs_f64(),
        "new certificate seen too late: {summary}"
    );
    assert!(
        with_b >= AFTER_SWAP,
        "too few requests after the swap: {summary}"
    );
    assert_eq!(unknown, 0, "a certificate of neither pair: {summary}");
    assert_eq!(a_after_b, 0, "the old certificate came back: {summary}");
    assert_eq!(
        tls_reloads(&server.metrics().await),
        (Some(1.0), Some(0.0)),
        "one reload, no failure"
    );
    server.shutdown();
}
