//! `sbmesh inject`: the webhook's mutation rendered into manifests, offline, like `istioctl
//! kube-inject`. A thin shell around the same core the webhook runs (`contract::plan`, then
//! `mutate::mutate`): it reads documents, finds pod templates, patches them, writes them out.

pub mod context;
pub mod diff;
pub mod input;
pub mod load;
pub mod render;
pub mod workload;

use std::io::{Read, Write};

use serde_json::Value;

use crate::cluster::Cluster;

pub use load::{Connection, DEFAULT_NAMESPACE, InputArgs, Item, LOOKUP_TIMEOUT, Lookups};
pub use render::Format;

/// Exit code: success; with `--diff`, nothing would change.
pub const EXIT_OK: u8 = 0;
/// Exit code with `--diff`: at least one document would change.
pub const EXIT_CHANGES: u8 = 1;
/// Exit code: an error; nothing was written to stdout.
pub const EXIT_ERROR: u8 = 2;

const AFTER_HELP: &str = "\
Reads manifests (multi-document YAML or JSON streams; a directory's *.yaml, *.yml and *.json
files in name order; - for stdin; v1 List objects) and writes every document to stdout, in
order, with the webhook's mutation applied to each pod template that opts in with
sbmesh.io/inject: \"true\" (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob, PodTemplate, OpenShift DeploymentConfig). Other documents
come out unchanged in meaning; an opted-in pod template in another kind is named in a warning.
Warnings go to stderr.

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

/// `sbmesh inject`: render the webhook's mutation into manifests.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format: yaml (documents separated by ---) or json (one object, or a v1 List of
    /// several).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
    /// Print a unified diff of each document that would change, instead of the manifests;
    /// exit 1 when there is one, 0 when there is none.
    #[arg(long)]
    pub diff: bool,
}

/// Runs the command; returns the process exit code ([`EXIT_OK`], [`EXIT_CHANGES`] with
/// `--diff`, [`EXIT_ERROR`]). Nothing is written to `stdout` when there is an error.
pub async fn run(
    args: &Args,
    stdin: &mut (dyn Read + Send),
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> u8 {
    let connection = Connection::of(args.input.cluster);
    finish(
        args,
        execute(args, connection, stdin, stderr).await,
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
    let changed = result.as_ref().is_ok_and(|out| out.changed);
    let text = result.as_ref().map(|out| out.text.as_str());
    if !load::emit(text.map_err(Vec::as_slice), stdout, stderr) {
        EXIT_ERROR
    } else if args.diff && changed {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// What goes to stdout, and whether any document changed.
struct Output {
    text: String,
    changed: bool,
}

async fn execute(
    args: &Args,
    connection: Connection,
    stdin: &mut (dyn Read + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<Output, Vec<String>> {
    let load::Loaded {
        mut items,
        params,
        resolver,
    } = load::load(&args.input, connection, stdin, stderr).await?;
    let mut errors = Vec::new();
    let mut changed = false;
    for item in &mut items {
        let place = item.place();
        let mut warnings = Vec::new();
        workload::for_each(&mut item.value, &mut |mut w| {
            let namespace = w.namespace(&resolver.default_namespace).to_string();
            let name = w.name(&resolver.default_namespace);
            let result = match resolver.facts(&w) {
                Ok(f) => workload::inject(&mut w, &namespace, &f.context(), &params.defaults),
                Err(d) => Err(d),
            };
            match result {
                Ok(workload::Outcome::Skipped) => {
                    if let Some(m) = w.misplaced_opt_in() {
                        warnings.push(format!("{place}: {name}: {m}"));
                    }
                }
                Ok(workload::Outcome::Injected { warnings: w }) => {
                    warnings.extend(w.into_iter().map(|m| format!("{place}: {name}: {m}")));
                }
                Err(d) => errors.push(format!("{place}: {name}: {d}")),
            }
        });
        for (object, path) in workload::unreadable_opt_ins(&item.value) {
            warnings.push(format!(
                "{place}: {object}: a pod template at {path} opts in, but sbmesh inject renders \
                 the pod templates of {} only, so it is written back unchanged; the webhook \
                 still injects its pods when they are created",
                workload::KINDS
            ));
        }
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
