//! A gRPC tool service (`proto/tools.proto`) behind
//! `capnagent_tonic::CapabilityLayer`.
//!
//! ```text
//! cargo run -p capnagent-examples --bin grpc-tool-server -- [--addr 127.0.0.1:50051] [--redis redis://127.0.0.1:6379/] [--audit-log PATH]
//! ```
//!
//! On start it makes fresh random keys, prints a bearer token
//! (`checkout.purchase` up to 5000) and a holder-bound token (`bank.wire`
//! up to 100000) with its holder seed, and ready-to-paste
//! `grpc-tool-client` commands. Every decision is printed and appended to
//! an audit log. Holder-of-key proofs are single-use (a nonce store) and
//! every call is checked against a signed revocation list: in memory, or
//! in Redis with `--redis` (shared by every server of a fleet). Clients
//! may compress their requests (gzip, deflate or zstd): the layer judges
//! the decompressed message and the service accepts the same encodings.

use std::error::Error;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use capnagent::{
    AuditLog, Auditor, HolderKey, InMemoryNonceStore, Issuer, NonceStore, Receipt, RevocationCell,
    RevocationStore, Revoker, Timestamp, Verifier,
};
use capnagent_examples::grpc::{self, PURCHASE_TOOL, Tools, WIRE_TOOL};
use capnagent_examples::{PLANNER, PLANNER_API_KEY};
use capnagent_redis::{RedisConfig, RedisNonceStore, RedisRevocationStore, spawn_revocation_feed};
use capnagent_tonic::AuditLogSink;
use clap::Parser;

type BoxError = Box<dyn Error + Send + Sync>;

/// Serve the example gRPC tool service behind a capability layer.
#[derive(Debug, Parser)]
#[command(name = "grpc-tool-server")]
struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Keep proof nonces and the revocation list in Redis at this URL
    /// (`redis://host:port/db`) instead of in memory.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Append receipts to this file (default: a file in a temporary
    /// directory, printed at start).
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc-tool-server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), BoxError> {
    let mut root_key = [0u8; 32];
    let mut audit_key = [0u8; 32];
    getrandom::fill(&mut root_key).map_err(|e| format!("random root key: {e}"))?;
    getrandom::fill(&mut audit_key).map_err(|e| format!("random audit key: {e}"))?;
    let mut holder_seed = [0u8; 32];
    getrandom::fill(&mut holder_seed).map_err(|e| format!("random holder seed: {e}"))?;
    let holder = HolderKey::from_seed(holder_seed);

    // Replay protection and revocation: in memory, or shared in Redis.
    let now_ms = Timestamp::now().unix_millis();
    let cell = RevocationCell::new(&root_key)?;
    let empty_list = Revoker::new(&root_key)?.publish(now_ms);
    let (nonces, _feed): (Arc<dyn NonceStore>, _) = match &options.redis {
        None => {
            cell.install(empty_list)?;
            (Arc::new(InMemoryNonceStore::new()), None)
        }
        Some(url) => {
            let config = RedisConfig::new(url.as_str());
            let nonces = RedisNonceStore::connect(&config).await?;
            let store = Arc::new(RedisRevocationStore::connect(&config).await?);
            // A fresh list under this run's key (newer than any in Redis).
            store.publish(&empty_list).await?;
            // Install it now (the first calls would be denied otherwise),
            // then follow the store.
            capnagent::refresh(store.as_ref(), &cell).await?;
            let feed = spawn_revocation_feed(store, cell.clone(), Duration::from_secs(1));
            (Arc::new(nonces), Some(feed))
        }
    };

    let (log_path, _dir) = match options.audit_log {
        Some(path) => (path, None),
        None => {
            let dir = tempfile::tempdir()?;
            (dir.path().join("grpc-audit.ndjson"), Some(dir))
        }
    };
    let audit_log = AuditLogSink::new(AuditLog::open(&log_path)?)?;
    // One line per decision. A sink must not panic: a closed stdout is
    // ignored (the audit log has every receipt anyway).
    let print = |receipt: &Receipt| {
        let summary = receipt.context_summary();
        let (tool, caller) = (summary.tool(), summary.caller());
        let mut out = std::io::stdout().lock();
        let _ = match receipt.outcome().reason() {
            None => writeln!(out, "allowed  {tool} {caller}"),
            Some(reason) => writeln!(out, "DENIED   {tool} {caller}: {reason}"),
        };
    };

    let layer = grpc::capability_layer(Verifier::new(&root_key)?, Auditor::new(&audit_key)?)?
        .nonce_store(nonces)
        .revocations(cell)
        .sink((audit_log.clone(), print));

    let running = grpc::spawn(options.addr, Some(layer), Tools::protected()).await?;
    let url = running.url();
    let issuer = Issuer::from_key(&root_key)?;
    let expiry = Timestamp::from_unix_millis(now_ms + 24 * 3600 * 1000);
    let purchase = issuer
        .issue("grpc-demo-purchases")
        .caller_is(PLANNER)?
        .tool_is(PURCHASE_TOOL)?
        .arg_at_most("amount", 5000)?
        .not_after(expiry)?
        .build()?
        .serialize();
    let wire = issuer
        .issue("grpc-demo-wires")
        .holder_of_key(holder.public_key())?
        .caller_is(PLANNER)?
        .tool_is(WIRE_TOOL)?
        .arg_at_most("amount", 100_000)?
        .not_after(expiry)?
        .build()?
        .serialize();
    let seed = base16ct::lower::encode_string(&holder_seed);
    let audit = base16ct::lower::encode_string(&audit_key);
    let client = "cargo run -p capnagent-examples --bin grpc-tool-client --";

    println!("grpc-tool-server listening on {url}");
    println!(
        "  stores: {}",
        match &options.redis {
            Some(url) => format!("Redis at {url} (nonces, revocation list)"),
            None => "in memory (nonces, revocation list)".to_owned(),
        }
    );
    println!("  audit log: {}", log_path.display());
    println!("  API key (x-api-key): {PLANNER_API_KEY} -> caller {PLANNER}");
    println!("\nbearer token ({PURCHASE_TOOL}, amount <= 5000, 24 h):\n  {purchase}");
    println!("\nholder-bound token ({WIRE_TOOL}, amount <= 100000, 24 h):\n  {wire}");
    println!("holder seed (the holder's secret; demo only):\n  {seed}");
    println!("audit key (to check receipts; demo only):\n  {audit}");
    println!("\ntry:");
    println!(
        "  {client} --addr {url} --audit-key {audit} --token {purchase} purchase --merchant acme --amount 1200"
    );
    println!(
        "  {client} --addr {url} --audit-key {audit} --token {purchase} purchase --merchant acme --amount 9000"
    );
    println!(
        "  {client} --addr {url} --audit-key {audit} --token {wire} --holder-seed {seed} wire --recipient bob --amount 25000"
    );
    println!("\nCtrl-C to stop.\n");

    capnagent_examples::shutdown_signal().await;
    running.stop().await?;
    audit_log.flush().await?;
    println!(
        "stopped; {} receipts written to {}",
        audit_log.stats().written,
        log_path.display()
    );
    Ok(())
}
