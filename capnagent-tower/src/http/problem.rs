//! HTTP denials: the one place where a [`Denial`] becomes a status code, a
//! `WWW-Authenticate` challenge and an RFC 9457 `application/problem+json`
//! body.
//!
//! | cause | status | `WWW-Authenticate` |
//! | --- | --- | --- |
//! | no token | 401 | `Bearer` (RFC 6750 §3.1: no error code) |
//! | token malformed, or forged (chain does not verify) | 401 | `Bearer error="invalid_token"` |
//! | holder-bound token without a (well-formed) proof | 401 | `Bearer error="invalid_token"` |
//! | the verifier denied the call at another gate (a caveat, revocation, a proof that does not verify) | 403 | `Bearer error="insufficient_scope"` |
//! | args required but the body is not JSON, or another bad fact | 400 | — |
//! | body over the layer's limit | 413 | — |
//! | server wiring (no authenticated caller) | 500 | — |
//! | an allowed call whose receipt the sink could not record ([`ReceiptSink`](crate::ReceiptSink)) | 503, `Retry-After: 1` | — |
//!
//! The body carries `type`, `title`, `status`, `detail` (the denial
//! reason), a stable `code`, and the signed `receipt`. The token is never
//! echoed. A 503 carries code `audit_unavailable`, the sink's reason as
//! `detail`, and no receipt: its receipt says "allowed" and was not
//! recorded, so it is not handed out as if the call had run.
//!
//! The status, code and challenge of each [`DenialKind`] are shared with
//! the MCP renderer (`mcp::render`), which answers with JSON-RPC bodies.

use bytes::Bytes;
use capnagent::write_json_string;
use capnagent::{Gate, Receipt};
use http::{HeaderValue, Response, StatusCode, header};

use crate::protocol::Denial;
use crate::sink::SinkError;

/// Why a request was denied, at the granularity of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// The MCP-only kinds are unused without the `mcp` feature.
#[cfg_attr(not(feature = "mcp"), allow(dead_code))]
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
    /// How HTTP answers `denial`. The verifier's denials are told apart by
    /// their gate: the holder-key gate is an authentication failure, every
    /// other gate a refusal of scope.
    pub(crate) fn of(denial: Denial) -> DenialKind {
        match denial {
            Denial::MissingToken => DenialKind::MissingToken,
            Denial::MalformedToken => DenialKind::MalformedToken,
            Denial::InvalidChain => DenialKind::InvalidChain,
            Denial::MalformedProof
            | Denial::ProofUnsupported
            | Denial::Verifier(Some(Gate::HolderKey)) => DenialKind::InvalidProof,
            Denial::Verifier(_) => DenialKind::InsufficientScope,
            Denial::BadRequest | Denial::Unclassified(_) => DenialKind::BadRequest,
            Denial::InvalidParams => DenialKind::InvalidParams,
            Denial::TooLarge => DenialKind::PayloadTooLarge,
            Denial::Misconfigured => DenialKind::Misconfigured,
        }
    }

    /// The kind whose [`code`](Self::code) is `code` (an adapter's
    /// [`Denial::Unclassified`]); a bad request for any other.
    #[cfg(feature = "mcp")]
    pub(crate) fn of_code(code: &str) -> DenialKind {
        [
            DenialKind::ParseError,
            DenialKind::InvalidRequest,
            DenialKind::InvalidParams,
            DenialKind::HeaderMismatch,
            DenialKind::MethodDenied,
            DenialKind::HttpMethodNotAllowed,
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
        .unwrap_or(DenialKind::BadRequest)
    }

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

/// Stable `code` of the refusal of an allowed call whose receipt could not
/// be recorded.
pub(crate) const AUDIT_UNAVAILABLE_CODE: &str = "audit_unavailable";

/// The refusal of an allowed call whose receipt the sink could not record
/// (fail closed): 503, in the shape `reply` asks for, with the sink's
/// reason and without the unrecorded receipt.
pub(crate) fn unavailable(error: &SinkError) -> Response<Bytes> {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let mut body = String::with_capacity(128 + error.reason().len());
    body.push_str(
        "{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\"code\":\"",
    );
    body.push_str(AUDIT_UNAVAILABLE_CODE);
    body.push_str("\",\"detail\":");
    write_json_string(&mut body, error.reason());
    body.push('}');
    let mut response = problem_response(status, body);
    retry_after(&mut response);
    response
}

/// Adds `Retry-After: 1` to the refusal of an unrecorded call.
pub(crate) fn retry_after<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
}

/// An RFC 9457 `application/problem+json` denial.
pub(crate) fn problem(kind: DenialKind, receipt: &Receipt) -> Response<Bytes> {
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
fn problem_response(status: StatusCode, body: String) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body));
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
        let response: Response<String> =
            unavailable(&error).map(|b| String::from_utf8(b.to_vec()).unwrap());
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
        let response: Response<String> = problem(DenialKind::MissingToken, &receipt)
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
