//! Denials as gRPC statuses: the one place where a cause of denial becomes
//! a status code.
//!
//! | cause | code |
//! | --- | --- |
//! | token missing, malformed or forged (chain does not verify); holder-of-key proof missing (the verifier's holder-key gate) or malformed; a holder-bound token at the interceptor | `UNAUTHENTICATED` |
//! | the verifier denied the call (a caveat, revocation, a proof that does not verify or was replayed) | `PERMISSION_DENIED` |
//! | the request message does not decode or decompress, or a caller fact is unreadable, or the caller or tool fact is over 1 KiB | `INVALID_ARGUMENT` |
//! | the request message (decompressed), or its args JSON, is over the layer's limit | `RESOURCE_EXHAUSTED` |
//! | the call's `grpc-encoding` is not one the layer reads | `UNIMPLEMENTED`, with `grpc-accept-encoding: gzip,deflate,zstd,identity` |
//! | server wiring (no authenticated caller) | `INTERNAL`, naming the fix |
//! | a message with the compressed flag set under no `grpc-encoding` (or `identity`): a protocol error | `INTERNAL`, as the gRPC compression spec asks |
//! | an allowed call whose receipt the sink could not record (see [`AuditLogSink`](crate::AuditLogSink)) | `UNAVAILABLE` |
//!
//! The status message is the denial reason; the signed receipt JSON is in
//! the binary metadata [`RECEIPT_METADATA`] (`capnagent-receipt-bin`).
//! The token is never echoed. `UNAVAILABLE` carries the sink's reason and
//! no receipt: its receipt says "allowed" and was not recorded.

use capnagent::{Gate, Receipt};
use capnagent_tower::{Denial, SinkError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::frame::{ACCEPT_ENCODING, ACCEPT_ENCODING_HEADER};

/// Binary metadata key of the signed receipt (its JSON text) on every
/// denial. Read it with
/// [`client::denied_receipt`](crate::client::denied_receipt).
pub const RECEIPT_METADATA: &str = "capnagent-receipt-bin";

/// The [`Denial::Unclassified`] code of a call whose `grpc-encoding` the
/// layer cannot read: `UNIMPLEMENTED`, with `grpc-accept-encoding`.
pub(crate) const UNSUPPORTED_ENCODING: &str = "unsupported_encoding";

/// The [`Denial::Unclassified`] code of a message with the compressed flag
/// set under no `grpc-encoding` (or `identity`): `INTERNAL`, as the gRPC
/// compression spec asks.
pub(crate) const COMPRESSED_WITHOUT_ENCODING: &str = "compressed_without_encoding";

/// The gRPC code of `denial`. The verifier's denials are told apart by
/// their gate: the holder-key gate (a bound token without a proof) is an
/// authentication failure, every other gate a refusal.
pub(crate) fn code(denial: Denial) -> Code {
    match denial {
        Denial::MissingToken
        | Denial::MalformedToken
        | Denial::InvalidChain
        | Denial::MalformedProof
        | Denial::ProofUnsupported
        | Denial::Verifier(Some(Gate::HolderKey)) => Code::Unauthenticated,
        Denial::Verifier(_) => Code::PermissionDenied,
        Denial::TooLarge => Code::ResourceExhausted,
        Denial::Misconfigured => Code::Internal,
        Denial::Unclassified(UNSUPPORTED_ENCODING) => Code::Unimplemented,
        Denial::Unclassified(COMPRESSED_WITHOUT_ENCODING) => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

/// The refusal of an allowed call whose receipt the sink could not record
/// (fail closed): `UNAVAILABLE`, which gRPC clients may retry.
pub(crate) fn unavailable(error: &SinkError) -> Status {
    Status::unavailable(error.reason())
}

/// The status for a denial whose signed receipt is `receipt`.
pub(crate) fn denial(denial: Denial, receipt: &Receipt) -> Status {
    let reason = receipt.outcome().reason().unwrap_or("denied");
    let mut status = Status::new(code(denial), reason);
    if denial == Denial::Unclassified(UNSUPPORTED_ENCODING) {
        // What the layer reads, so that the client can pick one.
        status.metadata_mut().insert(
            ACCEPT_ENCODING_HEADER,
            MetadataValue::from_static(ACCEPT_ENCODING),
        );
    }
    status.metadata_mut().insert_bin(
        RECEIPT_METADATA,
        MetadataValue::from_bytes(receipt.to_json().as_bytes()),
    );
    status
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capnagent::{Auditor, Context, Outcome};

    #[test]
    fn status_carries_reason_and_receipt() {
        let auditor = Auditor::new(&[9; 32]).unwrap();
        let reason = "caveat failed: arg.amount <= 5000".to_owned();
        let ctx = Context::builder().now_millis(1).tool("/a.B/C").build();
        let receipt = auditor.sign("cap", Vec::new(), &ctx, Outcome::Denied { reason });
        let caveat = Gate::Caveat {
            index: 0,
            failure: capnagent::CaveatFailure::False,
        };
        let status = denial(Denial::Verifier(Some(caveat)), &receipt);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "caveat failed: arg.amount <= 5000");
        let bytes = status
            .metadata()
            .get_bin(RECEIPT_METADATA)
            .unwrap()
            .to_bytes()
            .unwrap();
        auditor
            .verify(std::str::from_utf8(&bytes).unwrap())
            .unwrap();

        // Trailers-only HTTP response: 200 with grpc-status 7.
        let response = status.into_http::<()>();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "7");
        assert!(response.headers().contains_key(RECEIPT_METADATA));
    }

    #[test]
    fn each_cause_has_one_code() {
        assert_eq!(code(Denial::MissingToken), Code::Unauthenticated);
        assert_eq!(code(Denial::MalformedProof), Code::Unauthenticated);
        let holder = Denial::Verifier(Some(Gate::HolderKey));
        assert_eq!(code(holder), Code::Unauthenticated);
        assert_eq!(
            code(Denial::Verifier(Some(Gate::Revocation))),
            Code::PermissionDenied
        );
        assert_eq!(code(Denial::BadRequest), Code::InvalidArgument);
        assert_eq!(code(Denial::TooLarge), Code::ResourceExhausted);
        assert_eq!(code(Denial::Misconfigured), Code::Internal);
        let unsupported = Denial::Unclassified(UNSUPPORTED_ENCODING);
        assert_eq!(code(unsupported), Code::Unimplemented);
        let compressed = Denial::Unclassified(COMPRESSED_WITHOUT_ENCODING);
        assert_eq!(code(compressed), Code::Internal);
    }
}
