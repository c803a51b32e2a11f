//! Classifying an MCP request: from its HTTP method and, for a POST, the
//! one JSON-RPC message in its buffered body, what it is ([`McpCall`]: the
//! tool and args facts, what the policy says it needs, how to answer it)
//! or why it is refused before any capability is consulted
//! ([`McpReject`]).

use std::sync::Arc;

use base64::Engine;
use capnagent::{JsonObject, JsonValue};
use http::request::Parts;
use http::{HeaderMap, Method, header};

use super::policy::{INPUT_RESPONSES, McpAccess, McpPolicy, TOOL_PREFIX};
use crate::http::BufferedBody;
use crate::http::problem::DenialKind;

/// The first protocol revision without the `initialize` handshake.
const FIRST_MODERN_REVISION: &str = "2026-07-28";

/// The `_meta` key of the per-request protocol version (2026-07-28).
const PROTOCOL_VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";

const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
const HEADER_METHOD: &str = "mcp-method";
const HEADER_NAME: &str = "mcp-name";

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
pub struct McpHead {
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
pub struct McpReply {
    pub(super) id: Option<JsonValue>,
    pub(super) tool_call: bool,
    pub(super) modern: bool,
    pub(super) sse_only: bool,
    pub(super) resource_metadata: Option<Arc<str>>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;
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
