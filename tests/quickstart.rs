//! The README's first command: `quickstart` exits 0 and shows an allowed
//! and a denied call with their receipts, and the audit log.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn quickstart_shows_an_allowed_and_a_denied_call() {
    let output = Command::new(capnagent_tests::example_bin("quickstart"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("-> 200 allowed"), "{stdout}");
    assert!(
        stdout.contains("-> 403 denied: caveat failed: tool == \"checkout.purchase\""),
        "{stdout}"
    );
    assert!(stdout.contains("allowed receipt: signature"), "{stdout}");
    assert!(stdout.contains("denied  receipt: signature"), "{stdout}");
    assert!(stdout.contains("(2 lines)"), "{stdout}");
    assert_eq!(
        stdout.matches("\"outcome\":{\"kind\":\"allowed\"}").count(),
        2
    );
}
