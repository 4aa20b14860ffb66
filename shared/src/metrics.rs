//! Custom CloudWatch metric names: the one place they are defined. The dashboard and alarms in
//! template.yaml are checked against [`ALL`] by a test, both ways.

/// CloudWatch namespace of every custom metric.
pub const NAMESPACE: &str = "S3ApiFanout";
/// The only dimension: per-job dimensions would make unbounded custom metrics.
pub const DIMENSION_PIPELINE: &str = "Pipeline";

pub const API_CALLS: &str = "ApiCalls";
pub const API_LATENCY: &str = "ApiLatency";
pub const STATUS_2XX: &str = "Status2xx";
pub const STATUS_4XX: &str = "Status4xx";
pub const STATUS_5XX: &str = "Status5xx";
pub const STATUS_429: &str = "Status429";
pub const API_ERRORS: &str = "ApiErrors";
pub const RETRIES: &str = "Retries";
pub const RECORDS_SUCCEEDED: &str = "RecordsSucceeded";
pub const RECORDS_FAILED: &str = "RecordsFailed";
pub const RECORDS_REJECTED: &str = "RecordsRejected";
pub const RATE_LIMITER_WAIT: &str = "RateLimiterWait";
pub const TOKENS_LEASED: &str = "TokensLeased";
pub const CIRCUIT_BREAKER_OPENED: &str = "CircuitBreakerOpened";
pub const MANIFEST_DURATION: &str = "ManifestDuration";
pub const BYTES_READ: &str = "BytesRead";
pub const JOBS_FAILED: &str = "JobsFailed";

pub const ALL: &[&str] = &[
    API_CALLS,
    API_LATENCY,
    STATUS_2XX,
    STATUS_4XX,
    STATUS_5XX,
    STATUS_429,
    API_ERRORS,
    RETRIES,
    RECORDS_SUCCEEDED,
    RECORDS_FAILED,
    RECORDS_REJECTED,
    RATE_LIMITER_WAIT,
    TOKENS_LEASED,
    CIRCUIT_BREAKER_OPENED,
    MANIFEST_DURATION,
    BYTES_READ,
    JOBS_FAILED,
];
