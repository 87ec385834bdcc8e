//! Entry point of the kind end-to-end test (`tests/e2e/run.sh`, issue 5). It needs a Docker
//! engine, kind and kubectl, so it runs only when asked: `SBMESH_E2E=1`. Asked and unable to
//! run is a failure, not a pass.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const HOW_TO_RUN: &str = "SBMESH_E2E=1 cargo test --test e2e -- --nocapture";

/// Exit status of run.sh when docker, kind, kubectl or python3 is missing.
const MISSING_PREREQUISITES: i32 = 2;

#[test]
fn e2e_on_kind() {
    if std::env::var("SBMESH_E2E").as_deref() != Ok("1") {
        let msg = format!(
            "e2e skipped: it creates a kind cluster, which needs a Docker engine, kind and \
             kubectl, so it runs only with SBMESH_E2E=1. Run it with: {HOW_TO_RUN} \
             (see docs/operations.md, \"End-to-end test\")"
        );
        eprintln!("{msg}");
        println!("{msg}");
        return;
    }

    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/run.sh");
    let mut child = Command::new("bash")
        .arg(&runner)
        // The binary cargo built for this test run makes the serving certificate (`sbmesh certs`).
        .env("SBMESH_BIN", env!("CARGO_BIN_EXE_sbmesh"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", runner.display()));

    // Stream the runner's output (it merges its stderr into stdout) and keep what the verdict
    // needs: the MISSING lines and the closing count.
    let mut missing = Vec::new();
    let mut summary = String::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("runner output is text");
        println!("{line}");
        if let Some(what) = line.strip_prefix("MISSING: ") {
            missing.push(what.to_owned());
        }
        if line.contains(" passed, ") && line.contains(" failed") {
            summary = line;
        }
    }
    let status = child.wait().expect("runner exit status");

    if status.code() == Some(MISSING_PREREQUISITES) {
        panic!(
            "SBMESH_E2E=1 asked for the e2e, but it could not run: {}",
            if missing.is_empty() {
                "the runner reported missing prerequisites (see its output above)".to_owned()
            } else {
                missing.join("; ")
            }
        );
    }
    assert!(
        status.success(),
        "e2e failed ({status}): {}",
        if summary.is_empty() {
            "setup did not complete, see the output above".to_owned()
        } else {
            summary
        }
    );
}
