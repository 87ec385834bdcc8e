//! Writing manifests back out. YAML keeps key order, writes multi-line strings as literal
//! blocks, and quotes every string a YAML 1.1 reader (kubectl, sigs.k8s.io/yaml) would take
//! for something else: `"true"`, `"on"`, `"yes"`, `"0755"`, `"1e3"`, `"null"`, `"12:30"`.

use serde_json::{Value, json};

/// The output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Yaml,
    Json,
}

fn yaml_options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        // Long one-line strings (the status annotation, images) stay on one line: folded
        // blocks are hard to read and to diff.
        folded_wrap_chars: usize::MAX,
    }
}

/// One document as YAML, ending in a newline.
pub fn yaml(value: &Value) -> Result<String, String> {
    let mut s =
        serde_saphyr::to_string_with_options(value, yaml_options()).map_err(|e| e.to_string())?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// One document as indented JSON, ending in a newline.
pub fn json(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

/// Renders one document in `format`.
pub fn document(value: &Value, format: Format) -> Result<String, String> {
    match format {
        Format::Yaml => yaml(value),
        Format::Json => Ok(json(value)),
    }
}

/// Renders all documents: YAML separated by `---`; JSON as the object itself when there is
/// one, else a `v1 List` of them in order.
pub fn stream(values: &[Value], format: Format) -> Result<String, String> {
    match format {
        Format::Yaml => {
            let docs = values.iter().map(yaml).collect::<Result<Vec<_>, _>>()?;
            Ok(docs.join("---\n"))
        }
        Format::Json => Ok(match values {
            [one] => json(one),
            many => json(&json!({"apiVersion": "v1", "kind": "List", "items": many})),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_look_alikes_are_quoted() {
        for s in [
            "true", "on", "yes", "No", "y", "0755", "1e3", "null", "~", "12:30", "0x1F", "",
        ] {
            let out = yaml(&json!({ "k": s })).unwrap();
            assert!(
                out.starts_with("k: \"") || out.starts_with("k: '"),
                "{s:?} → {out}"
            );
        }
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let out = yaml(&json!({"script": "#!/bin/sh\necho hi\n"})).unwrap();
        assert_eq!(out, "script: |\n  #!/bin/sh\n  echo hi\n");
    }
}
