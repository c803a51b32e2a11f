//! # capnagent-gateway
//!
//! A reverse proxy that puts a capnagent [`CapabilityLayer`] in front of a
//! tool server written in any language: one binary, one TOML file (see
//! `gateway.example.toml` and the crate README). The layer decides, with
//! its usual signed receipt per request; the gateway only forwards what it
//! allowed:
//!
//! - mode `mcp`: one MCP Streamable HTTP endpoint, each `tools/call`
//!   judged with the layer's [`McpPolicy`] (SSE answers, `GET` streams and
//!   session `DELETE`s pass through);
//! - mode `http`: a route per tool (a fixed tool, or the tool from a path
//!   parameter; args from the JSON body, the query, or none), with the
//!   layer's extractors.
//!
//! Run it with `capnagent-gateway --config FILE`, or in process:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use capnagent_gateway::{Config, Gateway};
//! let config = Config::load("gateway.toml".as_ref())?.validate()?;
//! let gateway = Gateway::start(config).await?;
//! println!("{}", gateway.ready_line());
//! gateway.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod metrics;
pub mod proxy;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{any, get};
use capnagent::keys::KeySource;
use capnagent::{
    AuditLog, Auditor, InMemoryNonceStore, KeyRing, KeyRole, NonceStore, RevocationCell,
    RevocationStore, Revoker, Verifier,
};
use capnagent_redis::{RedisConfig, RedisNonceStore, RedisRevocationStore, spawn_revocation_feed};
use capnagent_tower::{
    Anonymous, AuditLogSink, CallerExtractor, CapabilityLayer, ExtractError, FixedTool, JsonBody,
    McpPolicy, NoArgs, PathParam, QueryArgs, TrustedHeader,
};
use http::request::Parts;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

pub use config::{Config, ConfigError, Mode, Validated};
pub use proxy::{PeerAddr, RECEIPT_SIGNATURE_HEADER};

/// Errors of starting or running the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `/readyz` waits for Redis to answer `PING`.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A gateway that listens and has everything it needs (keys loaded, audit
/// log open, Redis connected): [`serve`](Gateway::serve) it.
pub struct Gateway {
    config: Validated,
    listener: TcpListener,
    router: Router,
    sink: AuditLogSink,
    readiness: Arc<Readiness>,
    metrics_url: Option<String>,
    root_key_ids: Vec<String>,
    feed: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.local_addr().ok())
            .field("upstream", &self.config.upstream)
            .field("mode", &self.config.config.mode)
            .finish_non_exhaustive()
    }
}

/// What `/readyz` checks.
struct Readiness {
    redis: Option<redis::aio::ConnectionManager>,
    draining: AtomicBool,
}

impl Readiness {
    async fn ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        if let Some(conn) = &self.redis {
            let mut conn = conn.clone();
            let command = redis::cmd("PING");
            let ping = command.query_async::<String>(&mut conn);
            match tokio::time::timeout(READY_PING_TIMEOUT, ping).await {
                Ok(Ok(_)) => {}
                _ => return Err("redis does not answer PING"),
            }
        }
        Ok(())
    }
}

/// Opens the hash-chained audit log at `path` under the primary key of
/// `audit` (the chain continues across a change of audit key: the ring's
/// older keys may have made the last record), rotating at `rotate_bytes`,
/// behind a write-ahead [`AuditLogSink`]. Returns the receipt signer too.
pub fn open_audit_sink(
    audit: &KeyRing,
    path: &Path,
    rotate_bytes: Option<u64>,
) -> Result<(Auditor, AuditLogSink), BoxError> {
    let auditor = Auditor::from_keys(audit)?;
    let older = Auditor::all_from_keys(audit)?;
    let mut log = AuditLog::builder(path)
        .chained(&auditor)
        .previous_keys(older.get(1..).unwrap_or_default());
    if let Some(bytes) = rotate_bytes {
        log = log.rotate_at(bytes);
    }
    let sink = AuditLogSink::new(log.open()?)?;
    Ok((auditor, sink))
}

/// The key ring of `role`: from `file`, else the role's environment
/// variable. Missing is an error naming the field.
fn load_keys(role: KeyRole, file: Option<&Path>, field: &str) -> Result<KeyRing, ConfigError> {
    match KeySource::new(role).file(file).resolve() {
        Ok(Some(ring)) => Ok(ring),
        Ok(None) => Err(ConfigError::new(
            field,
            format!(
                "no key: set it, or the environment variable {}",
                role.env_var()
            ),
        )),
        Err(e) => Err(ConfigError::new(field, e.to_string())),
    }
}

/// The `caller` fact: anonymous (the capability is the only credential),
/// or a header that only trusted front proxies may set.
enum Caller {
    Anonymous,
    Trusted {
        name: http::HeaderName,
        header: TrustedHeader,
        proxies: Vec<IpNet>,
    },
}

impl CallerExtractor for Caller {
    fn extract_caller(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        match self {
            Caller::Anonymous => Anonymous.extract_caller(parts),
            Caller::Trusted {
                name,
                header,
                proxies,
            } => match parts
                .extensions
                .get::<PeerAddr>()
                .map(|p| p.0.ip().to_canonical())
            {
                Some(ip) if proxies.iter().any(|net| net.contains(&ip)) => {
                    header.extract_caller(parts)
                }
                Some(ip) => Err(ExtractError::bad_request(format!(
                    "caller: peer {ip} is not a trusted proxy for header `{name}`"
                ))),
                None => Err(ExtractError::misconfigured(
                    "caller: the peer address is unknown",
                )),
            },
        }
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (`SIGINT`) or, on
/// Unix, `SIGTERM` (what `kill`, systemd and container runtimes send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The root and audit key rings the configuration names (files, else the
/// environment).
fn key_rings(config: &Validated) -> Result<(KeyRing, KeyRing), BoxError> {
    let keys = &config.config.keys;
    let root = load_keys(
        KeyRole::Root,
        keys.root_key_file.as_deref(),
        "keys.root_key_file",
    )?;
    let audit = load_keys(
        KeyRole::Audit,
        keys.audit_key_file.as_deref(),
        "keys.audit_key_file",
    )?;
    Ok((root, audit))
}

/// Loads the keys the configuration names and checks that they can serve
/// (the audit key is not a root key), without opening anything: what
/// `--check-config` checks besides the file.
pub fn check_keys(config: &Validated) -> Result<(), BoxError> {
    let (root, audit) = key_rings(config)?;
    Verifier::from_keys(&root)?.check_audit_key(&Auditor::from_keys(&audit)?)?;
    Ok(())
}

impl Gateway {
    /// Loads the keys, opens the audit log, connects to Redis (when
    /// configured), builds the layer and binds the listen address.
    pub async fn start(config: Validated) -> Result<Gateway, BoxError> {
        let file = &config.config;
        let (root, audit) = key_rings(&config)?;
        let verifier = Verifier::from_keys(&root)?;
        let (auditor, sink) = open_audit_sink(&audit, &file.audit.log, file.audit.rotate_bytes)?;
        verifier.check_audit_key(&auditor)?;

        // Replay protection and revocation: in memory for one gateway, in
        // Redis for a fleet.
        let (nonces, revocations, redis, feed): (Arc<dyn NonceStore>, _, _, _) = match &file.redis {
            None => (Arc::new(InMemoryNonceStore::new()), None, None, None),
            Some(section) => {
                let mut redis_config = RedisConfig::new(section.url.as_str());
                if let Some(prefix) = &section.prefix {
                    redis_config = redis_config.prefix(prefix.as_str());
                }
                let nonces = RedisNonceStore::connect(&redis_config).await?;
                let store = Arc::new(RedisRevocationStore::connect(&redis_config).await?);
                let cell = RevocationCell::from_keys(&root)?;
                // A fleet without a published list yet: publish the
                // oldest possible empty list (any list an operator
                // publishes replaces it; a present one is kept).
                if store.latest().await?.is_none() {
                    let empty = Revoker::from_keys(&root)?.publish(1);
                    if let Err(e) = store.publish(&empty).await {
                        tracing::debug!(error = %e, "initial revocation list not published");
                    }
                }
                capnagent::refresh(store.as_ref(), &cell).await?;
                let feed = spawn_revocation_feed(
                    store,
                    cell.clone(),
                    Duration::from_millis(section.revocation_poll_ms),
                );
                let ping = redis::Client::open(section.url.as_str())?
                    .get_connection_manager()
                    .await?;
                (Arc::new(nonces), Some(cell), Some(ping), Some(feed))
            }
        };

        let metrics_url = match config.metrics_listen {
            Some(addr) => Some(metrics::serve_metrics(addr).await?),
            None => None,
        };

        let proxy = Arc::new(proxy::Proxy::new(proxy::ProxySettings {
            authority: config.upstream_authority.clone(),
            prefix: config.upstream_prefix.clone(),
            connect_timeout: config.connect_timeout(),
            request_timeout: config.request_timeout(),
            keep_token: file.forward.keep_token,
            keep_proof: file.forward.keep_proof,
            trusted_proxies: config
                .caller
                .as_ref()
                .map(|(_, nets)| nets.clone())
                .unwrap_or_default(),
        }));
        let forward = any(move |request: Request<Body>| Arc::clone(&proxy).forward(request));

        let caller = match config.caller.clone() {
            None => Caller::Anonymous,
            Some((name, proxies)) => Caller::Trusted {
                header: TrustedHeader::new(name.clone()),
                name,
                proxies,
            },
        };
        let mut base = CapabilityLayer::new(verifier, auditor)?
            .sink(sink.clone())
            .caller(caller)
            .body_limit(file.limits.body_bytes)
            .nonce_store(nonces);
        if let Some(cell) = revocations {
            base = base.revocations(cell);
        }

        let guarded = match file.mode {
            Mode::Mcp => {
                let router = Router::new().route(&file.mcp.path, forward);
                if file.layer {
                    router.route_layer(base.mcp(McpPolicy::new()))
                } else {
                    router
                }
            }
            Mode::Http => http_routes(&file.http.routes, &base, forward, file.layer)?,
        };
        let readiness = Arc::new(Readiness {
            redis,
            draining: AtomicBool::new(false),
        });
        let ready = Arc::clone(&readiness);
        let router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = Arc::clone(&ready);
                    async move {
                        match ready.ready().await {
                            Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                        }
                    }
                }),
            )
            .merge(guarded)
            .fallback(|| async {
                proxy::problem(StatusCode::NOT_FOUND, "no route of this gateway")
            });

        let listener = TcpListener::bind(config.listen).await?;
        Ok(Gateway {
            root_key_ids: root.ids().map(ToString::to_string).collect(),
            config,
            listener,
            router,
            sink,
            readiness,
            metrics_url,
            feed,
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The URL clients use: `http://addr` (MCP mode: the endpoint).
    pub fn url(&self) -> String {
        let addr = self
            .local_addr()
            .map_or_else(|_| self.config.listen.to_string(), |a| a.to_string());
        match self.config.config.mode {
            Mode::Mcp => format!("http://{addr}{}", self.config.config.mcp.path),
            Mode::Http => format!("http://{addr}"),
        }
    }

    /// The JSON ready line the binary prints once it listens: `event`,
    /// `server`, `url`, `upstream`, `mode`, `layer`, `audit_log`,
    /// `metrics_url`, `root_key_ids`.
    pub fn ready_line(&self) -> serde_json::Value {
        let file = &self.config.config;
        serde_json::json!({
            "event": "ready",
            "server": "capnagent-gateway",
            "url": self.url(),
            "upstream": self.config.upstream,
            "mode": match file.mode { Mode::Mcp => "mcp", Mode::Http => "http" },
            "layer": file.layer,
            "audit_log": file.audit.log,
            "metrics_url": self.metrics_url,
            "root_key_ids": self.root_key_ids,
        })
    }

    /// The audit log file.
    pub fn audit_log(&self) -> PathBuf {
        self.config.config.audit.log.clone()
    }

    /// The audit sink (to flush it, or read its stats).
    pub fn sink(&self) -> &AuditLogSink {
        &self.sink
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the
    /// calls in flight finish (up to `timeouts.shutdown_grace_ms`) and
    /// writes every pending receipt.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        let limits = &self.config.config.limits;
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(limits.header_bytes)
            .max_headers(limits.max_headers);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let router = self.router.clone();
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                let router = router.clone();
                async move {
                    let response = router.oneshot(request.map(Body::new)).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            });
            let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        self.readiness.draining.store(true, Ordering::Relaxed);
        let grace = Duration::from_millis(self.config.config.timeouts.shutdown_grace_ms);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "draining in-flight calls"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("calls still in flight after the grace period were cut");
        }
        if let Some(feed) = self.feed {
            feed.abort();
        }
        self.sink.flush().await?;
        tracing::info!(receipts = self.sink.stats().written, "stopped");
        Ok(())
    }
}

/// The HTTP mode's routes: one layer per route (clones of `base`, sharing
/// its sink), each with its tool and args extractors. Patterns are checked
/// first so that a bad one is a configuration error, not a panic.
fn http_routes(
    routes: &[config::Route],
    base: &CapabilityLayer,
    forward: axum::routing::MethodRouter,
    layer: bool,
) -> Result<Router, BoxError> {
    let mut shapes = std::collections::HashMap::new();
    let mut router = Router::new();
    for (i, route) in routes.iter().enumerate() {
        let field = format!("http.routes[{i}].path");
        let shape = route_shape(&route.path).map_err(|why| ConfigError::new(&field, why))?;
        if let Some(other) = shapes.insert(shape, i) {
            return Err(ConfigError::new(
                field,
                format!("matches the same requests as http.routes[{other}].path"),
            )
            .into());
        }
        let mut one = Router::new().route(&route.path, forward.clone());
        if layer {
            let mut guard = match (&route.tool, &route.tool_param) {
                (Some(tool), _) => base.clone().tool(FixedTool::new(tool.as_str())),
                (None, Some(param)) => base.clone().tool(PathParam::new(param.clone())),
                (None, None) => {
                    return Err(ConfigError::new(
                        format!("http.routes[{i}].tool"),
                        "set exactly one of `tool` and `tool_param`",
                    )
                    .into());
                }
            };
            guard = match route.args {
                config::ArgsSource::Json => guard.args(JsonBody),
                config::ArgsSource::Query => guard.args(QueryArgs),
                config::ArgsSource::None => guard.args(NoArgs),
            };
            one = one.route_layer(guard.build()?);
        }
        router = router.merge(one);
    }
    Ok(router)
}

/// A path pattern with parameter names erased (`/tools/{}`), after
/// checking it is one axum accepts: segments that are literal text, a
/// whole `{name}`, or a last `{*name}`.
fn route_shape(path: &str) -> Result<String, String> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut shape = String::new();
    for (i, segment) in segments.iter().enumerate() {
        shape.push('/');
        let ident = |name: &str| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if let Some(rest) = inner.strip_prefix('*') {
                if !ident(rest) || i + 1 != segments.len() {
                    return Err(format!("`{{*{rest}}}` must name a last catch-all segment"));
                }
                shape.push_str("{*}");
            } else if ident(inner) {
                shape.push_str("{}");
            } else {
                return Err(format!(
                    "`{{{inner}}}` is not a parameter name (A-Z a-z 0-9 _)"
                ));
            }
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "segment `{segment}`: a parameter must be a whole segment, such as /tools/{{name}}"
            ));
        } else {
            shape.push_str(segment);
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::route_shape;

    #[test]
    fn route_patterns_are_checked_before_axum_sees_them() {
        assert_eq!(route_shape("/tools/{name}").as_deref(), Ok("/tools/{}"));
        assert_eq!(route_shape("/files/{*path}").as_deref(), Ok("/files/{*}"));
        assert!(route_shape("/a/{x}.json").is_err());
        assert!(route_shape("/a/{*x}/b").is_err());
        assert!(route_shape("/a/{}").is_err());
        assert_eq!(route_shape("/tools/{a}"), route_shape("/tools/{b}"));
    }
}
