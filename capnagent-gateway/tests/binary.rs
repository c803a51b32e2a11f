//! The `capnagent-gateway` binary with a configuration file: checked with
//! `--check-config`, then run in front of a small axum tool API, its
//! ready line, calls through it, `/metrics`, and SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use capnagent::{Auditor, Issuer};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_capnagent-gateway");
const ROOT_KEY: [u8; 32] = [0x31; 32];
const AUDIT_KEY: [u8; 32] = [0x32; 32];
const TIMEOUT: Duration = Duration::from_secs(20);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The gateway command without any of the variables it reads.
fn command() -> Command {
    let mut command = Command::new(BIN);
    for name in ["CAPNAGENT_ROOT_KEY", "CAPNAGENT_AUDIT_KEY"]
        .into_iter()
        .chain(capnagent_gateway::config::ENV_OVERRIDES.map(|(name, _)| name))
    {
        command.env_remove(name);
    }
    command
}

/// A key file as `capnagent keygen` writes one, and a config using it.
fn write_config(dir: &Path, upstream: &str) -> (PathBuf, PathBuf) {
    let keys = dir.join("keys.env");
    std::fs::write(
        &keys,
        format!(
            "# capnagent keygen\nCAPNAGENT_ROOT_KEY=k1:{}\nCAPNAGENT_AUDIT_KEY=a1:{}\n",
            hex(&ROOT_KEY),
            hex(&AUDIT_KEY)
        ),
    )
    .unwrap();
    let log = dir.join("audit.ndjson");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:0"
upstream = "{upstream}"
mode = "http"
metrics_listen = "127.0.0.1:0"

[[http.routes]]
path = "/tools/{{name}}"
tool_param = "name"

[keys]
root_key_file = "{keys}"
audit_key_file = "{keys}"

[audit]
log = "{log}"
"#,
            keys = keys.display(),
            log = log.display()
        ),
    )
    .unwrap();
    (config, log)
}

#[test]
fn check_config_accepts_a_valid_file_and_names_the_field_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_config(dir.path(), "http://127.0.0.1:9");
    let ok = command()
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &bad,
        text.replace("http://127.0.0.1:9", "https://example.com"),
    )
    .unwrap();
    let out = command().arg("--check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstream: must be an http:// URL"),
        "{stderr}"
    );

    // A key file that does not exist: named by its field, never read.
    std::fs::write(&bad, text.replace("keys.env", "missing.env")).unwrap();
    let out = command().arg("--check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keys.root_key_file: "), "{stderr}");

    // The annotated example is valid (its key file aside).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.example.toml");
    let out = command()
        .arg("--check-config")
        .arg(&example)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_config_file_and_stops_on_sigterm() {
    // The tool API: echoes what it is sent.
    let app = Router::new().route("/tools/{name}", post(|body: String| async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    // The file names a dead upstream; the environment overrides it.
    let (config, log) = write_config(dir.path(), "http://127.0.0.1:9");
    let mut child = command()
        .arg("--config")
        .arg(&config)
        .env("CAPNAGENT_GATEWAY_UPSTREAM", &upstream)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines.next().unwrap().unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    });
    let ready = tokio::time::timeout(TIMEOUT, ready).await.unwrap().unwrap();
    assert_eq!(ready["event"], "ready");
    assert_eq!(ready["server"], "capnagent-gateway");
    assert_eq!(ready["mode"], "http");
    assert_eq!(ready["upstream"], upstream.as_str());
    assert_eq!(ready["audit_log"], log.to_str().unwrap());
    assert_eq!(ready["root_key_ids"], serde_json::json!(["k1"]));
    let url = ready["url"].as_str().unwrap().to_owned();

    let token = {
        let issuer = Issuer::from_key(&ROOT_KEY).unwrap();
        let mut builder = issuer.issue("binary-agent");
        builder.caveat(r#"tool == "checkout.purchase""#).unwrap();
        builder.caveat("arg.amount_cents <= 5000").unwrap();
        builder.build().unwrap().serialize()
    };
    let client = reqwest::Client::new();
    let call = |amount: u32| {
        client
            .post(format!("{url}/tools/checkout.purchase"))
            .bearer_auth(&token)
            .body(format!(r#"{{"amount_cents":{amount}}}"#))
            .send()
    };
    let allowed = call(1200).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().await.unwrap(), r#"{"amount_cents":1200}"#);
    assert_eq!(call(9000).await.unwrap().status(), 403);
    let ready_check = client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready_check.status(), 200);

    let metrics = client
        .get(ready["metrics_url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"capnagent_decisions_total{decision="allowed",gate="none",tool="checkout.purchase"} 1"#
        ),
        "{metrics}"
    );

    // SIGTERM: drains, writes the receipts, exits 0.
    kill_process(Pid::from_child(&child), Signal::TERM).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within {TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let report =
        capnagent::verify_audit_log(&[&log], &[Auditor::new(&AUDIT_KEY).unwrap()], None).unwrap();
    assert_eq!(report.records, 2);
}
