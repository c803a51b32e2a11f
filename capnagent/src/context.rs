//! The verifier-observed facts a capability is checked against: `now`,
//! `caller`, `tool`, `args` and `env`, plus their JSON form and the
//! canonical `args_hash` that receipts carry.
//!
//! A context is built by the server from what it observes itself (the
//! authenticated peer, the route, the real request body, its own clock),
//! never from claims inside the request.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use crate::error::ContextError;
use bytes::Bytes;

use crate::json::{self, JsonDoc, JsonError, JsonLimits, JsonRef, JsonValue};
use crate::limits::Limits;
use crate::timestamp::Timestamp;

/// The facts one tool call is judged by.
///
/// ```
/// use capnagent::Context;
///
/// let ctx = Context::builder()
///     .now_millis(1_700_000_000_000)
///     .caller("agent:planner")
///     .tool("checkout.purchase")
///     .args(serde_json::json!({"amount_cents": 1299}))
///     .env("region", "eu-west-1")
///     .build();
/// assert_eq!(ctx.tool(), "checkout.purchase");
///
/// // The JSON form keeps every number's source text.
/// let same = Context::from_json(
///     r#"{"nowMs":1700000000000,"caller":"agent:planner","tool":"checkout.purchase",
///         "args":{"amount_cents":1299},"env":{"region":"eu-west-1"}}"#,
/// )?;
/// assert_eq!(same.args_hash(), ctx.args_hash());
/// # Ok::<(), capnagent::ContextError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    now: Timestamp,
    // Shared with the receipts signed for this context.
    caller: Arc<str>,
    tool: Arc<str>,
    args: Args,
    env: BTreeMap<String, String>,
}

/// A call's arguments as a [`Context`] holds them: a JSON value, indexed
/// once for `arg.*` lookups and for the canonical writer that makes
/// `args_hash`.
///
/// Read from a request body with [`Args::from_json_bytes`] (the buffer is
/// kept, not copied, and no tree is built unless someone asks for
/// [`Args::value`]), or convert a [`JsonValue`] or a `serde_json::Value`
/// with `.into()`. Either way the same value gives the same lookups and the
/// same `args_hash`.
///
/// ```
/// use capnagent::{Args, JsonLimits, JsonValue};
///
/// let body = bytes::Bytes::from_static(br#"{"b": 1.50, "a": "x"}"#);
/// let args = Args::from_json_bytes(body, &JsonLimits::default())?;
/// assert_eq!(args.canonical_string(), r#"{"a":"x","b":1.50}"#);
/// let tree = JsonValue::parse(r#"{"a":"x","b":1.50}"#, &JsonLimits::default())?;
/// assert_eq!(Args::from(tree).sha256_canonical_hex(), args.sha256_canonical_hex());
/// # Ok::<(), capnagent::JsonError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Args(ArgsRepr);

#[derive(Debug, Clone)]
enum ArgsRepr {
    /// The document, and the tree: given, or built on first use.
    Doc {
        doc: JsonDoc,
        value: OnceLock<JsonValue>,
    },
    /// A tree whose compact text is longer than a document can index
    /// (512 MiB): looked up as a tree, hashed as its compact text.
    Unindexed(JsonValue),
}

/// A view of the arguments for evaluation: the tree or the document.
pub(crate) enum ArgsView<'a> {
    Value(&'a JsonValue),
    Doc(JsonRef<'a>),
}

impl Args {
    /// Reads arguments from JSON text (copied) under `limits`; accepts what
    /// [`JsonValue::parse`] accepts.
    pub fn from_json(text: &str, limits: &JsonLimits) -> Result<Args, JsonError> {
        JsonDoc::parse(text, limits).map(Args::from_doc)
    }

    /// Reads arguments from a buffer (a request body, say), which must be
    /// valid UTF-8, under `limits`, and keeps the buffer: no copy, and no
    /// tree unless [`value`](Self::value) is called.
    pub fn from_json_bytes(bytes: Bytes, limits: &JsonLimits) -> Result<Args, JsonError> {
        JsonDoc::from_bytes(bytes, limits).map(Args::from_doc)
    }

    fn from_doc(doc: JsonDoc) -> Args {
        Args(ArgsRepr::Doc {
            doc,
            value: OnceLock::new(),
        })
    }

    /// The arguments as a [`JsonValue`] (built once, on first use, when
    /// they were read from JSON text).
    pub fn value(&self) -> &JsonValue {
        match &self.0 {
            ArgsRepr::Doc { doc, value } => value.get_or_init(|| doc.to_value()),
            ArgsRepr::Unindexed(value) => value,
        }
    }

    /// The canonical JSON text of the arguments (see
    /// [`JsonValue::canonical_string`]).
    pub fn canonical_string(&self) -> String {
        match &self.0 {
            ArgsRepr::Doc { doc, .. } => doc.canonical_string(),
            ArgsRepr::Unindexed(value) => value.canonical_string(),
        }
    }

    /// Lowercase hex SHA-256 of the canonical JSON of the arguments: the
    /// `args_hash` of receipts (see [`JsonValue::sha256_canonical_hex`]).
    pub fn sha256_canonical_hex(&self) -> String {
        match &self.0 {
            ArgsRepr::Doc { doc, .. } => doc.sha256_canonical_hex(),
            ArgsRepr::Unindexed(value) => value.sha256_canonical_hex(),
        }
    }

    /// The tree when there is one (given, or already built: its lookups
    /// are the quicker), else the document.
    pub(crate) fn view(&self) -> ArgsView<'_> {
        match &self.0 {
            ArgsRepr::Doc { doc, value } => match value.get() {
                Some(value) => ArgsView::Value(value),
                None => ArgsView::Doc(doc.root()),
            },
            ArgsRepr::Unindexed(value) => ArgsView::Value(value),
        }
    }
}

impl Default for Args {
    /// `null`.
    fn default() -> Args {
        Args::from(JsonValue::Null)
    }
}

/// Equal when they hold the same JSON value.
impl PartialEq for Args {
    fn eq(&self, other: &Args) -> bool {
        match (&self.0, &other.0) {
            (ArgsRepr::Doc { doc: a, .. }, ArgsRepr::Doc { doc: b, .. }) => a == b,
            _ => self.value() == other.value(),
        }
    }
}

impl From<JsonValue> for Args {
    /// Indexes the value (through its compact text); the tree is kept for
    /// [`Args::value`].
    fn from(value: JsonValue) -> Args {
        match JsonDoc::from_value(&value) {
            Ok(doc) => Args(ArgsRepr::Doc {
                doc,
                value: OnceLock::from(value),
            }),
            Err(_) => Args(ArgsRepr::Unindexed(value)),
        }
    }
}

impl From<&serde_json::Value> for Args {
    /// Numbers keep the text `serde_json` prints for them.
    fn from(value: &serde_json::Value) -> Args {
        Args::from(json::from_serde(value))
    }
}

impl Context {
    /// Starts a context. Unset fields default to: `now` = the wall clock at
    /// `build()`, empty `caller` and `tool`, `args` = `null`, no `env`.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// Reads the JSON form used by the reference bindings and the CLI:
    /// `{"nowMs": u64?, "caller": str, "tool": str, "args": any, "env": {str: str}?}`.
    ///
    /// Unknown keys are ignored and a repeated known key is an error, as in
    /// the reference. Every number in `args` keeps its source text, which
    /// the integer-domain rule and `args_hash` depend on. A missing or
    /// `null` `nowMs` means the wall clock. Unlike the reference, the
    /// positional array form `[nowMs, caller, tool, args, env]` is refused.
    pub fn from_json(text: &str) -> Result<Context, ContextError> {
        Context::from_json_with_limits(text, &Limits::DEFAULT)
    }

    /// [`Context::from_json`] under explicit size and depth limits.
    pub fn from_json_with_limits(text: &str, limits: &Limits) -> Result<Context, ContextError> {
        let json_limits = JsonLimits {
            max_depth: limits.max_json_depth,
            max_len: limits.max_context_len,
        };
        // Read as a document: the arguments become a document of their own
        // over the same text, with no tree built.
        let doc =
            JsonDoc::parse(text, &json_limits).map_err(|e| ContextError::Json(e.to_string()))?;
        let root = doc.root();
        if root.kind_name() != "object" {
            return Err(ContextError::Shape(format!(
                "expected an object, got {}",
                root.kind_name()
            )));
        }

        let mut now_ms: Option<Option<u64>> = None;
        let mut caller = None;
        let mut tool = None;
        let mut args = None;
        let mut env: Option<BTreeMap<String, String>> = None;
        for (key, value) in root.members() {
            let seen = match &*key {
                "nowMs" => now_ms.replace(read_now_ms(value)?).is_some(),
                "caller" => caller.replace(read_string("caller", value)?).is_some(),
                "tool" => tool.replace(read_string("tool", value)?).is_some(),
                "args" => args.replace(value).is_some(),
                "env" => env.replace(read_env(value)?).is_some(),
                _ => false,
            };
            if seen {
                return Err(ContextError::Shape(format!("duplicate field `{key}`")));
            }
        }
        let missing = |name: &str| ContextError::Shape(format!("missing field `{name}`"));
        Ok(Context {
            now: match now_ms.flatten() {
                Some(ms) => Timestamp::from_unix_millis(ms),
                None => Timestamp::now(),
            },
            caller: caller.ok_or_else(|| missing("caller"))?.into(),
            tool: tool.ok_or_else(|| missing("tool"))?.into(),
            args: Args::from_doc(args.ok_or_else(|| missing("args"))?.to_doc()),
            env: env.unwrap_or_default(),
        })
    }

    /// When the call is judged.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Who is calling, as authenticated by the server.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// Which tool is being called.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// The caller and the tool, shared.
    pub(crate) fn caller_and_tool(&self) -> (Arc<str>, Arc<str>) {
        (Arc::clone(&self.caller), Arc::clone(&self.tool))
    }

    /// The call's arguments as a [`JsonValue`] (built on first use when
    /// they were read from JSON text).
    pub fn args(&self) -> &JsonValue {
        self.args.value()
    }

    /// The call's arguments in the form they were given.
    pub fn call_args(&self) -> &Args {
        &self.args
    }

    /// Verifier environment (`env.<key>` in caveats).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Lowercase hex SHA-256 of the canonical JSON of `args`: sorted keys,
    /// no whitespace, numbers as their source text. Receipts carry it
    /// instead of the arguments themselves.
    pub fn args_hash(&self) -> String {
        self.args.sha256_canonical_hex()
    }
}

fn read_now_ms(value: JsonRef<'_>) -> Result<Option<u64>, ContextError> {
    if let Some(text) = value.as_number_text() {
        let plain = text.bytes().all(|b| b.is_ascii_digit());
        return match text.parse::<u64>() {
            Ok(ms) if plain => Ok(Some(ms)),
            _ => Err(ContextError::Shape(format!(
                "invalid value: `nowMs` must be an unsigned 64-bit integer of milliseconds, got {text}"
            ))),
        };
    }
    match value.kind_name() {
        "null" => Ok(None),
        other => Err(ContextError::Shape(format!(
            "invalid type: `nowMs` must be an unsigned integer or null, got {other}"
        ))),
    }
}

fn read_string(name: &str, value: JsonRef<'_>) -> Result<String, ContextError> {
    match value.as_str() {
        Some(s) => Ok(s.into_owned()),
        None => Err(ContextError::Shape(format!(
            "invalid type: `{name}` must be a string, got {}",
            value.kind_name()
        ))),
    }
}

fn read_env(value: JsonRef<'_>) -> Result<BTreeMap<String, String>, ContextError> {
    match value.kind_name() {
        "null" => Ok(BTreeMap::new()),
        "object" => value
            .members()
            .map(|(k, v)| match v.as_str() {
                Some(s) => Ok((k.into_owned(), s.into_owned())),
                None => Err(ContextError::Shape(format!(
                    "invalid type: `env.{k}` must be a string, got {}",
                    v.kind_name()
                ))),
            })
            .collect(),
        other => Err(ContextError::Shape(format!(
            "invalid type: `env` must be an object of strings, got {other}"
        ))),
    }
}

/// Builds a [`Context`]; see [`Context::builder`].
#[derive(Debug, Clone, Default)]
pub struct ContextBuilder {
    now: Option<Timestamp>,
    caller: Arc<str>,
    tool: Arc<str>,
    args: Args,
    env: BTreeMap<String, String>,
}

impl ContextBuilder {
    /// Sets the time of the call (the server's clock, never the caller's).
    pub fn now(mut self, now: SystemTime) -> Self {
        self.now = Some(Timestamp::from_system_time(now));
        self
    }

    /// Sets the time of the call in milliseconds since the Unix epoch.
    pub fn now_millis(mut self, ms: u64) -> Self {
        self.now = Some(Timestamp::from_unix_millis(ms));
        self
    }

    /// Sets the time of the call as a [`Timestamp`].
    pub fn timestamp(mut self, now: Timestamp) -> Self {
        self.now = Some(now);
        self
    }

    /// Sets the authenticated caller (an `Arc<str>` is shared, not copied).
    pub fn caller(mut self, caller: impl Into<Arc<str>>) -> Self {
        self.caller = caller.into();
        self
    }

    /// Sets the tool being called (an `Arc<str>` is shared, not copied).
    pub fn tool(mut self, tool: impl Into<Arc<str>>) -> Self {
        self.tool = tool.into();
        self
    }

    /// Sets the arguments from a `serde_json` value. Numbers keep the text
    /// `serde_json` prints for them; to keep a request's exact number text,
    /// read it with [`Args::from_json_bytes`] (or [`JsonValue::parse`]) and
    /// use [`args_json`](Self::args_json).
    pub fn args(mut self, args: serde_json::Value) -> Self {
        self.args = Args::from(&args);
        self
    }

    /// Sets the arguments from [`Args`] or an already parsed
    /// [`JsonValue`].
    pub fn args_json(mut self, args: impl Into<Args>) -> Self {
        self.args = args.into();
        self
    }

    /// Adds one environment entry; a repeated key keeps the last value.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Finishes the context.
    pub fn build(self) -> Context {
        Context {
            now: self.now.unwrap_or_else(Timestamp::now),
            caller: self.caller,
            tool: self.tool,
            args: self.args,
            env: self.env,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_json_form() {
        let ctx = Context::from_json(
            r#"{"caller":"a","tool":"t","args":{"x":1.50},"nowMs":5,"extra":[1],"env":{"k":"v"}}"#,
        )
        .expect("valid context");
        assert_eq!(ctx.now(), Timestamp::from_unix_millis(5));
        assert_eq!(ctx.env().get("k").map(String::as_str), Some("v"));
        assert_eq!(ctx.call_args().canonical_string(), r#"{"x":1.50}"#);
    }

    /// The arguments read with the context mean what the same text read
    /// alone means: value, canonical text, hash, lookups.
    #[test]
    fn args_read_with_the_context_are_the_args_alone() {
        for args in [
            "null",
            "[1,[2,{}]]",
            r#"{"b":{"y":[1,{"z":2}],"x":"\u0041"},"a":1.50,"b":{"y":0}}"#,
        ] {
            let text =
                format!(r#"{{"env":{{"k":"v"}},"args":{args},"caller":"c","tool":"t","nowMs":1}}"#);
            let ctx = Context::from_json(&text).expect("valid context");
            let alone = Args::from_json(args, &JsonLimits::default()).expect("valid JSON");
            assert_eq!(ctx.call_args(), &alone, "{args}");
            assert_eq!(ctx.args(), alone.value(), "{args}");
            assert_eq!(ctx.call_args().canonical_string(), alone.canonical_string());
            assert_eq!(ctx.args_hash(), alone.sha256_canonical_hex(), "{args}");
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        for bad in [
            r#"[1,"a","t",{},null]"#,
            r#"{"caller":"a","tool":"t"}"#,
            r#"{"caller":"a","caller":"b","tool":"t","args":{}}"#,
            r#"{"caller":1,"tool":"t","args":{}}"#,
            r#"{"caller":"a","tool":"t","args":{},"nowMs":-1}"#,
            r#"{"caller":"a","tool":"t","args":{},"nowMs":1.0}"#,
            r#"{"caller":"a","tool":"t","args":{},"nowMs":1e3}"#,
            r#"{"caller":"a","tool":"t","args":{},"nowMs":-0}"#,
            r#"{"caller":"a","tool":"t","args":{},"nowMs":18446744073709551616}"#,
            r#"{"caller":"a","tool":"t","args":{},"env":{"k":1}}"#,
            r#"{"caller":"a","tool":"t","args":{}} x"#,
        ] {
            assert!(Context::from_json(bad).is_err(), "{bad}");
        }
        assert!(
            Context::from_json(r#"{"caller":"a","tool":"t","args":null,"nowMs":null,"env":null}"#)
                .is_ok()
        );
    }
}
