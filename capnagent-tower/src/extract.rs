//! Where the facts of a call come from: the pluggable [`ToolExtractor`],
//! [`CallerExtractor`] and [`ArgsExtractor`] traits, their built-in
//! implementations, the [`Clock`] and the [`TokenSource`].
//!
//! Every extractor reads what the *server* controls: the matched route, an
//! identity set by an authentication layer that ran before this one, the
//! real request body, its own clock. None of them reads the caller or the
//! tool from the token or from the body by default, because a capability is
//! only as strong as the facts it is checked against.
//!
//! Each trait has a blanket implementation for closures, so
//! `|parts: &mut Parts| Ok::<_, ExtractError>(...)` works wherever a named
//! extractor does. Any error an extractor returns denies the call, with a
//! signed receipt (fail closed).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use capnagent::Args;
use capnagent::Timestamp;
use capnagent::{JsonLimits, JsonObject, JsonValue};
use http::HeaderName;
use http::request::Parts;

/// Why an extractor could not produce a fact. The call is denied.
///
/// Build one with [`ExtractError::bad_request`] when the client sent
/// something the fact cannot be read from (a body that is not JSON, an
/// ambiguous query string), or with [`ExtractError::misconfigured`] when the
/// server is wired wrongly (an authentication layer missing, a path
/// parameter the route does not have). The first answers 400, the second
/// 500; both sign a denied receipt whose reason is the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractError {
    kind: ExtractErrorKind,
    message: Cow<'static, str>,
}

/// What kind of failure an [`ExtractError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtractErrorKind {
    /// The request itself is at fault: answered with 400 Bad Request.
    BadRequest,
    /// The server is wired wrongly: answered with 500 Internal Server Error,
    /// whose message names the fix.
    Misconfigured,
}

impl ExtractError {
    /// The request cannot yield the fact (answered with 400).
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> ExtractError {
        ExtractError {
            kind: ExtractErrorKind::BadRequest,
            message: message.into(),
        }
    }

    /// The server is wired wrongly (answered with 500). Say how to fix it.
    pub fn misconfigured(message: impl Into<Cow<'static, str>>) -> ExtractError {
        ExtractError {
            kind: ExtractErrorKind::Misconfigured,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ExtractErrorKind {
        self.kind
    }

    /// The message, which becomes the denial reason.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExtractError {}

// ---------------------------------------------------------------------------
// tool

/// Produces the `tool` fact: which tool this request calls.
///
/// Implemented by [`FixedTool`], [`PathParam`] (with the `axum` feature) and
/// any `Fn(&mut Parts) -> Result<T, ExtractError>` where `T: Into<Arc<str>>`
/// (a `String`, or an `Arc<str>`, which is shared rather than copied).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot name the tool of a request",
    note = "use `FixedTool::new(\"bank.wire\")`, `PathParam::new(\"name\")`, or a closure `|parts: &mut http::request::Parts| -> Result<String, ExtractError>` (or `Arc<str>`)"
)]
pub trait ToolExtractor: Send + Sync + 'static {
    /// Returns the tool name for this request.
    fn extract_tool(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError>;
}

impl<F, T> ToolExtractor for F
where
    F: Fn(&mut Parts) -> Result<T, ExtractError> + Send + Sync + 'static,
    T: Into<Arc<str>>,
{
    fn extract_tool(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        self(parts).map(Into::into)
    }
}

/// The same tool for every request: the usual choice with
/// `Router::route_layer`, one layer per route. The name is shared by every
/// request's context and receipt, never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedTool(Arc<str>);

impl FixedTool {
    /// A fixed tool name.
    pub fn new(tool: impl Into<Arc<str>>) -> FixedTool {
        FixedTool(tool.into())
    }
}

impl ToolExtractor for FixedTool {
    fn extract_tool(&self, _parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        Ok(Arc::clone(&self.0))
    }
}

/// The tool extractor in force when none was configured: denies every call
/// with a 500 that says to configure one (fail closed).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTool;

impl ToolExtractor for NoTool {
    fn extract_tool(&self, _parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        Err(ExtractError::misconfigured(
            "tool: no tool extractor is configured for this route; call `.tool(...)` on the \
             CapabilityLayer (for example `FixedTool::new(\"bank.wire\")` or `PathParam::new(\"name\")`) \
             or add a `.route(...)` override",
        ))
    }
}

/// The tool named by a path parameter of the matched axum route, such as
/// `name` in `/tools/{name}` (percent-decoded by axum).
///
/// Works when the layer is applied with `Router::route_layer` or
/// `Router::layer` (axum matches the route before either runs); a layer
/// wrapped around the whole `Router` from outside sees no path parameters,
/// and denies with a 500 that says so.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathParam(Cow<'static, str>);

#[cfg(feature = "axum")]
impl PathParam {
    /// Reads the path parameter called `name`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> PathParam {
        PathParam(name.into())
    }
}

#[cfg(feature = "axum")]
impl ToolExtractor for PathParam {
    fn extract_tool(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        let params = raw_path_params(parts)?;
        params
            .iter()
            .find(|(key, _)| *key == self.0)
            .map(|(_, value)| Arc::from(value))
            .ok_or_else(|| {
                ExtractError::misconfigured(format!(
                    "tool: the matched route has no path parameter `{}`",
                    self.0
                ))
            })
    }
}

/// axum's path parameters for the matched route. `RawPathParams` reads an
/// extension the router inserted, so its future is ready at once; anything
/// else is treated as "not available" (fail closed).
#[cfg(feature = "axum")]
fn raw_path_params(parts: &mut Parts) -> Result<axum::extract::RawPathParams, ExtractError> {
    use axum::extract::FromRequestParts;
    use futures_util::FutureExt;

    match axum::extract::RawPathParams::from_request_parts(parts, &()).now_or_never() {
        Some(Ok(params)) => Ok(params),
        Some(Err(axum::extract::rejection::RawPathParamsRejection::InvalidUtf8InPathParam(e))) => {
            Err(ExtractError::bad_request(format!("path: {e}")))
        }
        _ => Err(ExtractError::misconfigured(
            "path: no path parameters in the request; apply the CapabilityLayer with \
             `Router::route_layer` or `Router::layer`, not around the whole Router",
        )),
    }
}

// ---------------------------------------------------------------------------
// caller

/// Produces the `caller` fact: who is calling, as authenticated by the
/// server.
///
/// Implemented by [`CallerExtension`] (the default), [`TrustedHeader`],
/// [`Anonymous`] and any `Fn(&mut Parts) -> Result<T, ExtractError>` where
/// `T: Into<Arc<str>>` (a `String`, or a shared `Arc<str>`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot name the caller of a request",
    note = "use `CallerExtension`, `TrustedHeader::new(...)`, `Anonymous`, or a closure `|parts: &mut http::request::Parts| -> Result<String, ExtractError>` (or `Arc<str>`)"
)]
pub trait CallerExtractor: Send + Sync + 'static {
    /// Returns the authenticated caller for this request.
    fn extract_caller(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError>;
}

impl<F, T> CallerExtractor for F
where
    F: Fn(&mut Parts) -> Result<T, ExtractError> + Send + Sync + 'static,
    T: Into<Arc<str>>,
{
    fn extract_caller(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        self(parts).map(Into::into)
    }
}

/// The identity an authentication layer established for this request:
/// insert it into the request extensions before [`CapabilityLayer`] runs
/// (an mTLS peer name, the owner of an API key, a gateway's verified
/// subject), and [`CallerExtension`] hands it to the verifier as `caller`.
///
/// ```
/// use capnagent_tower::AuthenticatedCaller;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(AuthenticatedCaller::new("agent:planner"));
/// ```
///
/// [`CapabilityLayer`]: crate::CapabilityLayer
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthenticatedCaller(Arc<str>);

impl AuthenticatedCaller {
    /// An authenticated identity (shared by every context and receipt of
    /// the request, never copied).
    pub fn new(caller: impl Into<Arc<str>>) -> AuthenticatedCaller {
        AuthenticatedCaller(caller.into())
    }

    /// The identity.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Reads the caller from the [`AuthenticatedCaller`] request extension. The
/// default caller extractor.
///
/// A request without the extension is denied with a 500 naming the fix: an
/// authentication layer must run before the capability layer (in axum,
/// it must be added *after* `CapabilityLayer`, since the last layer added
/// runs first). Use [`Anonymous`] for deployments where the token is the
/// only credential.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerExtension;

impl CallerExtractor for CallerExtension {
    fn extract_caller(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        parts
            .extensions
            .get::<AuthenticatedCaller>()
            .map(|caller| Arc::clone(&caller.0))
            .ok_or_else(|| {
                ExtractError::misconfigured(
                    "caller: no `AuthenticatedCaller` in the request extensions; run an \
                     authentication layer before the CapabilityLayer, or configure \
                     `.caller(Anonymous)` if the token is the only credential",
                )
            })
    }
}

/// Every caller is the empty string: for deployments where the bearer
/// token is the only credential. A caveat such as `caller == "agent:x"`
/// then denies every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl CallerExtractor for Anonymous {
    fn extract_caller(&self, _parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        Ok(Arc::clone(EMPTY.get_or_init(|| Arc::from(""))))
    }
}

/// Reads the caller from a request header set by infrastructure you trust.
///
/// **Warning:** a header is whatever the client sent unless something in
/// front of this server overwrites it. Use this only behind a gateway or
/// proxy that authenticates the caller, *removes* any incoming copy of the
/// header and sets its own, and only when clients cannot reach this server
/// except through it. Otherwise any client can claim to be any caller. A
/// request without the header (or with a non-ASCII one) is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedHeader(HeaderName);

impl TrustedHeader {
    /// Trusts `header` to carry the authenticated caller. Read the warning
    /// on [`TrustedHeader`] first.
    pub fn new(header: HeaderName) -> TrustedHeader {
        TrustedHeader(header)
    }
}

impl CallerExtractor for TrustedHeader {
    fn extract_caller(&self, parts: &mut Parts) -> Result<Arc<str>, ExtractError> {
        let mut values = parts.headers.get_all(&self.0).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().map(Arc::from).map_err(|_| {
                ExtractError::bad_request(format!(
                    "caller: header `{}` is not visible ASCII",
                    self.0
                ))
            }),
            (Some(_), Some(_)) => Err(ExtractError::bad_request(format!(
                "caller: header `{}` appears more than once",
                self.0
            ))),
            (None, _) => Err(ExtractError::misconfigured(format!(
                "caller: trusted header `{}` is missing; is the authenticating gateway in front \
                 of this server?",
                self.0
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// args

/// The request body, buffered, as handed to an [`ArgsExtractor`] whose
/// [`reads_body`](ArgsExtractor::reads_body) is true.
#[derive(Debug, Clone, Copy)]
pub struct BufferedBody<'a> {
    bytes: &'a Bytes,
    limits: JsonLimits,
}

impl<'a> BufferedBody<'a> {
    pub(crate) fn new(bytes: &'a Bytes, limits: JsonLimits) -> BufferedBody<'a> {
        BufferedBody { bytes, limits }
    }

    /// The raw bytes (exactly what the handler will see).
    pub fn bytes(&self) -> &'a Bytes {
        self.bytes
    }

    /// Parses the body as JSON under the layer's limits (body size, and the
    /// verifier's JSON nesting depth), keeping every number's source text.
    pub fn parse_json(&self) -> Result<JsonValue, ExtractError> {
        self.json()
            .map_err(|e| ExtractError::bad_request(format!("args: request body is not JSON: {e}")))
    }

    /// Parses the body as JSON, like [`parse_json`](Self::parse_json), into
    /// [`Args`] ([`Args::from_json_bytes`]: the body kept, plus a flat index
    /// of its values, which is cheaper to build, look up and hash than a
    /// tree). What [`JsonBody`] uses.
    pub fn parse_args(&self) -> Result<Args, ExtractError> {
        Args::from_json_bytes(self.bytes.clone(), &self.limits)
            .map_err(|e| ExtractError::bad_request(format!("args: request body is not JSON: {e}")))
    }

    /// [`parse_json`](Self::parse_json) with the parser's own error.
    pub(crate) fn json(&self) -> Result<JsonValue, capnagent::JsonError> {
        JsonValue::parse_bytes(self.bytes, &self.limits)
    }
}

/// Produces the `args` fact: the call's arguments as JSON ([`Args`]: a
/// [`JsonValue`] converts with `.into()`).
///
/// Implemented by [`JsonBody`] (the default), [`QueryArgs`], [`PathArgs`]
/// (with the `axum` feature), [`NoArgs`] and any
/// `Fn(&mut Parts) -> Result<A, ExtractError>` where `A: Into<Args>`, such
/// as a [`JsonValue`] (closures never see
/// the body; implement the trait to read it, for example to pick
/// `params.arguments` out of a JSON-RPC call).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot produce the arguments of a request",
    note = "use `JsonBody`, `QueryArgs`, `PathArgs`, `NoArgs`, or a closure `|parts: &mut http::request::Parts| -> Result<capnagent::JsonValue, ExtractError>`"
)]
pub trait ArgsExtractor: Send + Sync + 'static {
    /// Whether the layer must buffer the request body before calling
    /// [`extract_args`](Self::extract_args). When false, `body` is empty.
    fn reads_body(&self) -> bool {
        false
    }

    /// Returns the arguments for this request.
    fn extract_args(&self, parts: &mut Parts, body: BufferedBody<'_>)
    -> Result<Args, ExtractError>;
}

impl<F, A> ArgsExtractor for F
where
    F: Fn(&mut Parts) -> Result<A, ExtractError> + Send + Sync + 'static,
    A: Into<Args>,
{
    fn extract_args(
        &self,
        parts: &mut Parts,
        _body: BufferedBody<'_>,
    ) -> Result<Args, ExtractError> {
        self(parts).map(Into::into)
    }
}

/// The JSON request body. The default args extractor.
///
/// The body is buffered up to the layer's
/// [`body_limit`](crate::CapabilityLayer::body_limit) (413 beyond it),
/// parsed keeping every number's source text (400 if it is not JSON), and
/// then given back to the inner service byte for byte, so the handler's
/// `Json<T>` or `Bytes` sees exactly what was checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody;

impl ArgsExtractor for JsonBody {
    fn reads_body(&self) -> bool {
        true
    }

    fn extract_args(
        &self,
        _parts: &mut Parts,
        body: BufferedBody<'_>,
    ) -> Result<Args, ExtractError> {
        body.parse_args()
    }
}

/// The query string as a JSON object of strings (`?path=/srv/a&n=3` is
/// `{"path":"/srv/a","n":"3"}`); no query string is `{}`.
///
/// Values stay strings: compare them with string caveats, or send numbers
/// in a JSON body. A key that appears twice is refused with 400, since the
/// caveat and the handler could otherwise read different values.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryArgs;

impl ArgsExtractor for QueryArgs {
    fn extract_args(
        &self,
        parts: &mut Parts,
        _body: BufferedBody<'_>,
    ) -> Result<Args, ExtractError> {
        let mut object = JsonObject::new();
        if let Some(query) = parts.uri.query() {
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                if object.get(&key).is_some() {
                    return Err(ExtractError::bad_request(format!(
                        "args: query parameter `{key}` appears more than once"
                    )));
                }
                object.insert(key.into_owned(), JsonValue::String(value.into_owned()));
            }
        }
        Ok(JsonValue::Object(object).into())
    }
}

/// The matched axum route's path parameters as a JSON object of strings
/// (`/files/{path}` gives `{"path": "..."}`). See [`PathParam`] for where
/// the layer must sit.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PathArgs;

#[cfg(feature = "axum")]
impl ArgsExtractor for PathArgs {
    fn extract_args(
        &self,
        parts: &mut Parts,
        _body: BufferedBody<'_>,
    ) -> Result<Args, ExtractError> {
        let params = raw_path_params(parts)?;
        let mut object = JsonObject::new();
        for (key, value) in params.iter() {
            object.insert(key.to_owned(), JsonValue::String(value.to_owned()));
        }
        Ok(JsonValue::Object(object).into())
    }
}

/// No arguments: `args` is `null`, and the body is passed through unread.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoArgs;

impl ArgsExtractor for NoArgs {
    fn extract_args(
        &self,
        _parts: &mut Parts,
        _body: BufferedBody<'_>,
    ) -> Result<Args, ExtractError> {
        Ok(Args::default())
    }
}

// ---------------------------------------------------------------------------
// clock

/// The layer's source of `now`. Never the request's.
///
/// [`SystemClock`] by default; inject a fixed clock in tests with a closure
/// `|| Timestamp::from_unix_millis(...)`.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<F> Clock for F
where
    F: Fn() -> Timestamp + Send + Sync + 'static,
{
    fn now(&self) -> Timestamp {
        self()
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

// ---------------------------------------------------------------------------
// token

/// Where the serialized capability comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (scheme matched case-insensitively,
    /// as RFC 6750 requires). The default.
    #[default]
    Bearer,
    /// The whole value of a custom header, such as `x-capability`.
    Header(HeaderName),
}

impl TokenSource {
    /// The token comes in a custom header.
    pub fn header(name: HeaderName) -> TokenSource {
        TokenSource::Header(name)
    }

    /// Reads the token text. `Ok(None)` when there is none at all.
    pub(crate) fn read<'a>(&self, parts: &'a Parts) -> Result<Option<&'a str>, &'static str> {
        let name = match self {
            TokenSource::Bearer => &http::header::AUTHORIZATION,
            TokenSource::Header(name) => name,
        };
        let mut values = parts.headers.get_all(name).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(_), Some(_)) => return Err("more than one token header"),
            (Some(value), None) => value,
        };
        let text = value
            .to_str()
            .map_err(|_| "token header is not visible ASCII")?
            .trim_ascii();
        match self {
            TokenSource::Header(_) => Ok(Some(text)),
            TokenSource::Bearer => match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Ok(Some(token.trim_ascii_start()))
                }
                _ => Err("expected `Authorization: Bearer <token>`"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let p = parts(
            http::Request::builder()
                .header("authorization", "bEaReR  abc ")
                .body(())
                .unwrap(),
        );
        assert_eq!(TokenSource::Bearer.read(&p), Ok(Some("abc")));
    }

    #[test]
    fn other_schemes_and_repeats_are_malformed() {
        let p = parts(
            http::Request::builder()
                .header("authorization", "Basic abc")
                .body(())
                .unwrap(),
        );
        assert!(TokenSource::Bearer.read(&p).is_err());
        let p = parts(
            http::Request::builder()
                .header("x-cap", "a")
                .header("x-cap", "b")
                .body(())
                .unwrap(),
        );
        let source = TokenSource::header(HeaderName::from_static("x-cap"));
        assert!(source.read(&p).is_err());
        assert_eq!(TokenSource::Bearer.read(&p), Ok(None));
    }

    #[test]
    fn every_header_byte_reads_like_to_str_then_trim() {
        for b in 0..=255u8 {
            let Ok(value) = http::HeaderValue::from_bytes(&[b"Bearer a", &[b][..], b"c"].concat())
            else {
                continue;
            };
            let mut p = parts(http::Request::builder().body(()).unwrap());
            p.headers.insert(http::header::AUTHORIZATION, value.clone());
            let read = TokenSource::Bearer.read(&p);
            assert_eq!(read.is_ok(), value.to_str().is_ok(), "byte {b:#04x}");
            if let Ok(text) = value.to_str() {
                let token = text.split_once(' ').unwrap().1.trim();
                assert_eq!(read, Ok(Some(token)), "byte {b:#04x}");
            }
        }
    }

    #[test]
    fn query_args_are_strings_and_refuse_repeats() {
        let mut p = parts(
            http::Request::builder()
                .uri("/x?path=%2Fsrv%2Fa+b&n=3")
                .body(())
                .unwrap(),
        );
        let empty = Bytes::new();
        let body = BufferedBody::new(&empty, JsonLimits::default());
        let args = QueryArgs.extract_args(&mut p, body).unwrap();
        assert_eq!(
            args.value().canonical_string(),
            r#"{"n":"3","path":"/srv/a b"}"#
        );

        let mut p = parts(http::Request::builder().uri("/x?n=1&n=2").body(()).unwrap());
        let err = QueryArgs.extract_args(&mut p, body).unwrap_err();
        assert_eq!(err.kind(), ExtractErrorKind::BadRequest);
    }

    #[test]
    fn trusted_header_requires_exactly_one_value() {
        let extractor = TrustedHeader::new(HeaderName::from_static("x-caller"));
        let mut p = parts(
            http::Request::builder()
                .header("x-caller", "agent:a")
                .body(())
                .unwrap(),
        );
        assert_eq!(&*extractor.extract_caller(&mut p).unwrap(), "agent:a");
        let mut p = parts(http::Request::new(()));
        assert_eq!(
            extractor.extract_caller(&mut p).unwrap_err().kind(),
            ExtractErrorKind::Misconfigured
        );
    }
}
