use std::process::ExitCode;

use anyhow::Result;
use larder::Home;
use larder::size::format_size;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries whose digest (sha256:…) or one of whose keys starts with this
    #[arg(value_name = "PREFIX")]
    prefix: Option<String>,
    /// Only entries with a key that starts with this (`--key ''`: every entry with a key)
    #[arg(long, value_name = "PREFIX")]
    key: Option<String>,
    /// Show exact sizes, times and every key
    #[arg(short, long)]
    long: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let store = home.store()?;
    let mut entries = store.list()?;
    store.close()?;
    let key_starts = |e: &larder::Entry, prefix: &str| e.keys.iter().any(|k| k.starts_with(prefix));
    if let Some(prefix) = &args.prefix {
        let digest_prefix = prefix.to_ascii_lowercase();
        entries
            .retain(|e| e.digest.to_string().starts_with(&digest_prefix) || key_starts(e, prefix));
    }
    if let Some(prefix) = &args.key {
        entries.retain(|e| key_starts(e, prefix));
    }
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
