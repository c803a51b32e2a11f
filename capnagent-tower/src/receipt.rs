//! What a receipt the engine signs itself may say: the `Subject` rules
//! (whose identifier and caveats it names), and the bounds on the facts
//! and texts a client can put in it (`over_long`, `bounded`), so that a
//! client without a key chooses nothing that is signed.

use std::borrow::Cow;
use std::sync::Arc;

use capnagent::JsonValue;
use capnagent::{Capability, Caveat, Context, Timestamp, bounded_text, unverified_identifier};

/// The identifier of a receipt about a token header that could not be
/// read as text.
pub(crate) const UNREADABLE_IDENTIFIER: &str = "unverified:unreadable";

/// The capability a receipt the engine signs itself names.
///
/// Only a token whose chain verified under the root key is named by its
/// identifier and caveats: those of any other token are the client's own
/// claims, made without a key. A token that did not verify (forged, does
/// not parse, too long) is named `unverified:sha256:<hex of its text>`
/// ([`unverified_identifier`]), one that could not be read (a non-ASCII or
/// repeated header) `unverified:unreadable`, and no token at all `""`;
/// none of them carries caveats.
pub(crate) struct Subject {
    pub(crate) identifier: Arc<str>,
    pub(crate) caveats: Vec<Caveat>,
}

impl Subject {
    pub(crate) fn nobody() -> Subject {
        Subject {
            identifier: Arc::from(""),
            caveats: Vec::new(),
        }
    }

    pub(crate) fn unreadable() -> Subject {
        Subject {
            identifier: Arc::from(UNREADABLE_IDENTIFIER),
            caveats: Vec::new(),
        }
    }

    /// A token (its text as sent) that did not verify.
    pub(crate) fn unverified(text: &str) -> Subject {
        Subject {
            identifier: unverified_identifier(text).into(),
            caveats: Vec::new(),
        }
    }

    /// A decoded token that did not verify: the text as sent when known,
    /// else its serialized form.
    pub(crate) fn unverified_cap(cap: &Capability, text: Option<&str>) -> Subject {
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
pub(crate) fn over_long(caller: &str, tool: &str) -> Option<String> {
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
pub(crate) fn context(now: Timestamp, caller: Arc<str>, tool: Arc<str>) -> Context {
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
pub(crate) fn bounded(ctx: &Context) -> Cow<'_, Context> {
    let (caller, tool) = (ctx.caller(), ctx.tool());
    let max = capnagent::MAX_RECEIPT_TEXT;
    if caller.len() <= max && tool.len() <= max {
        return Cow::Borrowed(ctx);
    }
    let mut builder = Context::builder()
        .timestamp(ctx.now())
        .caller(bounded_text(caller).as_ref())
        .tool(bounded_text(tool).as_ref())
        .args_json(ctx.call_args().clone());
    for (key, value) in ctx.env() {
        builder = builder.env(key, value);
    }
    Cow::Owned(builder.build())
}
