//! End-to-end tests of the `capnagent` binary: every subcommand, key
//! sources, exit codes, and one conformance vector replayed through the CLI;
//! `audit verify` on chained logs written through the core crate.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// A root key (32 bytes) used throughout.
const ROOT: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// An audit key (32 bytes) used throughout.
const AUDIT: &str = "6465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283";
/// A context that satisfies the caveats of [`issue_default`].
const CTX_OK: &str = r#"{"nowMs":1700000000000,"caller":"agent:planner","tool":"checkout.purchase","args":{"amount_cents":1299}}"#;
/// The same call over the amount limit.
const CTX_TOO_MUCH: &str = r#"{"nowMs":1700000000000,"caller":"agent:planner","tool":"checkout.purchase","args":{"amount_cents":9900}}"#;

/// What one run of the binary produced.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `capnagent` with `args`, extra environment and optional stdin. The
/// key variables of the test's own environment are removed first.
fn run_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capnagent"));
    cmd.args(args)
        .env_remove("CAPNAGENT_ROOT_KEY")
        .env_remove("CAPNAGENT_AUDIT_KEY")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn capnagent");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // A command that refuses its arguments exits without reading its
        // input; the pipe is then closed, which is not the test's concern.
        match pipe.write_all(input.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write stdin"),
        }
    }
    let output = child.wait_with_output().expect("wait for capnagent");
    let out = Out {
        code: output.status.code().expect("exit code, not a signal"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    };
    assert!(
        !out.stderr.contains("panicked"),
        "capnagent panicked: {}",
        out.stderr
    );
    out
}

/// Runs `capnagent` with `args` and no extra environment or stdin.
fn run(args: &[&str]) -> Out {
    run_with(args, &[], None)
}

/// Asserts success and returns stdout without its trailing newline.
fn ok(out: Out) -> String {
    assert_eq!(out.code, 0, "expected success: {out:?}");
    assert!(out.stdout.ends_with('\n'), "{out:?}");
    out.stdout.trim_end_matches('\n').to_owned()
}

/// Asserts a refusal with no output: exit 2, one `capnagent: ` line.
fn assert_refused(out: &Out) {
    assert_eq!(out.code, 2, "expected exit 2: {out:?}");
    assert_eq!(out.stdout, "", "nothing on stdout when refused");
    assert!(out.stderr.starts_with("capnagent: "), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
}

/// Issues the token used by most tests.
fn issue_default() -> String {
    ok(run(&[
        "issue",
        "--root-key-hex",
        ROOT,
        "--id",
        "agent-42",
        "--caveat",
        r#"tool == "checkout.purchase""#,
        "--caveat",
        "arg.amount_cents <= 5000",
    ]))
}

/// `capnagent verify` with the test keys on the command line.
fn verify(ctx: &str, token: &str) -> Out {
    run(&[
        "verify",
        "--root-key-hex",
        ROOT,
        "--audit-key-hex",
        AUDIT,
        "--context-json",
        ctx,
        token,
    ])
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

/// The value of `NAME=<hex>` on its own line of `text`.
fn env_line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= line in {text:?}"))
}

fn is_key_hex(key: &str) -> bool {
    key.len() == 64
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn keygen_prints_two_separate_random_keys_and_says_why() {
    let first = run(&["keygen"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout.lines().count(), 2, "{first:?}");
    let root = env_line(&first.stdout, "CAPNAGENT_ROOT_KEY");
    let audit = env_line(&first.stdout, "CAPNAGENT_AUDIT_KEY");
    assert!(is_key_hex(root) && is_key_hex(audit), "{first:?}");
    assert_ne!(root, audit, "the two keys are drawn separately");
    assert!(
        first.stderr.contains("never use one key for both"),
        "keygen says why there are two keys: {first:?}"
    );
    assert!(!first.stderr.contains(root) && !first.stderr.contains(audit));
    let second = ok(run(&["keygen"]));
    assert_ne!(
        root,
        env_line(&second, "CAPNAGENT_ROOT_KEY"),
        "keys are random"
    );

    // The file it prints is what the other commands read.
    let env = [("CAPNAGENT_ROOT_KEY", root), ("CAPNAGENT_AUDIT_KEY", audit)];
    let token = ok(run_with(
        &[
            "issue",
            "--id",
            "a",
            "--caveat",
            r#"tool == "checkout.purchase""#,
        ],
        &env,
        None,
    ));
    let out = run_with(&["verify", "--context-json", CTX_OK, &token], &env, None);
    assert_eq!(out.code, 0, "{out:?}");
}

/// Issue 17 item 2: with the audit key equal to the root key, the receipt
/// `verify` prints is a capability. The CLI refuses to sign with such keys.
#[test]
fn verify_refuses_an_audit_key_equal_to_the_root_key() {
    let token = issue_default();
    let out = run(&[
        "verify",
        "--root-key-hex",
        ROOT,
        "--audit-key-hex",
        ROOT,
        "--context-json",
        CTX_TOO_MUCH,
        &token,
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("audit key is the root key"), "{out:?}");
    assert!(!out.stderr.contains(ROOT), "key leaked: {out:?}");
    // The same key through another source, with trailing zero bytes (HMAC
    // pads keys with zeros: the same key to it), is refused too.
    let padded = format!("{ROOT}0000");
    let out = run_with(
        &[
            "verify",
            "--root-key-hex",
            ROOT,
            "--context-json",
            CTX_OK,
            &token,
        ],
        &[("CAPNAGENT_AUDIT_KEY", padded.as_str())],
        None,
    );
    assert_refused(&out);
}

#[test]
fn issue_inspect_attenuate_verify_round_trip() {
    let token = issue_default();

    let human = ok(run(&["inspect", &token]));
    assert!(human.contains("agent-42"), "{human}");
    assert!(human.contains(r#"tool == "checkout.purchase""#), "{human}");
    assert!(human.contains("arg.amount_cents <= 5000"), "{human}");
    assert!(human.contains("holder key: none"), "{human}");

    let json_line = ok(run(&["inspect", "--json", &token]));
    assert_eq!(json_line.lines().count(), 1);
    assert_eq!(
        json_line,
        r#"{"identifier":"agent-42","holder_of_key":null,"caveats":["tool == \"checkout.purchase\"","arg.amount_cents <= 5000"]}"#
    );

    let narrower = ok(run(&[
        "attenuate",
        "--caveat",
        r#"caller == "agent:planner""#,
        "--caveat",
        "now <= @2099-01-01T00:00:00Z",
        &token,
    ]));
    assert_ne!(narrower, token);
    let view = parse_json(&ok(run(&["inspect", "--json", &narrower])));
    assert_eq!(view["caveats"].as_array().map(Vec::len), Some(4));
    assert_eq!(view["caveats"][2], r#"caller == "agent:planner""#);

    // Allowed: exit 0, one line of receipt JSON that verifies.
    let allowed = verify(CTX_OK, &narrower);
    assert_eq!(allowed.code, 0, "{allowed:?}");
    assert_eq!(allowed.stdout.lines().count(), 1);
    let receipt = allowed.stdout.trim_end().to_owned();
    let parsed = parse_json(&receipt);
    assert_eq!(parsed["outcome"]["kind"], "allowed");
    assert_eq!(parsed["capability_identifier"], "agent-42");
    assert_eq!(parsed["timestamp_ms"], 1_700_000_000_000_u64);
    let checked = run(&["receipt", "verify", "--audit-key-hex", AUDIT, &receipt]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert_eq!(checked.stdout.trim(), "valid");

    // Denied: exit 1, and the receipt is still printed and signed.
    let denied = verify(CTX_TOO_MUCH, &narrower);
    assert_eq!(denied.code, 1, "{denied:?}");
    let parsed = parse_json(denied.stdout.trim_end());
    assert_eq!(parsed["outcome"]["kind"], "denied");
    assert_eq!(
        parsed["outcome"]["reason"],
        "caveat failed: arg.amount_cents <= 5000"
    );
    let checked = run(&[
        "receipt",
        "verify",
        "--audit-key-hex",
        AUDIT,
        denied.stdout.trim_end(),
    ]);
    assert_eq!(checked.code, 0, "{checked:?}");
}

#[test]
fn holder_key_shows_in_inspect_and_denies_on_the_bearer_path() {
    let holder = "ab".repeat(32);
    let token = ok(run(&[
        "issue",
        "--root-key-hex",
        ROOT,
        "--id",
        "bound",
        "--holder-key-hex",
        &holder,
        "--caveat",
        r#"tool == "checkout.purchase""#,
    ]));
    let view = parse_json(&ok(run(&["inspect", "--json", &token])));
    assert_eq!(view["holder_of_key"], holder.as_str());
    assert!(ok(run(&["inspect", &token])).contains(&holder));
    let out = verify(CTX_OK, &token);
    assert_eq!(out.code, 1, "{out:?}");

    let short = run(&[
        "issue",
        "--root-key-hex",
        ROOT,
        "--id",
        "bound",
        "--holder-key-hex",
        "abcd",
        "--caveat",
        "tool == \"x\"",
    ]);
    assert_refused(&short);
}

#[test]
fn forged_or_malformed_tokens_are_refused_without_a_receipt() {
    let token = issue_default();
    // Same caveats, another root key: a forgery as far as ROOT is concerned.
    let other_root = "ff".repeat(32);
    let forged = ok(run(&[
        "issue",
        "--root-key-hex",
        &other_root,
        "--id",
        "agent-42",
        "--caveat",
        r#"tool == "checkout.purchase""#,
    ]));
    let out = verify(CTX_OK, &forged);
    assert_refused(&out);
    assert!(out.stderr.contains("invalid signature"), "{out:?}");

    assert_refused(&verify(CTX_OK, "not-a-token"));
    assert_refused(&run(&["inspect", "not-a-token"]));
    assert_refused(&run(&["attenuate", "--caveat", "tool == \"x\"", "!!"]));
    // Bad context: refused, no receipt.
    assert_refused(&verify("{", &token));
    assert_refused(&verify(r#"{"caller":"a"}"#, &token));
}

#[test]
fn keys_from_files_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root_file: PathBuf = dir.path().join("root.hex");
    let audit_file: PathBuf = dir.path().join("audit.hex");
    std::fs::write(&root_file, format!("  {ROOT}\n\n")).expect("write root key");
    std::fs::write(&audit_file, format!("{AUDIT}\n")).expect("write audit key");
    let root_path = root_file.to_str().expect("utf-8 path");
    let audit_path = audit_file.to_str().expect("utf-8 path");

    // Issue with a file, verify with the environment, and the reverse.
    let token = ok(run(&[
        "issue",
        "--root-key-file",
        root_path,
        "--id",
        "agent-42",
        "--caveat",
        r#"tool == "checkout.purchase""#,
        "--caveat",
        "arg.amount_cents <= 5000",
    ]));
    assert_eq!(token, issue_default(), "same key, same token");
    let env = [("CAPNAGENT_ROOT_KEY", ROOT), ("CAPNAGENT_AUDIT_KEY", AUDIT)];
    let from_env = run_with(&["verify", "--context-json", CTX_OK, &token], &env, None);
    assert_eq!(from_env.code, 0, "{from_env:?}");
    let from_files = run(&[
        "verify",
        "--root-key-file",
        root_path,
        "--audit-key-file",
        audit_path,
        "--context-json",
        CTX_OK,
        &token,
    ]);
    assert_eq!(from_files.code, 0, "{from_files:?}");
    assert_eq!(from_env.stdout, from_files.stdout);
    assert_eq!(from_env.stdout, verify(CTX_OK, &token).stdout);

    let receipt = from_env.stdout.trim_end().to_owned();
    let checked = run_with(&["receipt", "verify", &receipt], &env, None);
    assert_eq!(checked.code, 0, "{checked:?}");
    let checked = run(&[
        "receipt",
        "verify",
        "--audit-key-file",
        audit_path,
        &receipt,
    ]);
    assert_eq!(checked.code, 0, "{checked:?}");

    // Precedence: flag > file > environment.
    let wrong = "ee".repeat(32);
    let wrong_env = [("CAPNAGENT_ROOT_KEY", wrong.as_str())];
    let file_beats_env = run_with(
        &[
            "issue",
            "--root-key-file",
            root_path,
            "--id",
            "agent-42",
            "--caveat",
            r#"tool == "checkout.purchase""#,
            "--caveat",
            "arg.amount_cents <= 5000",
        ],
        &wrong_env,
        None,
    );
    assert_eq!(ok(file_beats_env), token);
    let wrong_file = dir.path().join("wrong.hex");
    std::fs::write(&wrong_file, &wrong).expect("write wrong key");
    let flag_beats_file = run(&[
        "issue",
        "--root-key-hex",
        ROOT,
        "--root-key-file",
        wrong_file.to_str().expect("utf-8 path"),
        "--id",
        "agent-42",
        "--caveat",
        r#"tool == "checkout.purchase""#,
        "--caveat",
        "arg.amount_cents <= 5000",
    ]);
    assert_eq!(ok(flag_beats_file), token);

    // A missing or unreadable file is an error, not a fall-back.
    let missing = dir.path().join("missing.hex");
    let out = run_with(
        &[
            "verify",
            "--root-key-file",
            missing.to_str().expect("utf-8 path"),
            "--context-json",
            CTX_OK,
            &token,
        ],
        &env,
        None,
    );
    assert_refused(&out);
}

#[test]
fn missing_short_or_malformed_keys_exit_2_and_are_never_printed() {
    let token = issue_default();
    let out = run(&[
        "verify",
        "--audit-key-hex",
        AUDIT,
        "--context-json",
        CTX_OK,
        &token,
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("CAPNAGENT_ROOT_KEY"), "{out:?}");
    let out = run(&[
        "verify",
        "--root-key-hex",
        ROOT,
        "--context-json",
        CTX_OK,
        &token,
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("CAPNAGENT_AUDIT_KEY"), "{out:?}");
    let out = run(&["issue", "--id", "x", "--caveat", "tool == \"x\""]);
    assert_refused(&out);
    // An empty environment variable counts as unset.
    let out = run_with(
        &["issue", "--id", "x", "--caveat", "tool == \"x\""],
        &[("CAPNAGENT_ROOT_KEY", "")],
        None,
    );
    assert_refused(&out);

    // Short keys are refused by the core crate; its message passes through.
    let short_root = &ROOT[..62];
    let out = run(&[
        "issue",
        "--root-key-hex",
        short_root,
        "--id",
        "x",
        "--caveat",
        "tool == \"x\"",
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("root key too short"), "{out:?}");
    assert!(!out.stderr.contains(short_root), "key leaked: {out:?}");
    let short_audit = &AUDIT[..30];
    let out = run(&[
        "verify",
        "--root-key-hex",
        ROOT,
        "--audit-key-hex",
        short_audit,
        "--context-json",
        CTX_OK,
        &token,
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("audit key too short"), "{out:?}");
    let out = run_with(
        &["receipt", "verify", "-"],
        &[("CAPNAGENT_AUDIT_KEY", short_audit)],
        Some("{}"),
    );
    assert_refused(&out);

    // Strict hex: no prefix, no inner whitespace, even length.
    let bad_keys = [
        format!("0x{ROOT}"),
        format!("{ROOT}0"),
        ROOT.replace('1', "g"),
    ];
    for bad in &bad_keys {
        let out = run(&[
            "issue",
            "--root-key-hex",
            bad,
            "--id",
            "x",
            "--caveat",
            "tool == \"x\"",
        ]);
        assert_refused(&out);
        assert!(!out.stderr.contains(&ROOT[4..]), "key leaked: {out:?}");
    }

    // A key passed where clap does not expect it is redacted from the error.
    let out = run(&["keygen", ROOT]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(!out.stderr.contains(ROOT), "key leaked: {out:?}");
}

#[test]
fn invalid_caveats_are_refused() {
    for predicate in ["amount <= 50_usd", "tool ==", "((("] {
        let out = run(&[
            "issue",
            "--root-key-hex",
            ROOT,
            "--id",
            "x",
            "--caveat",
            predicate,
        ]);
        assert_ne!(out.code, 0, "{predicate}: {out:?}");
        assert_refused(&out);
        let out = run(&["attenuate", "--caveat", predicate, &issue_default()]);
        assert_ne!(out.code, 0, "{predicate}: {out:?}");
        assert_refused(&out);
    }
    // No caveat at all is a usage error.
    let out = run(&["issue", "--root-key-hex", ROOT, "--id", "x"]);
    assert_refused(&out);
}

#[test]
fn tampered_receipts_are_invalid() {
    let token = issue_default();
    let receipt = verify(CTX_OK, &token).stdout.trim_end().to_owned();
    assert!(receipt.contains(r#""kind":"allowed""#));

    let forged = receipt.replace(
        r#""outcome":{"kind":"allowed"}"#,
        r#""outcome":{"kind":"denied","reason":"x"}"#,
    );
    assert_ne!(forged, receipt);
    let out = run(&["receipt", "verify", "--audit-key-hex", AUDIT, &forged]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.starts_with("capnagent: "), "{out:?}");

    let retimed = receipt.replace("1700000000000", "1700000000001");
    let out = run(&["receipt", "verify", "--audit-key-hex", AUDIT, &retimed]);
    assert_eq!(out.code, 1, "{out:?}");

    let out = run(&["receipt", "verify", "--audit-key-hex", AUDIT, "not json"]);
    assert_eq!(out.code, 1, "{out:?}");

    // Right receipt, wrong audit key.
    let out = run(&["receipt", "verify", "--audit-key-hex", ROOT, &receipt]);
    assert_eq!(out.code, 1, "{out:?}");

    // No audit key at all is a usage problem, not a verdict.
    let out = run(&["receipt", "verify", &receipt]);
    assert_refused(&out);
}

#[test]
fn dash_reads_standard_input() {
    let token = issue_default();
    let env = [("CAPNAGENT_ROOT_KEY", ROOT), ("CAPNAGENT_AUDIT_KEY", AUDIT)];
    let out = run_with(
        &["verify", "--context-json", CTX_OK, "-"],
        &env,
        Some(&format!("{token}\n")),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let receipt = out.stdout;

    let out = run_with(&["receipt", "verify", "-"], &env, Some(&receipt));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "valid");

    let tampered = receipt.replace("agent-42", "agent-43");
    let out = run_with(&["receipt", "verify", "-"], &env, Some(&tampered));
    assert_eq!(out.code, 1, "{out:?}");

    let view = ok(run_with(&["inspect", "--json", "-"], &[], Some(&token)));
    assert!(view.contains("agent-42"));
    let narrower = ok(run_with(
        &["attenuate", "--caveat", "tool == \"x\"", "-"],
        &[],
        Some(&token),
    ));
    assert_ne!(narrower, token);
}

#[test]
fn inspect_escapes_control_characters_in_human_form() {
    // Built by hand: an identifier with an ANSI escape and a newline.
    let json = format!(
        r#"{{"identifier":"a\u001b[31m\nb","caveats":[{{"predicate":"tool == \"x\""}}],"signature":"{}"}}"#,
        "00".repeat(32)
    );
    let token = base64url(json.as_bytes());
    let human = ok(run(&["inspect", &token]));
    assert!(!human.contains('\u{1b}'), "{human:?}");
    assert!(
        human.starts_with("identifier: a\\u{1b}[31m\\nb\n"),
        "{human:?}"
    );
    let view = parse_json(&ok(run(&["inspect", "--json", &token])));
    assert_eq!(view["identifier"], "a\u{1b}[31m\nb");
}

#[test]
fn usage_errors_exit_2_and_help_and_version_work() {
    let out = run(&["frobnicate"]);
    assert_refused(&out);
    let out = run(&["verify", "--root-key-hex", ROOT]);
    assert_refused(&out);

    let help = ok(run(&["--help"]));
    for word in [
        "keygen",
        "issue",
        "attenuate",
        "inspect",
        "verify",
        "receipt",
        "CAPNAGENT_ROOT_KEY",
    ] {
        assert!(help.contains(word), "{word} missing from --help");
    }
    let help = ok(run(&["verify", "--help"]));
    assert!(help.contains("--audit-key-file"), "{help}");
    let help = ok(run(&["receipt", "verify", "--help"]));
    assert!(help.contains("RECEIPT_JSON"), "{help}");

    let version = ok(run(&["--version"]));
    assert!(version.starts_with("capnagent "), "{version}");
}

/// Replays conformance vector `basic-001` (an allowed call with a fixed
/// timestamp) through `capnagent verify`: the receipt must match byte for
/// byte, and `basic-002` (denied) must too.
#[test]
fn conformance_vectors_replay_through_the_cli() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../capnagent/tests/vectors/vectors.jsonl");
    let text = std::fs::read_to_string(&path).expect("read the conformance vectors");
    for (id, code) in [("basic-001", 0), ("basic-002", 1)] {
        let row = text
            .lines()
            .map(parse_json)
            .find(|row| row["id"] == id)
            .expect("vector present");
        assert_eq!(row["op"], "verify");
        assert!(row.get("volatile_fields").is_none(), "{id} is volatile");
        let field = |name: &str| row[name].as_str().expect(name).to_owned();
        let out = run(&[
            "verify",
            "--root-key-hex",
            &field("root_key_hex"),
            "--audit-key-hex",
            &field("audit_key_hex"),
            "--context-json",
            &field("ctx_json"),
            &field("token"),
        ]);
        assert_eq!(out.code, code, "{id}: {out:?}");
        let expected = row["expected"]["receipt"]
            .as_str()
            .expect("expected receipt");
        assert_eq!(out.stdout, format!("{expected}\n"), "{id}");
        let checked = run(&[
            "receipt",
            "verify",
            "--audit-key-hex",
            &field("audit_key_hex"),
            expected,
        ]);
        assert_eq!(checked.code, 0, "{id}: {checked:?}");
    }
}

/// Base64url without padding, for hand-built tokens.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// Issues the default caveats with extra arguments (key sources, --key-id).
fn issue_with(extra: &[&str], env: &[(&str, &str)]) -> Out {
    let mut args = vec!["issue"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--id",
        "agent-42",
        "--caveat",
        r#"tool == "checkout.purchase""#,
        "--caveat",
        "arg.amount_cents <= 5000",
    ]);
    run_with(&args, env, None)
}

#[test]
fn keygen_with_a_key_id_reads_back_as_a_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(run(&["keygen", "--key-id", "k2026-12"]));
    let root = env_line(&out, "CAPNAGENT_ROOT_KEY");
    let audit = env_line(&out, "CAPNAGENT_AUDIT_KEY");
    for value in [root, audit] {
        let hex = value.strip_prefix("k2026-12:").expect("KID:HEX");
        assert!(is_key_hex(hex), "{value}");
    }
    assert_ne!(root, audit);

    // `capnagent keygen > keys.env` serves both key options as is.
    let file = dir.path().join("keys.env");
    std::fs::write(&file, format!("{out}\n")).expect("write keys.env");
    let path = file.to_str().expect("utf-8 path");
    let token = ok(issue_with(&["--root-key-file", path], &[]));
    let same = ok(issue_with(&["--root-key-hex", root], &[]));
    assert_eq!(token, same, "the file's root line is the root key");
    let receipt = ok(run(&[
        "verify",
        "--root-key-file",
        path,
        "--audit-key-file",
        path,
        "--context-json",
        CTX_OK,
        &token,
    ]));
    let checked = run_with(
        &["receipt", "verify", &receipt],
        &[("CAPNAGENT_AUDIT_KEY", audit)],
        None,
    );
    assert_eq!(ok(checked), "valid");

    // One role at a time; a bad id is refused before any key is drawn.
    let root_only = ok(run(&["keygen", "--root-only", "--key-id", "r2"]));
    assert_eq!(root_only.lines().count(), 1, "{root_only}");
    assert!(env_line(&root_only, "CAPNAGENT_ROOT_KEY").starts_with("r2:"));
    let audit_only = ok(run(&["keygen", "--audit-only"]));
    assert!(is_key_hex(env_line(&audit_only, "CAPNAGENT_AUDIT_KEY")));
    assert_eq!(audit_only.lines().count(), 1, "{audit_only}");
    assert_refused(&run(&["keygen", "--key-id", "not valid"]));
    assert_eq!(run(&["keygen", "--root-only", "--audit-only"]).code, 2);
    // Without an id the output is two plain lines, as always.
    let plain = ok(run(&["keygen"]));
    assert!(is_key_hex(env_line(&plain, "CAPNAGENT_ROOT_KEY")));
}

/// A second root key and a second audit key, for rotations.
const ROOT_NEW: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
const AUDIT_NEW: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf";

#[test]
fn a_rotation_through_the_cli_with_tokens_under_both_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = dir.path().join("root.keys");
    std::fs::write(
        &ring,
        format!("# new first: it issues\nk2:{ROOT_NEW}\n# still accepted\nk1:{ROOT}\n"),
    )
    .expect("write ring");
    let ring = ring.to_str().expect("utf-8 path");

    // Without --key-id: the first key. With it: the key named.
    let new_token = ok(issue_with(&["--root-key-file", ring], &[]));
    assert_eq!(
        new_token,
        ok(issue_with(&["--root-key-hex", ROOT_NEW], &[]))
    );
    let old_token = ok(issue_with(
        &["--root-key-file", ring, "--key-id", "k1"],
        &[],
    ));
    assert_eq!(
        old_token,
        issue_default(),
        "the old key's token is unchanged"
    );
    let missing = issue_with(&["--root-key-file", ring, "--key-id", "k3"], &[]);
    assert_refused(&missing);
    assert!(
        missing.stderr.contains("no root key with id k3"),
        "{missing:?}"
    );
    assert!(
        !missing.stderr.contains(&ROOT[8..]),
        "key leaked: {missing:?}"
    );

    // Verifiers with the ring (file, flag or environment) take both.
    let audits = format!("a2:{AUDIT_NEW},a1:{AUDIT}");
    let verify_with = |root: &[&str], token: &str| {
        let mut args = vec!["verify"];
        args.extend_from_slice(root);
        args.extend_from_slice(&["--context-json", CTX_OK, token]);
        run_with(&args, &[("CAPNAGENT_AUDIT_KEY", audits.as_str())], None)
    };
    let comma = format!("{ROOT_NEW},{ROOT}");
    for token in [&new_token, &old_token] {
        for root in [
            vec!["--root-key-file", ring],
            vec!["--root-key-hex", comma.as_str()],
        ] {
            let out = verify_with(&root, token);
            assert_eq!(out.code, 0, "{out:?}");
        }
        let out = run_with(
            &["verify", "--context-json", CTX_OK, token],
            &[
                ("CAPNAGENT_ROOT_KEY", comma.as_str()),
                ("CAPNAGENT_AUDIT_KEY", audits.as_str()),
            ],
            None,
        );
        assert_eq!(out.code, 0, "{out:?}");
    }
    // The old key retired: its token no longer verifies, the new one does.
    assert_refused(&verify_with(&["--root-key-hex", ROOT_NEW], &old_token));
    assert_eq!(
        verify_with(&["--root-key-hex", ROOT_NEW], &new_token).code,
        0
    );

    // An audit key equal to any root key of the ring is refused.
    let out = run(&[
        "verify",
        "--root-key-file",
        ring,
        "--audit-key-hex",
        ROOT,
        "--context-json",
        CTX_OK,
        &new_token,
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("audit key is the root key"), "{out:?}");

    // Duplicates and bad entries are refused without quoting keys.
    for bad in [
        format!("k1:{ROOT},k1:{ROOT_NEW}"),
        format!("k1:{ROOT},k2:{ROOT}"),
        format!("k1:{ROOT},,"),
        format!("k 1:{ROOT}"),
    ] {
        let out = issue_with(&["--root-key-hex", &bad], &[]);
        assert_refused(&out);
        assert!(!out.stderr.contains(&ROOT[8..]), "key leaked: {out:?}");
    }
    let nine: Vec<String> = (0..9u8)
        .map(|i| format!("{:02x}", i + 0x40).repeat(32))
        .collect();
    let out = issue_with(&["--root-key-hex", &nine.join(",")], &[]);
    assert_refused(&out);
    assert!(out.stderr.contains("at most 8"), "{out:?}");
}

#[test]
fn receipt_verify_accepts_receipts_under_any_audit_key_of_the_ring() {
    let token = issue_default();
    let sign = |audit: &str| {
        ok(run(&[
            "verify",
            "--root-key-hex",
            ROOT,
            "--audit-key-hex",
            audit,
            "--context-json",
            CTX_OK,
            &token,
        ]))
    };
    let old_receipt = sign(AUDIT);
    let new_receipt = sign(AUDIT_NEW);
    // `verify` with a ring signs under its first audit key.
    let ring = format!("a2:{AUDIT_NEW}\na1:{AUDIT}");
    let by_ring = ok(run_with(
        &[
            "verify",
            "--root-key-hex",
            ROOT,
            "--context-json",
            CTX_OK,
            &token,
        ],
        &[("CAPNAGENT_AUDIT_KEY", ring.as_str())],
        None,
    ));
    assert_eq!(by_ring, new_receipt);

    let check =
        |audit: &str, receipt: &str| run(&["receipt", "verify", "--audit-key-hex", audit, receipt]);
    let comma = ring.replace('\n', ",");
    assert_eq!(ok(check(&comma, &old_receipt)), "valid");
    assert_eq!(ok(check(&comma, &new_receipt)), "valid");
    // Retired: the old audit key's receipts are invalid (exit 1).
    let out = check(AUDIT_NEW, &old_receipt);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not valid"), "{out:?}");
    // Tampered: invalid under every key.
    let tampered = new_receipt.replacen("agent-42", "agent-43", 1);
    assert_ne!(tampered, new_receipt);
    assert_eq!(check(&comma, &tampered).code, 1);
}

/// The audit key bytes of [`AUDIT`].
fn audit_key_bytes() -> Vec<u8> {
    (0x64..0x84).collect()
}

/// A receipt signed under `key`.
fn signed(key: &[u8], n: u64) -> capnagent::Receipt {
    let auditor = capnagent::Auditor::new(key).expect("key");
    let ctx = capnagent::Context::builder()
        .now_millis(1_700_000_000_000 + n)
        .caller("agent")
        .tool("t")
        .build();
    auditor.sign(
        format!("cap-{n}"),
        Vec::new(),
        &ctx,
        capnagent::Outcome::Allowed,
    )
}

/// A chained log of `n` records under [`AUDIT`] at `dir/audit.ndjson`,
/// rotated at `rotate_at` bytes if given.
fn chained_log(dir: &std::path::Path, n: u64, rotate_at: Option<u64>) -> PathBuf {
    let key = audit_key_bytes();
    let path = dir.join("audit.ndjson");
    let mut builder =
        capnagent::AuditLog::builder(&path).chained(&capnagent::Auditor::new(&key).expect("key"));
    if let Some(bytes) = rotate_at {
        builder = builder.rotate_at(bytes);
    }
    let log = builder.open().expect("open");
    for i in 0..n {
        log.append(&signed(&key, i)).expect("append");
    }
    path
}

fn audit_verify(extra: &[&str], env: &[(&str, &str)]) -> Out {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    run_with(&args, env, None)
}

fn remove_line(path: &std::path::Path, index: usize) {
    let text = std::fs::read_to_string(path).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(index);
    std::fs::write(path, format!("{}\n", lines.join("\n"))).expect("write");
}

#[test]
fn audit_verify_checks_a_rotated_chain_and_prints_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 10, Some(1500));
    let log = path.to_str().expect("utf-8");
    let key_file = dir.path().join("audit.hex");
    std::fs::write(&key_file, format!("{AUDIT}\n")).expect("key file");
    let key_path = key_file.to_str().expect("utf-8");
    let files = capnagent::audit_log_files(&path).expect("files");
    assert!(files.len() > 2, "{files:?}");

    let out = audit_verify(&["--audit-key-file", key_path, log], &[]);
    let line = ok(out);
    let prefix = format!(
        "intact: 10 records in {} file(s); checkpoint 9:",
        files.len()
    );
    assert!(line.starts_with(&prefix), "{line}");
    let checkpoint = line.rsplit(' ').next().expect("checkpoint").to_owned();
    assert_eq!(checkpoint.len(), 2 + 64);

    // The key from the environment, and the checkpoint, verify too.
    let env = [("CAPNAGENT_AUDIT_KEY", AUDIT)];
    ok(audit_verify(&["--checkpoint", &checkpoint, log], &env));
    // Files given explicitly, in order; out of order they break.
    let names: Vec<&str> = files.iter().map(|f| f.to_str().expect("utf-8")).collect();
    let mut args = vec!["--audit-key-hex", AUDIT];
    args.extend(&names);
    ok(audit_verify(&args, &[]));
    let mut args = vec!["--audit-key-hex", AUDIT];
    args.extend(names.iter().rev());
    let out = audit_verify(&args, &[]);
    assert_eq!(out.code, 1, "{out:?}");

    // Cutting the last record off is found against the checkpoint only.
    remove_line(
        &path,
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count()
            - 1,
    );
    ok(audit_verify(&[log], &env));
    let out = audit_verify(&["--checkpoint", &checkpoint, log], &env);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("truncated"), "{out:?}");
    assert_eq!(out.stdout, "");
}

#[test]
fn audit_verify_reports_the_first_break_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 6, None);
    let log = path.to_str().expect("utf-8");
    remove_line(&path, 2);
    let out = audit_verify(&["--audit-key-hex", AUDIT, log], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with(&format!("capnagent: {log}:3: seq 3 where 2 was expected")),
        "{out:?}"
    );
    // Under another key nothing verifies.
    let other_dir = dir.path().join("x");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    let path = chained_log(&other_dir, 2, None);
    let out = audit_verify(
        &["--audit-key-hex", ROOT, path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(":1: receipt signature"), "{out:?}");
    // Unless the right key is in the ring (an old key after a rotation).
    let ring = dir.path().join("ring.keys");
    std::fs::write(&ring, format!("new:{ROOT}\nold:{AUDIT}\n")).expect("write");
    ok(audit_verify(
        &[
            "--audit-key-file",
            ring.to_str().expect("utf-8"),
            path.to_str().expect("utf-8"),
        ],
        &[],
    ));
}

#[test]
fn audit_verify_exits_3_for_a_torn_line_in_an_intact_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 3, None);
    let log = path.to_str().expect("utf-8");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(b"{\"seq\":3,\"prev\":\"00").expect("tear");
    drop(file);
    let out = audit_verify(&["--audit-key-hex", AUDIT, log], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.starts_with("intact but torn: 3 records"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!("{log}:4: torn line")),
        "{out:?}"
    );
    // Appending after the crash continues the chain; still exit 3.
    chained_log(dir.path(), 2, None);
    let out = audit_verify(&["--audit-key-hex", AUDIT, log], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("5 records") && out.stdout.contains("checkpoint 4:"),
        "{out:?}"
    );
}

#[test]
fn audit_verify_refuses_a_plain_log_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain.ndjson");
    let log = capnagent::AuditLog::open(&path).expect("open");
    for i in 0..3 {
        log.append(&signed(&audit_key_bytes(), i)).expect("append");
    }
    let name = path.to_str().expect("utf-8");
    let out = audit_verify(&["--audit-key-hex", AUDIT, name], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("not a chained log: deletion and reordering cannot be detected"),
        "{out:?}"
    );
    let line = ok(audit_verify(
        &["--audit-key-hex", AUDIT, "--allow-unchained", name],
        &[],
    ));
    assert!(
        line.starts_with("intact: 3 receipts in 1 file(s), all valid"),
        "{line}"
    );
    // Every receipt is still checked.
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("cap-1", "cap-7");
    std::fs::write(&path, text).expect("write");
    let out = audit_verify(&["--audit-key-hex", AUDIT, "--allow-unchained", name], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(":2: receipt signature"), "{out:?}");
}

#[test]
fn audit_verify_usage_key_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 2, None);
    let log = path.to_str().expect("utf-8");
    let missing = dir.path().join("missing.ndjson");
    for args in [
        vec!["--audit-key-hex", AUDIT, missing.to_str().expect("utf-8")],
        vec![log],
        vec!["--audit-key-hex", &AUDIT[..20], log],
        vec!["--audit-key-hex", AUDIT, "--checkpoint", "1:zz", log],
        vec!["--audit-key-hex", AUDIT],
    ] {
        let out = audit_verify(&args, &[]);
        assert_refused(&out);
        assert!(!out.stderr.contains(AUDIT), "{out:?}");
    }
    let help = ok(run(&["audit", "verify", "--help"]));
    assert!(
        help.contains("--checkpoint") && help.contains("3  intact, but a line is torn"),
        "{help}"
    );
    let help = ok(run(&["--help"]));
    assert!(
        help.contains("audit verify: the chain is intact but a line is torn"),
        "{help}"
    );
}

/// `capnagent explain` with the test root key on the command line.
fn explain(extra: &[&str], ctx: &str, token: &str) -> Out {
    let mut args = vec!["explain", "--root-key-hex", ROOT, "--context-json", ctx];
    args.extend_from_slice(extra);
    args.push(token);
    run(&args)
}

/// The longest run of hex digits in `text`: a key or a signature would be
/// 64.
fn longest_hex_run(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[test]
fn explain_shows_the_compared_values_and_decides_as_verify() {
    let token = issue_default();
    let out = explain(&[], CTX_OK, &token);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("arg.amount_cents = 1299 <= 5000: true\n"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(r#"tool = "checkout.purchase" == "checkout.purchase": true"#),
        "{out:?}"
    );
    assert!(out.stdout.contains("  proof: not checked"), "{out:?}");
    assert!(out.stdout.ends_with("decision: allowed\n"), "{out:?}");

    let out = explain(&[], CTX_TOO_MUCH, &token);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("arg.amount_cents = 9900 <= 5000: false\n"),
        "{out:?}"
    );
    let receipt = parse_json(verify(CTX_TOO_MUCH, &token).stdout.trim_end());
    let reason = receipt["outcome"]["reason"]
        .as_str()
        .or_else(|| receipt["reason"].as_str())
        .expect("receipt reason")
        .to_owned();
    assert!(
        out.stdout
            .ends_with(&format!("decision: denied by caveat 1, false: {reason}\n")),
        "{out:?}"
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(longest_hex_run(text) < 32, "no key, no signature: {text}");
    }

    // --json: one object, the same decision as verify's receipt.
    let out = explain(&["--json"], CTX_TOO_MUCH, &token);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    let json = parse_json(&out.stdout);
    assert_eq!(json["decision"]["allowed"], false);
    assert_eq!(json["decision"]["reason"], reason.as_str());
    assert_eq!(json["decision"]["caveat"], 1);
    assert_eq!(json["caveats"][1]["comparisons"][0]["value"], "9900");
    assert!(longest_hex_run(&out.stdout) < 32);

    // A missing argument is said as such.
    let ctx =
        r#"{"nowMs":1700000000000,"caller":"agent:planner","tool":"checkout.purchase","args":{}}"#;
    let out = explain(&[], ctx, &token);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("arg.amount_cents <= 5000: arg.amount_cents is missing"),
        "{out:?}"
    );
}

#[test]
fn explain_reports_a_forged_token_and_nothing_more() {
    let other = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
    let token = ok(run(&[
        "issue",
        "--root-key-hex",
        other,
        "--id",
        "x",
        "--caveat",
        r#"tool == "checkout.purchase""#,
    ]));
    let out = explain(&[], CTX_OK, &token);
    assert_refused(&out);
    assert!(out.stderr.contains("forged token"), "{out:?}");
    assert!(!out.stderr.contains("checkout"), "{out:?}");
    // A bad context is an error too.
    assert_refused(&explain(&[], "{}", &issue_default()));
}

#[test]
fn explain_says_a_caveat_does_not_parse() {
    // A genuine token carrying a caveat that does not parse (the issuer
    // refuses to write one; the conformance suite has one).
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../capnagent/tests/vectors/vectors.jsonl");
    let text = std::fs::read_to_string(&path).expect("read the conformance vectors");
    let row = text
        .lines()
        .map(parse_json)
        .find(|row| row["id"] == "eval_order-001")
        .expect("vector present");
    let field = |name: &str| row[name].as_str().expect(name).to_owned();
    let out = run(&[
        "explain",
        "--root-key-hex",
        &field("root_key_hex"),
        "--context-json",
        &field("ctx_json"),
        &field("token"),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains(": does not parse: "), "{out:?}");
    assert!(
        out.stdout
            .contains("decision: denied by caveat 0, parse: caveat parse error"),
        "{out:?}"
    );
}

/// The caveats of a token with a trap of each simple kind.
const TRAPS: [&str; 3] = [
    r#"arg.path starts_with "/srv/""#,
    r#"arg.endpoint matches "api.example.com""#,
    "arg.amount_cents <= 5000",
];

fn issue_caveats(caveats: &[&str]) -> Out {
    let mut args = vec!["issue", "--root-key-hex", ROOT, "--id", "agent-42"];
    for caveat in caveats {
        args.extend_from_slice(&["--caveat", caveat]);
    }
    run(&args)
}

#[test]
fn lint_prints_one_line_per_warning_with_code_and_safer_form() {
    let issued = issue_caveats(&TRAPS);
    let token = ok(issued);
    let out = run(&["lint", &token]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l.split(']').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "warning[starts_with_path",
            "warning[matches_host",
            "warning[no_lower_bound",
            "warning[no_expiry"
        ],
        "{out:?}"
    );
    assert!(
        lines[0].starts_with("warning[starts_with_path]: caveat 0: "),
        "{out:?}"
    );
    assert!(lines.iter().all(|l| l.contains("; safer: ")), "{out:?}");
    assert!(
        lines[3].starts_with("warning[no_expiry]: token: "),
        "{out:?}"
    );

    // --deny-warnings: exit 1; --json: one object.
    assert_eq!(run(&["lint", "--deny-warnings", &token]).code, 1);
    let out = run(&["lint", "--json", &token]);
    assert_eq!(out.code, 0, "{out:?}");
    let json = parse_json(&out.stdout);
    assert_eq!(json["warnings"][2]["code"], "no_lower_bound");
    assert_eq!(json["warnings"][2]["caveat"], 2);
    assert_eq!(
        json["warnings"][2]["safer"],
        "add a caveat arg.amount_cents >= 0"
    );
    assert_eq!(json["warnings"][3]["caveat"], Value::Null);

    // --proofs-configured flags a bearer token.
    let out = run(&["lint", "--proofs-configured", &token]);
    assert!(
        out.stdout.starts_with("warning[no_holder_key]: token: "),
        "{out:?}"
    );
}

#[test]
fn lint_is_quiet_on_a_clean_token_and_lints_predicates_before_issuing() {
    let token = ok(issue_caveats(&[
        r#"tool == "checkout.purchase""#,
        "arg.amount_cents <= 5000 AND arg.amount_cents >= 0",
        "now <= @2999-01-01T00:00:00Z",
    ]));
    let out = run(&["lint", "--deny-warnings", &token]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");

    // Predicates alone, and appended to a token.
    let out = run(&[
        "lint",
        "--caveat",
        "arg.x <= 5",
        "--caveat",
        "arg.x >= 10",
        "--caveat",
        "now <= @2001-01-01T00:00:00Z",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("warning[never_holds]: caveat 1: "),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("warning[expired]: caveat 2: "),
        "{out:?}"
    );
    let out = run(&["lint", "--caveat", "arg.amount_cents >= 6000", &token]);
    assert!(
        out.stdout.contains("warning[never_holds]: caveat 3: "),
        "{out:?}"
    );
    let out = run(&["lint", "--caveat", "arg.x <="]);
    assert!(
        out.stdout.starts_with("warning[unparsable]: caveat 0: "),
        "{out:?}"
    );

    // Errors: nothing to lint, a malformed token.
    assert_eq!(run(&["lint"]).code, 2);
    assert_refused(&run(&["lint", "not-a-token"]));
}

#[test]
fn issue_and_attenuate_warn_on_stderr_and_keep_stdout_the_token() {
    let out = issue_caveats(&TRAPS);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "stdout is the token: {out:?}"
    );
    assert!(
        out.stderr.contains("warning[starts_with_path]: caveat 0: "),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("warning[no_expiry]: token: "),
        "{out:?}"
    );
    let token = out.stdout.trim_end().to_owned();
    // The token works as printed.
    assert_eq!(ok(run(&["inspect", "--json", &token])).lines().count(), 1);

    let out = run(&["attenuate", "--caveat", "arg.amount_cents >= 9000", &token]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.contains("warning[never_holds]: caveat 3: "),
        "{out:?}"
    );
    let narrower = out.stdout.trim_end();
    let inspected = parse_json(&ok(run(&["inspect", "--json", narrower])));
    assert_eq!(inspected["caveats"][3], "arg.amount_cents >= 9000");

    // A clean token: nothing on stderr.
    let out = issue_caveats(&[r#"tool == "t""#, "now <= @2999-01-01T00:00:00Z"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out:?}");
}
