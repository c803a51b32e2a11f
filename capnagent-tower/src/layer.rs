//! [`CapabilityLayer`]: the configuration every [`CapabilityService`] it
//! builds shares (verifier, auditor, token and proof sources, caller,
//! clock, sink, `env`, body limit, token cache) and the protocol adapter
//! it speaks. The builder methods here are the ones every protocol has;
//! each adapter adds its own (`tool` and `route` for [`Http`](crate::Http),
//! `mcp` to switch to [`Mcp`](crate::mcp::Mcp)).

use std::fmt;
use std::sync::Arc;

use capnagent::{Auditor, NonceStore, RevocationCell, Verifier};
use http::HeaderName;
use http::request::Parts;
use tower_layer::Layer;

use crate::cache::TokenCache;
use crate::engine::{Checked, Engine, named};
use crate::extract::{CallerExtension, CallerExtractor, Clock, SystemClock};
use crate::protocol::Protocol;
use crate::service::CapabilityService;
use crate::sink::{ReceiptSink, TracingSink};
use crate::token::TokenSource;

/// Layer that applies [`CapabilityService`]: every request is checked
/// against the capability it carries, and a signed receipt of the decision
/// goes to the [sink](Self::sink).
///
/// `P` is the protocol adapter: [`Http`](crate::Http) (the default, built
/// by [`new`](CapabilityLayer::new)), [`Mcp`](crate::mcp::Mcp) (see
/// [`mcp`](CapabilityLayer::mcp)), or another crate's, such as
/// `capnagent_tonic::Grpc` (see [`with_protocol`](Self::with_protocol)).
///
/// Defaults: token from `Authorization: Bearer`, proof from
/// `capnagent-proof`, caller from the
/// [`AuthenticatedCaller`](crate::AuthenticatedCaller) extension, the
/// system clock, no `env`, the protocol's body limit, 1024 tokens kept
/// parsed, and receipts to [`TracingSink`].
///
/// Cheap to clone: the configuration is shared. `Debug` never shows keys.
///
/// See the [crate docs](crate) for examples.
#[cfg(feature = "http")]
pub struct CapabilityLayer<P = crate::Http> {
    pub(crate) engine: Arc<Engine<P>>,
}

/// Layer that applies [`CapabilityService`]: every request is checked
/// against the capability it carries, and a signed receipt of the decision
/// goes to the [sink](Self::sink). `P` is the protocol adapter.
#[cfg(not(feature = "http"))]
pub struct CapabilityLayer<P> {
    pub(crate) engine: Arc<Engine<P>>,
}

impl<P> Clone for CapabilityLayer<P> {
    fn clone(&self) -> Self {
        CapabilityLayer {
            engine: Arc::clone(&self.engine),
        }
    }
}

impl<P: Protocol> CapabilityLayer<P> {
    /// Default number of verified tokens kept parsed: 1024.
    pub const DEFAULT_TOKEN_CACHE: usize = 1024;

    /// Default header (or gRPC metadata key) carrying a holder-of-key
    /// proof: `capnagent-proof: t=<unix ms>;sig=<base64url>` (see
    /// [`capnagent::Proof`]).
    pub const DEFAULT_PROOF_HEADER: &'static str = "capnagent-proof";

    /// A layer speaking `protocol` that checks capabilities minted under
    /// any of `verifier`'s root keys (one, or a ring during a key rotation:
    /// [`Verifier::from_keys`]) and signs receipts with `auditor`.
    ///
    /// Refuses an auditor whose key is any of the root keys
    /// ([`KeyError::AuditKeyIsRootKey`](capnagent::KeyError::AuditKeyIsRootKey)):
    /// every receipt in a denial would then be a capability (see
    /// [`Verifier::check_audit_key`]). This is the only time the keys are
    /// compared; no request pays for it.
    pub fn with_protocol(
        verifier: Verifier,
        auditor: Auditor,
        protocol: P,
    ) -> Result<CapabilityLayer<P>, capnagent::Error> {
        verifier.check_audit_key(&auditor)?;
        Ok(CapabilityLayer {
            engine: Arc::new(Engine {
                verifier,
                auditor,
                sink: named!(TracingSink, ReceiptSink),
                clock: named!(SystemClock, Clock),
                caller: named!(CallerExtension, CallerExtractor),
                token: TokenSource::Bearer,
                proof_header: HeaderName::from_static(Self::DEFAULT_PROOF_HEADER),
                env: Vec::new(),
                tokens: Arc::new(TokenCache::new(Self::DEFAULT_TOKEN_CACHE)),
                body_limit: None,
                tally: Arc::default(),
                protocol,
            }),
        })
    }

    /// The same layer speaking `protocol` instead: every other setting is
    /// kept.
    pub fn protocol<Q: Protocol>(self, protocol: Q) -> CapabilityLayer<Q> {
        let engine = Arc::unwrap_or_clone(self.engine);
        CapabilityLayer {
            engine: Arc::new(Engine {
                verifier: engine.verifier,
                auditor: engine.auditor,
                sink: engine.sink,
                clock: engine.clock,
                caller: engine.caller,
                token: engine.token,
                proof_header: engine.proof_header,
                env: engine.env,
                tokens: engine.tokens,
                body_limit: engine.body_limit,
                tally: engine.tally,
                protocol,
            }),
        }
    }

    /// The protocol adapter.
    pub fn protocol_ref(&self) -> &P {
        &self.engine.protocol
    }

    /// Changes the protocol adapter's settings.
    pub fn map_protocol(self, f: impl FnOnce(P) -> P) -> Self {
        self.edit(|engine| {
            let protocol = engine.protocol.clone();
            engine.protocol = f(protocol);
        })
    }

    pub(crate) fn edit(mut self, f: impl FnOnce(&mut Engine<P>)) -> Self {
        f(Arc::make_mut(&mut self.engine));
        self
    }

    /// Sets how the `caller` fact is found. Never from the token or the
    /// body by default; see [`TrustedHeader`](crate::TrustedHeader) for
    /// the header option and its warning.
    pub fn caller(self, extractor: impl CallerExtractor) -> Self {
        self.edit(|e| e.caller = named!(extractor, CallerExtractor))
    }

    /// Sets where receipts go. Called exactly once per request, including
    /// missing and forged tokens. Default: [`TracingSink`].
    pub fn sink(self, sink: impl ReceiptSink) -> Self {
        self.edit(|e| e.sink = named!(sink, ReceiptSink))
    }

    /// Sets the clock that supplies `now` (inject a fixed one in tests).
    pub fn clock(self, clock: impl Clock) -> Self {
        self.edit(|e| e.clock = named!(clock, Clock))
    }

    /// Sets where the token is read from. Default:
    /// [`TokenSource::Bearer`].
    pub fn token_source(self, source: TokenSource) -> Self {
        self.edit(|e| e.token = source)
    }

    /// Sets the largest request body buffered before deciding; larger ones
    /// are refused (by `Content-Length` before reading, or while reading):
    /// HTTP 413, gRPC `RESOURCE_EXHAUSTED`. Default: the protocol's (1 MiB
    /// for HTTP and MCP).
    pub fn body_limit(self, bytes: usize) -> Self {
        self.edit(|e| e.body_limit = Some(bytes))
    }

    /// Sets how many distinct tokens whose chain verified are kept parsed
    /// (0 disables the cache). Only decoding and the early chain check are
    /// skipped for a cached token: every call is still verified in full.
    /// Default 1024.
    pub fn token_cache(self, capacity: usize) -> Self {
        self.edit(|e| e.tokens = Arc::new(TokenCache::new(capacity)))
    }

    /// Sets the header (gRPC: metadata key) a holder-of-key proof is read
    /// from. Default [`Self::DEFAULT_PROOF_HEADER`].
    ///
    /// A capability bound to a holder key is judged with
    /// [`Verifier::verify_with_proof`]: the proof must be present (without
    /// one the verifier denies it at the holder-key gate, answered as an
    /// authentication failure), exactly one value, its timestamp within
    /// the verifier's skew window, and its Ed25519 signature valid over the
    /// challenge the verifier derives from this request (tool, args hash,
    /// identifier, timestamp). Build it on the client with
    /// [`HolderKey::prove`](capnagent::HolderKey::prove) and
    /// [`Proof::encode`](capnagent::Proof::encode).
    pub fn proof_header(self, name: HeaderName) -> Self {
        self.edit(|e| e.proof_header = name)
    }

    /// Makes each holder-of-key proof single-use: shorthand for configuring
    /// the verifier with [`Verifier::with_nonce_store`]. A store that fails
    /// denies the call.
    pub fn nonce_store(self, store: Arc<dyn NonceStore>) -> Self {
        self.edit(|e| e.verifier = e.verifier.clone().with_nonce_store(store))
    }

    /// Enforces revocations: shorthand for configuring the verifier with
    /// [`Verifier::with_revocations`]. Every call is denied while the cell
    /// holds no list.
    pub fn revocations(self, cell: RevocationCell) -> Self {
        self.edit(|e| e.verifier = e.verifier.clone().with_revocations(cell))
    }

    /// Adds a static `env.<key>` fact for caveats such as
    /// `env.region == "eu-west-1"`.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.edit(|e| {
            e.env.retain(|(k, _)| *k != key);
            e.env.push((key, value));
        })
    }

    /// Checks that the protocol has what it needs to judge a request (an
    /// [`Http`](crate::Http) layer: a [`tool`](CapabilityLayer::tool)
    /// source), as applying the layer does, and returns the layer. Call it
    /// where the layer is built to get the wiring error as a value instead
    /// of the panic of [`Layer::layer`].
    ///
    /// ```
    /// use capnagent::{Auditor, Verifier};
    /// use capnagent_tower::{CapabilityLayer, FixedTool};
    ///
    /// let base = CapabilityLayer::new(Verifier::new(&[7; 32])?, Auditor::new(&[9; 32])?)?;
    /// assert!(base.clone().build().is_err());
    /// let layer = base.tool(FixedTool::new("bank.wire")).build()?;
    /// # let _ = layer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Self, ConfigError> {
        match self.engine.protocol.missing() {
            Some(missing) => Err(ConfigError(missing)),
            None => Ok(self),
        }
    }

    /// Decides a request from its head alone, synchronously, as the
    /// service would with an empty body: the token, the caller, the
    /// protocol's head facts, args `null`, and the verifier. A holder-bound
    /// token is refused (a proof covers the message, which a head-only
    /// check never sees). For checks that see metadata only, such as a
    /// gRPC interceptor; the receipt is signed and handed to the sink as
    /// for any request.
    pub fn check_head(&self, parts: &mut Parts) -> Checked<P::Answer> {
        self.engine.check_head(parts)
    }
}

/// What a layer lacks to judge any request (see
/// [`CapabilityLayer::build`]): a wiring bug, named with its fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError(&'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capnagent CapabilityLayer: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// # Panics
///
/// When the protocol lacks what it needs to judge a request (an
/// [`Http`](crate::Http) layer without a [`tool`](CapabilityLayer::tool)):
/// a wiring bug, reported when the layer is applied (as a router is
/// built), never as a failure of each request.
impl<S, P: Protocol> Layer<S> for CapabilityLayer<P> {
    type Service = CapabilityService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        CapabilityService::new(inner, self)
    }
}

impl<P: fmt::Debug> fmt::Debug for CapabilityLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.engine.fmt(f)
    }
}
