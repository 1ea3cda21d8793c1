use std::process::ExitCode;

use anyhow::Result;
use larder::size::{format_size, parse_size, plural};
use larder::{GcOptions, Home};

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Evict down to this size (default: the capacity)
    #[arg(long, value_name = "SIZE")]
    to: Option<String>,
    /// Also evict unpinned entries not used for this long, like 30d, 12h or 90m
    #[arg(long, value_name = "AGE")]
    older_than: Option<String>,
    /// Delete the corrupt blobs kept in quarantine/
    #[arg(long)]
    quarantine: bool,
    /// Say what would be removed, and remove nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let options = GcOptions {
        to: args.to.as_deref().map(parse_size).transpose()?,
        older_than: args.older_than.as_deref().map(larder::time::parse_duration).transpose()?,
        dry_run: args.dry_run,
        empty_quarantine: args.quarantine,
    };
    let store = home.store()?;
    let r = store.gc_with(&options)?;
    store.close()?;
    if args.json {
        output::print_json(&r)?;
    } else {
        let (evicted, emptied) =
            if r.dry_run { ("would evict", "would delete") } else { ("evicted", "deleted") };
        println!(
            "{evicted} {} ({}); {} in use, target {}",
            plural(r.evicted, "entry"),
            format_size(r.freed),
            format_size(r.bytes),
            format_size(r.target)
        );
        if args.quarantine {
            println!("{emptied} {} from quarantine/", plural(r.quarantine_emptied, "file"));
        }
        if r.bytes > r.target {
            println!(
                "the rest is pinned or waits to be uploaded to a write-back remote; unpin entries (or larder push) to go lower"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
