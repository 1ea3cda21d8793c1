use std::process::ExitCode;

use anyhow::Result;
use larder::Home;
use larder::size::{format_size, plural};

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
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let store = home.store()?;
    let r = store.verify(args.repair, &Bars::new())?;
    store.close()?;
    let clean = r.clean;
    if args.json {
        output::print_json(&r)?;
    } else {
        println!("checked {} ({})", plural(r.checked, "blob"), format_size(r.bytes));
        for q in &r.corrupt {
            println!("corrupt: {} (moved to {})", q.digest, q.quarantined.display());
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
