//! Key resolution and hex: where the root and audit keys come from
//! (flag, then file, then environment) and strict hex decoding.
//!
//! Error messages name the source of a key but never include any of its
//! text.

use std::env;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::cli::{AuditKeyArgs, RootKeyArgs};
use crate::error::CliError;

/// Largest key file read, in bytes: far more than any sane hex key, small
/// enough that pointing the option at `/dev/zero` fails fast.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// A secret key's role, with the names of its three sources.
#[derive(Debug, Clone, Copy)]
struct Role {
    /// `root` or `audit`.
    name: &'static str,
    /// The hex flag, for example `--root-key-hex`.
    hex_flag: &'static str,
    /// The file flag, for example `--root-key-file`.
    file_flag: &'static str,
    /// The environment variable, for example `CAPNAGENT_ROOT_KEY`.
    env_var: &'static str,
}

/// The environment variable holding the root key.
pub const ROOT_ENV: &str = "CAPNAGENT_ROOT_KEY";

/// The environment variable holding the audit key.
pub const AUDIT_ENV: &str = "CAPNAGENT_AUDIT_KEY";

const ROOT: Role = Role {
    name: "root",
    hex_flag: "--root-key-hex",
    file_flag: "--root-key-file",
    env_var: ROOT_ENV,
};

const AUDIT: Role = Role {
    name: "audit",
    hex_flag: "--audit-key-hex",
    file_flag: "--audit-key-file",
    env_var: AUDIT_ENV,
};

/// Resolves the root key bytes. Its length is checked by the core crate.
pub fn root_key(args: &RootKeyArgs) -> Result<Vec<u8>, CliError> {
    resolve(
        ROOT,
        args.root_key_hex.as_deref(),
        args.root_key_file.as_deref(),
    )
}

/// Resolves the audit key bytes. Its length is checked by the core crate.
pub fn audit_key(args: &AuditKeyArgs) -> Result<Vec<u8>, CliError> {
    resolve(
        AUDIT,
        args.audit_key_hex.as_deref(),
        args.audit_key_file.as_deref(),
    )
}

/// Reads a key from a file holding hex, for `flag` (which names it in a
/// message). Its length is checked by the core crate.
pub fn key_file(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    let text = read_key_file(path)
        .map_err(|why| CliError::failed(format!("{flag} {}: {why}", path.display())))?;
    decode_key(text.trim(), || format!("{flag} {}", path.display()))
}

/// Picks exactly one source, by precedence flag > file > environment, and
/// decodes it. An empty environment variable counts as unset.
fn resolve(role: Role, hex: Option<&str>, file: Option<&Path>) -> Result<Vec<u8>, CliError> {
    if let Some(text) = hex {
        return decode_key(text, || role.hex_flag.to_owned());
    }
    if let Some(path) = file {
        let text = read_key_file(path).map_err(|why| {
            CliError::failed(format!("{} {}: {why}", role.file_flag, path.display()))
        })?;
        return decode_key(text.trim(), || {
            format!("{} {}", role.file_flag, path.display())
        });
    }
    match env::var(role.env_var) {
        Ok(text) if !text.is_empty() => decode_key(text.trim(), || role.env_var.to_owned()),
        Ok(_) | Err(env::VarError::NotPresent) => Err(CliError::failed(format!(
            "no {} key: pass {} or {}, or set {}",
            role.name, role.hex_flag, role.file_flag, role.env_var
        ))),
        Err(env::VarError::NotUnicode(_)) => Err(CliError::failed(format!(
            "{}: not valid hex (not UTF-8)",
            role.env_var
        ))),
    }
}

/// Reads a key file as UTF-8, refusing files over [`MAX_KEY_FILE_LEN`].
fn read_key_file(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(format!(
            "file is too large for a hex key (over {MAX_KEY_FILE_LEN} bytes)"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not valid hex (not UTF-8)".to_owned())
}

/// Decodes key hex; `source` names where it came from, for the message.
fn decode_key(text: &str, source: impl FnOnce() -> String) -> Result<Vec<u8>, CliError> {
    hex_decode(text).map_err(|why| CliError::failed(format!("{}: not valid hex ({why})", source())))
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
        assert_eq!(root_key(&args), Ok(vec![1; 32]));
    }
}
