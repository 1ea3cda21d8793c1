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
    let larder = ctx.open_larder()?;
    let s = larder.store().stats()?;
    let home = larder.store().home().display().to_string();
    // Each remote's own figures, or why they could not be had.
    let remotes: Vec<(String, String, String, larder::Result<larder::remote::RemoteStats>)> =
        larder
            .remotes()
            .iter()
            .map(|r| (r.name().to_string(), r.mode().name().to_string(), r.location(), r.stats()))
            .collect();
    larder.close()?;
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
        // The totals are the local tier's; each remote's are beside them.
        let mut tiers = vec![local.clone()];
        for (name, mode, location, stats) in &remotes {
            tiers.push(match stats {
                Ok(r) => json!({
                    "tier": name, "mode": mode, "url": location,
                    "entries": r.entries, "bytes": r.bytes, "capacity": r.capacity,
                }),
                Err(e) => {
                    json!({"tier": name, "mode": mode, "url": location, "error": e.to_string()})
                }
            });
        }
        let mut all = local.clone();
        if let Some(fields) = all.as_object_mut() {
            fields.remove("tier");
            fields.remove("home");
            fields.insert("tiers".into(), json!(tiers));
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
    let mut rows = vec![vec![
        "local".to_string(),
        s.entries.to_string(),
        format_size(s.bytes),
        format_size(s.pinned_bytes),
        format_size(s.capacity),
        format!("{:.1}%", s.usage_ratio * 100.0),
        s.hits.to_string(),
        s.misses.to_string(),
        hit_ratio,
    ]];
    let dash = || "-".to_string();
    for (name, mode, _, stats) in &remotes {
        let row = match stats {
            Ok(r) => vec![
                format!("{name} ({mode})"),
                r.entries.map_or_else(dash, |e| e.to_string()),
                r.bytes.map_or_else(dash, format_size),
                dash(),
                r.capacity.map_or_else(dash, format_size),
                match (r.bytes, r.capacity) {
                    (Some(b), Some(c)) if c > 0 => format!("{:.1}%", b as f64 * 100.0 / c as f64),
                    _ => dash(),
                },
                dash(),
                dash(),
                dash(),
            ],
            Err(e) => {
                tracing::warn!("{e}");
                let mut row = vec![format!("{name} ({mode})"), "unreachable".to_string()];
                row.extend((0..7).map(|_| dash()));
                row
            }
        };
        rows.push(row);
    }
    output::print_table(
        &["TIER", "ENTRIES", "USED", "PINNED", "CAPACITY", "USAGE", "HITS", "MISSES", "HIT RATIO"],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}
