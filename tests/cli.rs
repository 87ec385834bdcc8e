//! The `sbmesh` binary as a user runs it: `certs` writes what it says, `serve` starts with a
//! self-signed certificate, becomes ready, answers over TLS, and drains on SIGTERM with exit 0;
//! bad settings fail at start with a message naming them.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sbmesh");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Server {
    child: Child,
    admin: u16,
    webhook: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, admin) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "--cluster", "off", "--log-format", "json"])
        .args(["--listen", &format!("127.0.0.1:{webhook}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--self-signed-dir")
        .arg(dir.path())
        .args([
            "--drain-grace-seconds",
            "1",
            "--shutdown-timeout-seconds",
            "2",
        ])
        .args(extra)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Server {
        child,
        admin,
        webhook,
        dir,
    }
}

#[test]
fn certs_writes_ca_cert_and_private_key_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "certs",
            "--service",
            "hook",
            "--namespace",
            "ops",
            "--dns",
            "hook.example",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = String::from_utf8(out.stdout).unwrap();
    // The serving pair and the CA certificate; never the CA's key.
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["ca.crt", "tls.crt", "tls.key"]);
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .unwrap();
    assert_eq!(
        decoded,
        ca.as_bytes(),
        "stdout is exactly the base64 caBundle"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hook.ops.svc.cluster.local") && stderr.contains("hook.example"),
        "{stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn serve_becomes_ready_answers_over_tls_and_drains_on_sigterm() {
    let mut s = start_server(&["--tenant-id", "72f988bf-86f1-41af-91ab-2d7cd011db47"]);
    wait_for(
        "readiness on the admin port",
        Duration::from_secs(20),
        || http_get(s.admin, "/readyz").is_some_and(|(c, _)| c == 200),
    );
    assert!(
        s.dir.path().join("ca.crt").exists(),
        "self-signed CA written where asked"
    );
    let (code, metrics) = http_get(s.admin, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("sbmesh_build_info"), "{metrics}");
    // The webhook port speaks TLS only: a plaintext request gets no HTTP answer.
    assert!(http_get(s.webhook, "/healthz").is_none_or(|(c, _)| c != 200));

    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "readiness to turn false after SIGTERM",
        Duration::from_secs(5),
        || http_get(s.admin, "/readyz").is_none_or(|(c, _)| c == 503),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after drain: {status:?}");
    let mut log = String::new();
    s.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("\"level\":\"WARN\"") && log.contains("self-signed"),
        "{log}"
    );
}

#[test]
fn invalid_setting_fails_at_start_naming_it() {
    let out = Command::new(BIN)
        .args(["serve", "--cluster", "off", "--tenant-id", "not-a-guid"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tenant-id") && err.contains("GUID"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "egress: sideways\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--cluster",
            "off",
            "--admin-listen",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.yaml") && err.contains("mesh, bypass, none"),
        "{err}"
    );
}

#[test]
fn every_serve_flag_has_an_environment_variable() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: Vec<&str> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("--") && !l.starts_with("--help"))
        .collect();
    assert!(flags.len() > 20, "{help}");
    // clap prints "[env: NAME=]" on the flag's line or the lines after it; count them.
    let envs = help.matches("[env: SBMESH_").count();
    assert_eq!(envs, flags.len(), "{help}");
}
