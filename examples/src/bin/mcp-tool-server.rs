//! An MCP server (the official Rust SDK, rmcp, over Streamable HTTP) with
//! three tools, behind one `CapabilityLayer` in MCP mode. Prints the URL, a
//! capability to use, and how to connect an MCP client.
//!
//! ```text
//! cargo run --release -p capnagent-examples --bin mcp-tool-server [-- --port 8765] [--ttl-secs 3600] [--audit-log PATH] [--root-key-file PATH] [--audit-key-file PATH]
//! ```
//!
//! The keys come from `--root-key-file` / `--audit-key-file` or
//! `CAPNAGENT_ROOT_KEY` / `CAPNAGENT_AUDIT_KEY` (key specs, as the
//! `capnagent` command reads them: `capnagent keygen > keys.env` works for
//! both, and a ring such as `k2:NEW,k1:OLD` accepts tokens under either
//! key while minting under the first, see `docs/key-rotation.md`). Without
//! them the keys are random for each run: the printed capability works
//! until the server stops (or the capability expires). Every decision is
//! written to the audit log, one signed receipt per line.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use capnagent::keys::{resolve_audit, resolve_root};
use capnagent::{AuditLog, Auditor, Issuer, KeyId, KeyRing, KeyRole, Timestamp, Verifier};
use capnagent_examples::mcp::{self, DEMO_CAVEATS};
use capnagent_tower::{AuditLogSink, CapabilityLayer};

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "usage: mcp-tool-server [--port PORT] [--ttl-secs SECONDS] [--audit-log PATH] \
                     [--root-key-file PATH] [--audit-key-file PATH]";

struct Options {
    port: u16,
    ttl_secs: u64,
    audit_log: Option<PathBuf>,
    root_key_file: Option<PathBuf>,
    audit_key_file: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        port: 8765,
        ttl_secs: 3600,
        audit_log: None,
        root_key_file: None,
        audit_key_file: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--port" => {
                options.port = value("a port number")?
                    .parse()
                    .map_err(|_| "--port needs a port number (0: any free port)")?;
            }
            "--ttl-secs" => {
                options.ttl_secs = value("a number of seconds")?
                    .parse()
                    .map_err(|_| "--ttl-secs needs a number of seconds")?;
            }
            "--audit-log" => options.audit_log = Some(PathBuf::from(value("a path")?)),
            "--root-key-file" => options.root_key_file = Some(PathBuf::from(value("a path")?)),
            "--audit-key-file" => options.audit_key_file = Some(PathBuf::from(value("a path")?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-tool-server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), BoxError> {
    // The configured keys, else fresh random keys for this run. A real
    // server loads them from its secrets and mints capabilities elsewhere
    // (`capnagent issue`).
    let root = match resolve_root(None, options.root_key_file.as_deref())? {
        Some(ring) => ring,
        None => KeyRing::new(KeyRole::Root, None, &random_key()?)?,
    };
    let audit = match resolve_audit(None, options.audit_key_file.as_deref())? {
        Some(ring) => ring,
        None => KeyRing::new(KeyRole::Audit, None, &random_key()?)?,
    };

    let (log_path, _dir) = match options.audit_log {
        Some(path) => (path, None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("capnagent-mcp-")
                .tempdir()?;
            (dir.path().join("audit.ndjson"), Some(dir))
        }
    };
    let sink = AuditLogSink::new(AuditLog::open(&log_path)?)?;
    let layer = CapabilityLayer::new(Verifier::from_keys(&root)?, Auditor::from_keys(&audit)?)?
        .sink(sink.clone());

    let now_secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let expiry = Timestamp::from_unix_millis(now_secs.saturating_add(options.ttl_secs) * 1000);
    let mut builder = Issuer::from_keys(&root)?.issue("mcp-agent-1");
    for caveat in DEMO_CAVEATS {
        builder.caveat(caveat)?;
    }
    let capability = builder.not_after(expiry)?.build()?;
    let token = capability.serialize();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    let url = format!("http://{}{}", listener.local_addr()?, mcp::PATH);

    println!("MCP server (rmcp, Streamable HTTP) at {url}");
    println!(
        "tools: checkout_purchase {{merchant, amount_cents}}, bank_wire {{to, amount_cents}}, files_read {{path}}"
    );
    println!(
        "every tools/call is checked by capnagent; audit log: {}",
        log_path.display()
    );
    let ids = |ring: &KeyRing| ring.ids().map(KeyId::as_str).collect::<Vec<_>>().join(", ");
    println!(
        "root keys accepted: {} (the capability is under {}); audit key: {}",
        ids(&root),
        root.primary().id(),
        audit.primary().id()
    );
    println!();
    println!("capability for the agent:");
    for caveat in capability.caveats() {
        println!("  caveat: {caveat}");
    }
    println!("token: {token}");
    println!();
    println!("connect an MCP client over Streamable HTTP with the header");
    println!("  Authorization: Bearer {token}");
    println!("for example:");
    println!(
        "  claude mcp add --transport http capnagent-demo {url} --header \"Authorization: Bearer {token}\""
    );
    println!(
        "  rmcp: StreamableHttpClientTransportConfig::with_uri(\"{url}\").auth_header(\"{token}\")"
    );
    println!(
        "  python (mcp 2.x): Client(streamable_http_client(\"{url}\", http_client=httpx2.AsyncClient(headers={{\"Authorization\": \"Bearer {token}\"}})))"
    );
    println!();
    println!(
        "checkout_purchase up to 5000 cents is allowed; anything else comes back as a tool error"
    );
    println!("with the reason and a signed receipt. Ctrl-C to stop.");

    axum::serve(listener, mcp::app(layer))
        .with_graceful_shutdown(capnagent_examples::shutdown_signal())
        .await?;
    sink.flush().await?;
    println!(
        "audit log: {} receipts in {}",
        sink.stats().written,
        log_path.display()
    );
    Ok(())
}

/// 32 bytes from the operating system's CSPRNG.
fn random_key() -> Result<[u8; 32], BoxError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("random key: {e}"))?;
    Ok(key)
}
