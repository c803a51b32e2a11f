//! The HTTP adapter's tool and args extractors: the pluggable
//! [`ToolExtractor`] and [`ArgsExtractor`] traits and their built-ins
//! (a fixed tool, an axum path parameter; the JSON body, the query string,
//! the path parameters, no args), and [`BufferedBody`], the body as an
//! args extractor sees it.
//!
//! Like every extractor, they read what the server controls (the matched
//! route, the real body), never the token; any error denies the call with
//! a signed receipt (fail closed).

#[cfg(feature = "axum")]
use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use capnagent::Args;
use capnagent::{JsonLimits, JsonObject, JsonValue};
use http::request::Parts;

use crate::extract::ExtractError;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::extract::ExtractErrorKind;

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
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
}
