use std::process::ExitCode;

use anyhow::Result;
use larder::Home;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A digest (sha256:…, or a prefix of one that only one stored blob has) or a key
    #[arg(value_name = "DIGEST|KEY")]
    target: String,
    /// Only look in the local tier, not in the remotes behind it
    #[arg(long)]
    local: bool,
    /// Print the tiers that hold it, one a line (`local` and remotes' names)
    #[arg(long = "where", conflicts_with = "local")]
    where_: bool,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let target = super::target(home, &args.target)?;
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
        let larder = home.larder()?;
        tracing::debug!("asking local{}", super::get::remote_names(&larder));
        larder.contains(&target)?
    };
    // Where it was found across tiers, the library says.
    match (found, args.local) {
        (true, true) => tracing::info!("{}: in the local tier", args.target),
        (false, true) => tracing::info!("{}: not in the local tier", args.target),
        (false, false) => tracing::info!("{}: in no tier", args.target),
        (true, false) => {}
    }
    Ok(if found { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
