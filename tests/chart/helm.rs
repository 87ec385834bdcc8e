//! A real Helm v4 engine for the tests: `tests/chart/render.py` run by the Python of the
//! virtual environment `target/helm-venv`, which `tests/chart/setup-venv.sh` makes (from the
//! pins of `tests/chart/requirements.txt`) when it is missing or stale. `.ci/run` makes it before
//! `cargo test`; here it is made on first use, under a lock.
//!
//! If it cannot be made (no python3, no network to PyPI), every test that needs Helm says why on
//! stderr, past the test harness's capture, and returns early: skipped, visibly. Under CI (`CI`
//! set) that is a failure instead, as is `SBMESH_CHART_TESTS=require`.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::objects::repo;

pub fn chart_dir() -> PathBuf {
    repo().join("charts/sbmesh")
}

/// The target directory this test binary was built into (`target/debug/deps/chart-…` or
/// `target/<triple>/debug/deps/…`): `.ci/run` makes the venv under `${CARGO_TARGET_DIR:-target}`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            repo().join(dir)
        };
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo().join("target"))
}

pub struct Helm {
    python: PathBuf,
}

/// Why Helm is not there, if it is not.
fn setup() -> &'static Result<Helm, String> {
    static CELL: OnceLock<Result<Helm, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        let venv = target_dir().join("helm-venv");
        let script = repo().join("tests/chart/setup-venv.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg(&venv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        if !output.status.success() {
            // pip's last words say why (no network, no such version, ...).
            let stderr = String::from_utf8_lossy(&output.stderr);
            let lines: Vec<&str> = stderr.trim_end().lines().collect();
            return Err(format!(
                "{} {} failed ({}): {}",
                script.display(),
                venv.display(),
                output.status,
                lines[lines.len().saturating_sub(3)..].join(" / ")
            ));
        }
        Ok(Helm {
            python: venv.join("bin/python"),
        })
    })
}

/// Helm, or `None` after saying on stderr why `test` is skipped. Panics instead under CI, where
/// the venv is made by `.ci/run` and its absence is a broken setup, not a missing tool.
pub fn helm(test: &str) -> Option<&'static Helm> {
    match setup() {
        Ok(helm) => Some(helm),
        Err(reason) => {
            let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
                || std::env::var("SBMESH_CHART_TESTS").as_deref() == Ok("require");
            assert!(
                !required,
                "{test}: the Helm engine is required here (CI or SBMESH_CHART_TESTS=require) \
                 but could not be set up: {reason}"
            );
            // Straight to the process's stderr: the harness captures only print!/eprint!.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no Helm engine: {reason}. These tests need python3 >= 3.10 and \
                 PyPI (pip install -r tests/chart/requirements.txt into target/helm-venv)."
            );
            None
        }
    }
}

/// A Helm failure: the SDK's exception class (`HelmValuesError` for a schema violation,
/// `HelmRenderError` for `required`/`fail`) and its message.
#[derive(Debug, Clone)]
pub struct HelmError {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for HelmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// What `helm template` gives: per template, its documents (NOTES.txt as one string).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub templates: Vec<(String, Vec<Value>)>,
}

impl Rendered {
    /// Every Kubernetes object, in template order.
    pub fn objects(&self) -> Vec<Value> {
        self.templates
            .iter()
            .filter(|(t, _)| !t.ends_with("NOTES.txt"))
            .flat_map(|(_, docs)| docs.iter().cloned())
            .collect()
    }

    pub fn notes(&self) -> &str {
        self.templates
            .iter()
            .find(|(t, _)| t.ends_with("NOTES.txt"))
            .and_then(|(_, docs)| docs.first())
            .and_then(Value::as_str)
            .expect("templates/NOTES.txt rendered")
    }
}

/// One object's verdict from kubernetes-validate.
#[derive(Debug, Clone)]
pub struct Validation {
    pub kind: String,
    pub name: String,
    pub error: Option<String>,
}

impl Helm {
    fn run(&self, args: &[&str], input: &Value) -> Value {
        let script = repo().join("tests/chart/render.py");
        let mut child = Command::new(&self.python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.python.display()));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(input.to_string().as_bytes())
            .expect("write the driver's input");
        drop(stdin);
        let output = child.wait_with_output().expect("driver output");
        assert!(
            output.status.success(),
            "render.py {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "render.py {args:?} printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    fn error(answer: &Value) -> Option<HelmError> {
        answer.get("error").map(|e| HelmError {
            kind: e["type"].as_str().unwrap_or_default().to_owned(),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// `helm template RELEASE charts/sbmesh -n NAMESPACE` with `values` (as `-f`), through the
    /// SDK's install-mode render (schema validated, `lookup` empty).
    pub fn render(
        &self,
        values: &Value,
        release: &str,
        namespace: &str,
    ) -> Result<Rendered, HelmError> {
        self.render_chart(&chart_dir(), values, release, namespace)
    }

    /// [`Helm::render`] of the chart in `chart`.
    pub fn render_chart(
        &self,
        chart: &Path,
        values: &Value,
        release: &str,
        namespace: &str,
    ) -> Result<Rendered, HelmError> {
        let answer = self.run(
            &["render", chart.to_str().unwrap(), release, namespace],
            values,
        );
        if let Some(e) = Self::error(&answer) {
            return Err(e);
        }
        let templates = answer["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| {
                (
                    m["template"].as_str().expect("template").to_owned(),
                    m["documents"].as_array().expect("documents").clone(),
                )
            })
            .collect();
        Ok(Rendered { templates })
    }

    /// `helm lint --strict charts/sbmesh -n NAMESPACE --kube-version KUBE_VERSION` with
    /// `values`: Helm's report, `{"messages": [{"severity", "path", "error"}], "errors"}`.
    pub fn lint(
        &self,
        values: &Value,
        namespace: &str,
        kube_version: &str,
    ) -> Result<Value, HelmError> {
        let chart = chart_dir();
        let answer = self.run(
            &["lint", chart.to_str().unwrap(), namespace, kube_version],
            values,
        );
        match Self::error(&answer) {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }

    /// kubernetes-validate, strict (no unknown fields), against the OpenAPI schema of
    /// `kube_version` (e.g. "1.33").
    pub fn validate(&self, kube_version: &str, objects: &[Value]) -> Vec<Validation> {
        let answer = self.run(&["validate", kube_version], &Value::Array(objects.to_vec()));
        answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| Validation {
                kind: r["kind"].as_str().unwrap_or_default().to_owned(),
                name: r["name"].as_str().unwrap_or_default().to_owned(),
                error: r["error"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// The versions in use: helm-python-sdk, its libhelm_c, Helm's SDK, kubernetes-validate.
    pub fn versions(&self) -> Value {
        self.run(&["versions"], &Value::Null)
    }
}
