//! The exact bytes of a ranged GET, whatever the server chose to send.
//!
//! HTTP lets a server ignore `Range` and answer 200 with the whole representation (RFC 9110
//! §14.2); some S3-compatible stores do, and one emulator does when the request also names a
//! version. A 206 says which bytes it holds in `Content-Range`, which need not be exactly the
//! bytes asked for (a server may clamp the end to the object's size). A reader that streamed the
//! body as if it were the requested range would frame records from the wrong offset and lose or
//! duplicate them, so the reader works out where the range sits in the body it got
//! ([`BodySpan::locate`]) and streams exactly those bytes ([`take_range`]), failing when the body
//! cannot hold them.

use bytes::Bytes;
use futures::StreamExt;

use crate::ports::ByteStream;
use crate::range::ByteRange;

/// Where the requested range sits inside a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySpan {
    /// Bytes of the body before the range starts.
    pub skip: u64,
    /// Bytes of the range (the requested length).
    pub take: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeReplyError {
    #[error("Content-Range {0:?} is not of the form `bytes first-last/size`")]
    BadContentRange(String),
    #[error(
        "the server sent bytes {held_start}..{held_end}, which do not hold the requested range {want_start}..{want_end}"
    )]
    DoesNotHold {
        held_start: u64,
        held_end: u64,
        want_start: u64,
        want_end: u64,
    },
    #[error("the body ended after {got} of the {want} bytes of the range")]
    ShortBody { got: u64, want: u64 },
}

impl BodySpan {
    /// Locates `want` in a reply: `content_range` is the header of a 206 (None for a 200, whose
    /// body is the whole object from offset 0), `content_length` the body's declared length
    /// when the server sent one.
    pub fn locate(
        want: ByteRange,
        content_range: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<Self, RangeReplyError> {
        let (held_start, held_end) = match content_range {
            Some(header) => parse_content_range(header)?,
            // A 200: the body starts at offset 0. Its length, when declared, bounds what it holds;
            // when not, take_range finds out while streaming.
            None => (0, content_length.unwrap_or(u64::MAX)),
        };
        if held_start > want.start || held_end < want.end {
            return Err(RangeReplyError::DoesNotHold {
                held_start,
                held_end,
                want_start: want.start,
                want_end: want.end,
            });
        }
        Ok(Self {
            skip: want.start - held_start,
            take: want.len(),
        })
    }
}

/// `bytes first-last/size` (or `/*`) as the half-open range `[first, last + 1)`.
fn parse_content_range(header: &str) -> Result<(u64, u64), RangeReplyError> {
    let bad = || RangeReplyError::BadContentRange(header.to_string());
    let spec = header.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (span, _size) = spec.split_once('/').ok_or_else(bad)?;
    let (first, last) = span.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok((first, last + 1))
}

/// Streams exactly `span.take` bytes of `body` after skipping `span.skip`; a body that ends
/// before the range does fails with [`RangeReplyError::ShortBody`]. What follows the range is
/// never read (dropping the stream closes the connection).
pub fn take_range(body: ByteStream, span: BodySpan, what: String) -> ByteStream {
    struct State {
        body: ByteStream,
        skip: u64,
        left: u64,
        what: String,
    }
    let state = State {
        body,
        skip: span.skip,
        left: span.take,
        what,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if st.left == 0 {
                return None;
            }
            match st.body.next().await {
                None => {
                    let err = RangeReplyError::ShortBody {
                        got: span.take - st.left,
                        want: span.take,
                    };
                    st.left = 0;
                    return Some((Err(anyhow::anyhow!("{}: {err}", st.what)), st));
                }
                Some(Err(e)) => {
                    st.left = 0;
                    return Some((Err(e), st));
                }
                Some(Ok(mut chunk)) => {
                    let drop_front = st.skip.min(chunk.len() as u64);
                    st.skip -= drop_front;
                    let chunk = chunk.split_off(drop_front as usize);
                    if chunk.is_empty() {
                        continue;
                    }
                    let keep = st.left.min(chunk.len() as u64) as usize;
                    st.left -= keep as u64;
                    let out: Bytes = chunk.slice(..keep);
                    return Some((Ok(out), st));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunks(data: &[u8], sizes: &[usize]) -> ByteStream {
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < data.len() {
            let n = sizes[i % sizes.len()].max(1).min(data.len() - at);
            out.push(Ok(Bytes::copy_from_slice(&data[at..at + n])));
            at += n;
            i += 1;
        }
        futures::stream::iter(out).boxed()
    }

    async fn collect(stream: ByteStream) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[test]
    fn a_206_with_the_asked_range_is_taken_whole() {
        let span = BodySpan::locate(ByteRange::new(2, 5), Some("bytes 2-4/10"), Some(3)).unwrap();
        assert_eq!(span, BodySpan { skip: 0, take: 3 });
    }

    #[test]
    fn a_200_is_the_whole_object_from_zero() {
        let span = BodySpan::locate(ByteRange::new(2, 5), None, Some(10)).unwrap();
        assert_eq!(span, BodySpan { skip: 2, take: 3 });
    }

    #[test]
    fn a_206_that_holds_more_is_narrowed() {
        let span = BodySpan::locate(ByteRange::new(4, 6), Some("bytes 2-9/*"), None).unwrap();
        assert_eq!(span, BodySpan { skip: 2, take: 2 });
    }

    #[test]
    fn a_reply_that_misses_part_of_the_range_is_refused() {
        // Clamped end: the server holds 2..8 of an object we believed longer.
        let err = BodySpan::locate(ByteRange::new(2, 10), Some("bytes 2-7/8"), None).unwrap_err();
        assert!(err.to_string().contains("2..8"), "{err}");
        assert!(err.to_string().contains("2..10"), "{err}");
        // A later start.
        assert!(BodySpan::locate(ByteRange::new(2, 5), Some("bytes 3-4/10"), None).is_err());
        // A 200 too short for the range.
        assert!(BodySpan::locate(ByteRange::new(2, 12), None, Some(10)).is_err());
    }

    #[test]
    fn malformed_content_range_names_the_header() {
        for header in [
            "items 2-4/10",
            "bytes 2-4",
            "bytes x-4/10",
            "bytes 5-4/10",
            "bytes */10",
        ] {
            let err = BodySpan::locate(ByteRange::new(2, 5), Some(header), None).unwrap_err();
            assert_eq!(err, RangeReplyError::BadContentRange(header.into()));
            assert!(err.to_string().contains(header));
        }
    }

    #[tokio::test]
    async fn a_short_body_fails_with_how_much_came() {
        let body = chunks(b"0123", &[3]);
        let stream = take_range(
            body,
            BodySpan { skip: 2, take: 5 },
            "GetObject s3://b/k".into(),
        );
        let err = collect(stream).await.unwrap_err().to_string();
        assert!(err.contains("s3://b/k"), "{err}");
        assert!(err.contains("after 2 of the 5 bytes"), "{err}");
    }

    proptest! {
        /// Whatever the chunking, a full body (a 200) yields exactly the requested bytes.
        #[test]
        fn the_range_comes_out_exactly(
            data in proptest::collection::vec(any::<u8>(), 1..300),
            a in 0usize..300,
            b in 0usize..300,
            sizes in proptest::collection::vec(1usize..40, 1..6),
        ) {
            let (a, b) = (a % data.len(), b % (data.len() + 1));
            let (start, end) = if a <= b { (a, b) } else { (b, a) };
            let want = ByteRange::new(start as u64, end as u64);
            let span = BodySpan::locate(want, None, Some(data.len() as u64)).unwrap();
            let got = futures::executor::block_on(collect(take_range(
                chunks(&data, &sizes),
                span,
                String::new(),
            )))
            .unwrap();
            prop_assert_eq!(&got[..], &data[start..end]);
        }
    }
}
