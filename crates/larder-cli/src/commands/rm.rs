use std::process::ExitCode;

use anyhow::Result;
use larder::{Home, Removed};

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Digests (sha256:…, or a prefix of one that only one blob has) or keys
    #[arg(required = true, value_name = "DIGEST|KEY")]
    targets: Vec<String>,
    /// Remove pinned blobs too
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let store = home.store()?;
    let targets =
        args.targets.iter().map(|t| store.parse_target(t)).collect::<Result<Vec<_>, _>>()?;
    let mut failures = output::Failures::default();
    for target in &targets {
        match store.remove(target, args.force) {
            Ok(Removed::Blob { digest, .. }) => println!("removed {digest}"),
            Ok(Removed::Key { key, digest, blob_removed }) => {
                if blob_removed {
                    println!("removed {key} ({digest})");
                } else {
                    println!("removed {key}; {digest} stays (named by another key)");
                }
            }
            Err(e) => failures.report(e),
        }
    }
    store.close()?;
    Ok(failures.exit_code())
}
