//! An MCP server (the official Rust SDK, rmcp, over Streamable HTTP) with
//! three tools, behind one `CapabilityLayer` in MCP mode. Prints the URL, a
//! capability to use, and how to connect an MCP client.
//!
//! ```text
//! cargo run --release -p capnagent-examples --bin mcp-tool-server [-- --port 8765] [--ttl-secs 3600] [--audit-log PATH]
//! ```
//!
//! The keys are random for each run: the printed capability works until
//! the server stops (or the capability expires). Every decision is written
//! to the audit log, one signed receipt per line.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use capnagent::{AuditLog, Auditor, Issuer, Timestamp, Verifier};
use capnagent_examples::mcp::{self, DEMO_CAVEATS};
use capnagent_tower::{AuditLogSink, CapabilityLayer};

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "usage: mcp-tool-server [--port PORT] [--ttl-secs SECONDS] [--audit-log PATH]";

struct Options {
    port: u16,
    ttl_secs: u64,
    audit_log: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        port: 8765,
        ttl_secs: 3600,
        audit_log: None,
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
    // Fresh random keys for this run. A real server loads them from its
    // secrets and mints capabilities elsewhere (`capnagent issue`).
    let mut root_key = [0u8; 32];
    let mut audit_key = [0u8; 32];
    getrandom::fill(&mut root_key).map_err(|e| format!("random root key: {e}"))?;
    getrandom::fill(&mut audit_key).map_err(|e| format!("random audit key: {e}"))?;

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
    let layer = CapabilityLayer::new(Verifier::new(&root_key)?, Auditor::new(&audit_key)?)?
        .sink(sink.clone());

    let now_secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let expiry = Timestamp::from_unix_millis(now_secs.saturating_add(options.ttl_secs) * 1000);
    let mut builder = Issuer::from_key(&root_key)?.issue("mcp-agent-1");
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
