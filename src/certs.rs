//! A self-signed CA and a serving certificate for the webhook's Service, for clusters without
//! cert-manager and for the quickstart. Keys are ECDSA P-256, written with mode 0600.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
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

/// PEM texts of a CA, a serving certificate it signed, and the serving key.
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a fresh CA and a serving certificate for `req`.
pub fn generate(req: &Request) -> Result<Generated, CertError> {
    if !(1..=3650).contains(&req.days) {
        return Err(CertError::Days(req.days));
    }
    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "sbmesh webhook CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(i64::from(req.days) + 1);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
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
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = not_before;
    leaf.not_after = now + Duration::days(i64::from(req.days));
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
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
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
    }
}
