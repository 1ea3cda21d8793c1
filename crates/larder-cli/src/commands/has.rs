use std::process::ExitCode;

use anyhow::Result;
use larder::{Home, Target};

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

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let found = if args.local {
        let store = home.store()?;
        let found = store.contains(target)?;
        store.close()?;
        found
    } else if args.where_ {
        let tiers = home.larder()?.where_is(&target)?;
        for tier in &tiers {
            println!("{tier}");
        }
        !tiers.is_empty()
    } else {
        home.larder()?.contains(&target)?
    };
    Ok(if found { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
