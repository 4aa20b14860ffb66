//! CSV quote state across byte ranges: where records start when a quoted field may hold line
//! breaks. The design and the reasons for it are in `docs/CSV.md`.
//!
//! The CSV reader's framing is a five-state machine ([`QState`]), lenient like Python's `csv`
//! module: a quote opens a quoted field only at a field's start (`a"b` is a literal), a doubled
//! quote inside quotes is one quote, and a byte after a closing quote other than a delimiter or a
//! newline continues the field unquoted (`"ab"c` is `abc`). A newline ends a record in every
//! state but [`QState::Quoted`].
//!
//! A range's worker does not know the state at its first byte. It computes its range's
//! [`Transition`] (for each possible start state, the state at its end: simulations that meet
//! are identical from then on, so this costs little more than framing), processes records under a
//! [guess](guess_start), and records both. Once every range is recorded, [`resolve`] composes the
//! transitions from the first range (which starts a record) and names the ranges whose guess was
//! wrong, with their true start states: only those are redone, and a wrong guess never cascades.

use serde::{Deserialize, Serialize};

/// The framing state at a byte boundary (the state after the byte before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QState {
    /// At the start of a record (after a newline outside quotes, or at the first data byte).
    Record,
    /// At the start of a field (after a delimiter).
    Field,
    /// Inside an unquoted field.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// After a quote inside a quoted field: it closes the field, or is the first of a pair.
    QuoteInQuoted,
}

use QState::*;

impl QState {
    pub const ALL: [QState; 5] = [Record, Field, Unquoted, Quoted, QuoteInQuoted];

    pub fn index(self) -> usize {
        self as usize
    }

    /// One letter per state, for the ledger: `R`, `F`, `U`, `Q`, `E`.
    pub fn code(self) -> char {
        match self {
            Record => 'R',
            Field => 'F',
            Unquoted => 'U',
            Quoted => 'Q',
            QuoteInQuoted => 'E',
        }
    }

    pub fn from_code(c: char) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == c)
    }
}

/// One byte of the machine.
#[inline]
pub fn step(s: QState, b: u8, delim: u8) -> QState {
    match s {
        Record | Field => {
            if b == b'"' {
                Quoted
            } else if b == delim {
                Field
            } else if b == b'\n' {
                Record
            } else {
                Unquoted
            }
        }
        Unquoted | QuoteInQuoted => {
            if b == b'"' && s == QuoteInQuoted {
                Quoted
            } else if b == delim {
                Field
            } else if b == b'\n' {
                Record
            } else {
                Unquoted
            }
        }
        Quoted => {
            if b == b'"' {
                QuoteInQuoted
            } else {
                Quoted
            }
        }
    }
}

/// Advances from `s` over `bytes` up to and including the first newline that ends a record.
/// Returns the bytes consumed, the state after them, and whether a record ended. Jumps from quote
/// to newline with `memchr`, so a quote-free record costs one search.
#[inline]
pub fn advance_to_record_end(mut s: QState, bytes: &[u8], delim: u8) -> (usize, QState, bool) {
    let len = bytes.len();
    let mut i = 0;
    loop {
        match s {
            Quoted => match memchr::memchr(b'"', &bytes[i..]) {
                Some(j) => {
                    i += j + 1;
                    s = QuoteInQuoted;
                }
                None => return (len, Quoted, false),
            },
            QuoteInQuoted => {
                if i == len {
                    return (len, s, false);
                }
                s = step(s, bytes[i], delim);
                i += 1;
                if s == Record {
                    return (i, Record, true);
                }
            }
            Record | Field | Unquoted => match memchr::memchr2(b'"', b'\n', &bytes[i..]) {
                None => {
                    if i < len {
                        s = if bytes[len - 1] == delim {
                            Field
                        } else {
                            Unquoted
                        };
                    }
                    return (len, s, false);
                }
                Some(j) => {
                    let at = i + j;
                    if at > i {
                        s = if bytes[at - 1] == delim {
                            Field
                        } else {
                            Unquoted
                        };
                    }
                    i = at + 1;
                    if bytes[at] == b'\n' {
                        return (i, Record, true);
                    }
                    s = if s == Unquoted { Unquoted } else { Quoted };
                }
            },
        }
    }
}

/// The state after `bytes` from `s`.
pub fn advance(mut s: QState, mut bytes: &[u8], delim: u8) -> QState {
    while !bytes.is_empty() {
        if s != Quoted && memchr::memchr(b'"', bytes).is_none() {
            // No quote: the last newline (if any) ends a record; only the tail after it counts.
            let tail = match memchr::memrchr(b'\n', bytes) {
                Some(i) => {
                    s = Record;
                    &bytes[i + 1..]
                }
                None => bytes,
            };
            return match tail.last() {
                None => s,
                Some(&b) if b == delim => Field,
                Some(_) => Unquoted,
            };
        }
        let (n, next, _) = advance_to_record_end(s, bytes, delim);
        s = next;
        bytes = &bytes[n..];
    }
    s
}

/// A range's transition function: for each start state (by [`QState::index`]), its end state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition(pub [QState; 5]);

impl Transition {
    pub const IDENTITY: Transition = Transition(QState::ALL);

    pub fn of(bytes: &[u8], delim: u8) -> Self {
        let mut t = Self::IDENTITY;
        t.advance(bytes, delim);
        t
    }

    pub fn apply(&self, s: QState) -> QState {
        self.0[s.index()]
    }

    /// `self` then `next`.
    pub fn then(&self, next: &Transition) -> Transition {
        Transition(self.0.map(|s| next.apply(s)))
    }

    /// Every start state has met the same state: the rest of the range is the same for all.
    pub fn converged(&self) -> bool {
        self.0.iter().all(|s| *s == self.0[0])
    }

    /// Extends the function over `bytes` (each distinct current state simulated once).
    pub fn advance(&mut self, bytes: &[u8], delim: u8) {
        let mut memo: [Option<QState>; 5] = [None; 5];
        for s in &mut self.0 {
            *s = *memo[s.index()].get_or_insert_with(|| advance(*s, bytes, delim));
        }
    }

    /// `RFUQE`: the end state of each start state in order.
    pub fn encode(&self) -> String {
        self.0.iter().map(|s| s.code()).collect()
    }

    pub fn decode(text: &str) -> Option<Self> {
        let states: Vec<QState> = text.chars().map(QState::from_code).collect::<Option<_>>()?;
        Some(Transition(states.try_into().ok()?))
    }
}

/// What one manifest (or continuation) part recorded about its sub-range: the start state it
/// worked under, the other start states that frame its records the same way (their simulations
/// meet its own before either alone reaches a record start), and its sub-range's transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteScan {
    pub start: QState,
    /// Start states equivalent to `start` for this part's records, a bit per [`QState::index`].
    pub also: u8,
    pub ends: Transition,
}

impl QuoteScan {
    /// Whether this part's records are the ones framed from `truth`.
    pub fn framed_right(&self, truth: QState) -> bool {
        self.start == truth || self.also & (1 << truth.index()) != 0
    }

    /// `R:RRRQE`, or with equivalent start states `EU:RRRQE`, as the ledger stores it.
    pub fn encode(&self) -> String {
        let also: String = QState::ALL
            .iter()
            .filter(|s| self.also & (1 << s.index()) != 0)
            .map(|s| s.code())
            .collect();
        format!("{}{also}:{}", self.start.code(), self.ends.encode())
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (start, ends) = text.split_once(':')?;
        let mut chars = start.chars();
        let start = QState::from_code(chars.next()?)?;
        let mut also = 0;
        for c in chars {
            also |= 1 << QState::from_code(c)?.index();
        }
        Some(Self {
            start,
            also,
            ends: Transition::decode(ends)?,
        })
    }
}

/// One recorded part, as [`resolve`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartScan {
    pub seq: u32,
    pub part: u32,
    pub scan: QuoteScan,
}

/// A range to redo: its `seq` and the state its first byte truly starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redo {
    pub seq: u32,
    pub start: QState,
}

/// Composes every part's transition in order, from the first data byte (a record start), and
/// returns the ranges whose part 0 worked under a wrong start state. `parts` must be every part of
/// the job, the parts of a range tiling it (as continuations do); their order does not matter.
pub fn resolve(parts: &[PartScan]) -> Vec<Redo> {
    let mut parts = parts.to_vec();
    parts.sort_by_key(|p| (p.seq, p.part));
    let mut state = Record;
    let mut range_start = Record;
    let mut redo: Vec<Redo> = Vec::new();
    for p in &parts {
        if p.part == 0 {
            range_start = state;
        }
        let wrong_seq = redo.last().is_some_and(|r| r.seq == p.seq);
        if !p.scan.framed_right(state) && !wrong_seq {
            // A continuation starts where its parent's framing put a record start, so a part 0
            // is wrong first; the whole range is redone from its true state.
            redo.push(Redo {
                seq: p.seq,
                start: range_start,
            });
        }
        state = p.scan.ends.apply(state);
    }
    redo
}

/// How far [`guess_start`] looks.
pub const GUESS_WINDOW: usize = 64 * 1024;

/// Guesses the state at a range's first byte from the byte before it (`prev`) and the range's
/// first bytes (`window`, up to [`GUESS_WINDOW`]).
///
/// The candidates are the states `prev` can lead to (after a newline: a record start, or inside
/// quotes; after a delimiter: a field start, or inside quotes; after a quote: after a closing
/// quote, a literal quote, or inside quotes; otherwise unquoted, or inside quotes). Each is
/// simulated until they all meet, counting what RFC 4180 does not allow and well-formed CSV rarely
/// has: a quote inside an unquoted field, a byte other than a delimiter or a line break after a
/// closing quote, and a quoted run longer than `max_record_bytes`. The fewest wins; a tie goes to
/// the unquoted candidate, so a range without quotes is read as before. (Field counts are not
/// judged: a candidate inside quotes skips the records it takes for text, so counting them would
/// favour it wherever the file has short records.)
pub fn guess_start(prev: u8, window: &[u8], delim: u8, max_record_bytes: usize) -> Guess {
    let candidates: &[QState] = if prev == b'\n' {
        &[Record, Quoted]
    } else if prev == delim {
        &[Field, Quoted]
    } else if prev == b'"' {
        &[QuoteInQuoted, Unquoted, Quoted]
    } else {
        &[Unquoted, Quoted]
    };
    #[derive(Clone, Copy)]
    struct Sim {
        s: QState,
        score: u32,
        quoted_run: usize,
    }
    let mut sims: Vec<Sim> = candidates
        .iter()
        .map(|&s| Sim {
            s,
            score: 0,
            quoted_run: 0,
        })
        .collect();
    for &b in window {
        if sims.iter().all(|x| x.s == sims[0].s) {
            break;
        }
        for x in &mut sims {
            let next = step(x.s, b, delim);
            match x.s {
                Unquoted if b == b'"' => x.score += 1,
                QuoteInQuoted if next == Unquoted && b != b'\r' => x.score += 1,
                _ => {}
            }
            if next == Quoted {
                x.quoted_run += 1;
                if x.quoted_run == max_record_bytes + 1 {
                    x.score += 3;
                }
            } else {
                x.quoted_run = 0;
            }
            x.s = next;
        }
    }
    // Ties go to the first candidate (the unquoted one).
    let best = sims.iter().map(|x| x.score).min().unwrap_or(0);
    let start = sims
        .iter()
        .zip(candidates)
        .find(|(x, _)| x.score == best)
        .map_or(Record, |(_, c)| *c);
    // The candidates that frame the same records: they meet the guess before either alone
    // reaches a record start (e.g. after `"` in `a "b" c`, "closing quote" and "literal quote").
    let mut also = 0;
    // A record start at the range's first byte under one of them only is a difference already.
    let others = candidates
        .iter()
        .filter(|c| **c != start && **c != Record && start != Record);
    for &c in others {
        let (mut g, mut o) = (start, c);
        for &b in window {
            (g, o) = (step(g, b, delim), step(o, b, delim));
            if g == o {
                also |= 1 << c.index();
                break;
            }
            if g == Record || o == Record {
                break;
            }
        }
    }
    Guess { start, also }
}

/// A range's guessed start state, and the other candidates that frame its records the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guess {
    pub start: QState,
    /// A bit per [`QState::index`], as in [`QuoteScan::also`].
    pub also: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slow(s: QState, bytes: &[u8]) -> QState {
        bytes.iter().fold(s, |s, &b| step(s, b, b','))
    }

    #[test]
    fn lenient_states() {
        assert_eq!(slow(Record, b"a\"b"), Unquoted);
        assert_eq!(slow(Record, b"\"a\nb"), Quoted);
        assert_eq!(slow(Record, b"\"a\"\"b\","), Field);
        assert_eq!(slow(Record, b"\"ab\"c\n"), Record);
    }

    #[test]
    fn codes_round_trip() {
        let scan = QuoteScan {
            start: Quoted,
            also: 0,
            ends: Transition([Record, Record, Unquoted, Quoted, QuoteInQuoted]),
        };
        assert_eq!(scan.encode(), "Q:RRUQE");
        assert_eq!(QuoteScan::decode("Q:RRUQE"), Some(scan));
        let both = QuoteScan {
            start: QuoteInQuoted,
            also: 1 << Unquoted.index(),
            ..scan
        };
        assert_eq!(both.encode(), "EU:RRUQE");
        assert_eq!(QuoteScan::decode("EU:RRUQE"), Some(both));
        assert_eq!(QuoteScan::decode("X:RRUQE"), None);
        assert_eq!(QuoteScan::decode("Q:RRUQ"), None);
    }

    #[test]
    fn guesses_on_the_usual_boundaries() {
        let g = |prev: u8, w: &[u8]| guess_start(prev, w, b',', 1000).start;
        // After a quoted newline: the rest of the field, its closing quote and a delimiter.
        assert_eq!(g(b'\n', b"line two\",x\n4,a,b\n"), Quoted);
        // After an ordinary newline.
        assert_eq!(g(b'\n', b"4,a,b\n5,\"c\",d\n"), Record);
        // No quote anywhere: unquoted.
        assert_eq!(g(b'x', b"y,z\n4,a,b\n"), Unquoted);
        // Just before a closing quote.
        assert_eq!(g(b'o', b"\",x\n4,a,b\n"), Quoted);
        // Just after an opening quote.
        assert_eq!(g(b'"', b"one\ntwo\",x\n4,a,b\n"), Quoted);
        // Just after a closing quote.
        assert_eq!(g(b'"', b",x\n4,\"a\",b\n"), QuoteInQuoted);
        // Inside `a "quoted" word`, after the first quote: whether that quote was a literal, a
        // closing or an opening one, the same records follow.
        let inside = guess_start(b'"', b"quoted\" word,z\n4,a,b\n", b',', 1000);
        assert_eq!(inside.start, Unquoted);
        assert_eq!(
            inside.also,
            (1 << QuoteInQuoted.index()) | (1 << Quoted.index())
        );
    }

    #[test]
    fn resolve_finds_only_wrong_ranges() {
        let t = |s: &str| Transition::decode(s).unwrap();
        let part = |seq, part, start, ends: &str| PartScan {
            seq,
            part,
            scan: QuoteScan {
                start,
                also: 0,
                ends: t(ends),
            },
        };
        // Range 0 ends inside quotes; range 1 guessed a record start: wrong, its true start is
        // Quoted; range 1 ends (from Quoted) at a record start, which range 2 guessed.
        let parts = [
            part(0, 0, Record, "QQQQQ"),
            part(1, 0, Record, "UUURR"),
            part(1, 1, Record, "RRRRR"),
            part(2, 0, Record, "RRRRR"),
        ];
        assert_eq!(
            resolve(&parts),
            vec![Redo {
                seq: 1,
                start: Quoted
            }]
        );
    }

    proptest! {
        /// Whatever each range guessed (and wherever its continuations were cut), composing the
        /// recorded transitions names exactly the ranges whose guess was not their true state.
        #[test]
        fn resolve_names_exactly_the_wrong_guesses(
            bytes in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b','), Just(b'"'), Just(b'\n')], 1..80),
            chunk in 1usize..20,
            guesses in proptest::collection::vec(0usize..5, 80),
            cuts in proptest::collection::vec(any::<bool>(), 80),
        ) {
            let mut parts = Vec::new();
            let mut expected = Vec::new();
            let mut truth = Record;
            for (seq, range) in bytes.chunks(chunk).enumerate() {
                let guess = if seq == 0 { Record } else { QState::ALL[guesses[seq]] };
                if guess != truth {
                    expected.push(Redo { seq: seq as u32, start: truth });
                }
                // A cut (a continuation) splits the range's transition in two; the continuation
                // starts at a record start of its parent's framing.
                let at = (1..range.len())
                    .find(|&i| cuts[seq] && advance(guess, &range[..i], b',') == Record)
                    .unwrap_or(range.len());
                let first = Transition::of(&range[..at], b',');
                parts.push(PartScan { seq: seq as u32, part: 0, scan: QuoteScan { start: guess, also: 0, ends: first } });
                if at < range.len() {
                    let ends = Transition::of(&range[at..], b',');
                    parts.push(PartScan { seq: seq as u32, part: 1, scan: QuoteScan { start: Record, also: 0, ends } });
                }
                truth = advance(truth, range, b',');
            }
            parts.reverse();
            prop_assert_eq!(resolve(&parts), expected);
        }

        /// The start states a guess calls equivalent frame exactly the records its own does.
        #[test]
        fn equivalent_starts_frame_the_same_records(
            prev in prop_oneof![Just(b'a'), Just(b','), Just(b'"'), Just(b'\n')],
            bytes in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b','), Just(b'"'), Just(b'\n'), Just(b' ')], 0..40),
        ) {
            let record_starts = |s: QState| -> Vec<usize> {
                let mut out = Vec::new();
                let mut s = s;
                for (i, &b) in bytes.iter().enumerate() {
                    if s == Record {
                        out.push(i);
                    }
                    s = step(s, b, b',');
                }
                out
            };
            let guess = guess_start(prev, &bytes, b',', 1000);
            for other in QState::ALL.into_iter().filter(|o| guess.also & (1 << o.index()) != 0) {
                prop_assert_eq!(record_starts(other), record_starts(guess.start));
                prop_assert_eq!(advance(other, &bytes, b','), advance(guess.start, &bytes, b','));
            }
        }

        #[test]
        fn fast_advance_equals_the_byte_machine(
            bytes in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b','), Just(b'"'), Just(b'\n'), Just(b'\r')], 0..60),
            cut in 0usize..60,
        ) {
            let cut = cut.min(bytes.len());
            for s in QState::ALL {
                prop_assert_eq!(advance(s, &bytes, b','), slow(s, &bytes));
                let (n, end, term) = advance_to_record_end(s, &bytes, b',');
                prop_assert_eq!(end, slow(s, &bytes[..n]));
                prop_assert_eq!(term, n > 0 && end == Record && bytes[n - 1] == b'\n');
                // Composition: the function of a split is the split's functions composed.
                let whole = Transition::of(&bytes, b',');
                let parts = Transition::of(&bytes[..cut], b',').then(&Transition::of(&bytes[cut..], b','));
                prop_assert_eq!(whole, parts);
            }
        }
    }
}
