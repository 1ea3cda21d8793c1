use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use larder::Home;
use larder::coord::Holder;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DirCommand,
}

#[derive(Debug, Subcommand)]
enum DirCommand {
    /// List shared directories
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one directory: path, state, holders, metadata
    Show {
        /// The directory's name (as `larder dir ls` lists them)
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Keep a directory after its last holder
    Lock {
        /// The directory's name (as `larder dir ls` lists them)
        name: String,
    },
    /// Let a directory go with its last holder (at once if nobody holds it)
    Unlock {
        /// The directory's name (as `larder dir ls` lists them)
        name: String,
    },
    /// Print a directory's metadata, after adding KEY=VALUE entries; with KEY alone, print
    /// that entry's value
    Meta {
        /// The directory's name (as `larder dir ls` lists them)
        name: String,
        /// Entries to add or replace (`id` and `created_at` are set for you and stay), or one
        /// KEY to print the value of
        #[arg(value_name = "KEY=VALUE|KEY")]
        entries: Vec<String>,
        /// Remove these entries
        #[arg(long = "rm", value_name = "KEY", conflicts_with = "entries")]
        remove: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Send a directory to a remote: its files' blobs (deduplicated) and a
    /// manifest; `larder use --name NAME --from-remote R` restores it elsewhere
    Push {
        /// The directory's name (as `larder dir ls` lists them)
        name: String,
        /// The remote to send it to [default: every remote that takes writes]
        #[arg(long)]
        remote: Option<String>,
        /// Keep the remote copy after the directory is deleted (an archive); without it,
        /// the remote copy goes with the directory
        #[arg(long)]
        keep: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a directory nobody holds (or anyway, with --force)
    Rm {
        /// The directory's name (as `larder dir ls` lists them)
        name: String,
        /// Delete it even if held or locked
        #[arg(long)]
        force: bool,
    },
}

pub fn run(home: &Home, args: Args, verbose: u8) -> Result<ExitCode> {
    let dirs = home.dirs()?;
    match args.command {
        DirCommand::Ls { json } => {
            let all = dirs.statuses()?;
            if json {
                output::print_json(&all)?;
            } else {
                if verbose > 0 {
                    println!("coordinator: {}", home.coordinator_name());
                }
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.state.to_string(),
                            holders_cell(&r.holders, verbose > 0),
                            if r.locked { "locked" } else { "" }.to_string(),
                            larder::size::format_size(r.size),
                            r.path.clone(),
                        ]
                    })
                    .collect();
                output::print_table(&["NAME", "STATE", "HOLDERS", "LOCK", "SIZE", "PATH"], &rows)?;
            }
        }
        DirCommand::Show { name, json } => {
            let r = dirs.status(&name)?;
            if json {
                output::print_json(&r)?;
            } else {
                println!("name:     {}", r.name);
                println!("path:     {}", r.path);
                // Hosts sharing a coordinator each keep a copy.
                if r.copies.len() > 1 || r.copies.keys().any(|h| r.copies[h] != r.path) {
                    println!("copies:   {}", r.copies.len());
                    for (host, path) in &r.copies {
                        println!("  {host}: {path}");
                    }
                }
                println!("state:    {}", r.detail);
                println!("size:     {}", larder::size::format_size(r.size));
                println!(
                    "recipe:   {}",
                    r.recipe.as_deref().unwrap_or("none (a scratch directory)")
                );
                println!("locked:   {}", if r.locked { "yes" } else { "no" });
                println!("created:  {}", larder::time::format_utc(r.created_at / 1000));
                println!("holders:  {}", r.holders.len());
                let now = larder::coord::now_ms();
                for h in &r.holders {
                    let expiry = match &h.holder {
                        Holder::Token { expires_at, .. } => {
                            format!(", expires in {}", age((expires_at - now).max(0) / 1000))
                        }
                        Holder::Process { .. } => String::new(),
                    };
                    println!("  {} (for {}{expiry})", h.holder, age((now - h.since).max(0) / 1000));
                }
                println!("metadata:");
                for (k, v) in &r.meta {
                    println!("  {k} = {v}");
                }
            }
        }
        DirCommand::Lock { name } => {
            dirs.set_locked(&name, true)?;
            println!("locked {name}");
        }
        DirCommand::Unlock { name } => match dirs.set_locked(&name, false)? {
            Some(_) => println!("unlocked {name}"),
            None => println!("unlocked {name}; nobody held it, so it was deleted"),
        },
        DirCommand::Meta { name, entries, remove, json } => {
            if let [key] = &entries[..]
                && !key.contains('=')
            {
                let r = dirs.show(&name)?;
                let Some(value) = r.meta.get(key) else {
                    anyhow::bail!(larder::Error::new(
                        larder::ErrorKind::NotFound,
                        format!(
                            "directory {name} has no metadata entry {key}; larder dir meta {name} lists them"
                        )
                    ));
                };
                if json {
                    output::print_json(value)?;
                } else {
                    println!("{value}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut pairs = Vec::new();
            for entry in &entries {
                let Some((k, v)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                    anyhow::bail!(output::usage(format!(
                        "`{entry}` is not KEY=VALUE; write entries like owner=alice"
                    )));
                };
                pairs.push((k.to_string(), v.to_string()));
            }
            let r = if !remove.is_empty() {
                dirs.remove_meta(&name, &remove)?
            } else if pairs.is_empty() {
                dirs.show(&name)?
            } else {
                dirs.insert_meta(&name, &pairs)?
            };
            if json {
                output::print_json(&r.meta)?;
            } else {
                let rows: Vec<Vec<String>> =
                    r.meta.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
                output::print_table(&["KEY", "VALUE"], &rows)?;
            }
        }
        DirCommand::Rm { name, force } => {
            dirs.remove(&name, force)?;
            println!("deleted {name}");
        }
        DirCommand::Push { name, remote, keep, json } => {
            let larder = home.larder()?;
            let progress = crate::progress::Bars::new();
            let pushed = larder.push_dir(&dirs, &name, remote.as_deref(), keep, &progress)?;
            larder.close_local()?;
            if json {
                output::print_json(&pushed)?;
            } else {
                println!(
                    "pushed {name} to {}: {} files, {}, {} blobs sent",
                    pushed.remotes.join(", "),
                    pushed.files,
                    larder::size::format_size(pushed.bytes),
                    pushed.sent
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds as people say them: 42s, 5m, 3h, 2d.
fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The holders of a directory in `dir ls`: how many, and on which hosts
/// (each holder, with `verbose`), since a coordinator shared by hosts lists
/// every host's.
fn holders_cell(holders: &[larder::HeldBy], verbose: bool) -> String {
    if holders.is_empty() {
        return "0".to_string();
    }
    let named: Vec<String> = if verbose {
        holders.iter().map(|h| h.holder.to_string()).collect()
    } else {
        let mut hosts: Vec<String> = Vec::new();
        for h in holders {
            let name = match &h.holder {
                larder::coord::Holder::Process { host, .. } => host.clone(),
                larder::coord::Holder::Token { id, .. } => format!("token {id}"),
            };
            if !hosts.contains(&name) {
                hosts.push(name);
            }
        }
        hosts
    };
    format!("{} ({})", holders.len(), named.join(", "))
}
