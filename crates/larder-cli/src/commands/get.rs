use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use larder::{GetTo, Home, Target};

use crate::output;
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

impl Args {
    /// Whether to re-hash (the `verify_reads` setting, for this command).
    pub fn verify(&self) -> bool {
        self.verify
    }
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let target = Target::parse(&args.target)?;
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
    larder.get(&target, to, args.local, &bars)?;
    Ok(ExitCode::SUCCESS)
}
