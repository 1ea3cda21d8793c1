use std::process::ExitCode;

use anyhow::Result;
use larder::Home;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let settings = &home.config().settings;
    if args.json {
        output::print_json(settings)?;
    } else {
        let rows: Vec<Vec<String>> = settings
            .iter()
            .map(|s| vec![s.key.to_string(), s.value.clone(), s.origin.to_string()])
            .collect();
        output::print_table(&["KEY", "VALUE", "FROM"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
