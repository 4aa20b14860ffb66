//! A fleet limit as an operator sees and changes it (`fanout limit`): the override of its rate
//! kept in the ledger table, and the rate the fleet has leased over the last whole windows.
//!
//! A limit is named by `client.rate_limit_name`: every pipeline with that name shares it, and an
//! override applies to all of them (docs/rate-limit.md, "Changing the rate of a running job").

use aws_sdk_dynamodb::Client;
use fanout_aws::leaser::DynamoLeaser;
use fanout_aws::rate_override::DynamoRateOverrides;
use fanout_client::limiter::WINDOW;
use fanout_core::ports::{RateOverrides, WindowGrant};
use fanout_core::rate_override::{RateOverride, check_limit_name};
use serde::Serialize;

/// Whole windows `fanout limit get` measures the leased rate over.
pub const MEASURED_WINDOWS: u64 = 10;

/// What `fanout limit get` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitView {
    pub limit: String,
    /// None: each pipeline's `client.rate_limit_per_sec` applies.
    #[serde(rename = "override")]
    pub rate_override: Option<RateOverride>,
    pub measured: MeasuredRate,
}

/// Tokens the fleet leased over some whole windows: an upper bound of the calls it made (a
/// token leased may go unspent: a container that ran out of work, or a token that turned stale).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasuredRate {
    /// The first window measured (seconds since the epoch, for 1 s windows).
    pub first_window: u64,
    pub windows: u64,
    /// Tokens granted in them, at most each window's cap.
    pub tokens_leased: u64,
    pub per_sec: f64,
}

/// The leased rate over consecutive windows from `first_window`, given what each granted.
pub fn measured_rate(first_window: u64, grants: &[Option<WindowGrant>]) -> MeasuredRate {
    // A window's counter runs past its cap by the clipped part of its last lease.
    let tokens_leased: u64 = grants
        .iter()
        .flatten()
        .map(|g| g.granted_after.min(g.cap))
        .sum();
    let seconds = grants.len() as f64 * WINDOW.as_secs_f64();
    MeasuredRate {
        first_window,
        windows: grants.len() as u64,
        tokens_leased,
        per_sec: if seconds > 0.0 {
            tokens_leased as f64 / seconds
        } else {
            0.0
        },
    }
}

/// The override of `limit` and its rate leased over the [`MEASURED_WINDOWS`] whole windows
/// before `now_ms`.
pub async fn view(
    ddb: &Client,
    table: &str,
    limit: &str,
    now_ms: u64,
) -> anyhow::Result<LimitView> {
    check_limit_name(limit)?;
    let rate_override = DynamoRateOverrides::new(ddb.clone(), table)
        .get(limit)
        .await?;
    let current = now_ms / WINDOW.as_millis() as u64;
    let first = current.saturating_sub(MEASURED_WINDOWS);
    let grants = DynamoLeaser::new(ddb.clone(), table)
        .window_grants(limit, first..current)
        .await?;
    Ok(LimitView {
        limit: limit.to_string(),
        rate_override,
        measured: measured_rate(first, &grants),
    })
}

/// Checks and stores an override of `limit`: from the workers' next check (within a second or
/// so), every pipeline sharing the limit spends at `rate_per_sec` (with `burst`, else each
/// pipeline's `client.rate_limit_burst`). Returns what was stored.
pub async fn set(
    ddb: &Client,
    table: &str,
    limit: &str,
    rate_per_sec: u32,
    burst: Option<u32>,
    now_ms: u64,
) -> anyhow::Result<RateOverride> {
    check_limit_name(limit)?;
    let rate = RateOverride::new(rate_per_sec, burst, now_ms)?;
    DynamoRateOverrides::new(ddb.clone(), table)
        .set(limit, &rate)
        .await?;
    Ok(rate)
}

/// Removes `limit`'s override: each pipeline's config applies again. False when it had none.
pub async fn clear(ddb: &Client, table: &str, limit: &str) -> anyhow::Result<bool> {
    check_limit_name(limit)?;
    DynamoRateOverrides::new(ddb.clone(), table)
        .clear(limit)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_rate_counts_each_window_up_to_its_cap() {
        let grant = |granted_after, cap| Some(WindowGrant { granted_after, cap });
        let m = measured_rate(
            100,
            &[grant(1100, 1000), None, grant(700, 2000), grant(2000, 2000)],
        );
        assert_eq!((m.first_window, m.windows, m.tokens_leased), (100, 4, 3700));
        assert!((m.per_sec - 925.0).abs() < 1e-9);
        assert_eq!(measured_rate(0, &[]).per_sec, 0.0);
    }
}
