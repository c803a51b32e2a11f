//! The layer in front of an MCP server: this module owns how a request to a
//! Model Context Protocol endpoint (Streamable HTTP) becomes the facts of a
//! decision, the [`McpPolicy`] that says what each kind of message needs,
//! and the JSON-RPC answers a denial becomes.
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

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use capnagent::Receipt;
use capnagent::{JsonObject, JsonValue, write_json_string};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use crate::extract::BufferedBody;
use crate::response::DenialKind;

/// Prefix of the `tool` fact of every message that is not a `tools/call`.
pub const TOOL_PREFIX: &str = "mcp:";

/// JSON-RPC error code of a denial by the capability (missing, invalid or
/// insufficient): in the range JSON-RPC reserves for implementation-defined
/// server errors, and used by neither MCP nor its SDKs.
pub const DENIED_ERROR_CODE: i64 = -32003;

/// The JSON-RPC error code of a message that was allowed but refused
/// because its receipt could not be recorded (fail closed; HTTP 503, `data`
/// `{"code": "audit_unavailable"}`, no receipt).
pub const AUDIT_UNAVAILABLE_ERROR_CODE: i64 = -32004;

/// The `_meta` key of a denied tool result that carries the signed receipt.
pub const RECEIPT_META_KEY: &str = "capnagent/receipt";

/// The `_meta` key of a denied tool result that carries the stable code of
/// the denial (`insufficient_scope`).
pub const CODE_META_KEY: &str = "capnagent/code";

/// The first protocol revision without the `initialize` handshake.
const FIRST_MODERN_REVISION: &str = "2026-07-28";

/// The `_meta` key of the per-request protocol version (2026-07-28).
const PROTOCOL_VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";

const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
const HEADER_METHOD: &str = "mcp-method";
const HEADER_NAME: &str = "mcp-name";

/// What a kind of MCP message needs to pass the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum McpAccess {
    /// Passes without a token. A token that is sent anyway must be genuine
    /// (as for [`Authenticated`](Self::Authenticated)): a client holding a
    /// forged or revoked one should learn it at once.
    Open,
    /// Needs a genuine capability: its chain verifies and every gate before
    /// the caveats passes (revocation, holder key, at least one caveat). A
    /// caveat that evaluates to false does not stop the message; one that
    /// does not parse or cannot be evaluated against it does (fail closed).
    Authenticated,
    /// Judged like a tool call: every caveat must hold, with `tool` =
    /// `mcp:<method>` and `args` = the message's `params` (without `_meta`).
    Judged,
    /// Refused, with or without a capability.
    Denied,
}

/// Which MCP messages need what; see the [module docs](self) for the
/// defaults and why.
///
/// ```
/// use capnagent_tower::{McpAccess, McpPolicy};
///
/// let policy = McpPolicy::new()
///     .method("ping", McpAccess::Open) // health checks without a token
///     .method("prompts/get", McpAccess::Judged) // `tool == "mcp:prompts/get" AND arg.name == "summary"`
///     .method("skills/list", McpAccess::Authenticated); // an extension this server serves
/// assert_eq!(policy.access("tools/call"), McpAccess::Judged);
/// assert_eq!(policy.access("tools/list"), McpAccess::Authenticated);
/// assert_eq!(policy.access("no/such/method"), McpAccess::Denied);
/// ```
#[derive(Debug, Clone)]
pub struct McpPolicy {
    methods: HashMap<Box<str>, McpAccess>,
    unknown: McpAccess,
    responses: McpAccess,
    input_responses: McpAccess,
    get: McpAccess,
    delete: McpAccess,
    resource_metadata: Option<Arc<str>>,
}

/// Methods a client sends that need a genuine capability by default.
const AUTHENTICATED_METHODS: &[&str] = &[
    // lifecycle, every revision
    "initialize",
    "notifications/initialized",
    "ping",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    // 2026-07-28
    "server/discover",
    "subscriptions/listen",
    // listings
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    // tasks (2025-11-25, and the SEP-2663 extension): a task id only
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// Methods judged against the caveats by default (besides `tools/call`):
/// they read or watch a named resource, or hand arguments to server code
/// (a prompt template, a completion handler, a running task, the
/// session's logging).
const JUDGED_METHODS: &[&str] = &[
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/update",
];

/// The `params` member of a retried request (MCP 2026-07-28 multi
/// round-trip requests) or a task update that carries the client's answers
/// to the server's questions, which reach the tool.
pub const INPUT_RESPONSES: &str = "inputResponses";

impl Default for McpPolicy {
    fn default() -> Self {
        McpPolicy::new()
    }
}

impl McpPolicy {
    /// The default policy (see the [module docs](self)).
    pub fn new() -> McpPolicy {
        let methods = AUTHENTICATED_METHODS
            .iter()
            .map(|m| (Box::from(*m), McpAccess::Authenticated))
            .chain(
                JUDGED_METHODS
                    .iter()
                    .map(|m| (Box::from(*m), McpAccess::Judged)),
            )
            .collect();
        McpPolicy {
            methods,
            unknown: McpAccess::Denied,
            responses: McpAccess::Judged,
            input_responses: McpAccess::Denied,
            get: McpAccess::Authenticated,
            delete: McpAccess::Authenticated,
            resource_metadata: None,
        }
    }

    /// Sets what `method` needs. `tools/call` is always judged against the
    /// caveats; the only other setting it takes is [`McpAccess::Denied`]
    /// (a server whose tools nobody may call).
    pub fn method(mut self, method: impl Into<String>, access: McpAccess) -> McpPolicy {
        self.methods.insert(method.into().into_boxed_str(), access);
        self
    }

    /// Sets what a method missing from the table needs. Default
    /// [`McpAccess::Denied`]: a method this policy does not know (a future
    /// revision's, an extension's) might run a tool.
    pub fn unknown_methods(mut self, access: McpAccess) -> McpPolicy {
        self.unknown = access;
        self
    }

    /// Sets what a client's JSON-RPC response to a server request (an
    /// elicitation, sampling or roots answer, which reaches the tool that
    /// asked) needs. Default [`McpAccess::Judged`]: `tool` =
    /// `mcp:response`, `args` = its `result` (or its `error`), so only a
    /// capability with caveats for `tool == "mcp:response"` lets answers
    /// through (for example `tool == "mcp:response" AND arg.action ==
    /// "decline"`). [`McpAccess::Authenticated`] lets any genuine
    /// capability answer, unjudged.
    pub fn client_responses(mut self, access: McpAccess) -> McpPolicy {
        self.responses = access;
        self
    }

    /// Sets what a request carrying `params.inputResponses` needs: a
    /// `tools/call`, `prompts/get` or `resources/read` retried with the
    /// client's answers to the server's questions (MCP 2026-07-28 multi
    /// round-trip requests), or a `tasks/update`. Those answers reach the
    /// tool after the capability judged its arguments. Default
    /// [`McpAccess::Denied`]: refused, whatever the method.
    ///
    /// [`McpAccess::Judged`] judges the request with the answers in its
    /// args: a `tools/call`'s args are its `arguments` plus an
    /// `inputResponses` member (a call whose `arguments` already have one is
    /// refused), other methods' args are their `params` (without `_meta`)
    /// as always; so `arg.inputResponses.confirm.action == "accept"`
    /// reads an answer. [`McpAccess::Authenticated`] (or `Open`) lets the
    /// answers through unjudged, the method's own access deciding.
    pub fn input_responses(mut self, access: McpAccess) -> McpPolicy {
        self.input_responses = access;
        self
    }

    /// Sets what an HTTP `GET` (the server-to-client SSE stream of the
    /// handshake-era revisions) needs. Default [`McpAccess::Authenticated`].
    pub fn http_get(mut self, access: McpAccess) -> McpPolicy {
        self.get = access;
        self
    }

    /// Sets what an HTTP `DELETE` (ending a session) needs. Default
    /// [`McpAccess::Authenticated`].
    pub fn http_delete(mut self, access: McpAccess) -> McpPolicy {
        self.delete = access;
        self
    }

    /// Adds `resource_metadata="<uri>"` to every `WWW-Authenticate`
    /// challenge: the RFC 9728 protected resource metadata document the
    /// MCP authorization specification points clients to.
    pub fn resource_metadata(mut self, uri: http::Uri) -> McpPolicy {
        // `http::Uri` admits no `"`, `\`, spaces or control characters, so
        // the text can be quoted as it is.
        self.resource_metadata = Some(Arc::from(uri.to_string()));
        self
    }

    /// What a message with this method needs.
    pub fn access(&self, method: &str) -> McpAccess {
        let configured = self.methods.get(method).copied();
        if method == "tools/call" {
            return match configured {
                Some(McpAccess::Denied) => McpAccess::Denied,
                _ => McpAccess::Judged,
            };
        }
        configured.unwrap_or(self.unknown)
    }

    /// Whether some POST body could pass without a token, so that a request
    /// without one must be read before it is refused.
    fn opens_any_message(&self) -> bool {
        self.unknown == McpAccess::Open
            || self.responses == McpAccess::Open
            || self.methods.values().any(|a| *a == McpAccess::Open)
    }
}

// ---------------------------------------------------------------------------
// reading a request

/// The HTTP method of a request to the MCP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HttpMethod {
    Post,
    Get,
    Delete,
    Other(Method),
}

/// What the layer knows of an MCP request from its head.
#[derive(Debug, Clone)]
pub(crate) struct McpHead {
    policy: Arc<McpPolicy>,
    http: HttpMethod,
    sse_only: bool,
    modern_header: bool,
}

/// One classified message: what it needs, and the facts it is judged by.
#[derive(Debug)]
pub(crate) struct McpCall {
    pub(crate) access: McpAccess,
    /// What the message is, for a denial's reason: `tools/call`, `HTTP GET`.
    pub(crate) label: String,
    pub(crate) tool: String,
    pub(crate) args: JsonValue,
    pub(crate) reply: McpReply,
}

/// A message the layer refuses before any capability is consulted.
#[derive(Debug)]
pub(crate) struct McpReject {
    pub(crate) kind: DenialKind,
    pub(crate) reason: String,
    pub(crate) tool: String,
    pub(crate) reply: McpReply,
}

/// How to answer the request: the JSON-RPC `id` to echo and the shape the
/// client reads.
#[derive(Debug, Clone)]
pub(crate) struct McpReply {
    id: Option<JsonValue>,
    tool_call: bool,
    modern: bool,
    sse_only: bool,
    resource_metadata: Option<Arc<str>>,
}

impl McpHead {
    pub(crate) fn new(policy: &Arc<McpPolicy>, parts: &Parts) -> McpHead {
        let http = match parts.method {
            Method::POST => HttpMethod::Post,
            Method::GET => HttpMethod::Get,
            Method::DELETE => HttpMethod::Delete,
            ref other => HttpMethod::Other(other.clone()),
        };
        let accepts = |essence: &str, range: &str| {
            media_ranges(&parts.headers).any(|m| {
                m.eq_ignore_ascii_case(essence) || m == "*/*" || m.eq_ignore_ascii_case(range)
            })
        };
        let has_accept = parts.headers.contains_key(header::ACCEPT);
        let sse_only = has_accept
            && !accepts("application/json", "application/*")
            && accepts("text/event-stream", "text/*");
        let modern_header = parts
            .headers
            .get(HEADER_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_modern);
        McpHead {
            policy: Arc::clone(policy),
            http,
            sse_only,
            modern_header,
        }
    }

    /// Whether the request's body holds the message (a POST).
    pub(crate) fn reads_body(&self) -> bool {
        self.http == HttpMethod::Post
    }

    /// Whether this request could pass without a token.
    pub(crate) fn may_pass_without_token(&self) -> bool {
        match &self.http {
            HttpMethod::Post => self.policy.opens_any_message(),
            HttpMethod::Get => self.policy.get == McpAccess::Open,
            HttpMethod::Delete => self.policy.delete == McpAccess::Open,
            HttpMethod::Other(_) => false,
        }
    }

    /// The `tool` fact of a receipt signed before the body is read.
    pub(crate) fn early_tool(&self) -> String {
        match &self.http {
            HttpMethod::Post => String::new(),
            HttpMethod::Get => format!("{TOOL_PREFIX}GET"),
            HttpMethod::Delete => format!("{TOOL_PREFIX}DELETE"),
            HttpMethod::Other(method) => format!("{TOOL_PREFIX}{method}"),
        }
    }

    /// The answer's shape while the message (and its `id`) is unknown.
    pub(crate) fn reply(&self) -> McpReply {
        McpReply {
            id: None,
            tool_call: false,
            modern: self.modern_header,
            sse_only: self.sse_only,
            resource_metadata: self.policy.resource_metadata.clone(),
        }
    }

    /// Classifies the request: from its HTTP method, and for a POST from
    /// the JSON-RPC message in its (buffered) body.
    pub(crate) fn read(&self, parts: &Parts, body: BufferedBody<'_>) -> Result<McpCall, McpReject> {
        let access = match &self.http {
            HttpMethod::Post => return self.read_message(parts, body),
            HttpMethod::Get => self.policy.get,
            HttpMethod::Delete => self.policy.delete,
            HttpMethod::Other(method) => {
                return Err(McpReject {
                    kind: DenialKind::HttpMethodNotAllowed,
                    reason: format!(
                        "HTTP {method} is not served on an MCP endpoint (POST, GET, DELETE)"
                    ),
                    tool: self.early_tool(),
                    reply: self.reply(),
                });
            }
        };
        Ok(McpCall {
            access,
            label: format!("HTTP {}", parts.method),
            tool: self.early_tool(),
            args: JsonValue::Null,
            reply: self.reply(),
        })
    }

    fn read_message(&self, parts: &Parts, body: BufferedBody<'_>) -> Result<McpCall, McpReject> {
        let mut reply = self.reply();
        let reject = |kind, reason: String, tool: &str, reply: &McpReply| McpReject {
            kind,
            reason,
            tool: tool.to_owned(),
            reply: reply.clone(),
        };
        let value = body.json().map_err(|e| {
            reject(
                DenialKind::ParseError,
                format!("MCP: request body is not JSON: {e}"),
                "",
                &reply,
            )
        })?;
        let message = match value {
            JsonValue::Object(object) => object,
            JsonValue::Array(_) => {
                return Err(reject(
                    DenialKind::InvalidRequest,
                    "MCP: JSON-RPC batches are not accepted; send one message per request"
                        .to_owned(),
                    "",
                    &reply,
                ));
            }
            other => {
                return Err(reject(
                    DenialKind::InvalidRequest,
                    format!(
                        "MCP: expected one JSON-RPC message (an object), got {}",
                        other.kind_name()
                    ),
                    "",
                    &reply,
                ));
            }
        };
        if let Some(key) = duplicate_key(&message) {
            return Err(reject(
                DenialKind::InvalidRequest,
                format!("MCP: member `{key}` appears more than once in the message"),
                "",
                &reply,
            ));
        }
        reply.id = match message.get("id") {
            None => None,
            Some(id @ (JsonValue::String(_) | JsonValue::Number(_))) => Some(id.clone()),
            Some(_) => {
                return Err(reject(
                    DenialKind::InvalidRequest,
                    "MCP: `id` must be a string or a number".to_owned(),
                    "",
                    &reply,
                ));
            }
        };
        if message.get("jsonrpc").and_then(JsonValue::as_str) != Some("2.0") {
            return Err(reject(
                DenialKind::InvalidRequest,
                "MCP: `jsonrpc` must be \"2.0\"".to_owned(),
                "",
                &reply,
            ));
        }
        let params = match message.get("params") {
            None | Some(JsonValue::Null) => None,
            Some(JsonValue::Object(params)) => Some(params),
            Some(_) => {
                return Err(reject(
                    DenialKind::InvalidRequest,
                    "MCP: `params` must be an object".to_owned(),
                    "",
                    &reply,
                ));
            }
        };
        if let Some(key) = params.and_then(duplicate_key) {
            return Err(reject(
                DenialKind::InvalidParams,
                format!("MCP: member `params.{key}` appears more than once"),
                "",
                &reply,
            ));
        }
        reply.modern |= params
            .and_then(|p| p.get("_meta"))
            .and_then(JsonValue::as_object)
            .and_then(|meta| meta.get(PROTOCOL_VERSION_META_KEY))
            .and_then(JsonValue::as_str)
            .is_some_and(is_modern);

        let method = match message.get("method") {
            Some(JsonValue::String(method)) => method.as_str(),
            Some(_) => {
                return Err(reject(
                    DenialKind::InvalidRequest,
                    "MCP: `method` must be a string".to_owned(),
                    "",
                    &reply,
                ));
            }
            None => return self.read_response(parts, &message, reply),
        };
        let tool = format!("{TOOL_PREFIX}{method}");
        if message.get("result").is_some() || message.get("error").is_some() {
            return Err(reject(
                DenialKind::InvalidRequest,
                "MCP: a message with a `method` cannot carry `result` or `error`".to_owned(),
                &tool,
                &reply,
            ));
        }
        let answers = params.and_then(|p| p.get(INPUT_RESPONSES));
        if answers.is_some() && self.policy.input_responses == McpAccess::Denied {
            return Err(reject(
                DenialKind::MethodDenied,
                format!(
                    "MCP: `{method}` carries `params.{INPUT_RESPONSES}` (answers that reach the \
                     tool after the call was judged); not allowed on this server"
                ),
                &tool,
                &reply,
            ));
        }
        // Answers judged as args make the whole request judged.
        let judge_answers = answers.is_some() && self.policy.input_responses == McpAccess::Judged;
        if method != "tools/call" {
            if let Err(reason) = check_headers(&parts.headers, Some(method), params) {
                return Err(reject(DenialKind::HeaderMismatch, reason, &tool, &reply));
            }
            let access = match self.policy.access(method) {
                McpAccess::Denied => McpAccess::Denied,
                _ if judge_answers => McpAccess::Judged,
                access => access,
            };
            return Ok(McpCall {
                access,
                label: format!("`{method}`"),
                tool,
                args: params.map_or(JsonValue::Null, without_meta),
                reply,
            });
        }

        // A tool call: the facts come from its params.
        reply.tool_call = true;
        let access = self.policy.access(method);
        if reply.id.is_none() {
            return Err(reject(
                DenialKind::InvalidRequest,
                "MCP: `tools/call` must be a request, with an `id`".to_owned(),
                &tool,
                &reply,
            ));
        }
        let name = match params.and_then(|p| p.get("name")) {
            Some(JsonValue::String(name)) => name,
            _ => {
                return Err(reject(
                    DenialKind::InvalidParams,
                    "MCP: `tools/call` needs `params.name`, a string".to_owned(),
                    &tool,
                    &reply,
                ));
            }
        };
        if name.starts_with(TOOL_PREFIX) {
            return Err(reject(
                DenialKind::InvalidParams,
                format!("MCP: tool names starting with `{TOOL_PREFIX}` are reserved: {name:?}"),
                &tool,
                &reply,
            ));
        }
        if let Err(reason) = check_headers(&parts.headers, Some(method), params) {
            return Err(reject(DenialKind::HeaderMismatch, reason, name, &reply));
        }
        let mut args = match params.and_then(|p| p.get("arguments")) {
            None | Some(JsonValue::Null) => JsonObject::new(),
            Some(JsonValue::Object(args)) => args.clone(),
            Some(other) => {
                return Err(reject(
                    DenialKind::InvalidParams,
                    format!(
                        "MCP: `params.arguments` must be an object, got {}",
                        other.kind_name()
                    ),
                    name,
                    &reply,
                ));
            }
        };
        if judge_answers && let Some(answers) = answers {
            if args.get(INPUT_RESPONSES).is_some() {
                return Err(reject(
                    DenialKind::InvalidParams,
                    format!(
                        "MCP: `params.arguments` has a member `{INPUT_RESPONSES}`, which the \
                         answers judged with them would shadow"
                    ),
                    name,
                    &reply,
                ));
            }
            args.insert(INPUT_RESPONSES.to_owned(), answers.clone());
        }
        Ok(McpCall {
            access,
            label: format!("`{method}`"),
            tool: name.clone(),
            args: JsonValue::Object(args),
            reply,
        })
    }

    /// A message without a `method`: the client's answer to a server request.
    fn read_response(
        &self,
        parts: &Parts,
        message: &JsonObject,
        reply: McpReply,
    ) -> Result<McpCall, McpReject> {
        let tool = format!("{TOOL_PREFIX}response");
        let answers = message.get("result").is_some() != message.get("error").is_some();
        if reply.id.is_none() || !answers {
            return Err(McpReject {
                kind: DenialKind::InvalidRequest,
                reason: "MCP: not a JSON-RPC request, notification or response".to_owned(),
                tool: String::new(),
                reply,
            });
        }
        if let Err(reason) = check_headers(&parts.headers, None, None) {
            return Err(McpReject {
                kind: DenialKind::HeaderMismatch,
                reason,
                tool,
                reply,
            });
        }
        // What reaches the server: the answer, or the error.
        let args = message
            .get("result")
            .or_else(|| message.get("error"))
            .cloned()
            .unwrap_or(JsonValue::Null);
        Ok(McpCall {
            access: self.policy.responses,
            label: "a client's JSON-RPC response".to_owned(),
            tool,
            args,
            reply,
        })
    }
}

/// The media ranges of every `Accept` header, without parameters.
fn media_ranges(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|range| range.split(';').next().unwrap_or("").trim())
}

/// Whether `version` is a dated revision at or after 2026-07-28 (dated
/// revisions sort as text).
fn is_modern(version: &str) -> bool {
    let dated = version.len() == 10
        && version.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    dated && version >= FIRST_MODERN_REVISION
}

/// The first key that appears twice in `object`, if any.
fn duplicate_key(object: &JsonObject) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(object.len());
    object.iter().map(|(k, _)| k).find(|k| !seen.insert(*k))
}

/// `params` without its `_meta` member (protocol bookkeeping, not facts).
fn without_meta(params: &JsonObject) -> JsonValue {
    let mut out = JsonObject::new();
    for (key, value) in params.iter().filter(|(k, _)| *k != "_meta") {
        out.insert(key.to_owned(), value.clone());
    }
    JsonValue::Object(out)
}

/// Which member of `params` the `Mcp-Name` header mirrors (SEP-2243).
fn name_source(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// When the 2026-07-28 routing headers are present, they must say what the
/// body says: the layer judged the body.
fn check_headers(
    headers: &HeaderMap,
    method: Option<&str>,
    params: Option<&JsonObject>,
) -> Result<(), String> {
    if let Some(value) = single_header(headers, HEADER_METHOD)?
        && Some(value) != method
    {
        return Err(format!(
            "MCP: header Mcp-Method `{value}` does not match the body's method {}",
            method.map_or("(none)".to_owned(), |m| format!("`{m}`"))
        ));
    }
    let Some(raw) = single_header(headers, HEADER_NAME)? else {
        return Ok(());
    };
    let Some(key) = method.and_then(name_source) else {
        return Ok(());
    };
    let expected = params.and_then(|p| p.get(key)).and_then(JsonValue::as_str);
    let decoded = decode_header_value(raw)
        .ok_or_else(|| "MCP: header Mcp-Name is not valid base64".to_owned())?;
    if Some(decoded.as_str()) != expected {
        return Err(format!(
            "MCP: header Mcp-Name `{decoded}` does not match the body's `params.{key}`"
        ));
    }
    Ok(())
}

/// The value of a header that may appear at most once.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(format!("MCP: header {name} appears more than once")),
        (Some(value), None) => value
            .to_str()
            .map(Some)
            .map_err(|_| format!("MCP: header {name} is not visible ASCII")),
    }
}

/// SEP-2243 header values that cannot travel as they are come as
/// `=?base64?<standard base64>?=`.
fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|inner| inner.strip_suffix("?="))
    {
        Some(inner) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(inner)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

// ---------------------------------------------------------------------------
// answering a denial

/// The JSON-RPC error code of a denial.
fn rpc_code(kind: DenialKind) -> i64 {
    match kind {
        DenialKind::MissingToken
        | DenialKind::MalformedToken
        | DenialKind::InvalidChain
        | DenialKind::InvalidProof
        | DenialKind::TokenRejected
        | DenialKind::InsufficientScope => DENIED_ERROR_CODE,
        DenialKind::ParseError => -32700,
        DenialKind::BadRequest
        | DenialKind::InvalidRequest
        | DenialKind::PayloadTooLarge
        | DenialKind::HttpMethodNotAllowed => -32600,
        DenialKind::MethodDenied => -32601,
        DenialKind::InvalidParams => -32602,
        DenialKind::Misconfigured => -32603,
        DenialKind::HeaderMismatch => -32020,
    }
}

/// Builds the answer to a denied MCP request.
pub(crate) fn denial<B: From<Bytes>>(
    kind: DenialKind,
    receipt: &Receipt,
    reply: &McpReply,
) -> Response<B> {
    let reason = receipt.outcome().reason().unwrap_or("denied");
    let receipt_json = receipt.to_json();
    if kind == DenialKind::InsufficientScope && reply.tool_call {
        let body = tool_error(reply, kind, reason, &receipt_json);
        return respond(StatusCode::OK, body, reply.sse_only);
    }

    let mut body = String::with_capacity(128 + reason.len() + receipt_json.len());
    body.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    write_id(&mut body, reply.id.as_ref());
    body.push_str(",\"error\":{\"code\":");
    body.push_str(&rpc_code(kind).to_string());
    body.push_str(",\"message\":");
    write_json_string(&mut body, reason);
    body.push_str(",\"data\":{\"code\":\"");
    body.push_str(kind.code());
    body.push_str("\",\"receipt\":");
    body.push_str(&receipt_json);
    body.push_str("}}}");

    let mut response = respond(kind.status(), body, false);
    if let Some(challenge) = crate::response::challenge(kind, reply.resource_metadata.as_deref()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    if kind == DenialKind::HttpMethodNotAllowed {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    }
    response
}

/// The answer to an allowed message whose receipt could not be recorded:
/// a JSON-RPC error with HTTP 503 (the caller's `Retry-After` is added by
/// the shared renderer).
pub(crate) fn unavailable<B: From<Bytes>>(reason: &str, reply: &McpReply) -> Response<B> {
    let mut body = String::with_capacity(128 + reason.len());
    body.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    write_id(&mut body, reply.id.as_ref());
    body.push_str(",\"error\":{\"code\":");
    body.push_str(&AUDIT_UNAVAILABLE_ERROR_CODE.to_string());
    body.push_str(",\"message\":");
    write_json_string(&mut body, reason);
    body.push_str(",\"data\":{\"code\":\"");
    body.push_str(crate::response::AUDIT_UNAVAILABLE_CODE);
    body.push_str("\"}}}");
    respond(StatusCode::SERVICE_UNAVAILABLE, body, false)
}

/// A `CallToolResult` with `isError: true`: the denial as the model sees it.
fn tool_error(reply: &McpReply, kind: DenialKind, reason: &str, receipt_json: &str) -> String {
    let text = format!(
        "capnagent: the capability does not allow this call ({reason}); nothing was executed"
    );
    let mut body = String::with_capacity(192 + text.len() + receipt_json.len());
    body.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    write_id(&mut body, reply.id.as_ref());
    body.push_str(",\"result\":{");
    if reply.modern {
        body.push_str("\"resultType\":\"complete\",");
    }
    body.push_str("\"content\":[{\"type\":\"text\",\"text\":");
    write_json_string(&mut body, &text);
    body.push_str("}],\"isError\":true,\"_meta\":{");
    write_json_string(&mut body, CODE_META_KEY);
    body.push(':');
    write_json_string(&mut body, kind.code());
    body.push(',');
    write_json_string(&mut body, RECEIPT_META_KEY);
    body.push(':');
    body.push_str(receipt_json);
    body.push_str("}}}");
    body
}

fn write_id(out: &mut String, id: Option<&JsonValue>) {
    match id {
        Some(JsonValue::String(s)) => write_json_string(out, s),
        Some(JsonValue::Number(n)) => out.push_str(n.as_str()),
        _ => out.push_str("null"),
    }
}

/// A JSON-RPC answer: `application/json`, or one SSE event for a client
/// that accepts nothing else.
fn respond<B: From<Bytes>>(status: StatusCode, json: String, sse: bool) -> Response<B> {
    let (content_type, body) = if sse && status == StatusCode::OK {
        (
            "text/event-stream",
            format!("event: message\ndata: {json}\n\n"),
        )
    } else {
        ("application/json", json)
    };
    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capnagent::JsonLimits;

    fn head(request: http::Request<()>, policy: McpPolicy) -> (McpHead, Parts) {
        let parts = request.into_parts().0;
        (McpHead::new(&Arc::new(policy), &parts), parts)
    }

    fn post() -> http::request::Builder {
        http::Request::post("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
    }

    fn read(request: http::Request<()>, body: &str) -> Result<McpCall, McpReject> {
        let (head, parts) = head(request, McpPolicy::new());
        let bytes = Bytes::from(body.to_owned());
        head.read(&parts, BufferedBody::new(&bytes, JsonLimits::default()))
    }

    #[test]
    fn tools_call_is_judged_on_its_name_and_arguments() {
        let call = read(
            post().body(()).unwrap(),
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"bank_wire","arguments":{"amount_cents":1.50}}}"#,
        )
        .unwrap();
        assert_eq!(call.access, McpAccess::Judged);
        assert_eq!(call.tool, "bank_wire");
        assert_eq!(call.args.canonical_string(), r#"{"amount_cents":1.50}"#);
        assert!(call.reply.tool_call);
        assert!(!call.reply.modern);
    }

    #[test]
    fn policy_defaults_and_overrides() {
        let policy = McpPolicy::new();
        assert_eq!(policy.access("initialize"), McpAccess::Authenticated);
        assert_eq!(policy.access("resources/read"), McpAccess::Judged);
        assert_eq!(policy.access("sampling/createMessage"), McpAccess::Denied);
        for judged in [
            "prompts/get",
            "completion/complete",
            "logging/setLevel",
            "tasks/update",
        ] {
            assert_eq!(policy.access(judged), McpAccess::Judged, "{judged}");
        }
        assert_eq!(policy.responses, McpAccess::Judged);
        assert_eq!(policy.input_responses, McpAccess::Denied);
        assert!(!policy.opens_any_message());
        let policy = policy
            .method("tools/call", McpAccess::Open)
            .method("ping", McpAccess::Open);
        assert_eq!(policy.access("tools/call"), McpAccess::Judged);
        assert!(policy.opens_any_message());
        let policy = policy.method("tools/call", McpAccess::Denied);
        assert_eq!(policy.access("tools/call"), McpAccess::Denied);
    }

    #[test]
    fn refuses_what_it_cannot_classify() {
        let cases: &[(&str, DenialKind)] = &[
            ("{", DenialKind::ParseError),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                DenialKind::InvalidRequest,
            ),
            ("42", DenialKind::InvalidRequest),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                DenialKind::InvalidRequest,
            ),
            (r#"{"id":1,"method":"ping"}"#, DenialKind::InvalidRequest),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                DenialKind::InvalidRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
                DenialKind::InvalidRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[]}"#,
                DenialKind::InvalidRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
                DenialKind::InvalidRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
                DenialKind::InvalidRequest,
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, DenialKind::InvalidRequest),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                DenialKind::InvalidRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#,
                DenialKind::InvalidRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                DenialKind::InvalidParams,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
                DenialKind::InvalidParams,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
                DenialKind::InvalidParams,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}"#,
                DenialKind::InvalidParams,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"mcp:tools/list"}}"#,
                DenialKind::InvalidParams,
            ),
        ];
        for (body, kind) in cases {
            let rejected = read(post().body(()).unwrap(), body).unwrap_err();
            assert_eq!(rejected.kind, *kind, "{body}");
        }
        // The id survives a rejection when it could be read.
        let rejected = read(
            post().body(()).unwrap(),
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"tools/call","params":{}}"#,
        )
        .unwrap_err();
        assert_eq!(rejected.reply.id, Some(JsonValue::String("a\"b".into())));
    }

    #[test]
    fn other_messages_carry_the_method_and_params_without_meta() {
        let call = read(
            post().body(()).unwrap(),
            r#"{"jsonrpc":"2.0","id":"x","method":"resources/read","params":{"uri":"file:///srv/a","_meta":{"progressToken":1}}}"#,
        )
        .unwrap();
        assert_eq!(call.access, McpAccess::Judged);
        assert_eq!(call.tool, "mcp:resources/read");
        assert_eq!(call.args.canonical_string(), r#"{"uri":"file:///srv/a"}"#);
        let call = read(
            post().body(()).unwrap(),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )
        .unwrap();
        assert_eq!(call.access, McpAccess::Authenticated);
        assert_eq!(call.args, JsonValue::Null);
        let call = read(
            post().body(()).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"result":{"action":"accept","content":{"to":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(call.tool, "mcp:response");
        assert_eq!(call.access, McpAccess::Judged);
        assert_eq!(
            call.args.canonical_string(),
            r#"{"action":"accept","content":{"to":"x"}}"#
        );
        let call = read(
            post().body(()).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"method":"x/unknown"}"#,
        )
        .unwrap();
        assert_eq!(call.access, McpAccess::Denied);
    }

    /// Issue 17 item 8d: answers that reach a running tool after the call
    /// was judged (`inputResponses`) are refused by default, and judged as
    /// args when the policy says so.
    #[test]
    fn input_responses_are_refused_or_judged_as_args() {
        let retry = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"deploy","arguments":{"env":"staging"},"inputResponses":{"which":{"action":"accept","content":{"env":"prod"}}},"requestState":"opaque"}}"#;
        let task = r#"{"jsonrpc":"2.0","id":3,"method":"tasks/get","params":{"taskId":"t1","inputResponses":{"q":{"action":"accept"}}}}"#;
        for body in [retry, task] {
            let refused = read(post().body(()).unwrap(), body).unwrap_err();
            assert_eq!(refused.kind, DenialKind::MethodDenied, "{body}");
            assert!(
                refused.reason.contains("inputResponses"),
                "{}",
                refused.reason
            );
        }

        let judged = |body: &str| {
            let (head, parts) = head(
                post().body(()).unwrap(),
                McpPolicy::new().input_responses(McpAccess::Judged),
            );
            let bytes = Bytes::from(body.to_owned());
            head.read(&parts, BufferedBody::new(&bytes, JsonLimits::default()))
        };
        let call = judged(retry).unwrap();
        assert_eq!(
            (call.tool.as_str(), call.access),
            ("deploy", McpAccess::Judged)
        );
        assert_eq!(
            call.args.canonical_string(),
            r#"{"env":"staging","inputResponses":{"which":{"action":"accept","content":{"env":"prod"}}}}"#
        );
        // An authenticated-only method carrying answers is judged.
        let call = judged(task).unwrap();
        assert_eq!(call.access, McpAccess::Judged);
        // An argument of that name would be shadowed: refused.
        let clash = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"deploy","arguments":{"inputResponses":{}},"inputResponses":{}}}"#;
        assert_eq!(judged(clash).unwrap_err().kind, DenialKind::InvalidParams);
        // Without answers, nothing changes.
        let plain = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"deploy","arguments":{"env":"staging"}}}"#;
        assert_eq!(
            read(post().body(()).unwrap(), plain)
                .unwrap()
                .args
                .canonical_string(),
            r#"{"env":"staging"}"#
        );
    }

    #[test]
    fn modern_revision_from_header_or_meta() {
        let meta = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        assert!(read(post().body(()).unwrap(), meta).unwrap().reply.modern);
        let plain = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        let modern = post()
            .header("mcp-protocol-version", "2026-07-28")
            .body(())
            .unwrap();
        assert!(read(modern, plain).unwrap().reply.modern);
        let legacy = post()
            .header("mcp-protocol-version", "2025-11-25")
            .body(())
            .unwrap();
        assert!(!read(legacy, plain).unwrap().reply.modern);
        assert!(!is_modern("zzzz-zz-zz"));
        assert!(is_modern("2027-01-01"));
    }

    #[test]
    fn routing_headers_must_match_the_body() {
        let body =
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bank wire é"}}"#;
        let encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("bank wire é")
        );
        let ok = post()
            .header("mcp-method", "tools/call")
            .header("mcp-name", encoded.as_str())
            .body(())
            .unwrap();
        assert!(read(ok, body).is_ok());
        for (method, name) in [
            ("tools/list", encoded.as_str()),
            ("tools/call", "checkout_purchase"),
            ("tools/call", "=?base64?!!?="),
        ] {
            let bad = post()
                .header("mcp-method", method)
                .header("mcp-name", name)
                .body(())
                .unwrap();
            assert_eq!(
                read(bad, body).unwrap_err().kind,
                DenialKind::HeaderMismatch
            );
        }
        let twice = post()
            .header("mcp-method", "tools/call")
            .header("mcp-method", "tools/call")
            .body(())
            .unwrap();
        assert_eq!(
            read(twice, body).unwrap_err().kind,
            DenialKind::HeaderMismatch
        );
        let response = post().header("mcp-method", "ping").body(()).unwrap();
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        assert_eq!(
            read(response, answer).unwrap_err().kind,
            DenialKind::HeaderMismatch
        );
    }

    #[test]
    fn http_methods() {
        let empty = Bytes::new();
        let body = BufferedBody::new(&empty, JsonLimits::default());
        let (get, parts) = head(
            http::Request::get("/mcp").body(()).unwrap(),
            McpPolicy::new(),
        );
        assert!(!get.reads_body());
        let call = get.read(&parts, body).unwrap();
        assert_eq!(
            (call.tool.as_str(), call.access),
            ("mcp:GET", McpAccess::Authenticated)
        );
        let (put, parts) = head(
            http::Request::put("/mcp").body(()).unwrap(),
            McpPolicy::new(),
        );
        assert_eq!(
            put.read(&parts, body).unwrap_err().kind,
            DenialKind::HttpMethodNotAllowed
        );
        let open = McpPolicy::new().http_get(McpAccess::Open);
        let (get, _) = head(http::Request::get("/mcp").body(()).unwrap(), open);
        assert!(get.may_pass_without_token());
    }

    #[test]
    fn sse_only_clients_get_an_event() {
        let (h, _) = head(
            http::Request::post("/mcp")
                .header("accept", "text/event-stream")
                .body(())
                .unwrap(),
            McpPolicy::new(),
        );
        assert!(h.sse_only);
        let (h, _) = head(
            http::Request::post("/mcp")
                .header("accept", "text/event-stream, */*;q=0.1")
                .body(())
                .unwrap(),
            McpPolicy::new(),
        );
        assert!(!h.sse_only);
    }
}
