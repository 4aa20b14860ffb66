//! `fanout secret put NAME` and `fanout secret encrypt --key-id K`: store an API credential where
//! a pipeline config can reference it, and print that reference (never the value).
//!
//! The value comes from stdin: piped (`… | fanout secret put NAME`, one trailing newline dropped)
//! or, on a terminal, typed at a prompt that does not echo. Never from an argument, which would
//! land in the shell's history and the process list.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use fanout_core::secret::Secret;

/// `fanout secret put`: creates secret `name` in Secrets Manager, or stores a new value in it if
/// it exists; prints its ARN (as a YAML comment) and the config reference.
pub async fn put(
    name: &str,
    description: Option<&str>,
    kms_key_id: Option<&str>,
) -> anyhow::Result<()> {
    let value = read_value(&format!("value of secret {name}"))?;
    let config = fanout_aws::load_config().await;
    let client = fanout_aws::secretsmanager_client(&config);
    let put =
        fanout_aws::secrets::put_secret(&client, name, &value, description, kms_key_id).await?;
    eprintln!(
        "{} secret {name}; reference it in a pipeline config as below (for a JSON secret, add \
         json_key: KEY)",
        if put.created {
            "created"
        } else {
            "stored a new value in"
        }
    );
    println!("# {}", put.arn);
    println!("{{secrets_manager: {}}}", yaml_scalar(name));
    Ok(())
}

/// `fanout secret encrypt`: the value encrypted with KMS key `key_id`, printed as the config
/// reference `{kms_ciphertext: BASE64}`.
pub async fn encrypt(key_id: &str) -> anyhow::Result<()> {
    let value = read_value("value to encrypt")?;
    let config = fanout_aws::load_config().await;
    let client = fanout_aws::kms_client(&config);
    let ciphertext = fanout_aws::secrets::encrypt(&client, key_id, &value).await?;
    eprintln!("encrypted with KMS key {key_id}; reference it in a pipeline config as below");
    println!("{{kms_ciphertext: {ciphertext}}}");
    Ok(())
}

/// The value from stdin: all of it when piped (less one trailing newline), or a line typed at a
/// prompt without echo on a terminal. Empty is an error.
fn read_value(what: &str) -> anyhow::Result<Secret> {
    let value = if std::io::stdin().is_terminal() {
        let term = console::Term::stderr();
        anyhow::ensure!(
            term.is_term(),
            "stdin is a terminal but stderr is not: the {what} must be piped in"
        );
        term.write_str(&format!("{what} (input hidden): "))?;
        term.read_secure_line().context("reading the value")?
    } else {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the value from stdin")?;
        let mut text =
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the {what} is not UTF-8"))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        text
    };
    anyhow::ensure!(
        !value.is_empty(),
        "the {what} is empty (it is read from stdin)"
    );
    Ok(Secret::new(value))
}

/// `s` as a YAML flow scalar: plain when that is unambiguous, else double-quoted (JSON's string
/// syntax is YAML's).
fn yaml_scalar(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::yaml_scalar;

    #[test]
    fn names_print_as_yaml_that_reads_back() {
        for name in ["prod/api", "api-token_v2", "a b", "#x", "x: y", "-n", "é"] {
            let yaml = format!("{{secrets_manager: {}}}", yaml_scalar(name));
            let parsed: fanout_core::secret::SecretRef = serde_norway::from_str(&yaml).unwrap();
            assert_eq!(
                parsed,
                fanout_core::secret::SecretRef::SecretsManager {
                    secrets_manager: name.into(),
                    json_key: None
                },
                "{yaml}"
            );
        }
        assert_eq!(yaml_scalar("prod/api"), "prod/api");
    }
}
