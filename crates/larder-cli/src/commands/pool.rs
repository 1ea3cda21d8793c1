use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use larder::Home;
use larder::coord::Holder;
use larder::pool::{Acquire, PoolReport, ReleaseOutcome, SourceStatus};

use crate::output;

#[derive(Debug, clap::Args)]
#[command(after_help = SOURCES)]
pub struct Args {
    #[command(subcommand)]
    command: PoolCommand,
}

const SOURCES: &str = "\
Sources are folders sources/NAME holding a source.conf (crcache's format), looked up under
~/.config/larder, ./.larder, ~/.config/crcache and ./.crcache; the first definition wins.
A source `local` (this host) is always there.

  [DEFAULT]
  type=ssh              ; local, ssh, command or pool
  ssh_host=build1       ; ssh: a host, or an alias of ~/.ssh/config
  reserve=1             ; keep released instances while there are at most this many
  maximum=3             ; never more instances than this (0: no limit)
  concurrency=0         ; jobs per instance (0: probe with nproc)
  sources=a,b           ; pool: its members
  provision=…           ; command: make $INSTANCE      run=…  run \"$@\" on $INSTANCE
  discard=…             ; command: throw $INSTANCE away
  timeout=10m           ; how long provisioning, hooks and discarding may take

Executable files in provision.d and discard.d beside source.conf run (as run-parts runs them)
after an instance is made and before it is thrown away, with its name as $1.";

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// Show sources: cached and in-use instances, and the maximum
    Status {
        /// Show pools with their members
        #[arg(short = 't', long)]
        tree: bool,
        /// Also list every instance with its state and holder
        #[arg(short = 'a', long)]
        all: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Only these sources
        #[arg(value_name = "SOURCE")]
        sources: Vec<String>,
    },
    /// Check instances out for use and print their names
    Acquire {
        /// The source to take them from
        #[arg(short = 's', long, default_value = "local")]
        source: String,
        /// How many, all or none
        #[arg(short = 'n', long, value_name = "COUNT")]
        count: Option<usize>,
        /// How many (as crcache's `acquire N`)
        #[arg(value_name = "COUNT", conflicts_with = "count")]
        count_arg: Option<usize>,
        /// Wait this long for room when the source is at its maximum, like 30s or 10m
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
        /// Hold them under this name, not as the calling process; the hold lasts --ttl
        #[arg(long, value_name = "NAME")]
        holder: Option<String>,
        /// How long a --holder hold lasts
        #[arg(long, value_name = "DURATION", requires = "holder", default_value = "1h")]
        ttl: String,
        /// Print JSON (names, sources and concurrency)
        #[arg(long)]
        json: bool,
    },
    /// Run a command on an instance, passing its output and exit status through
    Run {
        /// The instance
        #[arg(short = 's', long = "instance", value_name = "INSTANCE")]
        instance: String,
        /// The command and its arguments; none for a shell
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Copy files or folders into, out of or between instances: [INSTANCE:]SRC [INSTANCE:]DST
    Cp {
        /// What to copy: a path here, or INSTANCE:PATH
        #[arg(value_name = "[INSTANCE:]SRC")]
        from: String,
        /// Where to: a path here, or INSTANCE:PATH (into it, if it is a folder)
        #[arg(value_name = "[INSTANCE:]DST")]
        to: String,
    },
    /// Return instances: kept up to the reserve, else thrown away
    Release {
        /// Throw them away whatever the reserve
        #[arg(short = 'f', long)]
        discard: bool,
        /// Drop their records without running anything: for machines thrown away by hand, or
        /// whose discard keeps failing
        #[arg(long, conflicts_with = "discard")]
        forget: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// The instances, as acquire printed their names
        #[arg(required = true, value_name = "INSTANCE")]
        instances: Vec<String>,
    },
}

impl Args {
    /// Whether this is `pool status`, whose `-v` (larder's global flag)
    /// shows each source in detail, as crcache's does, rather than logging.
    pub fn is_status(&self) -> bool {
        matches!(self.command, PoolCommand::Status { .. })
    }
}

/// `verbose` counts larder's global `-v`: `pool status -v` shows each
/// source's instances, reserve, maximum and last failure.
pub fn run(home: &Home, args: Args, verbose: u8) -> Result<ExitCode> {
    match args.command {
        PoolCommand::Status { tree, all, json, sources } => {
            status(home, tree, verbose > 0, all, json, &sources)
        }
        PoolCommand::Acquire { source, count, count_arg, wait, holder, ttl, json } => {
            let holder = match &holder {
                Some(id) => Holder::token(id, larder::time::parse_ttl(&ttl)?)?,
                // The calling shell or script holds them, so its death
                // returns them.
                None => Holder::caller()?,
            };
            let wait = wait.as_deref().map(larder::time::parse_duration).transpose()?;
            let request = Acquire { source, count: count.or(count_arg).unwrap_or(1), holder, wait };
            let acquired = home.pools()?.acquire(&request)?;
            if json {
                output::print_json(&acquired)?;
            } else {
                for a in &acquired {
                    println!("{}", a.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PoolCommand::Run { instance, command } => {
            let mut cmd = home.pools()?.command(&instance, &command)?;
            // larder becomes the command: its output, signals and exit
            // status are the command's own.
            use std::os::unix::process::CommandExt;
            let err = cmd.exec();
            let program = cmd.get_program().to_string_lossy().into_owned();
            Ok(output::cannot_run(&program, &format!(" for {instance}"), err, "check the command"))
        }
        PoolCommand::Cp { from, to } => {
            home.pools()?.copy(&from, &to)?;
            Ok(ExitCode::SUCCESS)
        }
        PoolCommand::Release { discard, forget, json, instances } => {
            let pools = home.pools()?;
            if forget {
                pools.forget(&instances)?;
                for name in &instances {
                    eprintln!("{name}: forgotten");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let released = pools.release(&instances, discard)?;
            if json {
                output::print_json(&released)?;
            } else {
                for r in &released {
                    let what = match r.outcome {
                        ReleaseOutcome::Cached => "cached",
                        ReleaseOutcome::Discarded => "discarded",
                        ReleaseOutcome::AlreadyCached => "was not in use",
                    };
                    eprintln!("{}: {what}", r.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status(
    home: &Home,
    tree: bool,
    verbose: bool,
    all: bool,
    json: bool,
    only: &[String],
) -> Result<ExitCode> {
    let report = home.pools()?.report(only, all)?;
    if json {
        output::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_status(&report, tree, verbose, Dialect::Larder)?;
    Ok(ExitCode::SUCCESS)
}

/// Whose words a status is printed in: larder's own (its tables' upper-case
/// headers), or crcache's, as its users' scripts read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Larder,
    Crcache,
}

/// Prints a pool status: a table of sources (with `tree`, each pool followed
/// by its members), or with `verbose` a block per source; then the
/// instances, if the report has them.
pub fn print_status(
    report: &PoolReport,
    tree: bool,
    verbose: bool,
    dialect: Dialect,
) -> Result<()> {
    let crcache = dialect == Dialect::Crcache;
    let shown: Vec<&SourceStatus> = report.sources.iter().collect();
    let max = |s: &SourceStatus| s.maximum.map_or("-".to_string(), |m| m.to_string());
    if verbose {
        for (i, s) in shown.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("source: {}", s.source);
            println!("cached: {}", s.cached.join(" "));
            println!("in-use: {}", s.in_use.join(" "));
            // crcache called the reserve its minimum.
            println!("{}: {}", if crcache { "minimum" } else { "reserve" }, s.reserve);
            println!("maximum: {}", max(s));
            if crcache {
                continue;
            }
            println!("type: {}", s.kind);
            if !s.members.is_empty() {
                println!("sources: {}", s.members.join(","));
            }
            println!(
                "concurrency: {}",
                s.concurrency.map_or("probed".to_string(), |c| c.to_string())
            );
            println!("defined in: {}", s.origin);
            if let Some(f) = &s.last_failure {
                println!(
                    "last failure: {} ({}): {}",
                    f.instance,
                    larder::time::format_utc(f.at / 1000),
                    f.error
                );
            }
        }
    } else {
        let row = |s: &SourceStatus| {
            vec![s.source.clone(), s.cached.len().to_string(), s.in_use.len().to_string(), max(s)]
        };
        let mut rows = Vec::new();
        if tree {
            // Sources no shown pool contains first, each pool followed by
            // its members; then the members.
            let member_of_shown =
                |name: &str| shown.iter().any(|p| p.members.iter().any(|m| m == name));
            for s in shown.iter().filter(|s| !member_of_shown(&s.source)) {
                rows.push(row(s));
                for m in &s.members {
                    rows.push(vec![format!("+ {m}"), String::new(), String::new(), String::new()]);
                }
            }
            for s in shown.iter().filter(|s| member_of_shown(&s.source)) {
                rows.push(row(s));
                for m in &s.members {
                    rows.push(vec![format!("+ {m}"), String::new(), String::new(), String::new()]);
                }
            }
        } else {
            rows = shown.iter().map(|s| row(s)).collect();
        }
        let headers = ["source", "cached", "in-use", "max"];
        let headers = dialect.headers(&headers);
        output::print_table(&headers.iter().map(String::as_str).collect::<Vec<_>>(), &rows)?;
    }
    if let Some(listed) = &report.instances {
        println!();
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.path.join("/"),
                    i.state.to_string(),
                    i.holder.clone().unwrap_or_default(),
                    if i.concurrency == 0 { "-".into() } else { i.concurrency.to_string() },
                    larder::time::format_utc(i.since / 1000),
                ]
            })
            .collect();
        let headers = ["instance", "source", "state", "holder", "concurrency", "since"];
        let headers = dialect.headers(&headers);
        output::print_table(&headers.iter().map(String::as_str).collect::<Vec<_>>(), &rows)?;
    }
    Ok(())
}

impl Dialect {
    fn headers(self, words: &[&str]) -> Vec<String> {
        words
            .iter()
            .map(|w| match self {
                Dialect::Crcache => w.to_string(),
                Dialect::Larder => w.to_uppercase(),
            })
            .collect()
    }
}
