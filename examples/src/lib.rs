//! The tool APIs the example binaries serve, kept here so that tests and
//! benches use exactly the same routers.
//!
//! - [`tool_api`]: three tools behind one router-wide
//!   [`CapabilityLayer`], with an API-key authentication layer in front
//!   that says who the caller is (`quickstart`).
//! - [`load`]: the same JSON-parsing handler with and without the layer,
//!   and behind a hand-written JWT check (`load-server`, the criterion
//!   bench and `benches/load.sh`).
//! - [`jwt`]: that JWT check (the `jsonwebtoken` crate), the baseline of
//!   the load test and the gRPC bench.
//! - [`mcp`]: an MCP server (rmcp, Streamable HTTP) behind the layer in MCP
//!   mode (`mcp-tool-server`, the top-level `tests/mcp.rs`).
//! - [`grpc`]: a gRPC tool service (`proto/tools.proto`) behind
//!   `capnagent_tonic::CapabilityLayer` (`grpc-tool-server`,
//!   `grpc-tool-client`, the loopback tests and the gRPC bench).

use axum::extract::{Path, Query, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use capnagent_tower::{
    AuthenticatedCaller, CapabilityLayer, FixedTool, PathParam, QueryArgs, RouteOverride, Verified,
};
use serde::Deserialize;
use serde_json::{Value, json};

pub mod jwt;
pub mod mcp;

/// `docs/mcp.md` ("Guarding an MCP server"), its Rust examples compiled as
/// doc tests of this crate (which has rmcp and capnagent-tower).
#[doc = include_str!("../../docs/mcp.md")]
#[cfg(doctest)]
pub struct McpDocDoctests;

/// `docs/key-rotation.md` ("Rotating keys"), its Rust example compiled
/// and run as a doc test of this crate.
#[doc = include_str!("../../docs/key-rotation.md")]
#[cfg(doctest)]
pub struct KeyRotationDocDoctests;

/// `docs/audit-log.md` (the chained audit log), its Rust examples compiled
/// as doc tests of this crate.
#[doc = include_str!("../../docs/audit-log.md")]
#[cfg(doctest)]
pub struct AuditLogDocDoctests;

pub mod grpc;
pub mod serve;

/// `examples/README.md` (the gRPC tool service), its Rust examples compiled
/// as doc tests of this crate.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ExamplesReadmeDoctests;

/// Resolves when the process is asked to stop: Ctrl-C (`SIGINT`) or, on
/// Unix, `SIGTERM` (what `kill`, systemd and container runtimes send). The
/// example servers then shut down gracefully: they flush the audit log and
/// remove the temporary directory they created for it. (The gateway's.)
pub use capnagent_gateway::shutdown_signal;

/// The demo's only API key, and the caller it authenticates. A real server
/// would look keys up in a store, or take the caller from mTLS.
pub const PLANNER_API_KEY: &str = "demo-key-planner";

/// The caller [`PLANNER_API_KEY`] authenticates as.
pub const PLANNER: &str = "agent:planner";

/// The tool API: `POST /tools/{name}` for `checkout.purchase` and
/// `bank.wire` (args from the JSON body), `GET /files?path=...` for
/// `files.read` (args from the query string).
///
/// `capabilities` is applied router-wide, with the tool taken from the
/// `{name}` path parameter and a per-route override for `/files`. The
/// API-key layer runs first and inserts [`AuthenticatedCaller`].
pub fn tool_api(capabilities: CapabilityLayer) -> Router {
    let capabilities = capabilities.tool(PathParam::new("name")).route(
        "/files",
        RouteOverride::new()
            .tool(FixedTool::new("files.read"))
            .args(QueryArgs),
    );
    Router::new()
        .route("/tools/{name}", post(call_tool))
        .route("/files", get(read_file))
        .route_layer(capabilities)
        // Added last, so it runs first: the capability layer needs its caller.
        .layer(middleware::from_fn(authenticate))
}

/// Demo authentication: `x-api-key` names the caller. Requests without a
/// known key never reach the capability layer.
async fn authenticate(mut request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get("x-api-key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(key, PLANNER_API_KEY.as_bytes()) {
        request
            .extensions_mut()
            .insert(AuthenticatedCaller::new(PLANNER));
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "unknown API key\n").into_response()
    }
}

/// Secrets are not compared with `==`: no early exit on the first
/// differing byte.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The receipt as a JSON value, to embed in a response.
fn receipt_value(verified: &Verified) -> Value {
    serde_json::from_str(&verified.receipt().to_json()).unwrap_or(Value::Null)
}

async fn call_tool(
    Path(name): Path<String>,
    verified: Verified,
    Json(args): Json<Value>,
) -> Response {
    let result = match name.as_str() {
        "checkout.purchase" => json!({
            "order": format!("order-{}", &verified.receipt().signature_hex()[..8]),
            "sku": args["sku"],
            "charged_cents": args["amount_cents"],
        }),
        "bank.wire" => json!({ "wired_cents": args["amount_cents"], "to": args["to"] }),
        _ => return (StatusCode::NOT_FOUND, "no such tool\n").into_response(),
    };
    Json(json!({ "tool": name, "result": result, "receipt": receipt_value(&verified) }))
        .into_response()
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
}

async fn read_file(verified: Verified, Query(query): Query<FileQuery>) -> Json<Value> {
    Json(json!({
        "tool": "files.read",
        "result": { "path": query.path, "content": "hello from the demo file system\n" },
        "receipt": receipt_value(&verified),
    }))
}

/// The load-test application: one handler that parses a 1 KiB JSON order,
/// served without a check, behind the capability layer, and behind a
/// hand-written JWT check.
pub mod load {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::{StatusCode, header};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::{Extension, Json, Router};
    use capnagent_tower::{AuthenticatedCaller, CapabilityLayer, FixedTool};
    use serde::{Deserialize, Serialize};

    use crate::jwt::{JwtError, JwtKeys};

    /// The tool the protected route is.
    pub const TOOL: &str = "checkout.purchase";

    /// The caller every load-test request is authenticated as.
    pub const CALLER: &str = "agent:loadtest";

    /// The four caveats of the load-test token.
    pub const CAVEATS: [&str; 4] = [
        r#"caller == "agent:loadtest""#,
        r#"tool == "checkout.purchase""#,
        "arg.amount_cents <= 5000",
        "now <= @2099-01-01T00:00:00Z",
    ];

    /// The request body: a 1 KiB JSON order (1024 bytes exactly).
    pub const BODY: &str = concat!(
        r#"{"sku":"USB-C cable","amount_cents":1299,"currency":"EUR","#,
        r#""customer":{"id":"cust-000042","email":"planner@example.com","tier":"gold"},"#,
        r#""shipping":{"name":"Ada Lovelace","street":"12 Analytical Row","city":"London","postcode":"NW1 6XE","country":"GB"},"#,
        r#""items":["#,
        r#"{"sku":"USB-C cable","qty":1,"price_cents":999,"note":"2 m, braided, 100 W, black"},"#,
        r#"{"sku":"USB-C charger","qty":1,"price_cents":300,"note":"65 W GaN, EU plug"},"#,
        r#"{"sku":"cable tie","qty":4,"price_cents":0,"note":"free with the cable"}],"#,
        r#""tags":["agent","checkout","loadtest","demo"],"#,
        r#""idempotency_key":"6f1c9a52-7d0b-4e8e-9c57-1a2b3c4d5e6f","#,
        r#""note":"Leave at the front desk. This note pads the order to exactly one KiB of JSON so that every run parses the same bytes. "#,
        r#"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. "#,
        r#"Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor."#,
        r#"............................................."}"#,
    );

    /// The order the handler parses.
    #[derive(Debug, Deserialize)]
    pub struct Order {
        /// What is bought.
        pub sku: String,
        /// The total, in cents.
        pub amount_cents: u64,
        /// ISO 4217 currency.
        pub currency: String,
        /// The line items.
        pub items: Vec<Item>,
        /// Free text.
        pub note: String,
    }

    /// One line of an [`Order`].
    #[derive(Debug, Deserialize)]
    pub struct Item {
        /// What.
        pub sku: String,
        /// How many.
        pub qty: u32,
        /// Unit price, in cents.
        pub price_cents: u64,
    }

    /// What the handler answers.
    #[derive(Debug, Serialize)]
    pub struct Ack {
        /// Accepted.
        pub ok: bool,
        /// Number of items.
        pub items: usize,
        /// Total, in cents.
        pub amount_cents: u64,
    }

    /// The handler every route shares: parses the order, answers a small
    /// JSON acknowledgement.
    pub async fn checkout(Json(order): Json<Order>) -> Json<Ack> {
        let items: u64 = order
            .items
            .iter()
            .map(|i| u64::from(i.qty) * i.price_cents)
            .sum();
        Json(Ack {
            ok: items <= order.amount_cents && !order.sku.is_empty(),
            items: order.items.len(),
            amount_cents: order.amount_cents,
        })
    }

    /// `POST /checkout` with the handler, behind `layer` when given (tool
    /// fixed to [`TOOL`], args from the JSON body), with every request
    /// authenticated as [`CALLER`].
    pub fn app(layer: Option<CapabilityLayer>) -> Router {
        let router = Router::new().route("/checkout", post(checkout));
        let router = match layer {
            Some(layer) => router.route_layer(layer.tool(FixedTool::new(TOOL))),
            None => router,
        };
        router.route_layer(Extension(AuthenticatedCaller::new(CALLER)))
    }

    /// The body limit of the JWT route (the capability layer's default).
    const JWT_BODY_LIMIT: usize = 64 * 1024;

    /// `POST /checkout` with the handler behind a hand-written JWT check
    /// (the baseline `load.sh` compares with): `Authorization: Bearer`, the
    /// token decoded and validated (HS256, `exp`), its `tool` claim against
    /// [`TOOL`], the body buffered and parsed with `serde_json` (into a
    /// `serde_json::Value`: a layer in front of many routes does not know
    /// each handler's request type) for `amount_cents <= max_amount_cents`,
    /// then handed back to the handler.
    pub fn jwt_app(keys: JwtKeys) -> Router {
        Router::new()
            .route("/checkout", post(checkout))
            .route_layer(middleware::from_fn_with_state(Arc::new(keys), jwt_guard))
    }

    async fn jwt_guard(State(keys): State<Arc<JwtKeys>>, request: Request, next: Next) -> Response {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let Some(token) = token else {
            return (StatusCode::UNAUTHORIZED, "missing bearer token").into_response();
        };
        let claims = match keys.check(token, TOOL) {
            Ok(claims) => claims,
            Err(e @ JwtError::Invalid(_)) => {
                return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            }
            Err(e) => return (StatusCode::FORBIDDEN, e.to_string()).into_response(),
        };
        let (mut parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, JWT_BODY_LIMIT).await {
            Ok(bytes) => bytes,
            Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        };
        let amount = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(order) => order
                .get("amount_cents")
                .and_then(serde_json::Value::as_u64),
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        let Some(amount) = amount else {
            return (StatusCode::BAD_REQUEST, "amount_cents: expected an integer").into_response();
        };
        if amount > claims.max_amount_cents {
            return (StatusCode::FORBIDDEN, JwtError::AmountTooLarge.to_string()).into_response();
        }
        parts.extensions.insert(claims);
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    }

    /// The three routes on one server: `/protected/checkout`,
    /// `/unprotected/checkout` and `/jwt/checkout`.
    pub fn routes(layer: CapabilityLayer, jwt: JwtKeys) -> Router {
        Router::new()
            .nest("/protected", app(Some(layer)))
            .nest("/unprotected", app(None))
            .nest("/jwt", jwt_app(jwt))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::Body;
    use capnagent::{Auditor, Issuer, Verifier};
    use tower::ServiceExt;

    fn layer() -> CapabilityLayer {
        CapabilityLayer::new(
            Verifier::new(&[1; 32]).unwrap(),
            Auditor::new(&[2; 32]).unwrap(),
        )
        .unwrap()
    }

    fn token(caveats: &[&str]) -> String {
        let issuer = Issuer::from_key(&[1; 32]).unwrap();
        let mut builder = issuer.issue("t");
        for c in caveats {
            builder.caveat(c).unwrap();
        }
        builder.build().unwrap().serialize()
    }

    #[test]
    fn the_load_body_is_one_kib_of_json() {
        assert_eq!(load::BODY.len(), 1024);
        let value: Value = serde_json::from_str(load::BODY).unwrap();
        assert_eq!(value["amount_cents"], 1299);
    }

    fn jwt_token(keys: &jwt::JwtKeys, tool: &str, max_amount_cents: u64) -> String {
        keys.mint(&jwt::Claims {
            sub: load::CALLER.to_owned(),
            tool: tool.to_owned(),
            max_amount_cents,
            exp: jwt::unix_seconds() + 3600,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_load_routes_parse_the_same_body() {
        let keys = jwt::JwtKeys::hs256(&[3; 32]).unwrap();
        let app = load::routes(layer(), keys.clone());
        let token = token(&load::CAVEATS);
        let jwt = jwt_token(&keys, load::TOOL, 5000);
        let call = |path: &str, auth: Option<&str>, body: &'static str| {
            let mut request =
                axum::http::Request::post(path).header("content-type", "application/json");
            if let Some(auth) = auth {
                request = request.header("authorization", format!("Bearer {auth}"));
            }
            app.clone().oneshot(request.body(Body::from(body)).unwrap())
        };
        for (path, auth) in [
            ("/protected/checkout", Some(token.as_str())),
            ("/unprotected/checkout", None),
            ("/jwt/checkout", Some(jwt.as_str())),
        ] {
            let response = call(path, auth, load::BODY).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            // The handler parsed the whole body the guard had read.
            let ack = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let ack: Value = serde_json::from_slice(&ack).unwrap();
            assert_eq!(
                ack,
                json!({ "ok": true, "items": 3, "amount_cents": 1299 }),
                "{path}"
            );
        }
        // The JWT route refuses what its claims do not allow.
        let other_tool = jwt_token(&keys, "bank.wire", 5000);
        let too_small = jwt_token(&keys, load::TOOL, 1298);
        let foreign = jwt_token(&jwt::JwtKeys::hs256(&[4; 32]).unwrap(), load::TOOL, 5000);
        for (auth, status) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(foreign.as_str()), StatusCode::UNAUTHORIZED),
            (Some(token.as_str()), StatusCode::UNAUTHORIZED),
            (Some(other_tool.as_str()), StatusCode::FORBIDDEN),
            (Some(too_small.as_str()), StatusCode::FORBIDDEN),
        ] {
            let response = call("/jwt/checkout", auth, load::BODY).await.unwrap();
            assert_eq!(response.status(), status, "{auth:?}");
        }
        let response = call("/jwt/checkout", Some(&jwt), "{").await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let bare = axum::http::Request::post("/protected/checkout")
            .header("content-type", "application/json")
            .body(Body::from(load::BODY))
            .unwrap();
        let response = app.clone().oneshot(bare).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_tool_api_needs_an_api_key_then_a_capability() {
        let app = tool_api(layer());
        let token = token(&[r#"tool == "files.read""#, r#"arg.path starts_with "/srv/""#]);
        let get = |uri: &str, key: &str| {
            axum::http::Request::get(uri)
                .header("x-api-key", key)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap()
        };
        let status = |r: Response| r.status();
        assert_eq!(
            status(
                app.clone()
                    .oneshot(get("/files?path=/srv/a", "wrong"))
                    .await
                    .unwrap()
            ),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(
                app.clone()
                    .oneshot(get("/files?path=/srv/a", PLANNER_API_KEY))
                    .await
                    .unwrap()
            ),
            StatusCode::OK
        );
        assert_eq!(
            status(
                app.oneshot(get("/files?path=/etc/passwd", PLANNER_API_KEY))
                    .await
                    .unwrap()
            ),
            StatusCode::FORBIDDEN
        );
    }
}

/// The workspace README's Rust examples, compiled and run as doc tests here
/// (this package depends on every crate they use).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
