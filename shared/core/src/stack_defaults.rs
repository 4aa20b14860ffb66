//! What a deployed stack sets for the pipelines it runs (template parameters `ApiBaseUrl`,
//! `RateLimitPerSecond`, `RateLimitBurst`, `ChunkBytes`, given to the splitter as environment
//! variables): the `{{API_BASE_URL}}` of configs, and the rate limit and chunk size of pipelines
//! whose config sets none. The splitter applies them when it loads a config, before validating
//! it, and the manifests carry the result, so every worker of a job runs with the same values.

/// The placeholder a config may use for the stack's API base URL.
pub const API_BASE_URL_PLACEHOLDER: &str = "{{API_BASE_URL}}";

/// The environment variables [`StackDefaults::from_vars`] reads.
pub const VARS: [&str; 4] = [
    "API_BASE_URL",
    "RATE_LIMIT_PER_SECOND",
    "RATE_LIMIT_BURST",
    "CHUNK_BYTES",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackDefaults {
    /// Replaces `{{API_BASE_URL}}` in a config's text.
    pub api_base_url: Option<String>,
    /// `client.rate_limit_per_sec` of a config that sets none.
    pub rate_limit_per_sec: Option<u32>,
    /// `client.rate_limit_burst` of a config that sets none.
    pub rate_limit_burst: Option<u32>,
    /// `split.chunk_bytes` of a config that sets none.
    pub chunk_bytes: Option<u64>,
}

impl StackDefaults {
    /// From the environment variables in [`VARS`], read through `get`; unset or empty means no
    /// default. Errors name the variable.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let value = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        fn number<T: std::str::FromStr + PartialOrd + From<u8>>(
            name: &str,
            v: Option<String>,
        ) -> Result<Option<T>, String> {
            v.map(|v| match v.trim().parse::<T>() {
                Ok(n) if n >= T::from(1) => Ok(n),
                _ => Err(format!("{name}={v:?} is not a positive whole number")),
            })
            .transpose()
        }
        let api_base_url = value("API_BASE_URL").map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &api_base_url {
            let ok = url::Url::parse(u)
                .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.has_host());
            if !ok || u.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                return Err(format!("API_BASE_URL={u:?} is not an absolute http(s) URL"));
            }
        }
        Ok(Self {
            api_base_url,
            rate_limit_per_sec: number("RATE_LIMIT_PER_SECOND", value("RATE_LIMIT_PER_SECOND"))?,
            rate_limit_burst: number("RATE_LIMIT_BURST", value("RATE_LIMIT_BURST"))?,
            chunk_bytes: number("CHUNK_BYTES", value("CHUNK_BYTES"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn each_variable_and_its_errors() {
        let d = StackDefaults::from_vars(vars(&[
            ("API_BASE_URL", "https://api.example.com/v2/"),
            ("RATE_LIMIT_PER_SECOND", "100"),
            ("RATE_LIMIT_BURST", " 20 "),
            ("CHUNK_BYTES", "65536"),
        ]))
        .unwrap();
        assert_eq!(
            d.api_base_url.as_deref(),
            Some("https://api.example.com/v2")
        );
        assert_eq!(
            (d.rate_limit_per_sec, d.rate_limit_burst, d.chunk_bytes),
            (Some(100), Some(20), Some(65536))
        );
        assert_eq!(
            StackDefaults::from_vars(vars(&[("RATE_LIMIT_BURST", "")])).unwrap(),
            StackDefaults::default()
        );
        for (name, bad) in [
            ("RATE_LIMIT_PER_SECOND", "0"),
            ("RATE_LIMIT_BURST", "-1"),
            ("CHUNK_BYTES", "4MB"),
            ("API_BASE_URL", "api.example.com"),
            ("API_BASE_URL", "http://a b"),
        ] {
            let err = StackDefaults::from_vars(vars(&[(name, bad)])).unwrap_err();
            assert!(err.starts_with(name), "{err}");
        }
    }
}
