use std::process::ExitCode;

use anyhow::Result;
use larder::size::{format_size, plural};
use larder::{Figures, Home, TierStats};

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Set the hits and misses (the remotes' too) back to zero, then print
    #[arg(short = 'z', long)]
    zero: bool,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let larder = home.larder()?;
    if args.zero {
        larder.store().zero_stats()?;
    }
    let stats = larder.stats()?;
    larder.close_local()?;
    if args.json {
        output::print_json(&stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    let dash = || "-".to_string();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for tier in &stats.tiers {
        match tier {
            TierStats::Local { stats: s, .. } => {
                let lookups = s.hits + s.misses;
                let hit_ratio = if lookups == 0 {
                    dash()
                } else {
                    format!("{:.1}%", s.hits as f64 * 100.0 / lookups as f64)
                };
                rows.push(vec![
                    "local".to_string(),
                    s.entries.to_string(),
                    format_size(s.bytes),
                    format_size(s.pinned_bytes),
                    format_size(s.capacity),
                    format!("{:.1}%", s.usage_ratio * 100.0),
                    s.hits.to_string(),
                    s.misses.to_string(),
                    hit_ratio,
                ]);
            }
            TierStats::Remote(r) => {
                let name = &r.tier;
                let mode = r.mode.name();
                if r.queued > 0 {
                    notes.push(format!(
                        "{name} is owed {} ({}){}",
                        plural(r.queued as u64, "upload"),
                        format_size(r.queued_bytes),
                        match (r.failing, &r.last_upload_error) {
                            (0, _) | (_, None) => String::new(),
                            (n, Some(e)) => format!("; {n} failing, the last: {e}"),
                        }
                    ));
                }
                let row = match &r.figures {
                    Figures::Reached(f) => vec![
                        format!("{name} ({mode})"),
                        f.entries.map_or_else(dash, |e| e.to_string()),
                        f.bytes.map_or_else(dash, format_size),
                        dash(),
                        f.capacity.map_or_else(dash, format_size),
                        match (f.bytes, f.capacity) {
                            (Some(b), Some(c)) if c > 0 => {
                                format!("{:.1}%", b as f64 * 100.0 / c as f64)
                            }
                            _ => dash(),
                        },
                        r.hits.to_string(),
                        dash(),
                        dash(),
                    ],
                    Figures::Unreachable { error } => {
                        tracing::warn!("{error}");
                        let mut row = vec![format!("{name} ({mode})"), "unreachable".to_string()];
                        row.extend((0..7).map(|_| dash()));
                        row
                    }
                };
                rows.push(row);
            }
        }
    }
    output::print_table(
        &["TIER", "ENTRIES", "USED", "PINNED", "CAPACITY", "USAGE", "HITS", "MISSES", "HIT RATIO"],
        &rows,
    )?;
    for note in notes {
        println!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}
