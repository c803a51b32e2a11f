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
//! "request cancelled before a decision"). A receipt the layer signs itself
//! names the token's identifier and caveats only when its chain verifies
//! (see `Subject`); its caller, tool and reason are bounded (see the crate
//! docs' Audit section). An allowed request reaches the inner service only
//! once the sink's [`Record`] resolved to `Ok`; when the sink reports that
//! the receipt cannot be recorded, the request is refused with 503 (see
//! [`ReceiptSink`](crate::ReceiptSink)). A denial is sent once its `Record`
//! resolved, whatever the outcome.
//!
//! On an MCP endpoint ([`crate::mcp`]) the tool is not known from the head:
//! step 2 reads only the caller, and the message in the body (or the HTTP
//! method, for `GET` and `DELETE`) names the tool, the args and what the
//! message needs once it is read.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use capnagent::Args;
use capnagent::JsonValue;
use capnagent::{
    BoxFuture, Capability, Caveat, Context, Error, Gate, Outcome, Proof, Receipt, Timestamp,
    bounded_text, unverified_identifier,
};
use http::request::Parts;
use http::{Request, Response, header};
use http_body::Body;
use tower_service::Service;

use crate::BoxError;
use crate::extract::{ArgsExtractor, BufferedBody, ExtractError, ExtractErrorKind};
use crate::future::ResponseFuture;
use crate::layer::{CapabilityLayer, Shared};
use crate::mcp::{McpAccess, McpHead};
use crate::response::{self, DenialKind, Reply};
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

        if !pending.reads_body() {
            // Everything is known: decide here, synchronously.
            let empty = Bytes::new();
            let body_view = BufferedBody::new(&empty, self.shared.json_limits());
            return match self.shared.decide(pending, &mut parts, body_view) {
                Decision::Allow {
                    record,
                    verified,
                    reply,
                } => {
                    if let Some(verified) = verified {
                        parts.extensions.insert(verified);
                    }
                    let request = Request::from_parts(parts, body);
                    if record.is_done() {
                        ResponseFuture::inner(self.inner.call(request))
                    } else {
                        // Write-ahead: the inner service is called only once
                        // the receipt is recorded.
                        let inner = take_ready(&mut self.inner);
                        let next = Next::Call {
                            inner,
                            request,
                            reply,
                        };
                        ResponseFuture::decided(record, next)
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
            body,
            limit,
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
    /// Call the (ready) inner service; if the receipt could not be
    /// recorded, refuse in `reply`'s shape instead.
    Call {
        inner: S,
        request: Req,
        reply: Reply,
    },
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

/// A request whose token parsed and whose caller (and, off MCP, tool) is
/// known, waiting for its args.
pub(crate) struct Pending {
    token: Token,
    now: Timestamp,
    caller: Arc<str>,
    facts: Facts,
}

/// The capability a request presented.
pub(crate) enum Token {
    Present {
        cap: Arc<Capability>,
        /// The token text, when the token is not cached yet: cached once
        /// its chain verifies.
        uncached: Option<Box<str>>,
    },
    /// None at all: only on an MCP endpoint whose policy lets some message
    /// through without one (decided once the message is read).
    Absent,
}

/// Where the tool and the args come from.
pub(crate) enum Facts {
    /// An HTTP tool call: the tool is known, the args come from the
    /// extractor.
    Call {
        tool: Arc<str>,
        args: Arc<dyn ArgsExtractor>,
    },
    /// An MCP endpoint: both come from the message (see [`crate::mcp`]).
    Mcp(McpHead),
}

impl Pending {
    /// Whether the body must be buffered before deciding.
    pub(crate) fn reads_body(&self) -> bool {
        self.facts.reads_body()
    }
}

impl Facts {
    /// Whether the body must be buffered before deciding.
    fn reads_body(&self) -> bool {
        match self {
            Facts::Call { args, .. } => args.reads_body(),
            Facts::Mcp(head) => head.reads_body(),
        }
    }

    /// The `tool` fact of a receipt signed before the body is read.
    fn early_tool(&self) -> Arc<str> {
        match self {
            Facts::Call { tool, .. } => Arc::clone(tool),
            Facts::Mcp(head) => head.early_tool().into(),
        }
    }

    /// How a denial is answered before the body is read.
    fn reply(&self) -> Reply {
        match self {
            Facts::Call { .. } => Reply::Problem,
            Facts::Mcp(head) => Reply::Mcp(Box::new(head.reply())),
        }
    }
}

/// What the verifier's answer must show for a request to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Every caveat holds.
    Caveats,
    /// The capability is genuine: a caveat that evaluates to false still
    /// passes, a caveat that does not parse or cannot be evaluated does not
    /// (an MCP message that is not a tool call, see [`McpAccess`]).
    Genuine,
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
        /// `None` for an MCP message let through without a token.
        verified: Option<Verified>,
        /// How to refuse the call if its receipt cannot be recorded.
        reply: Reply,
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
    pub(crate) check: Check,
    pub(crate) reply: Reply,
}

impl Shared {
    /// Everything that can be decided from the request head.
    pub(crate) fn head<R: From<Bytes>>(&self, parts: &mut Parts) -> Head<R> {
        let extractors = self.extractors(parts);
        let now = self.clock.value.now();
        let facts = match &self.mcp {
            Some(policy) => Ok(Facts::Mcp(McpHead::new(policy, parts))),
            None => extractors.tool.extract_tool(parts).map(|tool| Facts::Call {
                tool,
                args: Arc::clone(extractors.args),
            }),
        };
        let caller = extractors.caller.extract_caller(parts);
        let reply = facts.as_ref().map_or(Reply::Problem, Facts::reply);
        let early = |caller: &Result<Arc<str>, ExtractError>| {
            let tool = facts
                .as_ref()
                .map_or_else(|_| Arc::from(""), Facts::early_tool);
            let caller = caller.as_ref().map_or_else(|_| Arc::from(""), Arc::clone);
            context(now, caller, tool)
        };

        let token = match self.token.read(parts) {
            Ok(Some(token)) => match self.tokens.get(token) {
                Some(cap) => Ok(Token::Present {
                    cap,
                    uncached: None,
                }),
                None => Capability::parse_with_limits(token, self.verifier.limits())
                    .map(|cap| Token::Present {
                        cap: Arc::new(cap),
                        uncached: Some(Box::<str>::from(token)),
                    })
                    .map_err(|e| {
                        (
                            format!("malformed capability token: {e}"),
                            Subject::unverified(token),
                        )
                    }),
            },
            Ok(None) => {
                let passes =
                    matches!(&facts, Ok(Facts::Mcp(head)) if head.may_pass_without_token());
                if !passes {
                    let reason = "missing capability token".to_owned();
                    return Head::Deny(self.deny(
                        DenialKind::MissingToken,
                        Subject::nobody(),
                        &early(&caller),
                        reason,
                        &reply,
                    ));
                }
                Ok(Token::Absent)
            }
            Err(why) => Err((
                format!("malformed capability token: {why}"),
                Subject::unreadable(),
            )),
        };
        let mut token = match token {
            Ok(token) => token,
            Err((reason, subject)) => {
                return Head::Deny(self.deny(
                    DenialKind::MalformedToken,
                    subject,
                    &early(&caller),
                    reason,
                    &reply,
                ));
            }
        };

        let (facts, caller) = match (facts, caller) {
            (Ok(facts), Ok(caller)) => (facts, caller),
            (Err(error), caller) => {
                let ctx = context(now, caller.unwrap_or_else(|_| Arc::from("")), Arc::from(""));
                let reason = error.message().to_owned();
                return Head::Deny(self.deny(
                    extract_kind(&error),
                    self.token_subject(&token),
                    &ctx,
                    reason,
                    &reply,
                ));
            }
            (Ok(facts), Err(error)) => {
                let ctx = context(now, Arc::from(""), facts.early_tool());
                let reason = error.message().to_owned();
                return Head::Deny(self.deny(
                    extract_kind(&error),
                    self.token_subject(&token),
                    &ctx,
                    reason,
                    &reply,
                ));
            }
        };
        if let Some(reason) = over_long(&caller, &facts.early_tool()) {
            let ctx = context(now, caller, facts.early_tool());
            return Head::Deny(self.deny(
                DenialKind::BadRequest,
                self.token_subject(&token),
                &ctx,
                reason,
                &reply,
            ));
        }

        if facts.reads_body()
            && let Token::Present { cap, uncached } = &mut token
            && let Some(text) = uncached.take()
        {
            // Refuse a forged token before buffering anything.
            if self.verifier.verify(cap.as_ref()).is_err() {
                let ctx = context(now, caller, facts.early_tool());
                return Head::Deny(self.deny(
                    DenialKind::InvalidChain,
                    Subject::unverified(&text),
                    &ctx,
                    Error::InvalidChain.to_string(),
                    &reply,
                ));
            }
            self.tokens.insert(text, Arc::clone(cap));
        }
        Head::Ready(Pending {
            token,
            now,
            caller,
            facts,
        })
    }

    /// Reads the args (and, on an MCP endpoint, the message) and asks the
    /// verifier.
    pub(crate) fn decide<R: From<Bytes>>(
        &self,
        pending: Pending,
        parts: &mut Parts,
        body: BufferedBody<'_>,
    ) -> Decision<R> {
        let Pending {
            token,
            now,
            caller,
            facts,
        } = pending;
        let (tool, args) = match facts {
            Facts::Mcp(head) => return self.decide_mcp(token, now, caller, &head, parts, body),
            Facts::Call { tool, args } => (tool, args),
        };
        let args = match args.extract_args(parts, body) {
            Ok(args) => args,
            Err(error) => {
                let ctx = context(now, caller, tool);
                return Decision::Deny(self.deny(
                    extract_kind(&error),
                    self.token_subject(&token),
                    &ctx,
                    error.message().to_owned(),
                    &Reply::Problem,
                ));
            }
        };
        let ctx = self.full_context(now, caller, tool, args);
        self.judge(token, ctx, parts, Check::Caveats, Reply::Problem)
    }

    /// An MCP request: classify it, then apply what its kind needs.
    fn decide_mcp<R: From<Bytes>>(
        &self,
        token: Token,
        now: Timestamp,
        caller: Arc<str>,
        head: &McpHead,
        parts: &mut Parts,
        body: BufferedBody<'_>,
    ) -> Decision<R> {
        let call = match head.read(parts, body) {
            Ok(call) => call,
            Err(reject) => {
                let ctx = context(now, caller, reject.tool.into());
                let reply = Reply::Mcp(Box::new(reject.reply));
                return Decision::Deny(self.deny(
                    reject.kind,
                    self.token_subject(&token),
                    &ctx,
                    reject.reason,
                    &reply,
                ));
            }
        };
        let reply = Reply::Mcp(Box::new(call.reply));
        if let Some(reason) = over_long(&caller, &call.tool) {
            let ctx = context(now, caller, call.tool.into());
            return Decision::Deny(self.deny(
                DenialKind::InvalidParams,
                self.token_subject(&token),
                &ctx,
                reason,
                &reply,
            ));
        }
        let ctx = self.full_context(now, caller, call.tool, call.args);
        let check = match (call.access, &token) {
            (McpAccess::Open, Token::Absent) => {
                // Nothing to verify: record that the message passed.
                let receipt = Arc::new(self.auditor.sign("", Vec::new(), &ctx, Outcome::Allowed));
                let record = self.sink.value.record(&receipt);
                return Decision::Allow {
                    record,
                    verified: None,
                    reply,
                };
            }
            (_, Token::Absent) => {
                let reason = "missing capability token".to_owned();
                return Decision::Deny(self.deny(
                    DenialKind::MissingToken,
                    Subject::nobody(),
                    &ctx,
                    reason,
                    &reply,
                ));
            }
            (McpAccess::Denied, _) => {
                let reason = format!("MCP: {} is not allowed on this server", call.label);
                return Decision::Deny(self.deny(
                    DenialKind::MethodDenied,
                    self.token_subject(&token),
                    &ctx,
                    reason,
                    &reply,
                ));
            }
            (McpAccess::Judged, _) => Check::Caveats,
            _ => Check::Genuine,
        };
        self.judge(token, ctx, parts, check, reply)
    }

    /// The context the verifier judges: the facts plus the layer's `env`.
    fn full_context(
        &self,
        now: Timestamp,
        caller: Arc<str>,
        tool: impl Into<Arc<str>>,
        args: impl Into<Args>,
    ) -> Context {
        let mut builder = Context::builder()
            .timestamp(now)
            .caller(caller)
            .tool(tool)
            .args_json(args);
        for (key, value) in &self.env {
            builder = builder.env(key.as_str(), value.as_str());
        }
        builder.build()
    }

    /// Asks the verifier about `token` in `ctx`.
    fn judge<R: From<Bytes>>(
        &self,
        token: Token,
        ctx: Context,
        parts: &Parts,
        check: Check,
        reply: Reply,
    ) -> Decision<R> {
        let (cap, uncached) = match token {
            Token::Present { cap, uncached } => (cap, uncached),
            Token::Absent => {
                let reason = "missing capability token".to_owned();
                return Decision::Deny(self.deny(
                    DenialKind::MissingToken,
                    Subject::nobody(),
                    &ctx,
                    reason,
                    &reply,
                ));
            }
        };

        // A holder-bound capability with a proof goes the proof path; without
        // one, the bearer path denies it exactly as the engine does (and the
        // answer is a 401).
        if cap.holder_of_key().is_some()
            && let Some(value) = parts.headers.get(&self.proof_header)
        {
            let proof = value
                .to_str()
                .map_err(|_| "not ASCII".to_owned())
                .and_then(|text| Proof::decode(text).map_err(|e| e.to_string()));
            return match proof {
                Err(why) => Decision::Deny(self.deny(
                    DenialKind::InvalidProof,
                    self.subject_of(&cap, uncached.as_deref()),
                    &ctx,
                    format!("malformed holder-of-key proof: {why}"),
                    &reply,
                )),
                Ok(proof) => {
                    let (verifier, auditor) = (self.verifier.clone(), self.auditor.clone());
                    let (judged_cap, judged) = (Arc::clone(&cap), ctx.clone());
                    Decision::Prove(Proving {
                        verdict: Box::pin(async move {
                            verifier
                                .verify_with_proof(&judged_cap, &judged, &auditor, &proof)
                                .await
                        }),
                        cap,
                        uncached,
                        ctx,
                        check,
                        reply,
                    })
                }
            };
        }

        let verdict = self.verifier.verify_with_context(&cap, &ctx, &self.auditor);
        self.conclude(verdict, cap, uncached, &ctx, check, reply)
    }

    /// Acts on the verifier's answer: records the receipt and allows or
    /// denies.
    pub(crate) fn conclude<R: From<Bytes>>(
        &self,
        verdict: Result<Receipt, Error>,
        cap: Arc<Capability>,
        uncached: Option<Box<str>>,
        ctx: &Context,
        check: Check,
        reply: Reply,
    ) -> Decision<R> {
        match verdict {
            Ok(receipt) => {
                // The chain verified: remember the token.
                if let Some(token) = uncached {
                    self.tokens.insert(token, Arc::clone(&cap));
                }
                let gate = receipt.denied_by();
                let at_caveats = gate.is_some_and(|gate| gate.is_caveat());
                // Only a caveat that parsed and evaluated to false shows a
                // genuine capability; a parse or eval error never does (see
                // `McpAccess::Authenticated`).
                let genuine = gate.is_some_and(|gate| gate.is_caveat_false());
                let receipt = if check == Check::Genuine && genuine {
                    // Genuine, which is all this message needs: the decision
                    // the layer makes (and records) is "allowed".
                    self.auditor.sign(
                        cap.identifier(),
                        receipt.caveats().to_vec(),
                        ctx,
                        Outcome::Allowed,
                    )
                } else {
                    receipt
                };
                let receipt = Arc::new(receipt);
                let record = self.sink.value.record(&receipt);
                if receipt.is_allowed() {
                    return Decision::Allow {
                        record,
                        verified: Some(Verified::new(receipt, cap, self.verifier.clone())),
                        reply,
                    };
                }
                let kind = if gate == Some(Gate::HolderKey) {
                    DenialKind::InvalidProof
                } else if matches!(reply, Reply::Mcp(_)) && !at_caveats {
                    // A token refused before its caveats (revoked, no
                    // caveats, a failed proof) is not usable at all: RFC 6750
                    // `invalid_token`, which MCP clients act on.
                    DenialKind::TokenRejected
                } else {
                    DenialKind::InsufficientScope
                };
                Decision::Deny(Denied {
                    record,
                    response: response::denial(kind, &receipt, &reply),
                })
            }
            Err(Error::InvalidChain) => Decision::Deny(self.deny(
                DenialKind::InvalidChain,
                Subject::unverified_cap(&cap, uncached.as_deref()),
                ctx,
                Error::InvalidChain.to_string(),
                &reply,
            )),
            Err(other) => Decision::Deny(self.deny(
                DenialKind::Misconfigured,
                self.subject_of(&cap, uncached.as_deref()),
                ctx,
                other.to_string(),
                &reply,
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
        let ctx = context(pending.now, pending.caller, pending.facts.early_tool());
        let reply = pending.facts.reply();
        let subject = self.token_subject(&pending.token);
        self.deny(kind, subject, &ctx, reason, &reply)
    }

    /// Records a request dropped before its body was read: denied, no
    /// response to build.
    pub(crate) fn cancel(&self, pending: Pending) {
        let ctx = context(pending.now, pending.caller, pending.facts.early_tool());
        self.record_cancelled(self.token_subject(&pending.token), &ctx);
    }

    /// Records a request dropped before a decision was made.
    pub(crate) fn cancel_with(&self, cap: Option<&Capability>, ctx: &Context) {
        let subject = match cap {
            Some(cap) => self.subject_of(cap, None),
            None => Subject::nobody(),
        };
        self.record_cancelled(subject, &bounded(ctx));
    }

    fn record_cancelled(&self, subject: Subject, ctx: &Context) {
        let receipt = Arc::new(self.auditor.sign(
            subject.identifier,
            subject.caveats,
            ctx,
            Outcome::Denied {
                reason: REASON_CANCELLED.to_owned(),
            },
        ));
        // A `Record` that must wait finishes on its own once dropped.
        drop(self.sink.value.record(&receipt));
    }

    /// Signs a denial the verifier did not make itself, records it and
    /// builds the response.
    ///
    /// Everything it writes is bounded (see [`Subject`]): the subject, the
    /// caller and tool of `ctx` and the reason are cut to
    /// [`MAX_RECEIPT_TEXT`](capnagent::MAX_RECEIPT_TEXT) bytes each.
    fn deny<R: From<Bytes>>(
        &self,
        kind: DenialKind,
        subject: Subject,
        ctx: &Context,
        reason: String,
        reply: &Reply,
    ) -> Denied<R> {
        let reason = match bounded_text(&reason) {
            std::borrow::Cow::Borrowed(_) => reason,
            std::borrow::Cow::Owned(cut) => cut,
        };
        let receipt = Arc::new(self.auditor.sign(
            subject.identifier,
            subject.caveats,
            &bounded(ctx),
            Outcome::Denied { reason },
        ));
        let record = self.sink.value.record(&receipt);
        Denied {
            record,
            response: response::denial(kind, &receipt, reply),
        }
    }
}

impl Shared {
    /// What a receipt may say about the token a request presented.
    fn token_subject(&self, token: &Token) -> Subject {
        match token {
            Token::Present { cap, uncached } => self.subject_of(cap, uncached.as_deref()),
            Token::Absent => Subject::nobody(),
        }
    }

    /// `cap`'s identifier and caveats when its chain verifies under the
    /// root key (remembered: cheap for a token seen before); otherwise only
    /// a hash of the token (`text`, as sent, when known).
    fn subject_of(&self, cap: &Capability, text: Option<&str>) -> Subject {
        if self.verifier.verify(cap).is_ok() {
            Subject {
                identifier: cap.identifier().into(),
                caveats: cap.caveats().to_vec(),
            }
        } else {
            Subject::unverified_cap(cap, text)
        }
    }
}

/// The capability a receipt the layer signs itself names.
///
/// Only a token whose chain verified under the root key is named by its
/// identifier and caveats: those of any other token are the client's own
/// claims, made without a key. A token that did not verify (forged, does
/// not parse, too long) is named `unverified:sha256:<hex of its text>`
/// ([`unverified_identifier`]), one that could not be read (a non-ASCII or
/// repeated header) `unverified:unreadable`, and no token at all `""`;
/// none of them carries caveats.
pub(crate) struct Subject {
    identifier: Arc<str>,
    caveats: Vec<Caveat>,
}

/// The identifier of a receipt about a token header that could not be
/// read as text.
pub(crate) const UNREADABLE_IDENTIFIER: &str = "unverified:unreadable";

impl Subject {
    fn nobody() -> Subject {
        Subject {
            identifier: Arc::from(""),
            caveats: Vec::new(),
        }
    }

    fn unreadable() -> Subject {
        Subject {
            identifier: Arc::from(UNREADABLE_IDENTIFIER),
            caveats: Vec::new(),
        }
    }

    /// A token (its text as sent) that did not verify.
    fn unverified(text: &str) -> Subject {
        Subject {
            identifier: unverified_identifier(text).into(),
            caveats: Vec::new(),
        }
    }

    /// A decoded token that did not verify: the text as sent when known,
    /// else its serialized form.
    fn unverified_cap(cap: &Capability, text: Option<&str>) -> Subject {
        match text {
            Some(text) => Subject::unverified(text),
            None => Subject::unverified(&cap.serialize()),
        }
    }
}

/// Why the caller or tool fact is refused as too long, if it is: longer
/// than [`MAX_RECEIPT_TEXT`](capnagent::MAX_RECEIPT_TEXT), it would make
/// every receipt of the request that long (the facts come from the
/// request).
fn over_long(caller: &str, tool: &str) -> Option<String> {
    let max = capnagent::MAX_RECEIPT_TEXT;
    if caller.len() > max {
        Some(format!(
            "the caller fact is {} bytes, over the limit of {max}",
            caller.len()
        ))
    } else if tool.len() > max {
        Some(format!(
            "the tool fact is {} bytes, over the limit of {max}",
            tool.len()
        ))
    } else {
        None
    }
}

/// The context of a denial made before the args were read: args are
/// `null` in its receipt.
fn context(now: Timestamp, caller: Arc<str>, tool: Arc<str>) -> Context {
    Context::builder()
        .timestamp(now)
        .caller(caller)
        .tool(tool)
        .args_json(JsonValue::Null)
        .build()
}

/// `ctx`, with its caller and tool cut to
/// [`MAX_RECEIPT_TEXT`](capnagent::MAX_RECEIPT_TEXT) bytes for a receipt
/// (the same context when both fit, which is the usual case).
fn bounded(ctx: &Context) -> std::borrow::Cow<'_, Context> {
    let (caller, tool) = (ctx.caller(), ctx.tool());
    let max = capnagent::MAX_RECEIPT_TEXT;
    if caller.len() <= max && tool.len() <= max {
        return std::borrow::Cow::Borrowed(ctx);
    }
    let mut builder = Context::builder()
        .timestamp(ctx.now())
        .caller(bounded_text(caller).as_ref())
        .tool(bounded_text(tool).as_ref())
        .args_json(ctx.call_args().clone());
    for (key, value) in ctx.env() {
        builder = builder.env(key, value);
    }
    std::borrow::Cow::Owned(builder.build())
}

fn extract_kind(error: &ExtractError) -> DenialKind {
    match error.kind() {
        ExtractErrorKind::BadRequest => DenialKind::BadRequest,
        ExtractErrorKind::Misconfigured => DenialKind::Misconfigured,
    }
}
