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
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    home: Option<String>,

    /// The local store's capacity, like 20GiB or 10GB (also an option of the commands
    /// that use the store) [env: LARDER_CAPACITY]
    #[arg(long, value_name = "SIZE", help_heading = GLOBAL)]
    capacity: Option<String>,

    /// Log more (-v info, -vv debug, -vvv trace) [env: LARDER_LOG]
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

/// The heading of the options every command takes, apart from its own.
const GLOBAL: &str = "Global options";

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  not found: `has` found nothing, or the digest, key or file named does not exist
  2  bad usage or input: unknown flag, malformed digest, size or recipe, bad configuration,
     a pinned entry removed without --force, an archive refused
  3  corrupt data: stored bytes or a download did not match their digest or checksum
  4  no room: the store's capacity or the disk is full, or a pool is at its maximum
  5  permission denied: the larder home belongs to another user, a remote refused the credentials
  6  any other failure (I/O error, another process held the store too long)
  126, 127  `use -- CMD`: CMD cannot run, or was not found; otherwise CMD's own status

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
        Some(seed) => {
            output::set_program(seed.name());
            seeds::run(seed, argv)
        }
        .and_then(|run| match run {
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
