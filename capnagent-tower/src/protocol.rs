//! The seam between the engine and a protocol: the [`Protocol`] trait an
//! adapter implements (where the tool and the args of a request come from,
//! how a denial is answered), and the protocol-neutral words the two share
//! ([`Denial`], [`Call`], [`Need`], [`Refusal`]).
//!
//! The engine ([`CapabilityService`](crate::CapabilityService)) owns
//! everything else: the token and the holder-of-key proof, the caller and
//! the clock, the verifier and its typed answer, the receipt and the sink,
//! buffering the body. An adapter never reads a token and never parses a
//! reason: it is told which [`Denial`] happened (for the verifier's own
//! decisions, which [`Gate`] denied) and renders it.
//!
//! Three adapters exist: [`Http`](crate::Http) (tool and args from
//! configurable extractors, problem+json denials), [`Mcp`](crate::mcp::Mcp)
//! (the JSON-RPC message names both, JSON-RPC denials) and, in the
//! `capnagent-tonic` crate, `Grpc` (method path and protobuf message,
//! `Status` denials).

use std::sync::Arc;

use bytes::Bytes;
use capnagent::JsonLimits;
use capnagent::{Args, Gate, Receipt};
use http::Response;
use http::request::Parts;

use crate::extract::{ExtractError, ExtractErrorKind};
use crate::sink::SinkError;

/// Why a request was denied, at the granularity an adapter renders.
///
/// The engine picks it; each protocol maps it to its own answer (a status
/// and a problem+json code, a JSON-RPC error, a gRPC code) in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// No token at all.
    MissingToken,
    /// A token that does not parse, or whose header could not be read.
    MalformedToken,
    /// The token's HMAC chain does not verify under the root key.
    InvalidChain,
    /// A holder-of-key proof that could not be read.
    MalformedProof,
    /// A holder-bound token where proofs cannot be checked (a check made
    /// from the head alone, such as a gRPC interceptor).
    ProofUnsupported,
    /// The verifier denied the call and signed the receipt: the gate that
    /// decided (`None` only if the verifier did not say).
    Verifier(Option<Gate>),
    /// The request cannot yield a fact (an extractor's bad request, a
    /// caller or tool fact over the receipt bound).
    BadRequest,
    /// A fact of the classified message cannot be judged (MCP: its
    /// `params`; a tool name over the receipt bound).
    InvalidParams,
    /// The body is over the limit.
    TooLarge,
    /// The server is wired wrongly (an extractor's misconfiguration, a
    /// verifier error that is not about the token).
    Misconfigured,
    /// A protocol's own refusal of a message it cannot classify; the code
    /// is the adapter's (MCP: `parse_error`, `invalid_request`, ...).
    Unclassified(&'static str),
}

impl Denial {
    /// The denial of an [`ExtractError`]: a bad request or a wiring bug.
    pub fn of_extract(error: &ExtractError) -> Denial {
        match error.kind() {
            ExtractErrorKind::BadRequest => Denial::BadRequest,
            ExtractErrorKind::Misconfigured => Denial::Misconfigured,
        }
    }
}

/// What a classified request needs from its capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Every caveat must hold: a tool call.
    Caveats,
    /// A genuine capability: every gate before the caveats passes, and a
    /// caveat that evaluates to false still passes (one that does not
    /// parse or cannot be evaluated does not). MCP bookkeeping messages.
    Genuine,
    /// Nothing: the request may pass without a token (with one, it needs a
    /// genuine capability).
    Open,
    /// Refused whatever the capability, with this reason (answered as
    /// [`Denial::Unclassified`] with the code `method_denied`).
    Refused(String),
}

/// A request the adapter classified: the facts it is judged by.
#[derive(Debug)]
pub struct Call<R> {
    /// The `tool` fact.
    pub tool: Arc<str>,
    /// The `args` fact.
    pub args: Args,
    /// What the request needs.
    pub need: Need,
    /// How to answer it.
    pub reply: R,
}

/// A request the adapter refuses before any capability is consulted.
#[derive(Debug)]
pub struct Refusal<R> {
    /// Why, for the renderer.
    pub denial: Denial,
    /// The receipt's reason.
    pub reason: String,
    /// The receipt's `tool` fact (what is known of it).
    pub tool: Arc<str>,
    /// How to answer it.
    pub reply: R,
}

impl<R> Refusal<R> {
    /// The refusal of an [`ExtractError`] (its message is the reason).
    pub fn extract(error: &ExtractError, tool: Arc<str>, reply: R) -> Refusal<R> {
        Refusal {
            denial: Denial::of_extract(error),
            reason: error.message().to_owned(),
            tool,
            reply,
        }
    }
}

/// What a protocol adapter supplies to the engine.
///
/// The engine calls [`head`](Self::head) once per request, reads the body
/// when the head says so (up to the layer's body limit), then calls
/// [`call`](Self::call) with the bytes, and renders its denials with
/// [`deny`](Self::deny). Every method is synchronous and must not panic
/// on request input: anything it cannot read is a [`Refusal`] (fail
/// closed).
pub trait Protocol: Clone + Send + Sync + 'static {
    /// What the adapter learned from the head, kept until the body is read.
    type Head: Send + 'static;
    /// How a request is answered (for MCP, the JSON-RPC `id` and shape).
    type Reply: Send + 'static;
    /// A rendered denial.
    type Answer: Send + 'static;

    /// The body limit when the layer sets none.
    const DEFAULT_BODY_LIMIT: usize;

    /// Reads the request head: `Err` refuses the request (after the token
    /// is looked at, so that a missing token is reported first).
    fn head(&self, parts: &mut Parts) -> Result<Self::Head, Refusal<Self::Reply>>;

    /// What the adapter lacks to judge any request, if anything (an HTTP
    /// adapter without a tool source): the layer refuses to be applied.
    fn missing(&self) -> Option<&'static str> {
        None
    }

    /// Whether the body must be buffered before [`call`](Self::call).
    fn reads_body(&self, head: &Self::Head) -> bool;

    /// The `tool` fact of a receipt signed before the body is read.
    fn early_tool(&self, head: &Self::Head) -> Arc<str>;

    /// How to answer before the body is read.
    fn early_reply(&self, head: &Self::Head) -> Self::Reply;

    /// Whether the request could pass without a token (decided by
    /// [`call`](Self::call) returning [`Need::Open`]).
    fn may_pass_without_token(&self, _head: &Self::Head) -> bool {
        false
    }

    /// A caller extractor for this request other than the layer's (HTTP's
    /// per-route overrides).
    fn caller_override<'a>(
        &'a self,
        _parts: &Parts,
    ) -> Option<&'a Arc<dyn crate::extract::CallerExtractor>> {
        None
    }

    /// Classifies the request: its tool, args and what it needs. `body` is
    /// empty unless [`reads_body`](Self::reads_body); `limits` bound the
    /// JSON the adapter parses from it.
    fn call(
        &self,
        head: Self::Head,
        parts: &mut Parts,
        body: &Bytes,
        limits: &JsonLimits,
    ) -> Result<Call<Self::Reply>, Refusal<Self::Reply>>;

    /// Renders a denial; `receipt` is its signed receipt (its outcome is
    /// the denial and carries the reason).
    fn deny(&self, denial: Denial, receipt: &Receipt, reply: &Self::Reply) -> Self::Answer;

    /// Renders the refusal of an allowed request whose receipt the sink
    /// could not record (fail closed).
    fn unavailable(error: &SinkError, reply: &Self::Reply) -> Self::Answer;
}

/// How a protocol hands a request body of type `B` to the inner service.
pub trait RequestBody<B>: Protocol {
    /// The body the inner service receives.
    type Body: Send + 'static;

    /// The body, unread.
    fn pass(body: B) -> Self::Body;

    /// The body rebuilt from exactly the buffered bytes that were checked.
    fn rebuild(bytes: Bytes) -> Self::Body;
}

/// How a protocol's rendered denial becomes a response with body `R`.
pub trait ResponseBody<R>: Protocol {
    /// The response.
    fn respond(answer: Self::Answer) -> Response<R>;
}
