//! What each subcommand does, on top of the `capnagent` core crate.

use std::io::{self, Read, Write};

use capnagent::lint::{LintOptions, LintWarning};
use capnagent::{
    Auditor, Capability, ChainBreak, ChainReport, ChainVerifier, Checkpoint, Context, Issuer,
    Timestamp, Verifier, audit_log_files,
};
use serde::Serialize;

use crate::cli::{
    AttenuateArgs, AuditCommand, AuditVerifyArgs, Cli, Command, ExplainArgs, InspectArgs,
    IssueArgs, KeygenArgs, LintArgs, ReceiptCommand, ReceiptVerifyArgs, VerifyArgs,
};
use crate::error::{CliError, Status};
use crate::keys;

/// Most bytes read from standard input for a `-` argument.
const MAX_STDIN_LEN: u64 = 8 * 1024 * 1024;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Status, CliError> {
    match cli.command {
        Command::Keygen(args) => keygen(&args),
        Command::Issue(args) => issue(&args),
        Command::Attenuate(args) => attenuate(&args),
        Command::Inspect(args) => inspect(&args),
        Command::Verify(args) => verify(&args),
        Command::Explain(args) => explain(&args),
        Command::Lint(args) => lint(&args),
        Command::Receipt(ReceiptCommand::Verify(args)) => receipt_verify(&args),
        Command::Audit(AuditCommand::Verify(args)) => audit_verify(&args),
    }
}

/// `capnagent keygen`: a root key and an audit key, 32 bytes each, drawn
/// separately from the operating system's CSPRNG, printed as an
/// environment file (`CAPNAGENT_ROOT_KEY=<hex>`, `CAPNAGENT_AUDIT_KEY=<hex>`;
/// `<KID>:<hex>` with `--key-id`), which the key-spec reader accepts as is.
///
/// Two keys, always drawn separately (even when one line is printed): a
/// receipt's signature is HMAC(audit key, ...) and a capability chain
/// starts with HMAC(root key, identifier), so with one key for both every
/// receipt would be a valid capability. The note on standard error says so.
fn keygen(args: &KeygenArgs) -> Result<Status, CliError> {
    let prefix = match &args.key_id {
        Some(text) => format!("{}:", keys::key_id(text)?),
        None => String::new(),
    };
    let root = random_key()?;
    let audit = random_key()?;
    if root == audit {
        // 2^-256: a broken random source, not bad luck.
        return Err(CliError::failed(
            "the operating system returned the same random bytes twice; no keys printed",
        ));
    }
    let root_line = format!("{}={prefix}{}", keys::ROOT_ENV, keys::hex_encode(&root));
    let audit_line = format!("{}={prefix}{}", keys::AUDIT_ENV, keys::hex_encode(&audit));
    emit(&match (args.root_only, args.audit_only) {
        (true, _) => root_line,
        (_, true) => audit_line,
        _ => format!("{root_line}\n{audit_line}"),
    })?;
    note(
        "two independent keys: the root key mints and verifies capabilities, the audit key \
         signs receipts; never use one key for both (every receipt would then be a valid \
         capability), and keep both secret",
    );
    Ok(Status::Success)
}

/// 32 bytes from the operating system's CSPRNG.
fn random_key() -> Result<[u8; 32], CliError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| {
        CliError::failed(format!(
            "cannot get random bytes from the operating system: {e}"
        ))
    })?;
    Ok(key)
}

/// `capnagent issue`: mint and print a token.
fn issue(args: &IssueArgs) -> Result<Status, CliError> {
    let mut ring = keys::root_keys(&args.root_key)?;
    if let Some(text) = &args.key_id {
        ring = ring
            .with_primary(&keys::key_id(text)?)
            .map_err(|e| CliError::failed(format!("--key-id: {e}")))?;
    }
    let issuer = Issuer::from_keys(&ring).map_err(core)?;
    let mut builder = issuer.issue(args.id.as_str());
    if let Some(hex) = &args.holder_key_hex {
        builder
            .holder_of_key(keys::holder_key(hex)?)
            .map_err(core)?;
    }
    for predicate in &args.caveats {
        builder
            .caveat(predicate)
            .map_err(|e| caveat_error(predicate, e))?;
    }
    let cap = builder.build().map_err(core)?;
    emit(&cap.serialize())?;
    warn(&capnagent::lint::lint(&cap, &lint_options(false)));
    Ok(Status::Success)
}

/// `capnagent attenuate`: append caveats and print the new token.
fn attenuate(args: &AttenuateArgs) -> Result<Status, CliError> {
    let mut cap = parse_token(&args.token)?;
    for predicate in &args.caveats {
        cap = cap
            .attenuate(predicate)
            .map_err(|e| caveat_error(predicate, e))?;
    }
    emit(&cap.serialize())?;
    warn(&capnagent::lint::lint(&cap, &lint_options(false)));
    Ok(Status::Success)
}

/// The `inspect --json` line.
#[derive(Serialize)]
struct InspectJson<'a> {
    /// The capability's identifier.
    identifier: &'a str,
    /// The bound holder key as lowercase hex, or `null`.
    holder_of_key: Option<String>,
    /// The caveat predicates, in chain order.
    caveats: Vec<&'a str>,
}

/// `capnagent inspect`: decode and show a token without verifying it.
fn inspect(args: &InspectArgs) -> Result<Status, CliError> {
    let cap = parse_token(&args.token)?;
    let holder = cap.holder_of_key().map(|key| keys::hex_encode(key));
    if args.json {
        let view = InspectJson {
            identifier: cap.identifier(),
            holder_of_key: holder,
            caveats: cap.caveats().iter().map(|c| c.predicate()).collect(),
        };
        let line = serde_json::to_string(&view)
            .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
        emit(&line)?;
    } else {
        let mut text = format!("identifier: {}\n", printable(cap.identifier()));
        text.push_str(&format!(
            "holder key: {}\n",
            holder.as_deref().unwrap_or("none")
        ));
        text.push_str(&format!("caveats: {}\n", cap.caveats().len()));
        for (i, caveat) in cap.caveats().iter().enumerate() {
            text.push_str(&format!("  {}. {}\n", i + 1, printable(caveat.predicate())));
        }
        text.push_str("signature: not verified (inspect uses no key)");
        emit(&text)?;
    }
    Ok(Status::Success)
}

/// `capnagent verify`: judge one call and print the signed receipt.
fn verify(args: &VerifyArgs) -> Result<Status, CliError> {
    let verifier = Verifier::from_keys(&keys::root_keys(&args.root_key)?).map_err(core)?;
    let audit_ring = keys::audit_keys(&args.audit_key)?;
    // A receipt signed under a root key is a capability: refuse to sign,
    // and refuse a ring holding such a key at all.
    for auditor in Auditor::all_from_keys(&audit_ring).map_err(core)? {
        verifier.check_audit_key(&auditor).map_err(core)?;
    }
    let auditor = Auditor::from_keys(&audit_ring).map_err(core)?;
    let cap = parse_token(&args.token)?;
    let receipt = verifier
        .verify_with_context_json(&cap, &args.context_json, &auditor)
        .map_err(core)?;
    emit(&receipt.to_json())?;
    Ok(if receipt.is_allowed() {
        Status::Success
    } else {
        Status::Denied
    })
}

/// `capnagent explain`: the decision `verify` would make, explained; no
/// receipt.
fn explain(args: &ExplainArgs) -> Result<Status, CliError> {
    let verifier = Verifier::from_keys(&keys::root_keys(&args.root_key)?).map_err(core)?;
    let cap = parse_token(&args.token)?;
    let ctx = Context::from_json_with_limits(&args.context_json, verifier.limits())
        .map_err(|e| core(e.into()))?;
    let explanation = verifier.explain(&cap, &ctx).map_err(|e| match e {
        capnagent::Error::InvalidChain => CliError::failed(
            "forged token: the chain does not verify under any root key (nothing more is \
             explained)",
        ),
        other => core(other),
    })?;
    if args.json {
        emit(&explanation.to_json().to_string())?;
    } else {
        emit(&explanation.to_string())?;
    }
    Ok(if explanation.is_allowed() {
        Status::Success
    } else {
        Status::Denied
    })
}

/// One warning in `lint --json`.
#[derive(Serialize)]
struct WarningJson<'a> {
    code: &'a str,
    caveat: Option<usize>,
    message: &'a str,
    safer: &'a str,
}

/// `capnagent lint`: warnings on a token's caveats, or on predicates.
fn lint(args: &LintArgs) -> Result<Status, CliError> {
    let options = lint_options(args.proofs_configured);
    let warnings = match &args.token {
        Some(token) => {
            let cap = parse_token(token)?;
            capnagent::lint::lint_attenuated(&cap, &args.caveats, &options)
        }
        None => capnagent::lint::lint_predicates(&args.caveats, &options),
    };
    if args.json {
        let list: Vec<WarningJson<'_>> = warnings
            .iter()
            .map(|w| WarningJson {
                code: w.code,
                caveat: w.caveat,
                message: &w.message,
                safer: &w.safer,
            })
            .collect();
        let line = serde_json::to_string(&serde_json::json!({ "warnings": list }))
            .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
        emit(&line)?;
    } else if !warnings.is_empty() {
        let lines: Vec<String> = warnings.iter().map(LintWarning::to_string).collect();
        emit(&lines.join("\n"))?;
    }
    Ok(if args.deny_warnings && !warnings.is_empty() {
        Status::Denied
    } else {
        Status::Success
    })
}

/// Lint options at the current time.
fn lint_options(proofs_configured: bool) -> LintOptions {
    LintOptions::default()
        .now(Timestamp::now())
        .proofs_configured(proofs_configured)
}

/// Writes lint warnings to standard error, one a line (`issue`,
/// `attenuate`: standard output stays the token). A failure to write them
/// is ignored: the token is already out.
fn warn(warnings: &[LintWarning]) {
    let mut err = io::stderr().lock();
    for w in warnings {
        let _ = writeln!(err, "{w}");
    }
}

/// `capnagent receipt verify`: check a receipt's signature.
fn receipt_verify(args: &ReceiptVerifyArgs) -> Result<Status, CliError> {
    let auditors = Auditor::all_from_keys(&keys::audit_keys(&args.audit_key)?).map_err(core)?;
    let json = argument_or_stdin(&args.receipt, "receipt")?;
    Auditor::verify_with_any(&auditors, &json)
        .map_err(|e| CliError::Rejected(format!("receipt is not valid: {e}")))?;
    emit("valid")?;
    Ok(Status::Success)
}

/// `capnagent audit verify`: check a chained audit log and print its head.
fn audit_verify(args: &AuditVerifyArgs) -> Result<Status, CliError> {
    let auditors = Auditor::all_from_keys(&keys::audit_keys(&args.audit_key)?).map_err(core)?;
    let mut verifier = ChainVerifier::new(&auditors).allow_unchained(args.allow_unchained);
    if let Some(text) = &args.checkpoint {
        let checkpoint: Checkpoint = text
            .parse()
            .map_err(|e| CliError::failed(format!("--checkpoint: {e}")))?;
        verifier = verifier.checkpoint(checkpoint);
    }
    let files = match args.logs.as_slice() {
        [active] => audit_log_files(active)
            .map_err(|e| CliError::failed(format!("{}: {e}", active.display())))?,
        all => all.to_vec(),
    };
    match verifier.verify(&files) {
        Ok(report) => {
            emit(&summary("intact", &report))?;
            Ok(Status::Success)
        }
        Err(brk) if brk.is_torn_only() => {
            let report = brk.report.as_deref().map(|r| summary("intact but torn", r));
            emit(&report.unwrap_or_else(|| "intact but torn".to_owned()))?;
            note(&printable(&brk.to_string()));
            Ok(Status::Torn)
        }
        Err(brk) if brk.is_io() => Err(CliError::failed(printable(&brk.to_string()))),
        Err(brk) => Err(CliError::Rejected(broken(&brk))),
    }
}

/// The one-line summary of a verified log.
fn summary(verdict: &str, report: &ChainReport) -> String {
    let files = report.files;
    let records = report.records;
    match (report.chained, report.head) {
        (true, Some(head)) => {
            format!("{verdict}: {records} records in {files} file(s); checkpoint {head}")
        }
        (false, _) if records > 0 => format!(
            "{verdict}: {records} receipts in {files} file(s), all valid; not a chained log: \
             deletion and reordering cannot be detected"
        ),
        _ => format!("{verdict}: no record in {files} file(s); no checkpoint"),
    }
}

/// The message for a break: where, what, and for a plain log the option
/// that accepts it.
fn broken(brk: &ChainBreak) -> String {
    let mut message = printable(&brk.to_string());
    if matches!(brk.kind, capnagent::ChainBreakKind::NotChained) {
        message.push_str(" (--allow-unchained checks its receipts only)");
    }
    message
}

/// Decodes a token given as an argument or as `-` (standard input).
fn parse_token(arg: &str) -> Result<Capability, CliError> {
    let token = argument_or_stdin(arg, "token")?;
    Capability::parse(&token).map_err(|e| match e {
        capnagent::Error::Token(e) => CliError::failed(format!("token: {e}")),
        other => core(other),
    })
}

/// The argument itself, or for `-` all of standard input with surrounding
/// whitespace trimmed.
fn argument_or_stdin(arg: &str, what: &str) -> Result<String, CliError> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut bytes = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_STDIN_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            CliError::failed(format!("cannot read the {what} from standard input: {e}"))
        })?;
    if bytes.len() as u64 > MAX_STDIN_LEN {
        return Err(CliError::failed(format!(
            "the {what} on standard input is over {MAX_STDIN_LEN} bytes"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::failed(format!("the {what} on standard input is not UTF-8")))?;
    Ok(text.trim().to_owned())
}

/// An error from the core crate: nothing could be decided (exit 2).
fn core(e: capnagent::Error) -> CliError {
    CliError::failed(e.to_string())
}

/// A refused caveat, naming the predicate.
fn caveat_error(predicate: &str, e: capnagent::Error) -> CliError {
    CliError::failed(format!("caveat {predicate:?}: {e}"))
}

/// Writes `text` and a newline to standard output.
fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::failed(format!("cannot write to standard output: {e}")))
}

/// Writes `capnagent: <text>` to standard error (advice, not an error). A
/// failure to write it is ignored: the command's output is already out.
fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "capnagent: {text}");
}

/// Escapes control and bidirectional-override characters so that a
/// hostile token cannot rewrite the terminal or disguise its caveats.
fn printable(text: &str) -> String {
    capnagent::explain::escape(text)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("tool == \"a\""), "tool == \"a\"");
        assert_eq!(printable("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
    }
}
