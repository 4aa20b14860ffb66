//! Retry: a [`tower::retry::Policy`] for [`tower::retry::Retry`].
//!
//! Only what a later attempt can fix is retried: connect errors, timeouts, the statuses of
//! `client.retry_statuses` (429 and 502/503/504 by default) less `client.permanent_statuses`,
//! and a rate-limit token that could not be leased (the fleet's DynamoDB table throttled or out
//! of reach for a moment: no request went out, and a record must not fail for it).
//! The wait is the Retry-After the API asked for (capped, plus a little jitter so a fleet told
//! "1 s" does not come back in lockstep), or else full-jitter exponential backoff. Three things
//! bound retries:
//!
//! - `max_attempts` per call;
//! - a retry budget shared by all calls ([`TpsBudget`]: each call deposits once, each retry
//!   withdraws), so when most calls fail the API sees about `1 + budget%` times the load, not
//!   `max_attempts` times. A refused retry ends the call with [`ClientError::BudgetExhausted`];
//! - the call's deadline: a backoff that would end past it is not started, and the call ends
//!   with [`ClientError::DeadlineExceeded`] carrying what the API last said.
//!
//! A call turned away by an open breaker never reached the API, so it spends neither an attempt
//! nor budget: it waits for the breaker's next probe and tries again, for as long as the deadline
//! allows. The same holds for a failed probe and for a failure answered after the breaker opened,
//! which the breaker hands back as a rejection (see `breaker`'s module docs). Without a deadline
//! nothing would bound that wait, so the rejection is returned as is.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::{Instant, Sleep};
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::{ApiCall, ApiResponse, ClientCounters, ClientError, LastAttempt};
use fanout_core::config::ClientConfig;
use fanout_core::response::StatusRules;

/// How long a budget deposit counts.
const BUDGET_TTL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub retry_after_max: Duration,
    /// Which statuses are retried (`client.retry_statuses` less `client.permanent_statuses`).
    pub statuses: StatusRules,
}

impl RetrySettings {
    pub fn from_config(c: &ClientConfig) -> Self {
        Self {
            max_attempts: c.max_attempts.max(1),
            backoff_base: Duration::from_millis(c.backoff_base_ms),
            backoff_max: Duration::from_millis(c.backoff_max_ms),
            retry_after_max: Duration::from_millis(c.retry_after_max_ms),
            statuses: StatusRules::from_config(c),
        }
    }
}

/// The budget for a config. Out-of-range values are clamped because `TpsBudget::new` panics on
/// them and a config reaching here may not have been validated.
pub fn budget_from_config(c: &ClientConfig) -> TpsBudget {
    TpsBudget::new(
        BUDGET_TTL,
        c.retry_budget_min_per_sec.min(100_000),
        c.retry_budget_percent.min(100_000) as f32 / 100.0,
    )
}

/// A 401 after which the auth layer has a new credential (an OAuth2 token the API refused and
/// that was replaced) is retried once, at once, outside `max_attempts` and the budget: the API
/// refused our credential, not the request, and a second 401 ends the call.
///
/// Per-call state lives in the policy: `Retry` clones it for every call.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    settings: Arc<RetrySettings>,
    budget: Arc<TpsBudget>,
    counters: Arc<ClientCounters>,
    deposited: bool,
    /// Attempts of this call that reached the API side of the breaker.
    attempts: u32,
    /// The call was retried once with a renewed credential.
    renewed: bool,
}

impl RetryPolicy {
    pub fn new(
        settings: RetrySettings,
        budget: Arc<TpsBudget>,
        counters: Arc<ClientCounters>,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            budget,
            counters,
            deposited: false,
            attempts: 0,
            renewed: false,
        }
    }

    pub fn layer(self) -> tower::retry::RetryLayer<Self> {
        tower::retry::RetryLayer::new(self)
    }

    /// Full jitter: uniform in [0, min(max, base · 2^(attempt-1))]. Spreads retries of calls that
    /// failed together, which plain exponential backoff keeps in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .settings
            .backoff_base
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.settings.backoff_max);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }

    fn jitter(&self) -> Duration {
        self.settings
            .backoff_base
            .mul_f64(rand::rng().random::<f64>())
    }

    /// Sleeps for `wait` unless that ends at or past the deadline.
    fn sleep_within(deadline: Option<Instant>, wait: Duration) -> Option<Sleep> {
        let until = Instant::now() + wait;
        match deadline {
            Some(d) if until >= d => None,
            _ => Some(tokio::time::sleep_until(until)),
        }
    }
}

impl Policy<ApiCall, ApiResponse, ClientError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        call: &mut ApiCall,
        result: &mut Result<ApiResponse, ClientError>,
    ) -> Option<Sleep> {
        if !self.deposited {
            self.deposited = true;
            self.budget.deposit();
        }
        let hint = match result {
            Ok(r) if r.credential_renewed && !self.renewed => {
                self.renewed = true;
                return Self::sleep_within(call.deadline, Duration::ZERO);
            }
            Err(ClientError::BreakerOpen { retry_in }) => {
                call.deadline?;
                let wait = *retry_in + self.jitter();
                return Self::sleep_within(call.deadline, wait);
            }
            Ok(r) if self.settings.statuses.is_retried(r.status) => r.retry_after,
            Err(
                ClientError::Connect(_) | ClientError::Timeout { .. } | ClientError::RateLimit(_),
            ) => None,
            _ => return None,
        };
        self.attempts += 1;
        if self.attempts >= self.settings.max_attempts {
            return None;
        }
        let wait = match hint {
            Some(asked) => asked.min(self.settings.retry_after_max) + self.jitter(),
            None => self.backoff(self.attempts),
        };
        let Some(sleep) = Self::sleep_within(call.deadline, wait) else {
            *result = Err(ClientError::DeadlineExceeded {
                last: Some(LastAttempt::of(result)),
            });
            return None;
        };
        if !self.budget.withdraw() {
            ClientCounters::bump(&self.counters.budget_exhausted);
            *result = Err(ClientError::BudgetExhausted {
                last: LastAttempt::of(result),
            });
            return None;
        }
        ClientCounters::bump(&self.counters.retries);
        Some(sleep)
    }

    fn clone_request(&mut self, call: &ApiCall) -> Option<ApiCall> {
        Some(call.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::testing::{Scripted, assert_near, call, status};

    fn settings(max_attempts: u32) -> RetrySettings {
        RetrySettings {
            max_attempts,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            retry_after_max: Duration::from_secs(30),
            statuses: StatusRules::default(),
        }
    }

    /// A budget large enough never to be the reason a test stops retrying.
    fn ample() -> Arc<TpsBudget> {
        Arc::new(TpsBudget::new(Duration::from_secs(10), 10_000, 10.0))
    }

    fn policy(max_attempts: u32) -> (RetryPolicy, Arc<ClientCounters>) {
        let counters = Arc::new(ClientCounters::default());
        (
            RetryPolicy::new(settings(max_attempts), ample(), counters.clone()),
            counters,
        )
    }

    fn too_many(retry_after_secs: u64) -> Result<ApiResponse, ClientError> {
        let mut r = ApiResponse::new(429);
        r.retry_after = Some(Duration::from_secs(retry_after_secs));
        Ok(r)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_until_success() {
        let (policy, counters) = policy(6);
        let inner = Scripted::new(vec![
            Err(ClientError::Connect("refused".into())),
            Err(ClientError::Timeout { after: None }),
            Err(ClientError::RateLimit("lease write throttled".into())),
            status(502),
            status(503),
            status(200),
        ]);
        let svc = policy.layer().layer(inner.clone());

        let result = svc.oneshot(call()).await.unwrap();

        assert_eq!(result.status, 200);
        assert_eq!(inner.calls(), 6);
        assert_eq!(counters.retries.load(Ordering::Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pipelines_status_lists_decide_what_is_retried() {
        let config: ClientConfig =
            serde_norway::from_str("{retry_statuses: [5xx, 409], permanent_statuses: [501, 503]}")
                .unwrap();
        let mut settings = settings(3);
        settings.statuses = StatusRules::from_config(&config);
        for (answer, calls) in [(500, 3), (409, 3), (599, 3), (501, 1), (503, 1), (429, 1)] {
            let counters = Arc::new(ClientCounters::default());
            let policy = RetryPolicy::new(settings.clone(), ample(), counters);
            let inner = Scripted::new(vec![status(answer)]);
            let result = policy.layer().layer(inner.clone()).oneshot(call()).await;
            assert_eq!(result.unwrap().status, answer);
            assert_eq!(inner.calls(), calls, "{answer}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_statuses_and_errors_are_not_retried() {
        for answer in [
            status(200),
            status(400),
            status(404),
            status(500),
            status(501),
            Err(ClientError::Transport("reset".into())),
            Err(ClientError::InvalidRequest("bad url".into())),
            Err(ClientError::Credentials("no token".into())),
        ] {
            let (policy, counters) = policy(5);
            let inner = Scripted::new(vec![answer.clone()]);

            let result = policy.layer().layer(inner.clone()).oneshot(call()).await;

            assert_eq!(result, answer);
            assert_eq!(inner.calls(), 1, "{answer:?} was retried");
            assert_eq!(counters.retries.load(Ordering::Relaxed), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let (policy, _) = policy(3);
        let inner = Scripted::new(vec![too_many(7), status(200)]);
        let svc = policy.layer().layer(inner.clone());

        let started = Instant::now();
        assert_eq!(svc.oneshot(call()).await.unwrap().status, 200);

        // Seven seconds as asked, plus less than one backoff_base of jitter.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(7) && waited < Duration::from_millis(7_101),
            "{waited:?}"
        );
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped() {
        let counters = Arc::new(ClientCounters::default());
        let mut s = settings(2);
        s.retry_after_max = Duration::from_secs(2);
        let policy = RetryPolicy::new(s, ample(), counters);
        let svc = policy
            .layer()
            .layer(Scripted::new(vec![too_many(3600), status(200)]));

        let started = Instant::now();
        svc.oneshot(call()).await.unwrap();

        assert!(started.elapsed() < Duration::from_millis(2_101));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_with_the_last_answer() {
        let (policy, counters) = policy(3);
        let inner = Scripted::new(vec![status(503)]);

        let result = policy.layer().layer(inner.clone()).oneshot(call()).await;

        assert_eq!(result.unwrap().status, 503);
        assert_eq!(inner.calls(), 3);
        assert_eq!(counters.retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_full_jitter_under_an_exponential_ceiling() {
        let (policy, _) = policy(3);
        for attempt in 1..12u32 {
            let ceiling =
                Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(5));
            let waits: Vec<Duration> = (0..200).map(|_| policy.backoff(attempt)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "attempt {attempt}");
            // Full jitter spreads over the whole range, not just its top.
            assert!(waits.iter().any(|w| *w < ceiling / 4), "attempt {attempt}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_stops_retries_under_sustained_failure() {
        let counters = Arc::new(ClientCounters::default());
        // 20% of calls may be retried, with no per-second allowance on top.
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.2));
        let policy = RetryPolicy::new(settings(3), budget, counters.clone());
        let inner = Scripted::new(vec![status(503)]);
        let svc = policy.layer().layer(inner.clone());

        let calls = 100;
        let mut exhausted = 0;
        for _ in 0..calls {
            match svc.clone().oneshot(call()).await {
                Err(ClientError::BudgetExhausted {
                    last: LastAttempt::Status(503),
                }) => exhausted += 1,
                Ok(r) => assert_eq!(r.status, 503),
                other => panic!("unexpected {other:?}"),
            }
        }

        // Without the budget this would be 300 calls (3 attempts each).
        let sent = inner.calls();
        assert!(
            sent <= calls + calls / 5 + 1,
            "{sent} calls reached the API"
        );
        assert!(exhausted >= calls * 3 / 4, "{exhausted}");
        assert_eq!(
            counters.budget_exhausted.load(Ordering::Relaxed),
            exhausted as u64
        );
        assert_eq!(
            counters.retries.load(Ordering::Relaxed) as usize,
            sent - calls
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_backoff_past_the_deadline() {
        let (policy, _) = policy(5);
        let inner = Scripted::new(vec![too_many(10)]);
        let mut c = call();
        c.deadline = Some(Instant::now() + Duration::from_secs(5));

        let started = Instant::now();
        let result = policy.layer().layer(inner.clone()).oneshot(c).await;

        assert_eq!(
            result,
            Err(ClientError::DeadlineExceeded {
                last: Some(LastAttempt::Status(429))
            })
        );
        assert_eq!(inner.calls(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_rejections_wait_for_the_probe_and_cost_no_attempt() {
        let (policy, counters) = policy(2);
        let open = Err(ClientError::BreakerOpen {
            retry_in: Duration::from_secs(5),
        });
        let inner = Scripted::new(vec![open.clone(), open.clone(), status(503), status(200)]);
        let mut c = call();
        c.deadline = Some(Instant::now() + Duration::from_secs(60));

        let started = Instant::now();
        let mut svc = policy.layer().layer(inner.clone());
        let result = svc.ready().await.unwrap().call(c).await;

        // Two rejections did not use up the two attempts.
        assert_eq!(result.unwrap().status, 200);
        assert_eq!(inner.calls(), 4);
        assert!(started.elapsed() >= Duration::from_secs(10));
        assert_eq!(counters.retries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_rejection_without_a_deadline_is_returned() {
        let (policy, _) = policy(3);
        let open = Err(ClientError::BreakerOpen {
            retry_in: Duration::from_secs(5),
        });
        let inner = Scripted::new(vec![open.clone()]);

        let started = Instant::now();
        let result = policy.layer().layer(inner.clone()).oneshot(call()).await;

        assert_eq!(result, open);
        assert_eq!(inner.calls(), 1);
        assert_near(started.elapsed(), Duration::ZERO);
    }
}
