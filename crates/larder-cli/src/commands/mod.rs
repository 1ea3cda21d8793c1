//! One file per subcommand: each defines its arguments and a `run` that calls
//! the library and prints. The library's `Home` is the one composition root:
//! commands get their store, tiers, directories and pools from it.

mod config;
mod coordinator_agent;
mod dir;
mod docs;
mod gc;
mod get;
mod has;
mod init;
mod ls;
mod pin;
pub mod pool;
mod push;
mod put;
mod pypi;
mod remote;
mod rm;
mod serve;
mod stats;
mod unuse;
mod use_dir;
mod verify;
mod wheels;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use larder::coord::HostAgent;
use larder::{Config, Home, config::Sources};

use crate::Cli;

/// `--capacity`, on the commands that use the local store.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// The local store's capacity, like 20GiB or 10GB [env: LARDER_CAPACITY]
    #[arg(long, value_name = "SIZE")]
    pub capacity: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store files and print their digests (`-` reads standard input)
    Put(put::Args),
    /// Send everything the local tier holds to the remotes that take writes
    Push(push::Args),
    /// Write a stored blob to a file or standard output, verified
    Get(get::Args),
    /// Exit 0 if the store holds a digest or key, 1 if not
    Has(has::Args),
    /// Remove blobs or keys
    Rm(rm::Args),
    /// Pin blobs so eviction never removes them
    Pin(pin::Args),
    /// Unpin blobs
    Unpin(pin::Args),
    /// List what the store holds, most recently used first
    Ls(ls::Args),
    /// Show entries, bytes used, capacity, usage ratio, hits and misses
    Stats(stats::Args),
    /// Evict least-recently-used unpinned blobs down to a size
    Gc(gc::Args),
    /// Re-hash every blob; quarantine corrupt ones; with --repair, rebuild the index
    Verify(verify::Args),
    /// Hold a shared directory (built from a recipe, or a scratch directory) and print its path
    Use(use_dir::Args),
    /// Release a directory `larder use` gave this script; the last release deletes it
    Unuse(unuse::Args),
    /// Shared directories: ls, show, lock, unlock, meta, rm
    Dir(dir::Args),
    /// Serve the store over HTTP: Bazel, ccache, Gradle, sccache (WebDAV), pip, uv, twine and
    /// larder clients
    Serve(serve::Args),
    /// Python wheels: install from a larder server, building and uploading what it lacks
    Wheels(wheels::Args),
    /// The package index `larder serve` keeps: remove, yank and unyank releases and files
    Pypi(pypi::Args),
    /// The remote tiers: list them, check that they work
    Remote(remote::Args),
    /// Compute pools (crcache): status, acquire, run, cp, release
    Pool(pool::Args),
    /// Print the effective configuration and where each value came from
    Config(config::Args),
    /// Create the home; with --shared-group, share it with a Unix group's users
    Init(init::Args),
    /// Print the completion script of a shell: bash, zsh, fish, elvish or powershell
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one per command with --dir
    Man(docs::ManArgs),
    /// Renew this host's leases at a Redis coordinator (started by larder itself)
    #[command(hide = true)]
    CoordinatorAgent(coordinator_agent::Args),
}

/// What `text` on the command line names: a digest, a key, or a prefix of a
/// digest that one blob of the local store alone has (as `larder ls` prints).
fn target(home: &Home, text: &str) -> Result<larder::Target> {
    match larder::Target::parse(text) {
        Ok(target) => Ok(target),
        Err(_) => {
            let store = home.store()?;
            let target = store.parse_target(text)?;
            store.close()?;
            Ok(target)
        }
    }
}

impl Command {
    /// The `--capacity` given to the command, on those that take one.
    fn capacity(&self) -> Option<&str> {
        let store = match self {
            Command::Put(a) => &a.store,
            Command::Push(a) => &a.store,
            Command::Get(a) => &a.store,
            Command::Has(a) => &a.store,
            Command::Rm(a) => &a.store,
            Command::Pin(a) | Command::Unpin(a) => &a.store,
            Command::Ls(a) => &a.store,
            Command::Stats(a) => &a.store,
            Command::Gc(a) => &a.store,
            Command::Verify(a) => &a.store,
            Command::Use(a) => &a.store,
            Command::Serve(a) => &a.store,
            _ => return None,
        };
        store.capacity.as_deref()
    }
}

/// Starts `larder push --queued --background` for the home at `home`,
/// detached, to send what the write-back remotes are owed; it exits at once
/// if one already runs. The library decides when (see `Home::with_uploader`).
fn start_uploading(home: &std::path::Path) {
    if std::env::var_os("LARDER_UPLOADER").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["push", "--queued", "--background"])
        .env("LARDER_HOME", home)
        .env("LARDER_UPLOADER", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Its own session: the shell's job control and Ctrl-C leave it alone.
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot start uploading in the background: {e}"),
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    // Made from the command line's definitions alone: no home, no settings.
    match cli.command {
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
        command => run_in_home(Cli { command, ..cli }),
    }
}

fn run_in_home(cli: Cli) -> Result<ExitCode> {
    let mut sources = Sources::from_process()?;
    if let Some(home) = cli.home {
        sources = sources.flag("home", home, "--home");
    }
    if let Some(capacity) = cli.command.capacity().or(cli.capacity.as_deref()) {
        sources = sources.flag("capacity", capacity, "--capacity");
    }
    if let Command::Serve(args) = &cli.command
        && args.debug()
    {
        sources = sources.flag("log", "debug", "serve -d");
    }
    // Flags that are settings, so `larder config` and the library see them.
    if let Command::Get(args) = &cli.command
        && args.verify()
    {
        sources = sources.flag("verify_reads", "true", "get --verify");
    }
    if let Command::Use(args) = &cli.command
        && let Some(dirs) = args.dirs()
    {
        sources = sources.flag("dirs", dirs, "use --dirs");
    }
    let pool_status = matches!(&cli.command, Command::Pool(args) if args.is_status());
    if cli.verbose > 0 && !pool_status {
        let level = match cli.verbose {
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        sources = sources.flag("log", level, "-v");
    }
    let home = &open_home(&sources)?;
    match cli.command {
        Command::Put(args) => put::run(home, args),
        Command::Push(args) => push::run(home, args),
        Command::Remote(args) => remote::run(home, args),
        Command::Pool(args) => pool::run(home, args, cli.verbose),
        Command::Get(args) => get::run(home, args),
        Command::Has(args) => has::run(home, args),
        Command::Rm(args) => rm::run(home, args),
        Command::Pin(args) => pin::run(home, args, true),
        Command::Unpin(args) => pin::run(home, args, false),
        Command::Ls(args) => ls::run(home, args),
        Command::Stats(args) => stats::run(home, args),
        Command::Gc(args) => gc::run(home, args),
        Command::Verify(args) => verify::run(home, args),
        Command::Use(args) => use_dir::run(home, args),
        Command::Unuse(args) => unuse::run(home, args),
        Command::Dir(args) => dir::run(home, args, cli.verbose),
        Command::Serve(args) => serve::run(home, args),
        Command::Wheels(args) => wheels::run(home, args),
        Command::Pypi(args) => pypi::run(home, args),
        Command::Config(args) => config::run(home, args),
        Command::Init(args) => init::run(home, args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
        Command::CoordinatorAgent(args) => coordinator_agent::run(home, args),
    }
}

/// The home `sources` describe, with logging set up as they say: what every
/// command (and every seed's command name) works on.
pub fn open_home(sources: &Sources) -> Result<Home> {
    let config = Config::load(sources)?;
    init_logging(&config.log);
    for name in &config.unknown_env {
        let known: Vec<String> =
            larder::config::KEYS.iter().map(|k| format!("LARDER_{}", k.to_uppercase())).collect();
        tracing::warn!(
            "{name} is not a larder setting and is ignored (known: {})",
            known.join(", ")
        );
    }
    Ok(Home::new(config).with_uploader(start_uploading).with_coordinator_agent(coordinator_agent()))
}

/// Who renews this host's leases at a Redis coordinator: `larder
/// coordinator-agent`, started detached when the host first holds something,
/// since the command that took a hold (`larder use` for a shell) exits
/// long before the hold ends.
fn coordinator_agent() -> HostAgent {
    match std::env::current_exe() {
        Ok(exe) => HostAgent::Command(vec![exe.into(), "coordinator-agent".into()]),
        Err(e) => {
            tracing::warn!(
                "cannot find larder's own program ({e}); holds at a Redis coordinator last while the command runs"
            );
            HostAgent::Thread
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}
