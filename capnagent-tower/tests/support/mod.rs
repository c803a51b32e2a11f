//! Shared helpers for the integration tests: fixed keys, a fixed clock,
//! token minting, a collecting sink.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use capnagent::{Auditor, Issuer, Receipt, Timestamp, Verifier};
use capnagent_tower::CapabilityLayer;
use http_body_util::BodyExt;

pub const ROOT_KEY: [u8; 32] = [7; 32];
pub const AUDIT_KEY: [u8; 32] = [9; 32];
pub const NOW_MS: u64 = 1_800_000_000_000;

/// Mints a token under [`ROOT_KEY`].
pub fn token(caveats: &[&str]) -> String {
    token_under(&ROOT_KEY, caveats)
}

/// The same token minted under another root key: its chain does not verify.
pub fn forged(caveats: &[&str]) -> String {
    token_under(&[8; 32], caveats)
}

/// Mints the token `agent-42` with `caveats` under `root_key`.
pub fn token_under(root_key: &[u8], caveats: &[&str]) -> String {
    let issuer = Issuer::from_key(root_key).unwrap();
    let mut builder = issuer.issue("agent-42");
    for caveat in caveats {
        builder.caveat(caveat).unwrap();
    }
    builder.build().unwrap().serialize()
}

pub fn auditor() -> Auditor {
    Auditor::new(&AUDIT_KEY).unwrap()
}

/// Receipts handed to the sink, in order.
#[derive(Clone, Default)]
pub struct Receipts(Arc<Mutex<Vec<Receipt>>>);

impl Receipts {
    pub fn all(&self) -> Vec<Receipt> {
        self.0.lock().unwrap().clone()
    }

    pub fn push(&self, receipt: &Receipt) {
        self.0.lock().unwrap().push(receipt.clone());
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The only receipt so far.
    pub fn only(&self) -> Receipt {
        let all = self.all();
        assert_eq!(all.len(), 1, "expected exactly one receipt, got {all:?}");
        all.into_iter().next().unwrap()
    }
}

/// A layer with fixed keys, a fixed clock, and a collecting sink.
pub fn layer() -> (CapabilityLayer, Receipts) {
    layer_with(Verifier::new(&ROOT_KEY).unwrap())
}

/// [`layer`] around another verifier (for example one with several root
/// keys).
pub fn layer_with(verifier: Verifier) -> (CapabilityLayer, Receipts) {
    let receipts = Receipts::default();
    let sink = receipts.clone();
    let layer = CapabilityLayer::new(verifier, auditor())
        .unwrap()
        .clock(|| Timestamp::from_unix_millis(NOW_MS))
        .sink(move |receipt: &Receipt| sink.push(receipt));
    (layer, receipts)
}

pub async fn body_text<B>(body: B) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes: Bytes = body.collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A running server on 127.0.0.1; dropping it shuts the server down.
#[cfg(feature = "axum")]
pub struct Server {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[cfg(feature = "axum")]
impl Server {
    pub async fn start(app: axum::Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server { addr, _stop: stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}
