//! Denial responses: the one place where a cause of denial becomes a status
//! code, a `WWW-Authenticate` challenge and an RFC 9457
//! `application/problem+json` body.
//!
//! | cause | status | `WWW-Authenticate` |
//! | --- | --- | --- |
//! | no token | 401 | `Bearer` (RFC 6750 §3.1: no error code) |
//! | token malformed, or forged (chain does not verify) | 401 | `Bearer error="invalid_token"` |
//! | holder-bound token without a (well-formed) proof header | 401 | `Bearer error="invalid_token"` |
//! | a caveat (or another gate) denied the call | 403 | `Bearer error="insufficient_scope"` |
//! | args required but the body is not JSON, or another bad fact | 400 | — |
//! | body over the layer's limit | 413 | — |
//! | server wiring (no authenticated caller, no tool configured) | 500 | — |
//! | an allowed call whose receipt the sink could not record ([`ReceiptSink`](crate::ReceiptSink)) | 503, `Retry-After: 1` | — |
//!
//! The body carries `type`, `title`, `status`, `detail` (the denial
//! reason), a stable `code`, and the signed `receipt`. The token is never
//! echoed. A 503 carries code `audit_unavailable`, the sink's reason as
//! `detail`, and no receipt: its receipt says "allowed" and was not
//! recorded, so it is not handed out as if the call had run.
//!
//! On an MCP endpoint ([`CapabilityLayer::mcp`](crate::CapabilityLayer::mcp))
//! the same causes keep their status and challenge (rendered here, by
//! [`challenge`], with the MCP `resource_metadata` pointer when one is
//! configured), but the body is a JSON-RPC answer; see [`crate::mcp`] for
//! its table.

use bytes::Bytes;
use capnagent::Receipt;
use capnagent::write_json_string;
use http::{HeaderValue, Response, StatusCode, header};

use crate::sink::SinkError;

/// Why a request was denied, at the granularity of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenialKind {
    MissingToken,
    MalformedToken,
    InvalidChain,
    InvalidProof,
    /// The verifier refused a genuine token before looking at its caveats
    /// (revoked, stale revocation list, no caveats). Only on an MCP
    /// endpoint; elsewhere these are `InsufficientScope`.
    TokenRejected,
    InsufficientScope,
    BadRequest,
    PayloadTooLarge,
    Misconfigured,
    /// MCP: the body is not JSON.
    ParseError,
    /// MCP: not one JSON-RPC message the layer can classify (a batch, a
    /// wrong shape).
    InvalidRequest,
    /// MCP: the method's `params` cannot be judged (a `tools/call` without a
    /// tool name, arguments that are not an object).
    InvalidParams,
    /// MCP: an `Mcp-Method` or `Mcp-Name` header disagrees with the body.
    HeaderMismatch,
    /// MCP: the policy refuses this method.
    MethodDenied,
    /// MCP: an HTTP method the endpoint does not serve.
    HttpMethodNotAllowed,
}

impl DenialKind {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            DenialKind::MissingToken
            | DenialKind::MalformedToken
            | DenialKind::InvalidChain
            | DenialKind::InvalidProof
            | DenialKind::TokenRejected => StatusCode::UNAUTHORIZED,
            DenialKind::InsufficientScope | DenialKind::MethodDenied => StatusCode::FORBIDDEN,
            DenialKind::BadRequest
            | DenialKind::ParseError
            | DenialKind::InvalidRequest
            | DenialKind::InvalidParams
            | DenialKind::HeaderMismatch => StatusCode::BAD_REQUEST,
            DenialKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            DenialKind::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
            DenialKind::HttpMethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Stable machine-readable code in the problem body.
    pub(crate) fn code(self) -> &'static str {
        match self {
            DenialKind::MissingToken => "missing_token",
            DenialKind::MalformedToken => "malformed_token",
            DenialKind::InvalidChain => "invalid_token",
            DenialKind::InvalidProof => "invalid_proof",
            DenialKind::TokenRejected => "token_rejected",
            DenialKind::InsufficientScope => "insufficient_scope",
            DenialKind::BadRequest => "bad_request",
            DenialKind::PayloadTooLarge => "payload_too_large",
            DenialKind::Misconfigured => "misconfigured",
            DenialKind::ParseError => "parse_error",
            DenialKind::InvalidRequest => "invalid_request",
            DenialKind::InvalidParams => "invalid_params",
            DenialKind::HeaderMismatch => "header_mismatch",
            DenialKind::MethodDenied => "method_denied",
            DenialKind::HttpMethodNotAllowed => "method_not_allowed",
        }
    }

    /// The RFC 6750 error code of the `WWW-Authenticate: Bearer` challenge.
    pub(crate) fn bearer_error(self) -> Option<&'static str> {
        match self {
            DenialKind::MissingToken
            | DenialKind::MalformedToken
            | DenialKind::InvalidChain
            | DenialKind::InvalidProof
            | DenialKind::TokenRejected => Some("invalid_token"),
            DenialKind::InsufficientScope => Some("insufficient_scope"),
            _ => None,
        }
    }
}

/// The `WWW-Authenticate` challenge of a denial, for HTTP and MCP alike:
/// `Bearer` alone when no token was sent (RFC 6750 section 3.1: a request
/// without authentication information gets no error code), `Bearer
/// error="invalid_token"` or `Bearer error="insufficient_scope"` otherwise,
/// and `resource_metadata="<uri>"` (RFC 9728, for MCP clients) when given.
/// `None` for denials that are not about the token.
pub(crate) fn challenge(kind: DenialKind, resource_metadata: Option<&str>) -> Option<HeaderValue> {
    let error = kind.bearer_error()?;
    let mut value = String::from("Bearer");
    let mut separator = " ";
    if kind != DenialKind::MissingToken {
        value.push_str(" error=\"");
        value.push_str(error);
        value.push('"');
        separator = ", ";
    }
    if let Some(uri) = resource_metadata {
        value.push_str(separator);
        value.push_str("resource_metadata=\"");
        value.push_str(uri);
        value.push('"');
    }
    HeaderValue::from_str(&value).ok()
}

/// How a denial is answered: the shape of the endpoint the layer guards.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// An HTTP tool API: RFC 9457 problem details.
    Problem,
    /// An MCP endpoint: a JSON-RPC answer to the request's message.
    Mcp(Box<crate::mcp::McpReply>),
}

/// Builds the denial response for `receipt` (whose outcome is the denial),
/// in the shape `reply` asks for.
pub(crate) fn denial<B: From<Bytes>>(
    kind: DenialKind,
    receipt: &Receipt,
    reply: &Reply,
) -> Response<B> {
    match reply {
        Reply::Problem => problem(kind, receipt),
        Reply::Mcp(reply) => crate::mcp::denial(kind, receipt, reply),
    }
}

/// Stable `code` of the refusal of an allowed call whose receipt could not
/// be recorded.
pub(crate) const AUDIT_UNAVAILABLE_CODE: &str = "audit_unavailable";

/// The refusal of an allowed call whose receipt the sink could not record
/// (fail closed): 503, in the shape `reply` asks for, with the sink's
/// reason and without the unrecorded receipt.
pub(crate) fn unavailable<B: From<Bytes>>(error: &SinkError, reply: &Reply) -> Response<B> {
    let mut response = match reply {
        Reply::Problem => {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let mut body = String::with_capacity(128 + error.reason().len());
            body.push_str("{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\"code\":\"");
            body.push_str(AUDIT_UNAVAILABLE_CODE);
            body.push_str("\",\"detail\":");
            write_json_string(&mut body, error.reason());
            body.push('}');
            problem_response(status, body)
        }
        Reply::Mcp(reply) => crate::mcp::unavailable(error.reason(), reply),
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An RFC 9457 `application/problem+json` denial.
fn problem<B: From<Bytes>>(kind: DenialKind, receipt: &Receipt) -> Response<B> {
    let status = kind.status();
    let detail = receipt.outcome().reason().unwrap_or("denied");
    let receipt_json = receipt.to_json();

    let mut body = String::with_capacity(160 + detail.len() + receipt_json.len());
    body.push_str("{\"type\":\"about:blank\",\"title\":");
    write_json_string(&mut body, status.canonical_reason().unwrap_or("Error"));
    body.push_str(",\"status\":");
    body.push_str(status.as_str());
    body.push_str(",\"code\":\"");
    body.push_str(kind.code());
    body.push_str("\",\"detail\":");
    write_json_string(&mut body, detail);
    body.push_str(",\"receipt\":");
    body.push_str(&receipt_json);
    body.push('}');

    let mut response = problem_response(status, body);
    if let Some(challenge) = challenge(kind, None) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// A `status` response with an `application/problem+json` `body`, never
/// cached.
fn problem_response<B: From<Bytes>>(status: StatusCode, body: String) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capnagent::{Auditor, Context, Outcome};

    #[test]
    fn an_unrecorded_call_is_a_503_without_a_receipt() {
        let error = SinkError::new("audit log unavailable: \"disk\" full");
        let response: Response<String> = unavailable::<Bytes>(&error, &Reply::Problem)
            .map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["status"], 503);
        assert_eq!(body["code"], "audit_unavailable");
        assert_eq!(body["detail"], "audit log unavailable: \"disk\" full");
        assert!(body.get("receipt").is_none());
    }

    #[test]
    fn problem_body_is_json_with_the_receipt() {
        let auditor = Auditor::new(&[9; 32]).unwrap();
        let ctx = Context::builder().now_millis(1).tool("t").build();
        let receipt = auditor.sign(
            "",
            Vec::new(),
            &ctx,
            Outcome::Denied {
                reason: "missing \"capability\" token".into(),
            },
        );
        let response: Response<String> =
            denial::<Bytes>(DenialKind::MissingToken, &receipt, &Reply::Problem)
                .map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["status"], 401);
        assert_eq!(body["title"], "Unauthorized");
        assert_eq!(body["detail"], "missing \"capability\" token");
        assert_eq!(body["receipt"]["outcome"]["kind"], "denied");
        auditor.verify(&body["receipt"].to_string()).unwrap();
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let text = |kind, uri| challenge(kind, uri).map(|v| v.to_str().unwrap().to_owned());
        let uri = Some("https://x.test/.well-known/oauth-protected-resource");
        assert_eq!(text(DenialKind::MissingToken, None).unwrap(), "Bearer");
        assert_eq!(
            text(DenialKind::MissingToken, uri).unwrap(),
            "Bearer resource_metadata=\"https://x.test/.well-known/oauth-protected-resource\""
        );
        assert_eq!(
            text(DenialKind::InvalidChain, uri).unwrap(),
            "Bearer error=\"invalid_token\", resource_metadata=\"https://x.test/.well-known/oauth-protected-resource\""
        );
        assert_eq!(
            text(DenialKind::InsufficientScope, None).unwrap(),
            "Bearer error=\"insufficient_scope\""
        );
        assert_eq!(text(DenialKind::BadRequest, uri), None);
    }
}
