use std::process::ExitCode;

use anyhow::Result;
use larder::{Removed, Target};

use super::Context;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Digests (sha256:…) or keys
    #[arg(required = true, value_name = "DIGEST|KEY")]
    targets: Vec<String>,
    /// Remove pinned blobs too
    #[arg(long)]
    force: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let targets = args.targets.iter().map(|t| Target::parse(t)).collect::<Result<Vec<_>, _>>()?;
    let store = ctx.open_store()?;
    let mut first_error = None;
    for target in &targets {
        match store.remove(target, args.force) {
            Ok(Removed::Blob { digest, .. }) => println!("removed {digest}"),
            Ok(Removed::Key { key, digest, blob_removed }) => {
                if blob_removed {
                    println!("removed {key} ({digest})");
                } else {
                    println!("removed {key}; {digest} stays (pinned or named by another key)");
                }
            }
            Err(e) => {
                let e = anyhow::Error::from(e);
                output::print_error(&e);
                first_error.get_or_insert(output::exit_code(&e));
            }
        }
    }
    store.close()?;
    Ok(first_error.map_or(ExitCode::SUCCESS, ExitCode::from))
}
