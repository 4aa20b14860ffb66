//! Record framing inside one manifest's byte range, fed by a byte stream.
//!
//! Records are lines (`\n`-terminated, an optional `\r` before the `\n` is stripped). A record
//! starts at the first data byte or right after a `\n`, and belongs to the range in which it
//! starts. So a framer for `[start, end)`:
//! * begins reading at `start - 1` (unless the range starts the data) and discards bytes up to and
//!   including the first `\n`: that is the tail of a record owned by the previous range; reading
//!   one byte early tells whether `start` itself is a record start;
//! * emits every record starting before `end`, reading past `end` to finish the last one;
//! * never holds more than `max_record_bytes` of one record: a longer one is reported as
//!   [`Frame::Oversized`] with its length, and its bytes are dropped as they stream by.
//!
//! CSV input is framed quote-aware ([`RecordFramer::new_csv`]): a newline inside a quoted field
//! does not end its record. The state at the range's first byte is given (known, or guessed; see
//! [`crate::quote`]), the framer starts there instead of one byte early, and it tracks the range's
//! transition function alongside ([`QuoteTrack`]). A CSV record still open and oversized at the
//! range's end is reported then (with the bytes seen so far), so an unterminated quote never
//! makes a worker read on to the end of the object.
//!
//! This is a push parser with no I/O, so it is property-tested against a reference splitter.

use crate::quote::{QState, QuoteScan, Transition, advance, advance_to_record_end};
use crate::range::ByteRange;

/// One framed record (or what is known of one that was too long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A record's bytes without its line terminator. Empty for a blank line.
    Record { offset: u64, bytes: Vec<u8> },
    /// A record longer than the limit; `len` counts its bytes without the terminator.
    Oversized { offset: u64, len: u64 },
}

impl Frame {
    pub fn offset(&self) -> u64 {
        match self {
            Frame::Record { offset, .. } | Frame::Oversized { offset, .. } => *offset,
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Discarding the tail of the previous range's last record.
    Skipping,
    /// Inside the record that starts at `start`.
    InRecord {
        start: u64,
        len: u64,
        oversized: bool,
        ends_cr: bool,
    },
    Done,
}

#[derive(Debug)]
pub struct RecordFramer {
    range: ByteRange,
    max_record_bytes: usize,
    /// Absolute offset of the next byte to be pushed.
    pos: u64,
    phase: Phase,
    buf: Vec<u8>,
    /// CSV framing (None: lines).
    csv: Option<CsvFraming>,
}

#[derive(Debug)]
struct CsvFraming {
    delim: u8,
    /// The quote state at `pos` of the simulation records are framed by.
    state: QState,
    track: QuoteTrack,
    /// The transition from the range's start to `min(pos, end)`.
    hyp: Transition,
}

/// What a CSV framer learnt about its range's quote states: the start state it framed under, the
/// range's transition function at each record start where it changed, and at the range's end.
#[derive(Clone, Debug, PartialEq)]
pub struct QuoteTrack {
    pub start: QState,
    /// Start states that frame the same records (see [`QuoteScan::also`]).
    pub also: u8,
    changes: Vec<(u64, Transition)>,
    at_end: Option<Transition>,
}

impl QuoteTrack {
    /// The scan of the part `[start, cut)` (or of the whole range without a cut). `cut` must be a
    /// record start of this framer. None when the framer did not reach the end it needs.
    pub fn scan(&self, cut: Option<u64>) -> Option<QuoteScan> {
        let ends = match cut {
            None => self.at_end?,
            Some(cut) => {
                let i = self.changes.partition_point(|(o, _)| *o <= cut);
                self.changes[..i].last()?.1
            }
        };
        Some(QuoteScan {
            start: self.start,
            also: self.also,
            ends,
        })
    }
}

impl RecordFramer {
    /// `data_start` is the offset of the first data byte of the object (after header or BOM).
    pub fn new(range: ByteRange, data_start: u64, max_record_bytes: usize) -> Self {
        let (pos, phase) = if range.start <= data_start {
            (
                data_start,
                Phase::InRecord {
                    start: data_start,
                    len: 0,
                    oversized: false,
                    ends_cr: false,
                },
            )
        } else {
            (range.start - 1, Phase::Skipping)
        };
        let phase = if range.is_empty() { Phase::Done } else { phase };
        Self {
            range,
            max_record_bytes,
            pos,
            phase,
            buf: Vec::new(),
            csv: None,
        }
    }

    /// A quote-aware CSV framer for `range`, whose first byte is in state `start` (ignored for the
    /// range that starts the data: that is a record start).
    pub fn new_csv(
        range: ByteRange,
        data_start: u64,
        max_record_bytes: usize,
        delim: u8,
        start: QState,
    ) -> Self {
        let first = range.start <= data_start;
        let (pos, start) = if first {
            (data_start, QState::Record)
        } else {
            (range.start, start)
        };
        let mut framer = Self {
            range,
            max_record_bytes,
            pos,
            phase: Phase::Skipping,
            buf: Vec::new(),
            csv: Some(CsvFraming {
                delim,
                state: start,
                track: QuoteTrack {
                    start,
                    also: 0,
                    changes: Vec::new(),
                    at_end: None,
                },
                hyp: Transition::IDENTITY,
            }),
        };
        if range.is_empty() || pos >= range.end {
            framer.phase = Phase::Done;
            framer.csv_mut().track.at_end = Some(Transition::IDENTITY);
        } else if start == QState::Record {
            framer.begin_record_at(pos);
        }
        framer
    }

    /// Records the start states that a guess found framing the same records as its own.
    pub fn with_equivalent_starts(mut self, also: u8) -> Self {
        self.csv_mut().track.also = also;
        self
    }

    fn csv_mut(&mut self) -> &mut CsvFraming {
        self.csv.as_mut().expect("a CSV framer")
    }

    /// The quote states a CSV framer tracked (None for lines).
    pub fn quote_track(&self) -> Option<&QuoteTrack> {
        self.csv.as_ref().map(|c| &c.track)
    }

    /// The absolute offset at which the byte stream must begin.
    pub fn read_from(&self) -> u64 {
        self.pos
    }

    /// The absolute offset of the next byte expected.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Feeds the next bytes of the stream; appends complete frames to `out`.
    /// Returns true once the range is finished: further bytes are not needed.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Frame>) -> bool {
        if self.csv.is_some() {
            return self.push_csv(chunk, out);
        }
        while !chunk.is_empty() {
            match self.phase {
                Phase::Done => return true,
                Phase::Skipping => match memchr::memchr(b'\n', chunk) {
                    Some(i) => {
                        self.pos += i as u64 + 1;
                        chunk = &chunk[i + 1..];
                        self.begin_record_at(self.pos);
                    }
                    None => {
                        self.pos += chunk.len() as u64;
                        chunk = &[];
                    }
                },
                Phase::InRecord { .. } => {
                    let (piece, terminated) = match memchr::memchr(b'\n', chunk) {
                        Some(i) => (&chunk[..i], true),
                        None => (chunk, false),
                    };
                    self.absorb(piece);
                    let consumed = piece.len() + usize::from(terminated);
                    self.pos += consumed as u64;
                    chunk = &chunk[consumed..];
                    if terminated {
                        self.emit(out);
                        self.begin_record_at(self.pos);
                    }
                }
            }
        }
        self.is_done()
    }

    fn push_csv(&mut self, mut chunk: &[u8], out: &mut Vec<Frame>) -> bool {
        while !chunk.is_empty() {
            let (delim, state) = {
                let c = self.csv_mut();
                (c.delim, c.state)
            };
            match self.phase {
                Phase::Done => return true,
                Phase::Skipping => {
                    let (n, next, terminated) = advance_to_record_end(state, chunk, delim);
                    self.consume_csv(&chunk[..n], next);
                    chunk = &chunk[n..];
                    if terminated {
                        self.begin_record_at(self.pos);
                    }
                }
                Phase::InRecord { .. } => {
                    let (n, next, terminated) = advance_to_record_end(state, chunk, delim);
                    let oversized = self.absorb(&chunk[..n - usize::from(terminated)]);
                    self.consume_csv(&chunk[..n], next);
                    chunk = &chunk[n..];
                    if terminated {
                        self.emit(out);
                        self.begin_record_at(self.pos);
                    } else if oversized && self.pos >= self.range.end {
                        // Its end is not needed (the next range knows its own start state): an
                        // unterminated quote does not make this worker read to the object's end.
                        self.emit(out);
                    }
                }
            }
        }
        self.is_done()
    }

    /// Moves a CSV framer over `bytes`, after which its state is `next`; extends the range's
    /// transition over the part of them before the range's end.
    /// Adds `piece` to the record being read: its length and whether it ends with `\r`, and its
    /// bytes while the record is within `max_record_bytes` (past it they are dropped as they
    /// stream by). Returns whether the record is now too long. Lines and CSV framing share it.
    fn absorb(&mut self, piece: &[u8]) -> bool {
        let Phase::InRecord {
            len,
            oversized,
            ends_cr,
            ..
        } = &mut self.phase
        else {
            return false;
        };
        *len += piece.len() as u64;
        if let Some(&last) = piece.last() {
            *ends_cr = last == b'\r';
        }
        *oversized = *oversized || *len > self.max_record_bytes as u64 + 1;
        if *oversized {
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(piece);
        }
        *oversized
    }

    fn consume_csv(&mut self, bytes: &[u8], next: QState) {
        let (pos, end) = (self.pos, self.range.end);
        let c = self.csv.as_mut().expect("a CSV framer");
        let upto = (end.saturating_sub(pos)).min(bytes.len() as u64) as usize;
        if upto > 0 {
            if c.hyp.converged() {
                let s = if upto == bytes.len() {
                    next
                } else {
                    advance(c.state, &bytes[..upto], c.delim)
                };
                c.hyp = Transition([s; 5]);
            } else {
                c.hyp.advance(&bytes[..upto], c.delim);
            }
        }
        c.state = next;
        self.pos += bytes.len() as u64;
        if c.track.at_end.is_none() && self.pos >= end {
            c.track.at_end = Some(c.hyp);
        }
    }

    /// Signals the end of the object: emits a final unterminated record if one started.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if let Some(c) = &mut self.csv
            && c.track.at_end.is_none()
        {
            c.track.at_end = Some(c.hyp);
        }
        if let Phase::InRecord { start, len, .. } = self.phase {
            // A record "starting" at EOF after a final newline has no bytes: there is none.
            if start < self.pos || len > 0 {
                self.emit(out);
            }
        }
        self.phase = Phase::Done;
    }

    fn begin_record_at(&mut self, start: u64) {
        if start < self.range.end
            && let Some(c) = &mut self.csv
            && c.track.changes.last().is_none_or(|(_, t)| *t != c.hyp)
        {
            c.track.changes.push((start, c.hyp));
        }
        self.phase = if start < self.range.end {
            Phase::InRecord {
                start,
                len: 0,
                oversized: false,
                ends_cr: false,
            }
        } else {
            Phase::Done
        };
    }

    fn emit(&mut self, out: &mut Vec<Frame>) {
        let Phase::InRecord {
            start,
            mut len,
            oversized,
            ends_cr,
        } = self.phase
        else {
            return;
        };
        let mut bytes = std::mem::take(&mut self.buf);
        if ends_cr {
            bytes.pop();
            len -= 1;
        }
        // The buffer may hold one byte over the limit (a `\r` that turned out to be a CRLF).
        if oversized || len > self.max_record_bytes as u64 {
            out.push(Frame::Oversized { offset: start, len });
        } else {
            out.push(Frame::Record {
                offset: start,
                bytes,
            });
        }
        self.phase = Phase::Done;
    }
}

/// Reference splitter over a whole in-memory object: every record from `data_start` to the end.
/// Used by tests and benchmarks as the oracle for the streaming framer.
pub fn split_all(data: &[u8], data_start: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = data_start;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let mut line = &data[start..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        out.push((start as u64, line.to_vec()));
        start = end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::{QState, Transition};
    use crate::range::plan_ranges;
    use proptest::prelude::*;

    /// Runs a framer over `data` for `range`, feeding chunks of `feed` bytes.
    fn frame(
        data: &[u8],
        data_start: u64,
        range: ByteRange,
        feed: usize,
        max: usize,
    ) -> Vec<Frame> {
        let mut framer = RecordFramer::new(range, data_start, max);
        let mut out = Vec::new();
        let mut at = framer.read_from() as usize;
        while at < data.len() {
            let end = (at + feed).min(data.len());
            if framer.push(&data[at..end], &mut out) {
                return out;
            }
            at = end;
        }
        framer.finish(&mut out);
        out
    }

    fn records(frames: Vec<Frame>) -> Vec<(u64, Vec<u8>)> {
        frames
            .into_iter()
            .map(|f| match f {
                Frame::Record { offset, bytes } => (offset, bytes),
                Frame::Oversized { offset, .. } => {
                    panic!("unexpected oversized record at {offset}")
                }
            })
            .collect()
    }

    #[test]
    fn whole_file_one_range() {
        let data = b"a,b\r\nc,d\n\nlast";
        let got = records(frame(data, 0, ByteRange::new(0, data.len() as u64), 3, 100));
        assert_eq!(
            got,
            vec![
                (0, b"a,b".to_vec()),
                (5, b"c,d".to_vec()),
                (9, vec![]),
                (10, b"last".to_vec())
            ]
        );
    }

    #[test]
    fn range_starting_on_a_record_start_keeps_it() {
        // "ab\n" then "cd\n": range [3, 6) starts exactly at "cd".
        let data = b"ab\ncd\nef\n";
        let got = records(frame(data, 0, ByteRange::new(3, 6), 64, 100));
        assert_eq!(got, vec![(3, b"cd".to_vec())]);
    }

    #[test]
    fn range_inside_a_record_yields_nothing() {
        let data = b"abcdefgh\nxy\n";
        assert!(frame(data, 0, ByteRange::new(2, 5), 64, 100).is_empty());
        // The record that starts at 9 belongs to [5, 12).
        assert_eq!(
            records(frame(data, 0, ByteRange::new(5, 12), 1, 100)),
            vec![(9, b"xy".to_vec())]
        );
    }

    #[test]
    fn oversized_record_is_reported_with_its_length() {
        let data = b"short\nthis-one-is-too-long\nok\n";
        let got = frame(data, 0, ByteRange::new(0, data.len() as u64), 4, 8);
        assert_eq!(
            got,
            vec![
                Frame::Record {
                    offset: 0,
                    bytes: b"short".to_vec()
                },
                Frame::Oversized { offset: 6, len: 20 },
                Frame::Record {
                    offset: 27,
                    bytes: b"ok".to_vec()
                },
            ]
        );
    }

    #[test]
    fn crlf_record_exactly_at_the_limit_is_kept() {
        let data = b"12345678\r\n";
        let got = records(frame(data, 0, ByteRange::new(0, data.len() as u64), 1, 8));
        assert_eq!(got, vec![(0, b"12345678".to_vec())]);
    }

    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b','), Just(b'"'), Just(b'{')], 0..12),
            1 => Just(Vec::new()),
            1 => proptest::collection::vec(Just(b'x'), 30..90),
        ]
    }

    /// A CSV field as written: quoted (with doubled quotes, delimiters, LF and CRLF inside) or
    /// unquoted (a quote inside it is a literal, as in Python's csv module).
    fn csv_field() -> impl Strategy<Value = Vec<u8>> {
        let quoted = proptest::collection::vec(
            prop_oneof![
                4 => Just(&b"a"[..]),
                2 => Just(&b","[..]),
                2 => Just(&b"\"\""[..]),
                2 => Just(&b"\n"[..]),
                2 => Just(&b"\r\n"[..]),
                1 => Just(&b" "[..]),
            ],
            0..8,
        )
        .prop_map(|parts| {
            let mut f = b"\"".to_vec();
            parts.iter().for_each(|p| f.extend_from_slice(p));
            f.push(b'"');
            f
        });
        let unquoted = proptest::collection::vec(
            prop_oneof![4 => Just(b'b'), 1 => Just(b'"'), 1 => Just(b' ')],
            0..6,
        )
        .prop_map(|mut f| {
            if f.first() == Some(&b'"') {
                f[0] = b'b';
            }
            f
        });
        prop_oneof![quoted, unquoted]
    }

    /// Every range's frames, with each range's start state found by composing the transitions
    /// of the ranges before it (as the job's completion does); checks each range's transition.
    fn frame_csv_ranges(data: &[u8], chunk: u64, feed: usize, max: usize) -> Vec<Frame> {
        let mut state = QState::Record;
        let mut got = Vec::new();
        for range in plan_ranges(0, data.len() as u64, chunk) {
            let mut framer = RecordFramer::new_csv(range, 0, max, b',', state);
            let mut at = framer.read_from() as usize;
            while at < data.len() {
                let end = (at + feed).min(data.len());
                if framer.push(&data[at..end], &mut got) {
                    break;
                }
                at = end;
            }
            if !framer.is_done() {
                framer.finish(&mut got);
            }
            let scan = framer.quote_track().unwrap().scan(None).unwrap();
            let bytes = &data[range.start as usize..range.end as usize];
            assert_eq!(scan.start, state);
            assert_eq!(scan.ends, Transition::of(bytes, b','), "range {range:?}");
            state = scan.ends.apply(state);
        }
        got
    }

    proptest! {
        /// Records with quoted line breaks, quotes, delimiters and CRLF, cut into random ranges:
        /// the records and their values are the `csv` crate's on the whole file.
        #[test]
        fn csv_ranges_read_what_a_whole_file_reader_reads(
            rows in proptest::collection::vec(proptest::collection::vec(csv_field(), 1..4), 0..25),
            crlf in any::<bool>(),
            trailing_newline in any::<bool>(),
            chunk in 1u64..60,
            feed in 1usize..17,
        ) {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut data = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                data.extend_from_slice(&row.join(&b','));
                if i + 1 < rows.len() || trailing_newline {
                    data.extend_from_slice(eol);
                }
            }
            let mut oracle = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(&data[..]);
            let expected: Vec<(u64, Vec<Vec<u8>>)> = oracle
                .byte_records()
                .map(|r| {
                    let r = r.unwrap();
                    // The csv crate may place a record at the line breaks before it.
                    let mut at = r.position().unwrap().byte();
                    while matches!(data.get(at as usize), Some(b'\n' | b'\r')) {
                        at += 1;
                    }
                    (at, r.iter().map(<[u8]>::to_vec).collect())
                })
                .collect();
            let mut reader = csv_core::ReaderBuilder::new().build();
            let got: Vec<(u64, Vec<Vec<u8>>)> = records(frame_csv_ranges(&data, chunk, feed, 10_000))
                .into_iter()
                // Blank lines are records of nothing here, and no record to a CSV reader.
                .filter(|(_, bytes)| !bytes.is_empty())
                .map(|(offset, bytes)| (offset, csv_fields(&mut reader, &bytes)))
                .collect();
            prop_assert_eq!(got, expected);
        }

        /// A small limit bounds a record spanning many lines; every record is still counted once.
        #[test]
        fn csv_oversized_records_are_bounded_and_counted_once(
            rows in proptest::collection::vec(proptest::collection::vec(csv_field(), 1..4), 1..20),
            chunk in 1u64..60,
            max in 1usize..12,
        ) {
            let data: Vec<u8> = rows.iter().map(|r| r.join(&b',')).collect::<Vec<_>>().join(&b'\n');
            let full = frame_csv_ranges(&data, data.len().max(1) as u64, 64, usize::MAX / 2);
            let cut = frame_csv_ranges(&data, chunk, 5, max);
            prop_assert_eq!(full.len(), cut.len());
            for (f, c) in full.iter().zip(&cut) {
                prop_assert_eq!(f.offset(), c.offset());
                match (f, c) {
                    (Frame::Record { bytes, .. }, Frame::Record { bytes: b, .. }) => prop_assert!(b == bytes && b.len() <= max),
                    (Frame::Record { bytes, .. }, Frame::Oversized { len, .. }) => prop_assert!(bytes.len() > max && *len as usize > max),
                    _ => prop_assert!(false, "{f:?} / {c:?}"),
                }
            }
        }
    }

    /// A record's fields by csv-core (the parser the worker uses).
    fn csv_fields(reader: &mut csv_core::Reader, record: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![0; record.len() + 1];
        let mut ends = vec![0; record.len() + 1];
        reader.reset();
        let (mut input, mut nout, mut nend) = (record, 0, 0);
        loop {
            let (res, read, written, ended) =
                reader.read_record(input, &mut out[nout..], &mut ends[nend..]);
            input = &input[read..];
            nout += written;
            nend += ended;
            if !matches!(res, csv_core::ReadRecordResult::InputEmpty) {
                break;
            }
        }
        let mut start = 0;
        ends[..nend]
            .iter()
            .map(|&e| {
                let f = out[start..e].to_vec();
                start = e;
                f
            })
            .collect()
    }

    proptest! {
        /// The concatenation of all ranges' records is the file's records, in order, each once.
        #[test]
        fn ranges_partition_the_records(
            lines in proptest::collection::vec(line_strategy(), 0..30),
            crlf in any::<bool>(),
            trailing_newline in any::<bool>(),
            header in proptest::option::of(proptest::collection::vec(Just(b'h'), 0..6)),
            chunk in 1u64..40,
            feed in 1usize..17,
        ) {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut data = Vec::new();
            let data_start = match &header {
                Some(h) => { data.extend_from_slice(h); data.extend_from_slice(eol); data.len() }
                None => 0,
            };
            for (i, line) in lines.iter().enumerate() {
                data.extend_from_slice(line);
                if i + 1 < lines.len() || trailing_newline {
                    data.extend_from_slice(eol);
                }
            }
            let expected = split_all(&data, data_start);
            let mut got = Vec::new();
            for range in plan_ranges(data_start as u64, data.len() as u64, chunk) {
                got.extend(records(frame(&data, data_start as u64, range, feed, 1000)));
            }
            prop_assert_eq!(got, expected);
        }

        /// With a small limit, every record is still accounted for exactly once (kept or oversized).
        #[test]
        fn oversized_records_are_accounted_for(
            lines in proptest::collection::vec(line_strategy(), 0..30),
            chunk in 1u64..50,
            feed in 1usize..9,
            max in 0usize..20,
        ) {
            let data: Vec<u8> = lines.join(&b'\n');
            let expected = split_all(&data, 0);
            let mut got = Vec::new();
            for range in plan_ranges(0, data.len() as u64, chunk) {
                got.extend(frame(&data, 0, range, feed, max));
            }
            prop_assert_eq!(got.len(), expected.len());
            for (frame, (offset, bytes)) in got.iter().zip(&expected) {
                prop_assert_eq!(frame.offset(), *offset);
                match frame {
                    Frame::Record { bytes: b, .. } => prop_assert!(b == bytes && b.len() <= max),
                    Frame::Oversized { len, .. } => prop_assert!(*len as usize == bytes.len() && bytes.len() > max),
                }
            }
        }
    }
}
