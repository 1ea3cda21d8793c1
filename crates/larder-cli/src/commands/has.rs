use std::process::ExitCode;

use anyhow::Result;
use larder::Target;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A digest (sha256:…) or a key
    #[arg(value_name = "DIGEST|KEY")]
    target: String,
    /// Only look in the local tier
    #[arg(long)]
    local: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let store = ctx.open_store()?;
    let found = if args.local { store.on_cache(target)? } else { store.contains(target)? };
    store.close()?;
    Ok(if found { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
