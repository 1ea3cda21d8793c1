//! Exclusive locks on files, held while a process lives and released by the
//! kernel when it dies: for jobs that one process at a time should do, and
//! starting such jobs in the background.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Takes the lock on `path` (made if missing) if nobody holds it; `None`
/// if another process does.
pub fn try_lock(path: &Path) -> Result<Option<Held>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open the lock file", path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Held { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", path, e)),
    }
}

/// Starts `cmd` in the background, in a session of its own (the shell's job
/// control and Ctrl-C leave it alone), with no standard input or output. A
/// thread waits for it, so that it leaves no zombie behind a long-running
/// process.
pub fn spawn_detached(cmd: &mut Command) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child: Child = cmd.spawn()?;
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lock");
        let held = try_lock(&path).expect("lock").expect("free");
        // Another open file description is another holder, even in this process.
        assert!(try_lock(&path).expect("lock").is_none());
        drop(held);
        assert!(try_lock(&path).expect("lock").is_some());
    }
}
