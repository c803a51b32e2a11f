//! Loopback tests of `capnagent_tonic` with a real tonic server (the
//! example tool service on 127.0.0.1:0) and a real tonic client: every
//! status code, an `arg.amount` caveat, concurrency with one receipt per
//! call, the handler reading its receipt, streaming, the interceptor form,
//! holder-of-key proofs, and compressed messages (every encoding tonic
//! supports, the decompressed limit, raw HTTP/2 calls with odd encodings).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes};
use capnagent::JsonValue;
use capnagent::{AuditLog, Auditor, HolderKey, InMemoryNonceStore, Issuer, Receipt, Verifier};
use capnagent_examples::PLANNER_API_KEY;
use capnagent_examples::grpc::pb::tool_service_client::ToolServiceClient;
use capnagent_examples::grpc::pb::tool_service_server::ToolServiceServer;
use capnagent_examples::grpc::pb::{LogLine, PurchaseRequest, WireRequest};
use capnagent_examples::grpc::{
    self, API_KEY_METADATA, Credentials, PURCHASE, Running, Tools, UPLOAD_LOGS, WIRE,
};
use capnagent_tonic::{
    Anonymous, AuditLogSink, CapabilityInterceptor, CapabilityLayer, Descriptors, RECEIPT_METADATA,
    client,
};
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Status};
use tower::Layer as _;

const ROOT: [u8; 32] = [7; 32];
const AUDIT: [u8; 32] = [9; 32];

fn auditor() -> Auditor {
    Auditor::new(&AUDIT).unwrap()
}

fn layer() -> CapabilityLayer {
    grpc::capability_layer(Verifier::new(&ROOT).unwrap(), auditor()).unwrap()
}

fn token(identifier: &str, caveats: &[&str]) -> String {
    let issuer = Issuer::from_key(&ROOT).unwrap();
    let mut builder = issuer.issue(identifier);
    for caveat in caveats {
        builder.caveat(caveat).unwrap();
    }
    builder.build().unwrap().serialize()
}

fn bound_token(holder: &HolderKey, caveats: &[&str]) -> String {
    let issuer = Issuer::from_key(&ROOT).unwrap();
    let mut builder = issuer.issue("bound");
    builder.holder_of_key(holder.public_key()).unwrap();
    for caveat in caveats {
        builder.caveat(caveat).unwrap();
    }
    builder.build().unwrap().serialize()
}

/// A sink that keeps every receipt.
fn collecting() -> (
    impl Fn(&Receipt) + Send + Sync + 'static,
    Arc<Mutex<Vec<Receipt>>>,
) {
    let receipts: Arc<Mutex<Vec<Receipt>>> = Arc::default();
    let sink = {
        let receipts = Arc::clone(&receipts);
        move |receipt: &Receipt| receipts.lock().unwrap().push(receipt.clone())
    };
    (sink, receipts)
}

async fn start(layer: CapabilityLayer) -> (Running, ToolServiceClient<Channel>) {
    let running = grpc::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(layer),
        Tools::protected(),
    )
    .await
    .unwrap();
    let client = ToolServiceClient::connect(running.url()).await.unwrap();
    (running, client)
}

/// Serves `router`'s services without the example's API-key interceptor.
async fn start_plain(router: tonic::transport::server::Router) -> ToolServiceClient<Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    ToolServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn purchase(amount: i64) -> PurchaseRequest {
    PurchaseRequest {
        merchant: "acme".into(),
        amount,
        currency: "EUR".into(),
    }
}

fn bearer(token: &str) -> Credentials {
    Credentials::new(PLANNER_API_KEY, token).unwrap()
}

/// The signed receipt a denial carries, checked with the audit key.
fn receipt_of(status: &Status) -> Receipt {
    let json = client::denied_receipt(status).expect("a denial carries its receipt");
    auditor().verify(&json).unwrap()
}

#[tokio::test]
async fn missing_malformed_and_forged_tokens_are_unauthenticated() {
    let (sink, receipts) = collecting();
    let (running, mut tools) = start(layer().sink(sink)).await;

    let mut missing = Request::new(purchase(100));
    missing
        .metadata_mut()
        .insert(API_KEY_METADATA, PLANNER_API_KEY.parse().unwrap());
    let forged = Issuer::from_key(&[8; 32])
        .unwrap()
        .issue("forged")
        .caveat("arg.amount <= 5000")
        .unwrap()
        .build()
        .unwrap()
        .serialize();
    let requests = [
        ("missing", missing),
        (
            "malformed",
            bearer("not-a-token")
                .unary(PURCHASE, purchase(100))
                .unwrap(),
        ),
        (
            "forged",
            bearer(&forged).unary(PURCHASE, purchase(100)).unwrap(),
        ),
    ];
    for (what, request) in requests {
        let status = tools.purchase(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        let receipt = receipt_of(&status);
        assert_eq!(receipt.outcome().reason(), Some(status.message()));
        assert_eq!(receipt.context_summary().tool(), grpc::PURCHASE_TOOL);
        assert!(
            !status.message().contains(&forged),
            "the token is never echoed"
        );
    }
    assert_eq!(receipts.lock().unwrap().len(), 3, "one receipt per call");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn amount_caveat_allows_1200_and_denies_9000_with_a_signed_receipt() {
    let (sink, receipts) = collecting();
    let (running, mut tools) = start(layer().sink(sink)).await;
    let token = token(
        "purchases",
        &[r#"tool == "checkout.purchase""#, "arg.amount <= 5000"],
    );

    let reply = tools
        .purchase(bearer(&token).unary(PURCHASE, purchase(1200)).unwrap())
        .await
        .unwrap();
    assert!(reply.get_ref().order_id.starts_with("order-"));

    let status = tools
        .purchase(bearer(&token).unary(PURCHASE, purchase(9000)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "caveat failed: arg.amount <= 5000");
    let receipt = receipt_of(&status);
    assert_eq!(receipt.capability_identifier(), "purchases");
    assert_eq!(
        receipt.outcome().reason(),
        Some("caveat failed: arg.amount <= 5000")
    );

    // The receipt commits to the args as the layer saw them.
    let args = Descriptors::decode(grpc::pb::FILE_DESCRIPTOR_SET)
        .unwrap()
        .args_for(PURCHASE, &purchase(9000))
        .unwrap();
    assert_eq!(
        args.canonical_string(),
        r#"{"amount":9000,"currency":"EUR","merchant":"acme"}"#
    );
    assert_eq!(
        receipt.context_summary().args_hash(),
        args.sha256_canonical_hex()
    );

    let outcomes: Vec<bool> = receipts
        .lock()
        .unwrap()
        .iter()
        .map(Receipt::is_allowed)
        .collect();
    assert_eq!(outcomes, [true, false]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_handler_reads_the_receipt_of_its_call() {
    let (sink, receipts) = collecting();
    let (running, mut tools) = start(layer().sink(sink)).await;
    let token = token("purchases", &[r#"tool == "checkout.purchase""#]);

    let response = tools
        .purchase(bearer(&token).unary(PURCHASE, purchase(42)).unwrap())
        .await
        .unwrap();
    let recorded = receipts.lock().unwrap()[0].clone();
    // The handler put its receipt's signature in the reply, and the whole
    // receipt in the response metadata.
    assert_eq!(
        response.get_ref().receipt_signature,
        recorded.signature_hex()
    );
    let bytes = response
        .metadata()
        .get_bin(RECEIPT_METADATA)
        .unwrap()
        .to_bytes()
        .unwrap();
    let receipt = auditor()
        .verify(std::str::from_utf8(&bytes).unwrap())
        .unwrap();
    assert_eq!(receipt, recorded);
    assert!(receipt.is_allowed());
    running.stop().await.unwrap();
}

/// Sends raw bytes as the message of a unary call, and reads raw bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_invalid_argument() {
    let (sink, receipts) = collecting();
    let (running, _) = start(layer().sink(sink)).await;
    let token = token("purchases", &[r#"tool == "checkout.purchase""#]);

    let channel = Channel::from_shared(running.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    // Field 1 with wire type 7 (there is none): not a protobuf message.
    let request = bearer(&token)
        .request(
            PURCHASE,
            Bytes::from_static(b"\x0f\xff\xff"),
            &JsonValue::Null,
            0,
        )
        .unwrap();
    let status = raw
        .unary(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(PURCHASE),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("request message does not decode"),
        "{status:?}"
    );
    assert_eq!(receipt_of(&status).capability_identifier(), "purchases");
    assert_eq!(receipts.lock().unwrap().len(), 1);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let (sink, receipts) = collecting();
    let (running, mut tools) = start(layer().body_limit(256).sink(sink)).await;
    let token = token("purchases", &[r#"tool == "checkout.purchase""#]);

    let mut big = purchase(1);
    big.merchant = "m".repeat(1000);
    let status = tools
        .purchase(bearer(&token).unary(PURCHASE, big).unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "request body exceeds the limit of 256 bytes"
    );
    receipt_of(&status);

    // Under the limit, the same token is fine.
    tools
        .purchase(bearer(&token).unary(PURCHASE, purchase(1)).unwrap())
        .await
        .unwrap();
    assert_eq!(receipts.lock().unwrap().len(), 2);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_are_decided_with_one_receipt_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
    let (running, tools) = start(layer().sink(sink.clone())).await;
    let token = token("purchases", &["arg.amount <= 5000"]);

    let calls = (0..50).map(|i| {
        let mut tools = tools.clone();
        let credentials = bearer(&token);
        let amount = if i % 2 == 0 { 1200 } else { 9000 };
        tokio::spawn(async move {
            let result = tools
                .purchase(credentials.unary(PURCHASE, purchase(amount)).unwrap())
                .await;
            (amount, result.map(|_| ()).map_err(|s| s.code()))
        })
    });
    let results: Vec<_> = futures_join(calls).await;
    for (amount, result) in &results {
        match amount {
            1200 => assert_eq!(*result, Ok(())),
            _ => assert_eq!(*result, Err(Code::PermissionDenied)),
        }
    }

    sink.flush().await.unwrap();
    let logged: Vec<Receipt> = AuditLog::open(&path)
        .unwrap()
        .iter()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(logged.len(), 50, "exactly one receipt per call");
    assert_eq!(logged.iter().filter(|r| r.is_allowed()).count(), 25);
    for receipt in &logged {
        auditor().verify_receipt(receipt).unwrap();
    }
    running.stop().await.unwrap();
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let tasks: Vec<_> = tasks.collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

fn log_lines(lines: &[&str]) -> impl tokio_stream::Stream<Item = LogLine> + Send + 'static {
    let lines: Vec<LogLine> = lines
        .iter()
        .map(|l| LogLine { line: (*l).into() })
        .collect();
    tokio_stream::iter(lines)
}

#[tokio::test]
async fn a_client_streaming_call_under_an_arg_caveat_is_denied() {
    let (sink, receipts) = collecting();
    let (running, mut tools) = start(layer().sink(sink)).await;

    let by_arg = token("logs", &[r#"tool == "logs.upload""#, "arg.lines <= 10"]);
    let request = bearer(&by_arg)
        .request(UPLOAD_LOGS, log_lines(&["a", "b"]), &JsonValue::Null, 0)
        .unwrap();
    let status = tools.upload_logs(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("unknown identifier: arg.lines"),
        "{status:?}"
    );

    // Without an arg caveat the stream goes through untouched.
    let by_tool = token("logs", &[r#"tool == "logs.upload""#]);
    let request = bearer(&by_tool)
        .request(
            UPLOAD_LOGS,
            log_lines(&["a", "b", "c"]),
            &JsonValue::Null,
            0,
        )
        .unwrap();
    let reply = tools.upload_logs(request).await.unwrap();
    assert_eq!(reply.get_ref().lines, 3);

    running.stop().await.unwrap();
    let receipts = receipts.lock().unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(
        receipts[1].context_summary().args_hash(),
        (JsonValue::Null).sha256_canonical_hex()
    );
}

#[tokio::test]
async fn holder_bound_tokens_need_a_fresh_proof() {
    let (sink, receipts) = collecting();
    let layer = layer()
        .nonce_store(Arc::new(InMemoryNonceStore::new()))
        .sink(sink);
    let (running, mut tools) = start(layer).await;
    let holder = HolderKey::from_seed([3; 32]);
    let token = bound_token(&holder, &[r#"tool == "bank.wire""#, "arg.amount <= 100000"]);
    let bound = bearer(&token)
        .with_holder_key(HolderKey::from_seed([3; 32]))
        .unwrap();
    let wire = |amount| WireRequest {
        recipient: "bob".into(),
        amount,
    };

    // A valid proof: allowed.
    let args = Descriptors::decode(grpc::pb::FILE_DESCRIPTOR_SET)
        .unwrap()
        .args_for(WIRE, &wire(25_000))
        .unwrap();
    let now_ms = grpc::unix_millis();
    let reply = tools
        .wire(bound.request(WIRE, wire(25_000), &args, now_ms).unwrap())
        .await
        .unwrap();
    assert!(reply.get_ref().transfer_id.starts_with("transfer-"));

    // The same proof again: a replay.
    let status = tools
        .wire(bound.request(WIRE, wire(25_000), &args, now_ms).unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), capnagent::REASON_REPLAY);

    // A proof over other args does not verify for this message.
    let status = tools
        .wire(
            bound
                .request(WIRE, wire(99_000), &args, now_ms + 1)
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "holder-of-key proof failed");

    // No proof, or a malformed one: unauthenticated.
    let status = tools
        .wire(bearer(&token).unary(WIRE, wire(1)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(client::denied_receipt(&status).is_some());
    let mut request = bearer(&token).unary(WIRE, wire(1)).unwrap();
    request.metadata_mut().insert(
        capnagent_tonic::PROOF_METADATA,
        "t=1;sig=AA".parse().unwrap(),
    );
    let status = tools.wire(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status
            .message()
            .starts_with("malformed holder-of-key proof"),
        "{status:?}"
    );
    receipt_of(&status);

    // A fresh proof (new timestamp) for a new call: allowed.
    tools
        .wire(bound.unary(WIRE, wire(1)).unwrap())
        .await
        .unwrap();

    let outcomes: Vec<bool> = receipts
        .lock()
        .unwrap()
        .iter()
        .map(Receipt::is_allowed)
        .collect();
    assert_eq!(outcomes, [true, false, false, false, false, true]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_interceptor_judges_a_fixed_tool_with_null_args() {
    let (sink, receipts) = collecting();
    let interceptor =
        CapabilityInterceptor::new(layer().caller(Anonymous).sink(sink), "tools.payments");
    let mut tools = start_plain(Server::builder().add_service(
        ToolServiceServer::with_interceptor(Tools::protected(), interceptor),
    ))
    .await;

    // Tool and caller caveats: allowed, and the handler has its receipt.
    let by_tool = token(
        "payments",
        &[r#"tool == "tools.payments""#, r#"caller == """#],
    );
    let reply = tools
        .purchase(bearer(&by_tool).unary(PURCHASE, purchase(1200)).unwrap())
        .await
        .unwrap();
    assert_eq!(
        reply.get_ref().receipt_signature,
        receipts.lock().unwrap()[0].signature_hex()
    );

    // An arg caveat cannot be evaluated there: denied.
    let by_arg = token(
        "payments",
        &[r#"tool == "tools.payments""#, "arg.amount <= 5000"],
    );
    let status = tools
        .purchase(bearer(&by_arg).unary(PURCHASE, purchase(1200)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("unknown identifier"),
        "{status:?}"
    );
    receipt_of(&status);

    // A holder-bound token needs the layer.
    let holder = HolderKey::from_seed([3; 32]);
    let bound = bound_token(&holder, &[r#"tool == "tools.payments""#]);
    let status = tools
        .purchase(
            bearer(&bound)
                .with_holder_key(holder)
                .unwrap()
                .unary(PURCHASE, purchase(1))
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("CapabilityLayer"), "{status:?}");

    // Missing token.
    let status = tools.purchase(Request::new(purchase(1))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(receipts.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn one_wrapped_service_keeps_its_name_and_a_missing_caller_is_internal() {
    let (sink, receipts) = collecting();
    let token = token("purchases", &[r#"tool == "checkout.purchase""#]);

    // The layer around one service, added with `add_service` as usual.
    let anonymous = layer().caller(Anonymous).sink(sink);
    let mut tools = start_plain(
        Server::builder().add_service(anonymous.layer(ToolServiceServer::new(Tools::protected()))),
    )
    .await;
    tools
        .purchase(bearer(&token).unary(PURCHASE, purchase(1)).unwrap())
        .await
        .unwrap();
    assert_eq!(receipts.lock().unwrap()[0].context_summary().caller(), "");

    // The default caller extractor with no authentication layer in front:
    // a wiring bug, answered INTERNAL with the fix.
    let mut tools = start_plain(
        Server::builder().add_service(layer().layer(ToolServiceServer::new(Tools::protected()))),
    )
    .await;
    let status = tools
        .purchase(bearer(&token).unary(PURCHASE, purchase(1)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("AuthenticatedCaller"),
        "{status:?}"
    );
}

#[test]
fn the_client_demo_decides_every_call_as_expected() {
    let output = std::process::Command::new(capnagent_tests::example_bin("grpc-tool-client"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("every call was decided as expected"),
        "{stdout}"
    );
}

/// The README's walk-through: start `grpc-tool-server` with the keys of
/// `capnagent keygen`, run the client commands it prints, call it with a
/// token minted by `capnagent issue` over gzip, scrape `/metrics`, and
/// check the audit log it kept with `capnagent audit verify`.
#[test]
fn the_server_prints_client_commands_that_work() {
    use std::process::Command;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let keys = capnagent_tests::keygen(dir.path(), "keys.env", &[]);
    let keys_arg = keys.to_str().unwrap();
    let log = dir.path().join("audit.ndjson");
    let mut server = capnagent_tests::Server::start(
        "grpc-tool-server",
        &[
            "--addr",
            "127.0.0.1:0",
            "--root-key-file",
            keys_arg,
            "--audit-key-file",
            keys_arg,
            "--audit-log",
            log.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let (ready, text) = server.ready(Duration::from_secs(20));
    assert_eq!(ready["root_key_file"], keys_arg, "{ready}");
    assert_eq!(ready["audit_key_file"], keys_arg, "{ready}");
    let commands: Vec<Vec<String>> = text
        .iter()
        .filter_map(|line| line.split_once("--bin grpc-tool-client -- "))
        .map(|(_, args)| args.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(commands.len(), 3, "{text:?}");
    let statuses: Vec<Option<i32>> = commands
        .iter()
        .map(|args| {
            let output = Command::new(capnagent_tests::example_bin("grpc-tool-client"))
                .args(args)
                .env_remove("CAPNAGENT_AUDIT_KEY")
                .output()
                .unwrap();
            // The client checks every receipt with the audit key file.
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(stdout.contains("receipt signature verified"), "{stdout}");
            output.status.code()
        })
        .collect();
    // purchase 1200: allowed; purchase 9000: denied; the holder-bound wire: allowed.
    assert_eq!(statuses, [Some(0), Some(1), Some(0)]);

    // A token minted elsewhere, by the CLI, under the same key file: a
    // compressed call with it is allowed.
    let token = capnagent_tests::issue(
        &keys,
        "cli-minted",
        &[r#"tool == "checkout.purchase""#, "arg.amount <= 100"],
        &[],
    );
    let url = ready["url"].as_str().unwrap().to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metrics = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ToolServiceClient::new(channel)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let reply = client
            .purchase(bearer(&token).unary(PURCHASE, purchase(99)).unwrap())
            .await;
        assert!(reply.is_ok(), "{reply:?}");
        reqwest::get(ready["metrics_url"].as_str().unwrap())
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains(
            r#"capnagent_decisions_total{decision="allowed",gate="none",tool="checkout.purchase"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"capnagent_decisions_total{decision="denied",gate="caveat",tool="checkout.purchase"} 1"#
        ),
        "{metrics}"
    );

    // SIGTERM: the server stops gracefully and reports what it wrote.
    let (status, rest) = server.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let mut decisions: Vec<String> = rest.into_iter().filter(|line| !line.is_empty()).collect();
    let report = decisions.pop().unwrap_or_default();
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    assert_eq!(
        report,
        format!("stopped; 4 receipts written to {}", log.display())
    );
    // The log it kept verifies under the key file, chain and receipts.
    let verify = capnagent_tests::cli(&[
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--audit-key-file",
        keys_arg,
    ]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Every encoding tonic supports (and so the layer reads).
const ENCODINGS: [CompressionEncoding; 3] = [
    CompressionEncoding::Gzip,
    CompressionEncoding::Deflate,
    CompressionEncoding::Zstd,
];

/// A purchase of `amount` whose message is `size` bytes on the wire
/// (uncompressed): the merchant name fills it, with repeating text that
/// compresses well.
fn purchase_of_size(amount: i64, size: usize) -> PurchaseRequest {
    let mut request = purchase(amount);
    // Start too long, then take off what is over (the merchant's length
    // prefix shrinks with it): two rounds at most.
    let mut len = size;
    loop {
        request.merchant = "acme-".repeat(len / 5 + 1)[..len].to_owned();
        let over = request.encoded_len().saturating_sub(size);
        if over == 0 {
            break;
        }
        len = len.saturating_sub(over);
    }
    assert_eq!(
        request.encoded_len(),
        size,
        "no merchant gives {size} bytes"
    );
    request
}

/// The outcome of each recorded receipt, in order.
fn outcomes(receipts: &Mutex<Vec<Receipt>>) -> Vec<bool> {
    receipts
        .lock()
        .unwrap()
        .iter()
        .map(Receipt::is_allowed)
        .collect()
}

/// A client that compresses every request with `encoding` (tonic
/// compresses whatever the size) and reads compressed replies.
fn compressing(
    tools: &ToolServiceClient<Channel>,
    encoding: CompressionEncoding,
) -> ToolServiceClient<Channel> {
    tools
        .clone()
        .send_compressed(encoding)
        .accept_compressed(encoding)
}

#[tokio::test]
async fn compressed_requests_are_judged_on_their_decompressed_args() {
    let (sink, receipts) = collecting();
    let (running, tools) = start(layer().sink(sink)).await;
    let token = token(
        "purchases",
        &[r#"tool == "checkout.purchase""#, "arg.amount <= 5000"],
    );
    let descriptors = Descriptors::decode(grpc::pb::FILE_DESCRIPTOR_SET).unwrap();

    let mut expected = Vec::new();
    for encoding in ENCODINGS {
        let mut client = compressing(&tools, encoding);
        // Small, and large (16 KB, well over what any encoder leaves
        // uncompressed); allowed, and denied by the amount caveat.
        for size in [None, Some(16_000)] {
            let message = |amount| match size {
                None => purchase(amount),
                Some(size) => purchase_of_size(amount, size),
            };
            let reply = client
                .purchase(bearer(&token).unary(PURCHASE, message(1200)).unwrap())
                .await
                .unwrap_or_else(|status| panic!("{encoding:?} {size:?}: {status:?}"));
            assert!(reply.get_ref().order_id.starts_with("order-"));

            let status = client
                .purchase(bearer(&token).unary(PURCHASE, message(9000)).unwrap())
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{encoding:?} {size:?}"
            );
            assert_eq!(status.message(), "caveat failed: arg.amount <= 5000");
            // The receipt commits to the args of the decompressed message.
            let args = descriptors.args_for(PURCHASE, &message(9000)).unwrap();
            assert_eq!(
                receipt_of(&status).context_summary().args_hash(),
                args.sha256_canonical_hex()
            );
            expected.extend([true, false]);
        }
        // The same client, uncompressed, still works.
        let mut plain = tools.clone();
        plain
            .purchase(bearer(&token).unary(PURCHASE, purchase(1200)).unwrap())
            .await
            .unwrap();
        expected.push(true);
    }
    assert_eq!(outcomes(&receipts), expected);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_over_the_limit_once_decompressed_is_resource_exhausted() {
    const LIMIT: usize = 16 * 1024;
    let (sink, receipts) = collecting();
    let (running, tools) = start(layer().body_limit(LIMIT).sink(sink)).await;
    let token = token("purchases", &[r#"tool == "checkout.purchase""#]);

    for encoding in ENCODINGS {
        let mut client = compressing(&tools, encoding);
        // The largest message the limit holds (with its 5-byte frame
        // header) passes, compressed to a few hundred bytes.
        let largest = purchase_of_size(1, LIMIT - 5);
        client
            .purchase(bearer(&token).unary(PURCHASE, largest).unwrap())
            .await
            .unwrap_or_else(|status| panic!("{encoding:?}: {status:?}"));
        // One byte more is refused, though the body is far under the limit.
        let over = purchase_of_size(1, LIMIT - 4);
        let status = client
            .purchase(bearer(&token).unary(PURCHASE, over).unwrap())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{encoding:?}");
        assert_eq!(
            status.message(),
            format!(
                "request message decompresses to more than the limit of {} bytes",
                LIMIT - 5
            )
        );
        assert_eq!(receipt_of(&status).capability_identifier(), "purchases");
    }
    assert_eq!(outcomes(&receipts), [true, false].repeat(3));
    running.stop().await.unwrap();
}

/// What a raw call was answered: its status (from the headers of a
/// trailers-only answer, else from the trailers) and its headers.
struct Answer {
    status: Status,
    headers: http::HeaderMap,
}

/// A unary `Purchase` sent as raw HTTP/2 over a tonic channel: `body` is
/// the whole request body (hand-made frames) and `encoding` the
/// `grpc-encoding` header, if any.
async fn raw_purchase(
    running: &Running,
    token: &str,
    encoding: Option<&'static str>,
    body: Bytes,
) -> Answer {
    use tower::ServiceExt as _;

    let channel = Channel::from_shared(running.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let metadata = bearer(token)
        .request(PURCHASE, (), &JsonValue::Null, 0)
        .unwrap()
        .metadata()
        .clone();
    let mut request = http::Request::post(format!("{}{PURCHASE}", running.url()))
        .version(http::Version::HTTP_2)
        .body(tonic::body::Body::new(Full::new(body)))
        .unwrap();
    let headers = request.headers_mut();
    headers.extend(metadata.into_headers());
    headers.insert("content-type", "application/grpc".parse().unwrap());
    headers.insert("te", "trailers".parse().unwrap());
    if let Some(encoding) = encoding {
        headers.insert("grpc-encoding", encoding.parse().unwrap());
    }
    let response = channel.oneshot(request).await.unwrap();
    let headers = response.headers().clone();
    let status = match Status::from_header_map(&headers) {
        Some(status) => status,
        None => {
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().expect("a gRPC answer has trailers");
            Status::from_header_map(trailers).expect("trailers carry grpc-status")
        }
    };
    Answer { status, headers }
}

/// One uncompressed gRPC frame around `message`.
fn frame(message: &impl prost::Message) -> Bytes {
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.encoded_len()).unwrap().to_be_bytes());
    message.encode(&mut body).unwrap();
    Bytes::from(body)
}

/// grpcio sends `grpc-encoding: gzip` with small messages left
/// uncompressed; a compressed flag without an encoding is a protocol
/// error; an encoding the layer cannot read is refused with the ones it
/// can. Each has the receipt of what happened.
#[tokio::test]
async fn raw_calls_follow_the_grpc_compression_spec() {
    let (sink, receipts) = collecting();
    let (running, _) = start(layer().sink(sink)).await;
    let token = token("purchases", &[r#"tool == "checkout.purchase""#]);

    // Legal, allowed, and the service (which accepts gzip) runs it.
    let answer = raw_purchase(&running, &token, Some("gzip"), frame(&purchase(1200))).await;
    assert_eq!(answer.status.code(), Code::Ok, "{:?}", answer.status);

    let flagged = Bytes::from_static(b"\x01\x00\x00\x00\x01a");
    for encoding in [None, Some("identity")] {
        let answer = raw_purchase(&running, &token, encoding, flagged.clone()).await;
        assert_eq!(answer.status.code(), Code::Internal, "{:?}", answer.status);
        assert!(
            answer.status.message().contains("compressed flag"),
            "{:?}",
            answer.status
        );
        receipt_of(&answer.status);
    }

    let answer = raw_purchase(&running, &token, Some("snappy"), frame(&purchase(1200))).await;
    assert_eq!(
        answer.status.code(),
        Code::Unimplemented,
        "{:?}",
        answer.status
    );
    assert_eq!(
        answer.headers["grpc-accept-encoding"],
        "gzip,deflate,zstd,identity"
    );
    let receipt = receipt_of(&answer.status);
    assert_eq!(receipt.capability_identifier(), "purchases");
    assert_eq!(receipt.outcome().reason(), Some(answer.status.message()));

    assert_eq!(outcomes(&receipts), [true, false, false, false]);
    running.stop().await.unwrap();
}
