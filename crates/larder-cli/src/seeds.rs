//! The seed systems' own command names: `sc` (shared-cache), `crcache`,
//! `curd-server` and `curd` (curdling). The `larder` binary answers to them
//! when called by those names (the tiny programs of `src/bin/` exec it so),
//! taking their command lines as the seeds' documents write them and doing
//! the work with larder. Each has its own `--help`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use larder::DirSpec;
use larder::config::{Origin, Sources};
use larder::coord::Holder;
use larder::pool::{Acquire, InstanceStatus};
use larder::recipe::Recipe;

use crate::commands::{self, pool::Dialect};
use crate::output;

/// A seed system whose command name larder answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// shared-cache's `sc --use` / `sc --unuse`.
    Sc,
    /// crcache's `crcache status|acquire|run|cp|release`.
    Crcache,
    /// curdling's `curd-server DIRECTORY`.
    CurdServer,
    /// curdling's `curd install -c URL [-u] PKG…`.
    Curd,
}

impl Seed {
    /// The seed `argv0` names, if any (`larder` is none).
    pub fn called_as(argv0: &OsStr) -> Option<Seed> {
        let name = Path::new(argv0).file_name()?.to_str()?;
        [Seed::Sc, Seed::Crcache, Seed::CurdServer, Seed::Curd]
            .into_iter()
            .find(|seed| seed.name() == name)
    }

    /// Its command's name.
    pub fn name(self) -> &'static str {
        match self {
            Seed::Sc => "sc",
            Seed::Crcache => "crcache",
            Seed::CurdServer => "curd-server",
            Seed::Curd => "curd",
        }
    }
}

/// What a seed's command line comes to.
pub enum SeedRun {
    /// The same as this `larder` command line.
    Larder(Vec<OsString>),
    /// Done here, with this exit status.
    Done(ExitCode),
}

/// Reads `argv` as `seed` writes it.
pub fn run(seed: Seed, argv: Vec<OsString>) -> Result<SeedRun> {
    match seed {
        Seed::Sc => sc(Sc::parse_from(argv)).map(SeedRun::Done),
        Seed::Crcache => crcache(Crcache::parse_from(argv)),
        Seed::CurdServer => {
            let args = CurdServer::parse_from(argv);
            let mut larder: Vec<OsString> = vec!["larder".into(), "serve".into()];
            if args.debug {
                larder.push("-d".into());
            }
            larder.extend([
                "-H".into(),
                args.host.into(),
                "-p".into(),
                args.port.to_string().into(),
            ]);
            if let Some(db) = args.user_db {
                larder.extend(["-u".into(), db.into_os_string()]);
            }
            larder.push(args.directory.into_os_string());
            Ok(SeedRun::Larder(larder))
        }
        Seed::Curd => curd(Curd::parse_from(argv)),
    }
}

/// The home every seed works on: configuration as larder reads it.
fn home() -> Result<larder::Home> {
    commands::open_home(&Sources::from_process()?)
}

// ---------------------------------------------------------------- sc

/// shared-cache on larder: register (`--use`) and unregister (`--unuse`) use
/// of a repository built by a stack of loaders, held by the calling script.
/// The first user builds it; the last to unregister deletes it.
#[derive(Debug, Parser)]
#[command(
    name = "sc",
    version,
    after_help = "Loaders: http:URL, dirac:LFN (and larder's file:, s3://, larder:, exec:); \
                  transformations: md5:SUM, tar (and larder's sha256:, unzip, gunzip, …).\n\
                  Example:\n  sc --use --name=test-repo --size=10GB http:https://…/vsg-0.2.0.tar.gz md5:7b9d… tar\n  \
                  sc --unuse --name=test-repo --size=10GB http:https://…/vsg-0.2.0.tar.gz md5:7b9d… tar\n\
                  larder keeps the repository's state in its coordinator, not in a file of the repository."
)]
struct Sc {
    /// Register use of the repository, creating and loading it if needed
    #[arg(long = "use")]
    use_: bool,
    /// Unregister; the last user deletes the repository
    #[arg(long)]
    unuse: bool,
    /// Print the repository's folder
    #[arg(long)]
    location: bool,
    /// The repository's name: its folder is BASE/NAME
    #[arg(short, long)]
    name: Option<String>,
    /// Free space it needs, like 10GB (decimal units: B, kB, MB, GB, k, M, G)
    #[arg(short, long)]
    size: Option<String>,
    /// Candidate base folders, the first with --size free [default: larder's `dirs` setting
    /// if set, else /tmp:/var/tmp]
    #[arg(short, long = "directories", value_name = "DIRLIST")]
    directories: Option<String>,
    /// Accepted for shared-cache's scripts; larder keeps no state file in the repository
    #[arg(short, long, value_name = "FILE")]
    file: Option<String>,
    /// If the repository is built here, download again what the store kept from earlier
    /// downloads
    #[arg(long)]
    refresh: bool,
    /// The loader stack, bottom first
    #[arg(value_name = "LOADER")]
    loaders: Vec<String>,
}

/// shared-cache's sizes: a number with an optional decimal unit.
fn sc_size(text: &str) -> Result<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor: u64 = match unit {
        "" | "B" => 1,
        "k" | "kB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if factor > 0 => Ok(n.saturating_mul(factor)),
        _ => Err(output::usage(format!(
            "--size {text} is not a size; write a number with B, kB, MB, GB, k, M or G, like 10GB"
        ))
        .into()),
    }
}

fn sc(args: Sc) -> Result<ExitCode> {
    if !(args.use_ || args.unuse || args.location) {
        return Err(output::usage("say what to do: --use, --unuse or --location").into());
    }
    let _ = &args.file;
    if args.loaders.is_empty() && args.name.is_none() {
        // shared-cache names a repository by its loaders or by --name.
        return Err(output::usage(
            "name the repository: give its loader stack (sc --use https://host/a.tar.gz tar) or --name=NAME",
        )
        .into());
    }
    let size = args.size.as_deref().map(sc_size).transpose()?.unwrap_or(0);
    let home = home()?;
    let config = home.config();
    let configured = config.settings.iter().any(|s| s.key == "dirs" && s.origin != Origin::Default);
    let places: Vec<PathBuf> = match &args.directories {
        Some(list) => list.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect(),
        None if configured => config.dirs.clone(),
        None => vec![PathBuf::from("/tmp"), PathBuf::from("/var/tmp")],
    };
    let dirs = home.dirs()?.with_places(places.clone());
    let recipe = Recipe::parse(&args.loaders)?;
    let spec = DirSpec { name: args.name.clone(), size, recipe, refresh: args.refresh };
    // The calling script is the user, as shared-cache registered its shell.
    let holder = Holder::caller()?;
    let mut path = None;
    if args.use_ {
        let record = dirs.use_dir(&spec, &holder, &crate::progress::Bars::new())?;
        path = Some(PathBuf::from(record.path));
    }
    if args.location {
        let path = match path.clone() {
            Some(p) => p,
            None => match dirs.show(&spec.resolve_name()?) {
                Ok(record) => PathBuf::from(record.path),
                Err(_) => places.first().cloned().unwrap_or_default().join(spec.resolve_name()?),
            },
        };
        println!("{}", path.display());
    }
    if args.unuse {
        dirs.unuse_spec(&spec, &holder)?;
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- crcache

/// crcache on larder: obtain, use and discard compute resources from the
/// sources in ~/.config/crcache and ./.crcache (and larder's own folders).
#[derive(Debug, Parser)]
#[command(name = "crcache", version)]
struct Crcache {
    /// The source (acquire) or instance (run) to use
    #[arg(short, long, global = true, value_name = "NAME")]
    source: Option<String>,
    #[command(subcommand)]
    command: CrcacheCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CrcacheCommand {
    /// Details of sources and resources
    Status {
        /// Show pools with their members
        #[arg(short = 't', long)]
        tree: bool,
        /// One block per source, with its instances
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Also list every instance
        #[arg(short = 'a', long)]
        all: bool,
        /// Only these sources
        sources: Vec<String>,
    },
    /// Check compute resources out for use; prints their names
    Acquire {
        /// How many, all or none
        #[arg(default_value_t = 1)]
        count: usize,
    },
    /// Run a command on a checked-out resource: `run -s INSTANCE CMD…` or `run INSTANCE CMD…`
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Copy files into or out of a resource: [INSTANCE:]SRC [INSTANCE:]DST
    Cp { from: String, to: String },
    /// Return resources from use
    Release {
        /// Throw them away whatever the reserve
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        instances: Vec<String>,
    },
}

fn crcache(args: Crcache) -> Result<SeedRun> {
    let home = home()?;
    let pools = home.pools()?;
    match args.command {
        CrcacheCommand::Status { tree, verbose, all, sources } => {
            let report = pools.report(&sources, all)?;
            commands::pool::print_status(&report, tree, verbose, Dialect::Crcache)?;
        }
        CrcacheCommand::Acquire { count } => {
            let source = args.source.unwrap_or_else(|| "local".to_string());
            let request =
                Acquire { source: source.clone(), count, holder: Holder::caller()?, wait: None };
            let acquired: Vec<String> =
                pools.acquire(&request)?.into_iter().map(|a| a.name).collect();
            // As crcache's manual shows them: `pool-0`, the names `run`,
            // `cp` and `release` take.
            let mut names = crcache_names(&pools, &source, &acquired)?;
            names.sort();
            println!("{}", names.join(" "));
        }
        CrcacheCommand::Run { mut command } => {
            let instance = match args.source {
                Some(instance) => instance,
                None if !command.is_empty() => command.remove(0),
                None => {
                    return Err(
                        output::usage("name the instance: crcache run -s INSTANCE CMD…").into()
                    );
                }
            };
            let instance = crcache_instance(&pools, &instance)?;
            let mut larder: Vec<OsString> =
                vec!["larder".into(), "pool".into(), "run".into(), "-s".into(), instance.into()];
            larder.push("--".into());
            larder.extend(command.into_iter().map(OsString::from));
            return Ok(SeedRun::Larder(larder));
        }
        CrcacheCommand::Cp { from, to } => {
            let resolve = |spec: String| -> Result<String> {
                match spec.split_once(':') {
                    Some((instance, path)) if !instance.contains('/') => {
                        Ok(format!("{}:{path}", crcache_instance(&pools, instance)?))
                    }
                    _ => Ok(spec),
                }
            };
            pools.copy(&resolve(from)?, &resolve(to)?)?;
        }
        CrcacheCommand::Release { force, instances } => {
            let instances = instances
                .iter()
                .map(|i| crcache_instance(&pools, i))
                .collect::<Result<Vec<_>>>()?;
            pools.release(&instances, force)?;
        }
    }
    Ok(SeedRun::Done(ExitCode::SUCCESS))
}

/// The names crcache gives `acquired`, taken through `source`: `SOURCE-N`,
/// the Nth, from 0, of the instances taken through it, oldest first (what
/// [`crcache_instance`] reads back); an instance already named so keeps its
/// name.
fn crcache_names(
    pools: &larder::pool::Pools,
    source: &str,
    acquired: &[String],
) -> Result<Vec<String>> {
    let through = taken_through(&instances(pools)?, source);
    Ok(acquired
        .iter()
        .map(|name| match through.iter().position(|n| n == name) {
            Some(n) if !name.starts_with(&format!("{source}-")) => format!("{source}-{n}"),
            _ => name.clone(),
        })
        .collect())
}

/// Every instance the pools know of.
fn instances(pools: &larder::pool::Pools) -> Result<Vec<InstanceStatus>> {
    Ok(pools.report(&[], true)?.instances.unwrap_or_default())
}

/// The names of the instances taken through `source` (by it or by a pool
/// over it), oldest first.
fn taken_through(instances: &[InstanceStatus], source: &str) -> Vec<String> {
    let mut through: Vec<&InstanceStatus> = instances
        .iter()
        .filter(|i| i.path.first().map(String::as_str) == Some(source) || i.source == source)
        .collect();
    through.sort_by(|a, b| (a.since, &a.name).cmp(&(b.since, &b.name)));
    through.into_iter().map(|i| i.name.clone()).collect()
}

/// An instance as a crcache user names it: by its name, or as crcache's
/// manual writes them, `SOURCE-N` (or `SOURCEN`): the Nth, from 0, of the
/// instances taken through the source SOURCE, oldest first.
fn crcache_instance(pools: &larder::pool::Pools, name: &str) -> Result<String> {
    let instances = instances(pools)?;
    if instances.iter().any(|i| i.name == name) {
        return Ok(name.to_string());
    }
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (source, number) = name.split_at(name.len() - digits);
    let source = source.strip_suffix('-').unwrap_or(source);
    let Ok(number) = number.parse::<usize>() else { return Ok(name.to_string()) };
    let through = taken_through(&instances, source);
    Ok(through.get(number).map_or(name, String::as_str).to_string())
}

// ---------------------------------------------------------------- curdling

/// curdling's cache server on larder: a Python package index for pip, uv and
/// twine over the wheels in DIRECTORY, with htpasswd users.
#[derive(Debug, Parser)]
#[command(name = "curd-server", version, disable_help_flag = true)]
struct CurdServer {
    /// Show this help
    #[arg(short = 'h', long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Log every request
    #[arg(short, long)]
    debug: bool,
    /// Which interface to bind the server
    #[arg(short = 'H', long, default_value = "0.0.0.0")]
    host: String,
    /// Port number
    #[arg(short, long, default_value_t = 8000)]
    port: u16,
    /// An htpasswd file (bcrypt, {SHA}, $apr1$ or crypt-style hashes larder knows)
    #[arg(short, long = "user-db", value_name = "USER_DB")]
    user_db: Option<PathBuf>,
    /// The folder of wheels to serve
    directory: PathBuf,
}

/// curdling's client on larder.
#[derive(Debug, Parser)]
#[command(name = "curd", version)]
struct Curd {
    #[command(subcommand)]
    command: CurdCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CurdCommand {
    /// Install packages, from the cache server first, uploading what was built here with -u
    Install {
        /// The cache server, like http://user@cache:8000 (a password in the URL works, but
        /// `ps` shows it: prefer LARDER_PASSWORD or ~/.netrc)
        #[arg(short = 'c', long = "cache", value_name = "URL")]
        cache: Option<String>,
        /// Upload the wheels built here to the cache server
        #[arg(short, long)]
        upload: bool,
        /// A requirements file (repeatable)
        #[arg(short, long = "requirement", value_name = "FILE")]
        requirements: Vec<PathBuf>,
        /// Requirements, as pip takes them
        packages: Vec<String>,
    },
}

fn curd(args: Curd) -> Result<SeedRun> {
    let CurdCommand::Install { cache, upload, requirements, packages } = args.command;
    let Some(cache) = cache else {
        // Without a cache server, curdling installs from the usual index.
        let mut pip = std::process::Command::new("python3");
        pip.args(["-m", "pip", "install", "--disable-pip-version-check"]);
        for r in &requirements {
            pip.arg("-r").arg(r);
        }
        pip.args(&packages);
        let status = pip.status().map_err(|e| output::usage(format!("cannot run pip: {e}")))?;
        return Ok(SeedRun::Done(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)));
    };
    if packages.is_empty() && requirements.is_empty() {
        // Nothing to install: check that the server answers, as the
        // curdling example that only names it does.
        larder::wheels::check_server(&cache)?;
        eprintln!("{}: nothing to install", larder::remote::redact(&cache));
        return Ok(SeedRun::Done(ExitCode::SUCCESS));
    }
    let mut larder: Vec<OsString> =
        vec!["larder".into(), "wheels".into(), "install".into(), "-c".into(), cache.into()];
    if upload {
        larder.push("-u".into());
    }
    for r in requirements {
        larder.push("-r".into());
        larder.push(r.into_os_string());
    }
    larder.extend(packages.into_iter().map(OsString::from));
    // What the server lacks comes from the usual index, as curdling fell back
    // to PyPI: the one pip would use without larder.
    let usual = home()?.config().env.get("PIP_INDEX_URL").map(str::to_string);
    let usual = usual.unwrap_or_else(|| "https://pypi.org/simple/".to_string());
    larder.extend(["--".into(), "--extra-index-url".into(), usual.into()]);
    Ok(SeedRun::Larder(larder))
}
