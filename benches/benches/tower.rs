//! HTTP layer bench: the load-test axum router
//! (`capnagent_examples::load::app`) with and without `CapabilityLayer`, in
//! one run. The handler parses the same 1 KiB JSON order either way; the
//! protected route checks a 4-caveat token against that body and sends a
//! signed receipt to the sink. No sockets: `oneshot` on the router, on a
//! current-thread runtime. `engine_floor` is the core engine alone on the
//! same call (parse the body, decide, sign), the floor under the layer.
//! See `benches/README.md` ("HTTP layer").
//!
//! ```text
//! cargo bench -p capnagent-benches --bench tower -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(missing_docs)]

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use capnagent::{Args, JsonLimits};
use capnagent::{AuditLog, Auditor, Capability, Context, Issuer, Receipt, Verifier};
use capnagent_examples::load;
use capnagent_tower::{AuditLogSink, CapabilityLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];

fn token() -> String {
    let issuer = Issuer::from_key(&ROOT_KEY).expect("root key");
    let mut builder = issuer.issue("loadtest");
    for caveat in load::CAVEATS {
        builder.caveat(caveat).expect("caveat");
    }
    builder.build().expect("token").serialize()
}

fn layer() -> CapabilityLayer {
    CapabilityLayer::new(
        Verifier::new(&ROOT_KEY).expect("root key"),
        Auditor::new(&AUDIT_KEY).expect("audit key"),
    )
    .expect("distinct root and audit keys")
}

fn request(token: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/checkout")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, load::BODY.len());
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(load::BODY)).expect("request")
}

fn bench_layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = AuditLogSink::new(AuditLog::open(dir.path().join("audit.ndjson")).expect("log"))
        .expect("sink");
    let token = token();

    let unprotected = load::app(None);
    let protected = load::app(Some(layer().sink(sink.clone())));
    let protected_null_sink = load::app(Some(layer().sink(|_: &Receipt| {})));

    let run = |app: &Router, token: Option<&str>| {
        let response = runtime
            .block_on(app.clone().oneshot(request(token)))
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        black_box(response)
    };

    let mut group = c.benchmark_group("http_layer_1k_json_4_caveats");
    group.bench_function("unprotected", |b| b.iter(|| run(&unprotected, None)));
    group.bench_function("protected_audit_log_sink", |b| {
        b.iter(|| run(&protected, Some(&token)))
    });
    group.bench_function("protected_null_sink", |b| {
        b.iter(|| run(&protected_null_sink, Some(&token)))
    });
    // What the engine itself costs for the same call (parse the body keeping
    // number text, decide, sign): the floor under the protected route.
    let verifier = Verifier::new(&ROOT_KEY).expect("root key");
    let auditor = Auditor::new(&AUDIT_KEY).expect("audit key");
    let capability = Capability::parse(&token).expect("token");
    let limits = JsonLimits {
        max_depth: 127,
        max_len: 1 << 20,
    };
    group.bench_function("engine_floor", |b| {
        b.iter(|| {
            let args = Args::from_json(black_box(load::BODY), &limits).expect("json");
            let ctx = Context::builder()
                .caller(load::CALLER)
                .tool(load::TOOL)
                .args_json(args)
                .build();
            let receipt = verifier
                .verify_with_context(&capability, &ctx, &auditor)
                .expect("chain");
            assert!(receipt.is_allowed());
            black_box(receipt)
        })
    });
    group.finish();

    runtime.block_on(sink.flush()).expect("flush");
    let stats = sink.stats();
    eprintln!(
        "audit log sink: {} receipts written, {} failed, {} requests waited for queue space",
        stats.written, stats.failed, stats.waited
    );
}

criterion_group!(benches, bench_layer);
criterion_main!(benches);
