//! The gateway's configuration: one TOML file (see `gateway.example.toml`
//! and the crate README for every field), a few fields overridable by
//! environment variables for containers, validated as a whole at startup
//! with errors that name the field.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

/// The largest configuration file read: 1 MiB.
pub const MAX_CONFIG_LEN: u64 = 1024 * 1024;

/// The environment variables that override fields of the file, and the
/// field each sets.
pub const ENV_OVERRIDES: [(&str, &str); 5] = [
    ("CAPNAGENT_GATEWAY_LISTEN", "listen"),
    ("CAPNAGENT_GATEWAY_UPSTREAM", "upstream"),
    ("CAPNAGENT_GATEWAY_AUDIT_LOG", "audit.log"),
    ("CAPNAGENT_GATEWAY_REDIS_URL", "redis.url"),
    ("CAPNAGENT_GATEWAY_METRICS_LISTEN", "metrics_listen"),
];

/// A configuration error: the field (as written in the file, dotted) and
/// what is wrong with it. Displayed as `field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, such as `upstream` or `http.routes[0].path`; empty for
    /// the file as a whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway listens (`IP:PORT`; port 0: any free port).
    /// Env: `CAPNAGENT_GATEWAY_LISTEN`.
    pub listen: String,
    /// The tool server requests are forwarded to: `http://host:port`, with
    /// an optional path prefix. Env: `CAPNAGENT_GATEWAY_UPSTREAM`.
    pub upstream: String,
    /// `mcp` (one Streamable HTTP endpoint) or `http` (routes).
    pub mode: Mode,
    /// `false` turns the capability layer off: a plain reverse proxy, for
    /// benchmarks only (it checks nothing). Default `true`.
    #[serde(default = "yes")]
    pub layer: bool,
    /// MCP mode settings.
    #[serde(default)]
    pub mcp: McpConfig,
    /// HTTP mode settings.
    #[serde(default)]
    pub http: HttpConfig,
    /// Where the `caller` fact comes from. Default: anonymous.
    #[serde(default)]
    pub caller: CallerConfig,
    /// The key files.
    #[serde(default)]
    pub keys: KeysConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Redis for replay protection and the revocation feed (optional).
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// Request size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// What is forwarded.
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (optional).
    /// Env: `CAPNAGENT_GATEWAY_METRICS_LISTEN`.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

fn yes() -> bool {
    true
}

/// What the gateway protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One MCP Streamable HTTP endpoint: each `tools/call` judged with the
    /// layer's MCP policy.
    Mcp,
    /// An HTTP tool API: a route per tool.
    Http,
}

/// `[mcp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The endpoint path, on the gateway and on the upstream. Default `/mcp`.
    #[serde(default = "default_mcp_path")]
    pub path: String,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            path: default_mcp_path(),
        }
    }
}

fn default_mcp_path() -> String {
    "/mcp".to_owned()
}

/// `[http]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The routes forwarded; any other path is answered 404 by the gateway.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// `[[http.routes]]`: one path pattern and how its tool and args are found.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// An axum path pattern: `/tools/checkout.purchase`, `/tools/{name}`.
    pub path: String,
    /// The tool of every call to this path. Exactly one of `tool` and
    /// `tool_param`.
    #[serde(default)]
    pub tool: Option<String>,
    /// The path parameter naming the tool (`name` in `/tools/{name}`).
    #[serde(default)]
    pub tool_param: Option<String>,
    /// Where the args come from: `json` (the body, default), `query`, `none`.
    #[serde(default)]
    pub args: ArgsSource,
}

/// Where a route's args come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgsSource {
    /// The JSON request body (buffered, up to `limits.body_bytes`).
    #[default]
    Json,
    /// The query string.
    Query,
    /// No args (`null`).
    None,
}

/// `[caller]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// A header set by a trusted front proxy naming the caller. Without
    /// it, the caller is anonymous: the capability is the only credential.
    #[serde(default)]
    pub header: Option<String>,
    /// Peer addresses (IPs or CIDRs) allowed to set `header`; a request
    /// from any other peer is refused. Required with `header`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `[keys]`: files in the `capnagent` CLI's key-spec formats (`capnagent
/// keygen` output works). Without a file, `CAPNAGENT_ROOT_KEY` /
/// `CAPNAGENT_AUDIT_KEY` hold the spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The root key(s) tokens are checked under.
    #[serde(default)]
    pub root_key_file: Option<PathBuf>,
    /// The audit key(s); the first signs receipts.
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The hash-chained audit log. Env: `CAPNAGENT_GATEWAY_AUDIT_LOG`.
    pub log: PathBuf,
    /// Start a new file (the chain carries over) when the active one would
    /// exceed this many bytes.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
}

/// `[redis]`. `Debug` never shows the URL's password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db`. Env: `CAPNAGENT_GATEWAY_REDIS_URL`.
    pub url: String,
    /// How often the revocation list is polled, in ms. Default 1000.
    #[serde(default = "default_poll_ms")]
    pub revocation_poll_ms: u64,
    /// The key prefix shared by the fleet. Default: the store's.
    #[serde(default)]
    pub prefix: Option<String>,
}

impl fmt::Debug for RedisSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `redis://user:password@host/`: everything before the `@` of the
        // authority is left out.
        let url = match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, host)) => format!("{scheme}://..@{host}"),
                None => self.url.clone(),
            },
            None => "..".to_owned(),
        };
        f.debug_struct("RedisSection")
            .field("url", &url)
            .field("revocation_poll_ms", &self.revocation_poll_ms)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn default_poll_ms() -> u64 {
    1000
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The largest request body buffered to be judged (413 beyond).
    /// Default 1 MiB.
    #[serde(default = "default_body_bytes")]
    pub body_bytes: usize,
    /// The largest request head (request line and headers), in bytes; at
    /// least 8192. Default 64 KiB.
    #[serde(default = "default_header_bytes")]
    pub header_bytes: usize,
    /// The most request headers. Default 100.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: default_body_bytes(),
            header_bytes: default_header_bytes(),
            max_headers: default_max_headers(),
        }
    }
}

fn default_body_bytes() -> usize {
    1024 * 1024
}
fn default_header_bytes() -> usize {
    64 * 1024
}
fn default_max_headers() -> usize {
    100
}

/// `[timeouts]`, in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to the upstream (502 beyond). Default 2000.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// From sending a request to the upstream's response head (504
    /// beyond). The response body then streams for as long as it lasts
    /// (SSE). Default 30000.
    #[serde(default = "default_request_ms")]
    pub request_ms: u64,
    /// On SIGTERM or Ctrl-C: how long in-flight calls may take to finish
    /// before they are cut. Default 30000.
    #[serde(default = "default_shutdown_ms")]
    pub shutdown_grace_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: default_connect_ms(),
            request_ms: default_request_ms(),
            shutdown_grace_ms: default_shutdown_ms(),
        }
    }
}

fn default_connect_ms() -> u64 {
    2000
}
fn default_request_ms() -> u64 {
    30_000
}
fn default_shutdown_ms() -> u64 {
    30_000
}

/// `[forward]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Forward the `authorization` header (the capability) upstream.
    /// Default `false`: the tool server never sees the token.
    #[serde(default)]
    pub keep_token: bool,
    /// Forward the `capnagent-proof` header upstream. Default `false`.
    #[serde(default)]
    pub keep_proof: bool,
}

/// The configuration checked and converted: what the gateway runs with.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The listen address.
    pub listen: SocketAddr,
    /// The upstream's scheme-less authority (`host:port`).
    pub upstream_authority: http::uri::Authority,
    /// The upstream's path prefix, without a trailing `/` (may be empty).
    pub upstream_prefix: String,
    /// The upstream URL as given.
    pub upstream: String,
    /// The trusted caller header and its proxies, or `None` (anonymous).
    pub caller: Option<(HeaderName, Vec<IpNet>)>,
    /// The metrics listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// The file.
    pub config: Config,
}

impl Config {
    /// Reads `path` (at most [`MAX_CONFIG_LEN`] bytes), parses it and
    /// applies the environment overrides ([`ENV_OVERRIDES`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read as _;
        let file = std::fs::File::open(path)
            .map_err(|e| ConfigError::new("", format!("{}: {e}", path.display())))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| ConfigError::new("", format!("{}: {e}", path.display())))?;
        if text.len() as u64 > MAX_CONFIG_LEN {
            return Err(ConfigError::new(
                "",
                format!("{}: larger than {MAX_CONFIG_LEN} bytes", path.display()),
            ));
        }
        let mut config = Config::from_toml(&text)?;
        config.apply_env(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
        Ok(config)
    }

    /// Parses a configuration (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // toml names the field and the line in its message.
            ConfigError::new("", e.to_string().trim_end().to_owned())
        })
    }

    /// Applies the overrides `lookup` finds for the variables of
    /// [`ENV_OVERRIDES`].
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(v) = lookup("CAPNAGENT_GATEWAY_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = lookup("CAPNAGENT_GATEWAY_UPSTREAM") {
            self.upstream = v;
        }
        if let Some(v) = lookup("CAPNAGENT_GATEWAY_AUDIT_LOG") {
            self.audit.log = PathBuf::from(v);
        }
        if let Some(v) = lookup("CAPNAGENT_GATEWAY_REDIS_URL") {
            match &mut self.redis {
                Some(redis) => redis.url = v,
                None => {
                    self.redis = Some(RedisSection {
                        url: v,
                        revocation_poll_ms: default_poll_ms(),
                        prefix: None,
                    })
                }
            }
        }
        if let Some(v) = lookup("CAPNAGENT_GATEWAY_METRICS_LISTEN") {
            self.metrics_listen = Some(v);
        }
    }

    /// Checks every field; the first error names its field.
    pub fn validate(self) -> Result<Validated, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let (upstream_authority, upstream_prefix) = parse_upstream(&self.upstream)?;
        let metrics_listen = self
            .metrics_listen
            .as_deref()
            .map(|addr| parse_addr("metrics_listen", addr))
            .transpose()?;
        match self.mode {
            Mode::Mcp => {
                check_path("mcp.path", &self.mcp.path)?;
                if !self.http.routes.is_empty() {
                    return Err(ConfigError::new(
                        "http.routes",
                        "only in mode = \"http\" (this gateway is in mode = \"mcp\")",
                    ));
                }
            }
            Mode::Http => {
                if self.http.routes.is_empty() {
                    return Err(ConfigError::new(
                        "http.routes",
                        "mode = \"http\" needs at least one [[http.routes]]",
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for (i, route) in self.http.routes.iter().enumerate() {
                    let field = |name: &str| format!("http.routes[{i}].{name}");
                    check_path(&field("path"), &route.path)?;
                    if matches!(route.path.as_str(), "/healthz" | "/readyz") {
                        return Err(ConfigError::new(
                            field("path"),
                            "/healthz and /readyz are the gateway's own",
                        ));
                    }
                    if !seen.insert(route.path.as_str()) {
                        return Err(ConfigError::new(field("path"), "a duplicate route"));
                    }
                    match (&route.tool, &route.tool_param) {
                        (Some(tool), None) if !tool.is_empty() => {}
                        (Some(_), None) => {
                            return Err(ConfigError::new(field("tool"), "must not be empty"));
                        }
                        (None, Some(param)) => {
                            if !route.path.contains(&format!("{{{param}}}")) {
                                return Err(ConfigError::new(
                                    field("tool_param"),
                                    format!(
                                        "the path has no parameter {{{param}}}: write it as in `/tools/{{{param}}}`"
                                    ),
                                ));
                            }
                        }
                        _ => {
                            return Err(ConfigError::new(
                                field("tool"),
                                "set exactly one of `tool` and `tool_param`",
                            ));
                        }
                    }
                }
            }
        }
        let caller = match &self.caller.header {
            None => {
                if !self.caller.trusted_proxies.is_empty() {
                    return Err(ConfigError::new(
                        "caller.trusted_proxies",
                        "only with caller.header",
                    ));
                }
                None
            }
            Some(header) => {
                let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    ConfigError::new("caller.header", "must be a valid HTTP header name")
                })?;
                if matches!(
                    name.as_str(),
                    "authorization" | "capnagent-proof" | "host" | "content-length"
                ) {
                    return Err(ConfigError::new(
                        "caller.header",
                        "must be a header of its own, not a standard or capnagent one",
                    ));
                }
                if self.caller.trusted_proxies.is_empty() {
                    return Err(ConfigError::new(
                        "caller.trusted_proxies",
                        "list the peer addresses (IPs or CIDRs) of the proxies allowed to set caller.header",
                    ));
                }
                let mut nets = Vec::new();
                for (i, text) in self.caller.trusted_proxies.iter().enumerate() {
                    let net = text
                        .parse::<IpNet>()
                        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            ConfigError::new(
                                format!("caller.trusted_proxies[{i}]"),
                                "must be an IP address or a CIDR such as 10.0.0.0/8",
                            )
                        })?;
                    nets.push(net);
                }
                Some((name, nets))
            }
        };
        if self.limits.body_bytes == 0 {
            return Err(ConfigError::new("limits.body_bytes", "must be at least 1"));
        }
        if self.limits.header_bytes < 8192 {
            return Err(ConfigError::new(
                "limits.header_bytes",
                "must be at least 8192",
            ));
        }
        if self.limits.max_headers == 0 {
            return Err(ConfigError::new("limits.max_headers", "must be at least 1"));
        }
        for (field, ms) in [
            ("timeouts.connect_ms", self.timeouts.connect_ms),
            ("timeouts.request_ms", self.timeouts.request_ms),
        ] {
            if ms == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        if self.audit.log.as_os_str().is_empty() {
            return Err(ConfigError::new("audit.log", "must be a file path"));
        }
        if self.audit.rotate_bytes == Some(0) {
            return Err(ConfigError::new("audit.rotate_bytes", "must be at least 1"));
        }
        if let Some(redis) = &self.redis {
            if !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    "redis.url",
                    "must be a redis:// or rediss:// URL",
                ));
            }
            if redis.revocation_poll_ms == 0 {
                return Err(ConfigError::new(
                    "redis.revocation_poll_ms",
                    "must be at least 1",
                ));
            }
        }
        Ok(Validated {
            listen,
            upstream_authority,
            upstream_prefix,
            upstream: self.upstream.clone(),
            caller,
            metrics_listen,
            config: self,
        })
    }
}

impl Validated {
    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeouts.connect_ms)
    }

    /// The request timeout (until the response head).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeouts.request_ms)
    }
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| ConfigError::new(field, "must be IP:PORT, such as 127.0.0.1:8080"))
}

fn check_path(field: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') {
        return Err(ConfigError::new(field, "must start with /"));
    }
    if path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
        return Err(ConfigError::new(
            field,
            "must be a path (no query, fragment or spaces)",
        ));
    }
    Ok(())
}

/// `http://host:port[/prefix]` → the authority and the prefix.
fn parse_upstream(text: &str) -> Result<(http::uri::Authority, String), ConfigError> {
    let must = || {
        ConfigError::new(
            "upstream",
            "must be an http:// URL such as http://127.0.0.1:8000",
        )
    };
    let uri: http::Uri = text.parse().map_err(|_| must())?;
    if uri.scheme_str() != Some("http") {
        return Err(must());
    }
    let authority = uri.authority().cloned().ok_or_else(must)?;
    if authority.as_str().contains('@') {
        return Err(ConfigError::new("upstream", "must not carry credentials"));
    }
    if uri.query().is_some() {
        return Err(ConfigError::new("upstream", "must not have a query"));
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok((authority, prefix))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
upstream = "http://127.0.0.1:9000"
mode = "mcp"
[audit]
log = "/tmp/audit.ndjson"
"#;

    fn error(text: &str) -> String {
        match Config::from_toml(text).and_then(Config::validate) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_minimal_file_is_valid_with_the_documented_defaults() {
        let v = Config::from_toml(MINIMAL).unwrap().validate().unwrap();
        assert_eq!(v.config.mcp.path, "/mcp");
        assert!(v.config.layer);
        assert!(v.caller.is_none());
        assert_eq!(v.config.limits.body_bytes, 1 << 20);
        assert_eq!(v.upstream_prefix, "");
        assert_eq!(v.upstream_authority.as_str(), "127.0.0.1:9000");
    }

    #[test]
    fn errors_name_the_field() {
        let bad_upstream = MINIMAL.replace("http://127.0.0.1:9000", "https://x");
        assert_eq!(
            error(&bad_upstream),
            "upstream: must be an http:// URL such as http://127.0.0.1:8000"
        );
        assert!(error(&MINIMAL.replace("127.0.0.1:0", "nowhere")).starts_with("listen: "));
        let unknown = format!("{MINIMAL}\nsurprise = 1\n");
        assert!(error(&unknown).contains("surprise"), "{}", error(&unknown));
        let header = format!("{MINIMAL}\n[caller]\nheader = \"x-caller\"\n");
        assert!(error(&header).starts_with("caller.trusted_proxies: "));
        let cidr = format!(
            "{MINIMAL}\n[caller]\nheader = \"x-caller\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n"
        );
        assert!(error(&cidr).starts_with("caller.trusted_proxies[0]: "));
        let http = MINIMAL.replace("\"mcp\"", "\"http\"");
        assert!(error(&http).starts_with("http.routes: "));
        let param =
            format!("{http}\n[[http.routes]]\npath = \"/tools/{{tool}}\"\ntool_param = \"name\"\n");
        assert!(error(&param).starts_with("http.routes[0].tool_param: "));
        let both = format!(
            "{http}\n[[http.routes]]\npath = \"/t\"\ntool = \"a\"\ntool_param = \"name\"\n"
        );
        assert!(error(&both).starts_with("http.routes[0].tool: "));
        let headers = format!("{MINIMAL}\n[limits]\nheader_bytes = 100\n");
        assert!(error(&headers).starts_with("limits.header_bytes: "));
        let redis = format!("{MINIMAL}\n[redis]\nurl = \"http://x\"\n");
        assert!(error(&redis).starts_with("redis.url: "));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut config = Config::from_toml(MINIMAL).unwrap();
        config.apply_env(|name| match name {
            "CAPNAGENT_GATEWAY_UPSTREAM" => Some("http://10.1.2.3:81/api/".to_owned()),
            "CAPNAGENT_GATEWAY_REDIS_URL" => Some("redis://127.0.0.1:6379/".to_owned()),
            _ => None,
        });
        let v = config.validate().unwrap();
        assert_eq!(v.upstream_authority.as_str(), "10.1.2.3:81");
        assert_eq!(v.upstream_prefix, "/api");
        assert_eq!(v.config.redis.unwrap().url, "redis://127.0.0.1:6379/");
    }

    #[test]
    fn debug_never_shows_the_redis_password() {
        let text = format!("{MINIMAL}\n[redis]\nurl = \"redis://:hunter2@10.0.0.5:6379/0\"\n");
        let config = Config::from_toml(&text).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://..@10.0.0.5:6379/0"), "{shown}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../gateway.example.toml");
        Config::from_toml(text).unwrap().validate().unwrap();
    }
}
