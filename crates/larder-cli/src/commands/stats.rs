use std::process::ExitCode;

use anyhow::Result;
use larder::size::format_size;
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
    let store = ctx.open_store()?;
    let s = store.stats()?;
    let home = store.home().display().to_string();
    store.close()?;
    if args.json {
        let local = json!({
            "tier": "local",
            "home": home,
            "entries": s.entries,
            "bytes": s.bytes,
            "pinned_bytes": s.pinned_bytes,
            "capacity": s.capacity,
            "usage_ratio": s.usage_ratio,
            "hits": s.hits,
            "misses": s.misses,
        });
        // The totals are the local tier's until there are other tiers.
        let mut all = local.clone();
        if let Some(fields) = all.as_object_mut() {
            fields.remove("tier");
            fields.remove("home");
            fields.insert("tiers".into(), json!([local]));
        }
        output::print_json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    let lookups = s.hits + s.misses;
    let hit_ratio = if lookups == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", s.hits as f64 * 100.0 / lookups as f64)
    };
    output::print_table(
        &["TIER", "ENTRIES", "USED", "PINNED", "CAPACITY", "USAGE", "HITS", "MISSES", "HIT RATIO"],
        &[vec![
            "local".to_string(),
            s.entries.to_string(),
            format_size(s.bytes),
            format_size(s.pinned_bytes),
            format_size(s.capacity),
            format!("{:.1}%", s.usage_ratio * 100.0),
            s.hits.to_string(),
            s.misses.to_string(),
            hit_ratio,
        ]],
    )?;
    Ok(ExitCode::SUCCESS)
}
