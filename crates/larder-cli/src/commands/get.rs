use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use larder::{GetTo, Home};

use crate::output;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A digest (sha256:…, or a prefix of one that only one stored blob has) or a key
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
    #[command(flatten)]
    pub store: super::StoreArgs,
}

impl Args {
    /// Whether to re-hash (the `verify_reads` setting, for this command).
    pub fn verify(&self) -> bool {
        self.verify
    }
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let target = super::target(home, &args.target)?;
    let path = args.output.as_deref().filter(|p| p.as_os_str() != "-");
    if path.is_none() {
        if args.output.is_none() && std::io::stdout().is_terminal() {
            anyhow::bail!(output::usage(
                "refusing to write a blob to the terminal; give -o PATH, or -o - to force standard output"
            ));
        }
        if args.link {
            anyhow::bail!(output::usage("--link needs -o PATH: standard output cannot be a link"));
        }
    }
    if let Some(parent) = path.and_then(|p| p.parent()).filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        anyhow::bail!(output::usage(format!(
            "the folder {} does not exist; create it first (mkdir -p {0}) or give -o another path",
            parent.display()
        )));
    }
    let larder = home.larder()?;
    let bars = Bars::new();
    let mut stdout;
    let to = match path {
        Some(path) => GetTo::Path { path, link: args.link },
        None => {
            stdout = std::io::stdout().lock();
            GetTo::Writer(&mut stdout)
        }
    };
    tracing::debug!("tiers to ask, in order: local{}", remote_names(&larder));
    let (digest, delivery) = larder.get(&target, to, args.local, &bars)?;
    let how = match delivery {
        larder::Delivery::Copied => "copied",
        larder::Delivery::Reflinked => "reflinked",
        larder::Delivery::Hardlinked => "hardlinked (read-only)",
    };
    let what = match &target {
        larder::Target::Digest(_) => digest.to_string(),
        larder::Target::Key(key) => format!("{key} ({digest})"),
    };
    match path {
        Some(path) => tracing::info!("{what}: {how} to {}", path.display()),
        None => tracing::info!("{what}: written to standard output"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `, NAME, NAME` for the remotes behind the local tier, for the logs.
pub(super) fn remote_names(larder: &larder::Larder) -> String {
    larder.remotes().iter().map(|r| format!(", {}", r.name())).collect()
}
