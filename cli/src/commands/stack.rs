//! `--stack NAME` / `FANOUT_STACK`, or `--prefix`: which stack an operator command works on.
//! Resolving it only reads; no operator command creates a resource (`fanout local up` does).

use fanout_cli::deployed;
use fanout_cli::local::{self, Stack, StackNames};

#[derive(clap::Args, Clone, Debug)]
pub struct StackSelector {
    /// A stack deployed from template.yaml, by its CloudFormation name: bucket, queues, table
    /// and key from its outputs, the defaults for pipelines from its parameters.
    #[arg(long, env = "FANOUT_STACK")]
    pub stack: Option<String>,
    /// Without --stack: the local stack that `fanout local up --prefix P` made.
    #[arg(long, default_value = "fanout", conflicts_with = "stack")]
    pub prefix: String,
}

impl StackSelector {
    pub async fn resolve(&self, config: &aws_config::SdkConfig) -> anyhow::Result<Stack> {
        match &self.stack {
            Some(name) => deployed::describe(config, name).await?.stack(),
            None => local::find_stack(config, &StackNames::with_prefix(&self.prefix)).await,
        }
    }
}
