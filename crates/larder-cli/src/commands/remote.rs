use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::Context;
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

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Ls { json } => {
            let remotes = &ctx.config.remotes;
            if json {
                let rows = remotes
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "url": larder::remote::redact(&r.url),
                            "mode": r.mode.name(),
                            "endpoint": r.endpoint,
                            "region": r.region,
                        })
                    })
                    .collect();
                output::print_json(&serde_json::Value::Array(rows))?;
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
            for name in &names {
                if !ctx.config.remotes.iter().any(|r| &r.name == name) {
                    let known: Vec<&str> =
                        ctx.config.remotes.iter().map(|r| r.name.as_str()).collect();
                    return Err(larder::Error::new(
                        larder::ErrorKind::NotFound,
                        format!(
                            "no remote is named {name}; the configured ones: {}",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    )
                    .into());
                }
            }
            let mut results = Vec::new();
            for config in &ctx.config.remotes {
                if !names.is_empty() && !names.contains(&config.name) {
                    continue;
                }
                let verdict = larder::remote::Tier::open(config, &ctx.config.http)
                    .map_err(|e| e.to_string())
                    .and_then(|tier| tier.check());
                results.push((config, verdict));
            }
            let failed = results.iter().any(|(_, v)| v.is_err());
            if json {
                let rows = results
                    .iter()
                    .map(|(r, v)| {
                        json!({
                            "name": r.name,
                            "url": larder::remote::redact(&r.url),
                            "ok": v.is_ok(),
                            "error": v.as_ref().err(),
                        })
                    })
                    .collect();
                output::print_json(&serde_json::Value::Array(rows))?;
            } else {
                let rows: Vec<Vec<String>> = results
                    .iter()
                    .map(|(r, v)| {
                        vec![
                            r.name.clone(),
                            larder::remote::redact(&r.url),
                            match v {
                                Ok(()) => "ok".to_string(),
                                Err(e) => e.clone(),
                            },
                        ]
                    })
                    .collect();
                output::print_table(&["REMOTE", "URL", "RESULT"], &rows)?;
            }
            Ok(if failed { ExitCode::from(6) } else { ExitCode::SUCCESS })
        }
    }
}
