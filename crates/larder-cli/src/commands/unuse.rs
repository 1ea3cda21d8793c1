use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use larder::Home;
use larder::coord::Holder;
use larder::recipe::Recipe;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["name", "what"])))]
pub struct Args {
    /// The directory's name
    #[arg(long)]
    name: Option<String>,
    /// The directory's path, as `larder use` printed it, or the recipe it was used with
    #[arg(value_name = "PATH|RECIPE")]
    what: Vec<String>,
    /// Ignored: accepted so that `unuse` takes the very arguments `use` took
    #[arg(long, value_name = "SIZE")]
    size: Option<String>,
    /// Ignored: accepted so that `unuse` takes the very arguments `use` took
    #[arg(long, value_name = "DIR:DIR…")]
    dirs: Option<String>,
    /// Release the hold taken with `larder use --holder NAME`
    #[arg(long, value_name = "NAME")]
    holder: Option<String>,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    if let Some(size) = &args.size {
        larder::size::parse_size(size)?;
    }
    let _ = &args.dirs;
    let dirs = home.dirs()?;
    let holder = match &args.holder {
        Some(id) => Holder::token(id, std::time::Duration::ZERO)?,
        None => Holder::caller()?,
    };
    // One argument that is a folder, or no recipe, is the path `larder use`
    // printed; anything else is the recipe, as shared-cache's `--unuse` took it.
    let recipe = Recipe::parse(&args.what);
    if let ([one], None) = (args.what.as_slice(), &args.name)
        && (Path::new(one).is_dir() || recipe.is_err())
    {
        let name = dirs.name_of_path(Path::new(one))?;
        dirs.unuse(&name, &holder)?;
        return Ok(ExitCode::SUCCESS);
    }
    let recipe = recipe?;
    let spec = larder::DirSpec { name: args.name, recipe, ..Default::default() };
    dirs.unuse_spec(&spec, &holder)?;
    Ok(ExitCode::SUCCESS)
}
