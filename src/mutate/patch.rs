//! RFC 6902 operations as the API server applies them. The core's patch is `json_patch`'s own
//! type (the engine the tests and `sbmesh inject` apply it with), so it reaches the response
//! and the offline injector without conversion; JSON pointers are escaped by `jsonptr`.

use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use jsonptr::{PointerBuf, Token};
use serde_json::{Map, Value};

use crate::pod::{Field, Pod, StrMap};

pub use json_patch::Patch;

/// A JSON pointer from unescaped tokens.
pub fn pointer<'t>(tokens: impl IntoIterator<Item = Token<'t>>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

pub fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

pub fn replace(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation { path, value })
}

/// Collects string entries for one map (labels or annotations) and emits the operations:
/// one `add` of the whole map when it is absent (parent before children), else one
/// operation per key.
pub struct MapEdits<'p> {
    /// `labels` or `annotations` under `metadata`.
    field: &'static str,
    existing: Option<&'p StrMap<'p>>,
    edits: Vec<(String, String)>,
}

impl<'p> MapEdits<'p> {
    pub fn labels(pod: &'p Pod<'p>) -> Self {
        Self::new("labels", pod.labels())
    }

    pub fn annotations(pod: &'p Pod<'p>) -> Self {
        Self::new("annotations", pod.annotations())
    }

    fn new(field: &'static str, existing: Option<&'p StrMap<'p>>) -> Self {
        Self {
            field,
            existing,
            edits: Vec::new(),
        }
    }

    /// The current string value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<std::borrow::Cow<'p, str>> {
        self.existing?.get(key)
    }

    /// Sets `key` to `value` unless it already holds exactly that.
    pub fn set(&mut self, key: &str, value: String) {
        if self.get(key).as_deref() != Some(value.as_str()) {
            self.edits.push((key.to_string(), value));
        }
    }

    pub fn into_ops(self, ops: &mut Vec<PatchOperation>) {
        if self.edits.is_empty() {
            return;
        }
        let map = [Token::new("metadata"), Token::new(self.field)];
        match self.existing {
            None => {
                let value: Map<String, Value> = self
                    .edits
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                ops.push(add(pointer(map), Value::Object(value)));
            }
            Some(existing) => {
                for (k, v) in self.edits {
                    let present = existing.contains_key(&k);
                    let path = pointer(map.iter().cloned().chain([Token::new(k)]));
                    let value = Value::String(v);
                    ops.push(if present {
                        replace(path, value)
                    } else {
                        add(path, value)
                    });
                }
            }
        }
    }
}

/// Appends `items` to the list at `at`, whose current value is `existing`: one `add` of the
/// whole list when it is absent or null, else one `add …/-` per item.
pub fn append<T>(
    ops: &mut Vec<PatchOperation>,
    existing: &Field<T>,
    at: PointerBuf,
    items: Vec<Value>,
) {
    if items.is_empty() {
        return;
    }
    if existing.is_set() {
        for value in items {
            let mut path = at.clone();
            path.push_back("-");
            ops.push(add(path, value));
        }
    } else {
        ops.push(add(at, Value::Array(items)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops_of(pod: &str, edit: impl Fn(&mut MapEdits)) -> Value {
        let pod = Pod::parse(pod).unwrap();
        let mut e = MapEdits::annotations(&pod);
        edit(&mut e);
        let mut ops = Vec::new();
        e.into_ops(&mut ops);
        serde_json::to_value(&ops).unwrap()
    }

    #[test]
    fn escapes_slash_and_tilde_in_keys() {
        let path = pointer([Token::new("metadata"), Token::new("a~b/c")]);
        assert_eq!(path.as_str(), "/metadata/a~0b~1c");
    }

    #[test]
    fn absent_map_is_added_whole_before_its_keys() {
        let pod = Pod::parse(r#"{"metadata": {}}"#).unwrap();
        let mut e = MapEdits::labels(&pod);
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
        let ops = ops_of(
            r#"{"metadata": {"annotations": {"a/b": "1", "c": "x"}}}"#,
            |e| {
                e.set("a/b", "2".into());
                e.set("c", "x".into());
                e.set("d", "y".into());
            },
        );
        assert_eq!(
            ops,
            json!([
                {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
                {"op": "add", "path": "/metadata/annotations/d", "value": "y"}
            ])
        );
    }
}
