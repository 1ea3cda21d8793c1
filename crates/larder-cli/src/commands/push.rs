use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::output;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let larder = ctx.open_larder()?;
    let reports = larder.push(&Bars::new())?;
    larder.close()?;
    if args.json {
        let rows = reports
            .iter()
            .map(|r| json!({"remote": r.remote, "uploaded": r.uploaded, "present": r.present, "keys": r.keys}))
            .collect();
        output::print_json(&serde_json::Value::Array(rows))?;
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|r| {
                vec![
                    r.remote.clone(),
                    r.uploaded.to_string(),
                    r.present.to_string(),
                    r.keys.to_string(),
                ]
            })
            .collect();
        output::print_table(&["REMOTE", "UPLOADED", "ALREADY THERE", "KEYS"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
