//! The invariants the fuzz target (fuzz/fuzz_targets/records.rs, `cargo +nightly fuzz run
//! records`) checks on arbitrary bytes, shared with a bounded stable-toolchain property test
//! below, so `cargo test` runs the same checks on every machine.
//!
//! For any input: framing every range of any plan, fed in chunks of any size, yields the file's
//! records (or their oversized stand-ins) exactly once, in order; and judging every record, as a
//! job and `fanout validate` do, never panics and accounts for every frame.

use crate::check::check_sample;
use crate::config::PipelineConfig;
use crate::framer::{Frame, RecordFramer, split_all};
use crate::range::plan_ranges;

const CSV: &str = "input: {format: csv, max_record_bytes: 48, fields: [{name: a, type: integer, required: true}, {name: b}]}\nrequest: {method: POST, url: 'http://h/x/{a}?b={b}', body: {a: '{a}', b: '{b}'}}\n";
const JSONL: &str = "input: {format: jsonl, max_record_bytes: 48, fields: [{name: a, type: integer, required: true}, {name: b, type: any}]}\nrequest: {method: POST, url: 'http://h/x/{a}', body: {a: '{a}', b: '{b}'}}\n";

/// Checks the invariants on `data`; panics on a violation. The first two bytes choose the plan's
/// range size and the feed size, the rest is the file.
pub fn exercise(data: &[u8]) {
    let Some((&[chunk, feed], file)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (chunk, feed, max) = (u64::from(chunk) + 1, usize::from(feed % 16) + 1, 48);

    let expected = split_all(file, 0);
    let mut got = Vec::new();
    for range in plan_ranges(0, file.len() as u64, chunk) {
        let mut framer = RecordFramer::new(range, 0, max);
        let mut rest = &file[framer.read_from() as usize..];
        while !rest.is_empty() {
            let n = feed.min(rest.len());
            if framer.push(&rest[..n], &mut got) {
                break;
            }
            rest = &rest[n..];
        }
        framer.finish(&mut got);
    }
    assert_eq!(got.len(), expected.len(), "records framed once each");
    for (frame, (offset, bytes)) in got.iter().zip(&expected) {
        assert_eq!(frame.offset(), *offset);
        match frame {
            Frame::Record { bytes: b, .. } => assert!(b == bytes && b.len() <= max),
            Frame::Oversized { len, .. } => {
                assert!(*len as usize == bytes.len() && bytes.len() > max)
            }
        }
    }

    for yaml in [CSV, JSONL] {
        let config = PipelineConfig::from_yaml("fuzz.yaml", yaml).expect("fuzz config");
        // A CSV whose header does not fit the config is an error about the file, not a panic.
        if let Ok(check) = check_sample(&config, file, "fuzz.yaml") {
            assert!(check.rejected.len() as u64 <= check.records);
            assert!(check.rejected.windows(2).all(|w| w[0].offset < w[1].offset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        // Mostly the bytes that matter to framing and parsing, some of anything.
        let interesting = prop::sample::select(b"\n\r\",{}[]:a1 \xff\xc3\xef\xbb\xbf".to_vec());
        prop::collection::vec(prop_oneof![4 => interesting, 1 => any::<u8>()], 0..400)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_bytes_keep_the_invariants(data in bytes()) {
            exercise(&data);
        }
    }

    #[test]
    fn a_csv_with_a_matching_header_is_judged() {
        let mut data = vec![7, 3];
        data.extend_from_slice(b"a,b\n1,x\n2\n\n\"3\",\"q\"\"\"\n");
        exercise(&data);
    }
}
