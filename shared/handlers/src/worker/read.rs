//! Read: a manifest's byte range → records handed to the callers (and what cannot be sent).

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use fanout_core::check::Verdict;
use fanout_core::config::InputFormat;
use fanout_core::continuation::StopTimes;
use fanout_core::framer::{Frame, QuoteTrack, RecordFramer};
use fanout_core::manifest::Manifest;
use fanout_core::output::RejectedLine;
use fanout_core::ports::ObjectStore;
use fanout_core::quote::{GUESS_WINDOW, guess_start};
use fanout_core::range::ByteRange;
use fanout_core::record::RecordParser;
use fanout_core::request::{ApiRequest, RequestRenderer};

use super::release::{Outcomes, Weight};

/// Bytes read past the range end in the first GET, so the last record usually needs no second one.
const LOOKAHEAD_BYTES: u64 = 64 * 1024;
/// Size of each further GET while the last record is still incomplete.
const FOLLOW_UP_BYTES: u64 = 1 << 20;

/// A record on its way to the API.
pub(super) struct Pending {
    pub(super) offset: u64,
    pub(super) raw: Vec<u8>,
    pub(super) request: ApiRequest,
    /// The record's values that CSV results show (empty for JSON Lines results).
    pub(super) fields: Vec<String>,
    /// Its share of the memory budget, held until its line is written.
    pub(super) weight: Weight,
}

/// What the reading side found besides records (which it registers with the [`Outcomes`]).
#[derive(Default)]
pub(super) struct ReadTally {
    pub(super) bytes_read: u64,
    /// The first record not dispatched, when reading stopped before the range's end.
    pub(super) stopped_at: Option<u64>,
    /// CSV: the quote states the framer tracked (its start state and the range's transition).
    pub(super) quote: Option<QuoteTrack>,
}

/// Takes the manifest's range and gives its records: streams the range (and as far past it as
/// the last record needs), frames records, registers each with `outcomes` in reading order
/// (rejected and blank ones finished at once), and hands the rest to the callers through `tx`,
/// each once it has its weight of the memory budget. Returns the [`ReadTally`]: bytes read, and
/// where reading stopped if the soft stop (or the callers' hard stop) came first.
pub(super) async fn read_records(
    m: &Manifest,
    store: &dyn ObjectStore,
    mut parser: RecordParser,
    renderer: &RequestRenderer,
    tx: mpsc::Sender<Pending>,
    stop: Option<&StopTimes>,
    outcomes: &Outcomes,
) -> anyhow::Result<ReadTally> {
    let keep = fanout_core::check::kept_slots(&m.config, &parser);
    let reader = Reader {
        m,
        renderer,
        tx: &tx,
        stop,
        keep: &keep,
        outcomes,
    };
    let max = m.config.input.max_record_bytes;
    let delim = m.config.input.delimiter as u8;
    let csv = m.format == InputFormat::Csv;
    // A CSV range that does not know its start state reads one byte early and guesses it from
    // its first bytes (see `fanout_core::quote`); the framer starts once the guess is made.
    let mut guessing: Option<Vec<u8>> = None;
    let mut framer = match (csv, m.known_start_state()) {
        (false, _) => Some(RecordFramer::new(m.range, m.data_start, max)),
        (true, Some(state)) => Some(RecordFramer::new_csv(
            m.range,
            m.data_start,
            max,
            delim,
            state,
        )),
        (true, None) => {
            guessing = Some(Vec::new());
            None
        }
    };
    let guess = |window: &[u8]| {
        let guess = guess_start(window[0], &window[1..], delim, max);
        RecordFramer::new_csv(m.range, m.data_start, max, delim, guess.start)
            .with_equivalent_starts(guess.also)
    };
    let mut tally = ReadTally::default();
    let mut frames = Vec::new();
    let mut pos = framer
        .as_ref()
        .map_or(m.range.start.saturating_sub(1), RecordFramer::read_from);
    let mut segment = m.range.end.saturating_sub(pos) + LOOKAHEAD_BYTES;
    while !framer.as_ref().is_some_and(RecordFramer::is_done) && pos < m.object_size {
        let from = pos;
        let to = m.object_size.min(from + segment);
        let mut body = store
            .get_range(
                &m.bucket,
                &m.key,
                m.version_id.as_deref(),
                Some(&m.etag),
                ByteRange::new(from, to),
            )
            .await?;
        loop {
            let hard = async {
                match stop {
                    Some(t) => t.hard_reached().await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = hard => anyhow::bail!(
                    "s3://{}/{}: read stalled past the invocation's deadline",
                    m.bucket,
                    m.key
                ),
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk?;
            tally.bytes_read += chunk.len() as u64;
            pos += chunk.len() as u64;
            let done = match (&mut framer, &mut guessing) {
                (Some(f), _) => f.push(&chunk, &mut frames),
                (None, Some(window)) => {
                    window.extend_from_slice(&chunk);
                    if window.len() > GUESS_WINDOW || pos >= m.object_size {
                        let f = framer.insert(guess(window));
                        let window = guessing.take().unwrap_or_default();
                        f.push(&window[1..], &mut frames)
                    } else {
                        false
                    }
                }
                (None, None) => unreachable!("a framer or a guess"),
            };
            for frame in frames.drain(..) {
                if tally.stopped_at.is_none() {
                    reader.dispatch(frame, &mut parser, &mut tally).await?;
                }
            }
            if done || tally.stopped_at.is_some() {
                break;
            }
        }
        // A range shorter than the guess's window decides with what its first read brought.
        if framer.is_none()
            && tally.stopped_at.is_none()
            && let Some(window) = guessing.take()
        {
            let f = framer.insert(guess(&window));
            f.push(&window[1..], &mut frames);
            for frame in frames.drain(..) {
                if tally.stopped_at.is_none() {
                    reader.dispatch(frame, &mut parser, &mut tally).await?;
                }
            }
        }
        if tally.stopped_at.is_some() {
            tally.quote = framer.as_ref().and_then(|f| f.quote_track().cloned());
            return Ok(tally);
        }
        if pos == from {
            anyhow::bail!(
                "s3://{}/{}: empty read at offset {from} of {}",
                m.bucket,
                m.key,
                m.object_size
            );
        }
        segment = FOLLOW_UP_BYTES;
    }
    let mut framer = match (framer, guessing) {
        (Some(f), _) => f,
        // The object ended within the guess's window.
        (None, Some(window)) => {
            let mut f = guess(&window);
            f.push(&window[1..], &mut frames);
            f
        }
        (None, None) => unreachable!("a framer or a guess"),
    };
    if !framer.is_done() {
        framer.finish(&mut frames);
    }
    for frame in frames.drain(..) {
        if tally.stopped_at.is_none() {
            reader.dispatch(frame, &mut parser, &mut tally).await?;
        }
    }
    tally.quote = framer.quote_track().cloned();
    Ok(tally)
}

/// What dispatching a record needs besides the parser and the tally.
struct Reader<'a> {
    m: &'a Manifest,
    renderer: &'a RequestRenderer,
    tx: &'a mpsc::Sender<Pending>,
    stop: Option<&'a StopTimes>,
    /// The schema slots CSV results show.
    keep: &'a [usize],
    outcomes: &'a Outcomes,
}

impl Reader<'_> {
    /// Takes one framed record and gives it its fate: sent to the callers, rejected (oversized,
    /// unparsable, unrenderable), counted as a blank line, or, past the soft stop (or once the
    /// budget is closed), left for the continuation (`tally.stopped_at`). Each is registered with
    /// the outcomes in reading order once it has its weight of the budget.
    async fn dispatch(
        &self,
        frame: Frame,
        parser: &mut RecordParser,
        tally: &mut ReadTally,
    ) -> anyhow::Result<()> {
        let Reader {
            m,
            renderer,
            tx,
            stop,
            keep,
            outcomes,
        } = *self;
        // Past the soft stop no record is taken: this one starts the continuation.
        if stop.is_some_and(|t| t.soft_reached(Instant::now())) {
            tally.stopped_at = Some(frame.offset());
            return Ok(());
        }
        let offset = frame.offset();
        let (weight, fate) = match frame {
            Frame::Oversized { offset, len } => {
                let reason = fanout_core::check::oversized(len, m.config.input.max_record_bytes);
                let line = RejectedLine {
                    offset,
                    reason,
                    record: None,
                    record_bytes: len,
                };
                (line.reason.len(), Fate::Reject(line))
            }
            Frame::Record { offset, bytes: raw } => {
                match fanout_core::check::judge(&raw, parser, renderer, &m.job_id, offset, keep) {
                    Verdict::Blank => (0, Fate::Blank),
                    Verdict::Send(request, fields) => {
                        let weight = raw.len()
                            + request.url.len()
                            + request.body.as_ref().map_or(0, |b| b.len())
                            + fields.iter().map(String::len).sum::<usize>();
                        (weight, Fate::Send(raw, request, fields))
                    }
                    Verdict::Reject(reason) => {
                        let line = RejectedLine {
                            offset,
                            reason,
                            record: Some(String::from_utf8_lossy(&raw).into_owned()),
                            record_bytes: raw.len() as u64,
                        };
                        (raw.len() * 2 + line.reason.len(), Fate::Reject(line))
                    }
                }
            }
        };
        // The budget is closed at the hard stop (or when the writer failed): this record is
        // unfinished, and starts the continuation.
        let Some(weight) = outcomes.weigh(weight).await else {
            if stop.is_some() {
                tally.stopped_at = Some(offset);
                return Ok(());
            }
            anyhow::bail!("the manifest's outcomes were closed early");
        };
        // The soft stop may have come while this record waited for the budget.
        if stop.is_some_and(|t| t.soft_reached(Instant::now())) {
            tally.stopped_at = Some(offset);
            return Ok(());
        }
        match fate {
            Fate::Blank => outcomes.blank(offset, weight),
            Fate::Reject(line) => outcomes.rejected(line, weight),
            Fate::Send(raw, request, fields) => {
                outcomes.dispatch(offset);
                let sent = tx
                    .send(Pending {
                        offset,
                        raw,
                        request,
                        fields,
                        weight,
                    })
                    .await;
                match sent {
                    Ok(()) => {}
                    // The callers stop early only at the hard stop: this record is unfinished.
                    Err(_) if stop.is_some() => tally.stopped_at = Some(offset),
                    Err(_) => anyhow::bail!("the API callers stopped early"),
                }
            }
        }
        Ok(())
    }
}

/// What a framed record comes to.
enum Fate {
    Send(Vec<u8>, ApiRequest, Vec<String>),
    Reject(RejectedLine),
    Blank,
}
