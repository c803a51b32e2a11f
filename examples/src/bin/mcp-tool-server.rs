//! An MCP server (the official Rust SDK, rmcp, over Streamable HTTP) with
//! three tools, behind one `CapabilityLayer` in MCP mode. Prints the URL, a
//! capability to use, how to connect an MCP client, and one JSON line for
//! scripts (see `examples/README.md`).
//!
//! ```text
//! cargo run --release -p capnagent-examples --bin mcp-tool-server -- [--port 8765] [--ttl-secs 3600] [--unguarded]
//!     [--root-key-file PATH] [--audit-key-file PATH] [--audit-log PATH] [--metrics-addr ADDR]
//! ```
//!
//! The keys come from `--root-key-file` / `--audit-key-file` (or the
//! `-hex` flags, or `CAPNAGENT_ROOT_KEY` / `CAPNAGENT_AUDIT_KEY`), as the
//! `capnagent` command reads them: `capnagent keygen > keys.env` works for
//! both, and a ring such as `k2:NEW,k1:OLD` accepts tokens under either
//! key while minting under the first (`docs/key-rotation.md`). Without
//! them the keys are random for this run, in a private directory removed
//! on exit. Every decision goes to a hash-chained audit log.

use std::process::ExitCode;
use std::time::SystemTime;

use axum::serve::ListenerExt as _;
use capnagent::{KeyId, Timestamp};
use capnagent_examples::mcp::{self, DEMO_CAVEATS};
use capnagent_examples::serve::{ServerArgs, Setup};
use capnagent_tower::CapabilityLayer;
use clap::Parser;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serve the example MCP tools behind a capability layer.
#[derive(Debug, Parser)]
#[command(name = "mcp-tool-server")]
struct Options {
    /// Port to listen on (127.0.0.1; 0: any free port).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Lifetime of the capability minted for this run, in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    /// Serve the tools WITHOUT a capability layer, as a tool server
    /// written in Python or TypeScript would be, for `capnagent-gateway`
    /// to guard (README: "Protect an MCP server written in any
    /// language"). Give it the gateway's key file: the token it prints
    /// then works through the gateway.
    #[arg(long)]
    unguarded: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-tool-server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), BoxError> {
    let setup = Setup::new(&options.server, "mcp").await?;
    let layer = CapabilityLayer::new(setup.verifier.clone(), setup.auditor.clone())?
        .sink(setup.sink.clone());

    let now_secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let expiry = Timestamp::from_unix_millis(now_secs.saturating_add(options.ttl_secs) * 1000);
    let mut builder = setup.issuer.issue("mcp-agent-1");
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
    if options.unguarded {
        println!("UNGUARDED: no capability layer; put capnagent-gateway in front");
    } else {
        println!("every tools/call is checked by capnagent");
    }
    setup.describe();
    let ids = setup.root.ids().map(KeyId::as_str).collect::<Vec<_>>();
    println!(
        "root keys accepted: {} (the capability is under {})",
        ids.join(", "),
        setup.root.primary().id()
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
    setup
        .ready("mcp-tool-server", &url, &[("agent", &token)])
        .print()?;

    let app = if options.unguarded {
        mcp::unguarded_app()
    } else {
        mcp::app(layer)
    };
    // TCP_NODELAY: an SSE answer goes out in several small writes, which
    // Nagle's algorithm would hold for the client's delayed ACK (~40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(capnagent_examples::shutdown_signal())
        .await?;
    setup.finish().await
}
