use std::process::ExitCode;

use anyhow::Result;
use larder::Home;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Share the home with this Unix group: the home and everything in it go to the group,
    /// folders become setgid and group-writable (2775), files as writable by the group as by
    /// their owner; every member's larder then uses it as their own
    #[arg(long, value_name = "GROUP")]
    shared_group: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    home: std::path::PathBuf,
    shared: Option<larder::sharing::SharedHome>,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let path = home.config().home.clone();
    let shared = match &args.shared_group {
        Some(group) => Some(larder::sharing::share_home(&path, group)?),
        None => None,
    };
    // Opening them creates the store and the directories' database, with
    // the group's permissions in a shared home.
    home.store()?.close()?;
    home.dirs()?;
    let report = Report { home: path, shared };
    if args.json {
        output::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &report.shared {
        Some(s) => println!(
            "larder home {} is shared with group {} (gid {}); {} files and folders given to it",
            report.home.display(),
            s.group,
            s.gid,
            s.changed
        ),
        None => println!("larder home {} is ready", report.home.display()),
    }
    Ok(ExitCode::SUCCESS)
}
