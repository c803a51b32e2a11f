//! Entry points for the fuzz targets in the repository's `fuzz/` folder.
//! Not part of the API: hidden from the docs, and free to change with the
//! layer's internals.

use std::sync::Arc;

use bytes::Bytes;
use capnagent::Receipt;
use capnagent::json::{JsonLimits, JsonValue};
use http::Request;

use crate::extract::BufferedBody;
use crate::mcp::{self, McpAccess, McpHead, McpPolicy};
use crate::response::DenialKind;

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
    let head = McpHead::new(policy, &parts);
    let read = head.read(&parts, BufferedBody::new(&bytes, limits));
    let (classified, response) = match read {
        Ok(call) => {
            let response =
                mcp::denial::<Bytes>(DenialKind::InsufficientScope, receipt, &call.reply);
            (Ok((call.access, call.tool, call.args)), response)
        }
        Err(reject) => {
            let response = mcp::denial::<Bytes>(reject.kind, receipt, &reject.reply);
            (
                Err((reject.kind.code(), reject.reason, reject.tool)),
                response,
            )
        }
    };
    let status = response.status().as_u16();
    McpOutcome {
        classified,
        status,
        body: response.into_body(),
    }
}
