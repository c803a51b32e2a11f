//! The decision engine, the same for every protocol: reads the token (and
//! its holder-of-key proof), takes the caller and the time, asks the
//! adapter ([`Protocol`]) for the tool and the args, calls the verifier,
//! reads its typed answer ([`Gate`]), signs and records exactly one
//! receipt, and says what to do next. No I/O and no `Service` here: the
//! service and its future drive these functions, and tests can too.
//!
//! The order of gates, first failure decides:
//! 1. the token: missing, malformed;
//! 2. the adapter's head facts (the tool where the head names it) and the
//!    caller; a caller or tool fact over
//!    [`MAX_RECEIPT_TEXT`](capnagent::MAX_RECEIPT_TEXT);
//! 3. when the body must be read: the HMAC chain, so that no body is
//!    buffered for a forged token (then the body limit, in the future);
//! 4. the adapter's classification of the body (args, what it needs);
//! 5. the verifier: chain, holder key and proof (asynchronously, it may
//!    consult a nonce store), replay, revocation, caveats; a token with a
//!    budget caveat is judged asynchronously too (the verifier's budget
//!    store), except by a head-only check, where it is denied.
//!
//! A receipt the engine signs itself names the token's identifier and
//! caveats only when its chain verifies (see `Subject`); its caller, tool
//! and reason are bounded.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use capnagent::{
    Args, Auditor, BoxFuture, Capability, Context, Error, Gate, Outcome, Receipt, Timestamp,
    Verifier, bounded_text,
};
use capnagent::{JsonLimits, JsonValue};
use http::HeaderName;
use http::request::Parts;

use crate::cache::TokenCache;
use crate::extract::{CallerExtractor, Clock};
use crate::metrics::{Decided, Started, Tally};
use crate::protocol::{Call, Denial, Need, Protocol, Refusal};
use crate::receipt::{Subject, bounded, context, over_long};
use crate::sink::{ReceiptSink, Record};
use crate::token::{TokenSource, read_proof};
use crate::verified::Verified;

/// Denial reason for a request dropped before its decision (its body not
/// read yet, or its proof not checked yet).
pub const REASON_CANCELLED: &str = "request cancelled before a decision (body not fully read)";

/// Denial reason for a request without a token.
const REASON_MISSING_TOKEN: &str = "missing capability token";

/// Denial reason for a holder-bound token where proofs cannot be checked.
pub(crate) const REASON_PROOF_UNSUPPORTED: &str = "capability is bound to a holder key; a check \
     that sees only the request head cannot verify holder-of-key proofs (they cover the \
     message): protect this service with the CapabilityLayer";

/// A shared trait object that remembers the name of its concrete type, so
/// that `Debug` can say which extractor is configured.
pub(crate) struct Named<T: ?Sized> {
    pub(crate) value: Arc<T>,
    name: &'static str,
}

impl<T: ?Sized> Named<T> {
    pub(crate) fn new(value: Arc<T>, name: &'static str) -> Named<T> {
        Named { value, name }
    }
}

impl<T: ?Sized> Clone for Named<T> {
    fn clone(&self) -> Self {
        Named::new(Arc::clone(&self.value), self.name)
    }
}

impl<T: ?Sized> fmt::Debug for Named<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// `named!(value, Trait)`: `value` as a [`Named`]`<dyn Trait>`.
macro_rules! named {
    ($value:expr, $trait:path) => {{
        fn name_of<T>(_: &T) -> &'static str {
            std::any::type_name::<T>()
        }
        let value = $value;
        let name = name_of(&value);
        let value: std::sync::Arc<dyn $trait> = std::sync::Arc::new(value);
        $crate::engine::Named::new(value, name)
    }};
}
pub(crate) use named;

/// Everything a request is judged with, shared by the layer and every
/// service it builds: the keys, the sources of the facts, the sink, and
/// the protocol adapter.
#[derive(Clone)]
pub(crate) struct Engine<P> {
    pub(crate) verifier: Verifier,
    pub(crate) auditor: Auditor,
    pub(crate) sink: Named<dyn ReceiptSink>,
    pub(crate) clock: Named<dyn Clock>,
    pub(crate) caller: Named<dyn CallerExtractor>,
    pub(crate) token: TokenSource,
    pub(crate) proof_header: HeaderName,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) tokens: Arc<TokenCache>,
    pub(crate) body_limit: Option<usize>,
    /// Decision metrics (feature `metrics`; nothing otherwise).
    pub(crate) tally: Arc<Tally>,
    pub(crate) protocol: P,
}

impl<P: fmt::Debug> fmt::Debug for Engine<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys stay out of it, even redacted: the verifier and auditor are
        // named only.
        f.debug_struct("CapabilityLayer")
            .field("verifier", &format_args!(".."))
            .field("auditor", &format_args!(".."))
            .field("protocol", &self.protocol)
            .field("token", &self.token)
            .field("caller", &self.caller)
            .field("sink", &self.sink)
            .field("clock", &self.clock)
            .field("body_limit", &self.body_limit)
            .field("token_cache", &self.tokens.capacity())
            .field("proof_header", &self.proof_header)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The capability a request presented.
pub(crate) enum Token {
    Present {
        cap: Arc<Capability>,
        /// The token text, when the token is not cached yet: cached once
        /// its chain verifies.
        uncached: Option<Box<str>>,
    },
    /// None at all: only when the adapter says the request may pass
    /// without one (decided once it is classified).
    Absent,
}

/// A request whose token and caller are known, waiting for its body (or
/// for the adapter's classification).
pub(crate) struct Pending<P: Protocol> {
    token: Token,
    started: Started,
    now: Timestamp,
    caller: Arc<str>,
    head: P::Head,
}

impl<P: Protocol> Pending<P> {
    /// Whether the body must be buffered before deciding.
    pub(crate) fn reads_body(&self, protocol: &P) -> bool {
        protocol.reads_body(&self.head)
    }
}

/// A decision made: its receipt is signed and handed to the sink.
pub(crate) enum Decision<P: Protocol> {
    /// Call the inner service once `record` resolves (with `verified` in
    /// the request's extensions; `None` for a request let through without
    /// a token); refuse in `reply`'s shape if it fails.
    Allow {
        record: Record,
        verified: Option<Verified>,
        reply: P::Reply,
    },
    /// Answer with the denial once `record` resolves (whatever it says).
    Deny { record: Record, answer: P::Answer },
    /// A holder-of-key proof, or the budgets of a token with budget
    /// caveats, are being checked (asynchronously).
    Prove(Proving<P>),
}

/// The verifier's pending answer for a holder-bound capability, and what
/// is needed to act on it.
pub(crate) struct Proving<P: Protocol> {
    pub(crate) verdict: BoxFuture<'static, Result<Receipt, Error>>,
    pub(crate) judged: Judged<P>,
}

/// What [`Engine::conclude`] needs besides the verifier's answer.
pub(crate) struct Judged<P: Protocol> {
    started: Started,
    cap: Arc<Capability>,
    uncached: Option<Box<str>>,
    ctx: Context,
    need: Need,
    reply: P::Reply,
}

/// What the head alone decided: deny now, or go on.
pub(crate) enum Head<P: Protocol> {
    /// The receipt's recording and the rendered denial.
    Deny((Record, P::Answer)),
    Ready(Pending<P>),
}

/// A decision taken from the request head alone, synchronously: see
/// [`CapabilityLayer::check_head`](crate::CapabilityLayer::check_head).
#[derive(Debug)]
pub enum Checked<A> {
    /// Allowed: go on once `record` resolves (the receipt must be recorded
    /// first), with `verified` in the request's extensions.
    Allowed {
        /// The receipt's recording.
        record: Record,
        /// The allowed decision (`None` for a request the protocol lets
        /// through without a token).
        verified: Option<Verified>,
    },
    /// Denied: answer with `answer` (the receipt is recorded in the
    /// background once `record` is dropped).
    Denied {
        /// The receipt's recording.
        record: Record,
        /// The rendered denial.
        answer: A,
    },
}

impl<P: Protocol> Engine<P> {
    /// The body limit in force.
    pub(crate) fn body_limit(&self) -> usize {
        self.body_limit.unwrap_or(P::DEFAULT_BODY_LIMIT)
    }

    /// Limits for JSON parsed from a buffered body: the body limit and the
    /// verifier's nesting depth.
    pub(crate) fn json_limits(&self) -> JsonLimits {
        JsonLimits {
            max_depth: self.verifier.limits().max_json_depth,
            max_len: self.body_limit(),
        }
    }

    /// Everything that can be decided from the request head.
    pub(crate) fn head(&self, parts: &mut Parts) -> Head<P> {
        let started = Started::now();
        let now = self.clock.value.now();
        let head = self.protocol.head(parts);
        let caller = self
            .protocol
            .caller_override(parts)
            .unwrap_or(&self.caller.value)
            .extract_caller(parts);
        let early = |caller: &Result<Arc<str>, _>| {
            let tool = match &head {
                Ok(head) => self.protocol.early_tool(head),
                Err(refusal) => Arc::clone(&refusal.tool),
            };
            let caller = caller.as_ref().map_or_else(|_| Arc::from(""), Arc::clone);
            context(now, caller, tool)
        };
        let early_reply = |head: Result<P::Head, Refusal<P::Reply>>| match head {
            Ok(head) => self.protocol.early_reply(&head),
            Err(refusal) => refusal.reply,
        };

        let token = match self.token.read(parts) {
            Ok(Some(text)) => match self.tokens.get(text) {
                Some(cap) => Ok(Token::Present {
                    cap,
                    uncached: None,
                }),
                None => Capability::parse_with_limits(text, self.verifier.limits())
                    .map(|cap| Token::Present {
                        cap: Arc::new(cap),
                        uncached: Some(Box::<str>::from(text)),
                    })
                    .map_err(|e| {
                        (
                            format!("malformed capability token: {e}"),
                            Subject::unverified(text),
                        )
                    }),
            },
            Ok(None) => {
                let passes = head
                    .as_ref()
                    .is_ok_and(|head| self.protocol.may_pass_without_token(head));
                if !passes {
                    let ctx = early(&caller);
                    let reason = REASON_MISSING_TOKEN.to_owned();
                    let reply = early_reply(head);
                    return Head::Deny(self.denied(
                        started,
                        Denial::MissingToken,
                        Subject::nobody(),
                        &ctx,
                        reason,
                        reply,
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
                let ctx = early(&caller);
                let reply = early_reply(head);
                return Head::Deny(self.denied(
                    started,
                    Denial::MalformedToken,
                    subject,
                    &ctx,
                    reason,
                    reply,
                ));
            }
        };

        let (head, caller) = match (head, caller) {
            (Ok(head), Ok(caller)) => (head, caller),
            (Err(refusal), caller) => {
                let caller = caller.unwrap_or_else(|_| Arc::from(""));
                let ctx = context(now, caller, Arc::clone(&refusal.tool));
                let subject = self.token_subject(&token);
                let Refusal {
                    denial,
                    reason,
                    reply,
                    ..
                } = refusal;
                return Head::Deny(self.denied(started, denial, subject, &ctx, reason, reply));
            }
            (Ok(head), Err(error)) => {
                let ctx = context(now, Arc::from(""), self.protocol.early_tool(&head));
                let reply = self.protocol.early_reply(&head);
                let denial = Denial::of_extract(&error);
                let subject = self.token_subject(&token);
                let reason = error.message().to_owned();
                return Head::Deny(self.denied(started, denial, subject, &ctx, reason, reply));
            }
        };
        let tool = self.protocol.early_tool(&head);
        if let Some(reason) = over_long(&caller, &tool) {
            let ctx = context(now, caller, tool);
            let reply = self.protocol.early_reply(&head);
            let subject = self.token_subject(&token);
            return Head::Deny(self.denied(
                started,
                Denial::BadRequest,
                subject,
                &ctx,
                reason,
                reply,
            ));
        }

        if self.protocol.reads_body(&head)
            && let Token::Present { cap, uncached } = &mut token
            && let Some(text) = uncached.take()
        {
            // Refuse a forged token before buffering anything.
            if self.verifier.verify(cap.as_ref()).is_err() {
                let ctx = context(now, caller, tool);
                let reply = self.protocol.early_reply(&head);
                let reason = Error::InvalidChain.to_string();
                let subject = Subject::unverified(&text);
                return Head::Deny(self.denied(
                    started,
                    Denial::InvalidChain,
                    subject,
                    &ctx,
                    reason,
                    reply,
                ));
            }
            self.tokens.insert(text, Arc::clone(cap));
        }
        Head::Ready(Pending {
            token,
            started,
            now,
            caller,
            head,
        })
    }

    /// Classifies the request with the (buffered) body and asks the
    /// verifier.
    pub(crate) fn decide(
        &self,
        pending: Pending<P>,
        parts: &mut Parts,
        body: &Bytes,
    ) -> Decision<P> {
        let Pending {
            token,
            started,
            now,
            caller,
            head,
        } = pending;
        let call = match self.protocol.call(head, parts, body, &self.json_limits()) {
            Ok(call) => call,
            Err(refusal) => {
                let ctx = context(now, caller, refusal.tool);
                let subject = self.token_subject(&token);
                return self.deny(
                    started,
                    refusal.denial,
                    subject,
                    &ctx,
                    refusal.reason,
                    refusal.reply,
                );
            }
        };
        let Call {
            tool,
            args,
            need,
            reply,
        } = call;
        if let Some(reason) = over_long(&caller, &tool) {
            let ctx = context(now, caller, tool);
            let subject = self.token_subject(&token);
            return self.deny(started, Denial::InvalidParams, subject, &ctx, reason, reply);
        }
        let ctx = self.full_context(now, caller, tool, args);
        let need = match (need, &token) {
            (Need::Open, Token::Absent) => {
                // Nothing to verify: record that the request passed.
                let receipt = Arc::new(self.auditor.sign("", Vec::new(), &ctx, Outcome::Allowed));
                self.tally.decided(started, ctx.tool(), Decided::Allowed);
                let record = self.sink.value.record(&receipt);
                return Decision::Allow {
                    record,
                    verified: None,
                    reply,
                };
            }
            (_, Token::Absent) => return self.deny_missing(started, &ctx, reply),
            (Need::Refused(reason), _) => {
                let subject = self.token_subject(&token);
                let denial = Denial::Unclassified("method_denied");
                return self.deny(started, denial, subject, &ctx, reason, reply);
            }
            (Need::Open, _) => Need::Genuine,
            (need, _) => need,
        };
        self.judge(started, token, ctx, parts, need, reply, true)
    }

    /// Decides from the head alone, synchronously, with args `null` and
    /// without holder-of-key proofs (a holder-bound token is refused).
    pub(crate) fn check_head(&self, parts: &mut Parts) -> Checked<P::Answer> {
        let decision = match self.head(parts) {
            Head::Deny((record, answer)) => Decision::Deny { record, answer },
            Head::Ready(pending) => {
                let Pending {
                    token,
                    started,
                    now,
                    caller,
                    head,
                } = pending;
                let tool = self.protocol.early_tool(&head);
                let reply = self.protocol.early_reply(&head);
                let ctx = self.full_context(now, caller, tool, JsonValue::Null);
                self.judge(started, token, ctx, parts, Need::Caveats, reply, false)
            }
        };
        match decision {
            Decision::Allow {
                record, verified, ..
            } => Checked::Allowed { record, verified },
            Decision::Deny { record, answer } => Checked::Denied { record, answer },
            // `judge` without proofs never asks for one; refuse all the same.
            Decision::Prove(Proving { judged, .. }) => {
                let subject = self.subject_of(&judged.cap, None);
                let reason = REASON_PROOF_UNSUPPORTED.to_owned();
                let (record, answer) = self.denied(
                    judged.started,
                    Denial::ProofUnsupported,
                    subject,
                    &judged.ctx,
                    reason,
                    judged.reply,
                );
                Checked::Denied { record, answer }
            }
        }
    }

    /// The context the verifier judges: the facts plus the layer's `env`.
    fn full_context(
        &self,
        now: Timestamp,
        caller: Arc<str>,
        tool: Arc<str>,
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

    /// Asks the verifier about `token` in `ctx`. `proofs` is false where a
    /// proof cannot be awaited: a holder-bound token is then refused.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        started: Started,
        token: Token,
        ctx: Context,
        parts: &Parts,
        need: Need,
        reply: P::Reply,
        proofs: bool,
    ) -> Decision<P> {
        let (cap, uncached) = match token {
            Token::Present { cap, uncached } => (cap, uncached),
            Token::Absent => return self.deny_missing(started, &ctx, reply),
        };

        if cap.holder_of_key().is_some() {
            if !proofs {
                let (denial, reason) = if self.verifier.verify(&cap).is_ok() {
                    (
                        Denial::ProofUnsupported,
                        REASON_PROOF_UNSUPPORTED.to_owned(),
                    )
                } else {
                    (Denial::InvalidChain, Error::InvalidChain.to_string())
                };
                let subject = self.subject_of(&cap, uncached.as_deref());
                return self.deny(started, denial, subject, &ctx, reason, reply);
            }
            // With a proof, the proof path; without one, the bearer path
            // denies it (at the holder-key gate) exactly as the core does.
            match read_proof(&self.proof_header, parts) {
                Err(reason) => {
                    let subject = self.subject_of(&cap, uncached.as_deref());
                    return self.deny(
                        started,
                        Denial::MalformedProof,
                        subject,
                        &ctx,
                        reason,
                        reply,
                    );
                }
                Ok(Some(proof)) => {
                    let judged = Judged {
                        started,
                        cap,
                        uncached,
                        ctx,
                        need,
                        reply,
                    };
                    return self.prove(judged, |verifier, auditor, cap, ctx| async move {
                        verifier
                            .verify_with_proof(&cap, &ctx, &auditor, &proof)
                            .await
                    });
                }
                Ok(None) => {}
            }
        }

        // Budget caveats need the verifier's budget store: the asynchronous
        // path. Where nothing can be awaited (`proofs` false), the
        // synchronous path denies them.
        if proofs && self.verifier.has_budget_caveats(&cap) {
            let judged = Judged {
                started,
                cap,
                uncached,
                ctx,
                need,
                reply,
            };
            return self.prove(judged, |verifier, auditor, cap, ctx| async move {
                verifier
                    .verify_with_context_async(&cap, &ctx, &auditor)
                    .await
            });
        }

        let verdict = self.verifier.verify_with_context(&cap, &ctx, &self.auditor);
        self.conclude(
            verdict,
            Judged {
                started,
                cap,
                uncached,
                ctx,
                need,
                reply,
            },
        )
    }

    /// Hands `judged` to an asynchronous check (a holder-of-key proof, or
    /// budgets reserved in the store), run with clones of the keys and of
    /// the capability and context it judges.
    fn prove<F, Fut>(&self, judged: Judged<P>, check: F) -> Decision<P>
    where
        F: FnOnce(Verifier, Auditor, Arc<Capability>, Context) -> Fut,
        Fut: Future<Output = Result<Receipt, Error>> + Send + 'static,
    {
        let verdict = check(
            self.verifier.clone(),
            self.auditor.clone(),
            Arc::clone(&judged.cap),
            judged.ctx.clone(),
        );
        Decision::Prove(Proving {
            verdict: Box::pin(verdict),
            judged,
        })
    }

    /// Acts on the verifier's answer: records the receipt and allows or
    /// denies, by the gate that decided.
    pub(crate) fn conclude(
        &self,
        verdict: Result<Receipt, Error>,
        judged: Judged<P>,
    ) -> Decision<P> {
        let Judged {
            started,
            cap,
            uncached,
            ctx,
            need,
            reply,
        } = judged;
        match verdict {
            Ok(receipt) => {
                // The chain verified: remember the token.
                if let Some(token) = uncached {
                    self.tokens.insert(token, Arc::clone(&cap));
                }
                let gate = receipt.denied_by();
                // Only a caveat that parsed and evaluated to false shows a
                // genuine capability; a parse or eval error never does.
                let genuine = gate.is_some_and(|gate| gate.is_caveat_false());
                let receipt = if need == Need::Genuine && genuine {
                    // Genuine, which is all this request needs: the
                    // decision the layer makes (and records) is "allowed".
                    self.auditor.sign(
                        cap.identifier(),
                        receipt.caveats().to_vec(),
                        &ctx,
                        Outcome::Allowed,
                    )
                } else {
                    receipt
                };
                let receipt = Arc::new(receipt);
                let record = self.sink.value.record(&receipt);
                if receipt.is_allowed() {
                    self.tally.decided(started, ctx.tool(), Decided::Allowed);
                    let verified = Verified::new(receipt, cap, self.verifier.clone());
                    return Decision::Allow {
                        record,
                        verified: Some(verified),
                        reply,
                    };
                }
                let denial = Denial::Verifier(gate);
                self.explain_denial(&cap, &ctx, &receipt);
                self.tally
                    .decided(started, ctx.tool(), Decided::Denied(&denial));
                let answer = self.protocol.deny(denial, &receipt, &reply);
                Decision::Deny { record, answer }
            }
            Err(error) => {
                let (denial, subject) = match error.gate() {
                    Some(Gate::Chain) => (
                        Denial::InvalidChain,
                        Subject::unverified_cap(&cap, uncached.as_deref()),
                    ),
                    _ => (
                        Denial::Misconfigured,
                        self.subject_of(&cap, uncached.as_deref()),
                    ),
                };
                self.deny(started, denial, subject, &ctx, error.to_string(), reply)
            }
        }
    }

    /// At debug level (target `capnagent::explain`), explains a denied
    /// decision caveat by caveat: the values each comparison compared
    /// ([`capnagent::Explanation`]). Computed only when that level is
    /// enabled. The gate and reason logged are the receipt's (the decision
    /// made, on the proof path too); the explanation adds the caveats. No
    /// key or signature is logged; the call's facts are.
    fn explain_denial(&self, cap: &Capability, ctx: &Context, receipt: &Receipt) {
        if !tracing::enabled!(target: "capnagent::explain", tracing::Level::DEBUG) {
            return;
        }
        let caveats = match self.verifier.explain(cap, ctx) {
            Ok(explanation) => explanation.caveats_text(),
            Err(e) => format!("no explanation: {e}"),
        };
        tracing::debug!(
            target: "capnagent::explain",
            capability_id = cap.identifier(),
            tool = ctx.tool(),
            gate = receipt.denied_by().map(|g| g.code()),
            reason = receipt.outcome().reason(),
            caveats = %caveats,
            "denied"
        );
    }

    /// Denies a pending request before its args were read (body too large
    /// or unreadable).
    pub(crate) fn deny_pending(
        &self,
        pending: Pending<P>,
        denial: Denial,
        reason: String,
    ) -> Decision<P> {
        let tool = self.protocol.early_tool(&pending.head);
        let ctx = context(pending.now, pending.caller, tool);
        let reply = self.protocol.early_reply(&pending.head);
        let subject = self.token_subject(&pending.token);
        self.deny(pending.started, denial, subject, &ctx, reason, reply)
    }

    /// Records a request dropped before its body was read: denied, no
    /// answer to build.
    pub(crate) fn cancel_pending(&self, pending: Pending<P>) {
        let tool = self.protocol.early_tool(&pending.head);
        let ctx = context(pending.now, pending.caller, tool);
        let subject = self.token_subject(&pending.token);
        self.record_cancelled(pending.started, subject, &ctx);
    }

    /// Records a request dropped while its proof was checked.
    pub(crate) fn cancel_judged(&self, judged: &Judged<P>) {
        let subject = self.subject_of(&judged.cap, None);
        self.record_cancelled(judged.started, subject, &bounded(&judged.ctx));
    }

    fn record_cancelled(&self, started: Started, subject: Subject, ctx: &Context) {
        self.tally.decided(started, ctx.tool(), Decided::Cancelled);
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
    /// renders it. Everything it writes is bounded (see [`Subject`]): the
    /// subject, the caller and tool of `ctx` and the reason are cut to
    /// [`MAX_RECEIPT_TEXT`](capnagent::MAX_RECEIPT_TEXT) bytes each.
    fn deny(
        &self,
        started: Started,
        denial: Denial,
        subject: Subject,
        ctx: &Context,
        reason: String,
        reply: P::Reply,
    ) -> Decision<P> {
        let (record, answer) = self.denied(started, denial, subject, ctx, reason, reply);
        Decision::Deny { record, answer }
    }

    /// Denies a request that presented no token where it needs one.
    fn deny_missing(&self, started: Started, ctx: &Context, reply: P::Reply) -> Decision<P> {
        let reason = REASON_MISSING_TOKEN.to_owned();
        self.deny(
            started,
            Denial::MissingToken,
            Subject::nobody(),
            ctx,
            reason,
            reply,
        )
    }

    /// [`deny`](Self::deny)'s receipt record and answer.
    fn denied(
        &self,
        started: Started,
        denial: Denial,
        subject: Subject,
        ctx: &Context,
        reason: String,
        reply: P::Reply,
    ) -> (Record, P::Answer) {
        let reason = match bounded_text(&reason) {
            Cow::Borrowed(_) => reason,
            Cow::Owned(cut) => cut,
        };
        let receipt = Arc::new(self.auditor.sign(
            subject.identifier,
            subject.caveats,
            &bounded(ctx),
            Outcome::Denied { reason },
        ));
        self.tally
            .decided(started, ctx.tool(), Decided::Denied(&denial));
        let record = self.sink.value.record(&receipt);
        (record, self.protocol.deny(denial, &receipt, &reply))
    }

    /// What a receipt may say about the token a request presented.
    fn token_subject(&self, token: &Token) -> Subject {
        match token {
            Token::Present { cap, uncached } => self.subject_of(cap, uncached.as_deref()),
            Token::Absent => Subject::nobody(),
        }
    }

    /// `cap`'s identifier and caveats when its chain verifies under the
    /// root key; otherwise only a hash of the token (`text`, as sent, when
    /// known).
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

#[cfg(test)]
mod tests {
    //! The engine driven directly, from a request head and body bytes,
    //! with a protocol whose "rendering" is the typed denial itself.
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use capnagent::{CaveatFailure, HolderKey, Issuer, Proof};

    use super::*;
    use crate::layer::CapabilityLayer;
    use crate::sink::SinkError;

    const ROOT: [u8; 32] = [7; 32];

    /// Tool `t`; args: the body as JSON when `body` is set, else `null`;
    /// a denial "renders" as itself and its reason.
    #[derive(Debug, Clone)]
    struct Bare {
        body: bool,
        need: Need,
    }

    impl Protocol for Bare {
        type Head = ();
        type Reply = ();
        type Answer = (Denial, String);

        const DEFAULT_BODY_LIMIT: usize = 1024;

        fn head(&self, _parts: &mut Parts) -> Result<(), Refusal<()>> {
            Ok(())
        }

        fn reads_body(&self, _head: &()) -> bool {
            self.body
        }

        fn early_tool(&self, _head: &()) -> Arc<str> {
            Arc::from("t")
        }

        fn early_reply(&self, _head: &()) {}

        fn may_pass_without_token(&self, _head: &()) -> bool {
            self.need == Need::Open
        }

        fn call(
            &self,
            _head: (),
            _parts: &mut Parts,
            body: &Bytes,
            limits: &JsonLimits,
        ) -> Result<Call<()>, Refusal<()>> {
            let args = if self.body {
                capnagent::JsonValue::parse_bytes(body, limits).map_err(|e| Refusal {
                    denial: Denial::BadRequest,
                    reason: e.to_string(),
                    tool: Arc::from("t"),
                    reply: (),
                })?
            } else {
                JsonValue::Null
            };
            Ok(Call {
                tool: Arc::from("t"),
                args: args.into(),
                need: self.need.clone(),
                reply: (),
            })
        }

        fn deny(&self, denial: Denial, receipt: &Receipt, _reply: &()) -> (Denial, String) {
            let reason = receipt.outcome().reason().unwrap_or("").to_owned();
            (denial, reason)
        }

        fn unavailable(error: &SinkError, _reply: &()) -> (Denial, String) {
            (Denial::Misconfigured, error.reason().to_owned())
        }
    }

    type Receipts = Arc<Mutex<Vec<Receipt>>>;

    fn engine(body: bool, need: Need) -> (Arc<Engine<Bare>>, Receipts) {
        engine_with(Verifier::new(&ROOT).unwrap(), body, need)
    }

    fn engine_with(verifier: Verifier, body: bool, need: Need) -> (Arc<Engine<Bare>>, Receipts) {
        let receipts: Receipts = Arc::default();
        let sink = Arc::clone(&receipts);
        let layer = CapabilityLayer::with_protocol(
            verifier,
            Auditor::new(&[9; 32]).unwrap(),
            Bare { body, need },
        )
        .unwrap()
        .caller(crate::Anonymous)
        .sink(move |r: &Receipt| sink.lock().unwrap().push(r.clone()));
        (layer.engine, receipts)
    }

    fn token(key: &[u8; 32], caveats: &[&str], holder: Option<&HolderKey>) -> String {
        let issuer = Issuer::from_key(key).unwrap();
        let mut builder = issuer.issue("agent");
        if let Some(holder) = holder {
            builder.holder_of_key(holder.public_key()).unwrap();
        }
        for caveat in caveats {
            builder.caveat(caveat).unwrap();
        }
        builder.build().unwrap().serialize()
    }

    fn parts(token: Option<&str>) -> Parts {
        let mut request = http::Request::post("/t");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(()).unwrap().into_parts().0
    }

    /// Head, then the body: the decision.
    fn decide(engine: &Engine<Bare>, token: Option<&str>, body: &str) -> Decision<Bare> {
        let mut parts = parts(token);
        match engine.head(&mut parts) {
            Head::Deny((record, answer)) => Decision::Deny { record, answer },
            Head::Ready(pending) => {
                engine.decide(pending, &mut parts, &Bytes::from(body.to_owned()))
            }
        }
    }

    fn denial(decision: Decision<Bare>) -> (Denial, String) {
        match decision {
            Decision::Deny { answer, .. } => answer,
            Decision::Allow { .. } => panic!("allowed"),
            Decision::Prove(_) => panic!("proving"),
        }
    }

    #[test]
    fn allows_within_the_caveats_and_records_once() {
        let (engine, receipts) = engine(true, Need::Caveats);
        let token = token(&ROOT, &["arg.n <= 5"], None);
        match decide(&engine, Some(&token), r#"{"n":3}"#) {
            Decision::Allow {
                verified: Some(verified),
                record,
                ..
            } => {
                assert!(record.is_done());
                assert_eq!(verified.receipt().context_summary().tool(), "t");
            }
            _ => panic!("not allowed"),
        }
        assert_eq!(receipts.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_caveat_denial_names_its_gate() {
        let (engine, receipts) = engine(true, Need::Caveats);
        let token = token(&ROOT, &["arg.n <= 5"], None);
        let (denial, reason) = denial(decide(&engine, Some(&token), r#"{"n":9}"#));
        let gate = Gate::Caveat {
            index: 0,
            failure: CaveatFailure::False,
        };
        assert_eq!(denial, Denial::Verifier(Some(gate)));
        assert_eq!(reason, "caveat failed: arg.n <= 5");
        assert_eq!(receipts.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_head_denies_missing_malformed_and_forged_tokens() {
        let (engine, receipts) = engine(true, Need::Caveats);
        let cases = [
            (None, Denial::MissingToken),
            (Some("not-a-token".to_owned()), Denial::MalformedToken),
            (
                Some(token(&[8; 32], &["arg.n <= 5"], None)),
                Denial::InvalidChain,
            ),
        ];
        for (token, expected) in cases {
            let mut parts = parts(token.as_deref());
            let Head::Deny((_, (denial, _))) = engine.head(&mut parts) else {
                panic!("{expected:?}: not denied from the head");
            };
            assert_eq!(denial, expected);
        }
        let receipts = receipts.lock().unwrap();
        assert_eq!(receipts.len(), 3);
        // A forged token is named by its hash only.
        assert!(
            receipts[2]
                .capability_identifier()
                .starts_with("unverified:sha256:")
        );
        assert!(receipts[2].caveats().is_empty());
    }

    #[test]
    fn a_genuine_capability_is_all_a_bookkeeping_message_needs() {
        let (engine, receipts) = engine(false, Need::Genuine);
        let token = token(&ROOT, &[r#"tool == "other""#], None);
        assert!(matches!(
            decide(&engine, Some(&token), ""),
            Decision::Allow { .. }
        ));
        assert!(receipts.lock().unwrap()[0].is_allowed());
        // A caveat that cannot be evaluated is not "genuine".
        let token = self::token(&ROOT, &["arg.n <= 5"], None);
        let (denial, _) = denial(decide(&engine, Some(&token), ""));
        assert!(
            matches!(denial, Denial::Verifier(Some(gate)) if gate.is_caveat() && !gate.is_caveat_false())
        );
    }

    #[test]
    fn an_open_request_passes_without_a_token_and_is_recorded() {
        let (engine, receipts) = engine(false, Need::Open);
        match decide(&engine, None, "") {
            Decision::Allow { verified, .. } => assert!(verified.is_none()),
            _ => panic!("not allowed"),
        }
        assert_eq!(receipts.lock().unwrap()[0].capability_identifier(), "");
    }

    #[test]
    fn bound_tokens_are_proved_asynchronously_or_refused_by_a_head_check() {
        let (engine, receipts) = engine(false, Need::Caveats);
        let holder = HolderKey::from_seed([3; 32]);
        let token = token(&ROOT, &[r#"tool == "t""#], Some(&holder));

        // Without a proof: the verifier's holder-key gate.
        let (denial, _) = denial(decide(&engine, Some(&token), ""));
        assert_eq!(denial, Denial::Verifier(Some(Gate::HolderKey)));

        // With one: the proof path.
        let mut parts = parts(Some(&token));
        let proof = Proof::new(1, [0; 64]).encode();
        parts
            .headers
            .insert("capnagent-proof", proof.parse().unwrap());
        let Head::Ready(pending) = engine.head(&mut parts) else {
            panic!("denied from the head");
        };
        assert!(matches!(
            engine.decide(pending, &mut parts, &Bytes::new()),
            Decision::Prove(_)
        ));

        // A head-only check cannot prove: refused.
        let mut parts = self::parts(Some(&token));
        match engine.check_head(&mut parts) {
            Checked::Denied { answer, .. } => assert_eq!(answer.0, Denial::ProofUnsupported),
            Checked::Allowed { .. } => panic!("allowed"),
        }
        assert_eq!(receipts.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn budget_tokens_are_judged_asynchronously_or_refused_by_a_head_check() {
        let store = Arc::new(capnagent::InMemoryBudgetStore::new());
        let verifier = Verifier::new(&ROOT).unwrap().with_budget_store(store);
        let (engine, receipts) = engine_with(verifier, false, Need::Caveats);
        let token = token(&ROOT, &[r#"tool == "t""#, "calls <= 1"], None);
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let Decision::Prove(Proving { verdict, judged }) = decide(&engine, Some(&token), "")
            else {
                panic!("a budget token must take the asynchronous path");
            };
            outcomes.push(match engine.conclude(verdict.await, judged) {
                Decision::Allow { .. } => None,
                Decision::Deny { answer, .. } => Some(answer),
                Decision::Prove(_) => panic!("proving twice"),
            });
        }
        let budget = Gate::Caveat {
            index: 1,
            failure: CaveatFailure::BudgetExhausted,
        };
        assert_eq!(
            outcomes,
            [
                None,
                Some((
                    Denial::Verifier(Some(budget)),
                    "budget exhausted: calls <= 1 (used 1 of 1)".to_owned()
                ))
            ]
        );

        // A head-only check cannot wait for the store: refused.
        let mut parts = self::parts(Some(&token));
        match engine.check_head(&mut parts) {
            Checked::Denied { answer, .. } => assert_eq!(
                answer.0,
                Denial::Verifier(Some(Gate::Caveat {
                    index: 1,
                    failure: CaveatFailure::BudgetUnavailable
                }))
            ),
            Checked::Allowed { .. } => panic!("allowed"),
        }
        // A token without budgets is still decided synchronously.
        let plain = self::token(&ROOT, &[r#"tool == "t""#], None);
        assert!(matches!(
            decide(&engine, Some(&plain), ""),
            Decision::Allow { .. }
        ));
        assert_eq!(receipts.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_cancelled_request_leaves_one_denied_receipt() {
        let (engine, receipts) = engine(true, Need::Caveats);
        let token = token(&ROOT, &["arg.n <= 5"], None);
        let Head::Ready(pending) = engine.head(&mut parts(Some(&token))) else {
            panic!("denied from the head");
        };
        engine.cancel_pending(pending);
        let receipts = receipts.lock().unwrap();
        assert_eq!(receipts[0].outcome().reason(), Some(REASON_CANCELLED));
        assert_eq!(receipts[0].capability_identifier(), "agent");
    }
}
