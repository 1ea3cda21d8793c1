//! One file per subcommand: each defines its arguments and a `run` that calls
//! the library and prints.

mod config;
mod dir;
mod gc;
mod get;
mod has;
mod ls;
mod pin;
mod pool;
mod push;
mod put;
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
use larder::{Config, Store, config::Sources};

use crate::Cli;

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
    /// The remote tiers: list them, check that they work
    Remote(remote::Args),
    /// Compute pools (crcache): status, acquire, run, cp, release
    Pool(pool::Args),
    /// Print the effective configuration and where each value came from
    Config(config::Args),
}

/// What every command gets: the effective configuration, and the store on demand.
pub struct Context {
    pub config: Config,
}

impl Context {
    pub fn open_store(&self) -> Result<Store> {
        let store = Store::open(&self.config.home, self.config.capacity)?;
        Ok(store.with_verify_reads(self.config.verify_reads))
    }

    /// The store with the configured remotes behind it.
    pub fn open_larder(&self) -> Result<larder::Larder> {
        self.larder_with(self.open_store()?)
    }

    /// The same, without starting a background uploader: for the commands
    /// that send the queue themselves.
    pub fn open_larder_to_push(&self) -> Result<larder::Larder> {
        self.remotes_behind(self.open_store()?)
    }

    fn remotes_behind(&self, store: Store) -> Result<larder::Larder> {
        let remotes = self
            .config
            .remotes
            .iter()
            .map(|r| larder::remote::Tier::open(r, &self.config.http))
            .collect::<larder::Result<Vec<_>>>()?;
        Ok(larder::Larder::new(store, remotes))
    }

    /// `store` with the configured remotes behind it.
    pub fn larder_with(&self, store: Store) -> Result<larder::Larder> {
        let larder = self.remotes_behind(store)?;
        // Uploads owed from an earlier run (a crash, a reboot, a remote that
        // was down) are taken up again by whichever command comes next.
        if larder.uploader_needed()? {
            start_uploading(self);
        }
        Ok(larder)
    }

    pub fn open_dirs(&self) -> Result<larder::Dirs> {
        Ok(larder::Dirs::open(&self.config.home)?
            .with_places(self.config.dirs.clone())
            .with_store_config(self.config.capacity, self.config.verify_reads)
            .with_downloads(self.config.http, self.config.remotes.clone()))
    }
}

/// Starts `larder push --queued --background`, detached, to send what the
/// write-back remotes are owed; it exits at once if one already runs.
pub fn start_uploading(ctx: &Context) {
    if std::env::var_os("LARDER_UPLOADER").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["push", "--queued", "--background"])
        .env("LARDER_HOME", &ctx.config.home)
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
    let mut sources = Sources::from_process()?;
    if let Some(home) = cli.home {
        sources = sources.flag("home", home, "--home");
    }
    if let Some(capacity) = cli.capacity {
        sources = sources.flag("capacity", capacity, "--capacity");
    }
    if let Command::Serve(args) = &cli.command
        && args.debug()
    {
        sources = sources.flag("log", "debug", "serve -d");
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
    let config = Config::load(&sources)?;
    init_logging(&config.log);
    for name in &config.unknown_env {
        let known: Vec<String> =
            larder::config::KEYS.iter().map(|k| format!("LARDER_{}", k.to_uppercase())).collect();
        tracing::warn!(
            "{name} is not a larder setting and is ignored (known: {})",
            known.join(", ")
        );
    }
    let ctx = Context { config };
    match cli.command {
        Command::Put(args) => put::run(&ctx, args),
        Command::Push(args) => push::run(&ctx, args),
        Command::Remote(args) => remote::run(&ctx, args),
        Command::Pool(args) => pool::run(&ctx, args, cli.verbose),
        Command::Get(args) => get::run(&ctx, args),
        Command::Has(args) => has::run(&ctx, args),
        Command::Rm(args) => rm::run(&ctx, args),
        Command::Pin(args) => pin::run(&ctx, args, true),
        Command::Unpin(args) => pin::run(&ctx, args, false),
        Command::Ls(args) => ls::run(&ctx, args),
        Command::Stats(args) => stats::run(&ctx, args),
        Command::Gc(args) => gc::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::Use(args) => use_dir::run(&ctx, args),
        Command::Unuse(args) => unuse::run(&ctx, args),
        Command::Dir(args) => dir::run(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, args),
        Command::Wheels(args) => wheels::run(&ctx, args),
        Command::Config(args) => config::run(&ctx, args),
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
