//! `sbmesh onboard` (DESIGN §9): from the manifests that will be applied, the Azure grants and
//! the mesh policy each workload needs. It reads the input exactly as `sbmesh inject` does and
//! admits each pod template with the webhook's own core; a workload the webhook would deny is
//! an error, so nothing is granted that admission would refuse.

pub mod az;
pub mod istio;
pub mod mermaid;
pub mod plan;
pub mod table;

use std::io::{Read, Write};

use crate::cluster::Cluster;
use crate::core::{self, Admission};
use crate::inject::load::{self, Connection, InputArgs, is_dns_label};
use crate::inject::workload;

pub use plan::{Onboarding, Report};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error; nothing was written to stdout.
pub const EXIT_ERROR: u8 = 2;

/// The federated credentials' cluster name when `--cluster-name` is not given.
pub const DEFAULT_CLUSTER_NAME: &str = "cluster";
/// The mesh's trust domain when `--trust-domain` is not given.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Where the egress gateway runs when `--egress-namespace` is not given.
pub const DEFAULT_EGRESS_NAMESPACE: &str = "istio-system";

const AFTER_HELP: &str = "\
Reads manifests as sbmesh inject does (files, directories, - for stdin, v1 Lists; the pod
templates of Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
CronJob, PodTemplate and DeploymentConfig; ServiceAccounts and Namespaces in the input are read as the cluster's
would be) and admits every template that opts in with the webhook's own rules. From the result
it renders, per Entra identity (client id, tenant id), the federated credential subjects and the
narrowest Service Bus role assignments: Azure Service Bus Data Sender on each queue and topic a
workload sends to, Data Receiver on each queue and topic subscription it receives from.

A workload the webhook would deny is an error: every denial is reported, with the file, the
document, the object and the webhook's message, and nothing is written to stdout. Warnings
(an identity shared by several ServiceAccounts, more than 20 subjects on one identity, grants
from the legacy keys) go to stderr.

Outputs:
  table    one row per grant (default)
  json     {\"identities\":[{clientId, tenantId, subjects, workloads, grants:[{servicebusNamespace,
           entity, role, roleId}]}]}: the stable form for tools
  az       a bash script that creates the federated credentials and role assignments that are
           missing, with the Azure CLI (needs --issuer); safe to run twice
  istio    a ServiceEntry per Service Bus namespace and the egress gateway's AuthorizationPolicy
  mermaid  a flowchart: producers -> entities -> consumers

Exit codes:
  0  success
  2  error: unreadable input, a document that does not parse, a denial, a bad flag

Examples:
  sbmesh onboard -f examples/payments.yaml
  sbmesh onboard -f deploy/ -o az --issuer \"$(az aks show -n prod -g prod-rg \\
      --query oidcIssuerProfile.issuerUrl -o tsv)\" --cluster-name prod > onboard.sh
  kubectl kustomize overlays/prod | sbmesh onboard -f - -o istio | kubectl apply -f -";

/// `-o`: what `sbmesh onboard` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// One row per grant, aligned for a terminal.
    #[default]
    Table,
    /// The stable JSON form.
    Json,
    /// A bash script for the Azure CLI that creates what is missing.
    Az,
    /// Istio ServiceEntries and the egress gateway's AuthorizationPolicy.
    Istio,
    /// A Mermaid flowchart.
    Mermaid,
}

/// `sbmesh onboard`: render the Azure grants and mesh policy the workloads need.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output: table, json, az, istio or mermaid.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// -o az: the cluster's service account issuer URL (https), the issuer of every federated
    /// credential the script creates (e.g. `az aks show --query oidcIssuerProfile.issuerUrl`).
    #[arg(long, value_name = "URL", required_if_eq("output", "az"))]
    pub issuer: Option<String>,
    /// -o az: the cluster's name in federated credential names (sbmesh-<cluster>-<ns>-<sa>).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER_NAME)]
    pub cluster_name: String,
    /// -o istio: the mesh's trust domain, the first part of each workload's principal.
    #[arg(long, value_name = "DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// -o istio: the namespace of the egress gateway, where the ServiceEntries and the
    /// AuthorizationPolicy go.
    #[arg(long, value_name = "NAMESPACE", default_value = DEFAULT_EGRESS_NAMESPACE)]
    pub egress_namespace: String,
}

/// Runs the command; returns the process exit code. Nothing is written to `stdout` when
/// there is an error.
pub async fn run(
    args: &Args,
    stdin: &mut (dyn Read + Send),
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> u8 {
    let result = execute(args, Connection::of(args.input.cluster), stdin, stderr).await;
    finish(result, stdout, stderr)
}

/// Like [`run`] with `--cluster on`, over a cluster connection the caller made.
pub async fn run_with_cluster(
    args: &Args,
    cluster: Cluster,
    stdin: &mut (dyn Read + Send),
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> u8 {
    let result = execute(args, Connection::Given(cluster), stdin, stderr).await;
    finish(result, stdout, stderr)
}

fn finish(
    result: Result<String, Vec<String>>,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> u8 {
    match load::emit(result.as_deref().map_err(Vec::as_slice), stdout, stderr) {
        true => EXIT_OK,
        false => EXIT_ERROR,
    }
}

async fn execute(
    args: &Args,
    connection: Connection,
    stdin: &mut (dyn Read + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<String, Vec<String>> {
    let options = Options::of(args).map_err(|e| vec![e])?;
    let load::Loaded {
        mut items,
        params,
        resolver,
    } = load::load(&args.input, connection, stdin, stderr).await?;

    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut workloads = Vec::new();
    for item in &mut items {
        let place = item.place();
        workload::for_each(&mut item.value, &mut |w| {
            let namespace = w.namespace(&resolver.default_namespace).to_string();
            let name = w.name(&resolver.default_namespace);
            let admission = match (resolver.facts(&w), w.pod()) {
                (Err(d), _) => Admission::Deny(d),
                (Ok(_), None) => Admission::Skip,
                (Ok(f), Some(pod)) => {
                    core::admit_json(&pod.to_string(), &namespace, &f.context(), &params.defaults)
                }
            };
            match admission {
                Admission::Skip => {
                    if let Some(m) = w.misplaced_opt_in() {
                        warnings.push(format!("{place}: {name}: {m}"));
                    }
                }
                Admission::Deny(d) => errors.push(format!("{place}: {name}: {d}")),
                Admission::Patch { plan, .. } => workloads.push(plan::Workload::new(
                    &namespace, &name.kind, &name.name, &plan,
                )),
            }
        });
        for (object, path) in workload::unreadable_opt_ins(&item.value) {
            errors.push(format!(
                "{place}: {object}: a pod template at {path} opts in, but sbmesh onboard reads the \
                 pod templates of {} only, so its grants would be missing; onboard a Deployment \
                 (or Pod) with the same template, ServiceAccount and annotations instead",
                workload::KINDS
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let onboarding = Onboarding::new(workloads);
    if onboarding.workloads.is_empty() {
        warnings.push(
            "no pod template opts in (sbmesh.io/inject: \"true\"): there is nothing to grant"
                .to_string(),
        );
    }
    warnings.extend(onboarding.warnings());
    for w in &warnings {
        let _ = writeln!(stderr, "warning: {w}");
    }
    render(&onboarding, args.output, &options).map_err(|e| vec![e])
}

/// The flags the renderers read, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub issuer: Option<String>,
    pub cluster_name: String,
    pub trust_domain: String,
    pub egress_namespace: String,
}

impl Options {
    fn of(args: &Args) -> Result<Self, String> {
        let issuer = args.issuer.as_deref().map(check_issuer).transpose()?;
        if args.cluster_name.trim().is_empty() {
            return Err("--cluster-name must not be empty".into());
        }
        if !is_dns_subdomain(&args.trust_domain) {
            return Err(format!(
                "--trust-domain \"{}\" is not a trust domain (a DNS name such as cluster.local)",
                crate::contract::truncate(&args.trust_domain)
            ));
        }
        if !is_dns_label(&args.egress_namespace) {
            return Err(format!(
                "--egress-namespace \"{}\" is not a valid namespace name (lowercase letters, \
                 digits and '-', at most 63 characters)",
                crate::contract::truncate(&args.egress_namespace)
            ));
        }
        Ok(Self {
            issuer,
            cluster_name: args.cluster_name.clone(),
            trust_domain: args.trust_domain.clone(),
            egress_namespace: args.egress_namespace.clone(),
        })
    }
}

/// Entra ID takes an https issuer URL without query or fragment, as the cluster publishes it.
fn check_issuer(raw: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "--issuer \"{}\" {why}; give the cluster's service account issuer, e.g. `az aks show \
             -n CLUSTER -g GROUP --query oidcIssuerProfile.issuerUrl -o tsv`",
            crate::contract::truncate(raw)
        )
    };
    let uri: http::Uri = raw.parse().map_err(|_| bad("is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("is not an https URL"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if uri.query().is_some() || raw.contains('#') {
        return Err(bad("has a query or fragment, which an issuer never has"));
    }
    if raw.len() > 600 {
        return Err(bad("is longer than the 600 characters Entra ID accepts"));
    }
    Ok(raw.to_string())
}

/// Renders the plan in the chosen format.
pub fn render(
    onboarding: &Onboarding,
    output: Output,
    options: &Options,
) -> Result<String, String> {
    Ok(match output {
        Output::Table => table::render(onboarding),
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&onboarding.report())
                .map_err(|e| format!("cannot write the output: {e}"))?;
            s.push('\n');
            s
        }
        Output::Az => az::render(
            onboarding,
            options
                .issuer
                .as_deref()
                .ok_or("-o az needs --issuer, the cluster's service account issuer URL")?,
            &options.cluster_name,
        )?,
        Output::Istio => {
            istio::render(onboarding, &options.trust_domain, &options.egress_namespace)
        }
        Output::Mermaid => mermaid::render(onboarding),
    })
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}
