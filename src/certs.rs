//! A self-signed CA and a serving certificate for the webhook's Service, for clusters without
//! cert-manager and for the quickstart. Keys are ECDSA P-256, written with mode 0600.
//!
//! Every CA has a subject of its own (`CN=sbmesh webhook CA <UTC time> <serial prefix>, O=sbmesh`),
//! a random serial and a subjectKeyIdentifier; every serving certificate has a random serial, its
//! own subjectKeyIdentifier and the authorityKeyIdentifier of the CA that signed it (RFC 5280
//! §4.2.1.1-2). A client that trusts two of these CAs at once (the old and the new one while a
//! caBundle rotates) can tell which one signed a certificate: OpenSSL, which looks an issuer up by
//! subject and then by key identifier, picked the wrong one of two CAs named alike and failed the
//! handshake with "certificate signature failure".

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--days must be from 1 to 3650, not {0}")]
    Days(u32),
    #[error("the system's random number generator failed")]
    Random,
    #[error("the CA certificate is not usable: {0}")]
    CaCert(String),
    #[error("the CA key is not usable: {0}")]
    CaKey(String),
    #[error("the CA key belongs to none of the {0} certificate(s) in the CA PEM")]
    KeyMismatch(usize),
    #[error("the CA certificate cannot sign certificates: {0}")]
    NotCa(&'static str),
    #[error("the CA certificate expired at {0} (Unix time)")]
    CaExpired(i64),
}

/// What the serving certificate must cover.
#[derive(Debug, Clone)]
pub struct Request {
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub days: u32,
}

impl Request {
    /// The names under which the API server reaches `service` in `namespace`, plus extras.
    pub fn for_service(
        service: &str,
        namespace: &str,
        extra_dns: &[String],
        ips: &[IpAddr],
        days: u32,
    ) -> Self {
        let mut dns_names = vec![
            service.to_string(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        for d in extra_dns {
            if !dns_names.contains(d) {
                dns_names.push(d.clone());
            }
        }
        Self {
            dns_names,
            ips: ips.to_vec(),
            days,
        }
    }

    /// `localhost` and the loopback addresses, for a local `serve`.
    pub fn localhost(days: u32) -> Self {
        Self {
            dns_names: vec!["localhost".into()],
            ips: vec![
                "127.0.0.1".parse().expect("literal"),
                "::1".parse().expect("literal"),
            ],
            days,
        }
    }
}

/// PEM texts of a CA, its key, a serving certificate it signed, and the serving key.
/// No `Debug`: it holds private keys.
pub struct Generated {
    pub ca_pem: String,
    /// The CA's private key (PKCS#8). `sbmesh certs` does not write it: a new CA is made on
    /// every run. Kept for a mode that signs new serving certificates with the same CA.
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA certificate and its private key, PEM.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A serving certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn check_days(days: u32) -> Result<(), CertError> {
    if (1..=3650).contains(&days) {
        Ok(())
    } else {
        Err(CertError::Days(days))
    }
}

/// A random positive serial number of 16 bytes (RFC 5280 §4.1.2.2: at most 20 octets, unique
/// per CA; random makes it so without bookkeeping).
fn random_serial() -> Result<SerialNumber, CertError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Random)?;
    // Positive (top bit clear) and exactly 16 bytes long in DER (second bit set).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// `2026-01-31T12:00:00Z`: RFC 3339, whole seconds, UTC.
fn rfc3339_seconds(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The distinguished name of a CA made at `now` with `serial`: unique per CA, so that no two CAs
/// in one bundle share a subject.
fn ca_name(now: OffsetDateTime, serial: &SerialNumber) -> String {
    let serial = serial.to_bytes();
    format!(
        "sbmesh webhook CA {} {}",
        rfc3339_seconds(now),
        hex(&serial[..serial.len().min(4)])
    )
}

/// Makes a CA valid for `days` days (from an hour ago, for clock skew).
pub fn new_ca(days: u32) -> Result<Ca, CertError> {
    check_days(days)?;
    make_ca(Duration::days(i64::from(days)))
}

fn make_ca(lifetime: Duration) -> Result<Ca, CertError> {
    let now = OffsetDateTime::now_utc();
    let serial = random_serial()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // IsCa::Ca also writes the subjectKeyIdentifier (SHA-256 of the key, truncated: RFC 7093).
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::OrganizationName, "sbmesh");
    ca.distinguished_name
        .push(DnType::CommonName, ca_name(now, &serial));
    ca.serial_number = Some(serial);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + lifetime;
    let key = KeyPair::generate()?;
    let cert = ca.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Signs a new serving certificate for `req` with an existing CA: `ca_cert_pem` may hold several
/// certificates (a bundle); the one whose public key is `ca_key_pem`'s signs. The certificate is
/// valid for `req.days` days, but never past the CA's own expiry.
pub fn issue(ca_cert_pem: &str, ca_key_pem: &str, req: &Request) -> Result<Issued, CertError> {
    check_days(req.days)?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| CertError::CaKey(e.to_string()))?;
    let ca_der = find_ca(ca_cert_pem, &ca_key)?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| CertError::CaCert(e.to_string()))?;
    let bc = ca
        .basic_constraints()
        .map_err(|_| CertError::CaCert("duplicate basicConstraints".into()))?;
    if !bc.is_some_and(|bc| bc.value.ca) {
        return Err(CertError::NotCa("basicConstraints cA is not set"));
    }
    if let Ok(Some(ku)) = ca.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(CertError::NotCa("keyUsage lacks keyCertSign"));
    }
    let now = OffsetDateTime::now_utc();
    let ca_not_before = ca.validity().not_before.timestamp();
    let ca_not_after = ca.validity().not_after.timestamp();
    if ca_not_after <= now.unix_timestamp() {
        return Err(CertError::CaExpired(ca_not_after));
    }
    let to_time = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t).map_err(|e| CertError::CaCert(e.to_string()))
    };
    let not_before = (now - Duration::hours(1)).max(to_time(ca_not_before)?);
    let not_after = (now + Duration::days(i64::from(req.days))).min(to_time(ca_not_after)?);
    // The CA's subject, key usages and subjectKeyIdentifier, as they are in its certificate:
    // the new certificate's issuer and authorityKeyIdentifier are copied from them.
    let issuer =
        Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(|e| CertError::CaCert(e.to_string()))?;

    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(
        DnType::CommonName,
        req.dns_names.first().map_or("sbmesh", String::as_str),
    );
    for d in &req.dns_names {
        leaf.subject_alt_names
            .push(SanType::DnsName(d.as_str().try_into()?));
    }
    for ip in &req.ips {
        leaf.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    // ExplicitNoCa: basicConstraints cA=false, and a subjectKeyIdentifier of its own.
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.use_authority_key_identifier_extension = true;
    leaf.serial_number = Some(random_serial()?);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(Issued {
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// The DER of the certificate in `pem` whose public key is `key`'s.
fn find_ca(
    pem: &str,
    key: &KeyPair,
) -> Result<rustls::pki_types::CertificateDer<'static>, CertError> {
    use rcgen::PublicKeyData as _;
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::CaCert(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::CaCert("no CERTIFICATE block in the PEM".into()));
    }
    let n = certs.len();
    for der in certs {
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CertError::CaCert(format!("not X.509: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() == key.der_bytes() {
            return Ok(der);
        }
    }
    Err(CertError::KeyMismatch(n))
}

/// Makes a fresh CA and a serving certificate for `req`. The CA outlives the certificate by a
/// day, so that the certificate is never cut short by it.
pub fn generate(req: &Request) -> Result<Generated, CertError> {
    check_days(req.days)?;
    let ca = make_ca(Duration::days(i64::from(req.days) + 1))?;
    let issued = issue(&ca.cert_pem, &ca.key_pem, req)?;
    Ok(Generated {
        ca_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    })
}

/// Paths written by [`write`].
pub struct Written {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it.
pub fn write(dir: &Path, g: &Generated) -> Result<Written, CertError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let w = Written {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&w.ca, &g.ca_pem).map_err(err(&w.ca))?;
    std::fs::write(&w.cert, &g.cert_pem).map_err(err(&w.cert))?;
    write_private(&w.key, g.key_pem.as_bytes()).map_err(err(&w.key))?;
    Ok(w)
}

#[cfg(unix)]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its old mode through open(); set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The caBundle value for a webhook configuration: the CA PEM, base64.
pub fn ca_bundle(g: &Generated) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(g.ca_pem.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_certificate_covers_every_service_name() {
        let r = Request::for_service(
            "sbmesh",
            "sbmesh-system",
            &["extra.example".into()],
            &[],
            365,
        );
        assert_eq!(
            r.dns_names,
            vec![
                "sbmesh",
                "sbmesh.sbmesh-system",
                "sbmesh.sbmesh-system.svc",
                "sbmesh.sbmesh-system.svc.cluster.local",
                "extra.example"
            ]
        );
        let g = generate(&r).unwrap();
        assert!(g.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(g.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn key_is_written_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(&Request::localhost(1)).unwrap();
        let w = write(dir.path(), &g).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&w.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(std::fs::read_to_string(&w.cert).unwrap(), g.cert_pem);
    }

    #[test]
    fn days_out_of_range_is_refused() {
        assert!(matches!(
            generate(&Request::localhost(0)),
            Err(CertError::Days(0))
        ));
        assert!(matches!(new_ca(3651), Err(CertError::Days(3651))));
        let ca = new_ca(1).unwrap();
        assert!(matches!(
            issue(&ca.cert_pem, &ca.key_pem, &Request::localhost(0)),
            Err(CertError::Days(0))
        ));
    }

    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::ParsedExtension;

    fn der(pem: &str) -> Vec<u8> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        pem.contents
    }

    fn parsed(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).expect("X.509").1
    }

    fn ski(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
    }

    fn aki(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
    }

    /// The leaf names the CA by subject and key identifier, and the CA's key signed it.
    fn assert_signed_by(leaf: &X509Certificate<'_>, ca: &X509Certificate<'_>) {
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        let ca_ski = ski(ca).expect("CA has a subjectKeyIdentifier");
        assert_eq!(aki(leaf), Some(ca_ski), "leaf AKI is the CA's SKI");
        leaf.verify_signature(Some(ca.public_key()))
            .expect("the CA's key signed the leaf");
    }

    #[test]
    fn ca_and_leaf_carry_key_identifiers_and_random_serials() {
        let g = generate(&Request::localhost(30)).unwrap();
        let (ca_der, leaf_der) = (der(&g.ca_pem), der(&g.cert_pem));
        let (ca, leaf) = (parsed(&ca_der), parsed(&leaf_der));

        assert!(ca.is_ca());
        assert_eq!(ca.subject().as_raw(), ca.issuer().as_raw(), "self-signed");
        let ca_ski = ski(&ca).expect("CA SKI");
        assert!(!ca_ski.is_empty());
        let cn = ca.subject().iter_common_name().next().unwrap();
        let cn = cn.as_str().unwrap();
        assert!(cn.starts_with("sbmesh webhook CA 20"), "{cn}");
        let org = ca.subject().iter_organization().next().unwrap();
        assert_eq!(org.as_str().unwrap(), "sbmesh");

        assert!(!leaf.is_ca());
        assert_signed_by(&leaf, &ca);
        let leaf_ski = ski(&leaf).expect("leaf SKI");
        assert_ne!(leaf_ski, ca_ski);
        assert_eq!(leaf.raw_serial().len(), 16);
        assert_eq!(ca.raw_serial().len(), 16);
        assert_ne!(leaf.raw_serial(), ca.raw_serial());
        assert!(
            leaf.validity().not_after < ca.validity().not_after,
            "the CA outlives the leaf"
        );
        // The CA's key is returned, and it is the CA's.
        let key = KeyPair::from_pem(&g.ca_key_pem).unwrap();
        use rcgen::PublicKeyData as _;
        assert_eq!(
            ca.public_key().subject_public_key.data.as_ref(),
            key.der_bytes()
        );
    }

    #[test]
    fn two_cas_made_in_the_same_second_have_distinct_subjects() {
        let (a, b) = (new_ca(1).unwrap(), new_ca(1).unwrap());
        let (a, b) = (der(&a.cert_pem), der(&b.cert_pem));
        let (a, b) = (parsed(&a), parsed(&b));
        assert_ne!(a.subject().as_raw(), b.subject().as_raw());
        assert_ne!(ski(&a), ski(&b));
        assert_ne!(a.raw_serial(), b.raw_serial());
        // The same second for certain: the random part alone tells them apart.
        let now = OffsetDateTime::now_utc();
        let (s1, s2) = (random_serial().unwrap(), random_serial().unwrap());
        assert_ne!(ca_name(now, &s1), ca_name(now, &s2));
    }

    #[test]
    fn rfc3339_has_whole_seconds_in_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(); // 2026-01-01
        assert_eq!(rfc3339_seconds(t), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn a_leaf_issued_by_an_existing_ca_verifies_against_it() {
        let ca = new_ca(30).unwrap();
        let other = new_ca(30).unwrap();
        let ca_der = der(&ca.cert_pem);
        let ca_cert = parsed(&ca_der);
        let first = issue(&ca.cert_pem, &ca.key_pem, &Request::localhost(7)).unwrap();
        // A bundle (another CA first): the CA whose key was given signs.
        let bundle = format!("{}{}", other.cert_pem, ca.cert_pem);
        let second = issue(&bundle, &ca.key_pem, &Request::localhost(7)).unwrap();
        for issued in [&first, &second] {
            let leaf_der = der(&issued.cert_pem);
            assert_signed_by(&parsed(&leaf_der), &ca_cert);
            assert!(issued.key_pem.contains("PRIVATE KEY"));
        }
        assert_ne!(first.cert_pem, second.cert_pem);
        assert_ne!(first.key_pem, second.key_pem);
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let ca = new_ca(1).unwrap();
        let issued = issue(&ca.cert_pem, &ca.key_pem, &Request::localhost(365)).unwrap();
        let (ca_der, leaf_der) = (der(&ca.cert_pem), der(&issued.cert_pem));
        let (ca, leaf) = (parsed(&ca_der), parsed(&leaf_der));
        assert!(leaf.validity().not_after <= ca.validity().not_after);
        assert!(leaf.validity().not_before >= ca.validity().not_before);
    }

    #[test]
    fn unusable_ca_input_is_a_clear_error_not_a_panic() {
        let ca = new_ca(1).unwrap();
        let other = new_ca(1).unwrap();
        let leaf = generate(&Request::localhost(1)).unwrap();
        let req = Request::localhost(1);
        let truncated = &ca.cert_pem[..ca.cert_pem.len() / 2];
        let mangled = ca.cert_pem.replacen("MII", "MIX", 1);
        type Expected = fn(&CertError) -> bool;
        let cases: Vec<(&str, &str, &str, Expected)> = vec![
            ("garbage cert", "garbage", &ca.key_pem, |e| {
                matches!(e, CertError::CaCert(_))
            }),
            ("empty cert", "", &ca.key_pem, |e| {
                matches!(e, CertError::CaCert(_))
            }),
            ("key as cert", &ca.key_pem, &ca.key_pem, |e| {
                matches!(e, CertError::CaCert(_))
            }),
            ("truncated cert", truncated, &ca.key_pem, |e| {
                matches!(e, CertError::CaCert(_))
            }),
            ("mangled cert", &mangled, &ca.key_pem, |e| {
                matches!(e, CertError::CaCert(_) | CertError::KeyMismatch(_))
            }),
            ("garbage key", &ca.cert_pem, "garbage", |e| {
                matches!(e, CertError::CaKey(_))
            }),
            ("empty key", &ca.cert_pem, "", |e| {
                matches!(e, CertError::CaKey(_))
            }),
            ("cert as key", &ca.cert_pem, &ca.cert_pem, |e| {
                matches!(e, CertError::CaKey(_))
            }),
            ("another CA's key", &ca.cert_pem, &other.key_pem, |e| {
                matches!(e, CertError::KeyMismatch(1))
            }),
            ("a serving cert as CA", &leaf.cert_pem, &leaf.key_pem, |e| {
                matches!(e, CertError::NotCa(_))
            }),
        ];
        for (what, cert, key, expected) in cases {
            match issue(cert, key, &req) {
                Ok(_) => panic!("{what}: issued"),
                Err(e) => {
                    assert!(expected(&e), "{what}: {e:?}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}
