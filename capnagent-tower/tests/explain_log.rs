//! A denied call is explained in a `DEBUG` event (target
//! `capnagent::explain`) with the values each caveat compared, and not at
//! `INFO`. Its own test binary with one test: a thread-local subscriber
//! and `tracing`'s global callsite interest cache do not race with other
//! tests' threads here.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use capnagent_tower::{Anonymous, FixedTool};
use http::{Request, header};
use support::*;
use tower::ServiceExt;

/// Records the `caveats` field of `capnagent::explain` events at or above
/// `level`.
struct Capture {
    level: tracing::Level,
    seen: Arc<Mutex<Vec<String>>>,
}

struct Field<'a>(&'a mut String);

impl tracing::field::Visit for Field<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "caveats" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.target() == "capnagent::explain" && *meta.level() <= self.level
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut caveats = String::new();
        event.record(&mut Field(&mut caveats));
        self.seen.lock().unwrap().push(caveats);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// One denied and one allowed call under a subscriber at `level`; the
/// explanations it saw.
fn run(level: tracing::Level) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let capture = Capture {
        level,
        seen: Arc::clone(&seen),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture, || {
        let (layer, _) = layer();
        let app = Router::new()
            .route("/t", post(|| async { "ran" }))
            .route_layer(layer.caller(Anonymous).tool(FixedTool::new("t")));
        let token = token(&["arg.n <= 5 AND arg.n >= 0"]);
        for body in [r#"{"n":9}"#, r#"{"n":1}"#] {
            let request = Request::post("/t")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from(body))
                .unwrap();
            runtime.block_on(app.clone().oneshot(request)).unwrap();
        }
    });
    seen.lock().unwrap().clone()
}

#[test]
fn a_caveat_denial_is_explained_at_debug_level_only() {
    let seen = run(tracing::Level::DEBUG);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("arg.n = 9 <= 5: false"), "{seen:?}");
    assert!(seen[0].contains("arg.n = 9 >= 0: true"), "{seen:?}");
    assert!(run(tracing::Level::INFO).is_empty());
}
