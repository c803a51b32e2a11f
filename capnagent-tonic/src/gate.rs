//! The checks shared by [`CapabilityLayer`](crate::CapabilityLayer) and
//! [`CapabilityInterceptor`](crate::CapabilityInterceptor): read the token
//! and the proof, gather the caller, verify, sign, record.
//!
//! Order of gates for one call, first failure decides:
//! 1. the token: missing, or malformed (`UNAUTHENTICATED`);
//! 2. the caller fact (`INTERNAL` for a wiring bug, `INVALID_ARGUMENT`
//!    for an unreadable fact);
//! 3. the HMAC chain (`UNAUTHENTICATED`), before any body is read;
//! 4. a holder-bound token: its proof must be present and well formed
//!    (`UNAUTHENTICATED`);
//! 5. the args (the layer: `RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`);
//! 6. the verifier: proof, replay, revocation, caveats
//!    (`PERMISSION_DENIED`).
//!
//! Every path signs exactly one receipt and hands it to the sink. A receipt
//! names a token by its identifier and caveats only when its chain verified;
//! any other token is `unverified:sha256:<hex of its text>` (or
//! `unverified:unreadable` when its metadata is not text), without
//! caveats: a client without a key chooses nothing that is signed. A caller
//! or tool fact over [`MAX_RECEIPT_TEXT`] bytes is refused
//! (`INVALID_ARGUMENT`), and the texts of a denial are cut to that bound.

use std::fmt;
use std::sync::Arc;

use capnagent::JsonValue;
use capnagent::{
    Auditor, Capability, Caveat, Context, Error, MAX_RECEIPT_TEXT, Outcome, Proof,
    REASON_HOLDER_KEY_BOUND, Receipt, Timestamp, Verifier, bounded_text, unverified_identifier,
};
use capnagent_tower::{
    CallerExtension, CallerExtractor, Clock, ExtractError, ExtractErrorKind, ReceiptSink, Record,
    SystemClock, TokenSource, TracingSink,
};
use http::HeaderName;
use http::request::Parts;
use tonic::Status;

use crate::status::{self, DenialKind};
use crate::verified::Verified;

/// Default metadata key of the holder-of-key proof.
pub const PROOF_METADATA: &str = "capnagent-proof";

/// Denial reason for a call dropped before a decision.
pub(crate) const REASON_CANCELLED: &str =
    "call cancelled before a decision (request message not fully read)";

/// Configuration shared by every call.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) verifier: Verifier,
    pub(crate) auditor: Auditor,
    pub(crate) sink: Named<dyn ReceiptSink>,
    pub(crate) clock: Named<dyn Clock>,
    pub(crate) caller: Named<dyn CallerExtractor>,
    pub(crate) token: TokenSource,
    pub(crate) proof_key: HeaderName,
    pub(crate) env: Vec<(String, String)>,
}

/// A shared trait object that remembers its concrete type's name for
/// `Debug`.
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
        let value: std::sync::Arc<dyn $trait> = std::sync::Arc::new(value);
        $crate::gate::Named::new(value, name)
    }};
}
pub(crate) use named;

impl<T: ?Sized> Named<T> {
    pub(crate) fn new(value: Arc<T>, name: &'static str) -> Named<T> {
        Named { value, name }
    }
}

/// A call whose token parsed and whose chain verified, with its facts so
/// far; waiting for its args and the verifier.
pub(crate) struct Admitted {
    pub(crate) cap: Arc<Capability>,
    pub(crate) proof: Option<Proof>,
    pub(crate) now: Timestamp,
    pub(crate) caller: Arc<str>,
    pub(crate) tool: String,
}

/// A denial: its receipt is signed and handed to the sink.
pub(crate) struct Denial {
    pub(crate) record: Record,
    pub(crate) status: Status,
}

/// The decision about one call.
pub(crate) enum Verdict {
    Allow { record: Record, verified: Verified },
    Deny(Denial),
}

impl Gate {
    /// Refuses an auditor that signs with the root key (see
    /// [`Verifier::check_audit_key`]).
    pub(crate) fn new(verifier: Verifier, auditor: Auditor) -> Result<Gate, Error> {
        verifier.check_audit_key(&auditor)?;
        Ok(Gate {
            verifier,
            auditor,
            sink: named!(TracingSink, ReceiptSink),
            clock: named!(SystemClock, Clock),
            caller: named!(CallerExtension, CallerExtractor),
            token: TokenSource::Bearer,
            proof_key: HeaderName::from_static(PROOF_METADATA),
            env: Vec::new(),
        })
    }

    /// Gates 1–4. `proofs` is false where a proof cannot be checked (the
    /// interceptor): a holder-bound token is then refused.
    pub(crate) fn admit(
        &self,
        parts: &mut Parts,
        tool: String,
        proofs: bool,
    ) -> Result<Admitted, Denial> {
        let now = self.clock.value.now();
        let caller = self.caller.value.extract_caller(parts);
        let caller_fact = || caller.as_ref().map_or_else(|_| Arc::from(""), Arc::clone);

        let token = match read_token(&self.token, parts) {
            Ok(Some(token)) => token,
            Ok(None) => {
                let ctx = facts(now, caller_fact(), tool);
                return Err(self.deny(
                    DenialKind::MissingToken,
                    Subject::nobody(),
                    &ctx,
                    "missing capability token".to_owned(),
                ));
            }
            Err(why) => {
                let ctx = facts(now, caller_fact(), tool);
                return Err(self.deny(
                    DenialKind::MalformedToken,
                    Subject::unreadable(),
                    &ctx,
                    format!("malformed capability token: {why}"),
                ));
            }
        };
        let cap = match Capability::parse_with_limits(token, self.verifier.limits()) {
            Ok(cap) => Arc::new(cap),
            Err(e) => {
                let ctx = facts(now, caller_fact(), tool);
                return Err(self.deny(
                    DenialKind::MalformedToken,
                    Subject::unverified(token),
                    &ctx,
                    format!("malformed capability token: {e}"),
                ));
            }
        };
        // The chain, checked once here, decides what receipts may say; the
        // subject is built only for a denial, never on the allowed path.
        let verified = self.verifier.verify(&cap).is_ok();
        let subject = || {
            if verified {
                Subject::verified(&cap)
            } else {
                Subject::unverified(token)
            }
        };

        let caller = match caller {
            Ok(caller) => caller,
            Err(error) => {
                let ctx = facts(now, Arc::from(""), tool);
                return Err(self.deny(
                    extract_kind(&error),
                    subject(),
                    &ctx,
                    error.message().to_owned(),
                ));
            }
        };
        if let Some(reason) = over_long(&caller, &tool) {
            let ctx = facts(now, caller, tool);
            return Err(self.deny(DenialKind::InvalidArgument, subject(), &ctx, reason));
        }

        // Refuse a forged token before reading any message.
        if !verified {
            let ctx = facts(now, caller, tool);
            return Err(self.deny(
                DenialKind::InvalidChain,
                subject(),
                &ctx,
                Error::InvalidChain.to_string(),
            ));
        }

        let proof = if cap.holder_of_key().is_none() {
            None
        } else if !proofs {
            let ctx = facts(now, caller, tool);
            return Err(self.deny_cap(
                DenialKind::ProofUnsupported,
                &cap,
                &ctx,
                "capability is bound to a holder key; the interceptor cannot check \
                 holder-of-key proofs (it never sees the message they cover): protect \
                 this service with capnagent_tonic::CapabilityLayer"
                    .to_owned(),
            ));
        } else {
            match read_proof(&self.proof_key, parts) {
                Ok(proof) => Some(proof),
                Err(reason) => {
                    let ctx = facts(now, caller, tool);
                    return Err(self.deny_cap(DenialKind::MissingProof, &cap, &ctx, reason));
                }
            }
        };

        Ok(Admitted {
            cap,
            proof,
            now,
            caller,
            tool,
        })
    }

    fn context(&self, admitted: &Admitted, args: JsonValue) -> Context {
        let mut builder = Context::builder()
            .timestamp(admitted.now)
            .caller(Arc::clone(&admitted.caller))
            .tool(admitted.tool.as_str())
            .args_json(args);
        for (key, value) in &self.env {
            builder = builder.env(key.as_str(), value.as_str());
        }
        builder.build()
    }

    /// Gate 6 for a bearer token: synchronous.
    pub(crate) fn decide_bearer(&self, admitted: &Admitted, args: JsonValue) -> Verdict {
        let ctx = self.context(admitted, args);
        let result = self
            .verifier
            .verify_with_context(&admitted.cap, &ctx, &self.auditor);
        self.finish(admitted, &ctx, result)
    }

    /// Gate 6, with the holder-of-key proof when the token is bound (the
    /// nonce store may be consulted).
    pub(crate) async fn decide(&self, admitted: &Admitted, args: JsonValue) -> Verdict {
        let Some(proof) = &admitted.proof else {
            return self.decide_bearer(admitted, args);
        };
        let ctx = self.context(admitted, args);
        let result = self
            .verifier
            .verify_with_proof(&admitted.cap, &ctx, &self.auditor, proof)
            .await;
        self.finish(admitted, &ctx, result)
    }

    fn finish(
        &self,
        admitted: &Admitted,
        ctx: &Context,
        result: Result<Receipt, Error>,
    ) -> Verdict {
        match result {
            Ok(receipt) => {
                let receipt = Arc::new(receipt);
                let record = self.sink.value.record(&receipt);
                if receipt.is_allowed() {
                    Verdict::Allow {
                        record,
                        verified: Verified::new(receipt, Arc::clone(&admitted.cap)),
                    }
                } else {
                    Verdict::Deny(Denial {
                        record,
                        status: status::denial(DenialKind::Denied, &receipt),
                    })
                }
            }
            Err(Error::InvalidChain) => Verdict::Deny(self.deny_cap(
                DenialKind::InvalidChain,
                &admitted.cap,
                ctx,
                Error::InvalidChain.to_string(),
            )),
            Err(other) => Verdict::Deny(self.deny_cap(
                DenialKind::Misconfigured,
                &admitted.cap,
                ctx,
                other.to_string(),
            )),
        }
    }

    /// Denies an admitted call before its args were read (args `null` in
    /// the receipt).
    pub(crate) fn deny_admitted(
        &self,
        admitted: &Admitted,
        kind: DenialKind,
        reason: String,
    ) -> Denial {
        let ctx = facts(admitted.now, admitted.caller.clone(), admitted.tool.clone());
        self.deny_cap(kind, &admitted.cap, &ctx, reason)
    }

    /// Records a call dropped before its decision: denied, no status to
    /// send. A `Record` that must wait finishes on its own once dropped.
    pub(crate) fn cancel(&self, admitted: &Admitted) {
        let denial = self.deny_admitted(admitted, DenialKind::Denied, REASON_CANCELLED.to_owned());
        drop(denial.record);
    }

    /// Denies with `cap` named only if its chain verifies (an admitted
    /// call's always does: [`Gate::admit`] refuses any other).
    fn deny_cap(
        &self,
        kind: DenialKind,
        cap: &Capability,
        ctx: &Context,
        reason: String,
    ) -> Denial {
        let subject = if self.verifier.verify(cap).is_ok() {
            Subject::verified(cap)
        } else {
            Subject::unverified(&cap.serialize())
        };
        self.deny(kind, subject, ctx, reason)
    }

    /// Signs a denial the verifier did not make itself, and records it.
    /// Its caller, tool and reason are cut to [`MAX_RECEIPT_TEXT`] bytes.
    fn deny(&self, kind: DenialKind, subject: Subject, ctx: &Context, reason: String) -> Denial {
        let reason = match bounded_text(&reason) {
            std::borrow::Cow::Borrowed(_) => reason,
            std::borrow::Cow::Owned(cut) => cut,
        };
        let ctx = Context::builder()
            .timestamp(ctx.now())
            .caller(bounded_text(ctx.caller()).as_ref())
            .tool(bounded_text(ctx.tool()).as_ref())
            .args_json(ctx.call_args().clone())
            .build();
        let receipt = Arc::new(self.auditor.sign(
            subject.identifier,
            subject.caveats,
            &ctx,
            Outcome::Denied { reason },
        ));
        Denial {
            record: self.sink.value.record(&receipt),
            status: status::denial(kind, &receipt),
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys stay out of it: the verifier and auditor are named only.
        f.debug_struct("Gate")
            .field("verifier", &format_args!(".."))
            .field("auditor", &format_args!(".."))
            .field("token", &self.token)
            .field("proof_key", &self.proof_key)
            .field("caller", &self.caller)
            .field("sink", &self.sink)
            .field("clock", &self.clock)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The capability a receipt the gate signs itself names: see the module
/// docs.
struct Subject {
    identifier: Arc<str>,
    caveats: Vec<Caveat>,
}

impl Subject {
    fn nobody() -> Subject {
        Subject {
            identifier: Arc::from(""),
            caveats: Vec::new(),
        }
    }

    fn unreadable() -> Subject {
        Subject {
            identifier: Arc::from("unverified:unreadable"),
            ..Subject::nobody()
        }
    }

    fn unverified(token: &str) -> Subject {
        Subject {
            identifier: unverified_identifier(token).into(),
            ..Subject::nobody()
        }
    }

    fn verified(cap: &Capability) -> Subject {
        Subject {
            identifier: cap.identifier().into(),
            caveats: cap.caveats().to_vec(),
        }
    }
}

/// Why the caller or tool fact is refused as too long, if it is (the tool
/// of an unnamed method is its path, which the client chooses).
fn over_long(caller: &str, tool: &str) -> Option<String> {
    if caller.len() > MAX_RECEIPT_TEXT {
        Some(format!(
            "the caller fact is {} bytes, over the limit of {MAX_RECEIPT_TEXT}",
            caller.len()
        ))
    } else if tool.len() > MAX_RECEIPT_TEXT {
        Some(format!(
            "the tool fact is {} bytes, over the limit of {MAX_RECEIPT_TEXT}",
            tool.len()
        ))
    } else {
        None
    }
}

/// The context of a denial made before the args were read.
fn facts(now: Timestamp, caller: Arc<str>, tool: String) -> Context {
    Context::builder()
        .timestamp(now)
        .caller(caller)
        .tool(tool)
        .args_json(JsonValue::Null)
        .build()
}

fn extract_kind(error: &ExtractError) -> DenialKind {
    match error.kind() {
        ExtractErrorKind::BadRequest => DenialKind::InvalidArgument,
        _ => DenialKind::Misconfigured,
    }
}

/// The token text from the metadata. `Ok(None)` when there is none.
fn read_token<'a>(source: &TokenSource, parts: &'a Parts) -> Result<Option<&'a str>, &'static str> {
    let (name, bearer) = match source {
        TokenSource::Bearer => (&http::header::AUTHORIZATION, true),
        TokenSource::Header(name) => (name, false),
        _ => return Err("unsupported token source"),
    };
    let mut values = parts.headers.get_all(name).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(_), Some(_)) => return Err("more than one token metadata value"),
        (Some(value), None) => value,
    };
    let text = value
        .to_str()
        .map_err(|_| "token metadata is not visible ASCII")?
        .trim();
    if !bearer {
        return Ok(Some(text));
    }
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(Some(token.trim_start()))
        }
        _ => Err("expected `authorization: Bearer <token>`"),
    }
}

/// The holder-of-key proof from the metadata, or the denial reason: for a
/// missing proof the engine's own ([`REASON_HOLDER_KEY_BOUND`], as its
/// bearer path and the HTTP layer say it), for a malformed one the HTTP
/// layer's wording.
fn read_proof(key: &HeaderName, parts: &Parts) -> Result<Proof, String> {
    let mut values = parts.headers.get_all(key).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(REASON_HOLDER_KEY_BOUND.to_owned()),
        (Some(_), Some(_)) => {
            return Err("malformed holder-of-key proof: more than one value".to_owned());
        }
        (Some(value), None) => value,
    };
    value
        .to_str()
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|text| Proof::decode(text).map_err(|e| e.to_string()))
        .map_err(|why| format!("malformed holder-of-key proof: {why}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder();
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_token_from_metadata() {
        let p = parts(&[("authorization", "bearer  abc ")]);
        assert_eq!(read_token(&TokenSource::Bearer, &p), Ok(Some("abc")));
        let p = parts(&[("authorization", "Basic abc")]);
        assert!(read_token(&TokenSource::Bearer, &p).is_err());
        let p = parts(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(read_token(&TokenSource::Bearer, &p).is_err());
        let p = parts(&[("x-capability", "abc")]);
        let source = TokenSource::header(HeaderName::from_static("x-capability"));
        assert_eq!(read_token(&source, &p), Ok(Some("abc")));
        assert_eq!(read_token(&TokenSource::Bearer, &p), Ok(None));
    }

    #[test]
    fn proof_must_be_one_well_formed_value() {
        let key = HeaderName::from_static(PROOF_METADATA);
        let proof = Proof::new(5, [1; 64]);
        let p = parts(&[(PROOF_METADATA, &proof.encode())]);
        assert_eq!(read_proof(&key, &p).unwrap(), proof);
        assert_eq!(
            read_proof(&key, &parts(&[])).unwrap_err(),
            REASON_HOLDER_KEY_BOUND
        );
        let malformed = read_proof(&key, &parts(&[(PROOF_METADATA, "t=1;sig=AA")]));
        assert!(
            malformed
                .unwrap_err()
                .starts_with("malformed holder-of-key proof: ")
        );
    }
}
