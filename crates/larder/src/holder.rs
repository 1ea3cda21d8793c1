//! Who holds something: a process on this host, named by its pid and its start
//! time so that a reused pid is not mistaken for the original process.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

/// A process on this host: pid plus start time (clock ticks since boot, from
/// `/proc/<pid>/stat`), which together never repeat until reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// When the process started, in clock ticks since boot.
    pub start: u64,
}

impl ProcessId {
    /// The calling process. Read from `/proc` once per process: a forked
    /// child has a pid of its own, and reads its own.
    pub fn current() -> ProcessId {
        static CURRENT: std::sync::Mutex<Option<ProcessId>> = std::sync::Mutex::new(None);
        let pid = std::process::id();
        let mut known = CURRENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *known {
            Some(me) if me.pid == pid => me,
            _ => {
                let me = ProcessId { pid, start: start_time(pid).unwrap_or(0) };
                if me.start != 0 {
                    *known = Some(me);
                }
                me
            }
        }
    }

    /// The process `pid` as it is now, if it is running.
    pub fn of_pid(pid: u32) -> Option<ProcessId> {
        start_time(pid).map(|start| ProcessId { pid, start })
    }

    /// Whether this very process (not merely its pid) is still running.
    /// A zombie counts as gone: it will never release anything itself.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some((state, start)) => start == self.start && state != 'Z' && state != 'X',
            // `/proc` may hide other users' processes (mounted with
            // `hidepid`): `kill(pid, 0)` still tells a process that exists
            // but is not ours (EPERM) from none at all (ESRCH). Its start
            // time cannot be checked then, so a live one is never taken for
            // dead, at the price of a reused pid looking alive.
            None => exists_hidden(self.pid),
        }
    }
}

/// Programs that run the command they are given as their child and wait for
/// it (or replace themselves with it): the process that called larder is the
/// one that ran them.
const WRAPPERS: &[&str] = &[
    "timeout", "time", "env", "nice", "nohup", "stdbuf", "ionice", "chrt", "taskset", "setsid",
    "flock", "xargs", "sudo", "doas", "su", "runuser", "setpriv", "unbuffer", "strace", "ltrace",
];

/// Programs that adopt orphans (as pid 1, or as a subreaper): a
/// `larder` whose parent is one of them was orphaned before it looked.
const INITS: &[&str] = &["init", "systemd", "tini", "dumb-init", "catatonit", "docker-init"];

/// Shells, which as pid 1 of a container may run larder themselves.
const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "fish", "busybox"];

impl ProcessId {
    /// The process that called larder: the script or shell whose life a hold
    /// should follow. Shells run a command in a forked copy of themselves
    /// whenever it is more than a bare simple command (`$(larder … 2>f)`,
    /// pipes, `( … )`), and wrappers such as `timeout` run it as their
    /// child; such short-lived parents are skipped, up to the first process
    /// that is neither. An error when the caller is already gone (larder was
    /// orphaned and adopted) rather than a hold by a process that never ends.
    pub fn caller() -> Result<ProcessId, Error> {
        let mut pid = std::os::unix::process::parent_id();
        let own = ProcessInfo::read(std::process::id())
            .ok_or_else(|| Error::new(ErrorKind::Io, "cannot read this process's /proc entry"))?;
        let mut first = true;
        loop {
            let info = ProcessInfo::read(pid).ok_or_else(|| caller_gone(pid))?;
            // An orphan is adopted by an init or a subreaper. Only a shell as
            // pid 1 may be the caller itself: a container's `sh -c "…"`. A
            // parent in another session than larder's is an adopter too,
            // unless larder leads its own (it was started by `setsid`); the
            // same session proves nothing, as a supervisor that never called
            // setsid shares session 0 with all it runs.
            let adopted = info.is_init()
                || (pid == 1 && !info.is_shell())
                || (info.session != own.session && own.session != std::process::id());
            if first && adopted {
                return Err(caller_gone(pid));
            }
            first = false;
            let parent = info.ppid.and_then(|p| ProcessInfo::read(p).map(|i| (p, i)));
            let skip =
                info.is_wrapper() || parent.as_ref().is_some_and(|(_, p)| info.is_fork_of(p));
            match parent {
                Some((ppid, _)) if skip && ppid > 1 => pid = ppid,
                _ => return Ok(ProcessId { pid, start: info.start }),
            }
        }
    }
}

fn caller_gone(pid: u32) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!(
            "the process that ran larder is gone (larder's parent is now pid {pid}), so nothing \
             would hold the result; run `larder use … -- COMMAND`, or hold it by name with \
             `--holder NAME --ttl DURATION`"
        ),
    )
}

/// What `/proc` says of a process, enough to tell a fork from a program.
struct ProcessInfo {
    start: u64,
    session: u32,
    ppid: Option<u32>,
    exe: Option<std::path::PathBuf>,
    cmdline: Vec<u8>,
    environ: Option<Vec<u8>>,
}

impl ProcessInfo {
    fn read(pid: u32) -> Option<ProcessInfo> {
        let stat = read_stat_fields(pid)?;
        let dir = format!("/proc/{pid}");
        Some(ProcessInfo {
            start: stat.start,
            session: stat.session,
            ppid: (stat.ppid > 0).then_some(stat.ppid),
            exe: std::fs::read_link(format!("{dir}/exe")).ok(),
            cmdline: read_proc(&format!("{dir}/cmdline")).unwrap_or_default(),
            environ: read_proc(&format!("{dir}/environ")).ok(),
        })
    }

    fn program(&self) -> Option<String> {
        let first = self.cmdline.split(|&b| b == 0).next()?;
        let name = std::path::Path::new(std::str::from_utf8(first).ok()?).file_name()?;
        Some(name.to_string_lossy().trim_start_matches('-').to_string())
    }

    fn is_wrapper(&self) -> bool {
        self.program().is_some_and(|p| WRAPPERS.contains(&p.as_str()))
    }

    fn is_shell(&self) -> bool {
        self.program().is_some_and(|p| SHELLS.contains(&p.as_str()))
    }

    fn is_init(&self) -> bool {
        self.program().is_some_and(|p| INITS.contains(&p.as_str()))
            || self
                .exe
                .as_ref()
                .and_then(|e| e.file_name())
                .is_some_and(|n| INITS.contains(&n.to_string_lossy().as_ref()))
    }

    /// Whether this process is a copy of `parent` made by fork without exec
    /// (a subshell): same program, same arguments, and the very environment
    /// block it started with. A program started by exec gets a fresh block
    /// (shells set `_` to the program's path), so it differs.
    fn is_fork_of(&self, parent: &ProcessInfo) -> bool {
        self.exe.is_some()
            && self.exe == parent.exe
            && self.cmdline == parent.cmdline
            && self.environ.is_some()
            && self.environ == parent.environ
    }
}

/// Whether a process `pid` exists that this process may not signal: one of
/// another user, hidden from its `/proc`.
fn exists_hidden(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The fields of `/proc/<pid>/stat` larder reads.
struct Stat {
    state: char,
    ppid: u32,
    session: u32,
    start: u64,
}

fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|(_, start)| start)
}

/// Reads the state letter and start time from `/proc/<pid>/stat`. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted
/// from the last `)`.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    read_stat_fields(pid).map(|s| (s.state, s.start))
}

/// A file of `/proc`, read in one go: they say their size is 0, so a plain
/// `fs::read` starts small and reads a few dozen bytes at a time.
fn read_proc(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(32 << 10);
    std::fs::File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_stat_fields(pid: u32) -> Option<Stat> {
    let text = String::from_utf8(read_proc(&format!("/proc/{pid}/stat")).ok()?).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    // Field 3 is the state, then ppid (4), pgrp (5) and session (6); the
    // start time is field 22.
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pid, self.start)
    }
}

impl FromStr for ProcessId {
    type Err = ();

    fn from_str(text: &str) -> Result<ProcessId, ()> {
        let (pid, start) = text.split_once('-').ok_or(())?;
        Ok(ProcessId { pid: pid.parse().map_err(|_| ())?, start: start.parse().map_err(|_| ())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive() {
        let me = ProcessId::current();
        assert!(me.start > 0);
        assert!(me.is_alive());
        assert_eq!(me.to_string().parse::<ProcessId>(), Ok(me));
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let me = ProcessId::current();
        let impostor = ProcessId { pid: me.pid, start: me.start + 1 };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn a_finished_process_is_gone() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let id = ProcessId::of_pid(child.id());
        child.wait().expect("wait");
        if let Some(id) = id {
            assert!(!id.is_alive());
        }
    }
}
