//! Manifest claims: at most one live worker per manifest, and no work for a finished one.
//!
//! SQS delivers at least once, and a message can come back while its first receiver is still at
//! it (a visibility timeout that ran out, a duplicate send). Before working a manifest the worker
//! claims it, in the style of Powertools' idempotency utility:
//! * no claim yet → the worker takes it: `IN_PROGRESS`, expiring when the invocation's deadline
//!   passes (Lambda kills the invocation then, so an expired claim's holder is certainly gone);
//! * `COMPLETED` → the manifest was finished (recorded in the ledger, continuation enqueued): the
//!   message is acknowledged without any work;
//! * `IN_PROGRESS` and expired → its holder died mid-manifest: the worker takes the claim over;
//! * `IN_PROGRESS` and live, held by another → the message is returned (a batch item failure),
//!   to come back after the other holder has finished or died.
//!
//! The claim is a guard against wasted and concurrent work, not the basis of exact accounting:
//! that stays with the ledger's conditional manifest record, so a claim lost in a race (or an
//! expiry misjudged by a skewed clock) can cost API calls but never a count.

/// What a claim attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The caller holds the claim (new, or taken over from a holder whose claim expired).
    Acquired { taken_over: bool },
    /// The manifest is done: acknowledge it, do nothing.
    Completed,
    /// Another live invocation holds it until `expires_at_ms`: retry the message later.
    HeldByOther { expires_at_ms: u64 },
}

/// How long a claim lasts when the invocation has no deadline (local runs without a simulated
/// one): as long as the queue's visibility timeout, after which SQS would redeliver anyway.
pub const DEFAULT_CLAIM_SECS: u64 = QUEUE_VISIBILITY_SECS;

/// The manifest queue's visibility timeout at the default worker timeout (6 × 300 s, the
/// template's `VisibilityByWorkerTimeout` mapping): how long a received manifest stays hidden
/// before SQS delivers it again. A production constant that the local runner reads for its
/// queue, never the other way round.
pub const QUEUE_VISIBILITY_SECS: u64 = 1800;

/// A claim holder's id: unique per invocation and manifest, so that a takeover is told apart
/// from the holder's own retry.
pub fn new_holder() -> String {
    format!("h-{:016x}", rand::random::<u64>())
}

/// Receives of a manifest before SQS moves it to the dead-letter queue (the template's
/// `maxReceiveCount`; the local runner's queue uses it too).
pub const MAX_RECEIVE_COUNT: u32 = 5;
