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

/// What `remote ls` and `remote check` say when there is no remote.
const NO_REMOTES: &str = "no remotes are configured; add one as a [[remote]] table (name = \"team\", url = \"http://cache:8000\") in ~/.config/larder/config.toml or ./.larder/config.toml (see the README's Remote tiers)";

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let json = match &args.command {
        Command::Ls { json } | Command::Check { json, .. } => *json,
    };
    // Naming a remote that does not exist is an error, said below.
    let names_given = matches!(&args.command, Command::Check { names, .. } if !names.is_empty());
    if home.config().remotes.is_empty() && !json && !names_given {
        println!("{NO_REMOTES}");
        return Ok(ExitCode::SUCCESS);
    }
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
            // The first failure's exit code, as for any other error of its kind.
            Ok(match results.iter().find(|r| !r.ok) {
                Some(failed) => ExitCode::from(output::exit_code_of(
                    failed.kind.unwrap_or(larder::ErrorKind::Io),
                )),
                None => ExitCode::SUCCESS,
            })
        }
    }
}
