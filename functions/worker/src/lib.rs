//! The worker's wiring: its Lambda environment → the AWS adapters and the API client stack → the
//! handler's deps. The local runner (`fanout local run`) builds each simulated container through
//! the same [`container`] function, so what it runs is what Lambda runs.

use std::sync::Arc;
use std::time::Duration;

use fanout_aws::breaker::DynamoBreakerStores;
use fanout_aws::rate_override::DynamoRateOverrides;
use fanout_aws::secrets::AwsSecretSource;
use fanout_aws::token_store::DynamoTokenStore;
use fanout_aws::{cloudwatch, dynamo, leaser::DynamoLeaser, required_env, s3, sqs};
use fanout_client::limiter::source::{FleetLimits, system_clock};
use fanout_client::{BreakerStoreFactory, ClientStack};
use fanout_core::config::ClientConfig;
use fanout_core::metrics::{CounterDeltas, DimensionSets, WorkerMetrics};
use fanout_core::ports::BreakerStateStore;
use fanout_handlers::worker::WorkerDeps;

/// How long a container keeps a secret it read, when `SECRET_CACHE_SECONDS` is not set (the
/// template's default too).
pub const DEFAULT_SECRET_CACHE: Duration = Duration::from_secs(300);

/// The worker's dependencies from its Lambda environment: `TABLE_NAME` (the ledger, which also
/// holds the rate-limit windows and overrides, breaker state and manifest claims), `QUEUE_URL` (for
/// continuations), `FLEET_SIZE` (the worker's reserved concurrency, which sizes rate-limit
/// leases), `SECRET_CACHE_SECONDS` (how long the secrets named by `client.auth` are kept) and,
/// optionally, `KMS_KEY_ID` (the stack's key: with it, the containers share each OAuth2 token
/// through the ledger table, encrypted with that key; without it, each container gets its own).
pub fn deps_from_env(config: &aws_config::SdkConfig) -> anyhow::Result<WorkerDeps> {
    let number = |name: &str| -> anyhow::Result<Option<u64>> {
        match std::env::var(name) {
            Ok(v) => v
                .parse()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number")),
            Err(_) => Ok(None),
        }
    };
    let fleet_size = number("FLEET_SIZE")?.unwrap_or(1);
    let fleet_size = u32::try_from(fleet_size)
        .map_err(|_| anyhow::anyhow!("FLEET_SIZE={fleet_size} is too large"))?;
    let secret_cache =
        number("SECRET_CACHE_SECONDS")?.map_or(DEFAULT_SECRET_CACHE, Duration::from_secs);
    let kms_key_id = std::env::var("KMS_KEY_ID").ok().filter(|k| !k.is_empty());
    let container = container(
        config,
        &required_env("TABLE_NAME")?,
        &required_env("QUEUE_URL")?,
        fleet_size,
        DimensionSets::PipelineAndAggregate,
        secret_cache,
        kms_key_id.as_deref(),
    )?;
    Ok(container.deps)
}

/// One worker container: its deps, and the fleet-shared parts of its API client, whose counters
/// the local runner reads.
pub struct WorkerContainer {
    pub deps: WorkerDeps,
    /// The container's side of the fleet's rate limits (leases and the operators' overrides in
    /// the ledger table).
    pub limits: Arc<FleetLimits>,
    /// The breakers' open state, shared through the ledger table.
    pub breakers: Arc<DynamoBreakerStores>,
    /// The fleet's OAuth2 tokens, shared through the ledger table (when a KMS key was given).
    pub tokens: Option<Arc<DynamoTokenStore>>,
}

/// A worker container's dependencies: S3, the ledger, claims, the queue, CloudWatch (with
/// `sets`), and the API client stack whose rate limit and breaker state are the fleet-wide ones
/// kept in the ledger table, and whose credentials are read from Secrets Manager or KMS and kept
/// for `secret_cache`. With `kms_key_id`, OAuth2 tokens are shared with the fleet through the
/// ledger table, encrypted with that key; without it, each container gets its own.
pub fn container(
    config: &aws_config::SdkConfig,
    table: &str,
    queue_url: &str,
    fleet_size: u32,
    sets: DimensionSets,
    secret_cache: Duration,
    kms_key_id: Option<&str>,
) -> anyhow::Result<WorkerContainer> {
    let ddb = fanout_aws::dynamodb_client(config);
    // The operators' overrides of the limits' rates (`fanout limit set`) live next to the
    // windows, and are read with the leases.
    let limits = Arc::new(
        FleetLimits::new(
            Arc::new(DynamoLeaser::new(ddb.clone(), table)),
            system_clock(),
            fleet_size,
        )
        .with_overrides(Arc::new(DynamoRateOverrides::new(ddb.clone(), table))),
    );
    let breakers = Arc::new(DynamoBreakerStores::new(ddb.clone(), table));
    let kms = fanout_aws::kms_client(config);
    let tokens =
        kms_key_id.map(|key| Arc::new(DynamoTokenStore::new(ddb.clone(), kms.clone(), table, key)));
    let mut api = ClientStack::builder()
        .token_sources(limits.factory())
        .breaker_stores(breaker_stores(&breakers))
        .secrets(Arc::new(AwsSecretSource::new(
            fanout_aws::secretsmanager_client(config),
            kms,
            secret_cache,
        )));
    if let Some(tokens) = &tokens {
        api = api.shared_tokens(tokens.clone());
    }
    let api = api.build(fanout_client::http::pooled_client()?);
    let counters = {
        let (client, limits) = (api.counters().clone(), limits.clone());
        Arc::new(move || CounterDeltas {
            client: client.snapshot(),
            tokens_leased: limits.totals().2,
        })
    };
    let metrics = WorkerMetrics::new(
        Arc::new(cloudwatch::CloudWatchSink::new(
            fanout_aws::cloudwatch_client(config),
        )),
        sets,
        counters,
    );
    let ledger = Arc::new(dynamo::DynamoLedger::new(ddb, table));
    let deps = WorkerDeps {
        store: Arc::new(s3::S3Store::new(fanout_aws::s3_client(config))),
        ledger: ledger.clone(),
        claims: ledger,
        queue: Arc::new(sqs::SqsQueue::new(
            fanout_aws::sqs_client(config),
            queue_url,
        )),
        deadline: api.deadline().clone(),
        api: Arc::new(api),
        metrics: Arc::new(metrics),
        cache: Default::default(),
    };
    Ok(WorkerContainer {
        deps,
        limits,
        breakers,
        tokens,
    })
}

/// Each pipeline's breaker shares its open state through its item in the ledger table.
pub fn breaker_stores(stores: &Arc<DynamoBreakerStores>) -> BreakerStoreFactory {
    let stores = stores.clone();
    Arc::new(move |config: &ClientConfig| stores.store_for(config) as Arc<dyn BreakerStateStore>)
}
