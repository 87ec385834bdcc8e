//! Self-managed serving certificates (`sbmesh serve --certs self-managed`, DESIGN §5): the
//! webhook keeps its own CA and serving pair in one Secret, publishes the CA in the caBundle of
//! its MutatingWebhookConfiguration, and renews both before they expire; no cert-manager and no
//! script before `kubectl apply`.
//!
//! Every replica runs the same reconcile loop, and the Secret is the source of truth: a replica
//! that loses a write race (409 Conflict on the Secret's resourceVersion) reads the winner's pair
//! and serves it. The pair is written to files that the server's certificate reload serves, so
//! the reload's metrics (expiry, rotations) count these rotations too.
//!
//! Rotation keeps every client working:
//! - the serving certificate is renewed at 2/3 of its life, signed by the current CA;
//! - the CA is replaced at 2/3 of its life; the old one stays in the Secret and in the caBundle,
//!   next to the new one, until it expires; serving certificates move to the new CA only once the
//!   caBundle holds it;
//! - the caBundle's other certificates (someone else's CAs) are left alone.
//!
//! A replica is ready only once the certificate it serves chains to the caBundle: it checks by
//! a TLS handshake with itself that trusts only the caBundle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};

use crate::certs::{self, Request};

/// Keys of the Secret.
pub mod keys {
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    /// The CA before the last CA rotation, kept (and trusted) until it expires.
    pub const PREVIOUS_CA_CERT: &str = "ca-previous.crt";
    pub const CERT: &str = "tls.crt";
    pub const KEY: &str = "tls.key";
}

/// The CA's subject starts with this: how the webhook tells its own CAs in a caBundle from
/// someone else's.
pub const CA_NAME_PREFIX: &str = "sbmesh webhook CA";

/// How long a new CA and a new serving certificate are valid.
pub const CA_DAYS: u32 = 1095;
pub const SERVING_DAYS: u32 = 90;

/// What the controller manages, and where.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Secret holding CA and serving pair (created empty by the install, so that the
    /// webhook needs no `create` permission; created by the webhook when it may).
    pub namespace: String,
    pub secret: String,
    /// The MutatingWebhookConfiguration whose caBundle gets the CA.
    pub webhook_configuration: String,
    /// The Service the API server calls: the serving certificate's DNS names.
    pub service: String,
    /// Where the serving pair is written for the server (`tls.crt`, `tls.key`).
    pub dir: PathBuf,
    /// The webhook's own listener, for the readiness handshake.
    pub probe: SocketAddr,
    /// Between two reconciles when all is well.
    pub interval: Duration,
    /// After a failed reconcile (API down, a lost race).
    pub retry: Duration,
    pub ca_days: u32,
    pub serving_days: u32,
}

impl Settings {
    pub fn request(&self) -> Request {
        Request::for_service(&self.service, &self.namespace, &[], &[], self.serving_days)
    }

    /// The name the API server checks: `<service>.<namespace>.svc`.
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(keys::CERT)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(keys::KEY)
    }
}

/// Whether the served certificate chains to the caBundle (the readiness gate).
#[derive(Debug, Clone, Default)]
pub struct Trusted(Arc<AtomicBool>);

impl Trusted {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, v: bool) {
        self.0.store(v, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot make a certificate: {0}")]
    Certs(#[from] certs::CertError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "MutatingWebhookConfiguration {0} does not exist: install it first (it is part of the \
         install), or name it with --webhook-configuration"
    )]
    NoWebhookConfiguration(String),
    #[error("Secret {0} changed while it was written; another replica won and its pair is used")]
    Conflict(String),
}

/// A certificate as the controller needs it.
#[derive(Debug, Clone)]
struct Cert {
    pem: String,
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
    common_name: String,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    dns_names: Vec<String>,
    /// The SubjectPublicKeyInfo, DER.
    public_key: Vec<u8>,
}

impl Cert {
    fn parse_one(pem: &str) -> Result<Self, String> {
        let mut all = Self::parse_all(pem)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(format!("{n} certificates where one was expected")),
        }
    }

    fn parse_all(pem: &str) -> Result<Vec<Self>, String> {
        let ders = rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM: {e}"))?;
        ders.into_iter()
            .map(|der| Self::from_der(der.as_ref()))
            .collect()
    }

    fn from_der(der: &[u8]) -> Result<Self, String> {
        let (rest, c) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("bytes after the certificate".into());
        }
        let mut out = Self {
            pem: pem_of(der),
            der: der.to_vec(),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            common_name: c
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or_default()
                .to_string(),
            subject: c.subject().as_raw().to_vec(),
            issuer: c.issuer().as_raw().to_vec(),
            subject_key_id: None,
            authority_key_id: None,
            dns_names: Vec::new(),
            public_key: c.public_key().raw.to_vec(),
        };
        for ext in c.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => out.subject_key_id = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    out.authority_key_id = a.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        if let GeneralName::DNSName(d) = n {
                            out.dns_names.push((*d).to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn ours(&self) -> bool {
        self.common_name.starts_with(CA_NAME_PREFIX)
    }

    /// Whether `ca` issued this certificate (by key identifier, else by name).
    fn issued_by(&self, ca: &Cert) -> bool {
        match (&self.authority_key_id, &ca.subject_key_id) {
            (Some(a), Some(s)) => a == s,
            _ => self.issuer == ca.subject,
        }
    }

    /// Past 2/3 of its life, or not valid now.
    fn due(&self, now: i64) -> bool {
        let life = self.not_after - self.not_before;
        now < self.not_before || now >= self.not_before + life * 2 / 3
    }
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// What the Secret holds when it holds a usable pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub ca_cert: String,
    pub ca_key: String,
    pub previous_ca: Option<String>,
    pub cert: String,
    pub key: String,
}

impl Pair {
    fn from_data(data: &BTreeMap<String, ByteString>) -> Result<Self, String> {
        let text = |k: &str| -> Result<Option<String>, String> {
            data.get(k)
                .map(|b| String::from_utf8(b.0.clone()).map_err(|_| format!("{k} is not text")))
                .transpose()
        };
        let need = |k: &str| text(k)?.ok_or_else(|| format!("{k} is missing"));
        let pair = Self {
            ca_cert: need(keys::CA_CERT)?,
            ca_key: need(keys::CA_KEY)?,
            previous_ca: text(keys::PREVIOUS_CA_CERT)?,
            cert: need(keys::CERT)?,
            key: need(keys::KEY)?,
        };
        // Each part must parse; the serving key must be a key of the serving certificate.
        Cert::parse_one(&pair.ca_cert).map_err(|e| format!("{}: {e}", keys::CA_CERT))?;
        Cert::parse_one(&pair.cert).map_err(|e| format!("{}: {e}", keys::CERT))?;
        if let Some(p) = &pair.previous_ca {
            Cert::parse_one(p).map_err(|e| format!("{}: {e}", keys::PREVIOUS_CA_CERT))?;
        }
        let chain = rustls_pemfile::certs(&mut pair.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", keys::CERT))?;
        let key = rustls_pemfile::private_key(&mut pair.key.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| format!("{} is not a private key", keys::KEY))?;
        let signing = crate::server::tls_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{}: {e}", keys::KEY))?;
        rustls::sign::CertifiedKey::new(chain, signing)
            .keys_match()
            .map_err(|e| format!("{} does not belong to {}: {e}", keys::KEY, keys::CERT))?;
        let ca_key = rcgen::KeyPair::from_pem(&pair.ca_key)
            .map_err(|e| format!("{} is not a private key: {e}", keys::CA_KEY))?;
        if Some(rcgen::PublicKeyData::subject_public_key_info(&ca_key))
            != Cert::parse_one(&pair.ca_cert).ok().map(|c| c.public_key)
        {
            return Err(format!(
                "{} does not belong to {}",
                keys::CA_KEY,
                keys::CA_CERT
            ));
        }
        Ok(pair)
    }

    fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        };
        put(keys::CA_CERT, &self.ca_cert);
        put(keys::CA_KEY, &self.ca_key);
        if let Some(p) = &self.previous_ca {
            put(keys::PREVIOUS_CA_CERT, p);
        }
        put(keys::CERT, &self.cert);
        put(keys::KEY, &self.key);
        data
    }

    /// The CAs the caBundle must hold: the previous one (during an overlap), then the current.
    fn cas(&self) -> Vec<Cert> {
        self.previous_ca
            .iter()
            .chain(std::iter::once(&self.ca_cert))
            .filter_map(|p| Cert::parse_one(p).ok())
            .collect()
    }
}

/// Why a pair changes, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    Replaced(String),
    CaRotated,
    PreviousCaDropped,
    ServingRenewed,
    ServingNamesChanged,
    ServingMovedToNewCa,
}

/// The pair to hold next, from the one held (`None`: none, or unusable), the caBundle's CAs and
/// the time; with what changed (empty: keep it as it is).
fn next(
    held: Option<&Pair>,
    bundle: &[Cert],
    now: i64,
    settings: &Settings,
) -> Result<(Pair, Vec<Change>), certs::CertError> {
    let req = settings.request();
    let Some(held) = held else {
        let ca = certs::new_ca(settings.ca_days)?;
        let leaf = certs::issue(&ca.cert_pem, &ca.key_pem, &req)?;
        let pair = Pair {
            ca_cert: ca.cert_pem,
            ca_key: ca.key_pem,
            previous_ca: None,
            cert: leaf.cert_pem,
            key: leaf.key_pem,
        };
        return Ok((pair, vec![Change::Created]));
    };
    let mut pair = held.clone();
    let mut changes = Vec::new();
    let ca = Cert::parse_one(&pair.ca_cert).expect("checked when read");
    if ca.due(now) {
        let new = certs::new_ca(settings.ca_days)?;
        pair.previous_ca = (ca.not_after > now).then(|| pair.ca_cert.clone());
        pair.ca_cert = new.cert_pem;
        pair.ca_key = new.key_pem;
        changes.push(Change::CaRotated);
    } else if let Some(p) = &pair.previous_ca
        && Cert::parse_one(p).is_ok_and(|p| p.not_after <= now)
    {
        pair.previous_ca = None;
        changes.push(Change::PreviousCaDropped);
    }
    let ca = Cert::parse_one(&pair.ca_cert).expect("made or checked");
    let leaf = Cert::parse_one(&pair.cert).expect("checked when read");
    let in_bundle = bundle.iter().any(|b| b.der == ca.der);
    let reissue = if leaf.due(now) {
        Some(Change::ServingRenewed)
    } else if leaf.dns_names != req.dns_names {
        Some(Change::ServingNamesChanged)
    } else if !leaf.issued_by(&ca) && in_bundle {
        Some(Change::ServingMovedToNewCa)
    } else {
        None
    };
    if let Some(why) = reissue {
        // Sign with a CA the caBundle already trusts: the current one once it is there; while a
        // CA made in this very pass is not yet published, the one held before it (a serving
        // certificate must not chain only to a CA the API server lacks).
        let (signer_cert, signer_key) = if in_bundle || pair.previous_ca.is_none() {
            (pair.ca_cert.clone(), pair.ca_key.clone())
        } else {
            (held.ca_cert.clone(), held.ca_key.clone())
        };
        let leaf = certs::issue(&signer_cert, &signer_key, &req)?;
        pair.cert = leaf.cert_pem;
        pair.key = leaf.key_pem;
        changes.push(why);
    }
    Ok((pair, changes))
}

/// The caBundle to publish: the certificates of `current` that are not the webhook's own CAs,
/// in their order, then the pair's CAs. The webhook's own CAs that the pair no longer holds
/// (expired, replaced) are dropped.
fn bundle_for(current: &[Cert], pair: &Pair) -> String {
    let mut out = String::new();
    for c in current.iter().filter(|c| !c.ours()) {
        out.push_str(&c.pem);
    }
    for c in pair.cas() {
        out.push_str(&c.pem);
    }
    out
}

/// What the Secret held when read.
enum Held {
    /// No Secret, or an empty one.
    Nothing { resource_version: Option<String> },
    /// Keys that do not make a pair.
    Garbage {
        resource_version: String,
        why: String,
    },
    Pair {
        resource_version: String,
        pair: Pair,
    },
}

/// One pass: read the Secret, renew what is due (winning or losing the write), write the pair
/// for the server, and publish the CAs in the caBundle. Returns the pair in service.
pub async fn reconcile(
    client: &kube::Client,
    settings: &Settings,
    now: i64,
) -> Result<(Pair, Vec<Change>), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let api = |what: String| move |source| Error::Api { what, source };

    let mwc = hooks
        .get_opt(&settings.webhook_configuration)
        .await
        .map_err(api(format!(
            "cannot read MutatingWebhookConfiguration {}",
            settings.webhook_configuration
        )))?
        .ok_or_else(|| Error::NoWebhookConfiguration(settings.webhook_configuration.clone()))?;
    let bundle = current_bundle(&mwc);

    let held = read(&secrets, &settings.secret).await?;
    let (pair, changes) = match &held {
        Held::Pair { pair, .. } => next(Some(pair), &bundle, now, settings)?,
        Held::Nothing { .. } => next(None, &bundle, now, settings)?,
        Held::Garbage { why, .. } => {
            tracing::error!(
                secret = %settings.secret,
                namespace = %settings.namespace,
                reason = %why,
                "the certificate Secret does not hold a usable pair; replacing it with a new CA and \
                 serving certificate"
            );
            let (pair, mut changes) = next(None, &bundle, now, settings)?;
            changes[0] = Change::Replaced(why.clone());
            (pair, changes)
        }
    };
    let pair = if changes.is_empty() {
        pair
    } else {
        match store(&secrets, settings, &held, &pair).await {
            Ok(()) => {
                tracing::info!(
                    secret = %settings.secret,
                    changes = ?changes,
                    "certificate Secret updated"
                );
                pair
            }
            Err(Error::Conflict(_)) => {
                // Another replica wrote first: serve its pair (read again next pass if it is not
                // usable either).
                match read(&secrets, &settings.secret).await? {
                    Held::Pair { pair, .. } => {
                        tracing::info!(
                            secret = %settings.secret,
                            "another replica renewed the certificates first; serving its pair"
                        );
                        return finish(&hooks, settings, &mwc, pair, Vec::new()).await;
                    }
                    _ => return Err(Error::Conflict(settings.secret.clone())),
                }
            }
            Err(e) => return Err(e),
        }
    };
    finish(&hooks, settings, &mwc, pair, changes).await
}

async fn finish(
    hooks: &Api<MutatingWebhookConfiguration>,
    settings: &Settings,
    mwc: &MutatingWebhookConfiguration,
    pair: Pair,
    changes: Vec<Change>,
) -> Result<(Pair, Vec<Change>), Error> {
    write_files(settings, &pair)?;
    publish(hooks, settings, mwc, &pair).await?;
    Ok((pair, changes))
}

async fn read(secrets: &Api<Secret>, name: &str) -> Result<Held, Error> {
    let secret = secrets.get_opt(name).await.map_err(|source| Error::Api {
        what: format!("cannot read Secret {name}"),
        source,
    })?;
    let Some(secret) = secret else {
        return Ok(Held::Nothing {
            resource_version: None,
        });
    };
    let rv = secret.metadata.resource_version.clone().unwrap_or_default();
    let data = secret.data.unwrap_or_default();
    if data.is_empty() {
        return Ok(Held::Nothing {
            resource_version: Some(rv),
        });
    }
    Ok(match Pair::from_data(&data) {
        Ok(pair) => Held::Pair {
            resource_version: rv,
            pair,
        },
        Err(why) => Held::Garbage {
            resource_version: rv,
            why,
        },
    })
}

/// Writes the pair into the Secret: a replace at the resourceVersion read (a conflict means
/// another replica wrote first), or a create when there was none.
async fn store(
    secrets: &Api<Secret>,
    settings: &Settings,
    held: &Held,
    pair: &Pair,
) -> Result<(), Error> {
    let resource_version = match held {
        Held::Nothing { resource_version } => resource_version.clone(),
        Held::Garbage {
            resource_version, ..
        }
        | Held::Pair {
            resource_version, ..
        } => Some(resource_version.clone()),
    };
    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(settings.secret.clone()),
            namespace: Some(settings.namespace.clone()),
            resource_version: resource_version.clone(),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(pair.to_data()),
        ..Default::default()
    };
    let result = match resource_version {
        Some(_) => {
            // Keep what else the Secret carries (labels, annotations set by the install).
            if let Ok(current) = secrets.get(&settings.secret).await
                && current.metadata.resource_version == secret.metadata.resource_version
            {
                let rv = secret.metadata.resource_version.take();
                secret.metadata = current.metadata;
                secret.metadata.resource_version = rv;
            }
            secrets
                .replace(&settings.secret, &PostParams::default(), &secret)
                .await
        }
        None => secrets.create(&PostParams::default(), &secret).await,
    };
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict(settings.secret.clone())),
        Err(source) => Err(Error::Api {
            what: format!("cannot write Secret {}", settings.secret),
            source,
        }),
    }
}

/// The certificates of the configuration's first webhook's caBundle (unparsable ones skipped).
fn current_bundle(mwc: &MutatingWebhookConfiguration) -> Vec<Cert> {
    mwc.webhooks
        .iter()
        .flatten()
        .next()
        .and_then(|w| w.client_config.ca_bundle.as_ref())
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .map(|pem| parse_bundle(&pem))
        .unwrap_or_default()
}

/// Sets every webhook's caBundle to the pair's CAs next to the others it holds, with a JSON
/// patch guarded by the configuration's resourceVersion. Writes nothing when all are right. A
/// configuration changed in between (another replica, a `kubectl apply`) is read again.
async fn publish(
    hooks: &Api<MutatingWebhookConfiguration>,
    settings: &Settings,
    mwc: &MutatingWebhookConfiguration,
    pair: &Pair,
) -> Result<(), Error> {
    const ATTEMPTS: usize = 4;
    let mut mwc = mwc.clone();
    for attempt in 1..=ATTEMPTS {
        let Some(patch) = bundle_patch(&mwc, pair) else {
            return Ok(());
        };
        match hooks
            .patch(
                &settings.webhook_configuration,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(
                    webhook_configuration = %settings.webhook_configuration,
                    "caBundle updated"
                );
                return Ok(());
            }
            // The resourceVersion test failed (422), or a conflict: read it again.
            Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 422) && attempt < ATTEMPTS => {
                mwc = hooks
                    .get_opt(&settings.webhook_configuration)
                    .await
                    .map_err(|source| Error::Api {
                        what: format!(
                            "cannot read MutatingWebhookConfiguration {}",
                            settings.webhook_configuration
                        ),
                        source,
                    })?
                    .ok_or_else(|| {
                        Error::NoWebhookConfiguration(settings.webhook_configuration.clone())
                    })?;
            }
            Err(source) => {
                return Err(Error::Api {
                    what: format!(
                        "cannot patch the caBundle of MutatingWebhookConfiguration {}",
                        settings.webhook_configuration
                    ),
                    source,
                });
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// The JSON patch that gives each webhook its caBundle, guarded by the resourceVersion; `None`
/// when every caBundle is already right.
fn bundle_patch(mwc: &MutatingWebhookConfiguration, pair: &Pair) -> Option<json_patch::Patch> {
    let mut ops = vec![serde_json::json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": mwc.metadata.resource_version,
    })];
    for (i, w) in mwc.webhooks.iter().flatten().enumerate() {
        let pem = w
            .client_config
            .ca_bundle
            .as_ref()
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .unwrap_or_default();
        let wanted = bundle_for(&parse_bundle(&pem), pair);
        if wanted != pem {
            ops.push(serde_json::json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": base64::engine::general_purpose::STANDARD.encode(wanted),
            }));
        }
    }
    (ops.len() > 1)
        .then(|| serde_json::from_value(serde_json::Value::Array(ops)).expect("well-formed patch"))
}

/// The certificates of a PEM bundle; what does not parse is skipped.
fn parse_bundle(pem: &str) -> Vec<Cert> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|d| Cert::from_der(d.as_ref()).ok())
        .collect()
}

/// Writes the serving pair for the server's reload, replacing each file atomically; files that
/// already hold it are not touched.
fn write_files(settings: &Settings, pair: &Pair) -> Result<(), Error> {
    std::fs::create_dir_all(&settings.dir).map_err(|source| Error::Write {
        path: settings.dir.clone(),
        source,
    })?;
    // The key first: the server reloads when either changes and needs both to match; a
    // certificate without its key is refused and retried, never served.
    for (path, text) in [
        (settings.key_path(), &pair.key),
        (settings.cert_path(), &pair.cert),
    ] {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        write_atomic(&path, text.as_bytes()).map_err(|source| Error::Write { path, source })?;
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    certs::write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Whether a TLS handshake with the webhook's own listener, trusting only the caBundle's CAs,
/// succeeds for the Service's name: the readiness of a self-managed replica.
async fn handshake_trusted(probe: SocketAddr, server_name: &str, bundle: &[Cert]) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for c in bundle {
        let _ = roots.add(rustls::pki_types::CertificateDer::from(c.der.clone()));
    }
    if roots.is_empty() {
        return false;
    }
    let Ok(config) = rustls::ClientConfig::builder_with_provider(crate::server::tls_provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(server_name.to_string()) else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(probe).await.ok()?;
        connector.connect(name, tcp).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Some(_))
    )
}

/// Runs the reconcile loop until `stop`: a pass every `interval` (`retry` after a failure), and
/// the readiness handshake after each. Nothing it meets ends it.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    trusted: Trusted,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    loop {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let wait = match reconcile(&client, &settings, now).await {
            Ok(_) => settings.interval,
            Err(e) => {
                tracing::error!(error = %e, "self-managed certificates: reconcile failed; retrying");
                settings.retry
            }
        };
        // Readiness: the served pair against the caBundle as the API server holds it now. The
        // server reloads the files within its reload interval, so look a few times.
        let bundle = match hooks.get_opt(&settings.webhook_configuration).await {
            Ok(Some(mwc)) => current_bundle(&mwc),
            _ => Vec::new(),
        };
        let ok = handshake_trusted(settings.probe, &settings.server_name(), &bundle).await;
        if ok != trusted.get() {
            tracing::info!(
                ready = ok,
                "served certificate trusted by the caBundle: {ok}"
            );
        }
        trusted.set(ok);
        let wait = if ok { wait } else { wait.min(settings.retry) };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
