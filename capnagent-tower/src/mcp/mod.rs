//! The layer in front of an MCP server: the [`Mcp`] adapter of the engine.
//! This module owns how a request to a Model Context Protocol endpoint
//! (Streamable HTTP) becomes the facts of a decision: the [`McpPolicy`]
//! that says what each kind of message needs (`policy.rs`), the
//! classification of a request (`classify.rs`), and the JSON-RPC answers a
//! denial becomes (`render.rs`). Behind the `mcp` cargo feature (default).
//!
//! Turn it on with [`CapabilityLayer::mcp`](crate::CapabilityLayer::mcp).
//! The layer then reads the JSON-RPC message in each POST body (bounded by
//! the layer's body limit, and handed on to the server byte for byte) and
//! judges it by what it is:
//!
//! ```
//! use axum::{Router, routing::any};
//! use capnagent::{Auditor, Verifier};
//! use capnagent_tower::{Anonymous, CapabilityLayer, McpPolicy};
//!
//! # async fn mcp_server() {}
//! # fn main() -> Result<(), capnagent::Error> {
//! # let (root_key, audit_key) = ([7u8; 32], [9u8; 32]);
//! let layer = CapabilityLayer::new(Verifier::new(&root_key)?, Auditor::new(&audit_key)?)?
//!     .caller(Anonymous) // the capability is the only credential
//!     .mcp(McpPolicy::new());
//! // With rmcp: `.route_service("/mcp", StreamableHttpService::new(...))`.
//! let app: Router = Router::new().route("/mcp", any(mcp_server)).route_layer(layer);
//! # Ok(())
//! # }
//! ```
//!
//! ## What each message needs
//!
//! | message | default | facts of the receipt |
//! | --- | --- | --- |
//! | `tools/call` | **judged**: every caveat must hold | `tool` = `params.name`, `args` = `params.arguments` (number text kept; absent = `{}`) |
//! | `resources/read`, `resources/subscribe`, `resources/unsubscribe` | **judged** (they read or watch a named resource) | `tool` = `mcp:<method>`, `args` = `params` without `_meta` |
//! | `prompts/get`, `completion/complete`, `logging/setLevel`, `tasks/update` | **judged** (their params are arguments to server code: a prompt template, a completion handler, the session's logging, a running task) | `tool` = `mcp:<method>`, `args` = `params` without `_meta` |
//! | any request carrying `params.inputResponses` (a `tools/call`, `prompts/get` or `resources/read` retried with the client's answers, MCP 2026-07-28 multi round-trip requests; a `tasks/update`) | **denied**: the answers reach the tool after its arguments were judged ([`McpPolicy::input_responses`] can judge them as args instead) | `tool` = `mcp:<method>` |
//! | a client's JSON-RPC response to a server request (an elicitation, sampling or roots answer, which reaches the tool that asked) | **judged** | `tool` = `mcp:response`, `args` = its `result` (or `error`) |
//! | `initialize`, `notifications/*` sent by clients, `ping`, `server/discover`, `subscriptions/listen`, `tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`, `tasks/get`, `tasks/list`, `tasks/result`, `tasks/cancel` | **authenticated**: a genuine capability (protocol bookkeeping, listings, a task id) | `tool` = `mcp:<method>`, `args` = `params` without `_meta` |
//! | `GET` (the server-to-client stream), `DELETE` (end of session) | authenticated | `tool` = `mcp:GET`, `mcp:DELETE` |
//! | any other method | **denied** (fail closed: a future method could run a tool) | `tool` = `mcp:<method>` |
//! | a batch (JSON array), a body that is not one JSON-RPC message | denied, 400 | `tool` = `""` |
//! | another HTTP method | denied, 405 | `tool` = `mcp:<METHOD>` |
//!
//! The rule behind the table: a message passes on a genuine capability
//! alone only when nothing in it reaches server code as an argument.
//! Everything that hands the server arguments (or answers that a running
//! tool acts on) is judged against the caveats, so a capability for
//! `bank_wire` does not also fill a prompt template, run a completion
//! handler, or answer a tool's "which account?" question. `requestState`
//! (the opaque state a server echoes through a retry) is not judged: the
//! server made it and must authenticate it itself, as the specification
//! requires.
//!
//! *Authenticated* means the token's chain verifies and every gate before
//! the caveats passes (revocation, holder key, at least one caveat); the
//! caveats themselves describe tool calls, so a caveat that evaluates to
//! false does not stop the message, and a capability for one tool can
//! still initialize the session and list the tools. A caveat that does not
//! parse, or cannot be evaluated against the message (an unknown
//! identifier, a type mismatch), does stop it (fail closed): write
//! `tool == ...` as a token's first caveat, so that every other message
//! stops at a comparison that is simply false. *Open* ([`McpAccess::Open`]) lets a message through without a
//! token; no message is open by default, because the MCP authorization
//! specification expects a credential on every request and `initialize`
//! creates server-side state (a session). Change any of this with
//! [`McpPolicy::method`] and friends. The `mcp:` prefix lies outside the
//! tool-name alphabet of the MCP specification (`A-Z a-z 0-9 _ - .`), and a
//! `tools/call` whose name starts with it is refused, so a receipt's `tool`
//! always says which kind of message it judged.
//!
//! Every request the layer sees leaves exactly one receipt, as elsewhere:
//! one per `tools/call`, and one per other message with the `mcp:` tool.
//!
//! ## Protocol revisions
//!
//! The layer reads what every revision that rmcp 3.11 and the Python SDK
//! 2.3 speak has in common, a JSON-RPC message in a POST body, and checks
//! what is revision-specific when it is present:
//!
//! - 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25 (handshake era):
//!   `initialize`, `notifications/initialized`, a session in
//!   `Mcp-Session-Id`, a `GET` stream. 2025-03-26 allowed JSON-RPC batches;
//!   neither SDK sends them, and the layer refuses them.
//! - 2026-07-28: no handshake (`server/discover` instead), no session, the
//!   protocol version in every request's `params._meta`, and the
//!   `Mcp-Method` / `Mcp-Name` headers (SEP-2243) that mirror the body.
//!   When those headers are present they must agree with the body, or the
//!   request is refused (400, JSON-RPC `-32020`): the layer judged the
//!   body, so nothing downstream may act on a different name. Tool results
//!   the layer writes carry `"resultType":"complete"` for this revision.
//!
//! ## Denials
//!
//! | cause | HTTP | answer |
//! | --- | --- | --- |
//! | a caveat denies a `tools/call` | **200** | a `CallToolResult` with `isError: true`, the reason as text, the signed receipt in `_meta["capnagent/receipt"]` |
//! | missing token | 401, `WWW-Authenticate: Bearer` (no error code, RFC 6750 §3.1) | JSON-RPC error [`DENIED_ERROR_CODE`] |
//! | malformed, forged, revoked token; holder key without proof | 401, `Bearer error="invalid_token"` | JSON-RPC error [`DENIED_ERROR_CODE`] |
//! | a caveat denies another judged message | 403, `Bearer error="insufficient_scope"` | JSON-RPC error [`DENIED_ERROR_CODE`] |
//! | method denied by the policy | 403 | JSON-RPC error `-32601` |
//! | not JSON / not one message / bad params / header mismatch | 400 | JSON-RPC error `-32700` / `-32600` / `-32602` / `-32020` |
//! | allowed, but the sink could not record the receipt ([`ReceiptSink`](crate::ReceiptSink)) | 503, `Retry-After: 1` | JSON-RPC error [`AUDIT_UNAVAILABLE_ERROR_CODE`], no receipt |
//!
//! Every JSON-RPC error carries the request's `id` (or `null` when it could
//! not be read), the reason as `message`, and `data: {"code", "receipt"}`;
//! every challenge carries `resource_metadata` when
//! [`McpPolicy::resource_metadata`] is set. Answers are `application/json`,
//! which the Streamable HTTP transport allows for every request; a client
//! that accepts only `text/event-stream` gets the 200 answer as one SSE
//! event.
//!
//! Why a tool result for caveat denials: it is the channel the MCP
//! specification reserves for errors the model should see and act on, and
//! what both SDKs hand to the model: rmcp's client returns it as
//! `Ok(CallToolResult { is_error: Some(true), .. })` and the Python SDK as
//! a `CallToolResult` with `isError`, while a 4xx becomes a transport error
//! in rmcp (`AuthRequired` / `InsufficientScope`, body dropped) and a 403
//! `insufficient_scope` sends OAuth clients into a step-up flow that
//! cannot succeed: no authorization server can widen a capability. The
//! model reads "caveat failed: arg.amount_cents <= 5000" and can retry
//! within the limit or ask its user. Token problems stay HTTP 401s, as the
//! MCP authorization specification requires, with a JSON-RPC body so that
//! the Python SDK (which reads JSON-RPC errors from 4xx bodies) shows the
//! reason.
//!
//! ## Listing tools
//!
//! The layer does not rewrite responses. A server that wants `tools/list`
//! to show only the tools the presented capability could allow filters in
//! its handler with [`Verified::could_allow`](crate::Verified::could_allow)
//! (rmcp hands the request's `http::request::Parts`, and with them
//! [`Verified`](crate::Verified), to every handler).

mod classify;
mod policy;
mod render;

use std::sync::Arc;

use bytes::Bytes;
use capnagent::JsonLimits;
use http::Response;
use http::request::Parts;

use crate::http::{BufferedBody, Http};
use crate::layer::CapabilityLayer;
use crate::protocol::{Call, Denial, Need, Protocol, Refusal};
use crate::sink::SinkError;

pub use classify::{McpHead, McpReply};
pub use policy::{
    AUDIT_UNAVAILABLE_ERROR_CODE, CODE_META_KEY, DENIED_ERROR_CODE, INPUT_RESPONSES, McpAccess,
    McpPolicy, RECEIPT_META_KEY, TOOL_PREFIX,
};

/// The MCP protocol adapter of [`CapabilityLayer`]: the tool and args of
/// each request come from its JSON-RPC message, an [`McpPolicy`] says
/// what every message needs, and denials are JSON-RPC answers. Built by
/// [`CapabilityLayer::mcp`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Mcp {
    policy: Arc<McpPolicy>,
}

impl Mcp {
    /// The adapter for `policy`.
    pub fn new(policy: McpPolicy) -> Mcp {
        Mcp::from_policy(Arc::new(policy))
    }

    pub(crate) fn from_policy(policy: Arc<McpPolicy>) -> Mcp {
        Mcp { policy }
    }
}

impl CapabilityLayer<Http> {
    /// Guards an MCP server (Streamable HTTP) instead of a tool API: the
    /// tool and args of each request come from its JSON-RPC message
    /// (`tools/call`: `params.name` and `params.arguments`), and `policy`
    /// says what every other message needs. Every other setting (caller,
    /// sink, clock, body limit, ...) is kept; the HTTP tool and args
    /// extractors are not used. Denials are JSON-RPC answers. See
    /// [`crate::mcp`].
    ///
    /// Apply the layer to the MCP endpoint only (one route, such as
    /// `/mcp`).
    pub fn mcp(self, policy: McpPolicy) -> CapabilityLayer<Mcp> {
        self.protocol(Mcp::new(policy))
    }
}

impl Protocol for Mcp {
    type Head = McpHead;
    type Reply = McpReply;
    type Answer = Response<Bytes>;

    const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

    fn head(&self, parts: &mut Parts) -> Result<McpHead, Refusal<McpReply>> {
        Ok(McpHead::new(&self.policy, parts))
    }

    fn reads_body(&self, head: &McpHead) -> bool {
        head.reads_body()
    }

    fn early_tool(&self, head: &McpHead) -> Arc<str> {
        head.early_tool().into()
    }

    fn early_reply(&self, head: &McpHead) -> McpReply {
        head.reply()
    }

    fn may_pass_without_token(&self, head: &McpHead) -> bool {
        head.may_pass_without_token()
    }

    fn call(
        &self,
        head: McpHead,
        parts: &mut Parts,
        body: &Bytes,
        limits: &JsonLimits,
    ) -> Result<Call<McpReply>, Refusal<McpReply>> {
        match head.read(parts, BufferedBody::new(body, *limits)) {
            Ok(call) => {
                let need = match call.access {
                    McpAccess::Open => Need::Open,
                    McpAccess::Judged => Need::Caveats,
                    McpAccess::Authenticated => Need::Genuine,
                    McpAccess::Denied => {
                        Need::Refused(format!("MCP: {} is not allowed on this server", call.label))
                    }
                };
                Ok(Call {
                    tool: call.tool.into(),
                    args: call.args.into(),
                    need,
                    reply: call.reply,
                })
            }
            Err(reject) => Err(Refusal {
                denial: Denial::Unclassified(reject.kind.code()),
                reason: reject.reason,
                tool: reject.tool.into(),
                reply: reject.reply,
            }),
        }
    }

    fn deny(
        &self,
        denial: Denial,
        receipt: &capnagent::Receipt,
        reply: &McpReply,
    ) -> Response<Bytes> {
        render::denial(render::kind_of(denial), receipt, reply)
    }

    fn unavailable(error: &SinkError, reply: &McpReply) -> Response<Bytes> {
        let mut response = render::unavailable(error.reason(), reply);
        crate::http::problem::retry_after(&mut response);
        response
    }
}

crate::http::http_bodies!(Mcp);
