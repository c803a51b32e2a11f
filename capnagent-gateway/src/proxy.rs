//! Forwarding: what the gateway does with a request the layer allowed.
//! The request goes to the upstream with the body the layer judged (the
//! layer re-inserts the bytes it buffered), without hop-by-hop headers
//! (RFC 9110 §7.6.1) or the capability and proof headers, with the
//! receipt's signature and `x-forwarded-*`/`forwarded`; the response
//! streams back as it arrives. Upstream failures become receipt-free
//! problem+json answers: 502 (connect error, reset) and 504 (no response
//! head in time).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use capnagent_tower::Verified;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;

/// The header carrying the receipt's signature (hex) to the upstream, so
/// that the tool server can log it next to what it did.
pub const RECEIPT_SIGNATURE_HEADER: &str = "capnagent-receipt-signature";

/// The header carrying a holder-of-key proof (the layer's default).
pub const PROOF_HEADER: &str = "capnagent-proof";

/// The peer address of a request's connection, inserted into its
/// extensions by the gateway's server loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the de facto ones), removed in
/// both directions along with those `Connection` lists.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "trailer",
];

/// The forwarding half of the gateway.
#[derive(Debug)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    authority: http::uri::Authority,
    prefix: String,
    request_timeout: Duration,
    keep_token: bool,
    keep_proof: bool,
    trusted_proxies: Vec<IpNet>,
}

/// How a [`Proxy`] forwards.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The upstream's `host:port`.
    pub authority: http::uri::Authority,
    /// The upstream's path prefix (no trailing `/`; may be empty).
    pub prefix: String,
    /// Connecting to the upstream.
    pub connect_timeout: Duration,
    /// From sending the request to the response head.
    pub request_timeout: Duration,
    /// Forward `authorization`.
    pub keep_token: bool,
    /// Forward `capnagent-proof`.
    pub keep_proof: bool,
    /// Peers whose `x-forwarded-for`/`forwarded` are extended rather than
    /// replaced.
    pub trusted_proxies: Vec<IpNet>,
}

impl Proxy {
    /// A proxy with a pooled HTTP/1.1 client to the upstream.
    pub fn new(settings: ProxySettings) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Proxy {
            client,
            authority: settings.authority,
            prefix: settings.prefix,
            request_timeout: settings.request_timeout,
            keep_token: settings.keep_token,
            keep_proof: settings.keep_proof,
            trusted_proxies: settings.trusted_proxies,
        }
    }

    /// Forwards `request` (already allowed, or the layer is off) and
    /// returns the upstream's answer, streaming, or a 502/504 problem.
    pub async fn forward(self: Arc<Self>, request: Request<Body>) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let uri = match Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.prefix, path_and_query))
            .build()
        {
            Ok(uri) => uri,
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "the request target cannot be forwarded",
                );
            }
        };
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0);
        let receipt =
            Verified::from_extensions(&parts.extensions).map(|v| v.receipt().signature_hex());
        let original_host = parts.headers.get(header::HOST).cloned();
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        headers.remove(header::HOST);
        if !self.keep_token {
            headers.remove(header::AUTHORIZATION);
        }
        if !self.keep_proof {
            headers.remove(PROOF_HEADER);
        }
        // Only the gateway says what the receipt is.
        headers.remove(RECEIPT_SIGNATURE_HEADER);
        if let Some(signature) = receipt
            && let Ok(value) = HeaderValue::from_str(&signature)
        {
            headers.insert(RECEIPT_SIGNATURE_HEADER, value);
        }
        self.forwarded_headers(headers, peer, original_host);

        let mut upstream = Request::from_parts(parts, body);
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(self.request_timeout, self.client.request(upstream)).await {
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.request_timeout.as_millis() as u64,
                    "upstream timed out"
                );
                problem(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream tool server did not answer in time",
                )
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, connect = error.is_connect(), "upstream request failed");
                problem(
                    StatusCode::BAD_GATEWAY,
                    if error.is_connect() {
                        "the upstream tool server could not be reached"
                    } else {
                        "the upstream tool server closed the connection without an answer"
                    },
                )
            }
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
        }
    }

    /// `x-forwarded-for`, `x-forwarded-host`, `x-forwarded-proto` and
    /// `forwarded`: extended when the peer is a trusted proxy (an
    /// IPv4-mapped IPv6 peer is compared as IPv4), else set from the peer
    /// alone (a client cannot forge its chain).
    fn forwarded_headers(
        &self,
        headers: &mut HeaderMap,
        peer: Option<SocketAddr>,
        host: Option<HeaderValue>,
    ) {
        let trusted = peer.is_some_and(|p| {
            self.trusted_proxies
                .iter()
                .any(|n| n.contains(&p.ip().to_canonical()))
        });
        if !trusted {
            for name in [
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "forwarded",
            ] {
                headers.remove(name);
            }
        }
        let Some(peer) = peer else { return };
        let ip = peer.ip().to_canonical();
        append(
            headers,
            HeaderName::from_static("x-forwarded-for"),
            &ip.to_string(),
        );
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut element = format!("for={node};proto=http");
        if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            element.push_str(&format!(";host=\"{host}\""));
        }
        append(headers, header::FORWARDED, &element);
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
        if !headers.contains_key("x-forwarded-host")
            && let Some(host) = host
        {
            headers.insert("x-forwarded-host", host);
        }
    }
}

/// Appends `value` to a comma-separated header (one line).
fn append(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = {
        let existing: Vec<&str> = headers
            .get_all(&name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if existing.is_empty() {
            value.to_owned()
        } else {
            format!("{}, {value}", existing.join(", "))
        }
    };
    match HeaderValue::from_str(&joined) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(&name);
        }
    }
}

/// Removes the hop-by-hop headers and every header `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A receipt-free `application/problem+json` answer of the gateway's own.
pub fn problem(status: StatusCode, detail: &str) -> Response<Body> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    })
    .to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_lists_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "application/json"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }
}
