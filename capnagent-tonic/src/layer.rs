//! [`CapabilityLayer`]: the configuration (verifier, auditor, descriptors,
//! tool names, caller, sink, clock, limits) shared by every
//! [`CapabilityService`] it builds.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use capnagent::JsonLimits;
use capnagent::{Auditor, NonceStore, RevocationCell, Verifier};
use capnagent_tower::{CallerExtractor, Clock, ReceiptSink, TokenSource};
use http::HeaderName;
use prost_reflect::DescriptorError;
use tower_layer::Layer;

use crate::args::Descriptors;
use crate::gate::{Gate, named};
use crate::service::CapabilityService;

/// Layer that applies [`CapabilityService`]: every gRPC call is checked
/// against the capability in its metadata, and a signed receipt of the
/// decision goes to the [sink](Self::sink).
///
/// Apply it to every service of a server with
/// `Server::builder().layer(layer)`, or to one service with
/// `layer.layer(XxxServer::new(..))` (which keeps `NamedService`, so the
/// wrapped service is added with `add_service` as usual).
///
/// Defaults: token from `authorization: Bearer <token>`, proof from
/// `capnagent-proof`, tool = the method path `/package.Service/Method`,
/// caller from the [`AuthenticatedCaller`](capnagent_tower::AuthenticatedCaller)
/// extension, no descriptors (every call's args are `null`: add the
/// service's file descriptor set with
/// [`file_descriptor_set`](Self::file_descriptor_set)), a 4 MiB message
/// limit, an 8 MiB bound on a message's args JSON, the system clock, and
/// receipts to
/// [`TracingSink`](capnagent_tower::TracingSink).
///
/// Cheap to clone: the configuration is shared. `Debug` never shows keys.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct CapabilityLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Everything a [`CapabilityService`] needs, behind one `Arc`.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) gate: Gate,
    pub(crate) descriptors: Descriptors,
    pub(crate) tools: HashMap<Box<str>, Box<str>>,
    pub(crate) message_limit: usize,
    pub(crate) max_args_json: usize,
}

impl CapabilityLayer {
    /// Default limit on a buffered request (one unary message and its
    /// 5-byte frame header): 4 MiB, tonic's own default decoding limit.
    pub const DEFAULT_MESSAGE_LIMIT: usize = 4 * 1024 * 1024;

    /// Default bound on the JSON text of a message's args:
    /// [`DEFAULT_MAX_ARGS_JSON`](crate::DEFAULT_MAX_ARGS_JSON), 8 MiB.
    pub const DEFAULT_MAX_ARGS_JSON: usize = crate::args::DEFAULT_MAX_ARGS_JSON;

    /// A layer that checks capabilities minted under `verifier`'s root key
    /// and signs receipts with `auditor`.
    ///
    /// Refuses an auditor whose key is the root key
    /// ([`KeyError::AuditKeyIsRootKey`](capnagent::KeyError::AuditKeyIsRootKey)):
    /// every receipt in a denial's metadata would then be a capability (see
    /// [`Verifier::check_audit_key`]). Checked here, once, never per call.
    pub fn new(verifier: Verifier, auditor: Auditor) -> Result<CapabilityLayer, capnagent::Error> {
        Ok(CapabilityLayer {
            shared: Arc::new(Shared {
                gate: Gate::new(verifier, auditor)?,
                descriptors: Descriptors::new(),
                tools: HashMap::new(),
                message_limit: Self::DEFAULT_MESSAGE_LIMIT,
                max_args_json: Self::DEFAULT_MAX_ARGS_JSON,
            }),
        })
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    /// Sets the services whose unary requests are decoded into args.
    /// Replaces any set before.
    pub fn descriptors(self, descriptors: Descriptors) -> Self {
        self.edit(|s| s.descriptors = descriptors)
    }

    /// Adds the services of an encoded `FileDescriptorSet` (the
    /// `FILE_DESCRIPTOR_SET` your build script embeds) to the
    /// [descriptors](Self::descriptors).
    pub fn file_descriptor_set(self, bytes: &[u8]) -> Result<Self, DescriptorError> {
        let descriptors = self.shared.descriptors.clone().with(bytes)?;
        Ok(self.descriptors(descriptors))
    }

    /// Names the tool of one method: calls of `path`
    /// (`/package.Service/Method`) are judged with `tool == name`. Methods
    /// without a name keep their path as the tool.
    pub fn tool_name(self, path: impl Into<String>, name: impl Into<String>) -> Self {
        let (path, name) = (path.into().into_boxed_str(), name.into().into_boxed_str());
        self.edit(|s| {
            s.tools.insert(path, name);
        })
    }

    /// Sets how the `caller` fact is found. Default:
    /// [`CallerExtension`](capnagent_tower::CallerExtension), the
    /// [`AuthenticatedCaller`](capnagent_tower::AuthenticatedCaller) an
    /// earlier layer inserted (for example from the client certificate);
    /// [`Anonymous`](capnagent_tower::Anonymous) when the token is the only
    /// credential; [`TrustedHeader`](capnagent_tower::TrustedHeader) for
    /// metadata set by a gateway you trust (read its warning: metadata is
    /// whatever the client sent unless something in front overwrites it).
    pub fn caller(self, extractor: impl CallerExtractor) -> Self {
        self.edit(|s| s.gate.caller = named!(extractor, CallerExtractor))
    }

    /// Sets where receipts go: called exactly once per call, including
    /// missing and forged tokens. Default:
    /// [`TracingSink`](capnagent_tower::TracingSink).
    pub fn sink(self, sink: impl ReceiptSink) -> Self {
        self.edit(|s| s.gate.sink = named!(sink, ReceiptSink))
    }

    /// Sets the clock that supplies `now` (inject a fixed one in tests).
    pub fn clock(self, clock: impl Clock) -> Self {
        self.edit(|s| s.gate.clock = named!(clock, Clock))
    }

    /// Sets where the token is read from: `authorization: Bearer <token>`
    /// ([`TokenSource::Bearer`], the default) or the whole value of another
    /// metadata key ([`TokenSource::Header`]).
    pub fn token_source(self, source: TokenSource) -> Self {
        self.edit(|s| s.gate.token = source)
    }

    /// Sets the metadata key of the holder-of-key proof. Default
    /// [`PROOF_METADATA`](crate::PROOF_METADATA) (`capnagent-proof`).
    pub fn proof_metadata(self, key: HeaderName) -> Self {
        self.edit(|s| s.gate.proof_key = key)
    }

    /// Sets the largest request buffered for a unary method (the frame
    /// header included); larger ones are refused with
    /// `RESOURCE_EXHAUSTED`. Default
    /// [`DEFAULT_MESSAGE_LIMIT`](Self::DEFAULT_MESSAGE_LIMIT). Keep it at
    /// or below the server's own `max_decoding_message_size`.
    pub fn message_limit(self, bytes: usize) -> Self {
        self.edit(|s| s.message_limit = bytes)
    }

    /// Sets the longest JSON text a decoded request message may print as
    /// args; a message whose JSON form is longer is refused with
    /// `RESOURCE_EXHAUSTED` (printing stops at the bound). Default
    /// [`DEFAULT_MAX_ARGS_JSON`](Self::DEFAULT_MAX_ARGS_JSON). A message's
    /// JSON can be many times its wire size (repeated empty messages print
    /// every default field; see the [crate docs](crate#args)).
    /// A client that signs holder-of-key proofs with
    /// [`message_to_args`](crate::message_to_args) uses the default bound.
    pub fn max_args_json(self, bytes: usize) -> Self {
        self.edit(|s| s.max_args_json = bytes)
    }

    /// Adds a static `env.<key>` fact for caveats such as
    /// `env.region == "eu-west-1"`.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.edit(|s| {
            s.gate.env.retain(|(k, _)| *k != key);
            s.gate.env.push((key, value));
        })
    }

    /// Refuses replayed holder-of-key proofs (each proof is accepted once
    /// within its window): the verifier's
    /// [`with_nonce_store`](Verifier::with_nonce_store).
    pub fn nonce_store(self, store: Arc<dyn NonceStore>) -> Self {
        self.edit(|s| s.gate.verifier = s.gate.verifier.clone().with_nonce_store(store))
    }

    /// Enforces a revocation list: the verifier's
    /// [`with_revocations`](Verifier::with_revocations). Every call is
    /// denied while the cell holds no list.
    pub fn revocations(self, cell: RevocationCell) -> Self {
        self.edit(|s| s.gate.verifier = s.gate.verifier.clone().with_revocations(cell))
    }
}

impl Shared {
    /// The tool fact of a call of `path`.
    pub(crate) fn tool_for(&self, path: &str) -> String {
        match self.tools.get(path) {
            Some(name) => name.to_string(),
            None => path.to_owned(),
        }
    }

    /// Limits for the args JSON: the verifier's nesting depth, and the
    /// layer's bound on its length.
    pub(crate) fn json_limits(&self) -> JsonLimits {
        JsonLimits {
            max_depth: self.gate.verifier.limits().max_json_depth,
            max_len: self.max_args_json,
        }
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
        f.debug_struct("CapabilityLayer")
            .field("gate", &self.gate)
            .field("descriptors", &self.descriptors)
            .field("tools", &self.tools)
            .field("message_limit", &self.message_limit)
            .field("max_args_json", &self.max_args_json)
            .finish()
    }
}
