//! Reading manifests: files, directories and stdin, split into documents. YAML is read the way
//! kubectl reads it (YAML 1.1 scalars: `0644` is octal, `yes` is true); a source whose first
//! character is `{` is a JSON stream. Every document keeps its number in its source, counted
//! as a person reading the file would, for error messages.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The largest input read from one file or from stdin.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Extensions read from a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Directory nesting followed at most with `--recursive` (guards symlink loops too).
const MAX_DEPTH: usize = 32;

/// One input: a file or stdin, by the name messages use.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// One document of a source, with its 1-based number in that source.
#[derive(Debug, Clone)]
pub struct Document {
    pub index: usize,
    pub value: Value,
}

/// Reads every `-f` argument in order: `-` is stdin, a directory gives its manifest files
/// sorted by name. Problems are collected so that all of them are reported at once.
pub fn read_all(
    args: &[PathBuf],
    recursive: bool,
    stdin: &mut (dyn Read + Send),
    errors: &mut Vec<String>,
) -> Vec<Source> {
    let mut sources = Vec::new();
    let mut stdin_used = false;
    for arg in args {
        if arg.as_os_str() == "-" {
            if stdin_used {
                errors.push("-f - (stdin) is given more than once".into());
                continue;
            }
            stdin_used = true;
            match read_limited(stdin, "stdin") {
                Ok(text) => sources.push(Source {
                    name: "stdin".into(),
                    text,
                }),
                Err(e) => errors.push(e),
            }
            continue;
        }
        let name = arg.display().to_string();
        match fs::metadata(arg) {
            Err(e) => errors.push(format!("{name}: cannot read: {e}")),
            Ok(meta) if meta.is_dir() => {
                let mut files = Vec::new();
                let mut visited = BTreeSet::new();
                if let Err(e) = walk(arg, recursive, 0, &mut visited, &mut files) {
                    errors.push(e);
                    continue;
                }
                if files.is_empty() {
                    errors.push(format!(
                        "{name}: directory holds no *.yaml, *.yml or *.json files{}",
                        if recursive {
                            ""
                        } else {
                            " (use -R to read its subdirectories)"
                        }
                    ));
                }
                for file in files {
                    match read_file(&file) {
                        Ok(s) => sources.push(s),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Ok(_) => match read_file(arg) {
                Ok(s) => sources.push(s),
                Err(e) => errors.push(e),
            },
        }
    }
    sources
}

/// Manifest files of `dir` in name order; subdirectories in the same order when `recursive`.
fn walk(
    dir: &Path,
    recursive: bool,
    depth: usize,
    visited: &mut BTreeSet<PathBuf>,
    files: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let name = dir.display();
    if depth > MAX_DEPTH {
        return Err(format!(
            "{name}: directories nest deeper than {MAX_DEPTH} levels"
        ));
    }
    // A symlink back up the tree would otherwise be walked forever.
    if let Ok(canonical) = fs::canonicalize(dir)
        && !visited.insert(canonical)
    {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{name}: cannot read directory: {e}"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{name}: cannot read directory: {e}"))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                walk(&path, recursive, depth + 1, visited, files)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
        {
            files.push(path);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Source, String> {
    let name = path.display().to_string();
    let mut file = fs::File::open(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let text = read_limited(&mut file, &name)?;
    Ok(Source { name, text })
}

fn read_limited(reader: &mut dyn Read, name: &str) -> Result<String, String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("{name}: larger than {} MiB", MAX_INPUT_BYTES >> 20));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Why a source could not be split into documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based number of the document the error is in.
    pub document: usize,
    /// The parser's message, with the line and column.
    pub message: String,
}

/// Splits a source into its documents. Empty documents (nothing but comments) are dropped,
/// as kubectl drops them; the others keep their number.
pub fn documents(text: &str) -> Result<Vec<Document>, ParseError> {
    if text.trim_start().starts_with('{') {
        json_documents(text)
    } else {
        yaml_documents(text)
    }
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        with_snippet: false,
        emit_comments: false,
    }
}

fn yaml_documents(text: &str) -> Result<Vec<Document>, ParseError> {
    let docs = serde_saphyr::from_multiple_with_options::<serde_saphyr::Spanned<Value>>(
        text,
        yaml_options(),
    )
    .map_err(|e| {
        let line = e.location().map(|l| l.line());
        let mut message = e.to_string();
        if let Some(l) = e.location()
            && !message.contains("line")
        {
            message = format!("{message} at line {}, column {}", l.line(), l.column());
        }
        ParseError {
            document: line.map_or(1, |l| document_at(text, l)),
            message,
        }
    })?;
    Ok(docs
        .into_iter()
        .map(|s| Document {
            index: document_at(text, s.referenced.line()),
            value: s.value,
        })
        .collect())
}

fn json_documents(text: &str) -> Result<Vec<Document>, ParseError> {
    let mut out = Vec::new();
    for (i, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        match value {
            Ok(value) => out.push(Document {
                index: i + 1,
                value,
            }),
            Err(e) => {
                return Err(ParseError {
                    document: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The number of the YAML document that 1-based `line` belongs to: each `---` line starts
/// one, and so does content before the first `---` or after a `...` end marker.
fn document_at(text: &str, line: u64) -> usize {
    let marker = |l: &str, m: &str| {
        l.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    let (mut count, mut closed) = (0usize, false);
    for (i, l) in text.lines().enumerate() {
        if i as u64 >= line {
            break;
        }
        if marker(l, "---") {
            count += 1;
            closed = false;
        } else if marker(l, "...") {
            closed = true;
        } else {
            let t = l.trim_start();
            let content = !t.is_empty() && !t.starts_with('#') && !l.starts_with('%');
            if content && (count == 0 || closed) {
                count += 1;
                closed = false;
            }
        }
    }
    count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_numbered_as_written() {
        let text = "# header\n---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n";
        let docs = documents(text).unwrap();
        let idx: Vec<usize> = docs.iter().map(|d| d.index).collect();
        assert_eq!(idx, vec![1, 4]);
        assert_eq!(documents("a: 1\n---\nb: 2\n").unwrap()[1].index, 2);
        assert_eq!(documents("a: 1\n...\nb: 2\n").unwrap()[1].index, 2);
    }

    #[test]
    fn yaml_errors_name_the_document_and_line() {
        let e = documents("a: 1\n---\nb: 2\n---\nc: [1,\n").unwrap_err();
        assert_eq!(e.document, 3);
        assert!(e.message.contains("line 5"), "{}", e.message);
    }

    #[test]
    fn json_streams_are_read_and_errors_are_numbered() {
        let docs = documents("{\"a\": 1}\n{\"b\": 2}\n").unwrap();
        assert_eq!(docs.len(), 2);
        let e = documents("{\"a\": 1}\n{\"b\": }\n").unwrap_err();
        assert_eq!(e.document, 2);
        assert!(e.message.contains("line 2"), "{}", e.message);
    }

    #[test]
    fn yaml_1_1_scalars_read_as_kubectl_reads_them() {
        let d = documents("mode: 0644\nflag: yes\nquoted: \"0644\"\n").unwrap();
        assert_eq!(
            d[0].value,
            serde_json::json!({"mode": 420, "flag": true, "quoted": "0644"})
        );
    }
}
