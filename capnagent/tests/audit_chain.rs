//! The hash-chained audit log, through the public API on real files: every
//! kind of tampering found at the right line, torn writes, rotation,
//! reopening, concurrent appenders.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use capnagent::{
    AuditLog, AuditLogIter, Auditor, ChainBreak, ChainBreakKind, ChainReport, ChainVerifier,
    Checkpoint, Context, Durability, Outcome, Receipt, audit_log_files, verify_audit_log,
};

const KEY: [u8; 32] = [8; 32];
const OTHER_KEY: [u8; 32] = [5; 32];

fn auditor() -> Auditor {
    Auditor::new(&KEY).expect("key")
}

fn receipt_under(auditor: &Auditor, n: u64) -> Receipt {
    let ctx = Context::builder()
        .now_millis(1_700_000_000_000 + n)
        .caller("agent")
        .tool("t")
        .build();
    auditor.sign(format!("cap-{n}"), Vec::new(), &ctx, Outcome::Allowed)
}

fn receipt(n: u64) -> Receipt {
    receipt_under(&auditor(), n)
}

/// A chained log of `n` records (`cap-0` ..) at `dir/audit.ndjson`.
fn chained_log(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("audit.ndjson");
    let log = AuditLog::builder(&path)
        .chained(&auditor())
        .open()
        .expect("open");
    for i in 0..n {
        log.append(&receipt(i)).expect("append");
    }
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

fn verify(path: &Path) -> Result<ChainReport, ChainBreak> {
    verify_audit_log(&[path], &[auditor()], None)
}

/// The break's line and kind, asserting it is in `path`.
fn broken_at(path: &Path, result: Result<ChainReport, ChainBreak>) -> (usize, ChainBreakKind) {
    let brk = result.expect_err("a break");
    assert_eq!(brk.file, path, "{brk}");
    (brk.line, brk.kind)
}

/// The value of a top-level `"key":` in a record line, up to the next
/// comma (for `seq`) or quote-delimited hex.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("\"{key}\":")).expect("key") + key.len() + 3;
    let rest = &line[start..];
    if let Some(hex) = rest.strip_prefix('"') {
        &hex[..64]
    } else {
        &rest[..rest.find(',').expect("comma")]
    }
}

#[test]
fn an_intact_chain_verifies_and_reads_back_as_receipts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 5);
    let all = lines(&path);
    assert_eq!(all.len(), 5);
    assert!(all[0].starts_with(&format!("{{\"seq\":0,\"prev\":\"{}\"", "0".repeat(64))));
    // The receipt is wrapped verbatim.
    assert!(all[3].contains(&format!("\"receipt\":{},\"mac\":", receipt(3).to_json())));
    assert_eq!(field(&all[1], "prev"), field(&all[0], "mac"));
    let report = verify(&path).expect("intact");
    assert_eq!(report.records, 5);
    assert!(report.chained);
    let head = report.head.expect("head");
    assert_eq!(head.seq, 4);
    assert_eq!(head.to_string(), format!("4:{}", field(&all[4], "mac")));
    // The checkpoint verifies too, and the receipts read back.
    verify_audit_log(&[&path], &[auditor()], Some(head)).expect("at the checkpoint");
    let read: Vec<Receipt> = AuditLogIter::open(&path)
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("receipts");
    assert_eq!(read, (0..5).map(receipt).collect::<Vec<_>>());
}

#[test]
fn deleting_a_middle_line_is_a_seq_gap_at_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 6);
    let mut all = lines(&path);
    all.remove(2);
    write_lines(&path, &all);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 3);
    assert!(
        matches!(
            kind,
            ChainBreakKind::SeqGap {
                expected: 2,
                found: 3
            }
        ),
        "{kind}"
    );
}

#[test]
fn deleting_the_first_line_is_a_seq_gap_at_line_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 3);
    let all = lines(&path);
    write_lines(&path, &all[1..]);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 1);
    assert!(matches!(
        kind,
        ChainBreakKind::SeqGap {
            expected: 0,
            found: 1
        }
    ));
}

#[test]
fn a_replayed_line_is_out_of_order_and_a_forged_one_has_a_bad_mac() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 6);
    let all = lines(&path);
    let mut replayed = all.clone();
    replayed.insert(4, all[1].clone());
    write_lines(&path, &replayed);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 5);
    assert!(matches!(
        kind,
        ChainBreakKind::Reordered {
            expected: 4,
            found: 1
        }
    ));

    // A record made up without the key: right seq and prev, any mac.
    let mut forged = all.clone();
    let fake = format!(
        "{{\"seq\":4,\"prev\":\"{}\",\"receipt\":{},\"mac\":\"{}\"}}",
        field(&all[3], "mac"),
        receipt(99).to_json(),
        "ab".repeat(32)
    );
    forged.insert(4, fake);
    write_lines(&path, &forged);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 5);
    assert!(matches!(kind, ChainBreakKind::BadChainMac), "{kind}");
}

#[test]
fn swapping_two_lines_is_found_at_the_first_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 6);
    let mut all = lines(&path);
    all.swap(2, 4);
    write_lines(&path, &all);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 3);
    assert!(matches!(
        kind,
        ChainBreakKind::SeqGap {
            expected: 2,
            found: 4
        }
    ));
}

#[test]
fn editing_a_receipt_field_breaks_its_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 5);
    let mut all = lines(&path);
    assert!(all[3].contains("\"cap-3\""));
    all[3] = all[3].replace("\"cap-3\"", "\"cap-X\"");
    write_lines(&path, &all);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 4);
    assert!(
        matches!(kind, ChainBreakKind::BadReceiptSignature),
        "{kind}"
    );
}

#[test]
fn editing_seq_prev_or_mac_breaks_the_chain_mac() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 5);
    let all = lines(&path);
    let flip = |hex: &str| {
        let mut bytes = hex.to_owned().into_bytes();
        bytes[10] = if bytes[10] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).expect("ascii")
    };
    let edits = [
        all[2].replacen("{\"seq\":2,", "{\"seq\":7,", 1),
        all[2].replacen(field(&all[2], "prev"), &flip(field(&all[2], "prev")), 1),
        all[2].replacen(field(&all[2], "mac"), &flip(field(&all[2], "mac")), 1),
    ];
    for edited in edits {
        assert_ne!(edited, all[2]);
        let mut tampered = all.clone();
        tampered[2] = edited;
        write_lines(&path, &tampered);
        let (line, kind) = broken_at(&path, verify(&path));
        assert_eq!(line, 3);
        assert!(matches!(kind, ChainBreakKind::BadChainMac), "{kind}");
    }
    // A record whose layout was changed is malformed, not skipped.
    let mut tampered = all.clone();
    tampered[2] = all[2].replacen("\"prev\":", "\"prev\" :", 1);
    write_lines(&path, &tampered);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 3);
    assert!(matches!(kind, ChainBreakKind::Malformed(_)), "{kind}");
}

#[test]
fn truncation_is_found_against_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 6);
    let checkpoint = verify(&path).expect("intact").head.expect("head");
    let all = lines(&path);
    write_lines(&path, &all[..4]);
    // Without the checkpoint, a shorter log is a valid log...
    assert_eq!(verify(&path).expect("prefix").records, 4);
    // ...with it, the cut is found, one past the last line.
    let (line, kind) = broken_at(
        &path,
        verify_audit_log(&[&path], &[auditor()], Some(checkpoint)),
    );
    assert_eq!(line, 5);
    assert!(
        matches!(kind, ChainBreakKind::Truncated { last_seq: Some(3), checkpoint: c } if c == checkpoint),
        "{kind}"
    );
    // A log rewritten from scratch under the key does not match it either.
    std::fs::remove_file(&path).expect("rm");
    let rewritten = chained_log(dir.path(), 7);
    let (line, kind) = broken_at(
        &rewritten,
        verify_audit_log(
            &[&rewritten],
            &[auditor()],
            Some(Checkpoint {
                seq: 2,
                mac: checkpoint.mac,
            }),
        ),
    );
    assert_eq!(line, 3);
    assert!(matches!(
        kind,
        ChainBreakKind::CheckpointMismatch { seq: 2 }
    ));
}

#[test]
fn a_plain_receipt_spliced_into_a_chained_log_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 4);
    let all = lines(&path);
    let mut spliced = all.clone();
    spliced.insert(2, receipt(2).to_json());
    write_lines(&path, &spliced);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 3);
    assert!(matches!(kind, ChainBreakKind::UnchainedLine), "{kind}");
    // At the very start too.
    let mut spliced = all.clone();
    spliced.insert(0, receipt(7).to_json());
    write_lines(&path, &spliced);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 1);
    assert!(matches!(kind, ChainBreakKind::UnchainedLine), "{kind}");
}

#[test]
fn a_line_from_another_log_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 5);
    let all = lines(&path);
    // Another log under another key: its receipts are not ours.
    let other_path = dir.path().join("other.ndjson");
    let other_auditor = Auditor::new(&OTHER_KEY).expect("key");
    let other = AuditLog::builder(&other_path)
        .chained(&other_auditor)
        .open()
        .expect("open");
    // Another log under the same key: authentic, but another chain.
    let same_key_path = dir.path().join("same-key.ndjson");
    let same_key = AuditLog::builder(&same_key_path)
        .chained(&auditor())
        .open()
        .expect("open");
    for i in 0..5 {
        other
            .append(&receipt_under(&other_auditor, 100 + i))
            .expect("append");
        same_key.append(&receipt(100 + i)).expect("append");
    }
    let mut mixed = all.clone();
    mixed[3] = lines(&other_path)[3].clone();
    write_lines(&path, &mixed);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 4);
    assert!(
        matches!(kind, ChainBreakKind::BadReceiptSignature),
        "{kind}"
    );

    let mut mixed = all.clone();
    mixed[3] = lines(&same_key_path)[3].clone();
    write_lines(&path, &mixed);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 4);
    assert!(matches!(kind, ChainBreakKind::PrevMismatch), "{kind}");

    // With both keys (key rotation), the other log verifies on its own.
    let both = [auditor(), other_auditor];
    assert_eq!(
        verify_audit_log(&[&other_path], &both, None)
            .expect("intact")
            .records,
        5
    );
    assert!(verify_audit_log(&[&other_path], &both[..1], None).is_err());
}

#[test]
fn garbage_in_the_middle_is_malformed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 3);
    let mut all = lines(&path);
    all.insert(1, "not json at all".to_owned());
    write_lines(&path, &all);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 2);
    assert!(matches!(kind, ChainBreakKind::Malformed(_)), "{kind}");
}

/// Appends half of a record's line, no newline: a crash mid-write.
fn tear(path: &Path, n: u64) {
    let line = format!(
        "{{\"seq\":{n},\"prev\":\"{}\",\"receipt\":{}",
        "0".repeat(64),
        receipt(n).to_json()
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    file.write_all(&line.as_bytes()[..line.len() * 2 / 3])
        .expect("write");
}

#[test]
fn a_torn_last_line_is_reported_and_the_chain_continues_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 3);
    tear(&path, 3);
    let brk = verify(&path).expect_err("torn");
    assert_eq!((brk.line, brk.is_torn_only()), (4, true), "{brk}");
    let report = brk.report.expect("the rest verified");
    assert_eq!((report.records, report.torn_lines), (3, 1));
    assert_eq!(report.head.map(|h| h.seq), Some(2));

    // Reopen (the torn line stays, on its own line) and append more.
    let log = AuditLog::builder(&path)
        .chained(&auditor())
        .open()
        .expect("reopen after a torn write");
    log.append(&receipt(3)).expect("append");
    log.append(&receipt(4)).expect("append");
    drop(log);
    assert_eq!(lines(&path).len(), 6);
    let brk = verify(&path).expect_err("still torn");
    assert_eq!((brk.line, brk.is_torn_only()), (4, true), "{brk}");
    let report = brk.report.expect("the rest verified");
    assert_eq!(report.records, 5);
    assert_eq!(report.head.map(|h| h.seq), Some(4), "continues from seq 2");

    // A torn line is no cover for a deletion after it.
    let mut all = lines(&path);
    all.remove(4);
    write_lines(&path, &all);
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 5);
    assert!(
        matches!(
            kind,
            ChainBreakKind::SeqGap {
                expected: 3,
                found: 4
            }
        ),
        "{kind}"
    );
}

#[test]
fn opening_refuses_to_chain_onto_a_log_it_cannot_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A plain log.
    let plain = dir.path().join("plain.ndjson");
    AuditLog::open(&plain)
        .expect("open")
        .append(&receipt(0))
        .expect("append");
    let err = AuditLog::builder(&plain)
        .chained(&auditor())
        .open()
        .expect_err("plain");
    assert!(err.to_string().contains("plain receipt"), "{err}");
    // A chained log under another key.
    let path = chained_log(dir.path(), 3);
    let other = Auditor::new(&OTHER_KEY).expect("key");
    let err = AuditLog::builder(&path)
        .chained(&other)
        .open()
        .expect_err("other key");
    assert!(err.to_string().contains("does not verify"), "{err}");
    // A chained log whose last record was edited.
    let mut all = lines(&path);
    all[2] = all[2].replacen("{\"seq\":2,", "{\"seq\":9,", 1);
    write_lines(&path, &all);
    let err = AuditLog::builder(&path)
        .chained(&auditor())
        .open()
        .expect_err("edited");
    assert!(err.to_string().contains("does not verify"), "{err}");
    // Nothing was appended by the refusals.
    assert_eq!(lines(&path).len(), 3);
}

#[test]
fn a_new_audit_key_continues_the_chain_with_the_old_one_as_a_previous_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 3);
    let new = Auditor::new(&OTHER_KEY).expect("key");
    let log = AuditLog::builder(&path)
        .chained(&new)
        .previous_keys(&[auditor()])
        .open()
        .expect("continues under the new key");
    for i in 3..5 {
        log.append(&receipt_under(&new, i)).expect("append");
    }
    drop(log);
    // Both keys: one chain, seq 0..=4, across the change of key.
    let report = ChainVerifier::new(&[new.clone(), auditor()])
        .verify(&[&path])
        .expect("intact");
    assert_eq!(report.records, 5);
    // The new key alone does not vouch for the first records, the old
    // alone not for the last.
    assert!(
        ChainVerifier::new(std::slice::from_ref(&new))
            .verify(&[&path])
            .is_err()
    );
    let (line, _) = broken_at(&path, verify(&path));
    assert_eq!(line, 4);
    // Reopening with the new key alone works now (its last record is
    // under it).
    AuditLog::builder(&path)
        .chained(&new)
        .open()
        .expect("last record under the new key");
}

#[test]
fn a_plain_log_is_not_chained_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain.ndjson");
    let log = AuditLog::open(&path).expect("open");
    for i in 0..3 {
        log.append(&receipt(i)).expect("append");
    }
    let (line, kind) = broken_at(&path, verify(&path));
    assert_eq!(line, 1);
    assert!(matches!(kind, ChainBreakKind::NotChained), "{kind}");
    let report = ChainVerifier::new(&[auditor()])
        .allow_unchained(true)
        .verify(&[&path])
        .expect("receipts valid");
    assert_eq!(
        (report.records, report.chained, report.head),
        (3, false, None)
    );
    // Still every receipt is checked.
    let mut all = lines(&path);
    all[1] = all[1].replace("cap-1", "cap-9");
    write_lines(&path, &all);
    let brk = ChainVerifier::new(&[auditor()])
        .allow_unchained(true)
        .verify(&[&path])
        .expect_err("forged receipt");
    assert_eq!(brk.line, 2);
    assert!(matches!(brk.kind, ChainBreakKind::BadReceiptSignature));
}

/// A chained log rotated at `rotate_at` bytes with `n` records.
fn rotated_log(dir: &Path, n: u64, rotate_at: u64) -> (PathBuf, AuditLog) {
    let path = dir.join("audit.ndjson");
    let log = AuditLog::builder(&path)
        .chained(&auditor())
        .durability(Durability::Sync)
        .rotate_at(rotate_at)
        .open()
        .expect("open");
    for i in 0..n {
        log.append(&receipt(i)).expect("append");
    }
    (path, log)
}

#[test]
fn rotation_carries_the_chain_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record_len = {
        let probe = tempfile::tempdir().expect("tempdir");
        let path = chained_log(probe.path(), 1);
        std::fs::metadata(path).expect("meta").len()
    };
    // Three records per file.
    let (path, log) = rotated_log(dir.path(), 20, record_len * 3 + 10);
    let files = log.files().expect("files");
    assert_eq!(files.len(), 7, "{files:?}");
    assert_eq!(files[0], dir.path().join("audit.ndjson.000001"));
    assert_eq!(files[5], dir.path().join("audit.ndjson.000006"));
    assert_eq!(files[6], path);
    for file in &files[..6] {
        assert!(std::fs::metadata(file).expect("meta").len() <= record_len * 3 + 10);
    }
    let report = verify_audit_log(&files, &[auditor()], None).expect("intact");
    assert_eq!((report.records, report.files), (20, 7));
    assert_eq!(report.head.map(|h| h.seq), Some(19));
    // The second file's first record continues the first file's chain.
    let first = lines(&files[0]);
    let second = lines(&files[1]);
    assert!(second[0].starts_with("{\"seq\":3,"));
    assert_eq!(field(&second[0], "prev"), field(&first[2], "mac"));
    // Reopening continues where it was, and numbers keep increasing.
    drop(log);
    let (_, log) = rotated_log(dir.path(), 4, record_len * 3 + 10);
    let files = log.files().expect("files");
    assert_eq!(files.len(), 8);
    let report = verify_audit_log(&files, &[auditor()], None).expect("intact");
    assert_eq!(report.records, 24);

    // The active file alone does not start at seq 0.
    let active = [path.clone()];
    let brk = verify_audit_log(&active, &[auditor()], None).expect_err("predecessors missing");
    assert!(matches!(
        brk.kind,
        ChainBreakKind::SeqGap { expected: 0, .. }
    ));

    // Deleting a whole rotated file is found at the next file's first line.
    std::fs::remove_file(&files[2]).expect("rm");
    let files = audit_log_files(&path).expect("files");
    let brk = verify_audit_log(&files, &[auditor()], None).expect_err("file missing");
    assert_eq!((brk.file.as_path(), brk.line), (files[2].as_path(), 1));
    assert!(
        matches!(
            brk.kind,
            ChainBreakKind::SeqGap {
                expected: 6,
                found: 9
            }
        ),
        "{brk}"
    );
}

#[test]
fn deleting_the_first_or_last_rotated_file_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, log) = rotated_log(dir.path(), 12, 600);
    let files = log.files().expect("files");
    assert!(files.len() >= 4, "{files:?}");
    std::fs::remove_file(&files[0]).expect("rm");
    let rest = audit_log_files(&path).expect("files");
    let brk = verify_audit_log(&rest, &[auditor()], None).expect_err("first file missing");
    assert_eq!((brk.file.as_path(), brk.line), (rest[0].as_path(), 1));
    assert!(matches!(
        brk.kind,
        ChainBreakKind::SeqGap { expected: 0, .. }
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let (path, log) = rotated_log(dir.path(), 12, 600);
    let files = log.files().expect("files");
    let last_rotated = &files[files.len() - 2];
    std::fs::remove_file(last_rotated).expect("rm");
    let rest = audit_log_files(&path).expect("files");
    let brk = verify_audit_log(&rest, &[auditor()], None).expect_err("last rotated missing");
    assert_eq!(brk.file, path);
    assert!(matches!(brk.kind, ChainBreakKind::SeqGap { .. }), "{brk}");
}

#[test]
fn a_crash_just_after_rotating_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, log) = rotated_log(dir.path(), 5, 600);
    drop(log);
    // The crash: the active file was renamed, the new one never created.
    let next = audit_log_files(&path).expect("files").len();
    let renamed = dir.path().join(format!("audit.ndjson.{next:06}"));
    std::fs::rename(&path, &renamed).expect("rename");
    assert!(!path.exists());
    let files = audit_log_files(&path).expect("files");
    assert_eq!(files.last(), Some(&renamed));
    let before = verify_audit_log(&files, &[auditor()], None).expect("intact");
    assert_eq!(before.records, 5);
    // Reopen: the chain continues from the renamed file.
    let log = AuditLog::builder(&path)
        .chained(&auditor())
        .rotate_at(600)
        .open()
        .expect("reopen");
    log.append(&receipt(5)).expect("append");
    let first_new = lines(&path);
    assert!(first_new[0].starts_with("{\"seq\":5,"), "{first_new:?}");
    let after = verify_audit_log(&log.files().expect("files"), &[auditor()], None).expect("intact");
    assert_eq!(after.records, 6);
    assert_eq!(after.head.map(|h| h.seq), Some(5));
}

#[test]
fn concurrent_appenders_make_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.ndjson");
    let log = Arc::new(
        AuditLog::builder(&path)
            .chained(&auditor())
            .rotate_at(16 * 1024)
            .open()
            .expect("open"),
    );
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let r = receipt(t * 1000 + i);
                    match i % 3 {
                        0 => log.append(&r).expect("append"),
                        1 => {
                            log.append_all([&r, &receipt(t * 1000 + 500 + i)])
                                .expect("append_all");
                        }
                        _ => {
                            let written = loop {
                                match log.try_append(&r) {
                                    Some(written) => break written,
                                    None => std::thread::yield_now(),
                                }
                            };
                            written.expect("try_append");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let files = log.files().expect("files");
    assert!(files.len() > 1, "rotated while appending");
    let report = verify_audit_log(&files, &[auditor()], None).expect("one chain");
    // 50 per thread, plus a second record for every third.
    assert_eq!(report.records, 6 * (50 + 17));
    assert_eq!(report.head.map(|h| h.seq), Some(6 * 67 - 1));
}

#[test]
fn lines_over_the_limit_are_malformed_and_keys_never_print() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chained_log(dir.path(), 2);
    let brk = ChainVerifier::new(&[auditor()])
        .max_line(64)
        .verify(&[&path])
        .expect_err("over the limit");
    assert_eq!(brk.line, 1);
    assert!(
        matches!(&brk.kind, ChainBreakKind::Malformed(why) if why.contains("longer than 64")),
        "{brk}"
    );
    // Neither the log nor the verifier prints its keys.
    let secret = Auditor::new(&[0x5a; 32]).expect("key");
    let log = AuditLog::builder(dir.path().join("k.ndjson"))
        .chained(&secret)
        .open()
        .expect("open");
    let printed = format!("{log:?} {:?}", ChainVerifier::new(&[secret]));
    assert!(
        !printed.contains("5a5a") && !printed.contains("90, 90"),
        "{printed}"
    );
}

#[test]
fn a_plain_log_rotates_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain.ndjson");
    let log = AuditLog::builder(&path)
        .rotate_at(700)
        .open()
        .expect("open");
    assert!(!log.is_chained());
    for i in 0..6 {
        log.append(&receipt(i)).expect("append");
    }
    let files = log.files().expect("files");
    assert!(files.len() >= 3, "{files:?}");
    let mut read = Vec::new();
    for file in &files {
        assert!(std::fs::metadata(file).expect("meta").len() <= 700);
        for item in AuditLogIter::open(file).expect("iter") {
            read.push(item.expect("receipt"));
        }
    }
    assert_eq!(read, (0..6).map(receipt).collect::<Vec<_>>());
}
