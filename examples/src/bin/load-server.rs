//! The load-test server for `benches/load.sh`: the same JSON-parsing
//! handler on `/protected/checkout` (behind a `CapabilityLayer`, 4
//! caveats, args from the 1 KiB JSON body, receipts to the audit log),
//! `/unprotected/checkout` (no layer) and `/jwt/checkout` (behind a
//! hand-written JWT check, `capnagent_examples::load::jwt_app`).
//!
//! ```text
//! load-server [--addr 127.0.0.1:8089] [--sink audit|audit-fail-open|tracing|none] [--workers N]
//! ```
//!
//! `audit` writes each allowed call's receipt before the call runs
//! (write-ahead, the `AuditLogSink` default); `audit-fail-open` queues it
//! and lets the call go on (`AuditLogSink::builder(..).fail_open()`).
//!
//! Prints `listening http://ADDR`, `token TOKEN`, `jwt TOKEN` (HS256, valid
//! for a day, tool `checkout.purchase`, at most 5000 cents) and
//! `body-file PATH` (the 1 KiB request body), then serves until Ctrl-C or
//! SIGTERM.

use std::error::Error;
use std::io::Write;
use std::process::ExitCode;

use capnagent::{AuditLog, Auditor, Issuer, Receipt, Verifier};
use capnagent_examples::jwt::{self, Claims, JwtKeys};
use capnagent_examples::load;
use capnagent_tower::{AuditLogSink, CapabilityLayer};

type BoxError = Box<dyn Error + Send + Sync>;

fn main() -> ExitCode {
    // `--workers N` sets the runtime's worker threads (default: one per CPU).
    let workers = std::env::args()
        .skip_while(|a| a != "--workers")
        .nth(1)
        .and_then(|n| n.parse::<usize>().ok());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("load-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let mut addr = "127.0.0.1:8089".to_owned();
    let mut sink_kind = "audit".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?,
            "--sink" => {
                sink_kind = args
                    .next()
                    .ok_or("--sink needs audit|audit-fail-open|tracing|none")?
            }
            "--workers" => {
                args.next().ok_or("--workers needs a number")?;
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }

    let mut root_key = [0u8; 32];
    let mut audit_key = [0u8; 32];
    getrandom::fill(&mut root_key).map_err(|e| format!("random key: {e}"))?;
    getrandom::fill(&mut audit_key).map_err(|e| format!("random key: {e}"))?;
    let issuer = Issuer::from_key(&root_key)?;
    let mut builder = issuer.issue("loadtest");
    for caveat in load::CAVEATS {
        builder.caveat(caveat)?;
    }
    let token = builder.build()?.serialize();
    let mut jwt_secret = [0u8; 32];
    getrandom::fill(&mut jwt_secret).map_err(|e| format!("random key: {e}"))?;
    let jwt_keys = JwtKeys::hs256(&jwt_secret)?;
    let jwt = jwt_keys.mint(&Claims {
        sub: load::CALLER.to_owned(),
        tool: load::TOOL.to_owned(),
        max_amount_cents: 5000,
        exp: jwt::unix_seconds() + 24 * 3600,
    })?;

    let dir = tempfile::Builder::new()
        .prefix("capnagent-load-")
        .tempdir()?;
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, load::BODY)?;
    let layer = CapabilityLayer::new(Verifier::new(&root_key)?, Auditor::new(&audit_key)?)?;
    let (layer, audit) = match sink_kind.as_str() {
        "audit" => {
            let sink = AuditLogSink::new(AuditLog::open(dir.path().join("audit.ndjson"))?)?;
            (layer.sink(sink.clone()), Some(sink))
        }
        "audit-fail-open" => {
            let sink = AuditLogSink::builder(AuditLog::open(dir.path().join("audit.ndjson"))?)
                .fail_open()
                .build()?;
            (layer.sink(sink.clone()), Some(sink))
        }
        "tracing" => {
            tracing_subscriber::fmt().with_writer(std::io::sink).init();
            (layer, None)
        }
        "none" => (layer.sink(|_: &Receipt| {}), None),
        other => return Err(format!("unknown sink `{other}`").into()),
    };

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening http://{}", listener.local_addr()?)?;
    writeln!(out, "token {token}")?;
    writeln!(out, "jwt {jwt}")?;
    writeln!(out, "body-file {}", body_file.display())?;
    out.flush()?;
    drop(out);

    axum::serve(listener, load::routes(layer, jwt_keys))
        .with_graceful_shutdown(capnagent_examples::shutdown_signal())
        .await?;
    if let Some(sink) = audit {
        sink.close().await?;
        let stats = sink.stats();
        eprintln!(
            "load-server: {} receipts written, {} failed, {} calls refused, {} requests waited for the audit queue",
            stats.written, stats.failed, stats.refused, stats.waited
        );
    }
    Ok(())
}
