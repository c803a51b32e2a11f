//! Cross-crate tests of the capnagent workspace, and what they share.
//!
//! Layout: the test files sit directly in `tests/` (`grpc.rs`, `mcp.rs`,
//! `fleet.rs`, `one_engine.rs`, ...), each declared as a `[[test]]` in
//! `tests/Cargo.toml` (`autotests = false`); this library is their shared
//! support. Tests of one crate's API stay in that crate's own `tests/`.
//!
//! The tests that run an example binary as a child process get its path from
//! [`example_bin`]: `env!("CARGO_BIN_EXE_...")` only exists inside the
//! package that defines the binary, so the binaries are built with
//! `cargo build -p capnagent-examples --bins` and located from cargo's own
//! report of what it built (any target dir, any `--target`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// Asks the child to stop with `SIGTERM`, as `kill` or a container runtime
/// would, and waits up to `timeout` for it to exit. Kills it and panics if
/// it does not exit in time.
pub fn terminate(child: &mut Child, timeout: Duration) -> ExitStatus {
    let pid = Pid::from_child(child);
    kill_process(pid, Signal::TERM).expect("send SIGTERM");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of the example binary `name` (`quickstart`, `mcp-tool-server`,
/// `grpc-tool-server`, ...), built up to date on first use in this test
/// process with `cargo build -p capnagent-examples --bins` (`--release` when
/// the tests are). Panics with cargo's output if the build fails.
pub fn example_bin(name: &str) -> PathBuf {
    static BINS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let bins = BINS.get_or_init(build_example_bins);
    match bins.get(name) {
        Some(path) => path.clone(),
        None => panic!(
            "capnagent-examples has no binary {name:?}: {:?}",
            bins.keys()
        ),
    }
}

fn build_example_bins() -> HashMap<String, PathBuf> {
    // `cargo test` sets CARGO for the tests it runs.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "-p",
        "capnagent-examples",
        "--bins",
        "--message-format=json",
    ]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build -p capnagent-examples --bins failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut bins = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            bins.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    bins
}

/// A private `redis-server` on a loopback port, killed when dropped.
pub struct RedisChild(Child);

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis to run against: `CAPNAGENT_REDIS_URL` when set (what
/// `scripts/test.sh` starts), else a private `redis-server` on a free
/// loopback port, kept until the returned guard is dropped. `None` when
/// neither is available (no `redis-server` installed, or it did not
/// answer within 10 s).
pub fn redis() -> Option<(String, Option<RedisChild>)> {
    if let Ok(url) = std::env::var("CAPNAGENT_REDIS_URL") {
        return Some((url, None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisChild(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((format!("redis://127.0.0.1:{port}/"), Some(server)))
}
