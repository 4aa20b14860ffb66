//! The job ledger's records: what the splitter and workers write about a job's progress.

use serde::{Deserialize, Serialize};

use crate::quote::{QState, QuoteScan, Redo};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Manifests are being enqueued.
    Splitting,
    /// Every manifest is enqueued; workers are processing.
    Running,
    /// Every manifest is recorded; the summary is being written.
    Completing,
    /// Every manifest is recorded and the summary written.
    Completed,
    /// The job could not run (bad config, unreadable input); `error` says why.
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Splitting => "SPLITTING",
            JobStatus::Running => "RUNNING",
            JobStatus::Completing => "COMPLETING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            JobStatus::Splitting,
            JobStatus::Running,
            JobStatus::Completing,
            JobStatus::Completed,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

/// Counts that add up over manifests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records seen (succeeded + failed + rejected; blank lines are not records).
    pub records: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub rejected: u64,
    pub blank_lines: u64,
    pub bytes_read: u64,
}

impl Counts {
    /// The counts with every field negated, as DynamoDB's `ADD` takes them (i64).
    pub fn negated(&self) -> [i64; 6] {
        [
            self.records,
            self.succeeded,
            self.failed,
            self.rejected,
            self.blank_lines,
            self.bytes_read,
        ]
        .map(|v| -(v as i64))
    }

    pub fn add(&mut self, other: &Counts) {
        self.records += other.records;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.rejected += other.rejected;
        self.blank_lines += other.blank_lines;
        self.bytes_read += other.bytes_read;
    }

    /// Every record is accounted for exactly once.
    pub fn reconciles(&self) -> bool {
        self.records == self.succeeded + self.failed + self.rejected
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub status: JobStatus,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub pipeline: String,
    pub manifests_total: u32,
    pub manifests_done: u32,
    pub counts: Counts,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub error: Option<String>,
    /// The pipeline config as the splitter resolved it (the stack's defaults applied), which
    /// every manifest of the job carries: what the job runs with, whatever happens to
    /// `pipelines/<name>.yaml` afterwards. None for a job that failed before its config was read.
    pub config: Option<Box<crate::config::PipelineConfig>>,
    /// CSV: the ranges being redone because their start state was guessed wrong (set once, when
    /// every manifest was recorded; see [`crate::quote`]). Their earlier parts no longer count.
    #[serde(default)]
    pub redo: Option<Vec<Redo>>,
}

/// `5Q,9E`: the redone ranges and their true start states, as the ledger stores them.
pub fn encode_redo(redo: &[Redo]) -> String {
    redo.iter()
        .map(|r| format!("{}{}", r.seq, r.start.code()))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_redo(text: &str) -> Option<Vec<Redo>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let code = item.chars().last()?;
            Some(Redo {
                seq: item[..item.len() - code.len_utf8()].parse().ok()?,
                start: QState::from_code(code)?,
            })
        })
        .collect()
}

impl JobRecord {
    /// Whether a recorded part still counts: not an earlier part of a redone range.
    pub fn counts_part(&self, seq: u32, part: u32) -> bool {
        part >= crate::manifest::REDO_PART
            || !self
                .redo
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r.seq == seq))
    }
}

/// A processed manifest, recorded once.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestRecord {
    pub job_id: String,
    pub seq: u32,
    /// The continuation number (0 for a planned manifest); see [`crate::manifest::Manifest::part`].
    pub part: u32,
    /// Where the continuation this manifest enqueued starts (None when it finished its range).
    /// Recording it counts one more manifest in the job's total, in the same write, so the job
    /// cannot complete before the continuation is recorded too.
    pub continued_at: Option<u64>,
    pub counts: Counts,
    pub duration_ms: u64,
    /// API latency histogram (microseconds), HdrHistogram V2 serialized.
    pub latency_histogram: Vec<u8>,
    /// CSV: the start state this part worked under and its sub-range's transition function.
    pub quote: Option<QuoteScan>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    Created,
    Exists(Box<JobRecord>),
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
