//! Lambda events as AWS sends them, built from their parts: for the local runner (which invokes
//! the splitter as S3 would) and for the handlers' tests.

use aws_lambda_events::s3::S3Event;

/// An S3 notification of one record, as S3 sends it: the key URL-encoded (`+` for a space),
/// `event_name` e.g. `ObjectCreated:Put` or `ObjectRemoved:Delete`; size and ETag when known.
pub fn s3_event(
    event_name: &str,
    bucket: &str,
    key: &str,
    size: Option<u64>,
    etag: Option<&str>,
    version_id: Option<&str>,
) -> S3Event {
    let encoded: String = key
        .split('/')
        .map(|part| {
            percent_encoding::utf8_percent_encode(part, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%20", "+")
        })
        .collect::<Vec<_>>()
        .join("/");
    serde_json::from_value(serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "1970-01-01T00:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "local"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "local", "x-amz-id-2": "local"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "input-upload",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "local"}, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {"key": encoded, "size": size, "eTag": etag.map(|e| e.trim_matches('"')), "versionId": version_id}
        }
    }]}))
    .expect("the S3 event literal matches aws_lambda_events' S3Event")
}
