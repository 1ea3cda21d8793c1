//! Placement of new directories: the first of the configured folders with
//! the space asked for free, counting space that builds in progress there
//! have reserved but not written yet.

use std::io;
use std::path::{Path, PathBuf};

use super::Dirs;
use crate::coord::DirState;
use crate::error::{Error, ErrorKind, Result};
use crate::size::format_size;

impl Dirs {
    /// The first place with `size` bytes free, or an error that lists each.
    pub(super) fn place(&self, name: &str, size: u64) -> Result<PathBuf> {
        let building: Vec<(PathBuf, u64)> = if size > 0 {
            self.coord
                .list()?
                .into_iter()
                .filter(|r| matches!(r.state, DirState::Building { .. }) && r.size > 0)
                .filter_map(|r| {
                    let path = PathBuf::from(&r.path);
                    // What the build wrote already is no longer free space.
                    let written = r.progress.as_ref().map_or(0, |p| p.written);
                    Some((path.parent()?.to_path_buf(), r.size.saturating_sub(written)))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut seen = Vec::new();
        for place in &self.places {
            let reserved: u64 =
                building.iter().filter(|(p, _)| same_place(p, place)).map(|(_, s)| s).sum();
            match free_space(place) {
                Ok(free) if free.saturating_sub(reserved) >= size => return Ok(place.clone()),
                Ok(free) if reserved > 0 => seen.push(format!(
                    "{} has {} free, {} of it reserved by builds in progress",
                    place.display(),
                    format_size(free),
                    format_size(reserved)
                )),
                Ok(free) => {
                    seen.push(format!("{} has {} free", place.display(), format_size(free)))
                }
                Err(e) => seen.push(format!("{}: {e}", place.display())),
            }
        }
        Err(Error::new(
            ErrorKind::DiskFull,
            format!(
                "no folder has {} free for directory {name}: {}; free some space or give other folders with --dirs",
                format_size(size),
                seen.join(", ")
            ),
        ))
    }
}

fn same_place(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Free bytes for unprivileged users on the filesystem that holds (or would
/// hold) `path`.
pub(super) fn free_space(path: &Path) -> io::Result<u64> {
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain old data, for which all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs we own.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
