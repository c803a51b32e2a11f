//! The `capnagent` command: generate keys, issue, attenuate and inspect
//! capabilities, verify tool calls and explain the decisions, lint
//! caveats, check signed receipts and verify hash-chained audit logs.
//!
//! Run `capnagent --help` for the commands, key sources and exit codes.

mod cli;
mod commands;
mod error;
mod keys;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::Cli;
use crate::error::EXIT_FAILURE;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_error(&err),
    };
    match commands::run(cli) {
        Ok(status) => status.exit_code(),
        Err(err) => {
            report(&err.to_string());
            err.exit_code()
        }
    }
}

/// Prints one `capnagent: ` line on standard error. A failure to write it
/// is ignored: there is nowhere left to report it.
fn report(message: &str) {
    let _ = writeln!(io::stderr(), "capnagent: {message}");
}

/// Handles what clap returns instead of a command line: help and version
/// are printed as clap formats them; usage errors become one line, exit 2.
fn clap_error(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(EXIT_FAILURE))
        }
        _ => {
            report(&one_line(&err.render().to_string()));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Condenses clap's error text to one line: the message and any `tip:`,
/// without the usage block.
fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for paragraph in rendered.split("\n\n") {
        let paragraph = paragraph.trim();
        if paragraph.starts_with("Usage:") || paragraph.starts_with("For more information") {
            continue;
        }
        let words: Vec<&str> = paragraph.split_whitespace().collect();
        if !words.is_empty() {
            parts.push(words.join(" "));
        }
    }
    let message = parts.join("; ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{} (see --help)", redact_hex(message))
}

/// Replaces every run of 32 or more hex digits with `<redacted>`: clap
/// quotes unexpected arguments, and a key passed in the wrong place must
/// not end up in a log.
fn redact_hex(text: &str) -> String {
    const MIN_RUN: usize = 32;
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= MIN_RUN {
            out.push_str("<redacted>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::{one_line, redact_hex};

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --id <ID>\n\nUsage: capnagent issue --id <ID>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: --id <ID> (see --help)"
        );
    }

    #[test]
    fn long_hex_is_redacted() {
        let key = "0f".repeat(32);
        assert_eq!(
            redact_hex(&format!("unexpected argument '{key}' found")),
            "unexpected argument '<redacted>' found"
        );
        assert_eq!(redact_hex("--id <ID> deadbeef"), "--id <ID> deadbeef");
    }
}
