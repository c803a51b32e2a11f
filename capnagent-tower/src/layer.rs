//! [`CapabilityLayer`]: the configuration (verifier, auditor, extractors,
//! sink, clock, limits, per-route overrides) shared by every
//! [`CapabilityService`] it builds.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use capnagent::JsonLimits;
use capnagent::{Auditor, NonceStore, RevocationCell, Verifier};
use http::HeaderName;
use http::request::Parts;
use tower_layer::Layer;

use crate::cache::TokenCache;
use crate::extract::{
    ArgsExtractor, CallerExtension, CallerExtractor, Clock, JsonBody, NoTool, SystemClock,
    TokenSource, ToolExtractor,
};
use crate::mcp::McpPolicy;
use crate::service::CapabilityService;
use crate::sink::{ReceiptSink, TracingSink};

/// Layer that applies [`CapabilityService`]: every request is checked
/// against the capability it carries, and a signed receipt of the decision
/// goes to the [sink](Self::sink).
///
/// Defaults: token from `Authorization: Bearer`, no tool (configure one;
/// until then every call is denied with a 500 saying so), caller from the
/// [`AuthenticatedCaller`](crate::AuthenticatedCaller) extension, args from
/// the JSON body (1 MiB limit), the system clock, no `env`, and receipts to
/// [`TracingSink`].
///
/// Cheap to clone: the configuration is shared. `Debug` never shows keys.
///
/// See the [crate docs](crate) for examples.
#[derive(Clone)]
pub struct CapabilityLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Everything a [`CapabilityService`] needs, shared behind one `Arc`.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) verifier: Verifier,
    pub(crate) auditor: Auditor,
    pub(crate) sink: Named<dyn ReceiptSink>,
    pub(crate) clock: Named<dyn Clock>,
    pub(crate) token: TokenSource,
    pub(crate) body_limit: usize,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) tool: Named<dyn ToolExtractor>,
    pub(crate) caller: Named<dyn CallerExtractor>,
    pub(crate) args: Named<dyn ArgsExtractor>,
    pub(crate) routes: HashMap<Box<str>, RouteOverride>,
    pub(crate) tokens: Arc<TokenCache>,
    pub(crate) proof_header: HeaderName,
    pub(crate) mcp: Option<Arc<McpPolicy>>,
}

/// A shared trait object that remembers the name of its concrete type, so
/// that `Debug` can say which extractor is configured.
pub(crate) struct Named<T: ?Sized> {
    pub(crate) value: Arc<T>,
    name: &'static str,
}

impl<T: ?Sized> Clone for Named<T> {
    fn clone(&self) -> Self {
        Named {
            value: Arc::clone(&self.value),
            name: self.name,
        }
    }
}

impl<T: ?Sized> fmt::Debug for Named<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! named {
    ($value:expr, $trait:ident) => {{
        fn name_of<T>(_: &T) -> &'static str {
            std::any::type_name::<T>()
        }
        let value = $value;
        let name = name_of(&value);
        let value: Arc<dyn $trait> = Arc::new(value);
        Named { value, name }
    }};
}

impl CapabilityLayer {
    /// Default limit on a buffered request body: 1 MiB.
    pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

    /// Default number of verified tokens kept parsed: 1024.
    pub const DEFAULT_TOKEN_CACHE: usize = 1024;

    /// Default header carrying a holder-of-key proof:
    /// `Capnagent-Proof: t=<unix ms>;sig=<base64url>` (see
    /// [`capnagent::Proof`]).
    pub const DEFAULT_PROOF_HEADER: &'static str = "capnagent-proof";

    /// A layer that checks capabilities minted under `verifier`'s root key
    /// and signs receipts with `auditor`.
    ///
    /// Refuses an auditor whose key is the root key
    /// ([`KeyError::AuditKeyIsRootKey`](capnagent::KeyError::AuditKeyIsRootKey)):
    /// every receipt in a denial would then be a capability (see
    /// [`Verifier::check_audit_key`]). This is the only time the keys are
    /// compared; no request pays for it.
    ///
    /// ```
    /// use capnagent::{Auditor, Verifier};
    /// use capnagent_tower::CapabilityLayer;
    ///
    /// let same = CapabilityLayer::new(Verifier::new(&[7; 32])?, Auditor::new(&[7; 32])?);
    /// assert_eq!(same.unwrap_err().code(), "key.audit_is_root");
    /// let layer = CapabilityLayer::new(Verifier::new(&[7; 32])?, Auditor::new(&[9; 32])?)?;
    /// # let _ = layer;
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn new(verifier: Verifier, auditor: Auditor) -> Result<CapabilityLayer, capnagent::Error> {
        verifier.check_audit_key(&auditor)?;
        Ok(CapabilityLayer {
            shared: Arc::new(Shared {
                verifier,
                auditor,
                sink: named!(TracingSink, ReceiptSink),
                clock: named!(SystemClock, Clock),
                token: TokenSource::Bearer,
                body_limit: Self::DEFAULT_BODY_LIMIT,
                env: Vec::new(),
                tool: named!(NoTool, ToolExtractor),
                caller: named!(CallerExtension, CallerExtractor),
                args: named!(JsonBody, ArgsExtractor),
                routes: HashMap::new(),
                tokens: Arc::new(TokenCache::new(Self::DEFAULT_TOKEN_CACHE)),
                proof_header: HeaderName::from_static(Self::DEFAULT_PROOF_HEADER),
                mcp: None,
            }),
        })
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    /// Sets how the `tool` fact is found (for every route without an
    /// override).
    pub fn tool(self, extractor: impl ToolExtractor) -> Self {
        self.edit(|s| s.tool = named!(extractor, ToolExtractor))
    }

    /// Sets how the `caller` fact is found (for every route without an
    /// override). Never from the token or the body by default; see
    /// [`TrustedHeader`](crate::TrustedHeader) for the header option and
    /// its warning.
    pub fn caller(self, extractor: impl CallerExtractor) -> Self {
        self.edit(|s| s.caller = named!(extractor, CallerExtractor))
    }

    /// Sets how the `args` fact is found (for every route without an
    /// override).
    pub fn args(self, extractor: impl ArgsExtractor) -> Self {
        self.edit(|s| s.args = named!(extractor, ArgsExtractor))
    }

    /// Guards an MCP server (Streamable HTTP): the tool and args of each
    /// request come from its JSON-RPC message (`tools/call`: `params.name`
    /// and `params.arguments`), and `policy` says what every other message
    /// needs. The `tool` and `args` extractors (and route overrides of
    /// them) are not used; the caller extractor is. Denials are JSON-RPC
    /// answers. See [`crate::mcp`].
    ///
    /// Apply the layer to the MCP endpoint only (one route, such as
    /// `/mcp`).
    pub fn mcp(self, policy: McpPolicy) -> Self {
        self.edit(|s| s.mcp = Some(Arc::new(policy)))
    }

    /// Overrides the extractors for one route of a router-wide layer.
    ///
    /// `path` is the route as written in axum's `Router::route` (the
    /// request's `MatchedPath`, such as `/tools/{name}`; in a nested router,
    /// the full path). Without axum, or when no `MatchedPath` is present, it
    /// is compared with the request's path exactly. Facts the override does
    /// not set come from the layer's defaults.
    pub fn route(self, path: impl Into<String>, overrides: RouteOverride) -> Self {
        let path: Box<str> = path.into().into_boxed_str();
        self.edit(|s| {
            s.routes.insert(path, overrides);
        })
    }

    /// Sets where receipts go. Called exactly once per request, including
    /// missing and forged tokens. Default: [`TracingSink`].
    pub fn sink(self, sink: impl ReceiptSink) -> Self {
        self.edit(|s| s.sink = named!(sink, ReceiptSink))
    }

    /// Sets the clock that supplies `now` (inject a fixed one in tests).
    pub fn clock(self, clock: impl Clock) -> Self {
        self.edit(|s| s.clock = named!(clock, Clock))
    }

    /// Sets where the token is read from. Default:
    /// [`TokenSource::Bearer`].
    pub fn token_source(self, source: TokenSource) -> Self {
        self.edit(|s| s.token = source)
    }

    /// Sets the largest request body buffered for args; larger ones are
    /// refused with 413 (by `Content-Length` before reading, or while
    /// reading). Default 1 MiB.
    pub fn body_limit(self, bytes: usize) -> Self {
        self.edit(|s| s.body_limit = bytes)
    }

    /// Sets how many distinct tokens whose chain verified are kept parsed
    /// (0 disables the cache). Only decoding and the early chain check are
    /// skipped for a cached token: every call is still verified in full.
    /// Default 1024.
    pub fn token_cache(self, capacity: usize) -> Self {
        self.edit(|s| s.tokens = Arc::new(TokenCache::new(capacity)))
    }

    /// Sets the header a holder-of-key proof is read from. Default
    /// [`Self::DEFAULT_PROOF_HEADER`].
    ///
    /// A capability bound to a holder key is judged with
    /// [`Verifier::verify_with_proof`]: the proof must be present (without
    /// one the call is denied as the engine's bearer path denies it, with a
    /// 401), its timestamp within the verifier's skew window, and its
    /// Ed25519 signature valid over the challenge the verifier derives from
    /// this request (tool, args hash, identifier, timestamp). Build the
    /// header on the client with
    /// [`HolderKey::prove`](capnagent::HolderKey::prove) and
    /// [`Proof::encode`](capnagent::Proof::encode).
    pub fn proof_header(self, name: HeaderName) -> Self {
        self.edit(|s| s.proof_header = name)
    }

    /// Makes each holder-of-key proof single-use: shorthand for configuring
    /// the verifier with
    /// [`Verifier::with_nonce_store`]. A store that fails denies the call.
    pub fn nonce_store(self, store: Arc<dyn NonceStore>) -> Self {
        self.edit(|s| s.verifier = s.verifier.clone().with_nonce_store(store))
    }

    /// Enforces revocations: shorthand for configuring the verifier with
    /// [`Verifier::with_revocations`].
    pub fn revocations(self, cell: RevocationCell) -> Self {
        self.edit(|s| s.verifier = s.verifier.clone().with_revocations(cell))
    }

    /// Adds a static `env.<key>` fact for caveats such as
    /// `env.region == "eu-west-1"`.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.edit(|s| {
            s.env.retain(|(k, _)| *k != key);
            s.env.push((key, value));
        })
    }
}

impl<S> Layer<S> for CapabilityLayer {
    type Service = CapabilityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CapabilityService::from_shared(inner, Arc::clone(&self.shared))
    }
}

impl fmt::Debug for CapabilityLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys stay out of it, even redacted: the verifier and auditor are
        // named only.
        f.debug_struct("CapabilityLayer")
            .field("verifier", &format_args!(".."))
            .field("auditor", &format_args!(".."))
            .field("token", &self.token)
            .field("tool", &self.tool)
            .field("caller", &self.caller)
            .field("args", &self.args)
            .field("routes", &self.routes)
            .field("sink", &self.sink)
            .field("clock", &self.clock)
            .field("body_limit", &self.body_limit)
            .field("token_cache", &self.tokens.capacity())
            .field("proof_header", &self.proof_header)
            .field("mcp", &self.mcp)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Shared {
    /// The extractors for this request: the route override's where it sets
    /// one, the layer's otherwise.
    pub(crate) fn extractors(&self, parts: &Parts) -> Extractors<'_> {
        let route = if self.routes.is_empty() {
            None
        } else {
            self.route_key(parts)
                .and_then(|key| self.routes.get(key))
                .or_else(|| self.routes.get(parts.uri.path()))
        };
        match route {
            None => Extractors {
                tool: &self.tool.value,
                caller: &self.caller.value,
                args: &self.args.value,
            },
            Some(route) => Extractors {
                tool: &route.tool.as_ref().unwrap_or(&self.tool).value,
                caller: &route.caller.as_ref().unwrap_or(&self.caller).value,
                args: &route.args.as_ref().unwrap_or(&self.args).value,
            },
        }
    }

    #[cfg(feature = "axum")]
    fn route_key<'p>(&self, parts: &'p Parts) -> Option<&'p str> {
        parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|matched| matched.as_str())
    }

    #[cfg(not(feature = "axum"))]
    fn route_key<'p>(&self, _parts: &'p Parts) -> Option<&'p str> {
        None
    }

    /// Limits for parsing a buffered body: the body limit, and the
    /// verifier's JSON depth.
    pub(crate) fn json_limits(&self) -> JsonLimits {
        JsonLimits {
            max_depth: self.verifier.limits().max_json_depth,
            max_len: self.body_limit,
        }
    }
}

/// The extractors chosen for one request.
pub(crate) struct Extractors<'a> {
    pub(crate) tool: &'a Arc<dyn ToolExtractor>,
    pub(crate) caller: &'a Arc<dyn CallerExtractor>,
    pub(crate) args: &'a Arc<dyn ArgsExtractor>,
}

/// Per-route extractors for a router-wide [`CapabilityLayer`]; see
/// [`CapabilityLayer::route`]. Whatever is not set falls back to the
/// layer's.
///
/// ```
/// use capnagent_tower::{FixedTool, QueryArgs, RouteOverride};
///
/// let wire = RouteOverride::new().tool(FixedTool::new("bank.wire")).args(QueryArgs);
/// # let _ = wire;
/// ```
#[derive(Clone, Default)]
pub struct RouteOverride {
    tool: Option<Named<dyn ToolExtractor>>,
    caller: Option<Named<dyn CallerExtractor>>,
    args: Option<Named<dyn ArgsExtractor>>,
}

impl RouteOverride {
    /// An override that changes nothing yet.
    pub fn new() -> RouteOverride {
        RouteOverride::default()
    }

    /// Sets this route's tool extractor.
    pub fn tool(mut self, extractor: impl ToolExtractor) -> Self {
        self.tool = Some(named!(extractor, ToolExtractor));
        self
    }

    /// Sets this route's caller extractor.
    pub fn caller(mut self, extractor: impl CallerExtractor) -> Self {
        self.caller = Some(named!(extractor, CallerExtractor));
        self
    }

    /// Sets this route's args extractor.
    pub fn args(mut self, extractor: impl ArgsExtractor) -> Self {
        self.args = Some(named!(extractor, ArgsExtractor));
        self
    }
}

impl fmt::Debug for RouteOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteOverride")
            .field("tool", &self.tool)
            .field("caller", &self.caller)
            .field("args", &self.args)
            .finish()
    }
}
