//! Write: released lines → a manifest's three output parts (`results/`, `failed/`, `rejected/`),
//! each through a [`PartWriter`], and the counts of what was written.
//!
//! Lines come in offset order ([`super::release`]), so each part is sorted by offset as it is
//! written; CSV results start with their header. Counting here, at release, keeps
//! results + failed + rejected = records exact with a cut: only what is written is counted.

use tokio::sync::mpsc;

use fanout_core::csv_output::{CsvLayout, OutputFormat};
use fanout_core::ledger::Counts;
use fanout_core::manifest::{Manifest, keys};
use fanout_core::metrics::StatusTally;
use fanout_core::output::JSONL_CONTENT_TYPE as JSONL;
use fanout_core::ports::ObjectStore;

use super::release::{Kind, Line};
use crate::part_writer::PartWriter;

/// A manifest's three output parts being written, and the counts of their lines.
pub(super) struct Outputs<'a> {
    results: PartWriter<'a>,
    failed: PartWriter<'a>,
    rejected: PartWriter<'a>,
    /// CSV results' header, written before their first row.
    header: Option<Vec<u8>>,
    /// What was written (`bytes_read` is the reader's).
    pub(super) counts: Counts,
    pub(super) statuses: StatusTally,
}

impl<'a> Outputs<'a> {
    /// The parts of `m`'s unit (CSV results laid out by `layout`).
    pub(super) fn new(
        m: &'a Manifest,
        store: &'a dyn ObjectStore,
        layout: Option<&CsvLayout>,
    ) -> Self {
        let unit = m.unit_id();
        let format = m.config.output.format;
        let part = |key, content_type| PartWriter::new(store, &m.bucket, key, content_type);
        Self {
            results: part(
                keys::results_unit_as(&m.job_id, &unit, format),
                format.content_type(),
            ),
            failed: part(keys::failed_unit(&m.job_id, &unit), JSONL),
            rejected: part(keys::rejected_unit(&m.job_id, &unit), JSONL),
            header: match format {
                OutputFormat::Csv => layout.map(CsvLayout::header),
                OutputFormat::Jsonl => None,
            },
            counts: Counts::default(),
            statuses: StatusTally::default(),
        }
    }

    /// Writes every line released until the release closes.
    pub(super) async fn write(
        &mut self,
        mut lines: mpsc::UnboundedReceiver<Line>,
    ) -> anyhow::Result<()> {
        while let Some(line) = lines.recv().await {
            self.take(line).await?;
        }
        Ok(())
    }

    /// Counts one line and appends it to its part (the line's weight goes back to the budget
    /// when it is dropped here).
    async fn take(&mut self, line: Line) -> anyhow::Result<()> {
        let c = &mut self.counts;
        let part = match line.kind {
            Kind::Blank => {
                c.blank_lines += 1;
                return Ok(());
            }
            Kind::Result => {
                c.succeeded += 1;
                &mut self.results
            }
            Kind::Failed => {
                c.failed += 1;
                &mut self.failed
            }
            Kind::Rejected => {
                c.rejected += 1;
                &mut self.rejected
            }
        };
        c.records += 1;
        if line.kind != Kind::Rejected {
            self.statuses.count(line.status);
        }
        if line.kind == Kind::Result
            && part.is_empty()
            && let Some(header) = &self.header
        {
            part.append(header).await?;
        }
        part.append(&line.bytes).await
    }

    /// Makes the three parts (an empty one is deleted).
    pub(super) async fn finish(&mut self) -> anyhow::Result<()> {
        futures::try_join!(
            self.results.finish(),
            self.failed.finish(),
            self.rejected.finish()
        )?;
        Ok(())
    }

    /// Discards what was written (a failed manifest): open uploads are aborted.
    pub(super) async fn abort(&mut self) {
        futures::join!(
            self.results.abort(),
            self.failed.abort(),
            self.rejected.abort()
        );
    }
}
