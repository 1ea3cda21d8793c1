use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let settings = &ctx.config.settings;
    if args.json {
        let rows = settings
            .iter()
            .map(|s| json!({ "key": s.key, "value": s.value, "origin": s.origin.to_string() }))
            .collect();
        output::print_json(&serde_json::Value::Array(rows))?;
    } else {
        let rows: Vec<Vec<String>> = settings
            .iter()
            .map(|s| vec![s.key.to_string(), s.value.clone(), s.origin.to_string()])
            .collect();
        output::print_table(&["KEY", "VALUE", "FROM"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
