//! A real audit log that stops being writable and then recovers, over real
//! HTTP: the calls made while the file cannot grow are refused (503) and
//! never reach the handler; once it can grow again, service resumes.
//!
//! The file is made unwritable with the process's file-size limit
//! (`RLIMIT_FSIZE`, set with the `prlimit` command): a write past it fails
//! with `EFBIG`, as a full disk fails with `ENOSPC`. The limit is
//! process-wide, so this file holds a single test (one test binary, one
//! process).

#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::post;
use axum::{Extension, Router};
use capnagent::AuditLog;
use capnagent_tower::{AuditLogSink, AuthenticatedCaller, PathParam, Verified};
use support::*;
use tokio::signal::unix::{SignalKind, signal};

/// Sets this process's soft file-size limit (`None`: unlimited).
fn limit_file_size(bytes: Option<u64>) {
    let soft = bytes.map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit failed: {status}");
}

#[tokio::test]
async fn a_log_that_cannot_grow_refuses_calls_until_it_can() {
    // A write past the limit also raises SIGXFSZ, whose default action
    // ends the process; with a handler installed, the write just fails.
    let _xfsz = signal(SignalKind::from_raw(25)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handler = move |_: Verified| async move {
        counter.fetch_add(1, Ordering::SeqCst);
        "ran"
    };
    let app = Router::new()
        .route("/tools/{name}", post(handler))
        .route_layer(layer().0.sink(sink.clone()).tool(PathParam::new("name")))
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/tools/checkout.purchase",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let good = token(&[r#"tool == "checkout.purchase""#, "arg.amount_cents <= 5000"]);
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(&url)
            .header("content-type", "application/json")
            .bearer_auth(&good)
            .body(r#"{"amount_cents":1299}"#)
            .send()
    };

    let response = send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The file cannot grow any more.
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 0);
    limit_file_size(Some(size));
    for _ in 0..3 {
        let response = send().await.unwrap();
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("could not be written"), "{detail}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no call ran unrecorded");

    // It can again: service resumes, with no restart.
    limit_file_size(None);
    for n in 2..=4 {
        let response = send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), n);
    }
    let stats = sink.stats();
    assert_eq!((stats.written, stats.refused), (4, 3));
    let logged = AuditLog::open(&path).unwrap().iter().unwrap().count();
    assert_eq!(logged, 4);
}
