//! What the seeds' command names (`sc`, `crcache`, `curd-server`, `curd`)
//! are: the `larder` binary beside them, run under their name, which makes it
//! read their syntax.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// Replaces this process with `larder` called as `name`, with our arguments.
pub fn exec_larder_as(name: &str) -> ExitCode {
    let beside = std::env::current_exe().ok().map(|exe| exe.with_file_name("larder"));
    let larder = beside.filter(|p| p.is_file()).unwrap_or_else(|| "larder".into());
    let err = Command::new(&larder).arg0(name).args(std::env::args_os().skip(1)).exec();
    eprintln!(
        "{name}: cannot run {}: {err}; install larder beside {name} (cargo install --path crates/larder-cli)",
        larder.display()
    );
    ExitCode::from(127)
}
