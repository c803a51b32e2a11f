//! Write-ahead, fail-closed audit on gRPC, with a real tonic server on
//! 127.0.0.1 and a real tonic client: through the layer and through the
//! interceptor, an allowed call whose receipt cannot be written (a full
//! disk, `/dev/full`; a stopped writer) is refused with `UNAVAILABLE` and
//! the handler never runs, not even for the first call; service resumes
//! when recording works again.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use capnagent::{AuditLog, Auditor, Issuer, Receipt, Verifier};
use capnagent_examples::grpc::pb::tool_service_client::ToolServiceClient;
use capnagent_examples::grpc::pb::tool_service_server::{ToolService, ToolServiceServer};
use capnagent_examples::grpc::pb::{
    LogLine, PurchaseReply, PurchaseRequest, UploadSummary, WireReply, WireRequest,
};
use capnagent_examples::grpc::{self, PURCHASE_TOOL};
use capnagent_tonic::{
    Anonymous, AuditLogSink, CapabilityInterceptor, CapabilityLayer, Grpc, ReceiptSink, Record,
    SinkError,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};

const ROOT: [u8; 32] = [7; 32];
const AUDIT: [u8; 32] = [9; 32];

/// Counts the calls that reach it; `Purchase` answers whether the receipt
/// that allowed it is in `log` already (write-ahead).
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
    log: Option<std::path::PathBuf>,
}

impl Counting {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A write-ahead sink on a new log in `dir`, and tools whose `Purchase`
/// looks for its receipt in that log.
fn logged(dir: &tempfile::TempDir) -> (AuditLogSink, Counting) {
    let path = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
    let tools = Counting {
        log: Some(path),
        ..Counting::default()
    };
    (sink, tools)
}

#[tonic::async_trait]
impl ToolService for Counting {
    async fn purchase(
        &self,
        request: Request<PurchaseRequest>,
    ) -> Result<Response<PurchaseReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let verified = capnagent_tonic::verified(&request)?;
        let signature = verified.receipt().signature_hex();
        let logged = self.log.as_ref().is_some_and(|path| {
            AuditLog::open(path)
                .unwrap()
                .iter()
                .unwrap()
                .any(|r| r.unwrap().signature_hex() == signature)
        });
        Ok(Response::new(PurchaseReply {
            order_id: if logged { "logged" } else { "unlogged" }.into(),
            receipt_signature: signature,
        }))
    }

    async fn wire(&self, _: Request<WireRequest>) -> Result<Response<WireReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn upload_logs(
        &self,
        _: Request<Streaming<LogLine>>,
    ) -> Result<Response<UploadSummary>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn token(caveats: &[&str]) -> String {
    let issuer = Issuer::from_key(&ROOT).unwrap();
    let mut builder = issuer.issue("purchases");
    for caveat in caveats {
        builder.caveat(caveat).unwrap();
    }
    builder.build().unwrap().serialize()
}

/// `Purchase` through the layer, receipts to `sink`.
async fn through_layer(sink: impl ReceiptSink, tools: &Counting) -> ToolServiceClient<Channel> {
    let layer =
        grpc::capability_layer(Verifier::new(&ROOT).unwrap(), Auditor::new(&AUDIT).unwrap())
            .unwrap()
            .caller(Anonymous)
            .sink(sink);
    let (incoming, url) = listen().await;
    let router = Server::builder()
        .layer(layer)
        .add_service(ToolServiceServer::new(tools.clone()));
    tokio::spawn(router.serve_with_incoming(incoming));
    ToolServiceClient::connect(url).await.unwrap()
}

/// `Purchase` through the interceptor (one fixed tool), receipts to `sink`.
async fn through_interceptor(
    sink: impl ReceiptSink,
    tools: &Counting,
) -> ToolServiceClient<Channel> {
    let layer = CapabilityLayer::with_protocol(
        Verifier::new(&ROOT).unwrap(),
        Auditor::new(&AUDIT).unwrap(),
        Grpc::new(),
    )
    .unwrap()
    .caller(Anonymous)
    .sink(sink);
    let interceptor = CapabilityInterceptor::new(layer, PURCHASE_TOOL);
    let (incoming, url) = listen().await;
    let router = Server::builder().add_service(ToolServiceServer::with_interceptor(
        tools.clone(),
        interceptor,
    ));
    tokio::spawn(router.serve_with_incoming(incoming));
    ToolServiceClient::connect(url).await.unwrap()
}

/// A listener on a free loopback port, and its URL.
async fn listen() -> (TcpListenerStream, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (TcpListenerStream::new(listener), url)
}

async fn purchase(
    client: &mut ToolServiceClient<Channel>,
    token: Option<&str>,
    amount: i64,
) -> Result<PurchaseReply, Status> {
    let mut request = Request::new(PurchaseRequest {
        merchant: "acme".into(),
        amount,
        currency: "EUR".into(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.purchase(request).await.map(Response::into_inner)
}

fn assert_unavailable(result: Result<PurchaseReply, Status>) -> Status {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("audit log unavailable"),
        "{status:?}"
    );
    assert!(
        status
            .metadata()
            .get_bin(capnagent_tonic::RECEIPT_METADATA)
            .is_none(),
        "an unrecorded receipt is not handed out"
    );
    status
}

#[tokio::test]
async fn the_layer_refuses_with_unavailable_when_the_disk_is_full() {
    let sink = AuditLogSink::new(AuditLog::open("/dev/full").unwrap()).unwrap();
    let tools = Counting::default();
    let mut client = through_layer(sink.clone(), &tools).await;
    // With an `arg.*` caveat the layer reads the message first; without one
    // it decides from the head.
    for caveats in [
        &["arg.amount <= 5000"][..],
        &[r#"tool == "checkout.purchase""#],
    ] {
        let good = token(caveats);
        for _ in 0..2 {
            let status = assert_unavailable(purchase(&mut client, Some(&good), 1200).await);
            assert!(status.message().contains("could not be written"));
            assert_eq!(tools.calls(), 0);
        }
    }
    // A denial is still the denial it was.
    let denied = purchase(&mut client, Some(&token(&["arg.amount <= 5000"])), 9000).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(tools.calls(), 0);
    sink.flush().await.unwrap();
    assert_eq!(sink.stats().refused, 4);
}

#[tokio::test]
async fn the_layer_refuses_with_unavailable_when_the_writer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let sink = AuditLogSink::new(AuditLog::open(dir.path().join("audit.ndjson")).unwrap()).unwrap();
    sink.close().await.unwrap();
    let tools = Counting::default();
    let mut client = through_layer(sink.clone(), &tools).await;
    let good = token(&["arg.amount <= 5000"]);
    let status = assert_unavailable(purchase(&mut client, Some(&good), 1200).await);
    assert_eq!(
        status.message(),
        "audit log unavailable: the audit writer thread has stopped"
    );
    assert_eq!(tools.calls(), 0);
}

#[tokio::test]
async fn through_the_layer_the_handler_finds_its_receipt_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, tools) = logged(&dir);
    let mut client = through_layer(sink, &tools).await;
    let good = token(&["arg.amount <= 5000"]);
    for _ in 0..5 {
        let reply = purchase(&mut client, Some(&good), 1200).await.unwrap();
        assert_eq!(reply.order_id, "logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interceptor_refuses_with_unavailable_when_the_disk_is_full() {
    let sink = AuditLogSink::new(AuditLog::open("/dev/full").unwrap()).unwrap();
    let tools = Counting::default();
    let mut client = through_interceptor(sink.clone(), &tools).await;
    let good = token(&[r#"tool == "checkout.purchase""#]);
    for _ in 0..3 {
        assert_unavailable(purchase(&mut client, Some(&good), 1200).await);
        assert_eq!(tools.calls(), 0);
    }
    let missing = purchase(&mut client, None, 1200).await;
    assert_eq!(missing.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(tools.calls(), 0);
    assert_eq!(sink.stats().refused, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interceptor_waits_for_the_write_on_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, tools) = logged(&dir);
    let mut client = through_interceptor(sink.clone(), &tools).await;
    let good = token(&[r#"tool == "checkout.purchase""#]);
    for _ in 0..5 {
        let reply = purchase(&mut client, Some(&good), 1200).await.unwrap();
        assert_eq!(reply.order_id, "logged");
    }
    assert_eq!(tools.calls(), 5);
    // The writer stops: the next call is refused before the handler.
    sink.close().await.unwrap();
    assert_unavailable(purchase(&mut client, Some(&good), 1200).await);
    assert_eq!(tools.calls(), 5);
}

#[tokio::test]
async fn the_interceptor_fails_closed_where_it_cannot_wait() {
    // A current-thread runtime: the interceptor cannot block for a write
    // by the writer thread (a log that syncs every record goes there).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    let synced = AuditLog::open_with(&path, capnagent::Durability::Sync).unwrap();
    let sink = AuditLogSink::new(synced).unwrap();
    let tools = Counting::default();
    let mut client = through_interceptor(sink.clone(), &tools).await;
    let good = token(&[r#"tool == "checkout.purchase""#]);
    let status = assert_unavailable(purchase(&mut client, Some(&good), 1200).await);
    assert!(status.message().contains("multi-thread"), "{status:?}");
    assert_eq!(tools.calls(), 0);
    // Its receipt is still written, in the background.
    sink.flush().await.unwrap();
    assert_eq!(sink.stats().written, 1);

    // With the default log the call writes its own receipt, so nothing
    // has to wait: the call runs, after its receipt is in the file.
    let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
    let mut client = through_interceptor(sink.clone(), &tools).await;
    purchase(&mut client, Some(&good), 1200).await.unwrap();
    assert_eq!(tools.calls(), 1);
    assert_eq!(sink.stats().written, 1);

    // A sink that does not make calls wait works there.
    let open = AuditLogSink::builder(AuditLog::open(&path).unwrap())
        .fail_open()
        .build()
        .unwrap();
    let mut client = through_interceptor(open, &tools).await;
    purchase(&mut client, Some(&good), 1200).await.unwrap();
    assert_eq!(tools.calls(), 2);
}

/// Cannot record the first `failures` allowed receipts, then records all.
struct Recovering {
    failures: AtomicUsize,
    recorded: Arc<AtomicUsize>,
}

impl ReceiptSink for Recovering {
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        let failing = receipt.is_allowed()
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if failing {
            return Record::failed(SinkError::new("audit log unavailable: disk detached"));
        }
        let recorded = Arc::clone(&self.recorded);
        Record::wait(async move {
            tokio::task::yield_now().await;
            recorded.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_resumes_when_receipts_can_be_recorded_again() {
    let good = token(&[r#"tool == "checkout.purchase""#]);
    for interceptor in [false, true] {
        let recorded = Arc::new(AtomicUsize::new(0));
        let sink = Recovering {
            failures: AtomicUsize::new(2),
            recorded: Arc::clone(&recorded),
        };
        let tools = Counting::default();
        let mut client = if interceptor {
            through_interceptor(sink, &tools).await
        } else {
            through_layer(sink, &tools).await
        };
        for _ in 0..2 {
            let status = assert_unavailable(purchase(&mut client, Some(&good), 1200).await);
            assert_eq!(status.message(), "audit log unavailable: disk detached");
        }
        assert_eq!(tools.calls(), 0);
        for n in 1..=2 {
            purchase(&mut client, Some(&good), 1200).await.unwrap();
            assert_eq!(tools.calls(), n);
        }
        assert_eq!(recorded.load(Ordering::SeqCst), 2);
    }
}
