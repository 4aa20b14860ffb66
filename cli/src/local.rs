//! The local stack and runner: the same splitter and worker handlers as the Lambda binaries, driven
//! the way Lambda drives them, against any AWS endpoint (the local AWS emulator here).
//!
//! The runner uploads the input, invokes the splitter with an S3 event, and polls SQS like Lambda's
//! event source mapping: N simulated worker containers (the mapping's maximum concurrency), each
//! with its own clients and state, receiving batches, calling the worker handler, and deleting only
//! the messages that the handler did not report as failed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lambda_events::s3::S3Event;
use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use serde_json::json;

use fanout_aws::s3_client;
use fanout_core::ledger::{JobRecord, JobStatus};
use fanout_core::manifest::keys;
use fanout_core::summary::JobSummary;
use fanout_handlers::splitter::{self, SplitOutcome, SplitterDeps};
use fanout_handlers::worker::{self, WorkerDeps};

/// Names of the stack's resources.
#[derive(Clone, Debug)]
pub struct StackNames {
    pub bucket: String,
    pub queue: String,
    pub dlq: String,
    pub table: String,
    /// The KMS key's alias (`alias/NAME`).
    pub key_alias: String,
    /// The prefix the names derive from (empty for a stack named by its resources).
    pub prefix: String,
}

impl StackNames {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            bucket: format!("{prefix}-data"),
            queue: format!("{prefix}-manifests"),
            dlq: format!("{prefix}-manifests-dlq"),
            table: format!("{prefix}-ledger"),
            key_alias: format!("alias/{prefix}-key"),
            prefix: prefix.to_string(),
        }
    }

    /// What messages call the local stack of this prefix.
    pub fn label(&self) -> String {
        format!("local stack {:?}", self.prefix)
    }
}

/// A created (or found) stack.
#[derive(Clone, Debug)]
pub struct Stack {
    pub names: StackNames,
    pub queue_url: String,
    pub dlq_url: String,
    /// The stack's KMS key (id or ARN), which encrypts the OAuth2 tokens the workers share
    /// through the ledger table; without it, each worker container gets its own token.
    pub kms_key_id: Option<String>,
    /// What the stack sets for pipelines (a deployed stack's `ApiBaseUrl`, `RateLimitPerSecond`,
    /// `RateLimitBurst`, `ChunkBytes`): its splitter applies them to every config.
    pub defaults: fanout_core::stack_defaults::StackDefaults,
    /// What messages call it: "stack NAME" or "local stack PREFIX".
    pub label: String,
    /// A stack deployed from template.yaml, as CloudFormation describes it; None for the local
    /// stack that `fanout local up` makes.
    pub deployed: Option<crate::deployed::Deployed>,
}

impl Stack {
    /// A stack that exists already, e.g. one deployed from template.yaml (infra/deploy-local.sh
    /// runs a job on the emulator's copy of it), named by its resources.
    pub fn existing(
        bucket: &str,
        queue_url: &str,
        dlq_url: &str,
        table: &str,
        kms_key_id: Option<&str>,
    ) -> Self {
        // A queue URL ends with the queue's name.
        let name = |url: &str| url.rsplit('/').next().unwrap_or(url).to_string();
        Self {
            names: StackNames {
                bucket: bucket.to_string(),
                queue: name(queue_url),
                dlq: name(dlq_url),
                table: table.to_string(),
                // Not used: the key is named by its id.
                key_alias: String::new(),
                prefix: String::new(),
            },
            queue_url: queue_url.to_string(),
            dlq_url: dlq_url.to_string(),
            kms_key_id: kms_key_id.map(str::to_string),
            defaults: Default::default(),
            label: format!("the stack of bucket {bucket}"),
            deployed: None,
        }
    }
}

/// Visibility timeout of the manifest queue: the core's production constant (6 × the worker's
/// 300 s timeout, as template.yaml sets it), so a manifest still being processed is never handed
/// to a second container.
pub const VISIBILITY_SECS: u64 = fanout_core::claims::QUEUE_VISIBILITY_SECS;
/// A manifest the handler reported as failed becomes visible again after this long. Lambda waits
/// for the visibility timeout; local runs retry sooner so that a transient fault costs seconds.
pub const LOCAL_RETRY_DELAY_SECS: i32 = 5;
/// Receives before a manifest goes to the DLQ (the template's `maxReceiveCount`).
pub const MAX_RECEIVE_COUNT: u32 = fanout_core::claims::MAX_RECEIVE_COUNT;
/// The worker's timeout, template.yaml's default: each local invocation gets this deadline, as a
/// Lambda invocation does.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates the bucket (versioned), the queue with its DLQ, the ledger table and the KMS key (with
/// its alias), unless they exist. The settings mirror template.yaml's.
pub async fn ensure_stack(
    config: &aws_config::SdkConfig,
    names: &StackNames,
) -> anyhow::Result<Stack> {
    let s3 = s3_client(config);
    if s3.head_bucket().bucket(&names.bucket).send().await.is_err() {
        s3.create_bucket()
            .bucket(&names.bucket)
            .send()
            .await
            .with_context(|| format!("CreateBucket {}", names.bucket))?;
    }
    s3.put_bucket_versioning()
        .bucket(&names.bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .context("PutBucketVersioning")?;

    let sqs = aws_sdk_sqs::Client::new(config);
    let dlq_url = sqs
        .create_queue()
        .queue_name(&names.dlq)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .context("CreateQueue DLQ")?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("GetQueueAttributes DLQ")?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default();
    let redrive =
        json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}).to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(&names.queue)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_SECS.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .context("CreateQueue")?
        .queue_url
        .unwrap_or_default();

    let ddb = aws_sdk_dynamodb::Client::new(config);
    if !table_exists(&ddb, &names.table).await {
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |n: &str, t| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
        };
        ddb.create_table()
            .table_name(&names.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .with_context(|| format!("CreateTable {}", names.table))?;
    }
    let kms_key_id = ensure_key(config, &names.key_alias).await?;
    Ok(Stack {
        names: names.clone(),
        queue_url,
        dlq_url,
        kms_key_id: Some(kms_key_id),
        defaults: Default::default(),
        label: names.label(),
        deployed: None,
    })
}

/// Whether DescribeTable finds `table` (any error counts as not found, as for creating it).
async fn table_exists(ddb: &aws_sdk_dynamodb::Client, table: &str) -> bool {
    ddb.describe_table().table_name(table).send().await.is_ok()
}

/// The local stack of `names`, as `fanout local up` made it: found, never created. An operator
/// command on a stack that is not there says so rather than making an empty one.
pub async fn find_stack(
    config: &aws_config::SdkConfig,
    names: &StackNames,
) -> anyhow::Result<Stack> {
    let missing = |what: &str| {
        format!(
            "{}: no {what} (`fanout local up --prefix {}` creates the local stack; a deployed stack is named with --stack)",
            names.label(),
            names.prefix
        )
    };
    let sqs = aws_sdk_sqs::Client::new(config);
    let url = |queue: String| {
        let sqs = sqs.clone();
        async move {
            sqs.get_queue_url()
                .queue_name(&queue)
                .send()
                .await
                .ok()
                .and_then(|o| o.queue_url)
        }
    };
    let queue_url = url(names.queue.clone())
        .await
        .ok_or_else(|| anyhow::anyhow!(missing(&format!("queue {}", names.queue))))?;
    let dlq_url = url(names.dlq.clone())
        .await
        .ok_or_else(|| anyhow::anyhow!(missing(&format!("queue {}", names.dlq))))?;
    if !table_exists(&aws_sdk_dynamodb::Client::new(config), &names.table).await {
        anyhow::bail!(missing(&format!("table {}", names.table)));
    }
    let kms = fanout_aws::kms_client(config);
    let kms_key_id = kms
        .describe_key()
        .key_id(&names.key_alias)
        .send()
        .await
        .ok()
        .and_then(|o| o.key_metadata)
        .map(|m| m.key_id);
    Ok(Stack {
        names: names.clone(),
        queue_url,
        dlq_url,
        kms_key_id,
        defaults: Default::default(),
        label: names.label(),
        deployed: None,
    })
}

/// The id of the KMS key `alias` names, created (a symmetric key, as template.yaml's) with the
/// alias unless the alias exists.
async fn ensure_key(config: &aws_config::SdkConfig, alias: &str) -> anyhow::Result<String> {
    let kms = fanout_aws::kms_client(config);
    let key_id = |what: &str, metadata: Option<aws_sdk_kms::types::KeyMetadata>| {
        metadata
            .map(|m| m.key_id)
            .ok_or_else(|| anyhow::anyhow!("{what}: no key metadata"))
    };
    match kms.describe_key().key_id(alias).send().await {
        Ok(out) => return key_id("DescribeKey", out.key_metadata),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_not_found_exception()) => {}
        Err(e) => return Err(e).with_context(|| format!("DescribeKey {alias}")),
    }
    let created = kms
        .create_key()
        .description(format!("s3-api-fanout local stack ({alias})"))
        .send()
        .await
        .context("CreateKey")?;
    let created = key_id("CreateKey", created.key_metadata)?;
    match kms
        .create_alias()
        .alias_name(alias)
        .target_key_id(&created)
        .send()
        .await
    {
        Ok(_) => Ok(created),
        // Created meanwhile by another process: its key it is (the one just made stays unused).
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_already_exists_exception()) =>
        {
            let out = kms
                .describe_key()
                .key_id(alias)
                .send()
                .await
                .with_context(|| format!("DescribeKey {alias}"))?;
            key_id("DescribeKey", out.key_metadata)
        }
        Err(e) => Err(e).with_context(|| format!("CreateAlias {alias}")),
    }
}

/// The splitter's deps as the splitter Lambda wires them, on the local stack's resources.
pub fn splitter_deps(config: &aws_config::SdkConfig, stack: &Stack) -> SplitterDeps {
    SplitterDeps {
        defaults: stack.defaults.clone(),
        // As for the workers (see worker_deps): the emulator's query without dimensions sums them.
        ..splitter_lambda::deps(
            config,
            &stack.queue_url,
            &stack.names.table,
            LOCAL_DIMENSION_SETS,
        )
    }
}

/// Fresh clients for one simulated worker container of a fleet of `fleet_size`. Like a real
/// container, it shares only the table with the others: the rate limit and the breakers' open
/// state reach them through DynamoDB.
pub fn worker_deps(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    fleet_size: u32,
) -> anyhow::Result<WorkerDeps> {
    Ok(worker_container(config, stack, fleet_size)?.deps)
}

/// One simulated worker container, as the worker Lambda wires it.
pub fn worker_container(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    fleet_size: u32,
) -> anyhow::Result<worker_lambda::WorkerContainer> {
    worker_lambda::container(
        config,
        &stack.names.table,
        &stack.queue_url,
        fleet_size,
        LOCAL_DIMENSION_SETS,
        worker_lambda::DEFAULT_SECRET_CACHE,
        stack.kms_key_id.as_deref(),
    )
}

/// The local emulator (ministack, as moto before it) answers a metric query without dimensions
/// with the sum over every dimension set, which is already the all-pipelines aggregate:
/// publishing that too would count everything twice. CloudWatch matches dimensions exactly, so
/// the Lambda functions publish both sets.
const LOCAL_DIMENSION_SETS: fanout_core::metrics::DimensionSets =
    fanout_core::metrics::DimensionSets::PipelineOnly;

/// The S3 notification Lambda receives for an upload (keys URL-encoded, as S3 sends them).
pub fn s3_put_event(
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    version_id: Option<&str>,
) -> S3Event {
    fanout_handlers::events::s3_event(
        "ObjectCreated:Put",
        bucket,
        key,
        Some(size),
        Some(etag),
        version_id,
    )
}

/// Uploads a pipeline config to `pipelines/<name>.yaml`.
pub async fn put_pipeline(
    config: &aws_config::SdkConfig,
    bucket: &str,
    name: &str,
    yaml: &str,
) -> anyhow::Result<()> {
    s3_client(config)
        .put_object()
        .bucket(bucket)
        .key(keys::pipeline_config(name))
        .body(yaml.as_bytes().to_vec().into())
        .send()
        .await
        .context("PutObject pipeline config")?;
    Ok(())
}

/// Uploads the input and returns the S3 event of the upload.
pub async fn upload_input(
    config: &aws_config::SdkConfig,
    bucket: &str,
    key: &str,
    file: &Path,
) -> anyhow::Result<S3Event> {
    let body = aws_sdk_s3::primitives::ByteStream::from_path(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let size = std::fs::metadata(file)?.len();
    let out = s3_client(config)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .send()
        .await
        .context("PutObject input")?;
    Ok(s3_put_event(
        bucket,
        key,
        size,
        out.e_tag().unwrap_or_default(),
        out.version_id(),
    ))
}

#[derive(Clone, Debug)]
pub struct PollerOptions {
    /// Simulated worker containers: the event source mapping's maximum concurrency.
    pub workers: usize,
    /// Messages per worker invocation (the mapping's batch size), 1..=10.
    pub batch_size: i32,
    /// The simulated Lambda timeout. Each invocation is given the deadline it implies (as Lambda
    /// gives it in the context) and is killed if it runs past it: its messages are then neither
    /// deleted nor returned, and reappear after the queue's visibility timeout, as on Lambda.
    /// None: the worker's timeout ([`WORKER_TIMEOUT`]) as the deadline, and no kill.
    pub invocation_timeout: Option<Duration>,
    /// Fault injection: runtimes that die mid-invocation.
    pub kills: Option<Kills>,
    /// A graceful stop (SIGTERM): once triggered, no message is received any more, and the
    /// invocations under way stop as at their deadline: what is done is flushed and recorded,
    /// the rest continued in the queue. See [`fanout_core::continuation::Interrupt`].
    pub interrupt: Option<fanout_core::continuation::Interrupt>,
}

/// Kills `count` invocations (over the whole fleet) `after` they start, as if the runtime died:
/// the handler is dropped wherever it is, nothing more is written, and its messages reappear
/// after the queue's visibility timeout.
#[derive(Clone, Copy, Debug)]
pub struct Kills {
    pub count: u32,
    pub after: Duration,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self {
            workers: 8,
            batch_size: 1,
            invocation_timeout: None,
            kills: None,
            interrupt: None,
        }
    }
}

/// The running pollers; stop them with [`Pollers::stop`].
pub struct Pollers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<(u64, u64)>>>,
    limits: Vec<Arc<fanout_client::limiter::source::FleetLimits>>,
    breakers: Vec<Arc<fanout_aws::breaker::DynamoBreakerStores>>,
}

/// What the pollers did, over every simulated container.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PollerTotals {
    pub invocations: u64,
    /// Invocations killed: injected kills and simulated timeouts.
    pub killed: u64,
    /// Conditional writes made to lease rate-limit tokens (successful or not).
    pub lease_writes: u64,
    pub tokens_leased: u64,
    /// Reads of the shared breaker state (at most one per container per second while calling).
    pub breaker_reads: u64,
    /// Conditional writes of the shared breaker state (on opening and on closing).
    pub breaker_writes: u64,
}

impl PollerTotals {
    /// Every DynamoDB write the API clients made (not the ledger's): leases and breaker state.
    pub fn client_ddb_writes(&self) -> u64 {
        self.lease_writes + self.breaker_writes
    }
}

impl Pollers {
    /// Starts `workers` containers polling the stack's queue.
    pub fn start(
        config: &aws_config::SdkConfig,
        stack: &Stack,
        options: &PollerOptions,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let kills_left = Arc::new(std::sync::atomic::AtomicU32::new(
            options.kills.map_or(0, |k| k.count),
        ));
        let mut tasks = Vec::new();
        let mut limits = Vec::new();
        let mut breakers = Vec::new();
        for _ in 0..options.workers {
            let container = worker_container(config, stack, options.workers as u32)?;
            breakers.push(container.breakers);
            limits.push(container.limits);
            let deps = container.deps;
            let sqs = aws_sdk_sqs::Client::new(config);
            let (queue_url, stop, batch) = (
                stack.queue_url.clone(),
                stop.clone(),
                options.batch_size.clamp(1, 10),
            );
            let faults = Faults {
                timeout: options.invocation_timeout,
                kill_after: options.kills.map(|k| k.after),
                kills_left: kills_left.clone(),
                interrupt: options.interrupt.clone(),
            };
            tasks.push(tokio::spawn(async move {
                poll_loop(&sqs, &queue_url, batch, &deps, &stop, &faults).await
            }));
        }
        Ok(Self {
            stop,
            tasks,
            limits,
            breakers,
        })
    }

    /// Stops polling after the current invocations.
    pub async fn stop(self) -> anyhow::Result<PollerTotals> {
        self.stop.store(true, Ordering::SeqCst);
        let mut totals = PollerTotals::default();
        for t in self.tasks {
            let (invocations, killed) = t.await??;
            totals.invocations += invocations;
            totals.killed += killed;
        }
        for l in &self.limits {
            let (writes, _, tokens) = l.totals();
            totals.lease_writes += writes;
            totals.tokens_leased += tokens;
        }
        for b in &self.breakers {
            let (reads, writes) = b.totals();
            totals.breaker_reads += reads;
            totals.breaker_writes += writes;
        }
        Ok(totals)
    }
}

/// How a simulated container's invocations end early.
struct Faults {
    interrupt: Option<fanout_core::continuation::Interrupt>,
    timeout: Option<Duration>,
    kill_after: Option<Duration>,
    kills_left: Arc<std::sync::atomic::AtomicU32>,
}

impl Faults {
    /// When this invocation dies: at its timeout, or earlier if it draws one of the injected
    /// kills (the second value: hand it back with [`Faults::unused_kill`] if the invocation ends
    /// first, so that `count` kills really happen).
    fn death(&self) -> (Option<Duration>, bool) {
        let killed = self.kill_after.filter(|_| {
            self.kills_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        });
        let death = match (killed, self.timeout) {
            (Some(k), Some(t)) => Some(k.min(t)),
            (k, t) => k.or(t),
        };
        (death, killed.is_some())
    }

    fn unused_kill(&self) {
        self.kills_left.fetch_add(1, Ordering::SeqCst);
    }
}

async fn poll_loop(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    batch_size: i32,
    deps: &WorkerDeps,
    stop: &AtomicBool,
    faults: &Faults,
) -> anyhow::Result<(u64, u64)> {
    let (mut invocations, mut killed) = (0, 0);
    let interrupted = || faults.interrupt.as_ref().is_some_and(|i| i.is_set());
    while !stop.load(Ordering::SeqCst) && !interrupted() {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(batch_size)
            .wait_time_seconds(1)
            .send()
            .await;
        let messages = match received {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(e) => {
                // Like the event source mapping, keep polling through transient errors.
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "ReceiveMessage failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<_> = messages
            .iter()
            .map(|m| json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body, "eventSource": "aws:sqs"}))
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records }))?;
        // Every invocation has a deadline, as on Lambda: the simulated timeout, else the
        // worker's. Calls may then wait out an open breaker until it instead of failing the
        // record at the first turned-away attempt.
        let deadline_ms = Some(
            fanout_core::ledger::now_ms()
                + faults.timeout.unwrap_or(WORKER_TIMEOUT).as_millis() as u64,
        );
        let handler =
            worker::handle_sqs_batch_with(event, deps, deadline_ms, faults.interrupt.as_ref());
        invocations += 1;
        let response = match faults.death() {
            (None, _) => handler.await,
            (Some(death), drew_kill) => match tokio::time::timeout(death, handler).await {
                Ok(response) => {
                    if drew_kill {
                        faults.unused_kill();
                    }
                    response
                }
                Err(_) => {
                    // The runtime died (or Lambda killed it at its timeout): the handler is gone
                    // mid-work, and the messages are left in flight, to reappear after the
                    // visibility timeout.
                    tracing::warn!(after = ?death, "invocation killed");
                    killed += 1;
                    continue;
                }
            },
        };
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let entries: Vec<_> = messages
            .iter()
            .filter(|m| !failed.contains(&m.message_id().unwrap_or_default()))
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
            })
            .collect::<Result<_, _>>()?;
        for m in messages
            .iter()
            .filter(|m| failed.contains(&m.message_id().unwrap_or_default()))
        {
            let retry = sqs
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .visibility_timeout(LOCAL_RETRY_DELAY_SECS)
                .send()
                .await;
            if let Err(e) = retry {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "ChangeMessageVisibility failed");
            }
        }
        if !entries.is_empty() {
            let deleted = sqs
                .delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            if let Err(e) = deleted {
                // Not deleting means a redelivery, which the worker handles idempotently.
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "DeleteMessageBatch failed");
            }
        }
    }
    Ok((invocations, killed))
}

/// What a local run came to.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunReport {
    pub job_id: Option<String>,
    pub split: Vec<SplitOutcome>,
    pub job: Option<JobRecord>,
    pub summary: Option<JobSummary>,
    pub wall_seconds: f64,
    /// When `wall_seconds` began (the split's start), ms since the epoch.
    pub started_unix_ms: u64,
    pub pollers: PollerTotals,
    /// The run was stopped (SIGTERM) before the job finished; its rest is in the queue.
    pub interrupted: bool,
}

/// Runs a job end to end: splitter on `event`, pollers until the job is final (or `timeout`).
/// `progress` is called about four times a second with the job's ledger record.
pub async fn run_event(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    event: S3Event,
    options: &PollerOptions,
    timeout: Duration,
    progress: &(dyn Fn(&JobRecord) + Sync),
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let started_unix_ms = fanout_core::ledger::now_ms();
    let pollers = Pollers::start(config, stack, options)?;
    let deps = splitter_deps(config, stack);
    let split = splitter::handle_s3_event(event, &deps).await;
    let split = match split {
        Ok(s) => s,
        Err(e) => {
            pollers.stop().await?;
            return Err(e.context("splitter failed"));
        }
    };
    let job_id = split.iter().find_map(|o| match o {
        SplitOutcome::Started { job_id, .. }
        | SplitOutcome::Duplicate { job_id, .. }
        | SplitOutcome::Failed { job_id, .. } => Some(job_id.clone()),
        SplitOutcome::Ignored { .. } => None,
    });
    let mut job = None;
    if let Some(id) = &job_id {
        loop {
            let current = deps.ledger.get_job(id).await?;
            if let Some(j) = &current {
                progress(j);
            }
            let done = current.as_ref().is_some_and(|j| j.status.is_final());
            job = current;
            if done || options.interrupt.as_ref().is_some_and(|i| i.is_set()) {
                break;
            }
            if started.elapsed() > timeout {
                pollers.stop().await?;
                anyhow::bail!("job {id} did not finish within {timeout:?} (last state: {job:?})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let totals = pollers.stop().await?;
    let interrupted = options.interrupt.as_ref().is_some_and(|i| i.is_set());
    if interrupted && let Some(id) = &job_id {
        // The invocations have flushed and stopped: this is the state a next run resumes from.
        job = deps.ledger.get_job(id).await?;
    }
    let summary = match (&job, &job_id) {
        (Some(j), Some(id)) if j.status == JobStatus::Completed => {
            let body = deps
                .store
                .get_small(&stack.names.bucket, &keys::summary(id))
                .await?
                .ok_or_else(|| anyhow::anyhow!("job {id} is complete but has no summary"))?;
            Some(serde_json::from_slice(&body)?)
        }
        // A job stopped by its failure tolerance has a summary; one that failed to split has not.
        (Some(j), Some(id)) if j.status == JobStatus::Failed => {
            match deps
                .store
                .get_small(&stack.names.bucket, &keys::summary(id))
                .await?
            {
                Some(body) => Some(serde_json::from_slice(&body)?),
                None => None,
            }
        }
        _ => None,
    };
    Ok(RunReport {
        job_id,
        split,
        job,
        summary,
        wall_seconds: started.elapsed().as_secs_f64(),
        started_unix_ms,
        pollers: totals,
        interrupted,
    })
}

/// `fanout replay`: works the job's DLQ manifests, then sends its failed/ records again and
/// rewrites its summary (see [`fanout_handlers::replay`]).
pub async fn replay(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    job_id: &str,
) -> anyhow::Result<fanout_handlers::replay::ReplayReport> {
    let deps = fanout_handlers::replay::ReplayDeps {
        worker: worker_deps(config, stack, 1)?,
        repair: Arc::new(fanout_aws::dynamo::DynamoLedger::new(
            fanout_aws::dynamodb_client(config),
            &stack.names.table,
        )),
        dead_letters: Arc::new(fanout_aws::sqs::SqsQueue::new(
            fanout_aws::sqs_client(config),
            &stack.dlq_url,
        )),
    };
    fanout_handlers::replay::replay(job_id, &stack.names.bucket, &deps).await
}
