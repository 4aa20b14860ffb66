//! `fanout status [JOB]`: a job's live progress from the ledger, redrawn in the terminal until
//! the job is final, or printed once as JSON lines (`--json`) for scripts.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use fanout_aws::dynamo::DynamoLedger;
use fanout_aws::s3::S3Store;
use fanout_cli::progress::{self, JobProgress, Sample};

pub struct StatusArgs {
    pub job: Option<String>,
    pub table: String,
    pub last: usize,
    pub json: bool,
    pub interval: Duration,
}

/// The `n` most recently created jobs of the ledger, newest first. A scan: the ledger holds one
/// item per job and per manifest, and expires them, so it stays small enough for an operator's
/// look.
pub async fn latest_jobs(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut jobs: Vec<(u64, String)> = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .filter_expression("sk = :job")
            .expression_attribute_values(":job", AttributeValue::S("JOB".into()))
            .projection_expression("job_id, created_at_ms")
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "Scan {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        for item in page.items() {
            let id = item.get("job_id").and_then(|v| v.as_s().ok()).cloned();
            let created = item
                .get("created_at_ms")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            jobs.extend(id.map(|id| (created, id)));
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    jobs.sort_unstable_by(|a, b| b.cmp(a));
    Ok(jobs.into_iter().take(n).map(|(_, id)| id).collect())
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let config = fanout_aws::load_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let ledger = DynamoLedger::new(ddb.clone(), &args.table);
    let store = S3Store::new(fanout_aws::s3_client(&config));
    let jobs = match &args.job {
        Some(j) => vec![j.clone()],
        None => latest_jobs(&ddb, &args.table, args.last).await?,
    };
    anyhow::ensure!(
        !jobs.is_empty(),
        "no job in the ledger table {}",
        args.table
    );

    if args.json {
        for job in &jobs {
            let p = progress::read(job, &ledger, &store, None).await?;
            println!("{}", serde_json::to_string(&p)?);
        }
        return Ok(());
    }
    // Counts move only when a manifest is recorded, so the pace is taken over at least
    // PACE_WINDOW (before that, since the job began) rather than between two refreshes.
    const PACE_WINDOW_MS: u64 = 30_000;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); jobs.len()];
    let mut frames = Frames::new(std::io::stdout().is_terminal());
    loop {
        let mut text = String::new();
        let mut all_final = true;
        for (job, history) in jobs.iter().zip(samples.iter_mut()) {
            let now = fanout_core::ledger::now_ms();
            let window_start = history
                .iter()
                .rev()
                .find(|s| now.saturating_sub(s.at_ms) >= PACE_WINDOW_MS)
                .copied();
            let p: JobProgress = progress::read(job, &ledger, &store, window_start).await?;
            history.retain(|s| now.saturating_sub(s.at_ms) < 2 * PACE_WINDOW_MS);
            history.push(p.sample(now));
            all_final &= p.status.is_final();
            text += &p.render_text();
        }
        frames.draw(&mut std::io::stdout().lock(), &text)?;
        if all_final {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// Writes the successive frames of `status`: on a terminal each one replaces the last (moving
/// back over it and clearing it); elsewhere (a pipe, a file, a CI log) a frame is appended, as
/// plain lines and only when it changed, so the output holds no terminal escapes.
struct Frames {
    terminal: bool,
    drawn_lines: usize,
    last: String,
}

impl Frames {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            drawn_lines: 0,
            last: String::new(),
        }
    }

    fn draw(&mut self, out: &mut impl Write, text: &str) -> std::io::Result<()> {
        if self.terminal {
            if self.drawn_lines > 0 {
                write!(out, "\x1b[{}A\x1b[J", self.drawn_lines)?;
            }
            write!(out, "{text}")?;
            self.drawn_lines = text.lines().count();
        } else if text != self.last {
            write!(out, "{text}")?;
            self.last = text.to_string();
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    #[test]
    fn a_terminal_is_redrawn_and_a_pipe_gets_plain_changed_frames() {
        let mut pipe = Vec::new();
        let mut frames = Frames::new(false);
        for text in ["job a 10%\n", "job a 10%\n", "job a 50%\n"] {
            frames.draw(&mut pipe, text).unwrap();
        }
        assert_eq!(String::from_utf8(pipe).unwrap(), "job a 10%\njob a 50%\n");

        let mut tty = Vec::new();
        let mut frames = Frames::new(true);
        for text in ["a\nb\n", "a\nc\n"] {
            frames.draw(&mut tty, text).unwrap();
        }
        assert_eq!(String::from_utf8(tty).unwrap(), "a\nb\n\x1b[2A\x1b[Ja\nc\n");
    }
}
