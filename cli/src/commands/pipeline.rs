//! `fanout pipeline put|list|get`: the pipeline configs a stack holds (`pipelines/<name>.yaml`
//! in its data bucket). A config is checked as the stack's splitter will check it, with the
//! stack's defaults, before it is stored.

use std::path::Path;

use anyhow::Context;
use fanout_cli::local::Stack;
use fanout_core::config::PipelineConfig;
use fanout_core::manifest::keys;

/// Pipeline names become S3 key segments and metric dimensions: kept to what is safe in both.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    anyhow::ensure!(
        ok,
        "pipeline name {name:?}: use 1 to 100 of A-Z a-z 0-9 - _ . (not starting with a dot)"
    );
    Ok(())
}

/// The stored config of `name`, or an error naming where it was looked for.
pub async fn get_text(
    s3: &aws_sdk_s3::Client,
    stack: &Stack,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let key = keys::pipeline_config(name);
    let source = format!("s3://{}/{key}", stack.names.bucket);
    let out = s3
        .get_object()
        .bucket(&stack.names.bucket)
        .key(&key)
        .send()
        .await;
    let out = match out {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            anyhow::bail!(
                "pipeline {name}: {source} does not exist on {} (`fanout pipeline put {name} FILE` stores it)",
                stack.label
            )
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "GetObject {source}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ));
        }
    };
    let bytes = out
        .body
        .collect()
        .await
        .with_context(|| format!("reading {source}"))?
        .into_bytes();
    let text = String::from_utf8(bytes.to_vec()).with_context(|| format!("{source}: not UTF-8"))?;
    Ok((source, text))
}

/// One line about a checked config: its limit and chunk size as the stack will run it.
fn describe(config: &PipelineConfig) -> String {
    format!(
        "{} {} records, limit {:?} at {}/s (burst {}), {} bytes per manifest",
        config.request.method,
        match config.input.format {
            fanout_core::config::InputFormat::Csv => "CSV",
            fanout_core::config::InputFormat::Jsonl => "JSON Lines",
        },
        config.client.rate_limit_name,
        config.client.rate_limit_per_sec,
        config.client.rate_limit_burst,
        config.split.chunk_bytes
    )
}

pub async fn put(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    name: &str,
    file: &Path,
) -> anyhow::Result<()> {
    check_name(name)?;
    let source = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {source}"))?;
    let checked = PipelineConfig::from_yaml_with(&source, &text, &stack.defaults)?;
    let key = keys::pipeline_config(name);
    fanout_aws::s3_client(config)
        .put_object()
        .bucket(&stack.names.bucket)
        .key(&key)
        .content_type("application/yaml")
        .body(text.into_bytes().into())
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "PutObject s3://{}/{key}: {}",
                stack.names.bucket,
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    println!(
        "pipeline {name}: s3://{}/{key} ({})",
        stack.names.bucket,
        describe(&checked)
    );
    Ok(())
}

pub async fn get(config: &aws_config::SdkConfig, stack: &Stack, name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    let (_, text) = get_text(&fanout_aws::s3_client(config), stack, name).await?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// Every stored config, each checked with the stack's defaults: a config that the splitter
/// would refuse is listed with the reason.
pub async fn list(config: &aws_config::SdkConfig, stack: &Stack, json: bool) -> anyhow::Result<()> {
    let s3 = fanout_aws::s3_client(config);
    let mut pages = s3
        .list_objects_v2()
        .bucket(&stack.names.bucket)
        .prefix("pipelines/")
        .into_paginator()
        .send();
    let mut names = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "ListObjectsV2 s3://{}/pipelines/: {}",
                stack.names.bucket,
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
        for object in page.contents() {
            let name = object
                .key()
                .and_then(|k| k.strip_prefix("pipelines/"))
                .and_then(|k| k.strip_suffix(".yaml"))
                .filter(|n| !n.contains('/'));
            if let Some(name) = name {
                names.push(name.to_string());
            }
        }
    }
    if names.is_empty() && !json {
        eprintln!(
            "no pipeline on {} (`fanout pipeline put NAME FILE` stores one)",
            stack.label
        );
    }
    for name in names {
        let (source, text) = get_text(&s3, stack, &name).await?;
        let checked = PipelineConfig::from_yaml_with(&source, &text, &stack.defaults);
        if json {
            let line = match &checked {
                Ok(c) => serde_json::json!({
                    "name": name, "ok": true, "rate_limit_name": c.client.rate_limit_name,
                    "rate_limit_per_sec": c.client.rate_limit_per_sec,
                    "rate_limit_burst": c.client.rate_limit_burst, "chunk_bytes": c.split.chunk_bytes,
                }),
                Err(e) => serde_json::json!({"name": name, "ok": false, "error": e.to_string()}),
            };
            println!("{line}");
        } else {
            match &checked {
                Ok(c) => println!("{name}: {}", describe(c)),
                Err(e) => println!("{name}: REFUSED by the splitter: {e}"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_safe_key_segments() {
        for good in ["demo", "orders-2026", "a.b_c"] {
            check_name(good).unwrap();
        }
        for bad in ["", "a/b", ".hidden", "with space", "é", &"x".repeat(101)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("pipeline name"), "{err}");
        }
    }
}
