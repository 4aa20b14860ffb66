//! `fanout limit set|get|clear`, the binary, against the ledger table of a fresh local stack. Run
//! through scripts/with-stack.sh (it sets AWS_ENDPOINT_URL, which the binary's default credential
//! chain and endpoint resolution pick up).

use fanout_aws::leaser::DynamoLeaser;
use fanout_core::ledger::now_ms;
use fanout_core::ports::TokenLeaser;
use integration_tests::stack;
use serde_json::Value;

/// Runs `fanout limit ARGS --prefix PREFIX` (the test stack's): (succeeded, stdout, stderr).
fn limit(table: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("limit")
        .args(args)
        .args(["--prefix", table])
        .output()
        .expect("run fanout");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn get_json(table: &str, name: &str) -> Value {
    let (ok, out, err) = limit(table, &["get", name, "--json"]);
    assert!(ok, "fanout limit get: {err}");
    serde_json::from_str(out.trim()).expect("one JSON line")
}

#[tokio::test]
async fn limit_set_get_and_clear() {
    let ts = stack("cli_limit").await;
    let table = ts.stack.names.prefix.as_str();

    // No override: each pipeline's config applies; nothing leased yet.
    let view = get_json(table, "api");
    assert_eq!(view["limit"], "api");
    assert!(view["override"].is_null(), "{view}");
    assert_eq!(view["measured"]["per_sec"], 0.0);
    let (ok, out, _) = limit(table, &["get", "api"]);
    assert!(ok);
    assert!(
        out.contains("none (each pipeline's client.rate_limit_per_sec applies)"),
        "{out}"
    );

    // The measured rate: the tokens of the last 10 whole windows, each at most its cap.
    let leaser = DynamoLeaser::new(
        fanout_aws::dynamodb_client(&ts.config),
        ts.stack.names.table.as_str(),
    );
    let now = now_ms() / 1000;
    for window in now - 5..now {
        leaser.lease("api", window, 500, 1000).await.unwrap();
    }
    leaser.lease("api", now - 1, 700, 1000).await.unwrap();
    let view = get_json(table, "api");
    assert_eq!(view["measured"]["tokens_leased"], 2500 + 500, "{view}");
    assert_eq!(view["measured"]["per_sec"], 300.0, "{view}");

    let (ok, out, err) = limit(table, &["set", "api", "2000", "--burst", "300"]);
    assert!(ok, "fanout limit set: {err}");
    assert!(out.contains("2000/s") && out.contains("burst 300"), "{out}");
    let view = get_json(table, "api");
    assert_eq!(view["override"]["rate_per_sec"], 2000, "{view}");
    assert_eq!(view["override"]["burst"], 300, "{view}");
    // Other limits are not overridden.
    assert!(get_json(table, "other")["override"].is_null());

    // Values a config could not hold are refused, naming the field; nothing is written.
    for (args, field) in [
        (vec!["set", "api", "0"], "rate_per_sec"),
        (vec!["set", "api", "1000001"], "rate_per_sec"),
        (vec!["set", "api", "10", "--burst", "0"], "burst"),
        (vec!["set", "a#b", "10"], "name"),
    ] {
        let (ok, _, err) = limit(table, &args);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(field), "{args:?}: {err}");
    }
    assert_eq!(get_json(table, "api")["override"]["rate_per_sec"], 2000);

    let (ok, out, _) = limit(table, &["clear", "api"]);
    assert!(ok && out.contains("override removed"), "{out}");
    assert!(get_json(table, "api")["override"].is_null());
    let (ok, out, _) = limit(table, &["clear", "api"]);
    assert!(ok && out.contains("had no override"), "{out}");
}
