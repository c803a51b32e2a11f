//! The receipt: [`Receipt`] (one signed record of a decision), its
//! [`Outcome`] and [`ContextSummary`], and its wire form, the compact JSON
//! and the canonical signing input, byte-compatible with the reference
//! 0.7.4 package. Signing and checking live in [`auditor`](crate::Auditor);
//! keeping receipts in a file lives in [`AuditLog`](crate::AuditLog).
//!
//! A receipt is HMAC-SHA256 under an *audit* key (separate from the root
//! key) over `"v" || version || canonical JSON of the receipt without its
//! signature`. Its fields are written in a fixed order by hand (the shape
//! never varies), with the strings escaped by the one JSON escaper.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::capability::{Caveat, CaveatList};
use crate::context::Context;
use crate::crypto::{self, HexArrayError, Tag};
use crate::error::ReceiptError;
use crate::gate::Gate;
use crate::json::{JsonSink, write_escaped_str};

/// The receipt schema version this crate writes and accepts.
pub const RECEIPT_SCHEMA_VERSION: u8 = 1;

/// The decision a receipt records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call may proceed.
    Allowed,
    /// The call was refused.
    Denied {
        /// Why, in the reference's exact wording (for example
        /// `caveat failed: arg.amount_cents <= 5000`).
        reason: String,
    },
}

impl Outcome {
    /// True for [`Outcome::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Outcome::Allowed)
    }

    /// The denial reason, if denied.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Allowed => None,
            Outcome::Denied { reason } => Some(reason),
        }
    }
}

/// What a receipt records about the call: never the arguments themselves,
/// only their canonical hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextSummary {
    // Shared with the context (and every receipt of it).
    pub(crate) caller: Arc<str>,
    pub(crate) tool: Arc<str>,
    pub(crate) args_hash: String,
}

impl ContextSummary {
    /// Summarizes a context.
    pub fn of(ctx: &Context) -> ContextSummary {
        let (caller, tool) = ctx.caller_and_tool();
        ContextSummary {
            caller,
            tool,
            args_hash: ctx.args_hash(),
        }
    }

    /// The caller.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The tool.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// Lowercase hex SHA-256 of the canonical arguments.
    pub fn args_hash(&self) -> &str {
        &self.args_hash
    }
}

/// A signed record of one decision.
#[derive(Clone)]
pub struct Receipt {
    pub(crate) version: u8,
    pub(crate) capability_identifier: Arc<str>,
    pub(crate) caveats: CaveatList,
    pub(crate) context_summary: ContextSummary,
    pub(crate) outcome: Outcome,
    pub(crate) timestamp_ms: u64,
    pub(crate) signature: Tag,
    // Not part of the wire form: known only to the process that decided.
    pub(crate) denied_by: Option<Gate>,
}

/// Equal when the signed fields are equal; [`Receipt::denied_by`] is not
/// part of a receipt's wire form and is not compared.
impl PartialEq for Receipt {
    fn eq(&self, other: &Receipt) -> bool {
        self.version == other.version
            && self.capability_identifier == other.capability_identifier
            && self.caveats == other.caveats
            && self.context_summary == other.context_summary
            && self.outcome == other.outcome
            && self.timestamp_ms == other.timestamp_ms
            && self.signature == other.signature
    }
}

impl Eq for Receipt {}

impl Receipt {
    /// The schema version (always [`RECEIPT_SCHEMA_VERSION`]).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The capability's identifier.
    pub fn capability_identifier(&self) -> &str {
        &self.capability_identifier
    }

    /// All the capability's caveats, in order.
    pub fn caveats(&self) -> &[Caveat] {
        self.caveats.as_slice()
    }

    /// Caller, tool and args hash.
    pub fn context_summary(&self) -> &ContextSummary {
        &self.context_summary
    }

    /// The decision.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// True when the call was allowed.
    pub fn is_allowed(&self) -> bool {
        self.outcome.is_allowed()
    }

    /// The verifier gate that denied the call, on a receipt a
    /// [`Verifier`](crate::Verifier) in this process just signed. `None`
    /// when the call was allowed, for a receipt read back from JSON (the
    /// wire form, fixed by the reference, does not carry it) and for one
    /// signed directly with [`Auditor::sign`](crate::Auditor::sign). Act on this, never on the
    /// wording of [`Outcome::reason`].
    pub fn denied_by(&self) -> Option<Gate> {
        self.denied_by
    }

    /// Sets the gate that denied the call (see [`denied_by`](Self::denied_by)).
    pub(crate) fn denied_at(mut self, gate: Option<Gate>) -> Receipt {
        self.denied_by = gate;
        self
    }

    /// The context's time, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// Lowercase hex of the signature.
    pub fn signature_hex(&self) -> String {
        crypto::hex_encode(&self.signature)
    }

    /// The compact JSON form, byte-identical to the reference's:
    /// `version, capability_identifier, caveats, context_summary, outcome,
    /// timestamp_ms, signature`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256 + self.caveats.json().len());
        self.write_json(&mut out);
        out
    }

    /// Appends [`to_json`](Self::to_json)'s text to `out`.
    pub(crate) fn write_json<S: JsonSink + ?Sized>(&self, out: &mut S) {
        let mut digits = itoa::Buffer::new();
        out.put("{\"version\":");
        out.put(digits.format(u64::from(self.version)));
        out.put(",\"capability_identifier\":");
        write_escaped_str(out, &self.capability_identifier);
        out.put(",\"caveats\":");
        out.put(self.caveats.json());
        out.put(",\"context_summary\":{\"caller\":");
        write_escaped_str(out, &self.context_summary.caller);
        out.put(",\"tool\":");
        write_escaped_str(out, &self.context_summary.tool);
        out.put(",\"args_hash\":");
        write_escaped_str(out, &self.context_summary.args_hash);
        out.put("},\"outcome\":");
        write_outcome(out, &self.outcome);
        out.put(",\"timestamp_ms\":");
        out.put(digits.format(self.timestamp_ms));
        out.put(",\"signature\":\"");
        let mut hex = [0u8; 64];
        out.put(crypto::hex_encode_into(&self.signature, &mut hex));
        out.put("\"}");
    }

    /// Reads a receipt strictly: every field required, unknown fields
    /// refused (the reference ignores them, and they would not be signed).
    /// Does not check the signature; see [`Auditor::verify`](crate::Auditor::verify).
    pub fn from_json(text: &str) -> Result<Receipt, ReceiptError> {
        let wire: WireReceipt =
            serde_json::from_str(text).map_err(|e| ReceiptError::Json(e.to_string()))?;
        let signature = match crypto::hex_decode_array::<32>(&wire.signature) {
            Ok(sig) => sig,
            Err(HexArrayError::Length(_)) => return Err(ReceiptError::InvalidSignature),
            Err(HexArrayError::Hex(detail)) => {
                return Err(ReceiptError::Json(format!("signature: {detail}")));
            }
        };
        Ok(Receipt {
            version: wire.version,
            capability_identifier: wire.capability_identifier.into(),
            caveats: wire
                .caveats
                .into_iter()
                .map(|c| Caveat::new(c.predicate))
                .collect::<Vec<_>>()
                .into(),
            context_summary: ContextSummary {
                caller: wire.context_summary.caller.into(),
                tool: wire.context_summary.tool.into(),
                args_hash: wire.context_summary.args_hash,
            },
            outcome: match wire.outcome {
                WireOutcome::Allowed => Outcome::Allowed,
                WireOutcome::Denied { reason } => Outcome::Denied { reason },
            },
            timestamp_ms: wire.timestamp_ms,
            signature,
            denied_by: None,
        })
    }

    /// Streams the signing input (everything but the signature, canonical
    /// JSON with sorted keys) into `out`: what the MAC covers after
    /// `"v" || version`. `Auditor::mac` writes it in two parts.
    #[cfg(test)]
    pub(crate) fn write_signing_body<S: JsonSink + ?Sized>(&self, out: &mut S) {
        write_signing_prefix(out, &self.capability_identifier, &self.caveats);
        self.write_signing_rest(out);
    }

    /// The signing body from the args hash on: what differs between two
    /// receipts of one capability.
    pub(crate) fn write_signing_rest<S: JsonSink + ?Sized>(&self, out: &mut S) {
        write_escaped_str(out, &self.context_summary.args_hash);
        out.put(",\"caller\":");
        write_escaped_str(out, &self.context_summary.caller);
        out.put(",\"tool\":");
        write_escaped_str(out, &self.context_summary.tool);
        out.put("},\"outcome\":");
        write_outcome(out, &self.outcome);
        let mut digits = itoa::Buffer::new();
        out.put(",\"timestamp_ms\":");
        out.put(digits.format(self.timestamp_ms));
        out.put(",\"version\":");
        out.put(digits.format(u64::from(self.version)));
        out.put("}");
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("version", &self.version)
            .field("capability_identifier", &self.capability_identifier)
            .field("caveats", &self.caveats)
            .field("context_summary", &self.context_summary)
            .field("outcome", &self.outcome)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("signature", &self.signature_hex())
            .finish()
    }
}

/// The start of the signing body, the same for every receipt of one
/// capability: identifier and caveats, up to the args hash's value.
pub(crate) fn write_signing_prefix<S: JsonSink + ?Sized>(
    out: &mut S,
    identifier: &str,
    caveats: &CaveatList,
) {
    out.put("{\"capability_identifier\":");
    write_escaped_str(out, identifier);
    out.put(",\"caveats\":");
    out.put(caveats.json());
    out.put(",\"context_summary\":{\"args_hash\":");
}

fn write_outcome<S: JsonSink + ?Sized>(out: &mut S, outcome: &Outcome) {
    match outcome {
        Outcome::Allowed => out.put("{\"kind\":\"allowed\"}"),
        Outcome::Denied { reason } => {
            out.put("{\"kind\":\"denied\",\"reason\":");
            write_escaped_str(out, reason);
            out.put("}");
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReceipt {
    version: u8,
    capability_identifier: String,
    caveats: Vec<WireCaveat>,
    context_summary: WireSummary,
    outcome: WireOutcome,
    timestamp_ms: u64,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCaveat {
    predicate: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSummary {
    caller: String,
    tool: String,
    args_hash: String,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum WireOutcome {
    Allowed,
    Denied { reason: String },
}

/// Longest text a layer copies from a request into a receipt it signs
/// itself (the caller, the tool, a denial reason that quotes the request),
/// in bytes before JSON escaping: 1 KiB. See [`bounded_text`].
pub const MAX_RECEIPT_TEXT: usize = 1024;

/// The prefix of [`unverified_identifier`]'s identifiers.
pub const UNVERIFIED_IDENTIFIER_PREFIX: &str = "unverified:sha256:";

/// The identifier a receipt gives a token that did not verify (a forged
/// chain, a token that does not parse or is too long):
/// `unverified:sha256:<lowercase hex SHA-256 of the token text>`, 82 bytes
/// whatever the token.
///
/// Such a token's identifier and caveats are the client's own claims, made
/// without any key: a receipt signed with them would be an audit record of
/// the client's choosing ("admin (approved by security team)", 180 KB of
/// caveats). The hash still lets an operator who holds a token find its
/// receipts.
///
/// ```
/// let id = capnagent::unverified_identifier("not-a-token");
/// assert!(id.starts_with(capnagent::UNVERIFIED_IDENTIFIER_PREFIX));
/// assert_eq!(id.len(), 82);
/// ```
pub fn unverified_identifier(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(UNVERIFIED_IDENTIFIER_PREFIX.len() + 64);
    out.push_str(UNVERIFIED_IDENTIFIER_PREFIX);
    out.push_str(&crypto::hex_encode(&digest));
    out
}

/// `text`, or for text over [`MAX_RECEIPT_TEXT`] bytes its start (cut on a
/// character boundary) followed by `…[N bytes]`, N being the full length:
/// at most `MAX_RECEIPT_TEXT + 24` bytes.
///
/// ```
/// let long = "a".repeat(5000);
/// let cut = capnagent::bounded_text(&long);
/// assert!(cut.len() <= capnagent::MAX_RECEIPT_TEXT + 24);
/// assert!(cut.ends_with("…[5000 bytes]"));
/// assert_eq!(capnagent::bounded_text("agent:planner"), "agent:planner");
/// ```
pub fn bounded_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_RECEIPT_TEXT {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_RECEIPT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = text.get(..end).unwrap_or_default();
    std::borrow::Cow::Owned(format!("{head}…[{} bytes]", text.len()))
}
