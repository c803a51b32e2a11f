//! Key resolution and hex: where the root and audit key rings come from
//! (flag, then file, then environment; the format and the reading are the
//! core crate's, [`capnagent::keys`]) and strict hex for holder keys.
//!
//! Error messages name the source of a key but never include any of its
//! text.

use capnagent::keys::KeySource;
use capnagent::{KeyId, KeyRing, KeyRole};

use crate::cli::{AuditKeyArgs, RootKeyArgs};
use crate::error::CliError;

/// The environment variable holding the root keys.
pub const ROOT_ENV: &str = "CAPNAGENT_ROOT_KEY";

/// The environment variable holding the audit keys.
pub const AUDIT_ENV: &str = "CAPNAGENT_AUDIT_KEY";

/// Resolves the root key ring. Key lengths are checked by the core crate.
pub fn root_keys(args: &RootKeyArgs) -> Result<KeyRing, CliError> {
    resolve(
        KeyRole::Root,
        args.root_key_hex.as_deref(),
        args.root_key_file.as_deref(),
    )
}

/// Resolves the audit key ring. Key lengths are checked by the core crate.
pub fn audit_keys(args: &AuditKeyArgs) -> Result<KeyRing, CliError> {
    resolve(
        KeyRole::Audit,
        args.audit_key_hex.as_deref(),
        args.audit_key_file.as_deref(),
    )
}

/// Picks exactly one source, by precedence flag > file > environment, and
/// reads it as a key spec. An empty environment variable counts as unset;
/// no source at all is an error.
fn resolve(
    role: KeyRole,
    hex: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<KeyRing, CliError> {
    KeySource::new(role)
        .hex(hex)
        .file(file)
        .resolve()
        .map_err(|e| CliError::failed(e.to_string()))?
        .ok_or_else(|| {
            CliError::failed(format!(
                "no {} key: pass {} or {}, or set {}",
                role.name(),
                role.hex_flag(),
                role.file_flag(),
                role.env_var()
            ))
        })
}

/// Checks the text given to `--key-id`.
pub fn key_id(text: &str) -> Result<KeyId, CliError> {
    KeyId::new(text).map_err(|e| CliError::failed(format!("--key-id: {e}")))
}

/// Decodes the public holder key given to `--holder-key-hex`: exactly 32
/// bytes of hex.
pub fn holder_key(text: &str) -> Result<[u8; 32], CliError> {
    let bytes = hex_decode(text)
        .map_err(|why| CliError::failed(format!("--holder-key-hex: not valid hex ({why})")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        CliError::failed(format!(
            "--holder-key-hex: must be 32 bytes (64 hex digits), got {} bytes",
            bytes.len()
        ))
    })
}

/// Strict hex: an even number of `[0-9a-fA-F]`, nothing else. The error
/// never quotes the input, which may be a key.
pub fn hex_decode(text: &str) -> Result<Vec<u8>, &'static str> {
    base16ct::mixed::decode_vec(text).map_err(|e| match e {
        base16ct::Error::InvalidLength => "hex string has odd length",
        base16ct::Error::InvalidEncoding => "invalid hex digit",
    })
}

/// Lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_strict() {
        assert_eq!(hex_decode("00ABff"), Ok(vec![0, 0xab, 0xff]));
        assert_eq!(hex_decode(""), Ok(vec![]));
        assert!(hex_decode("abc").is_err());
        assert!(hex_decode("0x00").is_err());
        assert!(hex_decode(" 00").is_err());
        assert!(hex_decode("+a").is_err());
        assert!(hex_decode("éé").is_err());
        assert_eq!(hex_encode(&[0, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn holder_key_needs_32_bytes() {
        assert_eq!(holder_key(&"ab".repeat(32)), Ok([0xab; 32]));
        assert!(holder_key(&"ab".repeat(31)).is_err());
        assert!(holder_key(&"ab".repeat(33)).is_err());
    }

    #[test]
    fn flag_wins_over_file() {
        let args = RootKeyArgs {
            root_key_hex: Some("01".repeat(32)),
            root_key_file: Some("/nonexistent/capnagent-key".into()),
        };
        let ring = root_keys(&args).expect("the flag's key");
        assert_eq!(ring.primary().expose_secret(), &[1; 32]);
    }

    #[test]
    fn key_ids_are_checked() {
        assert_eq!(
            key_id("k2026-12").map(|id| id.to_string()),
            Ok("k2026-12".into())
        );
        assert!(key_id("a b").is_err());
    }
}
