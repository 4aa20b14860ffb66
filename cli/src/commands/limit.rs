//! `fanout limit set|get|clear NAME`: change the rate of a fleet limit while jobs run, and see
//! it. NAME is a pipeline's `client.rate_limit_name` (default "api"); every pipeline with that
//! name shares the limit, and an override applies to all of them. Workers pick a change up with
//! their next leases, within a few seconds; without an override each pipeline's
//! `client.rate_limit_per_sec` applies.

use clap::Subcommand;
use fanout_cli::limit::{self, LimitView, MEASURED_WINDOWS};
use fanout_core::ledger::now_ms;
use serde_json::json;

#[derive(Subcommand)]
pub enum LimitCommand {
    /// Set the limit's rate for the whole fleet (every pipeline with this rate_limit_name),
    /// replacing each pipeline's client.rate_limit_per_sec until `fanout limit clear`.
    Set {
        /// The limit's name (client.rate_limit_name).
        name: String,
        /// Calls per second for the whole fleet (1..=1000000, as client.rate_limit_per_sec).
        rate: u32,
        /// Calls that may be sent late in a catch-up burst (1..=10000000, as
        /// client.rate_limit_burst); without it, each pipeline's client.rate_limit_burst.
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Show the limit's override, if any, and the rate the fleet leased over the last 10 s.
    Get {
        /// The limit's name (client.rate_limit_name).
        name: String,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Remove the limit's override: each pipeline's client.rate_limit_per_sec applies again.
    Clear {
        /// The limit's name (client.rate_limit_name).
        name: String,
    },
}

pub async fn run(command: LimitCommand, table: &str) -> anyhow::Result<()> {
    let config = fanout_aws::load_config().await;
    let ddb = fanout_aws::dynamodb_client(&config);
    match command {
        LimitCommand::Set { name, rate, burst } => {
            let stored = limit::set(&ddb, table, &name, rate, burst, now_ms()).await?;
            println!(
                "limit {name}: {stored} for the whole fleet, stored in {table}; workers take it \
                 up with their next leases, within a few seconds"
            );
        }
        LimitCommand::Get { name, json } => {
            let now = now_ms();
            let view = limit::view(&ddb, table, &name, now).await?;
            if json {
                println!("{}", json!(view));
            } else {
                print_view(&view, now);
            }
        }
        LimitCommand::Clear { name } => {
            if limit::clear(&ddb, table, &name).await? {
                println!(
                    "limit {name}: override removed; each pipeline's client.rate_limit_per_sec \
                     applies again"
                );
            } else {
                println!("limit {name}: had no override");
            }
        }
    }
    Ok(())
}

fn print_view(view: &LimitView, now_ms: u64) {
    println!("limit {}", view.limit);
    match &view.rate_override {
        Some(o) => println!(
            "  configured  {o}, an override set {} s ago",
            now_ms.saturating_sub(o.set_at_ms) / 1000
        ),
        None => println!("  configured  none (each pipeline's client.rate_limit_per_sec applies)"),
    }
    println!(
        "  measured    {:.1}/s over the last {MEASURED_WINDOWS} s: tokens leased (an upper bound \
         of the calls made)",
        view.measured.per_sec
    );
}
