//! Where the protocol-neutral facts come from: the pluggable
//! [`CallerExtractor`] (and its built-ins), the [`Clock`], and the
//! [`ExtractError`] any extractor returns. The HTTP adapter's tool and
//! args extractors are in `http::extract`.
//!
//! Every extractor reads what the *server* controls: an identity set by an
//! authentication layer that ran before this one, a header set by a
//! trusted gateway, its own clock. None of them reads the caller from the
//! token or from the body, because a capability is only as strong as the
//! facts it is checked against.
//!
//! Each trait has a blanket implementation for closures, so
//! `|parts: &mut Parts| Ok::<_, ExtractError>(...)` works wherever a named
//! extractor does. Any error an extractor returns denies the call, with a
//! signed receipt (fail closed).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use capnagent::Timestamp;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
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
