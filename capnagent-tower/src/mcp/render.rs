//! MCP denials as JSON-RPC answers: the one place where a denial of an MCP
//! request becomes an HTTP status, a `WWW-Authenticate` challenge (shared
//! with the HTTP renderer) and a JSON-RPC error or, for a caveat denial of
//! a `tools/call`, a tool result with `isError: true`.

use bytes::Bytes;
use capnagent::Receipt;
use capnagent::{JsonValue, write_json_string};
use http::{HeaderValue, Response, StatusCode, header};

use super::classify::McpReply;
use super::policy::{
    AUDIT_UNAVAILABLE_ERROR_CODE, CODE_META_KEY, DENIED_ERROR_CODE, RECEIPT_META_KEY,
};
use crate::http::problem::{self, DenialKind};
use crate::protocol::Denial;

/// How MCP answers `denial`. The verifier's denials are told apart by
/// their gate: a caveat is a refusal of scope (a tool result the model
/// reads, for a `tools/call`), the holder-key gate a missing proof, and any
/// other gate (revocation, no caveats, a failed proof) a token that is not
/// usable at all: RFC 6750 `invalid_token`, which MCP clients act on.
pub(crate) fn kind_of(denial: Denial) -> DenialKind {
    match denial {
        Denial::Verifier(Some(gate)) if gate.is_caveat() => DenialKind::InsufficientScope,
        Denial::Verifier(Some(capnagent::Gate::HolderKey)) => DenialKind::InvalidProof,
        Denial::Verifier(_) => DenialKind::TokenRejected,
        Denial::Unclassified(code) => DenialKind::of_code(code),
        other => DenialKind::of(other),
    }
}

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
pub(crate) fn denial(kind: DenialKind, receipt: &Receipt, reply: &McpReply) -> Response<Bytes> {
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
    if let Some(challenge) = problem::challenge(kind, reply.resource_metadata.as_deref()) {
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
pub(crate) fn unavailable(reason: &str, reply: &McpReply) -> Response<Bytes> {
    let mut body = String::with_capacity(128 + reason.len());
    body.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    write_id(&mut body, reply.id.as_ref());
    body.push_str(",\"error\":{\"code\":");
    body.push_str(&AUDIT_UNAVAILABLE_ERROR_CODE.to_string());
    body.push_str(",\"message\":");
    write_json_string(&mut body, reason);
    body.push_str(",\"data\":{\"code\":\"");
    body.push_str(problem::AUDIT_UNAVAILABLE_CODE);
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
fn respond(status: StatusCode, json: String, sse: bool) -> Response<Bytes> {
    let (content_type, body) = if sse && status == StatusCode::OK {
        (
            "text/event-stream",
            format!("event: message\ndata: {json}\n\n"),
        )
    } else {
        ("application/json", json)
    };
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
