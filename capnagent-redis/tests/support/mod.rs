//! Shared setup for the Redis integration tests: a Redis to test
//! against (the shared one from `CAPNAGENT_REDIS_URL`, or a private
//! `redis-server`), per-test key prefixes, a fixed root key.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capnagent::{Auditor, Capability, HolderKey, Issuer, Timestamp};
use capnagent_redis::RedisConfig;

pub const ROOT: [u8; 32] = [7; 32];

/// A `redis-server` child process on a loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start_on(port: u16) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    pub fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        RedisServer::start_on(port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn no_redis(why: &str) -> Option<(String, Option<RedisServer>)> {
    if std::env::var_os("CI").is_some() {
        panic!("Redis is required when CI is set: {why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// The shared Redis, or a private one.
pub fn redis() -> Option<(String, Option<RedisServer>)> {
    if let Ok(url) = std::env::var("CAPNAGENT_REDIS_URL") {
        return Some((url, None));
    }
    match RedisServer::start() {
        Some(server) => Some((server.url(), Some(server))),
        None => no_redis("CAPNAGENT_REDIS_URL is not set and redis-server could not start"),
    }
}

pub fn config(url: &str, test: &str) -> RedisConfig {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RedisConfig::new(url).prefix(format!("capnagent-test:{test}:{unique}"))
}

pub fn now_ms() -> u64 {
    Timestamp::now().unix_millis()
}

pub fn auditor() -> Auditor {
    Auditor::new(&[9; 32]).expect("key")
}

/// A capability for "agent-42" bound to `holder`'s key, for `bank.wire`.
pub fn bound(holder: &HolderKey) -> Capability {
    Issuer::from_key(&ROOT)
        .expect("key")
        .issue("agent-42")
        .holder_of_key(holder.public_key())
        .expect("first")
        .caveat(r#"tool == "bank.wire""#)
        .expect("valid")
        .build()
        .expect("builds")
}
