use std::process::ExitCode;

use anyhow::Result;
use larder::Home;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List the configured remotes, in the order reads ask them
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check that remotes work: read, and (if they take writes) write, list
    /// and remove under a fresh `conformance-*` prefix, then clean up
    Check {
        /// Remotes to check [default: all]
        names: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Ls { json } => {
            let remotes = &home.config().remotes;
            if json {
                output::print_json(remotes)?;
            } else {
                let rows: Vec<Vec<String>> = remotes
                    .iter()
                    .map(|r| {
                        vec![r.name.clone(), larder::remote::redact(&r.url), r.mode.name().into()]
                    })
                    .collect();
                output::print_table(&["NAME", "URL", "MODE"], &rows)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { names, json } => {
            let results = home.check_remotes(&names)?;
            if json {
                output::print_json(&results)?;
            } else {
                let rows: Vec<Vec<String>> = results
                    .iter()
                    .map(|r| {
                        let verdict = r.error.clone().unwrap_or_else(|| "ok".to_string());
                        vec![r.name.clone(), r.url.clone(), verdict]
                    })
                    .collect();
                output::print_table(&["REMOTE", "URL", "RESULT"], &rows)?;
            }
            let failed = results.iter().any(|r| !r.ok);
            Ok(if failed { ExitCode::from(6) } else { ExitCode::SUCCESS })
        }
    }
}
