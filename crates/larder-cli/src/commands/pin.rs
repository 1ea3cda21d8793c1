use std::process::ExitCode;

use anyhow::Result;
use larder::Home;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Digests (sha256:…, or a prefix of one that only one blob has) or keys
    #[arg(required = true, value_name = "DIGEST|KEY")]
    targets: Vec<String>,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args, pinned: bool) -> Result<ExitCode> {
    let store = home.store()?;
    let targets =
        args.targets.iter().map(|t| store.parse_target(t)).collect::<Result<Vec<_>, _>>()?;
    let mut failures = output::Failures::default();
    for target in &targets {
        match store.set_pinned(target, pinned) {
            Ok(digest) => println!("{} {digest}", if pinned { "pinned" } else { "unpinned" }),
            Err(e) => failures.report(e),
        }
    }
    store.close()?;
    Ok(failures.exit_code())
}
