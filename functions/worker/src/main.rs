//! The worker Lambda: SQS batches of manifests in, a partial batch response out, so that only the
//! failed manifests return to the queue. All logic is in `fanout_handlers::worker`.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use fanout_handlers::worker::handle_sqs_batch;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// A record's way through the worker allocates a few dozen small objects (its bytes, fields,
// request, futures, result line): glibc's malloc spent a fifth of the CPU on them
// (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    fanout_handlers::telemetry::init_json();
    // Clients (S3, DynamoDB, the pooled HTTP client) are built once per cold start.
    let config = fanout_aws::load_config().await;
    let deps = worker_lambda::deps_from_env(&config)?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let deps = &deps;
        // The deadline lets the worker stop in time to flush what it has done and continue the
        // rest, instead of being killed with nothing written.
        let deadline_ms = event.context.deadline;
        async move {
            Ok::<SqsBatchResponse, Error>(
                handle_sqs_batch(event.payload, deps, Some(deadline_ms)).await,
            )
        }
    }))
    .await
}
