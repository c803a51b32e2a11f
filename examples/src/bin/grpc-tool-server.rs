//! A gRPC tool service (`proto/tools.proto`) behind
//! `capnagent_tonic::CapabilityLayer`.
//!
//! ```text
//! cargo run -p capnagent-examples --bin grpc-tool-server -- [--addr 127.0.0.1:50051] [--redis redis://127.0.0.1:6379/]
//!     [--root-key-file PATH] [--audit-key-file PATH] [--audit-log PATH] [--metrics-addr ADDR]
//! ```
//!
//! The keys come from files or the environment as the `capnagent` command
//! reads them (random for this run when none are given, in a private
//! directory removed on exit). On start it prints a bearer token
//! (`checkout.purchase` up to 5000) and a holder-bound token (`bank.wire`
//! up to 100000) with its holder seed, and ready-to-paste
//! `grpc-tool-client` commands, then one JSON line for scripts (see
//! `examples/README.md`). Every decision is printed and appended to a
//! hash-chained audit log. Holder-of-key proofs are single-use (a nonce store) and
//! every call is checked against a signed revocation list: in memory, or
//! in Redis with `--redis` (shared by every server of a fleet). Clients
//! may compress their requests (gzip, deflate or zstd): the layer judges
//! the decompressed message and the service accepts the same encodings.

use std::error::Error;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use capnagent::{
    HolderKey, InMemoryNonceStore, NonceStore, Receipt, RevocationCell, RevocationStore, Revoker,
    Timestamp,
};
use capnagent_examples::grpc::{self, PURCHASE_TOOL, Tools, WIRE_TOOL};
use capnagent_examples::serve::{ServerArgs, Setup};
use capnagent_examples::{PLANNER, PLANNER_API_KEY};
use capnagent_redis::{RedisConfig, RedisNonceStore, RedisRevocationStore, spawn_revocation_feed};
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
    #[command(flatten)]
    server: ServerArgs,
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
    let setup = Setup::new(&options.server, "grpc").await?;
    let mut holder_seed = [0u8; 32];
    getrandom::fill(&mut holder_seed).map_err(|e| format!("random holder seed: {e}"))?;
    let holder = HolderKey::from_seed(holder_seed);

    // Replay protection and revocation: in memory, or shared in Redis. The
    // list is signed under the primary root key and checked under any.
    let now_ms = Timestamp::now().unix_millis();
    let cell = RevocationCell::from_keys(&setup.root)?;
    let empty_list = Revoker::from_keys(&setup.root)?.publish(now_ms);
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

    let layer = grpc::capability_layer(setup.verifier.clone(), setup.auditor.clone())?
        .nonce_store(nonces)
        .revocations(cell)
        .sink((setup.sink.clone(), print));

    let running = grpc::spawn(options.addr, Some(layer), Tools::protected()).await?;
    let url = running.url();
    let issuer = &setup.issuer;
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
    // The client checks receipts with the audit key file (given, or written
    // for this run's random key); from the environment, it reads the same
    // variable.
    let audit = match &setup.audit_key_file {
        Some(path) => format!("--audit-key-file {} ", path.display()),
        None => String::new(),
    };
    let client = "cargo run -p capnagent-examples --bin grpc-tool-client --";

    println!("grpc-tool-server listening on {url}");
    println!(
        "  stores: {}",
        match &options.redis {
            Some(url) => format!("Redis at {url} (nonces, revocation list)"),
            None => "in memory (nonces, revocation list)".to_owned(),
        }
    );
    setup.describe();
    println!("  API key (x-api-key): {PLANNER_API_KEY} -> caller {PLANNER}");
    println!("\nbearer token ({PURCHASE_TOOL}, amount <= 5000, 24 h):\n  {purchase}");
    println!("\nholder-bound token ({WIRE_TOOL}, amount <= 100000, 24 h):\n  {wire}");
    println!("holder seed (the holder's secret; demo only):\n  {seed}");
    println!("\ntry:");
    println!(
        "  {client} --addr {url} {audit}--token {purchase} purchase --merchant acme --amount 1200"
    );
    println!(
        "  {client} --addr {url} {audit}--token {purchase} purchase --merchant acme --amount 9000"
    );
    println!(
        "  {client} --addr {url} {audit}--token {wire} --holder-seed {seed} wire --recipient bob --amount 25000"
    );
    println!("\nCtrl-C to stop.\n");
    setup
        .ready(
            "grpc-tool-server",
            &url,
            &[("purchase", &purchase), ("wire", &wire)],
        )
        .print()?;

    capnagent_examples::shutdown_signal().await;
    running.stop().await?;
    setup.finish().await
}
