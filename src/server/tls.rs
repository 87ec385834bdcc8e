//! The serving certificate: loaded from PEM files, handed to rustls through a resolver that
//! holds an `ArcSwap`, and re-read by polling the files' contents, which (unlike a watch on
//! the file) also sees kubelet's `..data` symlink swap when a mounted Secret changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

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
    not_after: Option<i64>,
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

fn parse(
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
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
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
    let not_after = not_after(&chain[0]);
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

/// Polls the files every `interval` until `stop` turns true; a good new pair replaces the
/// one in service (new handshakes get it), a bad one is logged and counted and the old pair
/// stays.
pub(crate) async fn reload(
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    mut last: Snapshot,
    interval: Duration,
    metrics: ShellMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The last read error, so a missing file is reported once, not every second.
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = super::conn::fired(&mut stop) => return,
        }
        let (cert_pem, key_pem) = match read_pair(&files).await {
            Ok(pair) => pair,
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "serving certificate not reloaded; the one in service stays");
                    metrics.tls_reload(Reload::Failure);
                    last_error = Some(text);
                }
                continue;
            }
        };
        last_error = None;
        if last.cert_pem == cert_pem && last.key_pem == key_pem {
            continue;
        }
        last = Snapshot {
            cert_pem: cert_pem.clone(),
            key_pem: key_pem.clone(),
        };
        match parse(&files, cert_pem, key_pem, &provider) {
            Ok(loaded) => {
                metrics.set_cert_not_after(loaded.not_after);
                metrics.tls_reload(Reload::Success);
                resolver.current.store(Arc::new(loaded.key));
                tracing::info!(
                    cert = %files.cert.display(),
                    not_after = loaded.not_after,
                    "serving certificate reloaded"
                );
            }
            Err(e) => {
                metrics.tls_reload(Reload::Failure);
                tracing::warn!(error = %e, "serving certificate not reloaded; the one in service stays");
            }
        }
    }
}

/// The certificate's notAfter in seconds since the epoch, found by walking just enough DER
/// (Certificate → tbsCertificate → validity) to avoid a full X.509 parser for one field.
pub(crate) fn not_after(cert: &[u8]) -> Option<i64> {
    let (tag, certificate, _) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serialNumber, signature, issuer
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let not_before_rest = tlv(validity)?.2;
    let (tag, time, _) = tlv(not_before_rest)?;
    der_time(tag, time)
}

/// One DER tag-length-value: (tag, contents, the bytes after it). Single-byte tags only,
/// which is all a certificate's outer structure uses.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i32 = digits[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let clock = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_expiring(not_after: time::OffsetDateTime) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_after = not_after;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn utc(year: i32, month: time::Month, day: u8, h: u8, m: u8, s: u8) -> time::OffsetDateTime {
        let date = time::Date::from_calendar_date(year, month, day).expect("date");
        let clock = time::Time::from_hms(h, m, s).expect("time");
        time::PrimitiveDateTime::new(date, clock).assume_utc()
    }

    #[test]
    fn reads_not_after_as_utc_time() {
        let at = utc(2031, time::Month::July, 4, 12, 34, 56);
        assert_eq!(not_after(&cert_expiring(at)), Some(at.unix_timestamp()));
    }

    #[test]
    fn reads_not_after_as_generalized_time() {
        // RFC 5280: dates from 2050 on are GeneralizedTime.
        let at = utc(2071, time::Month::January, 2, 3, 4, 5);
        assert_eq!(not_after(&cert_expiring(at)), Some(at.unix_timestamp()));
    }

    #[test]
    fn not_after_of_garbage_is_none() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(b"\x30\x82\xff\xff"), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }
}
