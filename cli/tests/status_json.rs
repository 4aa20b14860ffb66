//! `fanout status --json`, the binary, against a finished job on the local stack: its totals are
//! the summary's. Run through scripts/with-stack.sh (it sets AWS_ENDPOINT_URL, which the binary's
//! default credential chain and endpoint resolution pick up).

use integration_tests::{MockApi, MockConfig, pipeline_yaml, stack};
use serde_json::Value;

fn status_json(args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("status")
        .args(args)
        .arg("--json")
        .output()
        .expect("run fanout");
    assert!(
        out.status.success(),
        "fanout status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_json_prints_the_summary_totals() {
    let ts = stack("cli_status").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let mut csv = String::from("id,name\n");
    for i in 0..300 {
        csv.push_str(&if i % 25 == 0 {
            format!("x{i},bad\n")
        } else {
            format!("{i},n{i}\n")
        });
    }
    let yaml = pipeline_yaml(
        "csv",
        &api.base_url(),
        "[{name: id, type: integer, required: true}, {name: name}]",
        1500,
        "",
    );
    let event = ts
        .upload("clistatus", &yaml, "in.csv", csv.as_bytes())
        .await;
    let summary = serde_json::to_value(ts.run(event, 2).await.summary.expect("a summary")).unwrap();
    let job = summary["job_id"].as_str().unwrap();
    let prefix = ts.stack.names.prefix.as_str();

    let by_id = status_json(&[job, "--prefix", prefix]);
    // Without a job id: the most recent job of the stack's table, which is this one.
    let latest = status_json(&["--prefix", prefix, "--last", "1"]);
    for lines in [by_id, latest] {
        assert_eq!(lines.len(), 1);
        let s = &lines[0];
        assert_eq!(s["job_id"], summary["job_id"]);
        assert_eq!(s["status"], "COMPLETED");
        assert_eq!(s["records"], summary["input_records"]);
        for k in [
            "succeeded",
            "failed",
            "rejected",
            "blank_lines",
            "bytes_read",
        ] {
            assert_eq!(s[k], summary[k], "{k}");
        }
        assert_eq!(s["manifests_done"], summary["manifests"]);
        assert_eq!(s["manifests_total"], summary["manifests"]);
    }
}

/// An operator command names the stack it cannot find, says how one is made, and makes none.
#[tokio::test]
async fn an_operator_command_on_a_missing_stack_creates_nothing() {
    let prefix = format!("absent-{}", std::process::id());
    for args in [
        vec!["status", "--prefix", &prefix],
        vec!["replay", "j-0", "--prefix", &prefix],
        vec!["pipeline", "list", "--prefix", &prefix],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(&args)
            .output()
            .expect("run fanout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(&format!("local stack \"{prefix}\"")) && err.contains("fanout local up"),
            "{args:?}: {err}"
        );
    }
    let config = fanout_aws::load_config().await;
    let queues = aws_sdk_sqs::Client::new(&config)
        .list_queues()
        .queue_name_prefix(&prefix)
        .send()
        .await
        .unwrap();
    assert!(queues.queue_urls().is_empty(), "{queues:?}");
    let err = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["status", "--stack", "no-such-stack"])
        .output()
        .expect("run fanout");
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("stack no-such-stack"), "{err}");
}
