//! Command-line syntax: the clap structures behind `capnagent --help`.
//!
//! Keys are taken as plain strings here and decoded in [`crate::keys`], so
//! that no clap error message can ever echo a key.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Text shown after the top-level help.
const AFTER_HELP: &str = "\
Keys:
  The root keys (mint and verify capabilities) and the audit keys (sign
  and check receipts) are read from, in order of precedence:
    --root-key-hex SPEC   / --audit-key-hex SPEC
    --root-key-file PATH  / --audit-key-file PATH   (file holds a SPEC)
    CAPNAGENT_ROOT_KEY    / CAPNAGENT_AUDIT_KEY     (environment, a SPEC)
  A SPEC is one key or several, separated by commas or newlines, each HEX
  or KID:HEX (KID: 1-32 characters of A-Z a-z 0-9 . _ -); the first is
  the primary. A file may also be the output of `capnagent keygen`: its
  CAPNAGENT_ROOT_KEY=... and CAPNAGENT_AUDIT_KEY=... lines are read by
  role, `#` comments and blank lines are ignored. At most 8 keys.
  Command-line arguments are visible to other users in the process list:
  prefer a file or the environment. Generate both with `capnagent keygen`.
  The two must differ (`verify` refuses an audit key equal to any root
  key): a receipt signed under a root key would be a valid capability.

Key rotation (docs/key-rotation.md):
  `verify` accepts a token under any root key of its ring, and
  `receipt verify` a receipt under any audit key; `issue` mints under the
  primary root key, or the one named by --key-id. Generate a key with an
  id (`capnagent keygen --key-id k2`), give verifiers NEW,OLD, then switch
  issuers to NEW, wait out the longest token lifetime, and drop OLD.

Exit status:
  0  success (verify, explain: allowed; receipt verify: valid; audit
     verify: intact; lint: done, even with warnings)
  1  a negative answer (verify: denied, receipt printed; explain: denied;
     receipt verify: invalid; audit verify: tampered or broken, or not
     chained; lint --deny-warnings: there are warnings)
  2  nothing decided: usage error, bad key, bad token, forged token, bad
     input, unreadable log
  3  audit verify: the chain is intact but a line is torn (a crash
     mid-write)";

/// Macaroon-style capabilities for AI agent tool calls.
///
/// Mint a capability under a root key, narrow it without any key, and
/// verify tool calls against it, with a signed receipt for every decision.
#[derive(Debug, Parser)]
#[command(name = "capnagent", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new root key and a new audit key (32 random bytes each, hex).
    ///
    /// Two lines, an environment file: `CAPNAGENT_ROOT_KEY=<hex>` and
    /// `CAPNAGENT_AUDIT_KEY=<hex>` (load it with `set -a; . ./keys.env; set +a`,
    /// or as a systemd `EnvironmentFile`, or pass the file to
    /// --root-key-file and --audit-key-file). With --key-id, each line is
    /// `<KID>:<hex>`. The keys are drawn separately: a receipt signed under
    /// the root key would be a valid capability, so one key must never
    /// serve both roles.
    Keygen(KeygenArgs),
    /// Mint a capability under the root key and print its token.
    Issue(IssueArgs),
    /// Add caveats to a token and print the narrower token (no key needed).
    Attenuate(AttenuateArgs),
    /// Show a token's identifier, holder key and caveats (no key, NOT verified).
    Inspect(InspectArgs),
    /// Judge one tool call: check the token against a context, print the signed receipt.
    ///
    /// Prints the receipt JSON on one line. Exit status 0 when the call is
    /// allowed, 1 when it is denied (the receipt says why), 2 when no
    /// decision could be made (forged or malformed token, bad context, bad
    /// key); nothing is printed on stdout then.
    Verify(VerifyArgs),
    /// Explain a decision: each gate, each caveat with the values it compared.
    ///
    /// Judges the call as `verify` does (same keys, same context) but signs
    /// no receipt: prints the gates (chain, holder key, proof and replay
    /// "not checked": a proof cannot be checked offline, revocation, no
    /// caveats, caveats), every caveat with each comparison and the value
    /// it compared (`arg.amount_cents = 9900 <= 5000: false`), and the
    /// decision with the reason `verify` would sign. No key and not the
    /// token's signature is printed. Exit status 0 allowed, 1 denied, 2
    /// no decision (a forged token is reported as such and nothing more).
    Explain(ExplainArgs),
    /// Warn on caveats that are traps for their author (no key needed).
    ///
    /// One line per warning on stdout, `warning[CODE]: caveat N: MESSAGE;
    /// safer: SAFER` (`token:` for the token as a whole), or one JSON
    /// object with --json. Codes: unparsable, no_caveats, starts_with_path,
    /// matches_host, no_lower_bound, no_expiry, expired, never_holds,
    /// always_holds, no_holder_key (with --proofs-configured). Exit status
    /// 0 (even with warnings), 1 with --deny-warnings when there are
    /// warnings, 2 on an error. `issue` and `attenuate` print the same
    /// warnings on stderr.
    Lint(LintArgs),
    /// Work with signed receipts.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Arguments of `capnagent keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Name the keys (1-32 characters of A-Z a-z 0-9 . _ -): print
    /// `<KID>:<hex>`, for key rings and rotation.
    #[arg(long, value_name = "KID")]
    pub key_id: Option<String>,
    /// Print only the root key line (rotating the root key alone).
    #[arg(long, conflicts_with = "audit_only")]
    pub root_only: bool,
    /// Print only the audit key line (rotating the audit key alone).
    #[arg(long)]
    pub audit_only: bool,
}

/// Arguments of `capnagent issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub root_key: RootKeyArgs,
    /// Mint under the root key with this id (default: the first, primary).
    ///
    /// The id is not written into the token: verifiers find the key by
    /// trying their ring in order.
    #[arg(long, value_name = "KID")]
    pub key_id: Option<String>,
    /// Identifier of the capability (revoking it revokes every attenuation).
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// A caveat predicate; repeat for several (at least one).
    ///
    /// For example `tool == "search"`, `arg.amount_cents <= 5000` or
    /// `now <= @2027-01-01T00:00:00Z`. Predicates that do not parse, or
    /// that use a unit literal such as `50_usd`, are refused.
    #[arg(long = "caveat", value_name = "PREDICATE", required = true)]
    pub caveats: Vec<String>,
    /// Bind the capability to this Ed25519 public key (32 bytes as hex).
    #[arg(long, value_name = "HEX")]
    pub holder_key_hex: Option<String>,
}

/// Arguments of `capnagent attenuate`.
#[derive(Debug, Args)]
pub struct AttenuateArgs {
    /// A caveat predicate to append; repeat for several (at least one).
    #[arg(long = "caveat", value_name = "PREDICATE", required = true)]
    pub caveats: Vec<String>,
    /// The token to narrow, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN")]
    pub token: String,
}

/// Arguments of `capnagent inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print one line of JSON instead of text.
    ///
    /// `{"identifier":..,"holder_of_key":hex|null,"caveats":[..]}`.
    #[arg(long)]
    pub json: bool,
    /// The token to show, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN")]
    pub token: String,
}

/// Arguments of `capnagent verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub root_key: RootKeyArgs,
    #[command(flatten)]
    pub audit_key: AuditKeyArgs,
    /// The facts the call is judged by, as JSON.
    ///
    /// `{"nowMs":..,"caller":"..","tool":"..","args":{..},"env":{..}}`;
    /// `env` is optional, and `nowMs` omitted or null means the current
    /// time.
    #[arg(long, value_name = "JSON")]
    pub context_json: String,
    /// The token presented, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN")]
    pub token: String,
}

/// Arguments of `capnagent explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub root_key: RootKeyArgs,
    /// The facts the call is judged by, as JSON (as for `verify`).
    #[arg(long, value_name = "JSON")]
    pub context_json: String,
    /// Print one JSON object instead of text.
    ///
    /// `{"identifier","holder_bound","decision":{"allowed","reason","gate",
    /// "caveat"},"gates":[..],"caveats":[{..,"comparisons":[..]}]}`.
    #[arg(long)]
    pub json: bool,
    /// The token presented, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN")]
    pub token: String,
}

/// Arguments of `capnagent lint`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true).args(["token", "caveats"])))]
pub struct LintArgs {
    /// A predicate to lint; repeat for several. With TOKEN, linted as if
    /// appended to it (as `attenuate` would).
    #[arg(long = "caveat", value_name = "PREDICATE")]
    pub caveats: Vec<String>,
    /// The server expects holder-of-key proofs: warn on a bearer token.
    #[arg(long)]
    pub proofs_configured: bool,
    /// Exit 1 when there is any warning.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Print one JSON object instead of text.
    ///
    /// `{"warnings":[{"code","caveat","message","safer"}]}` (`caveat` is
    /// null for the token as a whole).
    #[arg(long)]
    pub json: bool,
    /// The token to lint, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN")]
    pub token: Option<String>,
}

/// The `capnagent receipt` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's schema and signature under the audit keys.
    ///
    /// Tries each audit key of the ring in order. Prints `valid` and exits
    /// 0 if the receipt is genuine under one of them; exits 1 with the
    /// reason on stderr if it is not; exits 2 on a usage or key error.
    Verify(ReceiptVerifyArgs),
}

/// Arguments of `capnagent receipt verify`.
#[derive(Debug, Args)]
pub struct ReceiptVerifyArgs {
    #[command(flatten)]
    pub audit_key: AuditKeyArgs,
    /// The receipt JSON, or `-` to read it from standard input.
    #[arg(value_name = "RECEIPT_JSON")]
    pub receipt: String,
}

/// The `capnagent audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a hash-chained audit log: every receipt, every chain link.
    ///
    /// Checks every receipt's signature and every record's chain MAC under
    /// one of the audit keys (a ring: old keys after a rotation), that seq
    /// runs from 0 without a gap and that each prev is the previous
    /// record's mac, across rotated files. One LOG is the active file of a
    /// log: its rotated predecessors LOG.000001, LOG.000002, ... are
    /// checked first, in number order (LOG itself may be missing after a
    /// crash during rotation). Several LOGs are taken as given, oldest
    /// first, and nothing else is read.
    ///
    /// Prints `intact: N records in F file(s); checkpoint SEQ:MACHEX` and
    /// exits 0; keep the checkpoint elsewhere and pass it with --checkpoint
    /// next time to detect records cut off the end. Exits 1 with the first
    /// break (file:line: kind) on stderr when the log was tampered with or
    /// is broken, or is a plain log (unless --allow-unchained); 3 when it
    /// is intact but a line is torn (a crash mid-write; the summary is
    /// still printed); 2 on a usage, key or I/O error.
    #[command(after_help = AUDIT_VERIFY_AFTER_HELP)]
    Verify(AuditVerifyArgs),
}

/// Exit codes of `capnagent audit verify`.
const AUDIT_VERIFY_AFTER_HELP: &str = "\
Exit status:
  0  intact (and at or past --checkpoint)
  1  tampered or broken: the first break is printed on stderr; or a plain
     (unchained) log without --allow-unchained
  2  usage error, bad key, unreadable log
  3  intact, but a line is torn (a write cut short by a crash)";

/// Arguments of `capnagent audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub audit_key: AuditKeyArgs,
    /// The head printed by an earlier run, `SEQ:MACHEX`: the log must still
    /// hold that record, so records cut off the end are detected.
    #[arg(long, value_name = "SEQ:MACHEX")]
    pub checkpoint: Option<String>,
    /// Accept a plain (unchained) log, checking only its receipts.
    ///
    /// Deletion and reordering of plain receipts cannot be detected.
    #[arg(long)]
    pub allow_unchained: bool,
    /// The log's active file, or all its files oldest first.
    #[arg(value_name = "LOG", required = true)]
    pub logs: Vec<PathBuf>,
}

/// Where the root keys come from (see also `CAPNAGENT_ROOT_KEY`).
#[derive(Debug, Args)]
pub struct RootKeyArgs {
    /// Root keys as a key spec: HEX or KID:HEX, comma separated (each at
    /// least 32 bytes; the first is the primary).
    ///
    /// Visible to other users in the process list: prefer --root-key-file
    /// or the CAPNAGENT_ROOT_KEY environment variable.
    #[arg(long, value_name = "SPEC")]
    pub root_key_hex: Option<String>,
    /// File holding the root keys (a key spec, or `capnagent keygen`
    /// output); or set CAPNAGENT_ROOT_KEY.
    ///
    /// One key or several (HEX or KID:HEX, by line or comma), `#` comments;
    /// CAPNAGENT_ROOT_KEY=... lines are read, CAPNAGENT_AUDIT_KEY=... lines
    /// skipped. At most 4096 bytes. Precedence: --root-key-hex, then
    /// --root-key-file, then the CAPNAGENT_ROOT_KEY environment variable.
    #[arg(long, value_name = "PATH")]
    pub root_key_file: Option<PathBuf>,
}

/// Where the audit keys come from (see also `CAPNAGENT_AUDIT_KEY`).
#[derive(Debug, Args)]
pub struct AuditKeyArgs {
    /// Audit keys as a key spec: HEX or KID:HEX, comma separated (each at
    /// least 16 bytes, use 32; the first signs).
    ///
    /// Visible to other users in the process list: prefer --audit-key-file
    /// or the CAPNAGENT_AUDIT_KEY environment variable.
    #[arg(long, value_name = "SPEC")]
    pub audit_key_hex: Option<String>,
    /// File holding the audit keys (a key spec, or `capnagent keygen`
    /// output); or set CAPNAGENT_AUDIT_KEY.
    ///
    /// One key or several (HEX or KID:HEX, by line or comma), `#` comments;
    /// CAPNAGENT_AUDIT_KEY=... lines are read, CAPNAGENT_ROOT_KEY=... lines
    /// skipped. At most 4096 bytes. Precedence: --audit-key-hex, then
    /// --audit-key-file, then the CAPNAGENT_AUDIT_KEY environment variable.
    #[arg(long, value_name = "PATH")]
    pub audit_key_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
