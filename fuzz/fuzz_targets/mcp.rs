//! MCP message classification (`capnagent_tower::mcp`, through the
//! layer's own `McpHead::read`): never panics; a classified `tools/call`
//! names a tool outside the reserved `mcp:` prefix and carries object args;
//! every other classified message is `mcp:<method>` with the policy's
//! access for it; and the JSON-RPC denial the layer would answer with is
//! valid JSON that echoes the request's `id`.
//!
//! Input: a flag byte (HTTP method, `Accept`, protocol version header,
//! policy), then optional header lines `name: value` ended by an empty
//! line, then the body.
#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use capnagent::{JsonLimits, JsonValue};
use capnagent::{Auditor, Context, Outcome, Receipt};
use capnagent_fuzz::AUDIT_KEY;
use capnagent_tower::fuzzing::mcp_classify;
use capnagent_tower::{McpAccess, McpPolicy};
use libfuzzer_sys::fuzz_target;

static POLICIES: LazyLock<[Arc<McpPolicy>; 2]> = LazyLock::new(|| {
    [
        Arc::new(McpPolicy::new()),
        Arc::new(
            McpPolicy::new()
                .method("ping", McpAccess::Open)
                .method("prompts/get", McpAccess::Judged)
                .unknown_methods(McpAccess::Authenticated)
                .client_responses(McpAccess::Denied)
                .resource_metadata(http::Uri::from_static(
                    "https://example.invalid/.well-known/oauth-protected-resource",
                )),
        ),
    ]
});

static RECEIPT: LazyLock<Receipt> = LazyLock::new(|| {
    let auditor = Auditor::new(&AUDIT_KEY).expect("audit key");
    let ctx = Context::builder().now_millis(1_700_000_000_000).build();
    auditor.sign(
        "agent-\"quoted\"\n",
        Vec::new(),
        &ctx,
        Outcome::Denied {
            reason: "caveat failed: tool == \"x\\\"y\"".to_owned(),
        },
    )
});

/// A header line: name and value.
type Header<'a> = (&'a [u8], &'a [u8]);

/// The header lines and the body of an input.
fn split(data: &[u8]) -> (Vec<Header<'_>>, &[u8]) {
    let Some(end) = data.windows(2).position(|w| w == b"\n\n") else {
        return (Vec::new(), data);
    };
    let headers = data[..end]
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let value = &line[colon + 1..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            Some((&line[..colon], value))
        })
        .collect();
    (headers, &data[end + 2..])
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let method = match flags & 0b111 {
        0..=4 => http::Method::POST,
        5 => http::Method::GET,
        6 => http::Method::DELETE,
        _ => http::Method::PUT,
    };
    let (headers, body) = split(rest);
    let mut request = http::Request::builder().method(method.clone()).uri("/mcp");
    match (flags >> 3) & 0b11 {
        0 => request = request.header("accept", "application/json, text/event-stream"),
        1 => request = request.header("accept", "text/event-stream"),
        _ => {}
    }
    if flags & 0b10_0000 != 0 {
        request = request.header("mcp-protocol-version", "2026-07-28");
    }
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Bytes::copy_from_slice(body)) else {
        return;
    };
    let policy = &POLICIES[usize::from(flags >> 7)];
    let outcome = mcp_classify(policy, request, JsonLimits::default(), &RECEIPT);

    let message = JsonValue::parse_bytes(body, &JsonLimits::default()).ok();
    let message = message.as_ref().and_then(JsonValue::as_object);
    if let Ok((access, tool, args)) = &outcome.classified {
        if method == http::Method::POST {
            let message = message.expect("a classified POST carries a JSON object");
            match message.get("method").and_then(JsonValue::as_str) {
                Some("tools/call") => {
                    assert!(!tool.starts_with("mcp:"), "reserved tool name {tool:?}");
                    assert!(matches!(args, JsonValue::Object(_)));
                    assert_eq!(*access, policy.access("tools/call"));
                }
                Some(name) => {
                    assert_eq!(tool, &format!("mcp:{name}"));
                    assert_eq!(*access, policy.access(name));
                }
                None => assert_eq!(tool, "mcp:response"),
            }
        } else {
            assert_eq!(tool, &format!("mcp:{method}"));
        }
    }

    // The denial answer: one JSON-RPC message, bare or as one SSE event.
    let text = std::str::from_utf8(&outcome.body).expect("the answer is UTF-8");
    let text = match text.strip_prefix("event: message\ndata: ") {
        Some(event) => event.strip_suffix("\n\n").expect("one SSE event"),
        None => text,
    };
    let answer = JsonValue::parse(text, &JsonLimits::default())
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {text}"));
    let answer = answer.as_object().expect("the answer is an object");
    assert_eq!(
        answer.get("jsonrpc").and_then(JsonValue::as_str),
        Some("2.0")
    );
    let id = answer.get("id").expect("the answer has an id");
    if *id != JsonValue::Null {
        let sent = message.and_then(|m| m.get("id"));
        assert_eq!(Some(id), sent, "the answer's id is not the request's");
    }
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        serde_json::from_str::<serde_json::Value>(text).expect("serde_json reads the answer");
    }
    assert!((200..600).contains(&outcome.status));
});
