//! The MCP policy: what each kind of message needs ([`McpAccess`]), per
//! method, for client responses, for `inputResponses`, for `GET` and
//! `DELETE` ([`McpPolicy`]), and the constants of the MCP answers.

use std::collections::HashMap;
use std::sync::Arc;

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

/// Which MCP messages need what; see the [module docs](crate::mcp) for the
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
    pub(super) responses: McpAccess,
    pub(super) input_responses: McpAccess,
    pub(super) get: McpAccess,
    pub(super) delete: McpAccess,
    pub(super) resource_metadata: Option<Arc<str>>,
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
    /// The default policy (see the [module docs](crate::mcp)).
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
    pub(super) fn opens_any_message(&self) -> bool {
        self.unknown == McpAccess::Open
            || self.responses == McpAccess::Open
            || self.methods.values().any(|a| *a == McpAccess::Open)
    }
}
