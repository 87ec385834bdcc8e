//! What `sbmesh inject` and `sbmesh onboard` share: the input flags, reading and parsing the
//! documents, resolving the parameters, the cluster connection and its lookups, and the
//! context (ServiceAccount, Namespace, identity mode) each workload is admitted with.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::context::Given;
use super::{input, workload};
use crate::cluster::{Cluster, ClusterMode, Facts};
use crate::config::{ParamArgs, Params};
use crate::contract::{self, Denial, IdentityMode, IdentityModeSetting};

/// The namespace used when neither the object nor `--namespace` names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How long one ServiceAccount or Namespace lookup may take with `--cluster on` (a person is
/// waiting, not the API server, so this is longer than the webhook's).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether ServiceAccounts and Namespaces are looked up in a cluster (`--cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Lookups {
    /// Read ServiceAccount and Namespace annotations from the cluster of the kubeconfig.
    On,
    /// Only the manifests, the flags and the config are read.
    #[default]
    Off,
}

/// The input flags of `inject` and `onboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Manifests to read: a file, a directory (its *.yaml, *.yml and *.json files, sorted by
    /// name) or - for stdin. Repeatable; read in the order given.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub filenames: Vec<PathBuf>,
    /// Also read the subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace of objects that do not name one (default: "default"). It is part of the
    /// federated credential subject (system:serviceaccount:<namespace>:<serviceaccount>).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Look up ServiceAccount and Namespace annotations (and, with --identity-mode auto, the
    /// Azure Workload Identity webhook) in the cluster of the current kubeconfig.
    #[arg(long, value_enum, default_value_t = Lookups::Off, value_name = "on|off")]
    pub cluster: Lookups,
    #[command(flatten)]
    pub params: ParamArgs,
}

/// How ServiceAccounts and Namespaces are looked up.
pub enum Connection {
    Off,
    /// `--cluster on`: connect once the input has parsed.
    Start,
    Given(Cluster),
}

impl Connection {
    pub fn of(lookups: Lookups) -> Self {
        match lookups {
            Lookups::Off => Connection::Off,
            Lookups::On => Connection::Start,
        }
    }
}

/// A document in flight: where it came from, as read, and as the command changes it.
pub struct Item {
    pub source: String,
    pub index: usize,
    pub original: Value,
    pub value: Value,
}

impl Item {
    /// `FILE: document N`, the prefix of every message about the document.
    pub fn place(&self) -> String {
        format!("{}: document {}", self.source, self.index)
    }
}

/// What the cluster said per (namespace, ServiceAccount), fetched before the workloads are
/// admitted so that admission itself stays synchronous.
type FactsByPod = BTreeMap<(String, String), Result<Facts, Denial>>;

/// The input, read and parsed, with everything its workloads are admitted with.
pub struct Loaded {
    pub items: Vec<Item>,
    pub params: Params,
    pub resolver: Resolver,
}

/// Answers "what do this workload's ServiceAccount and Namespace say": the input's objects,
/// over the cluster's answer when it was asked.
pub struct Resolver {
    pub default_namespace: String,
    facts: Option<FactsByPod>,
    given: Given,
    offline_mode: IdentityMode,
}

impl Resolver {
    /// The facts a workload's pod is admitted with.
    pub fn facts(&self, w: &workload::Workload<'_>) -> Result<Facts, Denial> {
        let namespace = w.namespace(&self.default_namespace);
        let sa = w.service_account().ok().flatten();
        let looked_up = match (&self.facts, &sa) {
            (Some(facts), Some(sa)) => facts.get(&(namespace.to_string(), sa.clone())).cloned(),
            _ => None,
        };
        self.given
            .facts(namespace, sa.as_deref(), looked_up, self.offline_mode)
    }
}

/// Reads, parses and resolves the input; connects to the cluster and looks up what the
/// workloads need when asked to. Every problem of the input is reported, not only the first.
pub async fn load(
    args: &InputArgs,
    connection: Connection,
    stdin: &mut (dyn Read + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<Loaded, Vec<String>> {
    let mut errors = Vec::new();
    let params = args.params.resolve().map_err(|e| vec![e.to_string()])?;
    if let Some(ns) = &args.namespace
        && !is_dns_label(ns)
    {
        return Err(vec![format!(
            "--namespace \"{}\" is not a valid namespace name (lowercase letters, digits and '-', \
             at most 63 characters, starting and ending with a letter or digit)",
            contract::truncate(ns)
        )]);
    }
    let default_namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());

    let mut items = Vec::new();
    for source in input::read_all(&args.filenames, args.recursive, stdin, &mut errors) {
        match input::documents(&source.text) {
            Err(e) => errors.push(format!(
                "{}: document {}: {}",
                source.name, e.document, e.message
            )),
            Ok(docs) => {
                for d in docs {
                    if !d.value.is_object() {
                        errors.push(format!(
                            "{}: document {}: not a Kubernetes object (a mapping with apiVersion \
                             and kind), but {}",
                            source.name,
                            d.index,
                            crate::pod::JsonType::of(&d.value)
                        ));
                        continue;
                    }
                    items.push(Item {
                        source: source.name.clone(),
                        index: d.index,
                        original: d.value.clone(),
                        value: d.value,
                    });
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let offline_mode = match params.identity_mode {
        IdentityModeSetting::Inject => IdentityMode::Inject,
        IdentityModeSetting::Delegate => IdentityMode::Delegate,
        IdentityModeSetting::Auto => {
            if matches!(connection, Connection::Off) {
                let _ = writeln!(
                    stderr,
                    "note: identity mode auto needs --cluster on to see whether the Azure Workload \
                     Identity webhook is installed; rendering with identity mode inject"
                );
            }
            IdentityMode::Inject
        }
    };
    let cluster = match connection {
        Connection::Off => None,
        Connection::Given(c) => Some(c),
        Connection::Start => Some(
            Cluster::start(ClusterMode::On, params.identity_mode, LOOKUP_TIMEOUT)
                .await
                .map_err(|e| vec![e.to_string()])?,
        ),
    };
    let facts = match &cluster {
        None => None,
        Some(c) => Some(lookup_all(c, &mut items, &default_namespace).await),
    };
    let given = Given::collect(items.iter().map(|i| &i.value), &default_namespace);
    Ok(Loaded {
        items,
        params,
        resolver: Resolver {
            default_namespace,
            facts,
            given,
            offline_mode,
        },
    })
}

/// Fetches the facts of every opted-in template's ServiceAccount and Namespace.
async fn lookup_all(cluster: &Cluster, items: &mut [Item], default_namespace: &str) -> FactsByPod {
    let mut wanted = Vec::new();
    for item in items.iter_mut() {
        workload::for_each(&mut item.value, &mut |w| {
            if let Ok(Some(sa)) = w.service_account() {
                let key = (w.namespace(default_namespace).to_string(), sa);
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
        });
    }
    let mut out = FactsByPod::new();
    for (ns, sa) in wanted {
        let facts = cluster.facts(&ns, &sa).await;
        out.insert((ns, sa), facts);
    }
    out
}

/// Writes the command's output to stdout, or every error to stderr (prefixed `error: `);
/// `false` when there were errors or stdout could not be written. Nothing reaches stdout when
/// there is an error.
pub fn emit(
    result: Result<&str, &[String]>,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> bool {
    match result {
        Ok(text) => match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => true,
            Err(e) => {
                let _ = writeln!(stderr, "error: cannot write the output: {e}");
                false
            }
        },
        Err(errors) => {
            for e in errors {
                let _ = writeln!(stderr, "error: {e}");
            }
            false
        }
    }
}

/// RFC 1123 label: what Kubernetes accepts as a namespace name.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}
