//! The serving certificate: loaded from PEM files, handed to rustls through a resolver that
//! holds an `ArcSwap`, and re-read by polling the files' contents, which (unlike a watch on
//! the file) also sees kubelet's `..data` symlink swap when a mounted Secret changes.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use x509_parser::certificate::X509CertificateParser;
use x509_parser::nom::{self, Parser as _};

use super::TlsFiles;
use super::metrics::{Reload, ShellMetrics};

/// Why a certificate/key pair could not be put in service. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not PEM: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM CERTIFICATE block", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the certificate in {} is not a valid X.509 certificate: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("the private key in {} is not usable: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "the private key in {} does not belong to the certificate in {}: {source}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "checking the pair in {} and {} failed unexpectedly (a bug): {reason}",
        cert.display(),
        key.display()
    )]
    Internal {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The one crypto provider in the tree.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3, ALPN h2 then http/1.1, the certificate from `resolver`.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Hands every handshake the pair currently in service.
#[derive(Debug)]
pub(crate) struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A parsed pair and the bytes it came from.
pub(crate) struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: CertifiedKey,
    not_after: i64,
}

impl Loaded {
    pub(crate) fn into_resolver(self, metrics: &ShellMetrics) -> (Arc<Resolver>, Snapshot) {
        metrics.set_cert_not_after(self.not_after);
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(self.key),
        });
        (
            resolver,
            Snapshot {
                cert_pem: self.cert_pem,
                key_pem: self.key_pem,
            },
        )
    }
}

/// The file contents last looked at, good or bad, so that one change is acted on (and one
/// failure counted and logged) once, not at every poll.
#[derive(PartialEq, Eq)]
pub(crate) struct Snapshot {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// Reads and checks both files. Used at start, where any error stops the server.
pub(crate) async fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let (cert_pem, key_pem) = read_pair(files).await?;
    parse(files, cert_pem, key_pem, provider)
}

async fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads the certificate, the key, then the certificate again: if the two certificate reads
/// differ, a rotation happened between the reads and the pair may be torn, so read again.
async fn read_pair(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let mut cert = read(&files.cert).await?;
    for _ in 0..3 {
        let key = read(&files.key).await?;
        let again = read(&files.cert).await?;
        if again == cert {
            return Ok((cert, key));
        }
        cert = again;
    }
    let key = read(&files.key).await?;
    Ok((cert, key))
}

/// Parses and checks a pair. Parsing is input-driven code from three crates; should any of it
/// panic, that is this pair's error, so that neither the start nor the reload loop dies of it.
fn parse(
    files: &TlsFiles,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    guarded(files, || {
        parse_unguarded(files, cert_pem, key_pem, provider)
    })
}

/// `work`'s answer, or [`TlsError::Internal`] if it panicked.
fn guarded<T>(files: &TlsFiles, work: impl FnOnce() -> Result<T, TlsError>) -> Result<T, TlsError> {
    // Nothing shared is touched until a pair is complete, so there is no broken state to see.
    std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        Err(TlsError::Internal {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: panic_message(panic.as_ref()),
        })
    })
}

fn parse_unguarded(
    files: &TlsFiles,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { path, source }
    };
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(pem_err(&files.cert))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    };
    let not_after = not_after(leaf).map_err(|reason| TlsError::Certificate {
        path: files.cert.clone(),
        reason,
    })?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(pem_err(&files.key))?
        .ok_or_else(|| TlsError::NoKey {
            path: files.key.clone(),
        })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key {
            path: files.key.clone(),
            source,
        })?;
    let key = CertifiedKey::new(chain, signing_key);
    // Every ring key reports its public key, so "unknown" is a failure here too.
    key.keys_match().map_err(|source| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })?;
    Ok(Loaded {
        cert_pem,
        key_pem,
        key,
        not_after,
    })
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => format!("panicked: {message}"),
        (_, Some(message)) => format!("panicked: {message}"),
        _ => "panicked".to_string(),
    }
}

/// Polls the files every `interval` until `stop` turns true; a good new pair replaces the
/// one in service (new handshakes get it), a bad one is logged at error level and counted,
/// and the old pair stays. Nothing a poll meets ends the loop, a panic included: the next
/// change is looked at all the same.
pub(crate) async fn reload(
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    last: Snapshot,
    interval: Duration,
    metrics: ShellMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut seen = Seen {
        last,
        last_error: None,
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = super::conn::fired(&mut stop) => return,
        }
        // `seen` is two plain values: after a panic, at worst one change is looked at again.
        let polled = AssertUnwindSafe(poll(&files, &provider, &mut seen))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Poll::Failed(TlsError::Internal {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    reason: panic_message(panic.as_ref()),
                })
            });
        match polled {
            Poll::Quiet => {}
            Poll::Reloaded(loaded) => {
                metrics.set_cert_not_after(loaded.not_after);
                metrics.tls_reload(Reload::Success);
                resolver.current.store(Arc::new(loaded.key));
                tracing::info!(
                    cert = %files.cert.display(),
                    not_after = loaded.not_after,
                    "serving certificate reloaded"
                );
            }
            Poll::Failed(e) => {
                metrics.tls_reload(Reload::Failure);
                tracing::error!(
                    error = %e,
                    "serving certificate not reloaded; the one in service stays"
                );
            }
        }
    }
}

/// What the reload loop has already acted on.
struct Seen {
    /// The file contents last looked at, good or bad.
    last: Snapshot,
    /// The last read error, so that a missing file is reported once, not at every poll.
    last_error: Option<String>,
}

/// What one look at the files found.
enum Poll {
    /// Nothing new: the same contents, or the same read error, as last time.
    Quiet,
    Reloaded(Loaded),
    Failed(TlsError),
}

async fn poll(files: &TlsFiles, provider: &CryptoProvider, seen: &mut Seen) -> Poll {
    let (cert_pem, key_pem) = match read_pair(files).await {
        Ok(pair) => pair,
        Err(e) => {
            let text = e.to_string();
            if seen.last_error.as_deref() == Some(text.as_str()) {
                return Poll::Quiet;
            }
            seen.last_error = Some(text);
            return Poll::Failed(e);
        }
    };
    seen.last_error = None;
    if seen.last.cert_pem == cert_pem && seen.last.key_pem == key_pem {
        return Poll::Quiet;
    }
    seen.last = Snapshot {
        cert_pem: cert_pem.clone(),
        key_pem: key_pem.clone(),
    };
    match parse(files, cert_pem, key_pem, provider) {
        Ok(loaded) => Poll::Reloaded(loaded),
        Err(e) => Poll::Failed(e),
    }
}

/// The certificate's notAfter in seconds since the epoch, read with `x509-parser`. The whole
/// certificate must parse (extensions are taken as opaque: only the validity is needed), with
/// nothing after it, as any client's verifier will require.
pub(crate) fn not_after(der: &[u8]) -> Result<i64, String> {
    let mut parser = X509CertificateParser::new().with_deep_parse_extensions(false);
    match parser.parse(der) {
        Ok(([], cert)) => Ok(cert.validity().not_after.timestamp()),
        Ok((rest, _)) => Err(format!("{} bytes follow the certificate", rest.len())),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e.to_string()),
        Err(nom::Err::Incomplete(_)) => Err("the certificate is cut short".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_expiring(not_after: time::OffsetDateTime) -> (Vec<u8>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_after = not_after;
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        (der, key)
    }

    fn utc(year: i32, month: time::Month, day: u8, h: u8, m: u8, s: u8) -> time::OffsetDateTime {
        let date = time::Date::from_calendar_date(year, month, day).expect("date");
        let clock = time::Time::from_hms(h, m, s).expect("time");
        time::PrimitiveDateTime::new(date, clock).assume_utc()
    }

    /// `der` with the one occurrence of the DER element `tag, len, text` given `with` as its
    /// contents (same length, so no length above it changes).
    fn patched(der: &[u8], tag: u8, text: &str, with: &[u8]) -> Vec<u8> {
        assert_eq!(text.len(), with.len(), "same length");
        let needle = [&[tag, text.len() as u8][..], text.as_bytes()].concat();
        let at = der
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("the time is in the certificate");
        let mut out = der.to_vec();
        out[at + 2..at + needle.len()].copy_from_slice(with);
        out
    }

    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out.into_bytes()
    }

    fn files() -> TlsFiles {
        TlsFiles {
            cert: PathBuf::from("/secret/tls.crt"),
            key: PathBuf::from("/secret/tls.key"),
        }
    }

    #[test]
    fn reads_not_after_as_utc_time() {
        let at = utc(2031, time::Month::July, 4, 12, 34, 56);
        assert_eq!(not_after(&cert_expiring(at).0), Ok(at.unix_timestamp()));
    }

    #[test]
    fn reads_not_after_as_generalized_time() {
        // RFC 5280: dates from 2050 on are GeneralizedTime.
        let at = utc(2071, time::Month::January, 2, 3, 4, 5);
        assert_eq!(not_after(&cert_expiring(at).0), Ok(at.unix_timestamp()));
    }

    #[test]
    fn not_after_of_garbage_is_an_error() {
        assert!(not_after(b"").is_err());
        assert!(not_after(b"\x30\x82\xff\xff").is_err());
        assert!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x02]).is_err());
        let (der, _) = cert_expiring(utc(2031, time::Month::July, 4, 12, 34, 56));
        assert!(not_after(&der[..der.len() / 2]).is_err());
    }

    #[test]
    fn bytes_after_the_certificate_are_an_error() {
        let (mut der, _) = cert_expiring(utc(2031, time::Month::July, 4, 12, 34, 56));
        der.push(0);
        let e = not_after(&der).expect_err("trailing byte");
        assert!(e.contains("1 bytes follow"), "{e}");
    }

    #[test]
    fn multi_byte_utf_8_in_the_time_is_an_error_not_a_panic() {
        // Valid UTF-8, 'Z' last, the right byte length: a char boundary falls mid-field.
        let (der, _) = cert_expiring(utc(2031, time::Month::July, 4, 12, 34, 56));
        let bad = patched(&der, 0x17, "310704123456Z", "3\u{e9}070412345Z".as_bytes());
        assert!(not_after(&bad).is_err());
        let (der, _) = cert_expiring(utc(2071, time::Month::January, 2, 3, 4, 5));
        let bad = patched(
            &der,
            0x18,
            "20710102030405Z",
            "207\u{e9}010203040Z".as_bytes(),
        );
        assert!(not_after(&bad).is_err());
        // Not UTF-8 at all.
        let bad = patched(&der, 0x18, "20710102030405Z", b"20710102030405\xff");
        assert!(not_after(&bad).is_err());
    }

    #[test]
    fn a_pair_whose_certificate_does_not_parse_is_a_certificate_error() {
        let (der, key) = cert_expiring(utc(2031, time::Month::July, 4, 12, 34, 56));
        let bad = patched(&der, 0x17, "310704123456Z", "3\u{e9}070412345Z".as_bytes());
        let e = parse(
            &files(),
            pem("CERTIFICATE", &bad),
            key.serialize_pem().into_bytes(),
            &provider(),
        )
        .err()
        .expect("rejected");
        assert!(matches!(e, TlsError::Certificate { .. }), "{e:?}");
        assert!(e.to_string().contains("/secret/tls.crt"), "{e}");
    }

    #[test]
    fn a_good_pair_parses_with_its_expiry() {
        let at = utc(2031, time::Month::July, 4, 12, 34, 56);
        let (der, key) = cert_expiring(at);
        let loaded = parse(
            &files(),
            pem("CERTIFICATE", &der),
            key.serialize_pem().into_bytes(),
            &provider(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.not_after, at.unix_timestamp());
    }

    #[test]
    fn a_panic_while_parsing_is_an_internal_error() {
        let e = guarded::<()>(&files(), || panic!("boom {}", 1)).expect_err("caught");
        assert!(matches!(e, TlsError::Internal { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("panicked: boom 1"), "{text}");
        assert!(text.contains("/secret/tls.crt"), "{text}");
        let e = guarded::<()>(&files(), || panic!("plain")).expect_err("caught");
        assert!(e.to_string().contains("panicked: plain"), "{e}");
        assert!(guarded(&files(), || Ok(1)).is_ok());
    }
}
