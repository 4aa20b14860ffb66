//! [`JobLedger`] on DynamoDB: one item per job (`sk = JOB`) and one per recorded manifest
//! (`sk = M#<seq>`), in one partition per job.
//!
//! Exactly-once accounting rests on conditions, not on reads: a manifest's counts are added to the
//! job in the same transaction that creates its record, conditional on the record not existing;
//! completion is a conditional status change that only one caller can win.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use fanout_core::claims::ClaimOutcome;
use fanout_core::ledger::{
    Counts, CreateOutcome, JobRecord, JobStatus, ManifestRecord, decode_redo, encode_redo,
};
use fanout_core::manifest::keys;
use fanout_core::ports::{JobLedger, LedgerRepair, ManifestClaims};
use fanout_core::quote::{QuoteScan, Redo};

/// Ledger items expire 90 days after they are written (the table's TTL attribute).
const RETENTION_SECS: u64 = 90 * 24 * 3600;
const COUNT_FIELDS: [&str; 6] = [
    "records",
    "succeeded",
    "failed",
    "rejected",
    "blank_lines",
    "bytes_read",
];

type Item = HashMap<String, AttributeValue>;

#[derive(Clone, Debug)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn job_pk(job_id: &str) -> AttributeValue {
    s(format!("JOB#{job_id}"))
}
fn expires_at() -> AttributeValue {
    n(fanout_core::ledger::now_ms() / 1000 + RETENTION_SECS)
}

fn get_s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}
fn get_n(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

fn manifest_sk(seq: u32, part: u32) -> AttributeValue {
    s(format!("M#{}", keys::unit(seq, part)))
}

fn manifest_from_item(job_id: &str, item: &Item) -> ManifestRecord {
    ManifestRecord {
        job_id: job_id.into(),
        seq: get_n(item, "seq") as u32,
        part: get_n(item, "part") as u32,
        continued_at: item
            .contains_key("continued_at")
            .then(|| get_n(item, "continued_at")),
        counts: counts_of(item),
        duration_ms: get_n(item, "duration_ms"),
        latency_histogram: item
            .get("latency_histogram")
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default(),
        quote: get_s(item, "quote").and_then(|q| QuoteScan::decode(&q)),
    }
}

fn counts_of(item: &Item) -> Counts {
    Counts {
        records: get_n(item, "records"),
        succeeded: get_n(item, "succeeded"),
        failed: get_n(item, "failed"),
        rejected: get_n(item, "rejected"),
        blank_lines: get_n(item, "blank_lines"),
        bytes_read: get_n(item, "bytes_read"),
    }
}

fn counts_values(c: &Counts) -> [u64; 6] {
    [
        c.records,
        c.succeeded,
        c.failed,
        c.rejected,
        c.blank_lines,
        c.bytes_read,
    ]
}

fn job_from_item(item: &Item) -> anyhow::Result<JobRecord> {
    let status = get_s(item, "status").unwrap_or_default();
    Ok(JobRecord {
        job_id: get_s(item, "job_id").unwrap_or_default(),
        status: JobStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown job status {status:?}"))?,
        bucket: get_s(item, "bucket").unwrap_or_default(),
        key: get_s(item, "object_key").unwrap_or_default(),
        version_id: get_s(item, "version_id"),
        pipeline: get_s(item, "pipeline").unwrap_or_default(),
        manifests_total: get_n(item, "manifests_total") as u32,
        manifests_done: get_n(item, "manifests_done") as u32,
        counts: counts_of(item),
        created_at_ms: get_n(item, "created_at_ms"),
        finished_at_ms: item
            .contains_key("finished_at_ms")
            .then(|| get_n(item, "finished_at_ms")),
        error: get_s(item, "error"),
        config: get_s(item, "config")
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| anyhow::anyhow!("the job's config attribute: {e}"))?,
        redo: get_s(item, "redo")
            .map(|r| {
                decode_redo(&r).ok_or_else(|| anyhow::anyhow!("the job's redo attribute {r:?}"))
            })
            .transpose()?,
    })
}

/// Whether a DynamoDB call failed only its condition (the caller decides what that means).
pub(crate) fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    e: &SdkError<E, R>,
) -> bool {
    match e {
        SdkError::ServiceError(se) => se.err().code() == Some("ConditionalCheckFailedException"),
        _ => false,
    }
}

/// A DynamoDB SDK error with its whole chain, after the operation it came from.
pub(crate) fn ddb_err<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    e: E,
) -> anyhow::Error {
    anyhow::anyhow!(
        "DynamoDB {what}: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(e)
    )
}

#[async_trait]
impl JobLedger for DynamoLedger {
    async fn create_job(&self, job: &JobRecord) -> anyhow::Result<CreateOutcome> {
        let mut item: Item = HashMap::from([
            ("pk".into(), job_pk(&job.job_id)),
            ("sk".into(), s("JOB")),
            ("job_id".into(), s(&job.job_id)),
            ("status".into(), s(job.status.as_str())),
            ("bucket".into(), s(&job.bucket)),
            ("object_key".into(), s(&job.key)),
            ("pipeline".into(), s(&job.pipeline)),
            ("manifests_total".into(), n(job.manifests_total)),
            ("manifests_done".into(), n(0)),
            ("created_at_ms".into(), n(job.created_at_ms)),
            ("expires_at".into(), expires_at()),
        ]);
        for (name, value) in COUNT_FIELDS.iter().zip(counts_values(&job.counts)) {
            item.insert((*name).into(), n(value));
        }
        if let Some(v) = &job.version_id {
            item.insert("version_id".into(), s(v));
        }
        if let Some(c) = &job.config {
            item.insert("config".into(), s(serde_json::to_string(c)?));
        }
        if let Some(e) = &job.error {
            item.insert("error".into(), s(e));
        }
        if let Some(t) = job.finished_at_ms {
            item.insert("finished_at_ms".into(), n(t));
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(e) if is_condition_failure(&e) => {
                let existing = self
                    .get_job(&job.job_id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("job {} vanished", job.job_id))?;
                Ok(CreateOutcome::Exists(Box::new(existing)))
            }
            Err(e) => Err(ddb_err("PutItem job", e)),
        }
    }

    async fn get_job(&self, job_id: &str) -> anyhow::Result<Option<JobRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", s("JOB"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb_err("GetItem job", e))?;
        out.item().map(job_from_item).transpose()
    }

    async fn mark_running(&self, job_id: &str) -> anyhow::Result<()> {
        self.set_status_if(job_id, JobStatus::Running, "#status = :splitting", &[])
            .await
            .map(drop)
    }

    async fn fail_job(&self, job_id: &str, reason: &str) -> anyhow::Result<()> {
        let extra = [
            ("error", s(reason)),
            ("finished_at_ms", n(fanout_core::ledger::now_ms())),
        ];
        self.set_status_if(job_id, JobStatus::Failed, "#status = :splitting", &extra)
            .await
            .map(drop)
    }

    async fn record_manifest(&self, m: &ManifestRecord) -> anyhow::Result<bool> {
        let mut item: Item = HashMap::from([
            ("pk".into(), job_pk(&m.job_id)),
            ("sk".into(), manifest_sk(m.seq, m.part)),
            ("seq".into(), n(m.seq)),
            ("part".into(), n(m.part)),
            ("duration_ms".into(), n(m.duration_ms)),
            (
                "latency_histogram".into(),
                AttributeValue::B(m.latency_histogram.clone().into()),
            ),
            ("expires_at".into(), expires_at()),
        ]);
        if let Some(q) = &m.quote {
            item.insert("quote".into(), s(q.encode()));
        }
        let mut add = vec!["manifests_done :one".to_string()];
        let mut values: Item = HashMap::from([(":one".into(), n(1))]);
        if let Some(at) = m.continued_at {
            // The continuation joins the job's total in the write that records its parent, so no
            // reader ever sees the parent done and the job complete without it.
            item.insert("continued_at".into(), n(at));
            add.push("manifests_total :one".to_string());
        }
        for (name, value) in COUNT_FIELDS.iter().zip(counts_values(&m.counts)) {
            item.insert((*name).into(), n(value));
            add.push(format!("{name} :{name}"));
            values.insert(format!(":{name}"), n(value));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", job_pk(&m.job_id))
            .key("sk", s("JOB"))
            .update_expression(format!("ADD {}", add.join(", ")))
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_values(Some(values))
            .build()?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se)) if se.err().is_transaction_canceled_exception() => {
                let reasons: Vec<Option<&str>> = match se.err() {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => {
                        t.cancellation_reasons().iter().map(|r| r.code()).collect()
                    }
                    _ => Vec::new(),
                };
                // The manifest record exists already: a redelivery. Anything else is an error.
                if reasons.first().copied().flatten() == Some("ConditionalCheckFailed") {
                    Ok(false)
                } else {
                    anyhow::bail!(
                        "DynamoDB TransactWriteItems manifest {}/{}: cancelled: {reasons:?}",
                        m.job_id,
                        m.seq
                    )
                }
            }
            Err(e) => Err(ddb_err("TransactWriteItems manifest", e)),
        }
    }

    async fn claim_completion(&self, job_id: &str, finished_at_ms: u64) -> anyhow::Result<bool> {
        let condition = "manifests_done = manifests_total AND (#status = :splitting OR #status = :running OR #status = :completing)";
        self.set_status_if(
            job_id,
            JobStatus::Completing,
            condition,
            &[("finished_at_ms", n(finished_at_ms))],
        )
        .await
    }

    async fn mark_completed(&self, job_id: &str) -> anyhow::Result<()> {
        self.set_status_if(job_id, JobStatus::Completed, "#status = :completing", &[])
            .await
            .map(drop)
    }

    async fn stop_job(&self, job_id: &str, reason: &str) -> anyhow::Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", s("JOB"))
            .update_expression("SET #error = :reason")
            .condition_expression(
                "attribute_not_exists(#error) AND (#status = :splitting OR #status = :running)",
            )
            .expression_attribute_names("#error", "error")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":splitting", s(JobStatus::Splitting.as_str()))
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(ddb_err("UpdateItem job stop", e)),
        }
    }

    async fn mark_stopped(&self, job_id: &str) -> anyhow::Result<()> {
        self.set_status_if(job_id, JobStatus::Failed, "#status = :completing", &[])
            .await
            .map(drop)
    }

    async fn manifests(&self, job_id: &str) -> anyhow::Result<Vec<ManifestRecord>> {
        let pages: Vec<_> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
            .expression_attribute_values(":pk", job_pk(job_id))
            .expression_attribute_values(":m", s("M#"))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| ddb_err("Query manifests", e))?;
        let job = self.get_job(job_id).await?;
        Ok(pages
            .iter()
            .map(|item| manifest_from_item(job_id, item))
            .filter(|m| job.as_ref().is_none_or(|j| j.counts_part(m.seq, m.part)))
            .collect())
    }

    async fn open_redo(
        &self,
        job_id: &str,
        redo: &[Redo],
        superseded: &Counts,
    ) -> anyhow::Result<bool> {
        let mut add = vec!["manifests_total :n".to_string()];
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", s("JOB"))
            .condition_expression(
                "attribute_not_exists(redo) AND manifests_done = manifests_total AND (#status = :splitting OR #status = :running)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":redo", s(encode_redo(redo)))
            .expression_attribute_values(":n", n(redo.len()))
            .expression_attribute_values(":splitting", s(JobStatus::Splitting.as_str()))
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()));
        for (name, value) in COUNT_FIELDS.iter().zip(superseded.negated()) {
            add.push(format!("{name} :{name}"));
            update = update.expression_attribute_values(format!(":{name}"), n(value));
        }
        let result = update
            .update_expression(format!("SET redo = :redo ADD {}", add.join(", ")))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(ddb_err("UpdateItem job redo", e)),
        }
    }

    async fn manifest(
        &self,
        job_id: &str,
        seq: u32,
        part: u32,
    ) -> anyhow::Result<Option<ManifestRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", manifest_sk(seq, part))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb_err("GetItem manifest", e))?;
        Ok(out.item().map(|item| manifest_from_item(job_id, item)))
    }
}

#[async_trait]
impl LedgerRepair for DynamoLedger {
    async fn set_manifest_counts(
        &self,
        job_id: &str,
        seq: u32,
        part: u32,
        counts: &Counts,
    ) -> anyhow::Result<()> {
        self.set_counts(manifest_sk(seq, part), job_id, counts, "manifest")
            .await
    }

    async fn set_job_counts(&self, job_id: &str, counts: &Counts) -> anyhow::Result<()> {
        self.set_counts(s("JOB"), job_id, counts, "job").await
    }
}

/// Claims live next to the manifest records, as `sk = C#<unit>` (not `M#`, so that
/// [`JobLedger::manifests`] does not see them).
fn claim_sk(unit: &str) -> AttributeValue {
    s(format!("C#{unit}"))
}

const IN_PROGRESS: &str = "IN_PROGRESS";
const COMPLETED: &str = "COMPLETED";

#[async_trait]
impl ManifestClaims for DynamoLedger {
    async fn claim(
        &self,
        job_id: &str,
        unit: &str,
        holder: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> anyhow::Result<ClaimOutcome> {
        let item: Item = HashMap::from([
            ("pk".into(), job_pk(job_id)),
            ("sk".into(), claim_sk(unit)),
            ("claim_status".into(), s(IN_PROGRESS)),
            ("holder".into(), s(holder)),
            ("claim_expires_ms".into(), n(expires_at_ms)),
            ("expires_at".into(), expires_at()),
        ]);
        // Free, or in progress under a claim that has expired (its holder is gone), or ours.
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR (claim_status = :in_progress AND (claim_expires_ms < :now OR holder = :holder))",
            )
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":holder", s(holder))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match put {
            Ok(out) => Ok(ClaimOutcome::Acquired {
                taken_over: out
                    .attributes()
                    .is_some_and(|old| get_s(old, "holder").as_deref() != Some(holder)),
            }),
            Err(e) if is_condition_failure(&e) => {
                let out = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", job_pk(job_id))
                    .key("sk", claim_sk(unit))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| ddb_err("GetItem claim", e))?;
                let Some(current) = out.item() else {
                    // Released between the two calls: let the message come back and try again.
                    return Ok(ClaimOutcome::HeldByOther { expires_at_ms: 0 });
                };
                Ok(match get_s(current, "claim_status").as_deref() {
                    Some(COMPLETED) => ClaimOutcome::Completed,
                    _ => ClaimOutcome::HeldByOther {
                        expires_at_ms: get_n(current, "claim_expires_ms"),
                    },
                })
            }
            Err(e) => Err(ddb_err("PutItem claim", e)),
        }
    }

    async fn complete(&self, job_id: &str, unit: &str) -> anyhow::Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", claim_sk(unit))
            .update_expression("SET claim_status = :completed REMOVE holder, claim_expires_ms")
            .expression_attribute_values(":completed", s(COMPLETED))
            .send()
            .await
            .map_err(|e| ddb_err("UpdateItem claim → COMPLETED", e))?;
        Ok(())
    }

    async fn release(&self, job_id: &str, unit: &str, holder: &str) -> anyhow::Result<()> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", claim_sk(unit))
            .condition_expression("claim_status = :in_progress AND holder = :holder")
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            // Taken over or completed by someone else meanwhile: theirs now.
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(ddb_err("DeleteItem claim", e)),
        }
    }
}

impl DynamoLedger {
    /// Sets the six count attributes of an existing item.
    async fn set_counts(
        &self,
        sk: AttributeValue,
        job_id: &str,
        counts: &Counts,
        what: &str,
    ) -> anyhow::Result<()> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", sk)
            .update_expression(format!(
                "SET {}",
                COUNT_FIELDS
                    .iter()
                    .map(|f| format!("{f} = :{f}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .condition_expression("attribute_exists(pk)");
        for (name, value) in COUNT_FIELDS.iter().zip(counts_values(counts)) {
            update = update.expression_attribute_values(format!(":{name}"), n(value));
        }
        update
            .send()
            .await
            .map_err(|e| ddb_err(&format!("UpdateItem {what} counts"), e))?;
        Ok(())
    }

    /// Sets the job's status (and extra attributes) under a condition; false when it did not hold.
    async fn set_status_if(
        &self,
        job_id: &str,
        status: JobStatus,
        condition: &str,
        extra: &[(&str, AttributeValue)],
    ) -> anyhow::Result<bool> {
        let mut set = vec!["#status = :new".to_string()];
        let mut names = HashMap::from([("#status".to_string(), "status".to_string())]);
        let mut values: Item = HashMap::from([
            (":new".into(), s(status.as_str())),
            (":splitting".into(), s(JobStatus::Splitting.as_str())),
            (":running".into(), s(JobStatus::Running.as_str())),
            (":completing".into(), s(JobStatus::Completing.as_str())),
        ]);
        for (name, value) in extra {
            // A finish time, once set, stays: a second finisher writes the same summary.
            if *name == "finished_at_ms" {
                set.push(format!("#{name} = if_not_exists(#{name}, :{name})"));
            } else {
                set.push(format!("#{name} = :{name}"));
            }
            names.insert(format!("#{name}"), (*name).to_string());
            values.insert(format!(":{name}"), value.clone());
        }
        // Only the placeholders the condition uses may be sent.
        values.retain(|k, _| {
            k == ":new"
                || condition.contains(k.as_str())
                || extra.iter().any(|(n, _)| k == &format!(":{n}"))
        });
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", job_pk(job_id))
            .key("sk", s("JOB"))
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(ddb_err(
                &format!("UpdateItem job status → {}", status.as_str()),
                e,
            )),
        }
    }
}
