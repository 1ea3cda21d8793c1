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
            .map(|r| {
                let remote = r.remote();
                (
                    r.name().to_string(),
                    r.mode().name().to_string(),
                    remote.location(),
                    remote.stats(),
                )
            })
            .collect();
    // What each remote is owed: uploads, bytes, failing tries and the last error.
    let queue = larder.store().queued_uploads()?;
    let owed = |name: &str| {
        let rows: Vec<_> = queue.iter().filter(|u| u.remote == name).collect();
        let failing = rows.iter().filter(|u| u.attempts > 0).count();
        let last_error = rows.iter().find_map(|u| u.last_error.clone());
        (rows.len(), rows.iter().map(|u| u.size).sum::<u64>(), failing, last_error)
    };
    larder.close_local()?;
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
            let (queued, queued_bytes, failing, last_error) = owed(name);
            let mut row = match stats {
                Ok(r) => json!({
                    "tier": name, "mode": mode, "url": location,
                    "entries": r.entries, "bytes": r.bytes, "capacity": r.capacity,
                }),
                Err(e) => {
                    json!({"tier": name, "mode": mode, "url": location, "error": e.to_string()})
                }
            };
            if let Some(fields) = row.as_object_mut() {
                fields.insert("queued".into(), json!(queued));
                fields.insert("queued_bytes".into(), json!(queued_bytes));
                fields.insert("failing".into(), json!(failing));
                fields.insert("last_upload_error".into(), json!(last_error));
            }
            tiers.push(row);
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
    let mut notes = Vec::new();
    for (name, mode, _, stats) in &remotes {
        let (queued, queued_bytes, failing, last_error) = owed(name);
        if queued > 0 {
            notes.push(format!(
                "{name} is owed {queued} uploads ({}){}",
                format_size(queued_bytes),
                match (failing, &last_error) {
                    (0, _) | (_, None) => String::new(),
                    (n, Some(e)) => format!("; {n} failing, the last: {e}"),
                }
            ));
        }
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
    for note in notes {
        println!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}
