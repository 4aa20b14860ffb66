//! [`ObjectStore`] on Amazon S3.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use futures::StreamExt;

use fanout_core::ports::{ByteStream, ObjectHead, ObjectStore};
use fanout_core::range::ByteRange;

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
        Ok(stream_body(out.body, what))
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
