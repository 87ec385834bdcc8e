//! The core's patch: RFC 6902 operations (sbmesh only adds, and replaces the few annotation
//! values the contract lists) whose values are sbmesh's own shapes, written straight to JSON
//! without building a `serde_json::Value` tree. [`Patch::to_json_patch`] gives the same
//! operations as `json_patch`'s types, for the callers that apply them (`sbmesh inject`, tests).

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct, Serializer};

use crate::pod::{Field, Pod, StrMap};

use super::identity::{MOUNT_PATH, TOKEN_AUDIENCE, TOKEN_PATH, VOLUME_NAME};

/// A JSON Patch document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Patch(pub Vec<Op>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Add,
    Replace,
}

/// One operation: `{"op", "path", "value"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub kind: Kind,
    /// The JSON pointer, escaped (RFC 6901).
    pub path: String,
    pub value: Value,
}

/// The values sbmesh writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    /// A map of strings (labels or annotations), in order.
    Strings(Vec<(String, String)>),
    /// An env entry `{"name", "value"}`.
    Env {
        name: &'static str,
        value: String,
    },
    /// The read-only mount of the token volume.
    Mount,
    /// The projected token volume.
    Volume {
        expiration_seconds: u32,
    },
    List(Vec<Value>),
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The JSON document, as the response carries it (before base64).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 * self.0.len());
        // Writing strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        out
    }

    /// The same operations as `json_patch`'s types, to apply with its engine.
    pub fn to_json_patch(&self) -> json_patch::Patch {
        json_patch::Patch(
            self.0
                .iter()
                .map(|op| {
                    // Our paths are escaped when built; parsing cannot fail for them, and an
                    // unparsable one would be a bug that the engine reports as a bad path.
                    let path = json_patch::jsonptr::PointerBuf::parse(op.path.as_str())
                        .unwrap_or_default();
                    let value = serde_json::to_value(&op.value).unwrap_or_default();
                    match op.kind {
                        Kind::Add => json_patch::PatchOperation::Add(json_patch::AddOperation {
                            path,
                            value,
                        }),
                        Kind::Replace => {
                            json_patch::PatchOperation::Replace(json_patch::ReplaceOperation {
                                path,
                                value,
                            })
                        }
                    }
                })
                .collect(),
        )
    }
}

impl Serialize for Patch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for op in &self.0 {
            seq.serialize_element(op)?;
        }
        seq.end()
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Op", 3)?;
        m.serialize_field(
            "op",
            match self.kind {
                Kind::Add => "add",
                Kind::Replace => "replace",
            },
        )?;
        m.serialize_field("path", &self.path)?;
        m.serialize_field("value", &self.value)?;
        m.end()
    }
}

#[derive(Serialize)]
struct EnvOut<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MountOut {
    name: &'static str,
    mount_path: &'static str,
    read_only: bool,
}

#[derive(Serialize)]
struct VolumeOut {
    name: &'static str,
    projected: Projected,
}

#[derive(Serialize)]
struct Projected {
    sources: [Source; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Source {
    service_account_token: Token,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Token {
    audience: &'static str,
    expiration_seconds: u32,
    path: &'static str,
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::String(v) => s.serialize_str(v),
            Value::Strings(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Value::Env { name, value } => EnvOut { name, value }.serialize(s),
            Value::Mount => MountOut {
                name: VOLUME_NAME,
                mount_path: MOUNT_PATH,
                read_only: true,
            }
            .serialize(s),
            Value::Volume { expiration_seconds } => VolumeOut {
                name: VOLUME_NAME,
                projected: Projected {
                    sources: [Source {
                        service_account_token: Token {
                            audience: TOKEN_AUDIENCE,
                            expiration_seconds: *expiration_seconds,
                            path: TOKEN_PATH,
                        },
                    }],
                },
            }
            .serialize(s),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

/// Appends one unescaped reference token to a JSON pointer: `~` → `~0`, `/` → `~1` (RFC 6901).
pub fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// Collects string entries for one map (labels or annotations) and emits the operations:
/// one `add` of the whole map when it is absent (parent before children), else one
/// operation per key.
pub struct MapEdits<'p> {
    /// `/metadata/labels` or `/metadata/annotations`.
    pointer: &'static str,
    existing: Option<&'p StrMap<'p>>,
    edits: Vec<(String, String)>,
}

impl<'p> MapEdits<'p> {
    pub fn labels(pod: &'p Pod<'p>) -> Self {
        Self::new("/metadata/labels", pod.labels())
    }

    pub fn annotations(pod: &'p Pod<'p>) -> Self {
        Self::new("/metadata/annotations", pod.annotations())
    }

    fn new(pointer: &'static str, existing: Option<&'p StrMap<'p>>) -> Self {
        Self {
            pointer,
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

    pub fn into_ops(self, ops: &mut Vec<Op>) {
        if self.edits.is_empty() {
            return;
        }
        match self.existing {
            None => ops.push(Op {
                kind: Kind::Add,
                path: self.pointer.to_string(),
                value: Value::Strings(self.edits),
            }),
            Some(existing) => {
                for (k, v) in self.edits {
                    let mut path = String::with_capacity(self.pointer.len() + k.len() + 4);
                    path.push_str(self.pointer);
                    push_token(&mut path, &k);
                    ops.push(Op {
                        kind: if existing.contains_key(&k) {
                            Kind::Replace
                        } else {
                            Kind::Add
                        },
                        path,
                        value: Value::String(v),
                    });
                }
            }
        }
    }
}

/// Appends `items` to the list at `pointer`, whose current value is `existing`: one `add` of
/// the whole list when it is absent or null, else one `add …/-` per item.
pub fn append<T>(ops: &mut Vec<Op>, existing: &Field<T>, pointer: String, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if existing.is_set() {
        for value in items {
            ops.push(Op {
                kind: Kind::Add,
                path: format!("{pointer}/-"),
                value,
            });
        }
    } else {
        ops.push(Op {
            kind: Kind::Add,
            path: pointer,
            value: Value::List(items),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops_of(pod: &str, edit: impl Fn(&mut MapEdits)) -> serde_json::Value {
        let pod = Pod::parse(pod).unwrap();
        let mut e = MapEdits::annotations(&pod);
        edit(&mut e);
        let mut ops = Vec::new();
        e.into_ops(&mut ops);
        serde_json::to_value(Patch(ops)).unwrap()
    }

    #[test]
    fn escapes_slash_and_tilde_in_keys() {
        let mut p = String::from("/metadata/annotations");
        push_token(&mut p, "a~b/c");
        assert_eq!(p, "/metadata/annotations/a~0b~1c");
    }

    #[test]
    fn absent_map_is_added_whole_before_its_keys() {
        let pod = Pod::parse(r#"{"metadata": {}}"#).unwrap();
        let mut e = MapEdits::labels(&pod);
        e.set("azure.workload.identity/use", "true".into());
        let mut ops = Vec::new();
        e.into_ops(&mut ops);
        assert_eq!(
            serde_json::to_value(Patch(ops)).unwrap(),
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

    #[test]
    fn values_are_written_as_the_pod_fields_they_stand_for() {
        let patch = Patch(vec![
            Op {
                kind: Kind::Add,
                path: "/spec/volumes/-".into(),
                value: Value::Volume {
                    expiration_seconds: 3600,
                },
            },
            Op {
                kind: Kind::Add,
                path: "/spec/containers/0/volumeMounts".into(),
                value: Value::List(vec![Value::Mount]),
            },
            Op {
                kind: Kind::Add,
                path: "/spec/containers/0/env/-".into(),
                value: Value::Env {
                    name: "A",
                    value: "\"quoted\"".into(),
                },
            },
        ]);
        let text = String::from_utf8(patch.to_json()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"[{"op":"add","path":"/spec/volumes/-","value":{"name":"sbmesh-azure-identity-token","#,
                r#""projected":{"sources":[{"serviceAccountToken":{"audience":"api://AzureADTokenExchange","#,
                r#""expirationSeconds":3600,"path":"azure-identity-token"}}]}}},"#,
                r#"{"op":"add","path":"/spec/containers/0/volumeMounts","value":[{"name":"sbmesh-azure-identity-token","#,
                r#""mountPath":"/var/run/secrets/azure/tokens","readOnly":true}]},"#,
                r#"{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"A","value":"\"quoted\""}}]"#
            )
        );
        // The engine's types carry the same document.
        assert_eq!(
            serde_json::to_value(patch.to_json_patch()).unwrap(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        );
    }
}
