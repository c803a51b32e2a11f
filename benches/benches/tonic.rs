//! gRPC layer bench: one unary `Purchase` call of the example tool service
//! (`capnagent_examples::grpc`) over loopback HTTP/2, with a real tonic
//! client, against the same server setup with and without
//! `capnagent_tonic::CapabilityLayer`, in one run, and against the baseline
//! a tonic user would write instead: no layer, a JSON Web Token (HS256,
//! same limits as claims) checked in the handler against the decoded
//! message. All servers run the example's API-key interceptor; the
//! protected ones check a 4-caveat token against the decoded request
//! message and sign a receipt per call.
//! Client and servers share one current-thread runtime. See `benches/README.md` ("gRPC layer").
//!
//! After the criterion groups it prints `grpc/cpu_per_call`: the thread
//! CPU time per call (`CLOCK_THREAD_CPUTIME_ID`) the layer and the JWT
//! check add over loopback and the layer adds in process, medians of
//! paired rounds (wall time here also counts waiting for a core).
//!
//! ```text
//! cargo bench -p capnagent-benches --bench tonic -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use capnagent::{
    AuditLog, Auditor, CaveatError, Context, HolderKey, InMemoryNonceStore, Issuer, Predicate,
    Receipt, Timestamp, Verifier,
};
use capnagent_examples::grpc::pb::tool_service_client::ToolServiceClient;
use capnagent_examples::grpc::pb::tool_service_server::{ToolService, ToolServiceServer};
use capnagent_examples::grpc::pb::{
    LogLine, PurchaseReply, PurchaseRequest, UploadSummary, WireReply, WireRequest,
};
use capnagent_examples::grpc::{self, Credentials, PURCHASE, PURCHASE_TOOL, Running, Tools};
use capnagent_examples::jwt::{Claims, JwtError, JwtKeys};
use capnagent_examples::{PLANNER, PLANNER_API_KEY};
use capnagent_tonic::{AuditLogSink, CapabilityLayer, Descriptors};
use criterion::{Criterion, criterion_group, criterion_main};
use tonic::service::InterceptorLayer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Status, Streaming};
use tower::ServiceExt;

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];

fn caveats() -> [String; 4] {
    [
        quoted(Predicate::caller_is(PLANNER)),
        quoted(Predicate::tool_is(PURCHASE_TOOL)),
        "arg.amount <= 5000".to_owned(),
        "now <= @2099-01-01T00:00:00Z".to_owned(),
    ]
}

fn quoted(predicate: Result<Predicate, CaveatError>) -> String {
    predicate.expect("representable").as_str().to_owned()
}

fn token(holder: Option<&HolderKey>) -> String {
    let issuer = Issuer::from_key(&ROOT_KEY).expect("root key");
    let mut builder = issuer.issue("bench");
    if let Some(holder) = holder {
        builder
            .holder_of_key(holder.public_key())
            .expect("holder key");
    }
    for caveat in caveats() {
        builder.caveat(&caveat).expect("caveat");
    }
    builder.build().expect("token").serialize()
}

fn layer() -> CapabilityLayer {
    grpc::capability_layer(
        Verifier::new(&ROOT_KEY).expect("root key"),
        Auditor::new(&AUDIT_KEY).expect("audit key"),
    )
    .expect("descriptors")
}

fn message(n: u64) -> PurchaseRequest {
    PurchaseRequest {
        merchant: format!("merchant-{n}"),
        amount: 1200,
        currency: "EUR".into(),
    }
}

const JWT_SECRET: &[u8] = b"bench-jwt-secret-of-32-bytes-000";

/// The baseline without capnagent: the same service whose handler checks a
/// JWT from `authorization: Bearer` (signature, expiry, tool) and the
/// decoded message's amount against the token's maximum.
struct JwtTools {
    keys: JwtKeys,
    next_id: AtomicU64,
}

impl JwtTools {
    #[allow(clippy::result_large_err)] // tonic's Status
    fn check<T>(
        &self,
        request: &tonic::Request<T>,
        tool: &str,
        amount: i64,
    ) -> Result<Claims, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let amount =
            u64::try_from(amount).map_err(|_| Status::invalid_argument("negative amount"))?;
        self.keys
            .check_amount(token, tool, amount)
            .map_err(|e| match e {
                JwtError::Invalid(_) => Status::unauthenticated(e.to_string()),
                _ => Status::permission_denied(e.to_string()),
            })
    }
}

#[tonic::async_trait]
impl ToolService for JwtTools {
    async fn purchase(
        &self,
        request: tonic::Request<PurchaseRequest>,
    ) -> Result<tonic::Response<PurchaseReply>, Status> {
        self.check(&request, PURCHASE_TOOL, request.get_ref().amount)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(tonic::Response::new(PurchaseReply {
            order_id: format!("order-{id}"),
            receipt_signature: String::new(),
        }))
    }

    async fn wire(
        &self,
        _request: tonic::Request<WireRequest>,
    ) -> Result<tonic::Response<WireReply>, Status> {
        Err(Status::unimplemented("not in the bench"))
    }

    async fn upload_logs(
        &self,
        _request: tonic::Request<Streaming<LogLine>>,
    ) -> Result<tonic::Response<UploadSummary>, Status> {
        Err(Status::unimplemented("not in the bench"))
    }
}

/// Rounds of the thread-CPU comparison, and calls per measurement.
const CPU_ROUNDS: usize = 15;
const CPU_CALLS: u32 = 400;

/// This thread's CPU time per call of `call` (ns), over [`CPU_CALLS`]
/// calls (`CLOCK_THREAD_CPUTIME_ID`, exact to the nanosecond).
fn cpu_per_call(mut call: impl FnMut()) -> f64 {
    fn thread_cpu_ns() -> f64 {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
    }
    let start = thread_cpu_ns();
    for _ in 0..CPU_CALLS {
        call();
    }
    (thread_cpu_ns() - start) / f64::from(CPU_CALLS)
}

fn bench_grpc(c: &mut Criterion) {
    // Client and servers on one thread: a call's time is the CPU both
    // sides spend on it plus the loopback, without cross-thread wake-ups
    // (the audit log's writer thread is the only other thread).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let audit_sink =
        AuditLogSink::new(AuditLog::open(dir.path().join("audit.ndjson")).expect("audit log"))
            .expect("audit sink");
    let null_sink = |_: &Receipt| {};

    let servers: Vec<(&str, Option<CapabilityLayer>)> = vec![
        ("unprotected", None),
        ("protected_null_sink", Some(layer().sink(null_sink))),
        (
            "protected_audit_log_sink",
            Some(layer().sink(audit_sink.clone())),
        ),
        (
            "protected_holder_proof",
            Some(
                layer()
                    .nonce_store(Arc::new(InMemoryNonceStore::new()))
                    .sink(null_sink),
            ),
        ),
    ];
    let running: Vec<(&str, Running, ToolServiceClient<Channel>)> = runtime.block_on(async {
        let mut running = Vec::new();
        for (name, layer) in servers {
            // The same handlers either way (no receipt echoed in replies).
            let tools = match layer {
                Some(_) => Tools::protected().echo_receipts(false),
                None => Tools::unprotected(),
            };
            let server = grpc::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), layer, tools)
                .await
                .expect("server");
            let client = ToolServiceClient::connect(server.url())
                .await
                .expect("client");
            running.push((name, server, client));
        }
        running
    });
    // The JWT baseline, behind the same interceptor.
    let (jwt_url, jwt_stop, jwt_server) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("listener");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tools = JwtTools {
            keys: JwtKeys::hs256(JWT_SECRET).expect("secret"),
            next_id: AtomicU64::new(0),
        };
        let server = tokio::spawn(
            Server::builder()
                .layer(InterceptorLayer::new(grpc::authenticate))
                .add_service(ToolServiceServer::new(tools))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );
        (url, stop, server)
    });
    let jwt_client = runtime
        .block_on(ToolServiceClient::connect(jwt_url))
        .expect("client");
    let jwt_token = JwtKeys::hs256(JWT_SECRET)
        .expect("secret")
        .mint(&Claims {
            sub: PLANNER.to_owned(),
            tool: PURCHASE_TOOL.to_owned(),
            max_amount_cents: 5000,
            exp: capnagent_examples::jwt::unix_seconds() + 24 * 3600,
        })
        .expect("jwt");
    let jwt = Credentials::new(PLANNER_API_KEY, &jwt_token).expect("credentials");

    let bearer = Credentials::new(PLANNER_API_KEY, &token(None)).expect("credentials");
    let holder = HolderKey::from_seed([3; 32]);
    let bound = Credentials::new(PLANNER_API_KEY, &token(Some(&holder)))
        .expect("credentials")
        .with_holder_key(HolderKey::from_seed([3; 32]))
        .expect("holder");
    let counter = AtomicU64::new(0);

    let mut group = c.benchmark_group("grpc/unary_purchase");
    let clients = running
        .iter()
        .map(|(name, _, client)| (*name, client))
        .chain([("jwt_in_handler", &jwt_client)]);
    for (name, client) in clients {
        let credentials = match name {
            "protected_holder_proof" => &bound,
            "jwt_in_handler" => &jwt,
            _ => &bearer,
        };
        // Every call is a new message, so that each proof is fresh (a
        // replayed one would be refused); the others pay the same.
        group.bench_function(name, |b| {
            b.iter(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let request = credentials.unary(PURCHASE, message(n)).expect("request");
                let mut client = client.clone();
                let reply = runtime.block_on(client.purchase(request)).expect("allowed");
                black_box(reply);
            })
        });
    }
    group.finish();

    // The core engine alone on the same call: the args as the layer
    // computes them (encode, decode with the descriptors, JSON), a context,
    // the decision and its signed receipt.
    let descriptors = Descriptors::decode(grpc::pb::FILE_DESCRIPTOR_SET).expect("descriptors");
    let verifier = Verifier::new(&ROOT_KEY).expect("root key");
    let auditor = Auditor::new(&AUDIT_KEY).expect("audit key");
    let cap = capnagent::Capability::parse(&token(None)).expect("token");
    c.bench_function("grpc/engine_floor", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let args = descriptors.args_for(PURCHASE, &message(n)).expect("args");
            let ctx = Context::builder()
                .timestamp(Timestamp::now())
                .caller(PLANNER)
                .tool(PURCHASE_TOOL)
                .args_json(args)
                .build();
            let receipt = verifier
                .verify_with_context(&cap, &ctx, &auditor)
                .expect("verified");
            assert!(receipt.is_allowed());
            black_box(receipt);
        })
    });

    // The layer alone, no network: `oneshot` of one framed `Purchase`
    // request through `CapabilityService` around a handler that answers at
    // once, against the handler alone.
    let caller = capnagent_tonic::AuthenticatedCaller::new(PLANNER);
    let request_for = |token: &str, message: &PurchaseRequest| {
        let message = prost::Message::encode_to_vec(message);
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        frame.extend_from_slice(&message);
        let mut request = http::Request::post(PURCHASE)
            .header("content-type", "application/grpc")
            .header("authorization", format!("Bearer {token}"))
            .body(tonic::body::Body::new(http_body_util::Full::new(
                bytes::Bytes::from(frame),
            )))
            .expect("request");
        request.extensions_mut().insert(caller.clone());
        request
    };
    let request = |token: &str| request_for(token, &message(0));
    let handler = tower::service_fn(|request: http::Request<tonic::body::Body>| async move {
        black_box(request);
        Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
    });
    let bearer_token = token(None);
    let mut group = c.benchmark_group("grpc/in_process");
    group.bench_function("handler_alone", |b| {
        b.iter(|| {
            let response = runtime
                .block_on(handler.oneshot(request(&bearer_token)))
                .expect("response");
            black_box(response);
        })
    });
    let protected = tower::Layer::layer(&layer().sink(null_sink), handler);
    group.bench_function("layer_null_sink", |b| {
        b.iter(|| {
            let response = runtime
                .block_on(protected.clone().oneshot(request(&bearer_token)))
                .expect("response");
            assert!(response.headers().get("grpc-status").is_none());
            black_box(response);
        })
    });
    // The proof path: a bound token, a fresh proof per call (signed in the
    // untimed setup), the in-memory nonce store.
    let proving = tower::Layer::layer(
        &layer()
            .nonce_store(Arc::new(InMemoryNonceStore::new()))
            .sink(null_sink),
        handler,
    );
    let bound_token = token(Some(&holder));
    let bound_cap = capnagent::Capability::parse(&bound_token).expect("token");
    group.bench_function("layer_holder_proof", |b| {
        b.iter_batched(
            || {
                // A new message per call, so that each proof is fresh.
                let message = message(counter.fetch_add(1, Ordering::Relaxed));
                let args = descriptors.args_for(PURCHASE, &message).expect("args");
                let proof = holder.prove(&bound_cap, PURCHASE_TOOL, &args, grpc::unix_millis());
                let mut request = request_for(&bound_token, &message);
                request.headers_mut().insert(
                    capnagent_tonic::PROOF_METADATA,
                    proof.encode().parse().expect("ascii"),
                );
                request
            },
            |request| {
                let response = runtime
                    .block_on(proving.clone().oneshot(request))
                    .expect("response");
                assert!(response.headers().get("grpc-status").is_none());
                black_box(response);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    // Thread CPU per call, paired by round: client, servers and the
    // loopback's kernel work all run on this thread, so this counts what
    // wall time counts minus the time spent waiting for a core.
    let loopback: Vec<(&str, &ToolServiceClient<Channel>, &Credentials)> = running
        .iter()
        .filter(|(name, _, _)| matches!(*name, "unprotected" | "protected_null_sink"))
        .map(|(name, _, client)| (*name, client, &bearer))
        .chain([("jwt_in_handler", &jwt_client, &jwt)])
        .collect();
    let mut added = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..CPU_ROUNDS {
        let mut cpu = std::collections::HashMap::new();
        for i in 0..loopback.len() {
            let (name, client, credentials) = loopback[(i + round) % loopback.len()];
            let spent = cpu_per_call(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let request = credentials.unary(PURCHASE, message(n)).expect("request");
                let mut client = client.clone();
                black_box(runtime.block_on(client.purchase(request)).expect("allowed"));
            });
            cpu.insert(name, spent);
        }
        let alone = cpu_per_call(|| {
            black_box(runtime.block_on(handler.oneshot(request(&bearer_token)))).expect("response");
        });
        let layered = cpu_per_call(|| {
            black_box(runtime.block_on(protected.clone().oneshot(request(&bearer_token))))
                .expect("response");
        });
        let (unprotected, with_layer, with_jwt) = (
            cpu["unprotected"],
            cpu["protected_null_sink"],
            cpu["jwt_in_handler"],
        );
        added[0].push(with_layer - unprotected);
        added[1].push(with_jwt - unprotected);
        added[2].push(layered - alone);
        if round == 0 {
            println!(
                "grpc/cpu_per_call: unprotected {unprotected:.0} ns, protected_null_sink {with_layer:.0} ns, jwt_in_handler {with_jwt:.0} ns (first round)"
            );
        }
    }
    let labels = [
        "layer over loopback",
        "JWT in handler over loopback",
        "layer in process",
    ];
    for (label, mut values) in labels.into_iter().zip(added) {
        values.sort_by(f64::total_cmp);
        if let Some(median) = values.get(values.len() / 2) {
            println!(
                "grpc/cpu_per_call: {label} adds {:.2} us of thread CPU per call (median of {} rounds, lowest {:.2}, highest {:.2})",
                median / 1000.0,
                values.len(),
                values[0] / 1000.0,
                values[values.len() - 1] / 1000.0
            );
        }
    }

    runtime.block_on(async {
        for (_, server, _) in running {
            server.stop().await.expect("stop");
        }
        let _ = jwt_stop.send(());
        jwt_server.await.expect("joined").expect("served");
        audit_sink.flush().await.expect("flush");
    });
}

criterion_group!(benches, bench_grpc);
criterion_main!(benches);
