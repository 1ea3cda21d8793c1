use std::process::{Command, ExitCode};

use anyhow::Result;
use larder::coord::Holder;
use larder::holder::ProcessId;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory's name; without one, a new directory with a fresh id
    #[arg(long)]
    name: Option<String>,
    /// Run this command with LARDER_DIR set to the directory, holding it until the command ends
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let dirs = ctx.open_dirs()?;
    if args.command.is_empty() {
        // The holder is the calling process (the shell or job script), so its
        // `larder unuse` releases the directory, and so does its death.
        let holder = Holder::process(parent_process()?);
        let record = dirs.use_dir(args.name.as_deref(), &holder)?;
        println!("{}", record.path);
        return Ok(ExitCode::SUCCESS);
    }
    let lease = dirs.lease(args.name.as_deref())?;
    let status = Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("LARDER_DIR", lease.path())
        .status();
    lease.release()?;
    let status = status.map_err(|e| {
        larder::Error::new(
            larder::ErrorKind::InvalidInput,
            format!("cannot run `{}`: {e}; check the command after --", args.command[0]),
        )
    })?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: report it as a shell would.
        None => ExitCode::from(128u8.saturating_add(signal_of(&status))),
    })
}

/// The process that ran larder.
pub fn parent_process() -> Result<ProcessId> {
    // SAFETY: getppid cannot fail and has no arguments.
    let ppid = unsafe { libc::getppid() } as u32;
    ProcessId::of_pid(ppid).ok_or_else(|| {
        anyhow::Error::from(larder::Error::new(
            larder::ErrorKind::Io,
            format!("cannot read the calling process (pid {ppid}) from /proc"),
        ))
    })
}

fn signal_of(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().and_then(|s| u8::try_from(s).ok()).unwrap_or(0)
}
