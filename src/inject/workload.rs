//! Workload kinds and where each keeps its pod template; injection of one object: build the
//! pod the webhook will see from the template, run the webhook's own core on it (contract
//! plan, then mutation), apply the patch, and write metadata and spec back into the template.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::contract::{Context, Defaults};
use crate::core::{self, Admission};
use crate::denial::Denial;
use crate::pod::Pod;

/// Where a kind keeps the pod: `Some("")` for a Pod itself, a JSON pointer to the template
/// for the others, `None` for kinds without one.
pub fn template_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Some(""),
        ("", "ReplicationController") => Some("/spec/template"),
        ("", "PodTemplate") => Some("/template"),
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some("/spec/template")
        }
        ("batch", "Job") => Some("/spec/template"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        // OpenShift, as `istioctl kube-inject` renders it.
        ("apps.openshift.io", "DeploymentConfig") => Some("/spec/template"),
        _ => None,
    }
}

/// The kinds whose pod templates `inject` and `onboard` read, for messages.
pub const KINDS: &str = "Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, \
                         ReplicationController, Job, CronJob, PodTemplate and DeploymentConfig";

/// The objects of a document (List items too) that are of none of the [`KINDS`] but hold an
/// opted-in pod template (an Argo Rollout, a Knative Service, …), each named with the
/// template's path: the webhook admits their pods at creation, but they cannot be rendered.
pub fn unreadable_opt_ins(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    visit_objects(doc, &mut out);
    out
}

fn visit_objects(obj: &Value, out: &mut Vec<(String, String)>) {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let kind = s("/kind");
    if kind.ends_with("List") {
        for item in obj
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            visit_objects(item, out);
        }
        return;
    }
    // Items of typed lists may omit their kind; those are read as workloads of the list's kind.
    if kind.is_empty() || template_pointer(s("/apiVersion"), kind).is_some() {
        return;
    }
    if let Some(path) = opted_in_template(obj, &mut Vec::new(), 0) {
        out.push((describe(obj), path));
    }
}

fn opted_in_template(v: &Value, path: &mut Vec<String>, depth: usize) -> Option<String> {
    const MAX_DEPTH: usize = 16;
    if depth > MAX_DEPTH {
        return None;
    }
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => {
            if let Some(t) = m.get("template")
                && t.pointer("/metadata/annotations/sbmesh.io~1inject")
                    .is_some()
            {
                path.push("template".into());
                return Some(path.join("."));
            }
            m.iter().map(|(k, c)| (k.clone(), c)).collect()
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), c))
            .collect(),
        _ => return None,
    };
    for (key, child) in children {
        path.push(key);
        if let Some(p) = opted_in_template(child, path, depth + 1) {
            return Some(p);
        }
        path.pop();
    }
    None
}

/// An object's kind and name, for messages: `Deployment payments/orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The object's name, or its generateName followed by `*`.
pub fn object_name(obj: &Value) -> String {
    str_at(obj, "/metadata/name")
        .map(str::to_string)
        .or_else(|| str_at(obj, "/metadata/generateName").map(|g| format!("{g}*")))
        .unwrap_or_else(|| "(unnamed)".into())
}

/// How a whole document is named in `--diff` headers.
pub fn describe(doc: &Value) -> String {
    let kind = str_at(doc, "/kind").unwrap_or("(no kind)");
    if let Some(items) = doc.get("items").and_then(Value::as_array)
        && kind.ends_with("List")
    {
        return format!("{kind} of {} items", items.len());
    }
    Name {
        kind: kind.to_string(),
        namespace: str_at(doc, "/metadata/namespace").map(str::to_string),
        name: object_name(doc),
    }
    .to_string()
}

/// One object with a pod template, found in a document.
pub struct Workload<'a> {
    pub object: &'a mut Value,
    pointer: &'static str,
    pub kind: String,
}

impl Workload<'_> {
    /// The namespace the pod will run in: the object's, else the given default.
    pub fn namespace<'n>(&'n self, default: &'n str) -> &'n str {
        str_at(self.object, "/metadata/namespace").unwrap_or(default)
    }

    pub fn name(&self, default_namespace: &str) -> Name {
        Name {
            kind: self.kind.clone(),
            namespace: Some(self.namespace(default_namespace).to_string()),
            name: object_name(self.object),
        }
    }

    /// The pod the webhook will see, as far as sbmesh reads it: the template's metadata and
    /// spec. `None` when there is no template object.
    pub fn pod(&self) -> Option<Value> {
        let t = template(self.object, self.pointer)?.as_object()?;
        Some(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": t.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "spec": t.get("spec").cloned().unwrap_or(Value::Null),
        }))
    }

    /// The ServiceAccount the template's pod reads its parameters from, when it opts in.
    pub fn service_account(&self) -> Result<Option<String>, Denial> {
        let Some(json) = self.pod().map(|p| p.to_string()) else {
            return Ok(None);
        };
        let pod = Pod::parse(&json).map_err(|e| Denial::Internal(e.to_string()))?;
        Ok(core::service_account(&pod)?.map(str::to_string))
    }

    /// Whether the opt-in stands on the workload's own metadata but not on its pod template,
    /// where the webhook would never see it (a common slip).
    fn opt_in_misplaced(&self) -> bool {
        let own = "/metadata/annotations/sbmesh.io~1inject";
        !self.pointer.is_empty()
            && self.object.pointer(own).is_some()
            && self.pod().is_none_or(|p| p.pointer(own).is_none())
    }

    /// The warning for an opt-in on the workload's own metadata instead of its template.
    pub fn misplaced_opt_in(&self) -> Option<String> {
        self.opt_in_misplaced().then(|| {
            format!(
                "sbmesh.io/inject is set on the {} itself, not on its pod template, so the \
                 webhook never sees it; move it to {}.metadata.annotations",
                self.kind,
                self.template_path()
            )
        })
    }

    /// The template's place in the object, as kubectl explain writes it (`spec.template`).
    pub fn template_path(&self) -> String {
        self.pointer.trim_start_matches('/').replace('/', ".")
    }

    /// Writes the pod's metadata and spec back into the template (keeping its key order).
    fn write_back(&mut self, pod: Value) {
        let Value::Object(mut pod) = pod else { return };
        if let Some(t) = template_mut(self.object, self.pointer) {
            for key in ["metadata", "spec"] {
                if let Some(v) = pod.remove(key) {
                    t.insert(key.to_string(), v);
                }
            }
        }
    }
}

fn template<'a>(obj: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        Some(obj)
    } else {
        obj.pointer(pointer)
    }
}

fn template_mut<'a>(obj: &'a mut Value, pointer: &str) -> Option<&'a mut Map<String, Value>> {
    let t = if pointer.is_empty() {
        Some(obj)
    } else {
        obj.pointer_mut(pointer)
    };
    t.and_then(Value::as_object_mut)
}

/// Calls `f` on every workload in a document, descending into `List` items in order. Items of
/// typed lists (`DeploymentList`) may omit their kind; it is taken from the list.
pub fn for_each(doc: &mut Value, f: &mut dyn FnMut(Workload<'_>)) {
    visit(doc, None, f);
}

fn visit(obj: &mut Value, inherited: Option<(&str, &str)>, f: &mut dyn FnMut(Workload<'_>)) {
    let api_version = str_at(obj, "/apiVersion")
        .or(inherited.map(|i| i.0))
        .unwrap_or("")
        .to_string();
    let kind = str_at(obj, "/kind")
        .or(inherited.map(|i| i.1))
        .unwrap_or("")
        .to_string();
    if let Some(item_kind) = kind.strip_suffix("List") {
        if let Some(Value::Array(items)) = obj.get_mut("items") {
            let hint = (!item_kind.is_empty()).then_some((api_version.as_str(), item_kind));
            for item in items {
                visit(item, hint, f);
            }
        }
        return;
    }
    if let Some(pointer) = template_pointer(&api_version, &kind) {
        f(Workload {
            object: obj,
            pointer,
            kind,
        });
    }
}

/// What injecting one workload did.
pub enum Outcome {
    /// The template did not opt in: the object is untouched.
    Skipped,
    /// The webhook's patch was applied to the template (it may have been empty).
    Injected { warnings: Vec<String> },
}

/// Runs the webhook's core on the workload's pod and writes the result into its template.
pub fn inject(
    w: &mut Workload<'_>,
    namespace: &str,
    ctx: &Context,
    defaults: &Defaults,
) -> Result<Outcome, Denial> {
    let Some(mut pod) = w.pod() else {
        return Ok(Outcome::Skipped);
    };
    let mutation = match core::admit_json(&pod.to_string(), namespace, ctx, defaults) {
        Admission::Skip => return Ok(Outcome::Skipped),
        Admission::Deny(d) => return Err(d),
        Admission::Patch { mutation, .. } => mutation,
    };
    if !mutation.patch.is_empty() {
        json_patch::patch(&mut pod, &mutation.patch.to_json_patch())
            .map_err(|e| Denial::Internal(format!("the patch does not apply: {e}")))?;
        w.write_back(pod);
    }
    Ok(Outcome::Injected {
        warnings: mutation.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_with_pod_templates_are_found_by_group() {
        assert_eq!(
            template_pointer("apps/v1", "Deployment"),
            Some("/spec/template")
        );
        assert_eq!(
            template_pointer("batch/v1", "CronJob"),
            Some("/spec/jobTemplate/spec/template")
        );
        assert_eq!(template_pointer("v1", "PodTemplate"), Some("/template"));
        assert_eq!(
            template_pointer("apps.openshift.io/v1", "DeploymentConfig"),
            Some("/spec/template")
        );
        assert_eq!(template_pointer("v1", "Pod"), Some(""));
        assert_eq!(template_pointer("example.com/v1", "Deployment"), None);
        assert_eq!(template_pointer("v1", "ConfigMap"), None);
    }

    #[test]
    fn typed_list_items_take_the_list_kind() {
        let mut doc = json!({
            "apiVersion": "apps/v1", "kind": "DeploymentList",
            "items": [{"metadata": {"name": "a"}, "spec": {"template": {}}}]
        });
        let mut seen = Vec::new();
        for_each(&mut doc, &mut |w| seen.push(w.name("default").to_string()));
        assert_eq!(seen, vec!["Deployment default/a"]);
    }
}
