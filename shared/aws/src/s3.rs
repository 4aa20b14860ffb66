//! [`ObjectStore`] on Amazon S3.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::StreamExt;

use fanout_core::ports::{ByteStream, ObjectHead, ObjectStore, UploadedPart};
use fanout_core::range::ByteRange;
use fanout_core::ranged_body::{BodySpan, take_range};

#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
}

impl S3Store {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> anyhow::Result<ObjectHead> {
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "HeadObject {}: {}",
                    uri(bucket, key),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        Ok(ObjectHead {
            size: out.content_length().unwrap_or_default().max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_string(),
            version_id: out
                .version_id()
                .filter(|v| *v != "null")
                .map(str::to_string),
        })
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
        range: ByteRange,
    ) -> anyhow::Result<ByteStream> {
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .set_if_match(etag.filter(|_| version_id.is_none()).map(str::to_string))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "GetObject {} {:?}: {}",
                    uri(bucket, key),
                    range,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        let what = format!("GetObject {} {:?}", uri(bucket, key), range);
        // The server may have sent more than the range (a 200 with the whole object, or a wider
        // 206): stream exactly the requested bytes, or fail saying why they are not there.
        let span = BodySpan::locate(
            range,
            out.content_range(),
            out.content_length().and_then(|n| u64::try_from(n).ok()),
        )
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        Ok(take_range(stream_body(out.body, what.clone()), span, what))
    }

    async fn get_small(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.body.collect().await?.into_bytes().to_vec())),
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "GetObject {}: {}",
                uri(bucket, key),
                aws_sdk_s3::error::DisplayErrorContext(e)
            )),
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(SdkByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "PutObject {}: {}",
                    uri(bucket, key),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DeleteObject {}: {}",
                    uri(bucket, key),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
    ) -> anyhow::Result<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "CreateMultipartUpload {}: {}",
                    uri(bucket, key),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            anyhow::anyhow!("CreateMultipartUpload {}: no upload id", uri(bucket, key))
        })
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> anyhow::Result<String> {
        let out = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(SdkByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "UploadPart {} part {number}: {}",
                    uri(bucket, key),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        out.e_tag().map(str::to_string).ok_or_else(|| {
            anyhow::anyhow!("UploadPart {} part {number}: no ETag", uri(bucket, key))
        })
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> anyhow::Result<()> {
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "CompleteMultipartUpload {}: {}",
                    uri(bucket, key),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> anyhow::Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "AbortMultipartUpload {}: {}",
                    uri(bucket, key),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }
}

/// Adapts the SDK's body to a plain stream of chunks, errors naming the object and range.
fn stream_body(body: SdkByteStream, what: String) -> ByteStream {
    futures::stream::unfold((body, what), |(mut body, what)| async move {
        match body.next().await {
            Some(Ok(bytes)) => Some((Ok(bytes), (body, what))),
            Some(Err(e)) => Some((Err(anyhow::anyhow!("{what}: {e}")), (body, what))),
            None => None,
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    //! The adapter on an SDK client whose HTTP layer is a fake S3 (a closure): what the reader
    //! makes of each answer a server may give to a ranged GET.
    use super::*;
    use aws_smithy_http_client::test_util::infallible_client_fn;

    const OBJECT: &[u8] = b"0123456789";

    /// An S3 client on `answer`, which sees each request's `Range` header (if any).
    fn store(
        answer: impl Fn(Option<&str>) -> http::Response<Vec<u8>> + Send + Sync + 'static,
    ) -> S3Store {
        let http = infallible_client_fn(move |req| {
            let range = req.headers().get("range").and_then(|v| v.to_str().ok());
            answer(range)
        });
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::for_tests())
            .force_path_style(true)
            .http_client(http)
            .build();
        S3Store::new(Client::from_conf(config))
    }

    fn reply(status: u16, content_range: Option<&str>, body: &[u8]) -> http::Response<Vec<u8>> {
        let mut builder = http::Response::builder()
            .status(status)
            .header("content-length", body.len());
        if let Some(value) = content_range {
            builder = builder.header("content-range", value);
        }
        builder.body(body.to_vec()).unwrap()
    }

    async fn read(store: &S3Store, range: ByteRange) -> anyhow::Result<Vec<u8>> {
        let mut stream = store
            .get_range("bucket", "in.csv", Some("v1"), None, range)
            .await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_store_that_ignores_range_still_yields_exactly_the_range() {
        let store = store(|range| {
            // The request asked for bytes 2-4; this server sends the whole object, as HTTP allows.
            assert_eq!(range, Some("bytes=2-4"));
            reply(200, None, OBJECT)
        });
        assert_eq!(read(&store, ByteRange::new(2, 5)).await.unwrap(), b"234");
    }

    #[tokio::test]
    async fn a_206_is_read_as_its_content_range_says() {
        let store = store(|_| reply(206, Some("bytes 2-4/10"), b"234"));
        assert_eq!(read(&store, ByteRange::new(2, 5)).await.unwrap(), b"234");
    }

    #[tokio::test]
    async fn a_206_of_other_bytes_fails_naming_the_object_and_both_ranges() {
        let store = store(|_| reply(206, Some("bytes 3-5/10"), b"345"));
        let err = read(&store, ByteRange::new(2, 5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://bucket/in.csv"), "{err}");
        assert!(err.contains("3..6") && err.contains("2..5"), "{err}");
    }

    #[tokio::test]
    async fn a_whole_body_too_short_for_the_range_fails() {
        let store = store(|_| reply(200, None, b"01234"));
        let err = read(&store, ByteRange::new(2, 8))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://bucket/in.csv"), "{err}");
        assert!(err.contains("do not hold the requested range"), "{err}");
    }
}
