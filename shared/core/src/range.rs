//! Byte-range planning: pure arithmetic, no I/O.
//!
//! The splitter cuts the data region of an object (everything after the CSV header or BOM) into
//! fixed-size ranges without reading it. Record boundaries are not known at planning time; the
//! [`crate::framer`] resolves them on the worker with one rule: a record belongs to the range in
//! which its first byte lies.

use serde::{Deserialize, Serialize};

/// A half-open byte range `[start, end)` of an S3 object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn new(start: u64, end: u64) -> Self {
        assert!(start <= end, "ByteRange start {start} > end {end}");
        Self { start, end }
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn contains(&self, offset: u64) -> bool {
        self.start <= offset && offset < self.end
    }
}

/// Plans the ranges covering `[data_start, object_size)` in pieces of at most `chunk_bytes`.
///
/// An empty data region (empty file, header-only CSV) plans no range at all.
pub fn plan_ranges(data_start: u64, object_size: u64, chunk_bytes: u64) -> Vec<ByteRange> {
    assert!(chunk_bytes > 0, "chunk_bytes must be positive");
    let mut ranges = Vec::new();
    let mut start = data_start;
    while start < object_size {
        let end = object_size.min(start.saturating_add(chunk_bytes));
        ranges.push(ByteRange::new(start, end));
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_region_plans_nothing() {
        assert!(plan_ranges(0, 0, 10).is_empty());
        assert!(plan_ranges(12, 12, 10).is_empty());
    }

    #[test]
    fn last_range_is_short() {
        assert_eq!(
            plan_ranges(5, 30, 10),
            vec![
                ByteRange::new(5, 15),
                ByteRange::new(15, 25),
                ByteRange::new(25, 30)
            ]
        );
    }

    proptest! {
        #[test]
        fn ranges_tile_the_data_region(start in 0u64..1000, len in 0u64..5000, chunk in 1u64..700) {
            let ranges = plan_ranges(start, start + len, chunk);
            let mut next = start;
            for r in &ranges {
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty() && r.len() <= chunk);
                next = r.end;
            }
            prop_assert_eq!(next, start + len);
        }
    }
}
