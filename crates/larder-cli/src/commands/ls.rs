use std::process::ExitCode;

use anyhow::Result;
use larder::Home;
use larder::size::format_size;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show exact sizes, times and every key
    #[arg(short, long)]
    long: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let store = home.store()?;
    let entries = store.list()?;
    store.close()?;
    if args.json {
        output::print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let pin = |p: bool| if p { "pinned" } else { "" }.to_string();
    if args.long {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.digest.to_string(),
                    e.size.to_string(),
                    pin(e.pinned),
                    larder::time::format_utc(e.created_at),
                    larder::time::format_utc(e.used_at),
                    e.keys.join(","),
                ]
            })
            .collect();
        output::print_table(
            &["DIGEST", "BYTES", "PIN", "CREATED (UTC)", "USED (UTC)", "KEYS"],
            &rows,
        )?;
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let keys = match e.keys.len() {
                    0 => String::new(),
                    1 => e.keys[0].clone(),
                    n => format!("{} (+{} more)", e.keys[0], n - 1),
                };
                vec![
                    e.digest.to_string()[..19].to_string(),
                    format_size(e.size),
                    pin(e.pinned),
                    keys,
                ]
            })
            .collect();
        output::print_table(&["DIGEST", "SIZE", "PIN", "KEY"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
