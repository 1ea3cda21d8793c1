use std::process::ExitCode;

use anyhow::{Result, bail};
use larder::Home;
use larder::pypi::Index;
use larder::pypi::manage::{self, Change, Chosen};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Remove a release, or one file of it (a wheel's .metadata goes with it)
    Rm(Which),
    /// Yank a release or a file (PEP 592): installers skip it unless pinned with ==
    Yank {
        #[command(flatten)]
        which: Which,
        /// Why, shown by pip and uv
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Undo a yank
    Unyank(Which),
}

#[derive(Debug, clap::Args)]
struct Which {
    /// The project, like holy-grail
    project: String,
    /// The release: every file of it
    version: Option<String>,
    /// One file of the project, by name, instead of a whole release
    #[arg(long, value_name = "FILENAME")]
    file: Option<String>,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let (which, change, verb) = match args.action {
        Action::Rm(which) => (which, Change::Remove, "removed"),
        Action::Yank { which, reason } => (which, Change::Yank(reason), "yanked"),
        Action::Unyank(which) => (which, Change::Unyank, "unyanked"),
    };
    if which.version.is_none() && which.file.is_none() {
        bail!("name a version, or one file with --file");
    }
    let config = home.config();
    let root = &config.home;
    let index = Index::open(root)?;
    let store = larder::Store::open(root, config.capacity)?;
    let chosen = Chosen { project: which.project, version: which.version, filename: which.file };
    let files = manage::apply(&index, &store, &chosen, &change)?;
    store.close()?;
    for f in files {
        println!("{verb} {f}");
    }
    Ok(ExitCode::SUCCESS)
}
