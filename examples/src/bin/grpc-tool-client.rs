//! Calls the example gRPC tool service with a capability, and prints the
//! reply and its receipt, or the denial's status, reason and receipt.
//!
//! ```text
//! cargo run -p capnagent-examples --bin grpc-tool-client -- demo
//! cargo run -p capnagent-examples --bin grpc-tool-client -- --addr http://127.0.0.1:50051 \
//!     --token TOKEN [--holder-seed HEX] [--audit-key HEX] purchase --merchant acme --amount 1200
//! ```
//!
//! `demo` starts a server in this process (fresh keys, in-memory stores)
//! and runs a short tour: allowed and denied purchases, a call without a
//! token, a holder-bound wire with a proof, the same proof replayed, and a
//! streaming upload under an `arg.*` caveat. Exit status 0 when every
//! call was decided as expected (or, for one call, when it was allowed).

use std::error::Error;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use capnagent::JsonValue;
use capnagent::{Auditor, HolderKey, InMemoryNonceStore, Issuer, Verifier};
use capnagent_examples::grpc::pb::tool_service_client::ToolServiceClient;
use capnagent_examples::grpc::pb::{LogLine, PurchaseRequest, WireRequest};
use capnagent_examples::grpc::{
    self, API_KEY_METADATA, Credentials, PURCHASE, PURCHASE_TOOL, Tools, UPLOAD_LOGS,
    UPLOAD_LOGS_TOOL, WIRE, WIRE_TOOL,
};
use capnagent_examples::{PLANNER, PLANNER_API_KEY};
use capnagent_tonic::{RECEIPT_METADATA, client};
use clap::{Parser, Subcommand};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

type BoxError = Box<dyn Error + Send + Sync>;

/// Call the example gRPC tool service with a capability.
#[derive(Debug, Parser)]
#[command(name = "grpc-tool-client")]
struct Options {
    /// The server's URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The capability token (as printed by grpc-tool-server).
    #[arg(long, default_value = "")]
    token: String,
    /// The demo API key, which tells the server who is calling.
    #[arg(long, default_value = PLANNER_API_KEY)]
    api_key: String,
    /// For a holder-bound token: the holder's 32-byte seed, in hex. Each
    /// call then carries a proof over its tool and args.
    #[arg(long, value_name = "HEX")]
    holder_seed: Option<String>,
    /// The server's audit key(s), as a key spec (hex, or `KID:HEX,...`), to
    /// check the receipts' signatures. Prefer --audit-key-file or
    /// CAPNAGENT_AUDIT_KEY.
    #[arg(long, alias = "audit-key", value_name = "SPEC")]
    audit_key_hex: Option<String>,
    /// File holding the server's audit key(s) (a key spec or `capnagent
    /// keygen` output); or set CAPNAGENT_AUDIT_KEY.
    #[arg(long, value_name = "PATH")]
    audit_key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Buy something (tool `checkout.purchase`).
    Purchase {
        #[arg(long, default_value = "acme")]
        merchant: String,
        /// Minor units (cents).
        #[arg(long)]
        amount: i64,
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// Send money (tool `bank.wire`).
    Wire {
        #[arg(long)]
        recipient: String,
        /// Minor units (cents).
        #[arg(long)]
        amount: i64,
    },
    /// Upload log lines (tool `logs.upload`, client streaming: args are null).
    UploadLogs {
        /// The lines.
        lines: Vec<String>,
    },
    /// Start a server in this process and run a short tour.
    Demo,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    let result = match options.command {
        Command::Demo => demo().await,
        _ => call(options).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("grpc-tool-client failed: {e}");
            ExitCode::from(2)
        }
    }
}

/// One call, as the command line says. `Ok(true)` when allowed.
async fn call(options: Options) -> Result<bool, BoxError> {
    if options.token.is_empty() {
        return Err("--token is required (grpc-tool-server prints one)".into());
    }
    let mut credentials = Credentials::new(&options.api_key, &options.token)?;
    if let Some(seed) = &options.holder_seed {
        credentials = credentials.with_holder_key(holder_from_hex(seed)?)?;
    }
    let auditors = match capnagent::keys::resolve_audit(
        options.audit_key_hex.as_deref(),
        options.audit_key_file.as_deref(),
    )? {
        Some(ring) => Auditor::all_from_keys(&ring)?,
        None => Vec::new(),
    };
    let mut tools = ToolServiceClient::connect(options.addr.clone()).await?;
    let allowed = match options.command {
        Command::Purchase {
            merchant,
            amount,
            currency,
        } => {
            let message = PurchaseRequest {
                merchant,
                amount,
                currency,
            };
            report(
                &tools.purchase(credentials.unary(PURCHASE, message)?).await,
                &auditors,
            )
        }
        Command::Wire { recipient, amount } => {
            let message = WireRequest { recipient, amount };
            report(
                &tools.wire(credentials.unary(WIRE, message)?).await,
                &auditors,
            )
        }
        Command::UploadLogs { lines } => {
            let lines = tokio_stream::iter(lines.into_iter().map(|line| LogLine { line }));
            let request =
                credentials.request(UPLOAD_LOGS, lines, &JsonValue::Null, grpc::unix_millis())?;
            report(&tools.upload_logs(request).await, &auditors)
        }
        Command::Demo => unreachable!("handled in main"),
    };
    Ok(allowed)
}

fn holder_from_hex(seed: &str) -> Result<HolderKey, BoxError> {
    let bytes = base16ct::mixed::decode_vec(seed)?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "--holder-seed must be 32 bytes of hex")?;
    Ok(HolderKey::from_seed(seed))
}

/// Prints the outcome; true when the call was allowed.
fn report<T: Debug>(result: &Result<Response<T>, Status>, auditors: &[Auditor]) -> bool {
    let (allowed, receipt) = match result {
        Ok(response) => {
            println!("OK     {:?}", response.get_ref());
            let receipt = response
                .metadata()
                .get_bin(RECEIPT_METADATA)
                .and_then(|v| v.to_bytes().ok())
                .and_then(|b| String::from_utf8(b.to_vec()).ok());
            (true, receipt)
        }
        Err(status) => {
            println!("DENIED {:?}: {}", status.code(), status.message());
            (false, client::denied_receipt(status))
        }
    };
    match receipt {
        Some(receipt) => {
            println!("       receipt: {receipt}");
            if !auditors.is_empty() {
                match Auditor::verify_with_any(auditors, &receipt) {
                    Ok((_, auditor)) => println!(
                        "       receipt signature verified with audit key {}",
                        auditor.key_id()
                    ),
                    Err(e) => println!("       receipt does NOT verify: {e}"),
                }
            }
        }
        None => println!("       (no receipt: the call did not reach the capability layer)"),
    }
    allowed
}

/// The tour. `Ok(true)` when every call was decided as expected.
async fn demo() -> Result<bool, BoxError> {
    let mut keys = [[0u8; 32]; 3];
    for key in &mut keys {
        getrandom::fill(key).map_err(|e| format!("random key: {e}"))?;
    }
    let [root_key, audit_key, holder_seed] = keys;
    let auditor = Auditor::new(&audit_key)?;
    let holder = HolderKey::from_seed(holder_seed);

    let layer = grpc::capability_layer(Verifier::new(&root_key)?, auditor.clone())?
        .nonce_store(Arc::new(InMemoryNonceStore::new()));
    let running = grpc::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(layer),
        Tools::protected(),
    )
    .await?;
    let channel = Channel::from_shared(running.url())?.connect().await?;
    let mut tools = ToolServiceClient::new(channel);
    println!(
        "server on {} (fresh keys, in-memory nonce store)\n",
        running.url()
    );

    let issuer = Issuer::from_key(&root_key)?;
    let purchases = issuer
        .issue("demo-purchases")
        .caller_is(PLANNER)?
        .tool_is(PURCHASE_TOOL)?
        .arg_at_most("amount", 5000)?
        .build()?
        .serialize();
    let wires = issuer
        .issue("demo-wires")
        .holder_of_key(holder.public_key())?
        .tool_is(WIRE_TOOL)?
        .arg_at_most("amount", 100_000)?
        .build()?
        .serialize();
    let logs = issuer
        .issue("demo-logs")
        .tool_is(UPLOAD_LOGS_TOOL)?
        .arg_at_most("lines", 10)?
        .build()?
        .serialize();
    let bearer = Credentials::new(PLANNER_API_KEY, &purchases)?;
    let bound = Credentials::new(PLANNER_API_KEY, &wires)?.with_holder_key(holder)?;
    let purchase = |amount| PurchaseRequest {
        merchant: "acme".into(),
        amount,
        currency: "EUR".into(),
    };
    let mut expected = true;
    let mut check = |what: &str, got: Option<Code>, want: Option<Code>| {
        let ok = got == want;
        expected &= ok;
        println!(
            "       -> {what}: {}\n",
            if ok { "as expected" } else { "UNEXPECTED" }
        );
    };

    println!("1. purchase 1200 with `arg.amount <= 5000`");
    let r = tools
        .purchase(bearer.unary(PURCHASE, purchase(1200))?)
        .await;
    check("allowed", code_of(&r, &auditor), None);

    println!("2. purchase 9000 with the same token");
    let r = tools
        .purchase(bearer.unary(PURCHASE, purchase(9000))?)
        .await;
    check(
        "PERMISSION_DENIED",
        code_of(&r, &auditor),
        Some(Code::PermissionDenied),
    );

    println!("3. purchase without a token");
    let mut request = Request::new(purchase(1200));
    request
        .metadata_mut()
        .insert(API_KEY_METADATA, PLANNER_API_KEY.parse()?);
    let r = tools.purchase(request).await;
    check(
        "UNAUTHENTICATED",
        code_of(&r, &auditor),
        Some(Code::Unauthenticated),
    );

    println!("4. wire 25000 with a holder-bound token and a proof");
    let wire = WireRequest {
        recipient: "bob".into(),
        amount: 25_000,
    };
    let args = capnagent_tonic::Descriptors::decode(grpc::pb::FILE_DESCRIPTOR_SET)?
        .args_for(WIRE, &wire)?;
    let now_ms = grpc::unix_millis();
    let r = tools
        .wire(bound.request(WIRE, wire.clone(), &args, now_ms)?)
        .await;
    check("allowed", code_of(&r, &auditor), None);

    println!("5. the same call with the same proof (a replay)");
    let r = tools
        .wire(bound.request(WIRE, wire.clone(), &args, now_ms)?)
        .await;
    check(
        "PERMISSION_DENIED",
        code_of(&r, &auditor),
        Some(Code::PermissionDenied),
    );

    println!("6. the holder-bound token without a proof");
    let r = tools
        .wire(Credentials::new(PLANNER_API_KEY, &wires)?.unary(WIRE, wire)?)
        .await;
    check(
        "UNAUTHENTICATED",
        code_of(&r, &auditor),
        Some(Code::Unauthenticated),
    );

    println!("7. a client-streaming upload under `arg.lines <= 10` (streams have no args)");
    let lines = tokio_stream::iter(["a", "b"].map(|line| LogLine { line: line.into() }));
    let request = Credentials::new(PLANNER_API_KEY, &logs)?.request(
        UPLOAD_LOGS,
        lines,
        &JsonValue::Null,
        grpc::unix_millis(),
    )?;
    let r = tools.upload_logs(request).await;
    check(
        "PERMISSION_DENIED",
        code_of(&r, &auditor),
        Some(Code::PermissionDenied),
    );

    running.stop().await?;
    println!(
        "{}",
        if expected {
            "every call was decided as expected"
        } else {
            "some calls were NOT decided as expected"
        }
    );
    Ok(expected)
}

/// Reports a call (checking its receipt) and returns its status code
/// (`None` when allowed).
fn code_of<T: Debug>(result: &Result<Response<T>, Status>, auditor: &Auditor) -> Option<Code> {
    report(result, std::slice::from_ref(auditor));
    result.as_ref().err().map(Status::code)
}
