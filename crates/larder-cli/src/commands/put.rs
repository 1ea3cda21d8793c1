use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use larder::{Home, Put};

use crate::output;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to store; `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Bind this key to the blob (one file only)
    #[arg(long)]
    key: Option<String>,
    /// Pin the blob so eviction never removes it
    #[arg(long)]
    pin: bool,
    /// Send it to every remote that takes writes now, write-back ones too,
    /// and fail if one cannot take it (write-through remotes get every put
    /// anyway; write-back ones otherwise get it in the background)
    #[arg(long)]
    upload: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let stdin = Path::new("-");
    let reads_stdin = args.files.iter().any(|f| f == stdin);
    if reads_stdin && args.files.len() > 1 {
        anyhow::bail!(output::usage(
            "`-` (standard input) must be the only file when given; put other files in another call"
        ));
    }
    let put = Put { key: args.key, pin: args.pin, upload: args.upload };
    let larder = home.larder()?;
    let bars = Bars::new();
    let results = if reads_stdin {
        vec![larder.put_stream(&mut std::io::stdin().lock(), stdin, &put, &bars)?]
    } else {
        larder.put_paths(&args.files, &put, &bars)?
    };
    let mut failures = output::Failures::default();
    let mut stored = Vec::new();
    for result in results {
        match result {
            Ok(item) if args.json => stored.push(item),
            Ok(item) if args.files.len() == 1 => println!("{}", item.digest),
            Ok(item) => println!("{}  {}", item.digest, item.file.display()),
            Err(e) => failures.report(e),
        }
    }
    if args.json {
        output::print_json(&stored)?;
    }
    // Starts the background uploader if write-back remotes are owed.
    larder.close_local()?;
    Ok(failures.exit_code())
}
