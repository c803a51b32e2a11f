//! Outcomes and errors of a command, and the one place they become exit
//! codes.

use std::fmt;
use std::process::ExitCode;

/// Exit status for a negative answer: a denied call, an invalid receipt.
const EXIT_NEGATIVE: u8 = 1;
/// Exit status of `audit verify` for a log that is intact but has a torn
/// line (a crash mid-write).
const EXIT_TORN: u8 = 3;
/// Exit status when nothing could be decided (clap uses 2 for usage errors
/// too).
pub const EXIT_FAILURE: u8 = 2;

/// How a command that ran to completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done; for `verify`, the call is allowed.
    Success,
    /// `verify` denied the call (the signed receipt was printed).
    Denied,
    /// `audit verify`: the chain is intact but a line is torn.
    Torn,
}

impl Status {
    /// The process exit code for this status.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Status::Success => ExitCode::SUCCESS,
            Status::Denied => ExitCode::from(EXIT_NEGATIVE),
            Status::Torn => ExitCode::from(EXIT_TORN),
        }
    }
}

/// Why a command failed. The message is one line, never contains key
/// material, and is printed after `capnagent: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The answer is no: a receipt that does not verify, an audit log
    /// that was tampered with. Exit 1.
    Rejected(String),
    /// Nothing could be decided: bad usage, key, token, context or I/O.
    /// Exit 2.
    Failed(String),
}

impl CliError {
    /// A [`CliError::Failed`] with the given message.
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::Failed(message.into())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Rejected(_) => ExitCode::from(EXIT_NEGATIVE),
            CliError::Failed(_) => ExitCode::from(EXIT_FAILURE),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Rejected(message) | CliError::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {}
