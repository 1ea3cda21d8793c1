use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Result;
use larder::Home;
use larder::coord::Holder;
use larder::recipe::Recipe;

#[derive(Debug, clap::Args)]
#[command(after_help = RECIPES)]
pub struct Args {
    /// The directory's name; without one, a new scratch directory gets a fresh id and a
    /// recipe a name made from what it loads
    #[arg(long)]
    name: Option<String>,
    /// The space it needs, like 10GB: a new directory goes where this much is free, and
    /// a recipe may not unpack more
    #[arg(long, value_name = "SIZE")]
    size: Option<String>,
    /// Folders to create a new directory in, the first with enough space [config: dirs]
    #[arg(long, value_name = "DIR:DIR…")]
    dirs: Option<String>,
    /// Hold it under this name, not as the calling process: for holders on other hosts or
    /// scripts that outlive their shell. The hold lasts --ttl; using it again renews it
    #[arg(long, value_name = "NAME", conflicts_with = "command")]
    holder: Option<String>,
    /// How long a --holder hold lasts unless renewed, like 90s, 10m or 2h
    #[arg(long, value_name = "DURATION", requires = "holder", default_value = "1h")]
    ttl: String,
    /// Restore the scratch directory --name from this remote (sent there by larder dir
    /// push) if there is none of that name here
    #[arg(long, value_name = "REMOTE", requires = "name", conflicts_with = "recipe")]
    from_remote: Option<String>,
    /// If the directory is built here, download again what the store kept from earlier
    /// downloads (a directory already built is used as it is)
    #[arg(long)]
    refresh: bool,
    /// How to build it: loaders, each followed by its transforms (see below); none for a
    /// scratch directory
    #[arg(value_name = "RECIPE")]
    recipe: Vec<String>,
    /// Run this command with LARDER_DIR set to the directory, holding it until the command ends
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

const RECIPES: &str = "\
Recipes (shared-cache's loader stacks): each loader makes a file, and the transforms after it
apply to that file:
  loaders:    http:URL (or the URL alone)  s3://BUCKET/KEY  file:PATH  larder:DIGEST  dirac:LFN
              exec:COMMAND
  transforms: md5:HEX sha1:HEX sha256:HEX sha512:HEX blake3:HEX (checked while streaming)
              tar (gzip, bzip2, xz, zstd detected)  unzip  gunzip  unxz  unzstd
The first user builds the directory; the others wait and share it. Downloads are kept in the
store, so the same URL and checksum is downloaded once. An http download without a checksum is
checked with its server (a conditional request) whenever a directory is built from it, and its
sha256 is printed so that it can be pinned; --refresh downloads everything again.

Example:
  larder use --name=test-repo --size=10GB http:https://example.org/a.tar.gz md5:7b9d… tar";

impl Args {
    /// The folders `--dirs` gives (the `dirs` setting, for this command).
    pub fn dirs(&self) -> Option<&str> {
        self.dirs.as_deref()
    }
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let size = args.size.as_deref().map(larder::size::parse_size).transpose()?.unwrap_or(0);
    let dirs = home.dirs()?;
    // Without a command, the holder is the calling process (the shell or job
    // script), so its `larder unuse` releases the directory, and so does its
    // death. With one, larder holds it while the command runs.
    let holder = if let Some(id) = &args.holder {
        let ttl = larder::time::parse_ttl(&args.ttl)?;
        Holder::token(id, ttl)?
    } else if args.command.is_empty() {
        Holder::caller()?
    } else {
        Holder::current_process()
    };
    let record = if let (Some(remote), Some(name)) = (&args.from_remote, &args.name) {
        let larder = home.larder()?;
        let (record, _) = larder.restore_dir(
            &dirs,
            name,
            Some(remote),
            &holder,
            &crate::progress::Bars::new(),
        )?;
        larder.close_local()?;
        record
    } else {
        let recipe = Recipe::parse(&args.recipe)?;
        let spec = larder::DirSpec { name: args.name.clone(), size, recipe, refresh: args.refresh };
        dirs.use_dir(&spec, &holder, &crate::progress::Bars::new())?
    };
    if args.command.is_empty() {
        println!("{}", record.path);
        return Ok(ExitCode::SUCCESS);
    }
    let status = run_forwarding_signals(
        Command::new(&args.command[0]).args(&args.command[1..]).env("LARDER_DIR", &record.path),
    );
    dirs.unuse(&record.name, &holder)?;
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let fix = "check the command after --";
            return Ok(crate::output::cannot_run(&args.command[0], "", e, fix));
        }
    };
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: report it as a shell would.
        None => ExitCode::from(128u8.saturating_add(signal_of(&status))),
    })
}

/// The command's pid while it runs, for the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(child, signal);
        }
    }
}

/// Runs `cmd` to its end. Interrupts and terminations meant for larder go to
/// the command instead, so that larder outlives it and releases the directory
/// at once, rather than leaving that to whoever looks next.
fn run_forwarding_signals(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];
    // A handler (unlike an ignored signal) is reset by exec, so the command
    // itself keeps the default behaviour.
    let handler = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let previous: Vec<libc::sighandler_t> = SIGNALS
        .iter()
        // SAFETY: installs a handler that only calls async-signal-safe kill.
        .map(|&s| unsafe { libc::signal(s, handler) })
        .collect();
    let status = cmd.spawn().and_then(|mut child| {
        CHILD.store(child.id() as i32, Ordering::SeqCst);
        child.wait()
    });
    for (&s, &p) in SIGNALS.iter().zip(&previous) {
        // SAFETY: restores what was there before.
        unsafe {
            libc::signal(s, p);
        }
    }
    CHILD.store(0, Ordering::SeqCst);
    status
}

fn signal_of(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().and_then(|s| u8::try_from(s).ok()).unwrap_or(0)
}
