//! # capnagent-tower
//!
//! One layer in front of an axum (or any tower) tool API: every tool call is
//! checked against the caller's [capnagent] capability, and every decision,
//! allowed or denied, leaves a signed [`Receipt`](capnagent::Receipt).
//!
//! ```
//! use axum::{Json, Router, routing::post};
//! use capnagent::{Auditor, Issuer, Verifier};
//! use capnagent_tower::{Anonymous, CapabilityLayer, FixedTool, Verified};
//! use tower::ServiceExt;
//!
//! async fn purchase(verified: Verified, Json(args): Json<serde_json::Value>) -> String {
//!     format!("bought {} with receipt {}", args["sku"], verified.receipt().signature_hex())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root_key = [7u8; 32]; // 32 random bytes in real life: `capnagent keygen`
//! let layer = CapabilityLayer::new(Verifier::new(&root_key)?, Auditor::new(&[9u8; 32])?)?
//!     .caller(Anonymous) // the token is the only credential in this example
//!     .tool(FixedTool::new("checkout.purchase"));
//! let app = Router::new()
//!     .route("/tools/checkout.purchase", post(purchase))
//!     .route_layer(layer);
//!
//! let token = Issuer::from_key(&root_key)?
//!     .issue("agent-42")
//!     .caveat(r#"tool == "checkout.purchase""#)?
//!     .caveat("arg.amount_cents <= 5000")?
//!     .build()?
//!     .serialize();
//! let call = |amount: u32| {
//!     http::Request::post("/tools/checkout.purchase")
//!         .header("authorization", format!("Bearer {token}"))
//!         .header("content-type", "application/json")
//!         .body(axum::body::Body::from(format!(r#"{{"sku":"cable","amount_cents":{amount}}}"#)))
//! };
//! assert_eq!(app.clone().oneshot(call(1299)?).await?.status(), 200);
//! assert_eq!(app.oneshot(call(9900)?).await?.status(), 403);
//! # Ok(())
//! # }
//! ```
//!
//! ## The facts a call is judged by
//!
//! Caveats are checked against facts the server observes itself, each from
//! a pluggable extractor ([`ToolExtractor`], [`CallerExtractor`],
//! [`ArgsExtractor`]; closures work too):
//!
//! | fact | default | built-ins |
//! | --- | --- | --- |
//! | `tool` | none: configure one (a layer without one refuses to be applied) | [`FixedTool`], [`PathParam`] (`/tools/{name}`), a closure |
//! | `caller` | [`CallerExtension`]: the [`AuthenticatedCaller`] extension an authentication layer set | [`Anonymous`], [`TrustedHeader`] (read its warning), a closure |
//! | `args` | [`JsonBody`]: the body, buffered (1 MiB), read once into [`capnagent::Args`] (number text kept), given back intact | [`QueryArgs`], [`PathArgs`], [`NoArgs`], a closure returning a `JsonValue` |
//! | `now` | [`SystemClock`], the layer's clock | any [`Clock`], e.g. a fixed one in tests |
//! | `env` | none | static pairs: [`CapabilityLayer::env`] |
//!
//! None of them trusts the token or the body to say who is calling or which
//! tool is called. Any extractor error denies the call (fail closed), with a
//! receipt.
//!
//! ## One layer per route, or one for the router
//!
//! With `Router::route_layer`, each route gets its own layer (clone one
//! base layer so that they share the sink):
//!
//! ```
//! # use axum::{Router, routing::{get, post}};
//! # use capnagent::{Auditor, Verifier};
//! # use capnagent_tower::{CapabilityLayer, FixedTool, QueryArgs};
//! # fn app(base: CapabilityLayer) -> Router {
//! # async fn wire() {} async fn read() {}
//! Router::new()
//!     .merge(Router::new()
//!         .route("/wire", post(wire))
//!         .route_layer(base.clone().tool(FixedTool::new("bank.wire"))))
//!     .merge(Router::new()
//!         .route("/files", get(read))
//!         .route_layer(base.tool(FixedTool::new("files.read")).args(QueryArgs)))
//! # }
//! ```
//!
//! Or one router-wide layer whose defaults fit most routes, with per-route
//! overrides keyed by the route's path as written (axum's `MatchedPath`):
//!
//! ```
//! # use axum::{Router, routing::{get, post}};
//! # use capnagent_tower::{CapabilityLayer, FixedTool, PathParam, QueryArgs, RouteOverride};
//! # fn app(base: CapabilityLayer) -> Router {
//! # async fn call() {} async fn read() {}
//! Router::new()
//!     .route("/tools/{name}", post(call))
//!     .route("/files", get(read))
//!     .route_layer(
//!         base.tool(PathParam::new("name")) // JSON body args by default
//!             .route("/files", RouteOverride::new().tool(FixedTool::new("files.read")).args(QueryArgs)),
//!     )
//! # }
//! ```
//!
//! Prefer `Router::route_layer` to `Router::layer` in both cases: both run
//! after axum matched the route (so path parameters and `MatchedPath` are
//! there), but `layer` also wraps the fallback, so a request for an unknown
//! path is judged (and denied, with a receipt) instead of getting a 404.
//!
//! axum runs the last layer added first, so an authentication layer that
//! inserts [`AuthenticatedCaller`] is added *after* the capability layer.
//! Don't protect one route with both a router-wide and a per-route layer:
//! it would be checked (and audited) twice.
//!
//! ## Allowed, denied
//!
//! An allowed request reaches the inner service with [`Verified`] (the
//! receipt and the capability) in its extensions; in axum, take `Verified`
//! as a handler argument. A denied request never reaches the inner service;
//! it gets an RFC 9457 `application/problem+json` answer carrying the
//! reason and the signed receipt, never the token:
//!
//! | cause | status |
//! | --- | --- |
//! | missing token | 401, `WWW-Authenticate: Bearer` (no error code, RFC 6750 §3.1) |
//! | malformed or forged token | 401, `WWW-Authenticate: Bearer error="invalid_token"` |
//! | a caveat does not hold | 403, `WWW-Authenticate: Bearer error="insufficient_scope"` |
//! | args required, body not JSON | 400 |
//! | body over the limit | 413 |
//! | server wiring (no authenticated caller) | 500, naming the fix |
//!
//! (On an MCP endpoint the answers are JSON-RPC; see [`mcp`].)
//!
//! ## MCP servers
//!
//! [`CapabilityLayer::mcp`] puts the layer in front of a Model Context
//! Protocol server (Streamable HTTP, any revision from 2024-11-05 to
//! 2026-07-28): each `tools/call` is judged with `tool` = `params.name` and
//! `args` = `params.arguments` read from the JSON-RPC body, an
//! [`McpPolicy`] says what every other message needs, and a caveat denial
//! comes back as a tool error the model can read, with the signed receipt.
//! See [`mcp`] for the policy, the revisions and the denial shapes.
//!
//! ## Audit
//!
//! The [`ReceiptSink`] is called exactly once for every request the layer
//! sees, missing and forged tokens included. An allowed request reaches
//! the inner service only once the sink has recorded its receipt; when the
//! sink reports that it cannot ([`SinkError`]), the request is refused with
//! 503 (fail closed). [`AuditLogSink`] writes the core
//! [`AuditLog`](capnagent::AuditLog) from a dedicated thread, each allowed
//! call's receipt before the call runs (write-ahead, group-committed), or
//! off the request path with
//! [`fail_open`](AuditLogSinkBuilder::fail_open); when its queue is full,
//! requests wait for room (nothing is dropped). [`TracingSink`] (the
//! default) emits `tracing` events.
//!
//! Receipts are signed with the audit key, so the layer refuses to be built
//! with an audit key that is its root key
//! ([`CapabilityLayer::new`]): a receipt would then be a valid capability.
//!
//! What a client can put in a signed receipt is bounded, and a client
//! without a key chooses none of it:
//!
//! | field | written |
//! | --- | --- |
//! | identifier, caveats | the token's, only when its chain verified under the root key (so at most the verifier's `max_token_len`, 256 KiB by default, which only a token holder can use); for any other token `unverified:sha256:<hex of the token text>` (82 bytes; `unverified:unreadable` for a token header that is not text) and no caveats; `""` without a token |
//! | caller, tool | at most [`MAX_RECEIPT_TEXT`](capnagent::MAX_RECEIPT_TEXT) (1 KiB) each: a request whose caller or tool fact is longer is refused (400; in MCP mode `-32602`) and its receipt keeps the first 1 KiB |
//! | outcome reason | a reason the layer writes: at most 1 KiB (cut, marked `…[N bytes]`); a verifier's reason: a verified caveat or identifier plus about 40 bytes |
//! | args hash, timestamp, signature | fixed size |
//!
//! So a receipt of a request without a verified token is under 4 KiB of
//! JSON (the 1 KiB texts can grow up to six times when escaped), and one of
//! a verified token under twice its token's length plus 4 KiB.
//!
//! ## Bodies
//!
//! [`CapabilityService`] is generic over the request body `B`, and hands
//! the inner service the same `B`. When args come from the body, the body
//! is buffered and rebuilt with `B::from(Bytes)`: axum's `Body` and
//! `http_body_util::Full<Bytes>` work as they are; with hyper's `Incoming`,
//! map it to one of those first. Denials are built with
//! `ResBody::from(Bytes)`.
//!
//! ## Cost
//!
//! The check runs in `call` (synchronously) when args do not need the
//! body; otherwise the body is buffered first and the check runs when it is
//! complete. Per call: decode the token (skipped for a token seen before:
//! verified tokens are kept parsed, see [`CapabilityLayer::token_cache`]),
//! parse the body keeping number text, check the chain and the caveats,
//! sign the receipt, hand it to the sink. Numbers for a 1 KiB body and 4
//! caveats are in `benches/README.md`.
//!
//! ## One engine, three protocols
//!
//! The layer is one decision engine behind a small [`Protocol`] trait:
//! [`CapabilityLayer`]`<P>` and [`CapabilityService`]`<S, P>` read the
//! token and the holder-of-key proof ([`TokenSource`]), take the caller
//! ([`CallerExtractor`]) and the time ([`Clock`]), call the verifier and
//! classify its answer by the gate that decided ([`Denial`]), record the
//! receipt ([`ReceiptSink`]) and hand [`Verified`] to the handler. The
//! protocol says where the tool and the args come from and how a denial is
//! rendered:
//!
//! | protocol | tool, args | denials |
//! | --- | --- | --- |
//! | [`Http`] (the default `P`) | [`ToolExtractor`], [`ArgsExtractor`], per-route overrides | problem+json |
//! | [`Mcp`](mcp::Mcp) ([`CapabilityLayer::mcp`]) | the JSON-RPC message, an [`McpPolicy`] | JSON-RPC |
//! | `capnagent_tonic::Grpc` | the method path, the protobuf request message | gRPC `Status` |
//!
//! A handler shared between an axum route and a tonic service takes the
//! same [`Verified`].
//!
//! | module | owns |
//! | --- | --- |
//! | `engine` | the decision: gates in order, the verifier's typed answer, recording receipts (cancellations included), the token cache |
//! | `receipt` | what a receipt the engine signs may say: the subject rules, the bounds on facts and reasons |
//! | [`protocol`] | the adapter trait and the words the engine and adapters share |
//! | `token` | reading the token and the proof from headers or gRPC metadata |
//! | `extract` | the caller extractors, the clock, [`ExtractError`] |
//! | `layer`, `service`, [`future`], `body` | the tower plumbing: configuration, the `Service`, the state machine, the one body reader |
//! | `http` | the HTTP adapter: extractors, route overrides, problem+json |
//! | [`mcp`] | the MCP adapter: policy, classification, JSON-RPC rendering |
//! | `sink`, `verified` | receipt sinks; what an allowed request carries |
//! | [`metrics`] | decision counters and latency histograms (feature `metrics`) |
//!
//! ## Features
//!
//! - `http` (default): the HTTP adapter ([`Http`], the extractors, problem+json).
//! - `mcp` (default, needs `http`): the MCP adapter ([`mcp`]).
//! - `axum` (default, needs `http`): the [`Verified`] extractor,
//!   [`PathParam`], [`PathArgs`], and route overrides keyed by
//!   `MatchedPath`.
//! - `tonic`: `tonic::server::NamedService` for a [`CapabilityService`]
//!   around a tonic service (enabled by `capnagent-tonic`, which builds
//!   this crate without the other features).
//! - `metrics`: decision counters and latency histograms through the
//!   `metrics` facade, per decision, gate and tool (see [`metrics`] for the
//!   names and labels). Install a recorder such as
//!   `metrics-exporter-prometheus` to export them.

mod body;
mod cache;
mod engine;
mod extract;
pub mod future;
#[cfg(feature = "mcp")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "http")]
mod http;
mod layer;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod metrics;
pub mod protocol;
mod receipt;
mod service;
mod sink;
mod token;
mod verified;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use engine::{Checked, REASON_CANCELLED};
pub use extract::{
    Anonymous, AuthenticatedCaller, CallerExtension, CallerExtractor, Clock, ExtractError,
    ExtractErrorKind, SystemClock, TrustedHeader,
};
#[cfg(feature = "http")]
pub use http::{
    ArgsExtractor, BufferedBody, FixedTool, Http, HttpHead, JsonBody, NoArgs, QueryArgs,
    RouteOverride, ToolExtractor,
};
#[cfg(feature = "axum")]
pub use http::{PathArgs, PathParam};
pub use layer::{CapabilityLayer, ConfigError};
#[cfg(feature = "mcp")]
pub use mcp::{McpAccess, McpPolicy};
pub use protocol::{Denial, Protocol};
pub use service::CapabilityService;
pub use sink::{
    AuditLogSink, AuditLogSinkBuilder, AuditLogStats, ReceiptSink, Record, SinkError, TracingSink,
};
pub use token::TokenSource;
#[cfg(feature = "axum")]
pub use verified::MissingVerified;
pub use verified::Verified;
