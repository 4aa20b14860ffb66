//! Logging: JSON lines in Lambda (CloudWatch Logs Insights can query them), text in a terminal.
//!
//! The level comes from `RUST_LOG`, else from Lambda's `AWS_LAMBDA_LOG_LEVEL` (set by the
//! function's logging config), else the default. JSON lines carry the fields of every span they
//! are in: the Lambda runtime's `requestId` and the worker's `job_id` and `seq` (see
//! [`crate::worker`]), so one query finds everything a manifest or an invocation logged.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The filter from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL` (TRACE, DEBUG, INFO, WARN, ERROR,
/// FATAL), else `default_level`.
pub fn env_filter(default_level: &str) -> EnvFilter {
    filter_from(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        default_level,
    )
}

fn filter_from(
    rust_log: Option<&str>,
    lambda_level: Option<&str>,
    default_level: &str,
) -> EnvFilter {
    if let Some(f) = rust_log.and_then(|v| EnvFilter::try_new(v).ok()) {
        return f;
    }
    let lambda = lambda_level.map(|l| match l.to_ascii_lowercase().as_str() {
        // tracing has no FATAL; its nearest is ERROR.
        "fatal" => "error".to_string(),
        other => other.to_string(),
    });
    lambda
        .and_then(|l| EnvFilter::try_new(l).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level))
}

/// The JSON-lines subscriber, writing to `writer` (stdout in Lambda; a buffer in tests).
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_current_span(true)
        .with_span_list(true)
        .flatten_event(true)
        // Lambda adds its own timestamp to each line.
        .without_time()
        .finish()
}

pub fn init_json() {
    use tracing_subscriber::util::SubscriberInitExt;
    // try_init also routes the `log` records of dependencies into the same lines.
    let _ = json_subscriber(env_filter("info"), std::io::stdout).try_init();
}

pub fn init_text(default_level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter(default_level))
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_from_rust_log_then_lambda_then_default() {
        assert_eq!(
            filter_from(Some("debug"), Some("ERROR"), "info").to_string(),
            "debug"
        );
        assert_eq!(filter_from(None, Some("WARN"), "info").to_string(), "warn");
        assert_eq!(
            filter_from(None, Some("FATAL"), "info").to_string(),
            "error"
        );
        assert_eq!(filter_from(None, None, "info").to_string(), "info");
        // An unreadable value falls through instead of silencing the logs.
        assert_eq!(
            filter_from(Some("=="), Some("nonsense=="), "info").to_string(),
            "info"
        );
    }

    #[test]
    fn json_lines_carry_span_fields() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = json_subscriber(EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("manifest", job_id = "j1", seq = 7u32);
            let _g = span.enter();
            tracing::info!(records = 3u64, "manifest done");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "manifest done");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["job_id"], "j1");
        assert_eq!(line["span"]["seq"], 7);
        assert_eq!(line["spans"][0]["name"], "manifest");
    }
}
