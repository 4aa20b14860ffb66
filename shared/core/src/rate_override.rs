//! An operator's override of a fleet limit's rate (`fanout limit set NAME RATE`).
//!
//! A fleet limit is named by `client.rate_limit_name`; every pipeline with that name shares it.
//! While an override is stored for the name, the workers of all those pipelines spend at its rate
//! (and its burst, when it gives one) instead of their configs'; without one, each pipeline's
//! config applies. The workers read it with their leases (see [`crate::ports::RateOverrides`] and
//! docs/rate-limit.md), so it takes effect in a running job.

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::config::{RATE_LIMIT_BURST, RATE_LIMIT_PER_SEC, rate_limit_name_problem};

/// The rate (and optionally the burst) in force for a limit instead of its pipelines' configs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateOverride {
    /// Calls per second for the whole fleet, within the bounds of `client.rate_limit_per_sec`.
    pub rate_per_sec: u32,
    /// Calls the limiter may send late, in a catch-up burst, within the bounds of
    /// `client.rate_limit_burst`. None: each pipeline's `client.rate_limit_burst` still applies.
    pub burst: Option<u32>,
    /// When it was set (ms since the epoch), for the operator.
    pub set_at_ms: u64,
}

/// A value an override cannot hold, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RateOverrideError {
    pub field: &'static str,
    pub message: String,
}

impl RateOverride {
    /// An override, checked as the config checks the settings it stands in for.
    pub fn new(
        rate_per_sec: u32,
        burst: Option<u32>,
        set_at_ms: u64,
    ) -> Result<Self, RateOverrideError> {
        let rate = Self {
            rate_per_sec,
            burst,
            set_at_ms,
        };
        rate.validate()?;
        Ok(rate)
    }

    /// Checks a value built elsewhere (one read back from the ledger table, say).
    pub fn validate(&self) -> Result<(), RateOverrideError> {
        within(
            "rate_per_sec",
            self.rate_per_sec,
            RATE_LIMIT_PER_SEC,
            "client.rate_limit_per_sec",
        )?;
        if let Some(burst) = self.burst {
            within("burst", burst, RATE_LIMIT_BURST, "client.rate_limit_burst")?;
        }
        Ok(())
    }

    /// The burst in force, in calls: the override's, else the config's `config_burst`.
    pub fn burst_or(&self, config_burst: u32) -> u32 {
        self.burst.unwrap_or(config_burst)
    }
}

impl fmt::Display for RateOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.rate_per_sec)?;
        match self.burst {
            Some(b) => write!(f, " (burst {b})"),
            None => write!(f, " (burst: each pipeline's client.rate_limit_burst)"),
        }
    }
}

fn within(
    field: &'static str,
    value: u32,
    bounds: RangeInclusive<u32>,
    setting: &str,
) -> Result<(), RateOverrideError> {
    if bounds.contains(&value) {
        return Ok(());
    }
    Err(RateOverrideError {
        field,
        message: format!(
            "{value} is out of range {}..={} (the bounds of {setting})",
            bounds.start(),
            bounds.end()
        ),
    })
}

/// Checks a limit's name as `client.rate_limit_name` is checked: it is part of the ledger keys.
pub fn check_limit_name(name: &str) -> Result<(), RateOverrideError> {
    match rate_limit_name_problem(name) {
        None => Ok(()),
        Some(message) => Err(RateOverrideError {
            field: "name",
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_configs() {
        assert!(RateOverride::new(1, None, 0).is_ok());
        assert!(RateOverride::new(1_000_000, Some(10_000_000), 0).is_ok());
        let e = RateOverride::new(0, None, 0).unwrap_err();
        assert_eq!(e.field, "rate_per_sec");
        assert!(e.to_string().contains("client.rate_limit_per_sec"), "{e}");
        assert_eq!(
            RateOverride::new(1_000_001, None, 0).unwrap_err().field,
            "rate_per_sec"
        );
        let e = RateOverride::new(10, Some(0), 0).unwrap_err();
        assert_eq!(e.field, "burst");
        assert!(e.to_string().contains("client.rate_limit_burst"), "{e}");
        assert_eq!(
            RateOverride::new(10, Some(10_000_001), 0)
                .unwrap_err()
                .field,
            "burst"
        );
    }

    #[test]
    fn burst_falls_back_to_the_config() {
        let with = RateOverride::new(2000, Some(300), 0).unwrap();
        let without = RateOverride::new(2000, None, 0).unwrap();
        assert_eq!(with.burst_or(100), 300);
        assert_eq!(without.burst_or(100), 100);
    }

    #[test]
    fn names_are_checked_like_the_configs() {
        assert!(check_limit_name("api.v2_x-1").is_ok());
        for bad in ["", "a b", "a#b", &"x".repeat(65)] {
            assert_eq!(check_limit_name(bad).unwrap_err().field, "name", "{bad:?}");
        }
    }
}
