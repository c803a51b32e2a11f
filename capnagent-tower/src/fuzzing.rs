//! Entry points for the fuzz targets in the repository's `fuzz/` folder.
//! Not part of the API: hidden from the docs, and free to change with the
//! layer's internals.

use std::sync::Arc;

use bytes::Bytes;
use capnagent::Receipt;
use capnagent::{JsonLimits, JsonValue};
use http::Request;

use crate::Denial;
use crate::http::BufferedBody;
use crate::mcp::{Mcp, McpAccess, McpHead, McpPolicy};
use crate::protocol::Protocol;

/// What the MCP layer made of one request: its classification, and the
/// denial it would answer with (for a refused message, that refusal; for a
/// classified one, a caveat denial), rendered with `receipt`.
#[derive(Debug)]
pub struct McpOutcome {
    /// `Ok((access, tool, args))` for a classified message;
    /// `Err((denial code, reason, tool))` for one refused before any
    /// capability is consulted.
    pub classified: Result<(McpAccess, String, JsonValue), (&'static str, String, String)>,
    /// The HTTP status of the denial answer.
    pub status: u16,
    /// The denial answer's body.
    pub body: Bytes,
}

/// Classifies an MCP request exactly as the layer does (head, then the
/// buffered body under `limits`) and renders the denial it would send.
pub fn mcp_classify(
    policy: &Arc<McpPolicy>,
    request: Request<Bytes>,
    limits: JsonLimits,
    receipt: &Receipt,
) -> McpOutcome {
    let (parts, bytes) = request.into_parts();
    let mcp = Mcp::from_policy(Arc::clone(policy));
    let head = McpHead::new(policy, &parts);
    let read = head.read(&parts, BufferedBody::new(&bytes, limits));
    let (classified, response) = match read {
        Ok(call) => {
            let caveat = Some(capnagent::Gate::Caveat {
                index: 0,
                failure: capnagent::CaveatFailure::False,
            });
            let response = mcp.deny(Denial::Verifier(caveat), receipt, &call.reply);
            (Ok((call.access, call.tool, call.args)), response)
        }
        Err(reject) => {
            let code = reject.kind.code();
            let response = mcp.deny(Denial::Unclassified(code), receipt, &reject.reply);
            (Err((code, reject.reason, reject.tool)), response)
        }
    };
    let status = response.status().as_u16();
    McpOutcome {
        classified,
        status,
        body: response.into_body(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capnagent::{Auditor, Context, Outcome};

    fn receipt() -> Receipt {
        let ctx = Context::builder().now_millis(1).build();
        Auditor::new(&[9; 32]).unwrap().sign(
            "agent",
            Vec::new(),
            &ctx,
            Outcome::Denied {
                reason: "caveat failed: x".to_owned(),
            },
        )
    }

    fn classify(body: &str) -> McpOutcome {
        let request = Request::post("/mcp")
            .header("accept", "application/json, text/event-stream")
            .body(Bytes::from(body.to_owned()))
            .unwrap();
        mcp_classify(
            &Arc::new(McpPolicy::new()),
            request,
            JsonLimits::default(),
            &receipt(),
        )
    }

    #[test]
    fn classifies_like_the_layer_and_renders_the_denial() {
        let call = classify(
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"tools/call","params":{"name":"bank_wire"}}"#,
        );
        let (access, tool, args) = call.classified.unwrap();
        assert_eq!((access, tool.as_str()), (McpAccess::Judged, "bank_wire"));
        assert_eq!(args.canonical_string(), "{}");
        assert_eq!(call.status, 200);
        let answer: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(answer["id"], "a\"b");
        assert_eq!(answer["result"]["isError"], true);

        let batch = classify(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        let (code, _, _) = batch.classified.unwrap_err();
        assert_eq!(code, "invalid_request");
        assert_eq!(batch.status, 400);
    }
}
