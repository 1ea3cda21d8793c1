//! Exclusive locks on files, held while a process lives and released by the
//! kernel when it dies: for jobs that one process at a time should do.

use std::fs::{File, OpenOptions};
use std::path::Path;

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
