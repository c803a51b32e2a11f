//! The HTTP adapter, [`Http`]: a tool API whose `tool` and `args` facts
//! come from configurable extractors (per route, with
//! [`RouteOverride`]), and whose denials are problem+json answers
//! (`problem`).
//!
//! The tool is read from the head; the args from the head or, for
//! [`JsonBody`] (the default), from the buffered body, which the handler
//! then receives byte for byte.

pub(crate) mod extract;
pub(crate) mod problem;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use capnagent::JsonLimits;
use http::Response;
use http::request::Parts;

use crate::engine::{Named, named};
use crate::extract::CallerExtractor;
use crate::layer::CapabilityLayer;
use crate::protocol::{Call, Denial, Need, Protocol, Refusal};
use crate::sink::SinkError;

pub use extract::{
    ArgsExtractor, BufferedBody, FixedTool, JsonBody, NoArgs, QueryArgs, ToolExtractor,
};
#[cfg(feature = "axum")]
pub use extract::{PathArgs, PathParam};

/// The HTTP protocol adapter of [`CapabilityLayer`] (its default): the
/// tool from a [`ToolExtractor`] (required: see
/// [`CapabilityLayer::tool`]), the args from an [`ArgsExtractor`]
/// ([`JsonBody`] by default), per-route overrides of both and of the
/// caller, and RFC 9457 problem+json denials.
#[derive(Debug, Clone)]
pub struct Http {
    tool: Option<Named<dyn ToolExtractor>>,
    args: Named<dyn ArgsExtractor>,
    routes: HashMap<Box<str>, RouteOverride>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            tool: None,
            args: named!(JsonBody, ArgsExtractor),
            routes: HashMap::new(),
        }
    }
}

impl CapabilityLayer<Http> {
    /// Default limit on a buffered request body: 1 MiB.
    pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

    /// A layer for an HTTP tool API that checks capabilities minted under
    /// any of `verifier`'s root keys (a ring during a key rotation:
    /// [`Verifier::from_keys`](capnagent::Verifier::from_keys)) and signs
    /// receipts with `auditor`. Give it a tool source with
    /// [`tool`](Self::tool) before applying it.
    ///
    /// Refuses an auditor whose key is any of the root keys
    /// ([`KeyError::AuditKeyIsRootKey`](capnagent::KeyError::AuditKeyIsRootKey)):
    /// every receipt in a denial would then be a capability (see
    /// [`Verifier::check_audit_key`](capnagent::Verifier::check_audit_key)).
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
    pub fn new(
        verifier: capnagent::Verifier,
        auditor: capnagent::Auditor,
    ) -> Result<CapabilityLayer<Http>, capnagent::Error> {
        CapabilityLayer::with_protocol(verifier, auditor, Http::default())
    }

    /// Sets how the `tool` fact is found (for every route without an
    /// override). Required: a layer without one refuses to be applied.
    pub fn tool(self, extractor: impl ToolExtractor) -> Self {
        let tool = named!(extractor, ToolExtractor);
        self.edit(|e| e.protocol.tool = Some(tool))
    }

    /// Sets how the `args` fact is found (for every route without an
    /// override).
    pub fn args(self, extractor: impl ArgsExtractor) -> Self {
        let args = named!(extractor, ArgsExtractor);
        self.edit(|e| e.protocol.args = args)
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
        self.edit(|e| {
            e.protocol.routes.insert(path, overrides);
        })
    }
}

/// What the HTTP adapter learned from the head.
pub struct HttpHead {
    tool: Arc<str>,
    args: Arc<dyn ArgsExtractor>,
}

impl Http {
    /// The route override for this request, if any.
    fn route_of(&self, parts: &Parts) -> Option<&RouteOverride> {
        if self.routes.is_empty() {
            return None;
        }
        route_key(parts)
            .and_then(|key| self.routes.get(key))
            .or_else(|| self.routes.get(parts.uri.path()))
    }
}

#[cfg(feature = "axum")]
fn route_key(parts: &Parts) -> Option<&str> {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|matched| matched.as_str())
}

#[cfg(not(feature = "axum"))]
fn route_key(_parts: &Parts) -> Option<&str> {
    None
}

impl Protocol for Http {
    type Head = HttpHead;
    type Reply = ();
    type Answer = Response<Bytes>;

    const DEFAULT_BODY_LIMIT: usize = CapabilityLayer::<Http>::DEFAULT_BODY_LIMIT;

    fn missing(&self) -> Option<&'static str> {
        self.tool.is_none().then_some(
            "an HTTP layer needs a tool source: call `.tool(...)` on the CapabilityLayer \
             (for example `FixedTool::new(\"bank.wire\")` or `PathParam::new(\"name\")`)",
        )
    }

    fn head(&self, parts: &mut Parts) -> Result<HttpHead, Refusal<()>> {
        let route = self.route_of(parts);
        let tool = route.and_then(|r| r.tool.as_ref()).or(self.tool.as_ref());
        let args = route.and_then(|r| r.args.as_ref()).unwrap_or(&self.args);
        let Some(tool) = tool else {
            // `missing` keeps such a layer from being applied.
            let error = crate::ExtractError::misconfigured("tool: no tool extractor is configured");
            return Err(Refusal::extract(&error, Arc::from(""), ()));
        };
        match tool.value.extract_tool(parts) {
            Ok(tool) => Ok(HttpHead {
                tool,
                args: Arc::clone(&args.value),
            }),
            Err(error) => Err(Refusal::extract(&error, Arc::from(""), ())),
        }
    }

    fn reads_body(&self, head: &HttpHead) -> bool {
        head.args.reads_body()
    }

    fn early_tool(&self, head: &HttpHead) -> Arc<str> {
        Arc::clone(&head.tool)
    }

    fn early_reply(&self, _head: &HttpHead) {}

    fn caller_override<'a>(&'a self, parts: &Parts) -> Option<&'a Arc<dyn CallerExtractor>> {
        let caller = self.route_of(parts)?.caller.as_ref()?;
        Some(&caller.value)
    }

    fn call(
        &self,
        head: HttpHead,
        parts: &mut Parts,
        body: &Bytes,
        limits: &JsonLimits,
    ) -> Result<Call<()>, Refusal<()>> {
        let body = BufferedBody::new(body, *limits);
        match head.args.extract_args(parts, body) {
            Ok(args) => Ok(Call {
                tool: head.tool,
                args,
                need: Need::Caveats,
                reply: (),
            }),
            Err(error) => Err(Refusal::extract(&error, head.tool, ())),
        }
    }

    fn deny(&self, denial: Denial, receipt: &capnagent::Receipt, _reply: &()) -> Response<Bytes> {
        problem::problem(problem::DenialKind::of(denial), receipt)
    }

    fn unavailable(error: &SinkError, _reply: &()) -> Response<Bytes> {
        problem::unavailable(error)
    }
}

/// The bodies of an adapter over plain HTTP (HTTP and MCP): the inner
/// service gets the request body type it would get without the layer,
/// rebuilt with `B::from(Bytes)` when it was read; a denial's body is
/// built with `R::from(Bytes)`.
macro_rules! http_bodies {
    ($protocol:ty) => {
        impl<B: http_body::Body + From<Bytes> + Send + 'static> $crate::protocol::RequestBody<B>
            for $protocol
        {
            type Body = B;

            fn pass(body: B) -> B {
                body
            }

            fn rebuild(bytes: Bytes) -> B {
                B::from(bytes)
            }
        }

        impl<R: From<Bytes>> $crate::protocol::ResponseBody<R> for $protocol {
            fn respond(answer: http::Response<Bytes>) -> http::Response<R> {
                answer.map(R::from)
            }
        }
    };
}
#[cfg(feature = "mcp")]
pub(crate) use http_bodies;

http_bodies!(Http);

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
#[derive(Debug, Clone, Default)]
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
