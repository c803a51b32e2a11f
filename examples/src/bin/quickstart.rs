//! The capnagent quickstart: a tool API behind one `CapabilityLayer`, one
//! allowed and one denied call over real HTTP, their signed receipts, and
//! the audit log.
//!
//! ```text
//! cargo run --release -p capnagent-examples --bin quickstart
//! cargo run --release -p capnagent-examples --bin quickstart -- --serve [--port 8080]
//! ```
//!
//! `--serve` keeps the server running and prints a token and ready-to-paste
//! `curl` commands.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use capnagent::{AuditLog, Auditor, Capability, Issuer, Receipt, Timestamp, Verifier};
use capnagent_examples::{PLANNER, PLANNER_API_KEY, tool_api};
use capnagent_tower::{AuditLogSink, CapabilityLayer};
use serde_json::Value;

type BoxError = Box<dyn Error + Send + Sync>;

struct Options {
    serve: bool,
    port: u16,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        serve: false,
        port: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => options.serve = true,
            "--port" => {
                options.port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("--port needs a port number")?;
            }
            "-h" | "--help" => {
                return Err("usage: quickstart [--serve [--port PORT]]".into());
            }
            other => return Err(format!("unknown argument `{other}`; try --help")),
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
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the demo server holds.
struct Demo {
    addr: SocketAddr,
    issuer: Issuer,
    auditor: Auditor,
    sink: AuditLogSink,
    log_path: std::path::PathBuf,
    dir: tempfile::TempDir,
}

async fn start(port: u16) -> Result<Demo, BoxError> {
    // Fresh random keys for this run: the root key mints capabilities, the
    // audit key signs receipts. A real server loads them from its secrets.
    let mut root_key = [0u8; 32];
    let mut audit_key = [0u8; 32];
    getrandom::fill(&mut root_key).map_err(|e| format!("random root key: {e}"))?;
    getrandom::fill(&mut audit_key).map_err(|e| format!("random audit key: {e}"))?;

    let dir = tempfile::Builder::new()
        .prefix("capnagent-quickstart-")
        .tempdir()?;
    let log_path = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&log_path)?)?;
    let auditor = Auditor::new(&audit_key)?;
    let layer =
        CapabilityLayer::new(Verifier::new(&root_key)?, auditor.clone())?.sink(sink.clone());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, tool_api(layer)).await {
            eprintln!("server error: {e}");
        }
    });
    Ok(Demo {
        addr,
        issuer: Issuer::from_key(&root_key)?,
        auditor,
        sink,
        log_path,
        dir,
    })
}

/// The capability the server hands to the planner agent: checkout only, up
/// to 50.00, for one hour.
fn issue(demo: &Demo) -> Result<Capability, BoxError> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let expiry = Timestamp::from_unix_millis((now + 3600) * 1000);
    Ok(demo
        .issuer
        .issue("agent-42")
        .caller_is(PLANNER)?
        .tool_is("checkout.purchase")?
        .arg_at_most("amount_cents", 5000)?
        .not_after(expiry)?
        .build()?)
}

async fn run(options: Options) -> Result<(), BoxError> {
    let demo = start(options.port).await?;
    let capability = issue(&demo)?;
    let token = capability.serialize();
    if options.serve {
        return serve(demo, &token).await;
    }

    println!("capnagent quickstart");
    println!("====================");
    println!();
    println!(
        "Tool API on http://{} (checkout.purchase, bank.wire, files.read),",
        demo.addr
    );
    println!("behind one CapabilityLayer; an API-key layer in front says who calls.");
    println!("Audit log: {}", demo.log_path.display());
    println!();
    println!("1. The server issues a capability to {PLANNER}");
    println!("   identifier: {}", capability.identifier());
    for caveat in capability.caveats() {
        println!("   caveat:     {caveat}");
    }
    println!(
        "   token:      {}... ({} bytes)",
        &token[..24.min(token.len())],
        token.len()
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("http://{}", demo.addr);

    println!();
    let body = r#"{"sku":"USB-C cable","amount_cents":1299}"#;
    println!("2. Allowed call: POST /tools/checkout.purchase {body}");
    let allowed = call(
        &client,
        &format!("{base}/tools/checkout.purchase"),
        &token,
        body,
    )
    .await?;
    show(&allowed);

    println!();
    let body = r#"{"to":"acct-7731","amount_cents":250000}"#;
    println!("3. Denied call: POST /tools/bank.wire {body}");
    let denied = call(&client, &format!("{base}/tools/bank.wire"), &token, body).await?;
    show(&denied);

    if allowed.status != 200 || !allowed.receipt.is_allowed() {
        return Err(format!(
            "expected the purchase to be allowed, got {}",
            allowed.status
        )
        .into());
    }
    if denied.status != 403 || denied.receipt.is_allowed() {
        return Err(format!("expected the wire to be denied, got {}", denied.status).into());
    }

    println!();
    println!("4. Both receipts verify under the server's audit key");
    for (name, outcome) in [("allowed", &allowed), ("denied", &denied)] {
        demo.auditor.verify(&outcome.receipt_json)?;
        println!(
            "   {name:<7} receipt: signature {}... ok",
            &outcome.receipt.signature_hex()[..16]
        );
    }

    demo.sink.flush().await?;
    let logged: Vec<Receipt> = AuditLog::open(&demo.log_path)?
        .iter()?
        .collect::<Result<_, _>>()?;
    println!();
    println!(
        "5. The audit log holds one signed receipt per request ({} lines)",
        logged.len()
    );
    for receipt in &logged {
        demo.auditor.verify_receipt(receipt)?;
        println!("   {}", receipt.to_json());
    }
    if logged.len() != 2 {
        return Err(format!(
            "expected 2 receipts in the audit log, found {}",
            logged.len()
        )
        .into());
    }

    println!();
    println!("Keep it running and try it yourself:");
    println!("  cargo run --release -p capnagent-examples --bin quickstart -- --serve");
    Ok(())
}

/// One call's decision, as seen by the client.
struct Outcome {
    status: u16,
    body: Value,
    receipt_json: String,
    receipt: Receipt,
}

async fn call(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &'static str,
) -> Result<Outcome, BoxError> {
    let response = client
        .post(url)
        .header("x-api-key", PLANNER_API_KEY)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    // Allowed answers embed the receipt in `receipt`; denials (RFC 9457
    // problem details) too.
    let receipt_json = body
        .get("receipt")
        .ok_or("response carries no receipt")?
        .to_string();
    let receipt = Receipt::from_json(&receipt_json)?;
    Ok(Outcome {
        status,
        body,
        receipt_json,
        receipt,
    })
}

fn show(outcome: &Outcome) {
    match outcome.receipt.outcome().reason() {
        None => {
            println!("   -> {} allowed", outcome.status);
            println!("   result:  {}", outcome.body["result"]);
        }
        Some(reason) => {
            println!("   -> {} denied: {reason}", outcome.status);
            println!(
                "   problem: {} ({})",
                outcome.body["title"].as_str().unwrap_or(""),
                outcome.body["code"].as_str().unwrap_or("")
            );
        }
    }
    println!("   receipt: {}", outcome.receipt.to_json());
}

async fn serve(demo: Demo, token: &str) -> Result<(), BoxError> {
    // The log outlives the server, for a look afterwards.
    let Demo {
        addr,
        sink,
        log_path,
        dir,
        ..
    } = demo;
    let _kept = dir.keep();
    let base = format!("http://{addr}");
    let auth = format!("-H 'x-api-key: {PLANNER_API_KEY}' -H \"authorization: Bearer $TOKEN\"");
    println!("capnagent quickstart: serving the tool API on {base} (Ctrl-C to stop)");
    println!("audit log: {}", log_path.display());
    println!();
    println!("A capability for {PLANNER}: checkout.purchase only, up to 5000 cents, for one hour:");
    println!();
    println!("TOKEN='{token}'");
    println!();
    println!("# allowed (200, with the receipt)");
    println!(
        "curl -s -X POST {base}/tools/checkout.purchase {auth} -H 'content-type: application/json' -d '{{\"sku\":\"USB-C cable\",\"amount_cents\":1299}}'"
    );
    println!("# denied by arg.amount_cents <= 5000 (403)");
    println!(
        "curl -s -X POST {base}/tools/checkout.purchase {auth} -H 'content-type: application/json' -d '{{\"sku\":\"TV\",\"amount_cents\":99900}}'"
    );
    println!("# denied by tool == \"checkout.purchase\" (403)");
    println!(
        "curl -s -X POST {base}/tools/bank.wire {auth} -H 'content-type: application/json' -d '{{\"to\":\"acct-7731\",\"amount_cents\":100}}'"
    );
    println!("# denied for files.read, args from the query string (403)");
    println!("curl -s '{base}/files?path=/srv/report.txt' {auth}");
    println!("# no token (401)");
    println!(
        "curl -s -i -X POST {base}/tools/checkout.purchase -H 'x-api-key: {PLANNER_API_KEY}' -H 'content-type: application/json' -d '{{\"amount_cents\":1}}'"
    );
    println!("# the audit log, one receipt per request");
    println!("tail -f {}", log_path.display());

    capnagent_examples::shutdown_signal().await;
    sink.flush().await?;
    println!();
    println!(
        "stopped; {} receipts written to {}",
        sink.stats().written,
        log_path.display()
    );
    Ok(())
}
