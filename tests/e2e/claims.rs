//! The DynamoDB adapters for manifest claims and continuation accounting, on the local AWS.

use fanout_aws::dynamo::DynamoLedger;
use fanout_core::claims::ClaimOutcome;
use fanout_core::ledger::{Counts, JobRecord, JobStatus, ManifestRecord};
use fanout_core::ports::JobLedger;
use fanout_core::ports::ManifestClaims;
use integration_tests::stack;

async fn ledger(test: &str) -> DynamoLedger {
    let ts = stack(test).await;
    DynamoLedger::new(
        aws_sdk_dynamodb::Client::new(&ts.config),
        ts.stack.names.table.clone(),
    )
}

const NOW: u64 = 1_000_000;

#[tokio::test]
async fn a_live_claim_excludes_others_and_a_completed_one_skips_work() {
    let l = ledger("claims_live").await;
    let acquired = l.claim("j", "000001", "a", NOW + 5_000, NOW).await.unwrap();
    assert_eq!(acquired, ClaimOutcome::Acquired { taken_over: false });
    let other = l
        .claim("j", "000001", "b", NOW + 9_000, NOW + 1_000)
        .await
        .unwrap();
    assert_eq!(
        other,
        ClaimOutcome::HeldByOther {
            expires_at_ms: NOW + 5_000
        }
    );
    // Another unit of the same job is independent.
    let sibling = l
        .claim("j", "000001.001", "b", NOW + 9_000, NOW)
        .await
        .unwrap();
    assert_eq!(sibling, ClaimOutcome::Acquired { taken_over: false });

    l.complete("j", "000001").await.unwrap();
    // Completed is final: even long after any expiry.
    let later = l
        .claim("j", "000001", "c", NOW + 99_000, NOW + 90_000)
        .await
        .unwrap();
    assert_eq!(later, ClaimOutcome::Completed);
}

#[tokio::test]
async fn an_expired_claim_is_taken_over_and_only_its_holder_releases_it() {
    let l = ledger("claims_expiry").await;
    l.claim("j", "000002", "dead", NOW + 5_000, NOW)
        .await
        .unwrap();
    let takeover = l
        .claim("j", "000002", "alive", NOW + 20_000, NOW + 5_001)
        .await
        .unwrap();
    assert_eq!(takeover, ClaimOutcome::Acquired { taken_over: true });
    // The dead holder's release (had it come back) does not free the new holder's claim.
    l.release("j", "000002", "dead").await.unwrap();
    let third = l
        .claim("j", "000002", "third", NOW + 30_000, NOW + 6_000)
        .await
        .unwrap();
    assert!(
        matches!(third, ClaimOutcome::HeldByOther { .. }),
        "{third:?}"
    );
    // Its own release frees it at once.
    l.release("j", "000002", "alive").await.unwrap();
    let fourth = l
        .claim("j", "000002", "fourth", NOW + 30_000, NOW + 6_000)
        .await
        .unwrap();
    assert_eq!(fourth, ClaimOutcome::Acquired { taken_over: false });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_claims_exactly_one_wins() {
    let l = ledger("claims_race").await;
    for round in 0..5 {
        let unit = format!("00000{round}");
        let claims = (0..12).map(|h| {
            let (l, unit) = (l.clone(), unit.clone());
            tokio::spawn(async move {
                l.claim("j", &unit, &format!("h{h}"), NOW + 5_000, NOW)
                    .await
            })
        });
        let outcomes: Vec<ClaimOutcome> = futures_join(claims).await;
        let won = outcomes
            .iter()
            .filter(|o| matches!(o, ClaimOutcome::Acquired { .. }))
            .count();
        assert_eq!(won, 1, "round {round}: {outcomes:?}");
    }
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<anyhow::Result<T>>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn a_continued_manifest_adds_its_continuation_to_the_total_once() {
    let l = ledger("claims_total").await;
    let job = JobRecord {
        redo: None,
        job_id: "j".into(),
        status: JobStatus::Running,
        bucket: "b".into(),
        key: "k".into(),
        version_id: None,
        pipeline: "p".into(),
        manifests_total: 2,
        manifests_done: 0,
        counts: Counts::default(),
        created_at_ms: NOW,
        finished_at_ms: None,
        error: None,
        config: None,
    };
    l.create_job(&job).await.unwrap();
    let parent = ManifestRecord {
        quote: None,
        job_id: "j".into(),
        seq: 1,
        part: 0,
        continued_at: Some(4242),
        counts: Counts {
            records: 3,
            succeeded: 3,
            ..Counts::default()
        },
        duration_ms: 1,
        latency_histogram: Vec::new(),
    };
    assert!(l.record_manifest(&parent).await.unwrap());
    assert!(!l.record_manifest(&parent).await.unwrap(), "recorded once");
    let j = l.get_job("j").await.unwrap().unwrap();
    assert_eq!((j.manifests_total, j.manifests_done), (3, 1));
    assert_eq!(l.manifest("j", 1, 0).await.unwrap(), Some(parent.clone()));
    assert_eq!(l.manifest("j", 1, 1).await.unwrap(), None);

    let other = ManifestRecord {
        quote: None,
        seq: 0,
        continued_at: None,
        ..parent.clone()
    };
    assert!(l.record_manifest(&other).await.unwrap());
    // Two of three recorded: not complete until the continuation is.
    assert!(!l.claim_completion("j", NOW).await.unwrap());
    let cont = ManifestRecord {
        quote: None,
        part: 1,
        continued_at: None,
        ..parent
    };
    assert!(l.record_manifest(&cont).await.unwrap());
    assert!(l.claim_completion("j", NOW).await.unwrap());
    let listed = l.manifests("j").await.unwrap();
    assert_eq!(
        listed.len(),
        3,
        "claims are not listed as manifests: {listed:?}"
    );
}
