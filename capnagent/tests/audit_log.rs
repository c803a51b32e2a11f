//! The append-only audit log: concurrency, torn lines, blank lines, limits.

use std::io::Write;
use std::sync::Arc;

use capnagent::{AuditLog, AuditLogError, AuditLogIter, Auditor, Context, Durability, Outcome};

fn receipt(n: u64) -> capnagent::Receipt {
    let auditor = Auditor::new(&[8; 32]).expect("key");
    let ctx = Context::builder()
        .now_millis(n)
        .caller("agent")
        .tool("t")
        .build();
    auditor.sign(format!("cap-{n}"), Vec::new(), &ctx, Outcome::Allowed)
}

#[test]
fn concurrent_appends_never_interleave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(AuditLog::open(dir.path().join("a.ndjson")).expect("open"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..100 {
                    log.append(&receipt(t * 1000 + i)).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let auditor = Auditor::new(&[8; 32]).expect("key");
    let all: Vec<_> = log
        .iter()
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("every line is a receipt");
    assert_eq!(all.len(), 800);
    for r in &all {
        auditor.verify_receipt(r).expect("signed");
    }
}

#[test]
fn a_torn_last_line_is_reported_and_later_records_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.ndjson");
    {
        let log = AuditLog::open_with(&path, Durability::Sync).expect("open");
        log.append(&receipt(1)).expect("append");
    }
    // Simulate a crash mid-write: half a record, no newline.
    let half = receipt(2).to_json();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(&half.as_bytes()[..half.len() / 2])
        .expect("write");
    drop(file);

    let items: Vec<_> = AuditLogIter::open(&path).expect("iter").collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(items[1], Err(AuditLogError::Torn { line: 2, .. })));

    // Reopening starts a fresh line: the torn fragment stays visible as an
    // invalid line and the new record is intact.
    let log = AuditLog::open(&path).expect("reopen");
    log.append(&receipt(3)).expect("append");
    let items: Vec<_> = log.iter().expect("iter").collect();
    assert_eq!(items.len(), 3);
    assert!(matches!(
        items[1],
        Err(AuditLogError::Invalid { line: 2, .. })
    ));
    assert_eq!(
        items[2].as_ref().expect("intact").capability_identifier(),
        "cap-3"
    );
}

#[test]
fn blank_lines_are_skipped_and_bad_lines_do_not_stop_iteration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.ndjson");
    let text = format!(
        "{}\n\n   \nnot json\n{}\n",
        receipt(1).to_json(),
        receipt(2).to_json()
    );
    std::fs::write(&path, text).expect("write");
    let items: Vec<_> = AuditLogIter::open(&path).expect("iter").collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok());
    assert!(matches!(
        items[1],
        Err(AuditLogError::Invalid { line: 4, .. })
    ));
    assert!(items[2].is_ok());
}

#[test]
fn overlong_lines_are_skipped_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.ndjson");
    let text = format!("{}\n{}\n", "x".repeat(10_000), receipt(1).to_json());
    std::fs::write(&path, text).expect("write");
    let items: Vec<_> = AuditLogIter::open(&path)
        .expect("iter")
        .max_line(1024)
        .collect();
    assert_eq!(items.len(), 2);
    assert!(matches!(
        items[0],
        Err(AuditLogError::TooLong { line: 1, max: 1024 })
    ));
    assert!(items[1].is_ok());
}

#[test]
fn append_all_writes_whole_lines_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(dir.path().join("a.ndjson")).expect("open");
    let batch: Vec<_> = (0..5).map(receipt).collect();
    assert_eq!(log.append_all(&batch).expect("append"), 5);
    assert_eq!(log.append_all(&[]).expect("nothing"), 0);
    let read: Vec<_> = log
        .iter()
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("whole lines");
    assert_eq!(read, batch);
}

#[test]
fn try_append_writes_whole_lines_or_nothing_beside_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.ndjson");
    let log = Arc::new(AuditLog::open(&path).expect("open"));
    assert_eq!(log.durability(), Durability::Flush);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tried = 0u64;
                for i in 0..200 {
                    let r = receipt(t * 1000 + i);
                    if t % 2 == 0 {
                        log.append(&r).expect("append");
                    } else if let Some(result) = log.try_append(&r) {
                        result.expect("written");
                        tried += 1;
                    }
                }
                if t % 2 == 0 { 200 } else { tried }
            })
        })
        .collect();
    let written: u64 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    let lines: Vec<_> = AuditLog::open(&path)
        .expect("open")
        .iter()
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("every line a whole receipt");
    assert_eq!(lines.len() as u64, written);
    assert!(written >= 400, "the blocking appends all landed");
}
