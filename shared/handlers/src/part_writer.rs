//! A part writer: one output object written as its lines come, in bounded memory.
//!
//! Lines are appended to a buffer. A buffer that reaches [`PART_BYTES`] goes to S3 as a part of a
//! multipart upload, started on the first full buffer; [`PartWriter::finish`] uploads the rest
//! and completes the upload. A writer that never filled a buffer writes its object with one PUT
//! at the end, as a small range always did (no extra requests), and one given nothing deletes
//! its key (a re-run that now has no lines leaves none behind). Either way the object appears
//! whole, or not at all, at `finish`, and replaces what was at its key: a redelivered manifest
//! rewrites the same keys.
//!
//! An upload left open (a failed manifest) is aborted by [`PartWriter::abort`], best effort; the
//! data bucket's lifecycle rule (`AbortIncompleteMultipartUpload`, template.yaml) removes any
//! that an abort missed.

use tracing::warn;

use fanout_core::ports::{MIN_PART_BYTES, ObjectStore, UploadedPart};

/// The size at which a buffer goes to S3 as a part: above S3's minimum part, small enough that
/// a worker's three outputs stay a few buffers of memory.
pub const PART_BYTES: usize = 8 << 20;

/// One output object being written; see the module.
pub struct PartWriter<'a> {
    store: &'a dyn ObjectStore,
    bucket: &'a str,
    key: String,
    content_type: &'static str,
    /// Where a buffer is uploaded as a part: [`PART_BYTES`] but in tests.
    threshold: usize,
    buf: Vec<u8>,
    /// The multipart upload, once a buffer filled.
    upload: Option<Upload>,
}

struct Upload {
    id: String,
    parts: Vec<UploadedPart>,
}

impl<'a> PartWriter<'a> {
    pub fn new(
        store: &'a dyn ObjectStore,
        bucket: &'a str,
        key: String,
        content_type: &'static str,
    ) -> Self {
        Self::with_threshold(store, bucket, key, content_type, PART_BYTES)
    }

    /// A writer whose parts are `threshold` bytes; at least S3's minimum part.
    pub fn with_threshold(
        store: &'a dyn ObjectStore,
        bucket: &'a str,
        key: String,
        content_type: &'static str,
        threshold: usize,
    ) -> Self {
        assert!(threshold >= MIN_PART_BYTES, "S3's parts are at least 5 MiB");
        Self {
            store,
            bucket,
            key,
            content_type,
            threshold,
            buf: Vec::new(),
            upload: None,
        }
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.upload.is_none()
    }

    /// Appends `bytes` (whole lines); a buffer that reached the threshold goes to S3 as a part.
    pub async fn append(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            // Room for a whole part at once, or exactly what a line past it needs: growing by
            // doubling would copy the buffer and could reserve twice a part.
            let want = self.threshold.max(self.buf.len() + bytes.len());
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= self.threshold {
            self.upload_buffer().await?;
        }
        Ok(())
    }

    /// Uploads the buffer as the next part, starting the upload on the first.
    async fn upload_buffer(&mut self) -> anyhow::Result<()> {
        let (store, bucket) = (self.store, self.bucket);
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let id = (store.create_multipart(bucket, &self.key, self.content_type)).await?;
                self.upload.insert(Upload {
                    id,
                    parts: Vec::new(),
                })
            }
        };
        let number = upload.parts.len() as i32 + 1;
        let body = std::mem::take(&mut self.buf);
        let etag = (store.upload_part(bucket, &self.key, &upload.id, number, body)).await?;
        upload.parts.push(UploadedPart { number, etag });
        Ok(())
    }

    /// Makes the object: completes the upload (its last part the rest of the buffer), or writes
    /// the buffer with one PUT, or deletes the key when nothing was written.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        let (store, bucket) = (self.store, self.bucket);
        if self.upload.is_some() {
            if !self.buf.is_empty() {
                self.upload_buffer().await?;
            }
            let upload = self.upload.as_ref().expect("an upload");
            store
                .complete_multipart(bucket, &self.key, &upload.id, &upload.parts)
                .await?;
            self.upload = None;
            Ok(())
        } else if self.buf.is_empty() {
            store.delete(bucket, &self.key).await
        } else {
            let body = std::mem::take(&mut self.buf);
            store.put(bucket, &self.key, body, self.content_type).await
        }
    }

    /// Discards what was written: aborts the upload if one was started (best effort, logged).
    pub async fn abort(&mut self) {
        self.buf = Vec::new();
        if let Some(upload) = self.upload.take()
            && let Err(e) = (self.store)
                .abort_multipart(self.bucket, &self.key, &upload.id)
                .await
        {
            warn!(key = %self.key, error = format!("{e:#}"), "could not abort a multipart upload; the bucket's lifecycle rule will");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::MemStore;

    const MIB: usize = 1 << 20;

    /// `n` lines of `len` bytes each (the last byte a newline), each line telling its number.
    fn lines(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut line = format!("{i:08}").into_bytes();
                line.resize(len - 1, b'.');
                line.push(b'\n');
                line
            })
            .collect()
    }

    async fn write(store: &MemStore, key: &str, lines: &[Vec<u8>]) -> anyhow::Result<()> {
        let mut w =
            PartWriter::with_threshold(store, "b", key.into(), "text/plain", MIN_PART_BYTES);
        for line in lines {
            if let Err(e) = w.append(line).await {
                w.abort().await;
                return Err(e);
            }
        }
        w.finish().await
    }

    #[tokio::test]
    async fn past_the_threshold_the_object_is_a_multipart_upload_of_the_same_bytes() {
        let store = MemStore::new();
        // 12.5 MiB of 100 KiB lines: two full parts and a last one.
        let lines = lines(128, 100 * 1024);
        write(&store, "big", &lines).await.unwrap();
        assert_eq!(store.get("b", "big").unwrap(), lines.concat());
        assert_eq!(store.completed_uploads(), ["b/big"]);
        assert!(store.puts().is_empty(), "no single PUT");
        assert_eq!(store.object("b", "big").unwrap().content_type, "text/plain");
        assert_eq!(store.open_uploads(), 0);
    }

    #[tokio::test]
    async fn an_exact_multiple_of_the_threshold_has_no_empty_last_part() {
        let store = MemStore::new();
        let lines = lines(10, MIN_PART_BYTES / 5);
        write(&store, "even", &lines).await.unwrap();
        assert_eq!(store.get("b", "even").unwrap(), lines.concat());
        assert_eq!(store.completed_uploads(), ["b/even"]);
    }

    #[tokio::test]
    async fn below_the_threshold_the_object_is_one_put() {
        let store = MemStore::new();
        let lines = lines(50, 1000);
        write(&store, "small", &lines).await.unwrap();
        assert_eq!(store.get("b", "small").unwrap(), lines.concat());
        assert_eq!(store.puts(), ["b/small"]);
        assert!(store.completed_uploads().is_empty());
    }

    #[tokio::test]
    async fn with_nothing_written_the_key_is_deleted() {
        let store = MemStore::new();
        store.insert("b", "stale", "from an earlier run\n");
        write(&store, "stale", &[]).await.unwrap();
        assert!(!store.contains("b", "stale"));
        assert!(store.puts().is_empty());
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload_and_leaves_the_key_as_it_was() {
        let store = MemStore::new();
        store.insert("b", "out", "the earlier run's\n");
        store.fail_parts_from(2);
        let err = write(&store, "out", &lines(128, 100 * 1024))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://b/out"), "{err}");
        assert_eq!(store.aborted_uploads(), ["b/out"]);
        assert_eq!(store.open_uploads(), 0);
        assert_eq!(store.get("b", "out").unwrap(), b"the earlier run's\n");
    }

    #[test]
    #[should_panic(expected = "at least 5 MiB")]
    fn a_threshold_below_s3s_minimum_part_is_refused() {
        let store = MemStore::new();
        PartWriter::with_threshold(&store, "b", "k".into(), "text/plain", MIB);
    }
}
