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
//! `cargo build -p capnagent-examples -p capnagent-cli --bins` and located
//! from cargo's own report of what it built (any target dir, any
//! `--target`).

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
/// `grpc-tool-server`, ...) or of the `capnagent` command, built up to date
/// on first use in this test process with `cargo build -p
/// capnagent-examples -p capnagent-cli --bins` (`--release` when the tests
/// are). Panics with cargo's output if the build fails.
pub fn example_bin(name: &str) -> PathBuf {
    static BINS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let bins = BINS.get_or_init(build_example_bins);
    match bins.get(name) {
        Some(path) => path.clone(),
        None => panic!(
            "capnagent-examples and capnagent-cli have no binary {name:?}: {:?}",
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
        "-p",
        "capnagent-cli",
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
        "cargo build -p capnagent-examples -p capnagent-cli --bins failed:\n{}",
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

impl From<Child> for RedisChild {
    /// Takes over a `redis-server` a test started itself.
    fn from(child: Child) -> RedisChild {
        RedisChild(child)
    }
}

impl RedisChild {
    /// Stops the server now (killed, waited for).
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

/// An example server running as a child process, its standard output read
/// line by line on a thread; killed when dropped, however the test ends.
pub struct Server {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts the example binary `name` with `args`, without the key
    /// variables of the test's environment.
    pub fn start(name: &str, args: &[&str]) -> Server {
        let mut child = Command::new(example_bin(name))
            .args(args)
            .env_remove("CAPNAGENT_ROOT_KEY")
            .env_remove("CAPNAGENT_AUDIT_KEY")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, lines }
    }

    /// The server's JSON "ready" line (see `examples/README.md`), and the
    /// human text printed before it. Panics if none comes within `timeout`.
    pub fn ready(&mut self, timeout: Duration) -> (serde_json::Value, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let mut text = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.starts_with('{')
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && value["event"] == "ready"
            {
                return (value, text);
            }
            text.push(line);
        }
        panic!("no ready line within {timeout:?}; printed: {text:?}");
    }

    /// Stops the server with `SIGTERM` and returns its exit status and
    /// every line it printed after the ready line.
    pub fn stop(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let status = terminate(&mut self.child, timeout);
        // The reader ends at end of file, now that the child has exited.
        let rest = self.lines.iter().collect();
        (status, rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `capnagent` command with `args`; its output.
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(example_bin("capnagent"))
        .args(args)
        .env_remove("CAPNAGENT_ROOT_KEY")
        .env_remove("CAPNAGENT_AUDIT_KEY")
        .output()
        .expect("run capnagent")
}

/// `capnagent keygen [extra...] > dir/name`: an environment file holding a
/// root and an audit key, as an operator makes one. Its path.
pub fn keygen(dir: &std::path::Path, name: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["keygen"];
    args.extend_from_slice(extra);
    let output = cli(&args);
    assert!(
        output.status.success(),
        "capnagent keygen: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = dir.join(name);
    std::fs::write(&path, &output.stdout).expect("write the key file");
    path
}

/// `capnagent issue --root-key-file keys --id id --caveat ...`: the token.
pub fn issue(keys: &std::path::Path, id: &str, caveats: &[&str], extra: &[&str]) -> String {
    let keys = keys.to_str().expect("a UTF-8 path");
    let mut args = vec!["issue", "--root-key-file", keys, "--id", id];
    for caveat in caveats {
        args.extend(["--caveat", caveat]);
    }
    args.extend_from_slice(extra);
    let output = cli(&args);
    assert!(
        output.status.success(),
        "capnagent issue: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("a UTF-8 token")
        .trim()
        .to_owned()
}
