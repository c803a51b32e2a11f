//! The MCP tool server (`mcp-tool-server`): three tools written with the
//! official Rust SDK (rmcp), served over Streamable HTTP on axum at `/mcp`,
//! with one [`CapabilityLayer`] in MCP mode in front. The tool code knows
//! nothing of capabilities; the layer judges every `tools/call`.

use std::sync::Arc;

use axum::Router;
use axum::http::request::Parts;
use capnagent_tower::{Anonymous, CapabilityLayer, McpPolicy, Verified};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CacheScope, ListToolsResult, PaginatedRequestParams, ProtocolVersion};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;

/// Where the MCP endpoint is mounted.
pub const PATH: &str = "/mcp";

/// The caveats of the capability `mcp-tool-server` prints: purchases of at
/// most 50.00, nothing else. The binary adds an expiry.
pub const DEMO_CAVEATS: [&str; 2] = [r#"tool == "checkout_purchase""#, "arg.amount_cents <= 5000"];

/// Arguments of `checkout_purchase`.
#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct Purchase {
    /// Who is paid.
    pub merchant: String,
    /// How much, in cents.
    pub amount_cents: u64,
}

/// Arguments of `bank_wire`.
#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct Wire {
    /// The receiving account.
    pub to: String,
    /// How much, in cents.
    pub amount_cents: u64,
}

/// Arguments of `files_read`.
#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct FileRead {
    /// Absolute path of the file.
    pub path: String,
}

/// The MCP server: three demo tools. Written as any rmcp server is; the
/// only capnagent-aware code is [`list_tools`](ServerHandler::list_tools),
/// which shows each agent only the tools its capability could allow.
#[derive(Debug, Clone)]
pub struct ToolServer {
    tool_router: ToolRouter<Self>,
}

impl Default for ToolServer {
    fn default() -> Self {
        ToolServer::new()
    }
}

#[tool_router]
impl ToolServer {
    /// A server with the three tools.
    pub fn new() -> ToolServer {
        ToolServer {
            tool_router: Self::tool_router(),
        }
    }

    /// Buys something from a merchant.
    #[tool(description = "Pay a merchant. Amounts are in cents.")]
    async fn checkout_purchase(
        &self,
        Parameters(purchase): Parameters<Purchase>,
        Extension(parts): Extension<Parts>,
    ) -> String {
        // The layer's receipt travels with the request, for whoever wants
        // to keep it next to the order.
        let receipt = parts
            .extensions
            .get::<Verified>()
            .map(|v| v.receipt().signature_hex())
            .unwrap_or_default();
        format!(
            "charged {} cents at {} (order {})",
            purchase.amount_cents,
            purchase.merchant,
            receipt.get(..12).unwrap_or("-")
        )
    }

    /// Wires money to an account.
    #[tool(description = "Wire money to a bank account. Amounts are in cents.")]
    async fn bank_wire(&self, Parameters(wire): Parameters<Wire>) -> String {
        format!("wired {} cents to {}", wire.amount_cents, wire.to)
    }

    /// Reads a file.
    #[tool(description = "Read a file from the server's file system.")]
    async fn files_read(&self, Parameters(file): Parameters<FileRead>) -> String {
        format!("{}: hello from the demo file system", file.path)
    }
}

#[tool_handler(router = self.tool_router, name = "capnagent-mcp-demo", instructions = "Demo tools behind a capnagent capability layer: every tools/call is checked against the caller's capability.")]
impl ServerHandler for ToolServer {
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let verified = context
            .extensions
            .get::<Parts>()
            .and_then(|parts| parts.extensions.get::<Verified>());
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|tool| verified.is_none_or(|v| v.could_allow(&tool.name)))
            .collect();
        let mut result = ListToolsResult::with_all_items(tools);
        if context
            .protocol_version()
            .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28)
        {
            // The list depends on the capability: no shared caches.
            result.ttl_ms = Some(0);
            result.cache_scope = Some(CacheScope::Private);
        }
        Ok(result)
    }
}

/// The rmcp Streamable HTTP service for [`ToolServer`]: sessions for the
/// handshake-era revisions, stateless for 2026-07-28 (rmcp's defaults),
/// loopback hosts only.
pub fn service() -> StreamableHttpService<ToolServer, LocalSessionManager> {
    StreamableHttpService::new(
        || Ok(ToolServer::new()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    )
}

/// The whole application: the MCP server at [`PATH`], behind `layer` in MCP
/// mode with the default [`McpPolicy`]. The capability is the only
/// credential ([`Anonymous`] caller).
pub fn app(layer: CapabilityLayer) -> Router {
    Router::new()
        .route_service(PATH, service())
        .route_layer(layer.caller(Anonymous).mcp(McpPolicy::new()))
}

/// The MCP server at [`PATH`] with no capability layer at all, as a server
/// written in another language would be: put `capnagent-gateway` in front
/// of it (`mcp-tool-server --unguarded`, the gateway tests).
pub fn unguarded_app() -> Router {
    Router::new().route_service(PATH, service())
}
