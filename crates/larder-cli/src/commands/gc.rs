use std::process::ExitCode;

use anyhow::Result;
use larder::Home;
use larder::size::{format_size, parse_size};

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Evict down to this size (default: the capacity)
    #[arg(long, value_name = "SIZE")]
    to: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let to = args.to.as_deref().map(parse_size).transpose()?;
    let store = home.store()?;
    let r = store.gc(to)?;
    store.close()?;
    if args.json {
        output::print_json(&r)?;
    } else {
        println!(
            "evicted {} entries ({}); {} in use, target {}",
            r.evicted,
            format_size(r.freed),
            format_size(r.bytes),
            format_size(r.target)
        );
        if r.bytes > r.target {
            println!(
                "the rest is pinned or waits to be uploaded to a write-back remote; unpin entries (or larder push) to go lower"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
