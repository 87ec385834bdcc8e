//! The pure mutation core: (raw pod JSON, plan) → RFC 6902 operations. No I/O, no clock, no
//! globals. Works on the raw JSON so that fields no type knows survive, and emits only
//! additions and the few replacements the contract lists; never diffs whole pods.

pub mod identity;
pub mod istio;
pub mod patch;
pub mod policy;
pub mod servicebus;
pub mod status;

use serde_json::{Value, json};

use crate::contract::{Denial, IdentityMode, InjectionPlan, Scope, keys, truncate};

pub use patch::Op;

/// Istio's own containers: out of scope unless named in `sbmesh.io/containers`.
pub const ISTIO_CONTAINERS: [&str; 3] = ["istio-proxy", "istio-validation", "istio-init"];

/// What the webhook answers for an opted-in pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
    /// Audit annotations for the AdmissionResponse (keys without the webhook prefix).
    pub audit: Vec<(&'static str, String)>,
}

/// A container or init container: its JSON pointer, name and object.
struct Target<'a> {
    pointer: String,
    name: &'a str,
    container: &'a Value,
}

/// The env sbmesh ensures in each container in scope, in the contract's order.
pub fn desired_env(plan: &InjectionPlan) -> Vec<(&'static str, String)> {
    let mut env = Vec::with_capacity(16);
    identity::env(plan, &mut env);
    servicebus::env(plan, &mut env);
    env
}

/// Computes the patch for an opted-in pod.
pub fn mutate(pod: &Value, plan: &InjectionPlan) -> Result<Mutation, Denial> {
    if !pod.get("metadata").is_some_and(Value::is_object) {
        return Err(malformed("/metadata", "an object"));
    }
    if !pod.get("spec").is_some_and(Value::is_object) {
        return Err(malformed("/spec", "an object"));
    }
    let mut warnings = plan.warnings.clone();
    policy::check_connection_strings(pod, plan.connection_string_policy, &mut warnings)?;

    let mut labels = patch::MapEdits::metadata(pod, "labels");
    identity::label(&mut labels)?;
    let mut annotations = patch::MapEdits::metadata(pod, "annotations");
    istio::annotate(plan, &mut annotations, &mut warnings)?;

    let targets = select(pod, &plan.scope, &mut warnings)?;
    let env = desired_env(plan);
    let inject = plan.mode == IdentityMode::Inject;

    let mut spec_ops = Vec::new();
    if inject {
        let volumes = patch::at(pod, &["spec", "volumes"]);
        match find(
            list_of(volumes, || "/spec/volumes".into())?,
            "name",
            identity::VOLUME_NAME,
        ) {
            Some(v) if identity::volume_matches(v, plan) => {}
            Some(_) => {
                return Err(Denial::new(format!(
                    "sbmesh: the pod already has a volume named {} that differs from the one \
                     sbmesh adds (projected serviceAccountToken, audience {}, expirationSeconds \
                     {}, path {}); sbmesh does not overwrite it: rename or remove that volume",
                    identity::VOLUME_NAME,
                    identity::TOKEN_AUDIENCE,
                    plan.token_expiration.seconds(),
                    identity::TOKEN_PATH
                )));
            }
            None => patch::append(
                &mut spec_ops,
                volumes,
                "/spec/volumes".into(),
                vec![identity::volume(plan)],
            ),
        }
    }
    for t in &targets {
        env_ops(t, &env, &mut spec_ops, &mut warnings)?;
        if inject {
            mount_ops(t, &mut spec_ops)?;
        }
    }

    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    annotations.set(keys::STATUS, status::status(plan, &names, &env));

    let mut ops = Vec::with_capacity(spec_ops.len() + 4);
    labels.into_ops(&mut ops);
    annotations.into_ops(&mut ops);
    ops.extend(spec_ops);
    Ok(Mutation {
        ops,
        warnings,
        audit: status::audit_annotations(plan),
    })
}

fn malformed(pointer: &str, expected: &str) -> Denial {
    Denial::new(format!(
        "sbmesh: malformed pod: {pointer} must be {expected}"
    ))
}

/// A list field: absent or null is `None`; anything but a list is malformed (`pointer` names
/// it in the message, built only then).
fn list_of(
    v: Option<&Value>,
    pointer: impl FnOnce() -> String,
) -> Result<Option<&Vec<Value>>, Denial> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(malformed(&pointer(), "a list")),
    }
}

fn find<'a>(list: Option<&'a Vec<Value>>, field: &str, wanted: &str) -> Option<&'a Value> {
    list?
        .iter()
        .find(|v| v.get(field).and_then(Value::as_str) == Some(wanted))
}

/// Init containers, then containers, that are in scope. Ephemeral containers never are.
fn select<'a>(
    pod: &'a Value,
    scope: &Scope,
    warnings: &mut Vec<String>,
) -> Result<Vec<Target<'a>>, Denial> {
    let mut all = Vec::new();
    for list in ["initContainers", "containers"] {
        let containers = list_of(patch::at(pod, &["spec", list]), || format!("/spec/{list}"))?;
        for (i, c) in containers.into_iter().flatten().enumerate() {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(&format!("/spec/{list}/{i}/name"), "a string"))?;
            all.push(Target {
                pointer: format!("/spec/{list}/{i}"),
                name,
                container: c,
            });
        }
    }
    let (key, named) = match scope {
        Scope::All => ("", &[][..]),
        Scope::Only(n) => (keys::CONTAINERS, n.as_slice()),
        Scope::Skip(n) => (keys::SKIP_CONTAINERS, n.as_slice()),
    };
    for n in named {
        if !all.iter().any(|t| t.name == n) {
            warnings.push(format!(
                "sbmesh: {key} names \"{}\", which is not a container or init container of this pod",
                truncate(n)
            ));
        }
    }
    all.retain(|t| {
        let listed = named.iter().any(|n| n == t.name);
        match scope {
            Scope::Only(_) => listed,
            Scope::All | Scope::Skip(_) => !listed && !ISTIO_CONTAINERS.contains(&t.name),
        }
    });
    Ok(all)
}

/// Appends the env entries the container lacks; entries it has keep their value.
fn env_ops(
    t: &Target,
    env: &[(&'static str, String)],
    ops: &mut Vec<Op>,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let field = t.container.get("env");
    let existing = list_of(field, || format!("{}/env", t.pointer))?;
    let mut added = Vec::new();
    for (name, value) in env {
        match find(existing, "name", name) {
            None => added.push(json!({"name": name, "value": value})),
            Some(e) if e.get("valueFrom").is_some_and(|v| !v.is_null()) => {}
            Some(e) => {
                let theirs = e.get("value").and_then(Value::as_str).unwrap_or("");
                if theirs != value {
                    warnings.push(format!(
                        "sbmesh: container {} keeps its own {name}=\"{}\" (sbmesh would set \"{}\")",
                        truncate(t.name),
                        truncate(theirs),
                        value
                    ));
                }
            }
        }
    }
    if !added.is_empty() {
        patch::append(ops, field, format!("{}/env", t.pointer), added);
    }
    Ok(())
}

/// Adds the read-only token mount; a different mount at our path is a denial.
fn mount_ops(t: &Target, ops: &mut Vec<Op>) -> Result<(), Denial> {
    let field = t.container.get("volumeMounts");
    let existing = list_of(field, || format!("{}/volumeMounts", t.pointer))?;
    let at_our_path = existing.and_then(|l| {
        l.iter().find(|m| {
            m.get("mountPath")
                .and_then(Value::as_str)
                .is_some_and(|p| p.trim_end_matches('/') == identity::MOUNT_PATH)
        })
    });
    match at_our_path {
        Some(m) if identity::mount_matches(m) => Ok(()),
        Some(m) => Err(Denial::new(format!(
            "sbmesh: container {} already mounts {} at {}, where sbmesh mounts its token volume \
             {} read-only; sbmesh does not overwrite it: move that mount, or leave the container \
             out with {}",
            truncate(t.name),
            truncate(m.get("name").and_then(Value::as_str).unwrap_or("a volume")),
            identity::MOUNT_PATH,
            identity::VOLUME_NAME,
            keys::SKIP_CONTAINERS
        ))),
        None => {
            patch::append(
                ops,
                field,
                format!("{}/volumeMounts", t.pointer),
                vec![identity::mount()],
            );
            Ok(())
        }
    }
}
