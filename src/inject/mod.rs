//! `sbmesh inject`: the webhook's mutation rendered into manifests, offline, like `istioctl
//! kube-inject`. A thin shell around the same core the webhook runs (`contract::plan`, then
//! `mutate::mutate`): it reads documents, finds pod templates, patches them, writes them out.

pub mod context;
pub mod diff;
pub mod input;
pub mod render;
pub mod workload;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, ClusterMode, Facts};
use crate::config::ParamArgs;
use crate::contract::{self, Denial, IdentityMode, IdentityModeSetting};

pub use render::Format;

/// Exit code: success; with `--diff`, nothing would change.
pub const EXIT_OK: u8 = 0;
/// Exit code with `--diff`: at least one document would change.
pub const EXIT_CHANGES: u8 = 1;
/// Exit code: an error; nothing was written to stdout.
pub const EXIT_ERROR: u8 = 2;

/// The namespace used when neither the object nor `--namespace` names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How long one ServiceAccount or Namespace lookup may take with `--cluster on` (a person is
/// waiting, not the API server, so this is longer than the webhook's).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

const AFTER_HELP: &str = "\
Reads manifests (multi-document YAML or JSON streams; a directory's *.yaml, *.yml and *.json
files in name order; - for stdin; v1 List objects) and writes every document to stdout, in
order, with the webhook's mutation applied to each pod template that opts in with
sbmesh.io/inject: \"true\" (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob, PodTemplate). Other documents come out unchanged in
meaning. Warnings go to stderr.

Parameters are read from the pod template's annotations, then its ServiceAccount's and its
Namespace's, then the flags / config / SBMESH_* environment. ServiceAccounts and Namespaces in
the input are read as the cluster would be; with --cluster on (kubeconfig or in-cluster
credentials) the others are looked up, and the input wins over the cluster. The namespace is
the object's, else --namespace, else \"default\".

Output is parsed and re-serialized: comments, anchors and quoting styles are lost; key order
and multi-line strings are kept; strings a YAML 1.1 reader would take for booleans or numbers
(\"true\", \"on\", \"0755\", \"1e3\") stay quoted. Input is read as kubectl reads it (0644 is
octal, yes is true). When any document fails, nothing is written to stdout.

Exit codes:
  0  success (with --diff: nothing would change)
  1  with --diff: at least one document would change
  2  error: unreadable input, a document that does not parse, a denial, a bad flag

Examples:
  sbmesh inject -f examples/payments.yaml
  kubectl kustomize overlays/prod | sbmesh inject -f - | kubectl apply -f -
  sbmesh inject -f deploy/ --diff";

/// Whether ServiceAccounts and Namespaces are looked up in a cluster (`--cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Lookups {
    /// Read ServiceAccount and Namespace annotations from the cluster of the kubeconfig.
    On,
    /// Only the manifests, the flags and the config are read.
    #[default]
    Off,
}

/// `sbmesh inject`: render the webhook's mutation into manifests.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
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
    /// Output format: yaml (documents separated by ---) or json (one object, or a v1 List of
    /// several).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
    /// Print a unified diff of each document that would change, instead of the manifests;
    /// exit 1 when there is one, 0 when there is none.
    #[arg(long)]
    pub diff: bool,
    /// Namespace of objects that do not name one (default: "default"). It is part of the
    /// federated credential subject the status annotation records.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Look up ServiceAccount and Namespace annotations (and, with --identity-mode auto, the
    /// Azure Workload Identity webhook) in the cluster of the current kubeconfig.
    #[arg(long, value_enum, default_value_t = Lookups::Off, value_name = "on|off")]
    pub cluster: Lookups,
    #[command(flatten)]
    pub params: ParamArgs,
}

/// Runs the command; returns the process exit code ([`EXIT_OK`], [`EXIT_CHANGES`] with
/// `--diff`, [`EXIT_ERROR`]). Nothing is written to `stdout` when there is an error.
pub async fn run(
    args: &Args,
    stdin: &mut (dyn Read + Send),
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> u8 {
    let lookups = match args.cluster {
        Lookups::Off => Connection::Off,
        Lookups::On => Connection::Start,
    };
    finish(
        args,
        execute(args, lookups, stdin, stderr).await,
        stdout,
        stderr,
    )
}

/// Like [`run`] with `--cluster on`, over a cluster connection the caller made (tests point
/// one at a fake API server; `run` makes it with [`Cluster::start`]).
pub async fn run_with_cluster(
    args: &Args,
    cluster: Cluster,
    stdin: &mut (dyn Read + Send),
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> u8 {
    let result = execute(args, Connection::Given(cluster), stdin, stderr).await;
    finish(args, result, stdout, stderr)
}

fn finish(
    args: &Args,
    result: Result<Output, Vec<String>>,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> u8 {
    match result {
        Ok(out) => {
            if let Err(e) = stdout
                .write_all(out.text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                let _ = writeln!(stderr, "error: cannot write the output: {e}");
                return EXIT_ERROR;
            }
            if args.diff && out.changed {
                EXIT_CHANGES
            } else {
                EXIT_OK
            }
        }
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(stderr, "error: {e}");
            }
            EXIT_ERROR
        }
    }
}

/// How ServiceAccounts and Namespaces are looked up.
enum Connection {
    Off,
    /// `--cluster on`: connect once the input has parsed.
    Start,
    Given(Cluster),
}

/// What goes to stdout, and whether any document changed.
struct Output {
    text: String,
    changed: bool,
}

/// A document in flight: where it came from, as read, and as injected.
struct Item {
    source: String,
    index: usize,
    original: Value,
    value: Value,
}

impl Item {
    fn place(&self) -> String {
        format!("{}: document {}", self.source, self.index)
    }
}

/// What the cluster said per (namespace, ServiceAccount), fetched before injection so that
/// injection itself stays synchronous.
type FactsByPod = BTreeMap<(String, String), Result<Facts, Denial>>;

async fn execute(
    args: &Args,
    connection: Connection,
    stdin: &mut (dyn Read + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<Output, Vec<String>> {
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
    let default_namespace = args.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);

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
        Some(c) => Some(lookup_all(c, &mut items, default_namespace).await),
    };
    let given = context::Given::collect(items.iter().map(|i| &i.value), default_namespace);

    let mut changed = false;
    for item in &mut items {
        let place = item.place();
        let mut warnings = Vec::new();
        workload::for_each(&mut item.value, &mut |mut w| {
            let namespace = w.namespace(default_namespace).to_string();
            let name = w.name(default_namespace);
            // The cluster's answer (when looked up), then what the input itself holds: the
            // input wins, because it is what will be applied.
            let sa = w.service_account().ok().flatten();
            let looked_up = match (&facts, &sa) {
                (Some(facts), Some(sa)) => facts.get(&(namespace.clone(), sa.clone())).cloned(),
                _ => None,
            };
            let result = match given.facts(&namespace, sa.as_deref(), looked_up, offline_mode) {
                Ok(f) => workload::inject(&mut w, &namespace, &f.context(), &params.defaults),
                Err(d) => Err(d),
            };
            match result {
                Ok(workload::Outcome::Skipped) if w.opt_in_misplaced() => warnings.push(format!(
                    "{place}: {name}: sbmesh.io/inject is set on the {} itself, not on its pod \
                     template, so the webhook never sees it; move it to {}.metadata.annotations",
                    name.kind,
                    w.template_path()
                )),
                Ok(workload::Outcome::Skipped) => {}
                Ok(workload::Outcome::Injected { warnings: w }) => {
                    warnings.extend(w.into_iter().map(|m| format!("{place}: {name}: {m}")));
                }
                Err(d) => errors.push(format!("{place}: {name}: {d}")),
            }
        });
        for w in warnings {
            let _ = writeln!(stderr, "warning: {w}");
        }
        changed |= item.value != item.original;
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let text = if args.diff {
        diffs(&items, args.output)?
    } else {
        let values: Vec<Value> = items.into_iter().map(|i| i.value).collect();
        render::stream(&values, args.output)
            .map_err(|e| vec![format!("cannot write the output: {e}")])?
    };
    Ok(Output { text, changed })
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

/// A unified diff per changed document, each rendered in the output format.
fn diffs(items: &[Item], format: Format) -> Result<String, Vec<String>> {
    let mut text = String::new();
    for item in items.iter().filter(|i| i.value != i.original) {
        let (old, new) = match (
            render::document(&item.original, format),
            render::document(&item.value, format),
        ) {
            (Ok(o), Ok(n)) => (o, n),
            (Err(e), _) | (_, Err(e)) => {
                return Err(vec![format!(
                    "{}: cannot write the output: {e}",
                    item.place()
                )]);
            }
        };
        let label = format!("{} ({})", item.place(), workload::describe(&item.original));
        if let Some(d) = diff::unified(&old, &new, &label, &format!("{label}, injected")) {
            text.push_str(&d);
        }
    }
    Ok(text)
}

/// RFC 1123 label: what Kubernetes accepts as a namespace name.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}
