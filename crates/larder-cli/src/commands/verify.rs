use std::process::ExitCode;

use anyhow::Result;
use larder::size::format_size;
use serde_json::json;

use super::Context;
use crate::output;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Drop index rows whose file is gone and add back files the index lost
    #[arg(long)]
    repair: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let store = ctx.open_store()?;
    let r = store.verify(args.repair, &Bars::new())?;
    store.close()?;
    let clean = r.is_clean(args.repair);
    if args.json {
        output::print_json(&json!({
            "checked": r.checked,
            "bytes": r.bytes,
            "corrupt": r.corrupt.iter().map(|(d, q)| json!({"digest": d.to_string(), "quarantined": q})).collect::<Vec<_>>(),
            "missing": r.missing.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "orphans": r.orphans,
            "adopted": r.adopted,
            "dropped": r.dropped,
            "clean": clean,
        }))?;
    } else {
        println!("checked {} blobs ({})", r.checked, format_size(r.bytes));
        for (digest, place) in &r.corrupt {
            println!("corrupt: {digest} (moved to {})", place.display());
        }
        for digest in &r.missing {
            let what = if args.repair {
                "dropped from the index"
            } else {
                "run `larder verify --repair` to drop it"
            };
            println!("missing: {digest}: its file is gone; {what}");
        }
        for path in &r.orphans {
            let what = if args.repair {
                "added back or quarantined"
            } else {
                "run `larder verify --repair` to add it back"
            };
            println!("not in the index: {}: {what}", path.display());
        }
        if args.repair && (r.adopted > 0 || r.dropped > 0) {
            println!("repaired: {} added back, {} dropped", r.adopted, r.dropped);
        }
        if clean {
            println!("ok");
        }
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(3) })
}
