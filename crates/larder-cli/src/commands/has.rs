use std::process::ExitCode;

use anyhow::Result;
use larder::Target;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A digest (sha256:…) or a key
    #[arg(value_name = "DIGEST|KEY")]
    target: String,
    /// Only look in the local tier, not in the remotes behind it
    #[arg(long)]
    local: bool,
    /// Print the tiers that hold it, one a line (`local` and remotes' names)
    #[arg(long = "where", conflicts_with = "local")]
    where_: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let found = if args.local {
        let store = ctx.open_store()?;
        let found = store.contains(target)?;
        store.close()?;
        found
    } else if args.where_ {
        let tiers = ctx.open_larder()?.where_is(&target)?;
        for tier in &tiers {
            println!("{tier}");
        }
        !tiers.is_empty()
    } else {
        ctx.open_larder()?.contains(&target)?
    };
    Ok(if found { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
