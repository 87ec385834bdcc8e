//! The core's patch: RFC 6902 operations (sbmesh only adds, and replaces the few annotation
//! and label values the contract lists) whose values are sbmesh's own shapes, written straight to JSON
//! without building a `serde_json::Value` tree. [`Patch::to_json_patch`] gives the same
//! operations as `json_patch`'s types, for the callers that apply them (`sbmesh inject`, tests).

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
    /// An env entry from the downward API: `{"name", "valueFrom": {"fieldRef": {"fieldPath"}}}`.
    EnvFieldRef {
        name: &'static str,
        field_path: &'static str,
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

    /// The JSON document, as the response carries it (before base64): written by hand, as
    /// `serde_json` would write the same document, because this runs on every admission.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 * self.0.len());
        out.push(b'[');
        for (i, op) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(match op.kind {
                Kind::Add => br#"{"op":"add","path":"#,
                Kind::Replace => br#"{"op":"replace","path":"#,
            });
            json_str(&mut out, &op.path);
            out.extend_from_slice(br#","value":"#);
            op.value.write_json(&mut out);
            out.push(b'}');
        }
        out.push(b']');
        out
    }

    /// The same operations as `json_patch`'s types, to apply with its engine.
    pub fn to_json_patch(&self) -> json_patch::Patch {
        json_patch::Patch(
            self.0
                .iter()
                .map(|op| {
                    // Our paths are escaped when built; an unparsable one would be a bug, which
                    // the engine then reports as a path that does not exist.
                    let path = json_patch::jsonptr::PointerBuf::parse(op.path.as_str())
                        .unwrap_or_default();
                    let value = op.value.to_value();
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

/// Writes a JSON string. Most of sbmesh's strings need no escaping, which a word-at-a-time
/// scan tells; the others are escaped by `serde_json`, so the output is always its output.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether JSON must escape any byte: a control character, `"` or `\\`. Eight bytes at a time
/// (the classic "has a byte less than / equal to" bit tricks), then the tail byte by byte.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        // A byte below 0x20 (high bit clear), or equal to '"' or '\\'.
        let below = v.wrapping_sub(ONES * 0x20) & !v & HIGH != 0;
        if below
            || has_zero(v ^ (ONES * u64::from(b'"')))
            || has_zero(v ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

const MOUNT_JSON: &str = concat!(
    r#"{"name":"sbmesh-azure-identity-token","mountPath":"/var/run/secrets/azure/tokens","#,
    r#""readOnly":true}"#
);
const VOLUME_JSON: [&str; 2] = [
    concat!(
        r#"{"name":"sbmesh-azure-identity-token","projected":{"sources":[{"serviceAccountToken":"#,
        r#"{"audience":"api://AzureADTokenExchange","expirationSeconds":"#
    ),
    r#","path":"azure-identity-token"}}]}}"#,
];

impl Value {
    /// The name of an env entry.
    pub fn env_name(&self) -> Option<&'static str> {
        match self {
            Value::Env { name, .. } | Value::EnvFieldRef { name, .. } => Some(name),
            _ => None,
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::String(v) => json_str(out, v),
            Value::Strings(entries) => {
                out.push(b'{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_str(out, k);
                    out.push(b':');
                    json_str(out, v);
                }
                out.push(b'}');
            }
            Value::Env { name, value } => {
                out.extend_from_slice(br#"{"name":"#);
                json_str(out, name);
                out.extend_from_slice(br#","value":"#);
                json_str(out, value);
                out.push(b'}');
            }
            Value::EnvFieldRef { name, field_path } => {
                out.extend_from_slice(br#"{"name":"#);
                json_str(out, name);
                out.extend_from_slice(br#","valueFrom":{"fieldRef":{"fieldPath":"#);
                json_str(out, field_path);
                out.extend_from_slice(b"}}}");
            }
            Value::Mount => out.extend_from_slice(MOUNT_JSON.as_bytes()),
            Value::Volume { expiration_seconds } => {
                out.extend_from_slice(VOLUME_JSON[0].as_bytes());
                out.extend_from_slice(expiration_seconds.to_string().as_bytes());
                out.extend_from_slice(VOLUME_JSON[1].as_bytes());
            }
            Value::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
        }
    }

    /// The value as a `serde_json::Value`, for the patch engine.
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::{Value as J, json};
        match self {
            Value::String(v) => J::String(v.clone()),
            Value::Strings(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), J::String(v.clone())))
                    .collect(),
            ),
            Value::Env { name, value } => json!({"name": name, "value": value}),
            Value::EnvFieldRef { name, field_path } => {
                json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}})
            }
            Value::Mount => json!({"name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": true}),
            Value::Volume { expiration_seconds } => json!({
                "name": VOLUME_NAME,
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": TOKEN_AUDIENCE,
                    "expirationSeconds": expiration_seconds,
                    "path": TOKEN_PATH,
                }}]}
            }),
            Value::List(items) => J::Array(items.iter().map(Value::to_value).collect()),
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
            let mut path = String::with_capacity(pointer.len() + 2);
            path.push_str(&pointer);
            path.push_str("/-");
            ops.push(Op {
                kind: Kind::Add,
                path,
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
        serde_json::from_slice::<serde_json::Value>(&Patch(ops).to_json()).unwrap()
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
            serde_json::from_slice::<serde_json::Value>(&Patch(ops).to_json()).unwrap(),
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
            Op {
                kind: Kind::Add,
                path: "/spec/containers/0/env/-".into(),
                value: Value::EnvFieldRef {
                    name: "SBMESH_POD_NAME",
                    field_path: "metadata.name",
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
                r#"{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"A","value":"\"quoted\""}},"#,
                r#"{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"SBMESH_POD_NAME","#,
                r#""valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}}]"#
            )
        );
        // The engine's types carry the same document, byte for byte as serde_json writes it.
        assert_eq!(serde_json::to_string(&patch.to_json_patch()).unwrap(), text);
    }

    #[test]
    fn hand_written_json_is_serde_json_byte_for_byte() {
        let tricky = [
            "",
            "exactly8",
            "seven\"7",
            "sixteen bytes ok",
            "fifteen bytes\\x",
            "0123456789abcdef\u{1f}",
            "plain",
            "quote \" and backslash \\",
            "tab\tnewline\ncontrol \u{1}\u{1f}",
            "del \u{7f} é ü 漢 🦀",
            "{\"json\":\"inside\"}",
        ];
        for t in tricky {
            let patch = Patch(vec![
                Op {
                    kind: Kind::Replace,
                    path: format!("/metadata/annotations/{t}"),
                    value: Value::String(t.to_string()),
                },
                Op {
                    kind: Kind::Add,
                    path: "/metadata/labels".into(),
                    value: Value::Strings(vec![(t.to_string(), t.to_string())]),
                },
                Op {
                    kind: Kind::Add,
                    path: "/spec/containers/0/env".into(),
                    value: Value::List(vec![Value::Env {
                        name: "X",
                        value: t.to_string(),
                    }]),
                },
            ]);
            let ours = String::from_utf8(patch.to_json()).unwrap();
            assert_eq!(
                ours,
                serde_json::to_string(&patch.to_json_patch()).unwrap(),
                "{t:?}"
            );
        }
    }
}
