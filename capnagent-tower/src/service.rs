//! [`CapabilityService`]: gathers the facts, verifies the capability, signs
//! and records a receipt, then calls the inner service or answers with a
//! denial.
//!
//! The order of gates, first failure decides:
//! 1. the token: missing, malformed (401);
//! 2. the tool and caller facts (400 or 500 from the extractor);
//! 3. when args come from the body: the HMAC chain (401), so that no body
//!    is buffered for a forged token; then the body (413 over the limit,
//!    400 if unreadable or not JSON);
//! 4. the verifier: chain (401), then every caveat (403). A capability
//!    bound to a holder key needs a proof header (401 without one) and is
//!    judged by [`Verifier::verify_with_proof`](capnagent::Verifier::verify_with_proof),
//!    asynchronously (it may consult a nonce store).
//!
//! Every path signs exactly one receipt and hands it to the sink, including
//! a request whose future is dropped while its body is read (denied,
//! "request cancelled before a decision").

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use capnagent::json::JsonValue;
use capnagent::{
    BoxFuture, Capability, Caveat, Context, Error, Outcome, Proof, REASON_HOLDER_KEY_BOUND,
    Receipt, Timestamp,
};
use http::request::Parts;
use http::{Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use crate::BoxError;
use crate::extract::{ArgsExtractor, BufferedBody, ExtractError, ExtractErrorKind};
use crate::future::ResponseFuture;
use crate::layer::{CapabilityLayer, Shared};
use crate::response::{self, DenialKind};
use crate::sink::Record;
use crate::verified::Verified;

/// Middleware that checks every request's capability; see
/// [`CapabilityLayer`] and the [crate docs](crate) for an example.
///
/// The inner service receives the same request body type `B` it would
/// without the layer. When args come from the body, the body it receives
/// is rebuilt from the buffered bytes with `B::from(Bytes)` (axum's `Body`
/// and `http_body_util::Full<Bytes>` both qualify), so the handler reads
/// exactly the bytes that were checked. Denials are built with
/// `ResBody::from(Bytes)`.
#[derive(Clone)]
pub struct CapabilityService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> CapabilityService<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> CapabilityService<S> {
        CapabilityService { inner, shared }
    }

    /// Wraps `inner` with `layer`'s configuration.
    pub fn new(inner: S, layer: &CapabilityLayer) -> CapabilityService<S> {
        CapabilityService::from_shared(inner, Arc::clone(&layer.shared))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CapabilityService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapabilityService")
            .field("inner", &self.inner)
            .field("layer", &self.shared)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for CapabilityService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let pending = match self.shared.head(&mut parts) {
            Head::Deny(denied) => {
                return ResponseFuture::decided(denied.record, Next::Deny(denied.response));
            }
            Head::Ready(pending) => pending,
        };

        if !pending.args.reads_body() {
            // Everything is known: decide here, synchronously.
            let empty = Bytes::new();
            let body_view = BufferedBody::new(&empty, self.shared.json_limits());
            return match self.shared.decide(pending, &mut parts, body_view) {
                Decision::Allow { record, verified } => {
                    parts.extensions.insert(verified);
                    let request = Request::from_parts(parts, body);
                    if record.is_done() {
                        ResponseFuture::inner(self.inner.call(request))
                    } else {
                        let inner = take_ready(&mut self.inner);
                        ResponseFuture::decided(record, Next::Call { inner, request })
                    }
                }
                Decision::Deny(denied) => {
                    ResponseFuture::decided(denied.record, Next::Deny(denied.response))
                }
                Decision::Prove(proving) => {
                    let inner = take_ready(&mut self.inner);
                    let shared = Arc::clone(&self.shared);
                    ResponseFuture::proving(proving, inner, parts, body, shared)
                }
            };
        }

        let limit = self.shared.body_limit;
        if content_length(&parts).is_some_and(|len| len > limit as u64) {
            let denied =
                self.shared
                    .deny_pending(pending, DenialKind::PayloadTooLarge, too_large(limit));
            return ResponseFuture::decided(denied.record, Next::Deny(denied.response));
        }

        // The body must be read before deciding: move the service that
        // `poll_ready` was called on into the future, and keep its clone.
        let inner = take_ready(&mut self.inner);
        ResponseFuture::buffering(
            Limited::new(body, limit).collect(),
            Buffering {
                inner,
                parts,
                pending,
                shared: Arc::clone(&self.shared),
            },
        )
    }
}

/// Takes the service `poll_ready` was called on, leaving a clone behind
/// (see "Be careful when cloning inner services" in the tower docs).
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let not_ready = inner.clone();
    std::mem::replace(inner, not_ready)
}

fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Denial reason for a request dropped before its body was read.
pub(crate) const REASON_CANCELLED: &str =
    "request cancelled before a decision (body not fully read)";

pub(crate) fn too_large(limit: usize) -> String {
    format!("request body exceeds the limit of {limit} bytes")
}

/// What to do once the receipt is recorded.
pub(crate) enum Next<S, Req, Resp> {
    /// Call the (ready) inner service.
    Call { inner: S, request: Req },
    /// Answer with a denial.
    Deny(Resp),
}

/// The state kept while the body is buffered.
pub(crate) struct Buffering<S> {
    pub(crate) inner: S,
    pub(crate) parts: Parts,
    pub(crate) pending: Pending,
    pub(crate) shared: Arc<Shared>,
}

/// A request whose token parsed and whose tool and caller are known,
/// waiting for its args.
pub(crate) struct Pending {
    cap: Arc<Capability>,
    /// The token text, when the token is not cached yet: cached once its
    /// chain verifies.
    uncached: Option<Box<str>>,
    now: Timestamp,
    tool: String,
    caller: String,
    pub(crate) args: Arc<dyn ArgsExtractor>,
}

pub(crate) enum Head<R> {
    Deny(Denied<R>),
    Ready(Pending),
}

pub(crate) struct Denied<R> {
    pub(crate) record: Record,
    pub(crate) response: Response<R>,
}

pub(crate) enum Decision<R> {
    Allow {
        record: Record,
        verified: Verified,
    },
    Deny(Denied<R>),
    /// A holder-of-key proof is being checked (asynchronously).
    Prove(Proving),
}

/// The verifier's answer for a holder-bound capability, and what is needed
/// to act on it.
pub(crate) struct Proving {
    pub(crate) verdict: BoxFuture<'static, Result<Receipt, Error>>,
    pub(crate) cap: Arc<Capability>,
    pub(crate) uncached: Option<Box<str>>,
    pub(crate) ctx: Context,
}

impl Shared {
    /// Everything that can be decided from the request head.
    pub(crate) fn head<R: From<Bytes>>(&self, parts: &mut Parts) -> Head<R> {
        let extractors = self.extractors(parts);
        let now = self.clock.value.now();
        let tool = extractors.tool.extract_tool(parts);
        let caller = extractors.caller.extract_caller(parts);
        let fact = |fact: &Result<String, ExtractError>| -> String {
            match fact {
                Ok(fact) => fact.clone(),
                Err(_) => String::new(),
            }
        };

        let token = match self.token.read(parts) {
            Ok(Some(token)) => match self.tokens.get(token) {
                Some(cap) => Ok((cap, None)),
                None => Capability::parse_with_limits(token, self.verifier.limits())
                    .map(|cap| (Arc::new(cap), Some(Box::<str>::from(token))))
                    .map_err(|e| format!("malformed capability token: {e}")),
            },
            Ok(None) => {
                let reason = "missing capability token".to_owned();
                let ctx = facts(now, fact(&caller), fact(&tool));
                return Head::Deny(self.deny(
                    DenialKind::MissingToken,
                    "",
                    Vec::new(),
                    &ctx,
                    reason,
                ));
            }
            Err(why) => Err(format!("malformed capability token: {why}")),
        };
        let (cap, mut uncached) = match token {
            Ok(token) => token,
            Err(reason) => {
                let ctx = facts(now, fact(&caller), fact(&tool));
                return Head::Deny(self.deny(
                    DenialKind::MalformedToken,
                    "",
                    Vec::new(),
                    &ctx,
                    reason,
                ));
            }
        };

        let (tool, caller) = match (tool, caller) {
            (Ok(tool), Ok(caller)) => (tool, caller),
            (Err(error), caller) => {
                let ctx = facts(now, caller.unwrap_or_default(), String::new());
                let reason = error.message().to_owned();
                return Head::Deny(self.deny_cap(extract_kind(&error), &cap, &ctx, reason));
            }
            (Ok(tool), Err(error)) => {
                let ctx = facts(now, String::new(), tool);
                let reason = error.message().to_owned();
                return Head::Deny(self.deny_cap(extract_kind(&error), &cap, &ctx, reason));
            }
        };

        let args = Arc::clone(extractors.args);
        if args.reads_body()
            && let Some(token) = uncached.take()
        {
            // Refuse a forged token before buffering anything.
            if self.verifier.verify(&cap).is_err() {
                let ctx = facts(now, caller, tool);
                return Head::Deny(self.deny_cap(
                    DenialKind::InvalidChain,
                    &cap,
                    &ctx,
                    Error::InvalidChain.to_string(),
                ));
            }
            self.tokens.insert(token, Arc::clone(&cap));
        }
        Head::Ready(Pending {
            cap,
            uncached,
            now,
            tool,
            caller,
            args,
        })
    }

    /// Reads the args and asks the verifier.
    pub(crate) fn decide<R: From<Bytes>>(
        &self,
        pending: Pending,
        parts: &mut Parts,
        body: BufferedBody<'_>,
    ) -> Decision<R> {
        let args = match pending.args.extract_args(parts, body) {
            Ok(args) => args,
            Err(error) => {
                let ctx = facts(pending.now, pending.caller, pending.tool);
                return Decision::Deny(self.deny_cap(
                    extract_kind(&error),
                    &pending.cap,
                    &ctx,
                    error.message().to_owned(),
                ));
            }
        };
        let mut builder = Context::builder()
            .timestamp(pending.now)
            .caller(pending.caller)
            .tool(pending.tool)
            .args_json(args);
        for (key, value) in &self.env {
            builder = builder.env(key.as_str(), value.as_str());
        }
        let ctx = builder.build();

        // A holder-bound capability with a proof goes the proof path; without
        // one, the bearer path denies it exactly as the engine does (and the
        // answer is a 401).
        if pending.cap.holder_of_key().is_some()
            && let Some(value) = parts.headers.get(&self.proof_header)
        {
            let proof = value
                .to_str()
                .map_err(|_| "not ASCII".to_owned())
                .and_then(|text| Proof::decode(text).map_err(|e| e.to_string()));
            return match proof {
                Err(why) => Decision::Deny(self.deny_cap(
                    DenialKind::InvalidProof,
                    &pending.cap,
                    &ctx,
                    format!("malformed holder-of-key proof: {why}"),
                )),
                Ok(proof) => {
                    let (verifier, auditor) = (self.verifier.clone(), self.auditor.clone());
                    let (cap, judged) = (Arc::clone(&pending.cap), ctx.clone());
                    Decision::Prove(Proving {
                        verdict: Box::pin(async move {
                            verifier
                                .verify_with_proof(&cap, &judged, &auditor, &proof)
                                .await
                        }),
                        cap: pending.cap,
                        uncached: pending.uncached,
                        ctx,
                    })
                }
            };
        }

        let verdict = self
            .verifier
            .verify_with_context(&pending.cap, &ctx, &self.auditor);
        self.conclude(verdict, pending.cap, pending.uncached, &ctx)
    }

    /// Acts on the verifier's answer: records the receipt and allows or
    /// denies.
    pub(crate) fn conclude<R: From<Bytes>>(
        &self,
        verdict: Result<Receipt, Error>,
        cap: Arc<Capability>,
        uncached: Option<Box<str>>,
        ctx: &Context,
    ) -> Decision<R> {
        match verdict {
            Ok(receipt) => {
                // The chain verified: remember the token.
                if let Some(token) = uncached {
                    self.tokens.insert(token, Arc::clone(&cap));
                }
                let receipt = Arc::new(receipt);
                let record = self.sink.value.record(&receipt);
                if receipt.is_allowed() {
                    Decision::Allow {
                        record,
                        verified: Verified::new(receipt, cap),
                    }
                } else {
                    let kind = if receipt.outcome().reason() == Some(REASON_HOLDER_KEY_BOUND) {
                        DenialKind::InvalidProof
                    } else {
                        DenialKind::InsufficientScope
                    };
                    Decision::Deny(Denied {
                        record,
                        response: response::denial(kind, &receipt),
                    })
                }
            }
            Err(Error::InvalidChain) => Decision::Deny(self.deny_cap(
                DenialKind::InvalidChain,
                &cap,
                ctx,
                Error::InvalidChain.to_string(),
            )),
            Err(other) => Decision::Deny(self.deny_cap(
                DenialKind::Misconfigured,
                &cap,
                ctx,
                other.to_string(),
            )),
        }
    }

    /// Denies a pending request before its args were read (body too large
    /// or unreadable).
    pub(crate) fn deny_pending<R: From<Bytes>>(
        &self,
        pending: Pending,
        kind: DenialKind,
        reason: String,
    ) -> Denied<R> {
        let ctx = facts(pending.now, pending.caller, pending.tool);
        self.deny_cap(kind, &pending.cap, &ctx, reason)
    }

    /// Records a request dropped before its body was read: denied, no
    /// response to build.
    pub(crate) fn cancel(&self, pending: Pending) {
        let ctx = facts(pending.now, pending.caller, pending.tool);
        self.cancel_with(&pending.cap, &ctx);
    }

    /// Records a request dropped before a decision was made.
    pub(crate) fn cancel_with(&self, cap: &Capability, ctx: &Context) {
        let receipt = Arc::new(self.auditor.sign(
            cap.identifier(),
            cap.caveats().to_vec(),
            ctx,
            Outcome::Denied {
                reason: REASON_CANCELLED.to_owned(),
            },
        ));
        // A `Record` that must wait finishes on its own once dropped.
        drop(self.sink.value.record(&receipt));
    }

    fn deny_cap<R: From<Bytes>>(
        &self,
        kind: DenialKind,
        cap: &Capability,
        ctx: &Context,
        reason: String,
    ) -> Denied<R> {
        self.deny(kind, cap.identifier(), cap.caveats().to_vec(), ctx, reason)
    }

    /// Signs a denial the verifier did not make itself, records it and
    /// builds the response.
    fn deny<R: From<Bytes>>(
        &self,
        kind: DenialKind,
        identifier: &str,
        caveats: Vec<Caveat>,
        ctx: &Context,
        reason: String,
    ) -> Denied<R> {
        let receipt =
            Arc::new(
                self.auditor
                    .sign(identifier, caveats, ctx, Outcome::Denied { reason }),
            );
        let record = self.sink.value.record(&receipt);
        Denied {
            record,
            response: response::denial(kind, &receipt),
        }
    }
}

/// The context of a denial made before the args were read: args are
/// `null` in its receipt.
fn facts(now: Timestamp, caller: String, tool: String) -> Context {
    Context::builder()
        .timestamp(now)
        .caller(caller)
        .tool(tool)
        .args_json(JsonValue::Null)
        .build()
}

fn extract_kind(error: &ExtractError) -> DenialKind {
    match error.kind() {
        ExtractErrorKind::BadRequest => DenialKind::BadRequest,
        ExtractErrorKind::Misconfigured => DenialKind::Misconfigured,
    }
}
