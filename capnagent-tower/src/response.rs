//! Denial responses: the one place where a cause of denial becomes a status
//! code, a `WWW-Authenticate` challenge and an RFC 9457
//! `application/problem+json` body.
//!
//! | cause | status | `WWW-Authenticate` |
//! | --- | --- | --- |
//! | token missing, malformed, or forged (chain does not verify) | 401 | `Bearer error="invalid_token"` |
//! | holder-bound token without a (well-formed) proof header | 401 | `Bearer error="invalid_token"` |
//! | a caveat (or another gate) denied the call | 403 | `Bearer error="insufficient_scope"` |
//! | args required but the body is not JSON, or another bad fact | 400 | — |
//! | body over the layer's limit | 413 | — |
//! | server wiring (no authenticated caller, no tool configured) | 500 | — |
//!
//! The body carries `type`, `title`, `status`, `detail` (the denial
//! reason), a stable `code`, and the signed `receipt`. The token is never
//! echoed.

use bytes::Bytes;
use capnagent::Receipt;
use capnagent::json::write_escaped_str;
use http::{HeaderValue, Response, StatusCode, header};

/// Why a request was denied, at the granularity of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenialKind {
    MissingToken,
    MalformedToken,
    InvalidChain,
    InvalidProof,
    InsufficientScope,
    BadRequest,
    PayloadTooLarge,
    Misconfigured,
}

impl DenialKind {
    fn status(self) -> StatusCode {
        match self {
            DenialKind::MissingToken
            | DenialKind::MalformedToken
            | DenialKind::InvalidChain
            | DenialKind::InvalidProof => StatusCode::UNAUTHORIZED,
            DenialKind::InsufficientScope => StatusCode::FORBIDDEN,
            DenialKind::BadRequest => StatusCode::BAD_REQUEST,
            DenialKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            DenialKind::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code in the problem body.
    fn code(self) -> &'static str {
        match self {
            DenialKind::MissingToken => "missing_token",
            DenialKind::MalformedToken => "malformed_token",
            DenialKind::InvalidChain => "invalid_token",
            DenialKind::InvalidProof => "invalid_proof",
            DenialKind::InsufficientScope => "insufficient_scope",
            DenialKind::BadRequest => "bad_request",
            DenialKind::PayloadTooLarge => "payload_too_large",
            DenialKind::Misconfigured => "misconfigured",
        }
    }

    fn challenge(self) -> Option<&'static str> {
        match self {
            DenialKind::MissingToken
            | DenialKind::MalformedToken
            | DenialKind::InvalidChain
            | DenialKind::InvalidProof => Some("Bearer error=\"invalid_token\""),
            DenialKind::InsufficientScope => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        }
    }
}

/// Builds the denial response for `receipt` (whose outcome is the denial).
pub(crate) fn denial<B: From<Bytes>>(kind: DenialKind, receipt: &Receipt) -> Response<B> {
    let status = kind.status();
    let detail = receipt.outcome().reason().unwrap_or("denied");
    let receipt_json = receipt.to_json();

    let mut body = String::with_capacity(160 + detail.len() + receipt_json.len());
    body.push_str("{\"type\":\"about:blank\",\"title\":");
    write_escaped_str(&mut body, status.canonical_reason().unwrap_or("Error"));
    body.push_str(",\"status\":");
    body.push_str(status.as_str());
    body.push_str(",\"code\":\"");
    body.push_str(kind.code());
    body.push_str("\",\"detail\":");
    write_escaped_str(&mut body, detail);
    body.push_str(",\"receipt\":");
    body.push_str(&receipt_json);
    body.push('}');

    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(challenge) = kind.challenge() {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capnagent::{Auditor, Context, Outcome};

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
        let response: Response<String> = denial::<Bytes>(DenialKind::MissingToken, &receipt)
            .map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["status"], 401);
        assert_eq!(body["title"], "Unauthorized");
        assert_eq!(body["detail"], "missing \"capability\" token");
        assert_eq!(body["receipt"]["outcome"]["kind"], "denied");
        auditor.verify(&body["receipt"].to_string()).unwrap();
    }
}
