//! Who holds something: a process on this host, named by its pid and its start
//! time so that a reused pid is not mistaken for the original process.

use std::fmt;
use std::str::FromStr;

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
    /// The calling process.
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId { pid, start: start_time(pid).unwrap_or(0) }
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
            None => false,
        }
    }
}

fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|(_, start)| start)
}

/// Reads the state letter and start time from `/proc/<pid>/stat`. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted
/// from the last `)`.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come fields 4..; start time is field 22, i.e. 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
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
