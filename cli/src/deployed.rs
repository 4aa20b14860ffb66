//! A stack deployed from template.yaml, found by its CloudFormation name (`--stack NAME`,
//! `FANOUT_STACK`): its resources from the stack's outputs and resources, and what its splitter
//! applies to every pipeline config from the stack's parameters, so that the CLI checks a config
//! exactly as the deployed splitter will.

use std::collections::BTreeMap;

use anyhow::Context;
use fanout_core::stack_defaults::StackDefaults;

use crate::local::Stack;

/// The outputs of template.yaml that name what the operator commands work on.
pub mod outputs {
    pub const BUCKET: &str = "DataBucketName";
    pub const QUEUE_URL: &str = "ManifestQueueUrl";
    pub const DLQ_URL: &str = "ManifestDeadLetterQueueUrl";
    pub const TABLE: &str = "LedgerTableName";
    pub const KEY_ARN: &str = "KeyArn";
    pub const SPLITTER_FAILURE_QUEUE_URL: &str = "SplitterFailureQueueUrl";
    /// Every output the CLI needs; a stack without one of them is not one of ours.
    pub const REQUIRED: [&str; 6] = [
        BUCKET,
        QUEUE_URL,
        DLQ_URL,
        TABLE,
        KEY_ARN,
        SPLITTER_FAILURE_QUEUE_URL,
    ];
}

/// The template parameter behind each variable of the splitter's environment that
/// [`StackDefaults`] reads (template.yaml: `API_BASE_URL: !Ref ApiBaseUrl`, ...). A test checks
/// this table against the template.
pub const DEFAULTS_PARAMETERS: [(&str, &str); 4] = [
    ("API_BASE_URL", "ApiBaseUrl"),
    ("RATE_LIMIT_PER_SECOND", "RateLimitPerSecond"),
    ("RATE_LIMIT_BURST", "RateLimitBurst"),
    ("CHUNK_BYTES", "ChunkBytes"),
];

/// What DescribeStacks and ListStackResources say about a deployed stack.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deployed {
    pub stack_name: String,
    pub outputs: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
    /// Logical resource id -> physical id (a queue's URL, a function's name, ...).
    pub resources: BTreeMap<String, String>,
}

impl Deployed {
    /// The stack's resources and defaults, or an error naming the stack and what it lacks.
    pub fn stack(&self) -> anyhow::Result<Stack> {
        let missing: Vec<&str> = outputs::REQUIRED
            .into_iter()
            .filter(|o| self.outputs.get(*o).is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "stack {}: no output {} (is it deployed from this project's template.yaml?)",
                self.stack_name,
                missing.join(", ")
            );
        }
        let output = |name: &str| self.outputs[name].as_str();
        let defaults = StackDefaults::from_vars(|var| {
            DEFAULTS_PARAMETERS
                .iter()
                .find(|(v, _)| *v == var)
                .and_then(|(_, parameter)| self.parameters.get(*parameter).cloned())
        })
        .map_err(|e| anyhow::anyhow!("stack {}: parameter {e}", self.stack_name))?;
        let mut stack = Stack::existing(
            output(outputs::BUCKET),
            output(outputs::QUEUE_URL),
            output(outputs::DLQ_URL),
            output(outputs::TABLE),
            Some(output(outputs::KEY_ARN)),
        );
        stack.defaults = defaults;
        stack.label = format!("stack {}", self.stack_name);
        stack.deployed = Some(self.clone());
        Ok(stack)
    }

    /// Where the splitter's failed S3 events go (its on-failure destination).
    pub fn splitter_failure_queue_url(&self) -> &str {
        self.outputs
            .get(outputs::SPLITTER_FAILURE_QUEUE_URL)
            .map_or("", String::as_str)
    }
}

/// Reads the stack `name`: DescribeStacks (outputs, parameters) and ListStackResources.
pub async fn describe(config: &aws_config::SdkConfig, name: &str) -> anyhow::Result<Deployed> {
    let cfn = aws_sdk_cloudformation::Client::new(config);
    let described = cfn
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "stack {name}: DescribeStacks: {}",
                aws_sdk_cloudformation::error::DisplayErrorContext(e)
            )
        })?;
    let stack = described
        .stacks()
        .first()
        .with_context(|| format!("stack {name}: not found"))?;
    let status = stack.stack_status().map(|s| s.as_str()).unwrap_or_default();
    // A stack being created, deleted or rolled back has no dependable outputs.
    if !matches!(
        status,
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "UPDATE_ROLLBACK_COMPLETE" | "IMPORT_COMPLETE"
    ) {
        anyhow::bail!("stack {name} is {status}, not ready for jobs");
    }
    let outputs = stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    let parameters = stack
        .parameters()
        .iter()
        .filter_map(|p| {
            Some((
                p.parameter_key()?.to_string(),
                p.parameter_value()?.to_string(),
            ))
        })
        .collect();
    let mut resources = BTreeMap::new();
    let mut pages = cfn
        .list_stack_resources()
        .stack_name(name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "stack {name}: ListStackResources: {}",
                aws_sdk_cloudformation::error::DisplayErrorContext(e)
            )
        })?;
        for r in page.stack_resource_summaries() {
            if let (Some(logical), Some(physical)) =
                (r.logical_resource_id(), r.physical_resource_id())
            {
                resources.insert(logical.to_string(), physical.to_string());
            }
        }
    }
    Ok(Deployed {
        stack_name: name.to_string(),
        outputs,
        parameters,
        resources,
    })
}

/// The names the dashboard body refers to (`${ManifestQueue.QueueName}`, `${WorkerFunction}`,
/// ...) and the parameter values the stack was deployed with, for [`crate::dashboard`].
pub fn dashboard_names(deployed: &Deployed) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = deployed
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (logical, physical) in &deployed.resources {
        names.push((logical.clone(), physical.clone()));
        // A queue's physical id is its URL, which ends with its name.
        if physical.starts_with("http") {
            let queue_name = physical.rsplit('/').next().unwrap_or(physical);
            names.push((format!("{logical}.QueueName"), queue_name.to_string()));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployed() -> Deployed {
        let outputs = [
            (outputs::BUCKET, "b-data"),
            (
                outputs::QUEUE_URL,
                "http://q/000000000000/s-ManifestQueue-1",
            ),
            (outputs::DLQ_URL, "http://q/000000000000/s-Dlq-1"),
            (outputs::TABLE, "s-Ledger-1"),
            (outputs::KEY_ARN, "arn:aws:kms:us-east-1:0:key/k"),
            (
                outputs::SPLITTER_FAILURE_QUEUE_URL,
                "http://q/0/s-SplitFail",
            ),
        ];
        Deployed {
            stack_name: "s".into(),
            outputs: outputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            parameters: [
                ("ApiBaseUrl", "https://api.example.com/"),
                ("RateLimitPerSecond", "250"),
                ("RateLimitBurst", "25"),
                ("ChunkBytes", "1048576"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            resources: [("ManifestQueue", "http://q/000000000000/s-ManifestQueue-1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_stack_is_its_outputs_and_its_parameters() {
        let stack = deployed().stack().unwrap();
        assert_eq!(stack.names.bucket, "b-data");
        assert_eq!(stack.names.table, "s-Ledger-1");
        assert_eq!(stack.names.queue, "s-ManifestQueue-1");
        assert_eq!(stack.dlq_url, "http://q/000000000000/s-Dlq-1");
        assert_eq!(
            stack.kms_key_id.as_deref(),
            Some("arn:aws:kms:us-east-1:0:key/k")
        );
        assert_eq!(
            stack.defaults.api_base_url.as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(stack.defaults.rate_limit_per_sec, Some(250));
        assert_eq!(stack.defaults.rate_limit_burst, Some(25));
        assert_eq!(stack.defaults.chunk_bytes, Some(1_048_576));
        assert_eq!(stack.label, "stack s");
    }

    #[test]
    fn a_missing_output_is_named() {
        let mut d = deployed();
        d.outputs.remove(outputs::TABLE);
        d.outputs.insert(outputs::KEY_ARN.into(), String::new());
        let err = d.stack().unwrap_err().to_string();
        assert!(err.contains("stack s"), "{err}");
        assert!(err.contains("LedgerTableName, KeyArn"), "{err}");
    }

    #[test]
    fn a_bad_parameter_is_named() {
        let mut d = deployed();
        d.parameters
            .insert("RateLimitPerSecond".into(), "fast".into());
        let err = d.stack().unwrap_err().to_string();
        assert!(err.contains("RATE_LIMIT_PER_SECOND"), "{err}");
    }

    #[test]
    fn an_empty_base_url_parameter_is_no_default() {
        let mut d = deployed();
        d.parameters.insert("ApiBaseUrl".into(), String::new());
        assert_eq!(d.stack().unwrap().defaults.api_base_url, None);
    }

    #[test]
    fn queue_names_come_from_their_urls() {
        let names = dashboard_names(&deployed());
        assert!(names.contains(&(
            "ManifestQueue.QueueName".to_string(),
            "s-ManifestQueue-1".to_string()
        )));
        assert!(names.contains(&("RateLimitPerSecond".to_string(), "250".to_string())));
    }

    /// The table above is the template's: each variable the splitter reads for its defaults is
    /// set from that parameter.
    #[test]
    fn the_parameter_table_matches_the_template() {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
                .unwrap();
        for var in fanout_core::stack_defaults::VARS {
            let (_, parameter) = DEFAULTS_PARAMETERS
                .iter()
                .find(|(v, _)| v == &var)
                .unwrap_or_else(|| panic!("{var} has no parameter in DEFAULTS_PARAMETERS"));
            let line = format!("{var}: !Ref {parameter}");
            assert!(template.contains(&line), "template.yaml has no `{line}`");
        }
    }
}
