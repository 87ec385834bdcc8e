//! The pure mutation core: (pod view, plan) → RFC 6902 operations. No I/O, no clock, no
//! globals. Reads the pod through [`crate::pod`] so that fields no type knows survive, and
//! emits only additions and the few replacements the contract lists; never diffs whole pods.

pub mod identity;
pub mod istio;
pub mod patch;
pub mod policy;
pub mod servicebus;
pub mod status;
pub mod telemetry;

use crate::contract::{IdentityMode, InjectionPlan, Scope, keys, truncate};
use crate::denial::{Denial, Occupied, warning};
use crate::pod::{Container, Field, JsonType, Pod, volume_name};

pub use patch::{Op, Patch, Value};

/// Istio's own containers: out of scope unless named in `sbmesh.io/containers`.
pub const ISTIO_CONTAINERS: [&str; 3] = ["istio-proxy", "istio-validation", "istio-init"];

/// What the webhook answers for an opted-in pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub patch: Patch,
    pub warnings: Vec<String>,
    /// Audit annotations for the AdmissionResponse (keys without the webhook prefix).
    pub audit: Vec<(&'static str, String)>,
}

/// A container or init container in scope: where it is and what it holds.
struct Target<'p, 'a> {
    list: &'static str,
    index: usize,
    name: &'p str,
    container: &'p Container<'a>,
}

impl Target<'_, '_> {
    fn pointer(&self, field: &'static str) -> String {
        let mut p = String::with_capacity(40);
        p.push_str("/spec/");
        p.push_str(self.list);
        p.push('/');
        p.push_str(&self.index.to_string());
        p.push('/');
        p.push_str(field);
        p
    }
}

/// The env sbmesh ensures in each container in scope, in the contract's order.
pub fn desired_env(plan: &InjectionPlan) -> Vec<(&'static str, String)> {
    let mut env = Vec::with_capacity(16);
    identity::env(plan, &mut env);
    servicebus::env(plan, &mut env);
    env
}

/// Computes the patch for an opted-in pod.
pub fn mutate(pod: &Pod, plan: &InjectionPlan) -> Result<Mutation, Denial> {
    if pod.metadata().is_none() {
        return Err(Denial::malformed("/metadata", JsonType::Object));
    }
    let Some(spec) = pod.spec() else {
        return Err(Denial::malformed("/spec", JsonType::Object));
    };
    let mut warnings = plan.warnings.clone();
    policy::check_connection_strings(pod, plan.connection_string_policy, &mut warnings)?;

    let mut labels = patch::MapEdits::labels(pod);
    identity::label(&mut labels)?;
    let mut annotations = patch::MapEdits::annotations(pod);
    istio::annotate(plan, &mut annotations, &mut warnings)?;

    let inject = plan.mode == IdentityMode::Inject;
    let targets = select(pod, &plan.scope, inject, &mut warnings)?;
    let env = desired_env(plan);

    let mut spec_ops = Vec::new();
    if inject {
        let volumes = list_of(&spec.volumes, || "/spec/volumes".into())?;
        let ours = volumes
            .into_iter()
            .flatten()
            .find(|v| volume_name(v).as_deref() == Some(identity::VOLUME_NAME));
        match ours {
            Some(v) if identity::volume_matches(v, plan) => {}
            Some(_) => {
                return Err(Denial::Occupied(Occupied::Volume {
                    expiration_seconds: plan.token_expiration.seconds(),
                }));
            }
            None => patch::append(
                &mut spec_ops,
                &spec.volumes,
                "/spec/volumes".to_string(),
                vec![identity::volume(plan)],
            ),
        }
    }
    for t in &targets {
        let own = plan
            .telemetry
            .as_ref()
            .map(|tp| telemetry::env(tp, &plan.subject.namespace, t.name))
            .unwrap_or_default();
        env_ops(t, &env, own, &mut spec_ops, &mut warnings)?;
        if inject {
            mount_ops(t, &mut spec_ops)?;
        }
    }

    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let env_names: Vec<&'static str> = env
        .iter()
        .map(|(n, _)| *n)
        .chain(telemetry::names(plan))
        .collect();
    annotations.set(keys::STATUS, status::status(plan, &names, &env_names));

    let mut ops = Vec::with_capacity(spec_ops.len() + 4);
    labels.into_ops(&mut ops);
    annotations.into_ops(&mut ops);
    ops.extend(spec_ops);
    Ok(Mutation {
        patch: Patch(ops),
        warnings,
        audit: status::audit_annotations(plan),
    })
}

/// A list field: absent or null is `None`; anything but a list is malformed (`pointer` names
/// it in the message, built only then).
fn list_of<T>(
    field: &Field<Vec<T>>,
    pointer: impl FnOnce() -> String,
) -> Result<Option<&[T]>, Denial> {
    field
        .optional()
        .map(|l| l.map(Vec::as_slice))
        .map_err(|_| Denial::malformed(pointer(), JsonType::List))
}

/// Init containers, then containers, that are in scope. Ephemeral containers never are.
fn select<'p, 'a>(
    pod: &'p Pod<'a>,
    scope: &Scope,
    inject: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<Target<'p, 'a>>, Denial> {
    let mut all = Vec::new();
    let spec = pod.spec();
    for (list, field) in [
        ("initContainers", spec.map(|s| &s.init_containers)),
        ("containers", spec.map(|s| &s.containers)),
    ] {
        let Some(field) = field else { continue };
        let containers = list_of(field, || format!("/spec/{list}"))?;
        for (index, container) in containers.into_iter().flatten().enumerate() {
            let name = container.name.get().ok_or_else(|| {
                Denial::malformed(format!("/spec/{list}/{index}/name"), JsonType::String)
            })?;
            all.push(Target {
                list,
                index,
                name,
                container,
            });
        }
    }
    let (key, named) = match scope {
        Scope::All => ("", &[][..]),
        Scope::Only(n) => (keys::CONTAINERS, n.as_slice()),
        Scope::Skip { names, key } => (*key, names.as_slice()),
    };
    for n in named {
        if !all.iter().any(|t| t.name == n) {
            warnings.push(warning(format_args!(
                "{key} names \"{}\", which is not a container or init container of this pod",
                truncate(n)
            )));
        }
    }
    all.retain(|t| {
        let listed = named.iter().any(|n| n == t.name);
        match scope {
            Scope::Only(_) => listed,
            Scope::All | Scope::Skip { .. } => !listed && !ISTIO_CONTAINERS.contains(&t.name),
        }
    });
    if all.is_empty() {
        let name_them = format!(
            "name the containers that use Service Bus in {}",
            keys::CONTAINERS
        );
        let (why, fix) = match scope {
            Scope::Only(_) => (
                format!(
                    "{} names none of this pod's containers or init containers",
                    keys::CONTAINERS
                ),
                name_them,
            ),
            Scope::Skip { .. } => (
                format!("{key} leaves out every container of this pod"),
                format!("leave the containers that use Service Bus out of {key}"),
            ),
            Scope::All => (
                format!(
                    "every container of this pod is one of Istio's ({}), which sbmesh leaves out \
                     unless they are named in {}",
                    ISTIO_CONTAINERS.join(", "),
                    keys::CONTAINERS
                ),
                name_them,
            ),
        };
        warnings.push(warning(format_args!(
            "no container is in scope: {why}, so the pod gets the {} label{} but no container \
             gets the Azure and Service Bus env; {fix}",
            keys::AWI_USE,
            if inject { " and the token volume" } else { "" },
        )));
    }
    Ok(all)
}

/// Appends the env entries the container lacks; entries it has keep their value. `own` are
/// this container's telemetry entries: a user's entry of the same name wins silently.
fn env_ops(
    t: &Target,
    env: &[(&'static str, String)],
    own: Vec<Value>,
    ops: &mut Vec<Op>,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let field = &t.container.env;
    let existing = list_of(field, || t.pointer("env"))?.unwrap_or(&[]);
    let mut added = Vec::new();
    for (name, value) in env {
        match existing.iter().find(|e| e.named(name)) {
            None => added.push(Value::Env {
                name,
                value: value.clone(),
            }),
            Some(e) if e.value_from => {}
            Some(e) => {
                let theirs = e.value.as_deref().unwrap_or("");
                if theirs != value {
                    warnings.push(warning(format_args!(
                        "container {} keeps its own {name}=\"{}\" (sbmesh would set \"{}\")",
                        truncate(t.name),
                        truncate(theirs),
                        value
                    )));
                }
            }
        }
    }
    added.extend(own.into_iter().filter(|v| {
        v.env_name()
            .is_some_and(|name| !existing.iter().any(|e| e.named(name)))
    }));
    patch::append(ops, field, t.pointer("env"), added);
    Ok(())
}

/// Adds the read-only token mount; a different mount at our path is a denial.
fn mount_ops(t: &Target, ops: &mut Vec<Op>) -> Result<(), Denial> {
    let field = &t.container.volume_mounts;
    let existing = list_of(field, || t.pointer("volumeMounts"))?.unwrap_or(&[]);
    let at_our_path = existing.iter().find(|m| {
        m.mount_path
            .as_deref()
            .is_some_and(|p| p.trim_end_matches('/') == identity::MOUNT_PATH)
    });
    match at_our_path {
        Some(m) if identity::mount_matches(m) => Ok(()),
        Some(m) => Err(Denial::Occupied(Occupied::Mount {
            container: truncate(t.name),
            volume: truncate(m.name.as_deref().unwrap_or("a volume")),
        })),
        None => {
            patch::append(
                ops,
                field,
                t.pointer("volumeMounts"),
                vec![identity::mount()],
            );
            Ok(())
        }
    }
}
