//! Jobs and manifests: what the splitter sends, what a worker processes, and where output goes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{InputFormat, PipelineConfig};
use crate::quote::QState;
use crate::range::ByteRange;

/// Deterministic job id: the same object version always maps to the same job, so a duplicate
/// S3 event finds its job instead of starting a second one.
pub fn job_id(bucket: &str, key: &str, version_or_etag: &str) -> String {
    let mut h = Sha256::new();
    for part in [bucket, key, version_or_etag] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("j-{}", &hex::encode(h.finalize())[..20])
}

/// One unit of work: a byte range of one pinned object version, with everything needed to
/// process it (so a worker needs no other lookup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub job_id: String,
    pub seq: u32,
    /// 0 for a manifest the splitter planned; n > 0 for the n-th continuation of manifest `seq`
    /// (the rest of its range, enqueued by a worker that ran out of time). See
    /// [`crate::continuation`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
    pub manifests_total: u32,
    pub bucket: String,
    pub key: String,
    /// Pinned object version; None only for unversioned buckets (then the ETag is checked).
    pub version_id: Option<String>,
    pub etag: String,
    pub object_size: u64,
    pub range: ByteRange,
    /// First data byte of the object (after BOM and CSV header).
    pub data_start: u64,
    pub format: InputFormat,
    /// CSV header columns (None for JSON Lines).
    pub header: Option<Vec<String>>,
    pub pipeline: String,
    /// Where the config came from, for error messages.
    pub config_source: String,
    pub config: PipelineConfig,
    /// CSV: the quote state at the range's first byte when it is known (a redo); otherwise the
    /// worker guesses it (see [`crate::quote`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_state: Option<QState>,
}

/// The first part number of a redone range (a CSV range whose start state was guessed wrong):
/// its redo is the unit `(seq, REDO_PART)` and the redo's continuations follow it, so claims,
/// output keys and ledger items need nothing new. A range's own continuations stay below it.
pub const REDO_PART: u32 = 1000;

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Manifest {
    /// The manifest's identity within its job: `000042` for a planned manifest, `000042.003` for
    /// its third continuation. Output keys, the ledger record and the claim all derive from it,
    /// so a redelivered message maps to the same objects and items.
    pub fn unit_id(&self) -> String {
        keys::unit(self.seq, self.part)
    }

    /// The quote state this part starts in, when it is known: the range that starts the data and
    /// every continuation start a record; a redo carries its range's true state.
    pub fn known_start_state(&self) -> Option<QState> {
        if self.range.start <= self.data_start || (self.part > 0 && self.part != REDO_PART) {
            Some(QState::Record)
        } else {
            self.start_state
        }
    }
}

/// Output object keys. Deterministic per job and manifest, so a re-run overwrites.
pub mod keys {
    pub const INPUT_PREFIX: &str = "input/";

    pub fn results(job: &str, seq: u32) -> String {
        results_unit(job, &unit(seq, 0))
    }
    pub fn failed(job: &str, seq: u32) -> String {
        failed_unit(job, &unit(seq, 0))
    }
    pub fn rejected(job: &str, seq: u32) -> String {
        rejected_unit(job, &unit(seq, 0))
    }
    /// A manifest's (or continuation's) id: see [`super::Manifest::unit_id`].
    pub fn unit(seq: u32, part: u32) -> String {
        if part == 0 {
            format!("{seq:06}")
        } else {
            format!("{seq:06}.{part:03}")
        }
    }
    pub fn results_unit(job: &str, unit: &str) -> String {
        format!("results/{job}/part-{unit}.jsonl")
    }
    /// A results part in the pipeline's `output.format`: `.jsonl` or `.csv`.
    pub fn results_unit_as(
        job: &str,
        unit: &str,
        format: crate::csv_output::OutputFormat,
    ) -> String {
        match format {
            crate::csv_output::OutputFormat::Jsonl => results_unit(job, unit),
            crate::csv_output::OutputFormat::Csv => format!("results/{job}/part-{unit}.csv"),
        }
    }
    pub fn failed_unit(job: &str, unit: &str) -> String {
        format!("failed/{job}/part-{unit}.jsonl")
    }
    pub fn rejected_unit(job: &str, unit: &str) -> String {
        format!("rejected/{job}/part-{unit}.jsonl")
    }
    pub fn summary(job: &str) -> String {
        format!("results/{job}/_SUMMARY.json")
    }
    pub fn pipeline_config(pipeline: &str) -> String {
        format!("pipelines/{pipeline}.yaml")
    }

    /// The pipeline named by an input key `input/<pipeline>/<file...>`.
    pub fn pipeline_of(key: &str) -> Result<&str, String> {
        let rest = key
            .strip_prefix(INPUT_PREFIX)
            .ok_or_else(|| format!("{key:?} is not under {INPUT_PREFIX}"))?;
        match rest.split_once('/') {
            Some((p, file)) if !p.is_empty() && !file.is_empty() => Ok(p),
            _ => Err(format!(
                "{key:?}: input keys must look like input/<pipeline>/<file>"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_is_deterministic_and_distinguishes_versions() {
        let a = job_id("b", "input/p/f.csv", "v1");
        assert_eq!(a, job_id("b", "input/p/f.csv", "v1"));
        assert_ne!(a, job_id("b", "input/p/f.csv", "v2"));
        // Field boundaries matter: ("ab","c") differs from ("a","bc").
        assert_ne!(job_id("ab", "c", "v"), job_id("a", "bc", "v"));
        assert_eq!(a.len(), 22);
    }

    #[test]
    fn continuation_keys_sit_next_to_their_parent() {
        assert_eq!(keys::results("j", 42), "results/j/part-000042.jsonl");
        let cont = keys::results_unit("j", &keys::unit(42, 3));
        assert_eq!(cont, "results/j/part-000042.003.jsonl");
        // Listing order groups a manifest's parts before the next manifest's.
        assert!(keys::results("j", 42) < keys::results("j", 43) && cont < keys::results("j", 43));
        assert!(cont.starts_with("results/j/part-000042."));
    }

    #[test]
    fn pipeline_from_key() {
        assert_eq!(keys::pipeline_of("input/users/2024/a.csv"), Ok("users"));
        assert!(keys::pipeline_of("input/a.csv").is_err());
        assert!(keys::pipeline_of("other/p/a.csv").is_err());
        assert!(keys::pipeline_of("input//a.csv").is_err());
    }
}
