//! RFC 6902 operations as the API server applies them, and JSON-pointer building.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

/// One JSON Patch operation. sbmesh only ever adds, and replaces the few annotation values
/// the contract lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add { path: String, value: Value },
    Replace { path: String, value: Value },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Add { path, .. } | Op::Replace { path, .. } => path,
        }
    }
}

/// Walks object keys from `v` without allocating (unlike `Value::pointer`, which unescapes
/// every token into a new String). Keys are given unescaped.
pub fn at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(v, |v, k| v.as_object()?.get(*k))
}

/// Escapes one reference token: `~` → `~0`, `/` → `~1` (RFC 6901).
pub fn escape(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Collects string entries for one map (labels or annotations) and emits the operations:
/// one `add` of the whole map when it is absent (parent before children), else one
/// operation per key.
pub struct MapEdits<'a> {
    /// JSON pointer of the map, e.g. `/metadata/labels`.
    pointer: &'static str,
    existing: Option<&'a Map<String, Value>>,
    edits: Vec<(String, String)>,
}

impl<'a> MapEdits<'a> {
    /// The map `metadata.<field>` of the pod (`labels` or `annotations`).
    pub fn metadata(pod: &'a Value, field: &'static str) -> Self {
        let pointer = match field {
            "labels" => "/metadata/labels",
            _ => "/metadata/annotations",
        };
        Self {
            pointer,
            existing: at(pod, &["metadata", field]).and_then(Value::as_object),
            edits: Vec::new(),
        }
    }

    /// The current string value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.existing?.get(key)?.as_str()
    }

    /// Sets `key` to `value` unless it already holds exactly that.
    pub fn set(&mut self, key: &str, value: String) {
        if self.get(key) != Some(value.as_str()) {
            self.edits.push((key.to_string(), value));
        }
    }

    pub fn into_ops(self, ops: &mut Vec<Op>) {
        if self.edits.is_empty() {
            return;
        }
        match self.existing {
            None => {
                let map: Map<String, Value> = self
                    .edits
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                ops.push(Op::Add {
                    path: self.pointer.to_string(),
                    value: Value::Object(map),
                });
            }
            Some(existing) => {
                for (k, v) in self.edits {
                    let path = format!("{}/{}", self.pointer, escape(&k));
                    let value = Value::String(v);
                    ops.push(if existing.contains_key(&k) {
                        Op::Replace { path, value }
                    } else {
                        Op::Add { path, value }
                    });
                }
            }
        }
    }
}

/// Appends `items` to the list at `pointer`, whose current value is `existing`: one `add` of
/// the whole list when it is absent, else one `add …/-` per item.
pub fn append(ops: &mut Vec<Op>, existing: Option<&Value>, pointer: String, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if existing.is_some_and(|v| !v.is_null()) {
        for value in items {
            ops.push(Op::Add {
                path: format!("{pointer}/-"),
                value,
            });
        }
    } else {
        ops.push(Op::Add {
            path: pointer,
            value: Value::Array(items),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_slash_and_tilde_in_keys() {
        assert_eq!(escape("sbmesh.io/status"), "sbmesh.io~1status");
        assert_eq!(escape("a~b/c"), "a~0b~1c");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn absent_map_is_added_whole_before_its_keys() {
        let pod = json!({"metadata": {}});
        let mut e = MapEdits::metadata(&pod, "labels");
        e.set("azure.workload.identity/use", "true".into());
        let mut ops = Vec::new();
        e.into_ops(&mut ops);
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([{"op": "add", "path": "/metadata/labels", "value": {"azure.workload.identity/use": "true"}}])
        );
    }

    #[test]
    fn existing_key_is_replaced_and_same_value_is_left_alone() {
        let pod = json!({"metadata": {"annotations": {"a/b": "1", "c": "x"}}});
        let mut e = MapEdits::metadata(&pod, "annotations");
        e.set("a/b", "2".into());
        e.set("c", "x".into());
        e.set("d", "y".into());
        let mut ops = Vec::new();
        e.into_ops(&mut ops);
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([
                {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
                {"op": "add", "path": "/metadata/annotations/d", "value": "y"}
            ])
        );
    }
}
