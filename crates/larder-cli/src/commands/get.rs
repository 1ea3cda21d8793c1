use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use larder::{Delivery, GetMode, Target};

use super::Context;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A digest (sha256:…) or a key
    #[arg(value_name = "DIGEST|KEY")]
    target: String,
    /// Where to write it: a file, a folder, or `-` for standard output
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Hand out a reflink or a read-only hardlink instead of a copy, where the filesystem allows
    #[arg(long)]
    link: bool,
    /// Only look in the local tier, not in the remotes behind it
    #[arg(long)]
    local: bool,
    /// Re-hash the stored bytes even if their file is unchanged since they last hashed right
    #[arg(long)]
    verify: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let to_stdout = match &args.output {
        Some(path) => path.as_os_str() == "-",
        None => true,
    };
    if to_stdout && args.output.is_none() && std::io::stdout().is_terminal() {
        anyhow::bail!(larder::Error::new(
            larder::ErrorKind::InvalidInput,
            "refusing to write a blob to the terminal; give -o PATH, or -o - to force standard output"
        ));
    }
    let bars = Bars::new();
    let store = ctx.open_store()?;
    let larder =
        ctx.larder_with(if args.verify { store.with_verify_reads(true) } else { store })?;
    // Falls through the remotes and fills the local tier. A copy to a file
    // is written out as it arrives, while it is stored: nothing is left to do.
    match (args.local, to_stdout, args.link, &args.output) {
        (true, ..) => {}
        (false, false, false, Some(path)) => {
            if larder.fetch_to_path(&target, path, &bars)?.is_some() {
                return Ok(ExitCode::SUCCESS);
            }
        }
        _ => {
            larder.fetch(&target, &bars)?;
        }
    }
    let store = larder.store();
    if to_stdout {
        if args.link {
            anyhow::bail!(larder::Error::new(
                larder::ErrorKind::InvalidInput,
                "--link needs -o PATH: standard output cannot be a link"
            ));
        }
        let mut out = std::io::stdout().lock();
        store.get_to_writer(&target, &mut out, &bars)?;
    } else if let Some(path) = &args.output {
        let mode = if args.link { GetMode::Link } else { GetMode::Copy };
        let (digest, how) = store.get_to_path(&target, path, mode, &bars)?;
        if args.link && how == Delivery::Copied {
            tracing::info!("{digest}: the filesystem cannot link here, so it was copied");
        }
    }
    Ok(ExitCode::SUCCESS)
}
