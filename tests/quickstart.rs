//! The README's first command: `quickstart` exits 0 and shows an allowed
//! and a denied call with their receipts, the third purchase over a
//! 2-call budget refused, and the audit log.

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
    assert!(stdout.contains("caveat:     calls <= 2"), "{stdout}");
    assert!(
        stdout.contains("purchase 3: POST /tools/checkout.purchase")
            && stdout.contains("-> 403 denied: budget exhausted: calls <= 2 (used 2 of 2)"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("-> 200 allowed").count(), 3, "{stdout}");
    assert!(stdout.contains("allowed receipt: signature"), "{stdout}");
    assert!(stdout.contains("denied  receipt: signature"), "{stdout}");
    assert!(stdout.contains("(5 lines)"), "{stdout}");
    // One allowed receipt shown for step 2, three in the audit log.
    assert_eq!(
        stdout.matches("\"outcome\":{\"kind\":\"allowed\"}").count(),
        4
    );
}

/// The production path: `capnagent keygen` keys, a token minted by
/// `capnagent issue`, the hash-chained audit log checked by `capnagent
/// audit verify` (and a deleted line caught, with its line number), and a
/// scrape of `/metrics`.
#[tokio::test]
async fn quickstart_serves_with_the_clis_keys_and_a_log_the_cli_verifies() {
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(20);
    let dir = tempfile::tempdir().unwrap();
    let keys = capnagent_tests::keygen(dir.path(), "keys.env", &[]);
    let keys_arg = keys.to_str().unwrap().to_owned();
    let log = dir.path().join("audit.ndjson");
    let log_arg = log.to_str().unwrap().to_owned();
    let args = [
        "--serve",
        "--root-key-file",
        &keys_arg,
        "--audit-key-file",
        &keys_arg,
        "--audit-log",
        &log_arg,
        "--metrics-addr",
        "127.0.0.1:0",
    ]
    .map(str::to_owned);
    let (server, ready) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = capnagent_tests::Server::start("quickstart", &args);
        let (ready, _) = server.ready(TIMEOUT);
        (server, ready)
    })
    .await
    .unwrap();
    assert_eq!(ready["server"], "quickstart");
    assert_eq!(ready["audit_log"], log_arg.as_str());
    let base = ready["url"].as_str().unwrap();

    let token = capnagent_tests::issue(
        &keys,
        "ops-1",
        &[r#"tool == "checkout.purchase""#, "arg.amount_cents <= 100"],
        &[],
    );
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for amount in [99, 101, 5] {
        let response = client
            .post(format!("{base}/tools/checkout.purchase"))
            .header("x-api-key", capnagent_examples::PLANNER_API_KEY)
            .bearer_auth(&token)
            .json(&serde_json::json!({"sku": "cable", "amount_cents": amount}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 403, 200]);
    let metrics = reqwest::get(ready["metrics_url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"capnagent_decisions_total{decision="allowed",gate="none",tool="checkout.purchase"} 2"#,
        r#"capnagent_decisions_total{decision="denied",gate="caveat",tool="checkout.purchase"} 1"#,
        r#"capnagent_decision_duration_seconds_count{decision="allowed",tool="checkout.purchase"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }

    let (status, _) = tokio::task::spawn_blocking(move || server.stop(TIMEOUT))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let verify =
        |log: &str| capnagent_tests::cli(&["audit", "verify", log, "--audit-key-file", &keys_arg]);
    let intact = verify(&log_arg);
    assert_eq!(
        intact.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(String::from_utf8_lossy(&intact.stdout).contains("3 records"));

    // Delete the denied call's record: the CLI names the line where the
    // chain breaks.
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(n, _)| *n != 1)
        .map(|(_, l)| l)
        .collect();
    let tampered = dir.path().join("tampered.ndjson");
    std::fs::write(&tampered, kept.join("\n") + "\n").unwrap();
    let broken = verify(tampered.to_str().unwrap());
    assert_eq!(broken.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(stderr.contains("tampered.ndjson:2:"), "{stderr}");
}
