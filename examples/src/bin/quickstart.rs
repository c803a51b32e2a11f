//! The capnagent quickstart: a tool API behind one `CapabilityLayer`, one
//! allowed and one denied call over real HTTP, a budget across calls (the
//! third purchase under `calls <= 2` refused), the signed receipts, and
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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capnagent::{
    AuditLogIter, Capability, ChainVerifier, InMemoryBudgetStore, Receipt, Timestamp,
    audit_log_files,
};
use capnagent_examples::serve::{ServerArgs, Setup};
use capnagent_examples::{PLANNER, PLANNER_API_KEY, tool_api};
use capnagent_tower::CapabilityLayer;
use clap::Parser;
use serde_json::Value;

type BoxError = Box<dyn Error + Send + Sync>;

/// The capnagent quickstart: a tool API behind one capability layer.
#[derive(Debug, Parser)]
#[command(name = "quickstart")]
struct Options {
    /// Keep the server running and print a token and `curl` commands.
    #[arg(long)]
    serve: bool,
    /// Port to listen on (127.0.0.1; 0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
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
    setup: Setup,
}

async fn start(options: &Options) -> Result<Demo, BoxError> {
    // The root key mints capabilities, the audit key signs receipts: from
    // the flags, files or environment, else random for this run.
    let setup = Setup::new(&options.server, "quickstart").await?;
    // Budget caveats (`calls <= 2`) count calls in a budget store: this
    // process's memory here, `capnagent_redis::RedisBudgetStore` for a
    // fleet.
    let verifier = setup
        .verifier
        .clone()
        .with_budget_store(Arc::new(InMemoryBudgetStore::new()));
    let layer = CapabilityLayer::new(verifier, setup.auditor.clone())?.sink(setup.sink.clone());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, tool_api(layer)).await {
            eprintln!("server error: {e}");
        }
    });
    Ok(Demo { addr, setup })
}

/// The capability the server hands to the planner agent: checkout only, up
/// to 50.00, for one hour.
fn issue(demo: &Demo) -> Result<Capability, BoxError> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let expiry = Timestamp::from_unix_millis((now + 3600) * 1000);
    Ok(demo
        .setup
        .issuer
        .issue("agent-42")
        .caller_is(PLANNER)?
        .tool_is("checkout.purchase")?
        .arg_at_most("amount_cents", 5000)?
        .not_after(expiry)?
        .build()?)
}

/// A second capability: checkout only, and at most two calls in all.
fn issue_budgeted(demo: &Demo) -> Result<Capability, BoxError> {
    Ok(demo
        .setup
        .issuer
        .issue("agent-42-budget")
        .caller_is(PLANNER)?
        .tool_is("checkout.purchase")?
        .caveat("calls <= 2")?
        .build()?)
}

async fn run(options: Options) -> Result<(), BoxError> {
    let demo = start(&options).await?;
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
    println!("Audit log: {}", demo.setup.log_path.display());
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
    let budgeted = issue_budgeted(&demo)?;
    println!("4. A budget across calls: a capability with");
    for caveat in budgeted.caveats() {
        println!("   caveat:     {caveat}");
    }
    let budget_token = budgeted.serialize();
    let body = r#"{"sku":"HDMI cable","amount_cents":899}"#;
    let mut statuses = Vec::new();
    for n in 1..=3 {
        println!("   purchase {n}: POST /tools/checkout.purchase {body}");
        let outcome = call(
            &client,
            &format!("{base}/tools/checkout.purchase"),
            &budget_token,
            body,
        )
        .await?;
        match outcome.receipt.outcome().reason() {
            None => println!("   -> {} allowed", outcome.status),
            Some(_) => show(&outcome),
        }
        statuses.push(outcome.status);
    }
    if statuses != [200, 200, 403] {
        return Err(format!("expected 200, 200, 403 under the budget, got {statuses:?}").into());
    }

    println!();
    println!("5. The receipts verify under the server's audit key");
    for (name, outcome) in [("allowed", &allowed), ("denied", &denied)] {
        demo.setup.auditor.verify(&outcome.receipt_json)?;
        println!(
            "   {name:<7} receipt: signature {}... ok",
            &outcome.receipt.signature_hex()[..16]
        );
    }

    let setup = &demo.setup;
    setup.sink.flush().await?;
    let logged: Vec<Receipt> = AuditLogIter::open(&setup.log_path)?.collect::<Result<_, _>>()?;
    println!();
    println!(
        "6. The audit log holds one signed receipt per request ({} lines)",
        logged.len()
    );
    for receipt in &logged {
        setup.auditor.verify_receipt(receipt)?;
        println!("   {}", receipt.to_json());
    }
    if logged.len() != 5 {
        return Err(format!(
            "expected 5 receipts in the audit log, found {}",
            logged.len()
        )
        .into());
    }
    // Each line commits to the one before it: a deleted, reordered or
    // inserted line breaks the chain (`capnagent audit verify` checks it).
    let report = ChainVerifier::new(std::slice::from_ref(&setup.auditor))
        .verify(&audit_log_files(&setup.log_path)?)
        .map_err(|e| format!("the audit log's chain does not verify: {e}"))?;
    if let Some(head) = &report.head {
        println!(
            "   the hash chain verifies: {} records, checkpoint {head}",
            report.records
        );
    }

    println!();
    println!("Keep it running and try it yourself:");
    println!("  cargo run --release -p capnagent-examples --bin quickstart -- --serve");
    demo.setup.finish().await
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
    let Demo { addr, setup } = demo;
    let base = format!("http://{addr}");
    let auth = format!("-H 'x-api-key: {PLANNER_API_KEY}' -H \"authorization: Bearer $TOKEN\"");
    println!("capnagent quickstart: serving the tool API on {base} (Ctrl-C to stop)");
    setup.describe();
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
    println!("tail -f {}", setup.log_path.display());
    setup
        .ready("quickstart", &base, &[("planner", token)])
        .print()?;

    capnagent_examples::shutdown_signal().await;
    println!();
    setup.finish().await
}
