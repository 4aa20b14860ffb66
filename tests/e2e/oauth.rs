//! One OAuth2 token for the whole fleet, on the local stack: the worker containers as Lambda wires
//! them share the token through the ledger table (KMS-encrypted), refresh it before it expires,
//! and replace it once when the API revokes it mid-job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use integration_tests::{MockApi, MockConfig, TestStack, pipeline_yaml, stack};
use mock_api::{MockAuth, OAuth2Config};

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";
const CLIENT_SECRET: &str = "cs-fleet-5a1c-DO-NOT-LEAK";

fn csv(records: usize) -> Vec<u8> {
    let mut text = String::from("id,name\n");
    for i in 0..records {
        text.push_str(&format!("{i},name-{i}\n"));
    }
    text.into_bytes()
}

async fn oauth_api(lifetime_secs: u64) -> Arc<MockApi> {
    let api = MockApi::start(MockConfig {
        auth: MockAuth::OAuth2(OAuth2Config {
            client_id: "fleet-app".into(),
            client_secret: CLIENT_SECRET.into(),
            username: None,
            password: None,
            token_lifetime_secs: lifetime_secs,
        }),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    Arc::new(api)
}

/// Uploads a job of `records` at `rate`/s whose client authenticates with OAuth2 against `api`,
/// its client secret in Secrets Manager.
async fn upload(
    ts: &TestStack,
    api: &MockApi,
    pipeline: &str,
    records: usize,
    rate: u32,
) -> aws_lambda_events::s3::S3Event {
    ts.put_secret(&format!("{pipeline}/client"), CLIENT_SECRET)
        .await;
    let client = format!(
        "max_attempts: 2, rate_limit_per_sec: {rate}, rate_limit_burst: {burst}, \
         auth: {{type: oauth2, token_url: '{base}/oauth2/token', client_id: fleet-app, \
         client_secret: {{secrets_manager: {pipeline}/client}}}} }}",
        burst = (rate / 10).max(1),
        base = api.base_url(),
    );
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 3000, "")
        .replace("max_attempts: 2 }", &client);
    ts.upload(pipeline, &yaml, "in.csv", &csv(records)).await
}

/// Samples the mock's token requests every 250 ms until `done`: (seconds since start, count).
fn sample_token_requests(
    api: &Arc<MockApi>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(f64, u64)>> {
    let api = api.clone();
    tokio::spawn(async move {
        let start = Instant::now();
        let mut samples = Vec::new();
        while !done.load(Ordering::SeqCst) {
            samples.push((start.elapsed().as_secs_f64(), api.stats().token_requests));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        samples.push((start.elapsed().as_secs_f64(), api.stats().token_requests));
        samples
    })
}

/// 20 containers, tokens that live 60 s, a job of more than two lifetimes: the token endpoint
/// sees at most 2 requests in any 60 s, every call is accepted (no token expires in use), and the
/// refreshes did happen (one token per lifetime, not one per container).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_containers_share_one_token_per_lifetime() {
    // 6,000 records at 45/s: about 133 s, two lifetimes and a bit (the longest test of the
    // suite; the unit tests in shared/client/src/oauth2.rs run five lifetimes in paused time).
    const RECORDS: usize = 6_000;
    const RATE: u32 = 45;
    let ts = stack("oauth_fleet").await;
    let api = oauth_api(60).await;
    let event = upload(&ts, &api, "fleet", RECORDS, RATE).await;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_token_requests(&api, done.clone());
    let report = ts.run_for(event, 20, Duration::from_secs(400)).await;
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();

    TestStack::assert_all_succeeded(&report, RECORDS as u64);
    let stats = api.stats();
    assert_eq!(stats.refused_auth, 0, "{stats:?}");
    assert_eq!(stats.accepted_auth, RECORDS as u64, "{stats:?}");
    assert!(report.wall_seconds > 120.0, "{} s", report.wall_seconds);

    for (i, &(t, before)) in samples.iter().enumerate() {
        let within = samples[i..]
            .iter()
            .take_while(|(u, _)| *u <= t + 60.0)
            .last()
            .map_or(before, |(_, n)| *n);
        assert!(
            within - before <= 2,
            "{} token requests in the 60 s after {t:.1} s: {samples:?}",
            within - before
        );
    }
    let lifetimes = (report.wall_seconds / 60.0).floor() as u64;
    assert!(
        stats.tokens_issued >= lifetimes,
        "{} tokens over {:.0} s",
        stats.tokens_issued,
        report.wall_seconds
    );
    println!(
        "oauth fleet: {} token requests, {} tokens, 20 containers, {:.0} s",
        stats.token_requests, stats.tokens_issued, report.wall_seconds
    );
}

/// The API revokes every token mid-job: the fleet refreshes once, the calls refused meanwhile are
/// sent again with the new token, and no record fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_is_replaced_once_and_no_record_fails() {
    const RECORDS: usize = 4_000;
    let ts = stack("oauth_revoke").await;
    let api = oauth_api(3600).await;
    let event = upload(&ts, &api, "revoke", RECORDS, 300).await;
    let revoker = {
        let api = api.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            // Mid-job, and with the first token older than the 5 s under which a 401 is not
            // followed by a refresh (an API that refuses fresh tokens).
            while api.stats().accepted_auth < 1_500 || start.elapsed() < Duration::from_secs(7) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (api.revoke_tokens(), api.stats().accepted_auth)
        })
    };
    let report = ts.run(event, 5).await;
    let (revoked, at) = revoker.await.unwrap();

    TestStack::assert_all_succeeded(&report, RECORDS as u64);
    assert_eq!(report.summary.as_ref().unwrap().failed, 0);
    let stats = api.stats();
    assert_eq!(revoked, 1, "one token was in use");
    assert!(at < RECORDS as u64, "revoked after the job: {at}");
    assert!(stats.refused_auth >= 1, "{stats:?}");
    assert_eq!(stats.accepted_auth, RECORDS as u64, "{stats:?}");
    assert_eq!(stats.tokens_issued, 2, "{stats:?}");
    assert_eq!(stats.token_requests, 2, "{stats:?}");
}
