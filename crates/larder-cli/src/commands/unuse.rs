use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use larder::coord::Holder;

use super::Context;
use super::use_dir::{parent_process, token};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "path"])))]
pub struct Args {
    /// The directory's name
    #[arg(long)]
    name: Option<String>,
    /// The directory's path, as `larder use` printed it
    path: Option<PathBuf>,
    /// Release the hold taken with `larder use --holder NAME`
    #[arg(long, value_name = "NAME")]
    holder: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let dirs = ctx.open_dirs()?;
    let name = match (args.name, args.path) {
        (Some(name), _) => name,
        (None, Some(path)) => dirs.name_of_path(&path)?,
        (None, None) => unreachable!("clap requires one"),
    };
    let holder = match &args.holder {
        Some(id) => token(id, std::time::Duration::ZERO)?,
        None => Holder::process(parent_process()?),
    };
    dirs.unuse(&name, &holder)?;
    Ok(ExitCode::SUCCESS)
}
