//! A read-only view of a pod over its raw JSON: the one way the contract and the mutation read
//! a pod. Only the fields sbmesh reads are parsed (strings borrowed from the request body unless
//! they hold escapes); every other subtree is skipped without building anything. A field of an
//! unexpected JSON type is recorded as such, never an error here: the contract decides what a
//! malformed pod means (most of the time, nothing: only what sbmesh touches must be well-formed).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The JSON type of a value, for messages ("a list", "an object", …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Null,
    Bool,
    Number,
    String,
    List,
    Object,
}

impl JsonType {
    pub fn of(v: &serde_json::Value) -> Self {
        use serde_json::Value as V;
        match v {
            V::Null => Self::Null,
            V::Bool(_) => Self::Bool,
            V::Number(_) => Self::Number,
            V::String(_) => Self::String,
            V::Array(_) => Self::List,
            V::Object(_) => Self::Object,
        }
    }

    /// The type of a raw JSON value, from its first character.
    pub fn of_raw(raw: &RawValue) -> Self {
        match raw.get().trim_start().as_bytes().first() {
            Some(b'n') => Self::Null,
            Some(b't' | b'f') => Self::Bool,
            Some(b'"') => Self::String,
            Some(b'[') => Self::List,
            Some(b'{') => Self::Object,
            _ => Self::Number,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::List => "a list",
            Self::Object => "an object",
        }
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A field as found: absent, `null`, of the expected type, or of another type.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Is(T),
    Wrong(JsonType),
}

impl<T> Field<T> {
    /// The value when it has the expected type.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Is(v) => Some(v),
            _ => None,
        }
    }

    /// Absent or null is `Ok(None)`; another type is `Err` with that type.
    pub fn optional(&self) -> Result<Option<&T>, JsonType> {
        match self {
            Field::Absent | Field::Null => Ok(None),
            Field::Is(v) => Ok(Some(v)),
            Field::Wrong(t) => Err(*t),
        }
    }

    /// Whether the field holds a value other than `null`.
    pub fn is_set(&self) -> bool {
        matches!(self, Field::Is(_) | Field::Wrong(_))
    }
}

/// A JSON string, borrowed from the body when it has no escapes.
pub type Str<'a> = Cow<'a, str>;

/// The string a raw JSON value holds, if it is one.
pub fn raw_str(raw: &RawValue) -> Option<Str<'_>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The pod sbmesh sees: `metadata` and `spec`.
#[derive(Debug, Clone, Default)]
pub struct Pod<'a> {
    pub metadata: Field<Metadata<'a>>,
    pub spec: Field<Spec<'a>>,
}

#[derive(Debug, Clone, Default)]
pub struct Metadata<'a> {
    pub name: Option<Str<'a>>,
    pub generate_name: Option<Str<'a>>,
    pub namespace: Option<Str<'a>>,
    pub labels: Field<StrMap<'a>>,
    pub annotations: Field<StrMap<'a>>,
}

#[derive(Debug, Clone, Default)]
pub struct Spec<'a> {
    pub service_account_name: Option<Str<'a>>,
    pub service_account: Option<Str<'a>>,
    pub host_network: Option<bool>,
    pub init_containers: Field<Vec<Container<'a>>>,
    pub containers: Field<Vec<Container<'a>>>,
    pub ephemeral_containers: Field<Vec<Container<'a>>>,
    pub volumes: Field<Vec<&'a RawValue>>,
}

/// A container, init container or ephemeral container. An entry that is not an object has
/// every field absent.
#[derive(Debug, Clone, Default)]
pub struct Container<'a> {
    pub name: Field<Str<'a>>,
    pub env: Field<Vec<Env<'a>>>,
    pub volume_mounts: Field<Vec<Mount<'a>>>,
}

/// An env entry: its name, its `value` when that is a string, and whether it has a
/// `valueFrom` other than null.
#[derive(Debug, Clone, Default)]
pub struct Env<'a> {
    pub name: Option<Str<'a>>,
    pub value: Option<Str<'a>>,
    pub value_from: bool,
}

/// A volume mount: the fields sbmesh compares, and whether it has any other field.
#[derive(Debug, Clone, Default)]
pub struct Mount<'a> {
    pub is_object: bool,
    pub name: Option<Str<'a>>,
    pub mount_path: Option<Str<'a>>,
    pub read_only: Option<bool>,
    pub other_fields: bool,
}

/// A map of strings (labels, annotations) in document order, values kept raw so that a
/// non-string value can be quoted in a message. A repeated key keeps its first place and its
/// last value, as `serde_json`'s ordered map does.
#[derive(Debug, Clone, Default)]
pub struct StrMap<'a> {
    entries: Vec<(Str<'a>, &'a RawValue)>,
}

impl<'a> StrMap<'a> {
    /// The raw value of `key`.
    pub fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The string value of `key`; `None` when absent or not a string.
    pub fn get(&self, key: &str) -> Option<Str<'a>> {
        self.raw(key).and_then(raw_str)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn push(&mut self, key: Str<'a>, value: &'a RawValue) {
        self.entries.push((key, value));
    }

    /// Folds repeated keys: first place, last value.
    fn dedupe(&mut self) {
        let n = self.entries.len();
        let repeated = if n <= 16 {
            (1..n).any(|i| {
                self.entries[..i]
                    .iter()
                    .any(|(k, _)| *k == self.entries[i].0)
            })
        } else {
            let mut seen = HashSet::with_capacity(n);
            !self.entries.iter().all(|(k, _)| seen.insert(k.as_ref()))
        };
        if !repeated {
            return;
        }
        let mut out: Vec<(Str<'a>, &'a RawValue)> = Vec::with_capacity(n);
        let mut index: std::collections::HashMap<Str<'a>, usize> =
            std::collections::HashMap::with_capacity(n);
        for (k, v) in self.entries.drain(..) {
            match index.get(&k) {
                Some(&i) => out[i].1 = v,
                None => {
                    index.insert(k.clone(), out.len());
                    out.push((k, v));
                }
            }
        }
        self.entries = out;
    }
}

/// Why a body is not a pod view: it is not JSON.
pub type ParseError = serde_json::Error;

impl<'a> Pod<'a> {
    /// Reads a pod from JSON text. Only invalid JSON is an error; a JSON value that is not an
    /// object gives a pod with neither metadata nor spec.
    pub fn parse(json: &'a str) -> Result<Pod<'a>, ParseError> {
        match serde_json::from_str::<Field<Pod<'a>>>(json)? {
            Field::Is(pod) => Ok(pod),
            _ => Ok(Pod::default()),
        }
    }

    pub fn metadata(&self) -> Option<&Metadata<'a>> {
        self.metadata.get()
    }

    pub fn spec(&self) -> Option<&Spec<'a>> {
        self.spec.get()
    }

    /// The pod's annotations; `None` when absent or not an object.
    pub fn annotations(&self) -> Option<&StrMap<'a>> {
        self.metadata()?.annotations.get()
    }

    /// The pod's labels; `None` when absent or not an object.
    pub fn labels(&self) -> Option<&StrMap<'a>> {
        self.metadata()?.labels.get()
    }

    /// The string value of an annotation.
    pub fn annotation(&self, key: &str) -> Option<Str<'a>> {
        self.annotations()?.get(key)
    }

    /// The string value of a label.
    pub fn label(&self, key: &str) -> Option<Str<'a>> {
        self.labels()?.get(key)
    }

    /// The pod's ServiceAccount name (`default` when unset or empty).
    pub fn service_account_name(&self) -> &str {
        let spec = self.spec();
        spec.and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                spec.and_then(|s| s.service_account.as_deref())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("default")
    }

    /// `metadata.namespace`, when set and not empty.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata()?
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
    }

    /// The pod's name, else its generateName, for logs; empty when neither is set.
    pub fn display_name(&self) -> &str {
        let Some(m) = self.metadata() else { return "" };
        m.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(m.generate_name.as_deref())
            .unwrap_or("")
    }
}

impl Env<'_> {
    pub fn named(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }
}

/// The name of a raw volume, if it is an object with a string `name`.
pub fn volume_name(raw: &RawValue) -> Option<Str<'_>> {
    #[derive(Deserialize)]
    struct Named<'a> {
        #[serde(borrow, default)]
        name: Option<&'a RawValue>,
    }
    if JsonType::of_raw(raw) != JsonType::Object {
        return None;
    }
    let named: Named<'_> = serde_json::from_str(raw.get()).ok()?;
    named.name.and_then(raw_str)
}

// ---------------------------------------------------------------------------------------------
// Deserialization: one pass, lenient about types, skipping what is not read.

/// An object type read field by field from a JSON map.
trait FromMap<'de>: Sized + Default {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error>;

    fn finish(&mut self) {}
}

/// Reads a JSON map into `T` and lets any other type through as `Wrong`.
impl<'de, T: FromMap<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(std::marker::PhantomData::<T>))
    }
}

/// A list whose items are read with `T`'s own lenient reading.
impl<'de, T: Item<'de>> Deserialize<'de> for Field<Vec<T>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor(std::marker::PhantomData::<T>))
    }
}

struct FieldVisitor<T>(std::marker::PhantomData<T>);

/// Consumes the rest of a value of the wrong type and records its type.
macro_rules! wrong_types {
    ($out:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok(Field::Wrong(JsonType::Bool))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok(Field::Wrong(JsonType::Number))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok(Field::Wrong(JsonType::Number))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok(Field::Wrong(JsonType::Number))
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok(Field::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<$out, E> {
            Ok(Field::Null)
        }
    };
}

impl<'de, T: FromMap<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    wrong_types!(Field<T>);

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Field<T>, E> {
        Ok(Field::Wrong(JsonType::String))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Wrong(JsonType::List))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<T>, A::Error> {
        let mut out = T::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            out.field(key.0, &mut map)?;
        }
        out.finish();
        Ok(Field::Is(out))
    }
}

/// A list item: read leniently, whatever its JSON type.
trait Item<'de>: Sized {
    fn read<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

struct ItemSeed<T>(std::marker::PhantomData<T>);

impl<'de, T: Item<'de>> DeserializeSeed<'de> for ItemSeed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::read(d)
    }
}

struct ListVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Item<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Field<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    wrong_types!(Field<Vec<T>>);

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Field::Wrong(JsonType::String))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Wrong(JsonType::Object))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(ItemSeed::<T>(std::marker::PhantomData))? {
            out.push(item);
        }
        Ok(Field::Is(out))
    }
}

/// Objects as list items: a non-object item reads as the default (every field absent).
macro_rules! object_item {
    ($t:ident) => {
        impl<'de: 'a, 'a> Item<'de> for $t<'a> {
            fn read<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(match Field::<$t<'a>>::deserialize(d)? {
                    Field::Is(v) => v,
                    _ => $t::default(),
                })
            }
        }
    };
}
object_item!(Container);
object_item!(Env);

impl<'de: 'a, 'a> Item<'de> for Mount<'a> {
    fn read<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Field::<Mount<'a>>::deserialize(d)? {
            Field::Is(mut m) => {
                m.is_object = true;
                m
            }
            _ => Mount::default(),
        })
    }
}

impl<'de: 'a, 'a> Item<'de> for &'a RawValue {
    fn read<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Str<'a>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Key)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
        Ok(Cow::Owned(v))
    }
}

/// A string field: the string, or `Wrong`/`Null` for anything else.
impl<'de: 'a, 'a> Deserialize<'de> for Field<Str<'a>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<Str<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            wrong_types!(Field<Str<'de>>);
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Is(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Is(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Is(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Wrong(JsonType::List))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Wrong(JsonType::Object))
            }
        }
        d.deserialize_any(V).map(|f| match f {
            Field::Is(s) => Field::Is(s),
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Wrong(t) => Field::Wrong(t),
        })
    }
}

/// A boolean field; anything else reads as `None`.
fn loose_bool<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<bool>, A::Error> {
    Ok(match map.next_value::<&'de RawValue>()?.get().trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    })
}

/// A string field; anything else reads as `None`.
fn loose_str<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Str<'de>>, A::Error> {
    Ok(match map.next_value::<Field<Str<'de>>>()? {
        Field::Is(s) => Some(s),
        _ => None,
    })
}

fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

impl<'de: 'a, 'a> FromMap<'de> for Pod<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error> {
        match key.as_ref() {
            "metadata" => self.metadata = map.next_value()?,
            "spec" => self.spec = map.next_value()?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> FromMap<'de> for Metadata<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error> {
        match key.as_ref() {
            "name" => self.name = loose_str(map)?,
            "generateName" => self.generate_name = loose_str(map)?,
            "namespace" => self.namespace = loose_str(map)?,
            "labels" => self.labels = map.next_value()?,
            "annotations" => self.annotations = map.next_value()?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> FromMap<'de> for Spec<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error> {
        match key.as_ref() {
            "serviceAccountName" => self.service_account_name = loose_str(map)?,
            "serviceAccount" => self.service_account = loose_str(map)?,
            "hostNetwork" => self.host_network = loose_bool(map)?,
            "initContainers" => self.init_containers = map.next_value()?,
            "containers" => self.containers = map.next_value()?,
            "ephemeralContainers" => self.ephemeral_containers = map.next_value()?,
            "volumes" => self.volumes = map.next_value()?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> FromMap<'de> for Container<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error> {
        match key.as_ref() {
            "name" => self.name = map.next_value()?,
            "env" => self.env = map.next_value()?,
            "volumeMounts" => self.volume_mounts = map.next_value()?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> FromMap<'de> for Env<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error> {
        match key.as_ref() {
            "name" => self.name = loose_str(map)?,
            "value" => self.value = loose_str(map)?,
            "valueFrom" => {
                self.value_from = map.next_value::<&'de RawValue>()?.get().trim() != "null"
            }
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> FromMap<'de> for Mount<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error> {
        match key.as_ref() {
            "name" => self.name = loose_str(map)?,
            "mountPath" => self.mount_path = loose_str(map)?,
            "readOnly" => self.read_only = loose_bool(map)?,
            _ => {
                self.other_fields = true;
                skip(map)?
            }
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> FromMap<'de> for StrMap<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: Str<'de>, map: &mut A) -> Result<(), A::Error> {
        let value = map.next_value::<&'de RawValue>()?;
        self.push(key, value);
        Ok(())
    }

    fn finish(&mut self) {
        self.dedupe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed_and_with_escapes_decoded() {
        let json = r#"{"metadata": {"name": "orders-1", "annotations": {"a": "plain", "b": "tab\there"}}}"#;
        let pod = Pod::parse(json).unwrap();
        let m = pod.metadata().unwrap();
        assert!(matches!(m.name, Some(Cow::Borrowed("orders-1"))));
        assert!(matches!(pod.annotation("a"), Some(Cow::Borrowed("plain"))));
        assert_eq!(pod.annotation("b").as_deref(), Some("tab\there"));
        assert!(matches!(pod.annotation("b"), Some(Cow::Owned(_))));
    }

    #[test]
    fn fields_of_another_type_are_recorded_not_errors() {
        let json = r#"{"metadata": "x", "spec": {"containers": {"a": 1}, "volumes": 3,
            "initContainers": [7, {"name": 1, "env": "no"}]}}"#;
        let pod = Pod::parse(json).unwrap();
        assert!(matches!(pod.metadata, Field::Wrong(JsonType::String)));
        let spec = pod.spec().unwrap();
        assert_eq!(spec.containers.optional().err(), Some(JsonType::Object));
        assert_eq!(spec.volumes.optional().err(), Some(JsonType::Number));
        let init = spec.init_containers.get().unwrap();
        assert_eq!(init.len(), 2);
        assert_eq!(init[0].name, Field::Absent);
        assert_eq!(init[1].name, Field::Wrong(JsonType::Number));
        assert_eq!(init[1].env.optional().err(), Some(JsonType::String));
    }

    #[test]
    fn null_and_absent_lists_are_no_list() {
        let pod = Pod::parse(r#"{"spec": {"containers": null}}"#).unwrap();
        let spec = pod.spec().unwrap();
        assert_eq!(spec.containers.optional().map(|c| c.is_none()), Ok(true));
        assert_eq!(spec.volumes.optional().map(|c| c.is_none()), Ok(true));
        assert!(!spec.containers.is_set());
    }

    #[test]
    fn repeated_keys_keep_first_place_and_last_value() {
        let pod =
            Pod::parse(r#"{"metadata": {"labels": {"a": "1", "b": "2", "a": "3"}}}"#).unwrap();
        let labels = pod.labels().unwrap();
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(labels.get("a").as_deref(), Some("3"));
        // The same past the short-map path.
        let many: Vec<String> = (0..40)
            .map(|i| format!("\"k{}\": \"{i}\"", i % 20))
            .collect();
        let json = format!(r#"{{"metadata": {{"labels": {{{}}}}}}}"#, many.join(","));
        let pod = Pod::parse(&json).unwrap();
        let labels = pod.labels().unwrap();
        assert_eq!(labels.len(), 20);
        assert_eq!(labels.get("k0").as_deref(), Some("20"));
    }

    #[test]
    fn env_and_mount_entries_read_what_sbmesh_compares() {
        let json = r#"{"spec": {"containers": [{"name": "app",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"x": 1}},
                    {"name": "C", "valueFrom": null}, "junk"],
            "volumeMounts": [{"name": "v", "mountPath": "/p", "readOnly": true},
                             {"name": "w", "mountPath": "/q", "subPath": "s"}]}]}}"#;
        let pod = Pod::parse(json).unwrap();
        let c = &pod.spec().unwrap().containers.get().unwrap()[0];
        let env = c.env.get().unwrap();
        assert_eq!(env[0].value.as_deref(), Some("1"));
        assert!(env[1].value_from && !env[2].value_from);
        assert!(env[3].name.is_none());
        let mounts = c.volume_mounts.get().unwrap();
        assert!(
            mounts[0].is_object && !mounts[0].other_fields && mounts[0].read_only == Some(true)
        );
        assert!(mounts[1].other_fields);
    }

    #[test]
    fn unread_subtrees_are_skipped_at_any_depth() {
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        let json = format!(r#"{{"metadata": {{"name": "p", "x": {deep}}}, "status": {deep}}}"#);
        let pod = Pod::parse(&json).unwrap();
        assert_eq!(pod.display_name(), "p");
    }

    #[test]
    fn a_pod_that_is_not_an_object_has_no_parts() {
        let pod = Pod::parse("[1, 2]").unwrap();
        assert!(pod.metadata().is_none() && pod.spec().is_none());
        assert_eq!(pod.service_account_name(), "default");
        assert!(Pod::parse("{").is_err());
    }

    #[test]
    fn service_account_falls_back_to_the_deprecated_field_then_default() {
        let name = |json: &str| Pod::parse(json).unwrap().service_account_name().to_string();
        assert_eq!(
            name(r#"{"spec": {"serviceAccountName": "a", "serviceAccount": "b"}}"#),
            "a"
        );
        assert_eq!(
            name(r#"{"spec": {"serviceAccountName": "", "serviceAccount": "b"}}"#),
            "b"
        );
        assert_eq!(name(r#"{"spec": {"serviceAccountName": 3}}"#), "default");
    }

    #[test]
    fn raw_strings_and_volume_names() {
        let raw: &RawValue = serde_json::from_str(r#""a\"b""#).unwrap();
        assert_eq!(raw_str(raw).as_deref(), Some("a\"b"));
        let raw: &RawValue = serde_json::from_str("12").unwrap();
        assert_eq!(raw_str(raw), None);
        let raw: &RawValue = serde_json::from_str(r#"{"name": "v", "emptyDir": {}}"#).unwrap();
        assert_eq!(volume_name(raw).as_deref(), Some("v"));
        let raw: &RawValue = serde_json::from_str(r#"["v"]"#).unwrap();
        assert_eq!(volume_name(raw), None);
    }
}
