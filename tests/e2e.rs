//! Entry point of the kind end-to-end test (`tests/e2e/run.sh`). It needs a Docker engine, kind
//! and kubectl, so it runs only when asked: `SBMESH_E2E=1` (the build script turns that into
//! `cfg(sbmesh_e2e)`). Otherwise the test is reported as *ignored* with the reason and the
//! command to run it, never as passed. Asked and unable to run is a failure.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const HOW_TO_RUN: &str = "SBMESH_E2E=1 cargo test --test e2e -- --nocapture";

/// Exit status of run.sh when docker, kind, kubectl or python3 is missing.
const MISSING_PREREQUISITES: i32 = 2;

#[test]
#[cfg_attr(
    not(sbmesh_e2e),
    ignore = "skipped: the e2e needs a Docker engine, kind and kubectl; run it with \
              SBMESH_E2E=1 cargo test --test e2e -- --nocapture (docs/operations.md)"
)]
fn e2e_on_kind() {
    assert!(
        std::env::var("SBMESH_E2E").as_deref() == Ok("1"),
        "run the e2e with {HOW_TO_RUN}: --ignored alone does not enable it"
    );

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
