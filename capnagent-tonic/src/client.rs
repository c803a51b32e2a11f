//! Client side: put a capability (and, for a holder-bound one, a proof)
//! into a call's metadata, and read the signed receipt of a denial.
//!
//! A holder-of-key proof signs the call's tool and args; the server derives
//! both from what it receives. Compute the args with
//! [`Descriptors::args_for`](crate::Descriptors::args_for) (or
//! [`message_to_args`](crate::message_to_args)) from the same descriptor
//! set the server uses, and use the tool name the server uses for the
//! method (its path, unless the server maps it to a name).
//!
//! ```
//! use capnagent::{HolderKey, Issuer};
//! use capnagent::JsonValue;
//! use capnagent_tonic::client;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let holder = HolderKey::from_seed([3; 32]);
//! let cap = Issuer::from_key(&[7; 32])?
//!     .issue("agent-42")
//!     .holder_of_key(holder.public_key())?
//!     .caveat(r#"tool == "logs.upload""#)?
//!     .build()?;
//!
//! let mut request = tonic::Request::new(());
//! client::bearer(request.metadata_mut(), &cap.serialize())?;
//! // A streaming call: args are null.
//! client::attach_proof(request.metadata_mut(), &holder, &cap, "logs.upload", &JsonValue::Null, 1_700_000_000_000)?;
//! assert!(request.metadata().get("capnagent-proof").is_some());
//! # Ok(())
//! # }
//! ```

use capnagent::JsonValue;
use capnagent::{Capability, HolderKey, Proof};
use tonic::Status;
use tonic::metadata::errors::InvalidMetadataValue;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::PROOF_METADATA;
use crate::status::RECEIPT_METADATA;

/// Sets `authorization: Bearer <token>`, marked sensitive (so that
/// tracing layers that honour it do not print it).
pub fn bearer(metadata: &mut MetadataMap, token: &str) -> Result<(), InvalidMetadataValue> {
    let mut value = MetadataValue::try_from(format!("Bearer {token}"))?;
    value.set_sensitive(true);
    metadata.insert("authorization", value);
    Ok(())
}

/// Signs the proof for calling `tool` with `args` at `now_ms` (milliseconds
/// since the Unix epoch, the client's clock: the server accepts it within
/// its skew window, 60 s by default) and puts it in
/// [`PROOF_METADATA`] (`capnagent-proof`).
pub fn attach_proof(
    metadata: &mut MetadataMap,
    holder: &HolderKey,
    cap: &Capability,
    tool: &str,
    args: &JsonValue,
    now_ms: u64,
) -> Result<Proof, InvalidMetadataValue> {
    let proof = holder.prove(cap, tool, args, now_ms);
    let mut value = MetadataValue::try_from(proof.encode())?;
    value.set_sensitive(true);
    metadata.insert(PROOF_METADATA, value);
    Ok(proof)
}

/// The signed receipt (its JSON text) carried by a denial's status, if
/// any. Check it with [`Auditor::verify`](capnagent::Auditor::verify)
/// when you hold the audit key.
pub fn denied_receipt(status: &Status) -> Option<String> {
    let value = status.metadata().get_bin(RECEIPT_METADATA)?;
    let bytes = value.to_bytes().ok()?;
    String::from_utf8(bytes.to_vec()).ok()
}
