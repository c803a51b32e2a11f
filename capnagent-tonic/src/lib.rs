//! # capnagent-tonic
//!
//! Capabilities for gRPC tool services: one layer on a tonic server, and
//! every call is checked against the caller's [capnagent] capability, with
//! a signed [`Receipt`](capnagent::Receipt) for every decision, allowed or
//! denied. This crate is the gRPC adapter ([`Grpc`]) of the engine in
//! [`capnagent_tower`]: the token, the proof, the caller, the clock, the
//! verifier, the receipt and its sink, and [`Verified`] are the engine's;
//! what is gRPC's is here: the method path as the tool, protobuf args
//! ([`Descriptors`]), `Status` denials, the interceptor, the client helpers.
//!
//! ```no_run
//! use capnagent::{Auditor, Verifier};
//! use capnagent_tonic::{Anonymous, CapabilityLayer, Grpc};
//! use tonic::transport::Server;
//! # use tonic::service::Routes;
//! # const FILE_DESCRIPTOR_SET: &[u8] = &[];
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root_key = [7u8; 32]; // 32 random bytes in real life: `capnagent keygen`
//! let grpc = Grpc::new()
//!     // The service's descriptors, embedded by its build script: unary
//!     // requests are decoded into `arg.*` facts.
//!     .file_descriptor_set(FILE_DESCRIPTOR_SET)?
//!     .tool_name("/tools.v1.ToolService/Purchase", "checkout.purchase");
//! let layer = CapabilityLayer::with_protocol(Verifier::new(&root_key)?, Auditor::new(&[9u8; 32])?, grpc)?
//!     .caller(Anonymous); // the token is the only credential here
//!
//! Server::builder()
//!     .layer(layer)
//!     .add_routes(Routes::default()) // .add_service(ToolServiceServer::new(MyTools))
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! A client sends `authorization: Bearer <token>`; a token with the caveats
//! `tool == "checkout.purchase"` and `arg.amount <= 5000` then allows a
//! `Purchase` of 1200 and denies one of 9000 with `PERMISSION_DENIED`.
//! The handler reads the receipt with [`verified`]`(&request)` (the same
//! [`Verified`] an axum handler takes). The
//! `capnagent-examples` package has a complete server and client
//! (`grpc-tool-server`, `grpc-tool-client`).
//!
//! ## The facts a call is judged by
//!
//! | fact | source |
//! | --- | --- |
//! | `tool` | the method path `/package.Service/Method`, or the name given with [`Grpc::tool_name`] |
//! | `caller` | the [`AuthenticatedCaller`] extension an earlier layer set (default; missing is `INTERNAL`, naming the fix), [`Anonymous`], or [`TrustedHeader`] for gateway-set metadata (read its warning) |
//! | `args` | unary and server-streaming calls: the request message, decoded with the service's file descriptor set (see [Args](#args)); client-streaming, bidi and unknown methods: `null` |
//! | `now` | the layer's [`Clock`] ([`SystemClock`] by default) |
//! | `env` | static pairs, [`CapabilityLayer::env`] |
//!
//! The token comes from `authorization: Bearer <token>` (or another key,
//! [`CapabilityLayer::token_source`]). Nothing in the request can name its
//! own tool or caller.
//!
//! ## Args
//!
//! For a method with one request message, the layer buffers the request
//! (up to the layer's `body_limit`, 4 MiB by default for gRPC), reads the
//! gRPC frame (exactly one message, decompressed when the client
//! compressed it: see [Compression](#compression)), decodes it with the
//! method's input type from the [`Descriptors`], and prints it as JSON with
//! the proto3 JSON mapping and three deliberate choices:
//!
//! - 64-bit integers are JSON **numbers** (strict proto3 JSON makes them
//!   strings), so `arg.amount <= 5000` works on an `int64` field;
//! - fields keep their **`.proto` names** (`merchant_id`, not `merchantId`);
//! - fields at their **default value are present** (`0`, `""`, `[]`), so
//!   an amount of 0 is `0`, not a missing identifier (which would deny).
//!
//! Number text is kept exactly (no floating point); enums are their names,
//! `bytes` base64, unknown fields dropped. The handler then receives the
//! very bytes that were checked.
//!
//! The JSON text has its own bound, [`Grpc::max_args_json`]
//! ([`DEFAULT_MAX_ARGS_JSON`], 8 MiB): a message's JSON form can be many
//! times its wire size (each element of a repeated empty message is 2
//! bytes on the wire and prints every field at its default; a packed zero
//! is 1 byte that prints as `0,`). Printing stops at the bound and the call
//! is refused with `RESOURCE_EXHAUSTED`. The decoded message is held in
//! memory while it prints: bounded by the message limit times the
//! in-memory size of one decoded element (tens of bytes).
//!
//! ## Compression
//!
//! The layer reads compressed request messages in every encoding tonic
//! reads: `gzip`, `deflate` and `zstd` (the `grpc-encoding` header; a
//! client's `send_compressed`, grpcio's `compression`). It decompresses
//! the message to judge its args, with tonic's own decoders (`flate2`,
//! `zstd`), and hands the service the frame exactly as it was sent, so
//! the service must accept the same encodings
//! (`XxxServer::new(..).accept_compressed(CompressionEncoding::Gzip)` and
//! so on, with tonic's `gzip`, `deflate` and `zstd` features). An
//! uncompressed frame under any of these encodings is read as is (grpcio
//! sends small messages that way).
//!
//! Decompression is bounded by the message limit: a message that
//! decompresses to more than the body limit less the 5-byte frame header
//! is refused with `RESOURCE_EXHAUSTED` after reading one byte past it (a
//! decompression bomb is never held whole), and a `zstd` frame may not ask
//! for a window over 8 MiB. Following the gRPC compression spec
//! (`doc/compression.md`), any other `grpc-encoding` (`snappy`, ...) is
//! refused from the request head, streaming calls included, with
//! `UNIMPLEMENTED` and `grpc-accept-encoding: gzip,deflate,zstd,identity`;
//! a message with the compressed flag set under no `grpc-encoding` (or
//! `identity`) is a protocol error, `INTERNAL`. Both are denials with a
//! signed receipt, like every other. The [interceptor](#layer-or-interceptor)
//! refuses an encoding the layer cannot read the same way, and passes
//! compressed messages (which it never reads) to the service.
//!
//! **Streaming calls** (client streaming and bidi) are not buffered: their
//! args are `null`, so any `arg.*` caveat denies them ("unknown
//! identifier"), fail closed. Give streaming tools tokens whose caveats
//! name the tool, the caller, the time or `env` only.
//!
//! ## Holder-of-key
//!
//! A capability bound to a holder key
//! ([`Capability::holder_of_key`](capnagent::Capability::holder_of_key)) is
//! usable only with a proof in the metadata [`PROOF_METADATA`]
//! (`capnagent-proof`, text form `t=<unix ms>;sig=<base64url>`). The
//! verifier derives the challenge itself from the tool, the args and the
//! proof's timestamp, so the client must compute the args exactly as the
//! layer does: [`Descriptors::args_for`] with the same descriptor set, then
//! [`client::attach_proof`]. Replay protection and revocation are the
//! verifier's: [`CapabilityLayer::nonce_store`] and
//! [`CapabilityLayer::revocations`] configure them.
//!
//! ## Statuses
//!
//! | cause | status |
//! | --- | --- |
//! | token missing, malformed or forged; proof missing (the verifier's holder-key gate) or malformed | `UNAUTHENTICATED` |
//! | a caveat (or revocation, a bad or replayed proof) denies | `PERMISSION_DENIED` |
//! | the message does not decode or decompress, or is not one frame | `INVALID_ARGUMENT` |
//! | the message (decompressed), or its JSON form, is over its limit | `RESOURCE_EXHAUSTED` |
//! | a `grpc-encoding` the layer cannot read | `UNIMPLEMENTED`, with `grpc-accept-encoding` |
//! | server wiring (no authenticated caller); a compressed message under no `grpc-encoding` (a protocol error) | `INTERNAL` |
//!
//! The gRPC code is chosen in one place ([`status`]'s table), from the
//! engine's typed denial (for the verifier's own, the gate that decided).
//! The status message is the reason. Every denial carries its signed
//! receipt in the binary metadata [`RECEIPT_METADATA`]
//! (`capnagent-receipt-bin`, read it with [`client::denied_receipt`]). The
//! token is never echoed or logged.
//!
//! ## Layer or interceptor
//!
//! [`CapabilityInterceptor`] is the same check as a
//! [`tonic::service::Interceptor`]: it sees only metadata, so it judges
//! every call of a service as one fixed tool with args `null`, and refuses
//! holder-bound tokens. Use it when a service's tokens have no `arg.*`
//! caveats and no holder key; use the layer otherwise.
//!
//! ## Audit
//!
//! The [`ReceiptSink`] is called exactly once for every call the layer
//! sees, missing and forged tokens included, and for a call dropped
//! before its decision (denied, "cancelled"). A receipt names a token's
//! identifier and caveats only when its chain verified: a forged or
//! malformed token is `unverified:sha256:<hex of the token>`, without
//! caveats, and a caller or tool fact over
//! [`MAX_RECEIPT_TEXT`](capnagent::MAX_RECEIPT_TEXT) (1 KiB) is refused
//! with `INVALID_ARGUMENT`. The layer (and so the interceptor, built from
//! one) refuses to be built with an audit key equal to a root key: every
//! receipt would be a capability. The sinks are `capnagent-tower`'s: [`AuditLogSink`]
//! writes the core audit log, each allowed call's receipt before the call
//! runs (or off the request path when built
//! [`fail_open`](AuditLogSinkBuilder::fail_open)), [`TracingSink`] (the
//! default) emits `tracing` events. An allowed call whose receipt the sink
//! cannot record is refused with `UNAVAILABLE` ([`SinkError`]), by the
//! layer and the interceptor alike.
//!
//! With the cargo feature `metrics`, every decision is also counted
//! through the `metrics` facade, per decision, gate and tool, with a
//! latency histogram (`capnagent_tower::metrics` has the names and
//! labels; the tool is the method's tool name).
//!
//! ## Cost
//!
//! A call that carries no message to decode (a streaming or unknown
//! method, a bearer token) is decided in `call`, synchronously; otherwise
//! the request is buffered first. Verified tokens are kept parsed by the
//! engine ([`token_cache`](capnagent_tower::CapabilityLayer::token_cache),
//! shared with the HTTP layer's code): a token seen before is not decoded
//! again, though every call is still verified in full.
//!
//! ## Scope
//!
//! `Server::builder().layer(..)` protects every service of the server,
//! health and reflection included. To leave a service open, wrap only the
//! protected services (`layer.layer(XxxServer::new(..))`) instead.

mod args;
pub mod client;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod interceptor;
pub mod status;

pub use args::{ArgsError, DEFAULT_MAX_ARGS_JSON, Descriptors, message_to_args};
pub use grpc::{Grpc, GrpcHead};
pub use interceptor::CapabilityInterceptor;
pub use status::RECEIPT_METADATA;

/// Default metadata key of the holder-of-key proof: `capnagent-proof`
/// (set another with the layer's `proof_header`).
pub const PROOF_METADATA: &str = "capnagent-proof";

/// The capability layer for tonic servers: `capnagent_tower`'s engine
/// speaking [`Grpc`]. Build it with
/// `CapabilityLayer::with_protocol(verifier, auditor, Grpc::new()...)`.
pub type CapabilityLayer = capnagent_tower::CapabilityLayer<Grpc>;

/// The service [`CapabilityLayer`] builds.
pub type CapabilityService<S> = capnagent_tower::CapabilityService<S, Grpc>;

/// The response future of [`CapabilityService`].
pub mod future {
    /// The response future of [`CapabilityService`](crate::CapabilityService)
    /// for a request body `B`.
    pub type ResponseFuture<S, B> = capnagent_tower::future::ResponseFuture<S, B, crate::Grpc>;
}

/// The same `Verified` as `capnagent_tower`'s, so a handler can be shared
/// between an axum route and a tonic service; the sinks, clock and caller
/// extractors are the engine's too.
pub use capnagent_tower::{
    Anonymous, AuditLogSink, AuditLogSinkBuilder, AuditLogStats, AuthenticatedCaller,
    CallerExtension, CallerExtractor, Clock, ExtractError, REASON_CANCELLED, ReceiptSink, Record,
    SinkError, SystemClock, TokenSource, TracingSink, TrustedHeader, Verified,
};

/// The [`Verified`] of an allowed call, or `INTERNAL` naming the fix when
/// the service is not behind the capability layer (a wiring bug).
///
/// ```
/// fn purchase(request: &tonic::Request<()>) -> Result<String, tonic::Status> {
///     let verified = capnagent_tonic::verified(request)?;
///     Ok(verified.receipt().signature_hex())
/// }
/// # let _ = purchase;
/// ```
pub fn verified<T>(request: &tonic::Request<T>) -> Result<&Verified, tonic::Status> {
    Verified::from_extensions(request.extensions()).ok_or_else(|| {
        tracing::error!(target: "capnagent::rejection", "{MISSING_VERIFIED}");
        tonic::Status::internal(MISSING_VERIFIED)
    })
}

const MISSING_VERIFIED: &str = "`Verified` (capnagent_tower's, re-exported here) was not found in the request \
     extensions. Is this service behind the capability layer? Add it with \
     `Server::builder().layer(capnagent_tonic::CapabilityLayer::with_protocol(..))`, \
     wrap the service with `CapabilityLayer::layer`, or use \
     `XxxServer::with_interceptor(svc, CapabilityInterceptor::new(..))`.";

/// The `prost-reflect` this crate decodes messages with (its
/// `DescriptorPool`, `MessageDescriptor` and `DescriptorError` appear in
/// this API).
pub use prost_reflect;
