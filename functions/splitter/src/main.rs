//! The splitter Lambda: S3 ObjectCreated events in, jobs and manifests out.
//! It only adapts the event; all logic is in `fanout_handlers::splitter`.

use aws_lambda_events::s3::S3Event;
use fanout_handlers::splitter::handle_s3_event;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    fanout_handlers::telemetry::init_json();
    // Clients are built once per cold start and shared by every invocation.
    let config = fanout_aws::load_config().await;
    let deps = splitter_lambda::deps_from_env(&config)?;
    run(service_fn(|event: LambdaEvent<S3Event>| {
        let deps = &deps;
        async move {
            handle_s3_event(event.payload, deps)
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
