//! The `larder` command: parses arguments, calls the library, prints.
//! Each subcommand lives in its own file under `commands/`.

mod commands;
mod output;
mod progress;
mod seeds;

use std::process::ExitCode;

use clap::Parser;

use commands::Command;

/// larder shares expensive things between processes and hosts: it fetches each
/// thing once, verifies it, shares it, and gives it back when nobody needs it.
#[derive(Debug, Parser)]
#[command(name = "larder", version, after_help = EXIT_CODES)]
struct Cli {
    /// Where larder keeps its data [env: LARDER_HOME; default: the XDG cache folder]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<String>,

    /// The local store's capacity, like 20GiB or 10GB [env: LARDER_CAPACITY]
    #[arg(long, global = true, value_name = "SIZE")]
    capacity: Option<String>,

    /// Log more (-v info, -vv debug, -vvv trace) [env: LARDER_LOG]
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  not found: `has` found nothing, or the digest, key or file named does not exist
  2  bad usage or input: unknown flag, malformed digest or size, bad configuration
  3  corrupt data: stored bytes did not match their digest (they were quarantined)
  4  no room: the store's capacity or the disk is full
  5  permission denied, or the larder home belongs to another user
  6  any other failure (I/O error, another process held the store too long)

The seed systems' command names are installed beside larder and take their own syntax:
  sc --use|--unuse [OPTION]... [LOADER]...     shared-cache's repositories
  crcache [-s NAME] status|acquire|run|cp|release   crcache's compute resources
  curd-server [-d] [-H HOST] [-p PORT] [-u USER_DB] DIRECTORY   curdling's cache server
  curd install -c URL [-u] PKG...              curdling's client
Each has its own --help.";

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called_as = argv.first().and_then(|a| seeds::Seed::called_as(a));
    let result = match called_as {
        // Called as a seed's command: its syntax, done by larder.
        Some(seed) => seeds::run(seed, argv).and_then(|run| match run {
            seeds::SeedRun::Larder(argv) => commands::run(Cli::parse_from(argv)),
            seeds::SeedRun::Done(code) => Ok(code),
        }),
        None => commands::run(Cli::parse()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            output::print_error(&err);
            ExitCode::from(output::exit_code(&err))
        }
    }
}
