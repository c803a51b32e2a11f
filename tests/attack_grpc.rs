//! Attacks on the gRPC layer from the security review (issue 17), against
//! a real tonic server on 127.0.0.1 and a real tonic client: a client
//! without a key must not choose what a signed receipt says, an audit key
//! equal to the root key is refused before anything is served, and a
//! compressed message cannot inflate past the message limit.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use capnagent::{Auditor, Issuer, Receipt, Verifier};
use capnagent_examples::PLANNER_API_KEY;
use capnagent_examples::grpc::pb::PurchaseRequest;
use capnagent_examples::grpc::pb::tool_service_client::ToolServiceClient;
use capnagent_examples::grpc::{self, Credentials, PURCHASE, Running, Tools};
use capnagent_tonic::{CapabilityLayer, Grpc, client};
use tonic::Code;
use tonic::codec::CompressionEncoding;

const ROOT: [u8; 32] = [7; 32];
const AUDIT: [u8; 32] = [9; 32];

#[test]
fn an_audit_key_equal_to_the_root_key_serves_nothing() {
    let error = grpc::capability_layer(Verifier::new(&ROOT).unwrap(), Auditor::new(&ROOT).unwrap())
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("audit key is the root key"),
        "{error}"
    );
    // The interceptor is built from a layer, which refuses the keys.
    let error = CapabilityLayer::with_protocol(
        Verifier::new(&ROOT).unwrap(),
        Auditor::new(&ROOT).unwrap(),
        Grpc::new(),
    )
    .unwrap_err();
    assert_eq!(error.code(), "key.audit_is_root");
}

/// The example service behind a layer under [`ROOT`] and [`AUDIT`] on a
/// loopback port, its receipts kept in memory: the server, the receipts,
/// and the auditor that signs them.
async fn start_recording() -> (Running, Arc<Mutex<Vec<Receipt>>>, Auditor) {
    let receipts: Arc<Mutex<Vec<Receipt>>> = Arc::default();
    let sink = {
        let receipts = Arc::clone(&receipts);
        move |receipt: &Receipt| receipts.lock().unwrap().push(receipt.clone())
    };
    let auditor = Auditor::new(&AUDIT).unwrap();
    let layer = grpc::capability_layer(Verifier::new(&ROOT).unwrap(), auditor.clone())
        .unwrap()
        .sink(sink);
    let running = grpc::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(layer),
        Tools::protected(),
    )
    .await
    .unwrap();
    (running, receipts, auditor)
}

#[tokio::test]
async fn a_forged_token_cannot_name_itself_in_a_signed_receipt() {
    let (running, receipts, auditor) = start_recording().await;
    let mut tools = ToolServiceClient::connect(running.url()).await.unwrap();

    // Minted under a key the server does not have; as long as metadata
    // allows.
    let issuer = Issuer::from_key(&[8; 32]).unwrap();
    let mut builder = issuer.issue("admin (approved by security team)");
    for _ in 0..8 {
        builder
            .caveat(&format!("caller == \"{}\"", "x".repeat(500)))
            .unwrap();
    }
    let forged = builder.build().unwrap().serialize();
    for token in [forged.as_str(), "not-a-token"] {
        let request = Credentials::new(PLANNER_API_KEY, token)
            .unwrap()
            .unary(
                PURCHASE,
                PurchaseRequest {
                    merchant: "acme".into(),
                    amount: 100,
                    currency: "EUR".into(),
                },
            )
            .unwrap();
        let status = tools.purchase(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let json = client::denied_receipt(&status).unwrap();
        let receipt = auditor.verify(&json).unwrap();
        assert_eq!(
            receipt.capability_identifier(),
            capnagent::unverified_identifier(token)
        );
        assert!(receipt.caveats().is_empty());
        assert!(!json.contains("admin"), "{json}");
        assert!(json.len() < 1024, "{} bytes", json.len());
    }
    assert_eq!(receipts.lock().unwrap().len(), 2);
    running.stop().await.unwrap();
}

/// A decompression bomb: 10 MB of one letter is about 10 KB of gzip, far
/// under the 4 MiB body limit. The layer stops reading it one byte past
/// the limit and refuses it; the service never sees it.
#[tokio::test]
async fn a_decompression_bomb_is_resource_exhausted() {
    let (running, receipts, auditor) = start_recording().await;
    let mut tools = ToolServiceClient::connect(running.url())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip);

    let token = Issuer::from_key(&ROOT)
        .unwrap()
        .issue("purchases")
        .caveat(r#"tool == "checkout.purchase""#)
        .unwrap()
        .build()
        .unwrap()
        .serialize();
    let bomb = PurchaseRequest {
        merchant: "a".repeat(10_000_000),
        amount: 100,
        currency: "EUR".into(),
    };
    let request = Credentials::new(PLANNER_API_KEY, &token)
        .unwrap()
        .unary(PURCHASE, bomb)
        .unwrap();
    let status = tools.purchase(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let limit = Grpc::DEFAULT_MESSAGE_LIMIT - 5;
    assert_eq!(
        status.message(),
        format!("request message decompresses to more than the limit of {limit} bytes")
    );
    let receipt = auditor
        .verify(&client::denied_receipt(&status).unwrap())
        .unwrap();
    assert_eq!(receipt.capability_identifier(), "purchases");
    let outcomes: Vec<bool> = receipts
        .lock()
        .unwrap()
        .iter()
        .map(Receipt::is_allowed)
        .collect();
    assert_eq!(outcomes, [false]);
    running.stop().await.unwrap();
}
