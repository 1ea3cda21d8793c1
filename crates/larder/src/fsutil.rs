//! Small filesystem operations the store needs beyond `std::fs`: durable
//! renames, reflinks, `syncfs`, ownership.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Flushes every dirty page of the filesystem holding `path`: one call makes a
/// whole batch of small files durable, where an `fsync` each would cost a disk
/// round trip each.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: syncfs takes a valid open descriptor and touches no memory of ours.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Makes `dest` (an empty, writable file) share `src`'s extents: a copy-on-write
/// clone. Fails with `Unsupported`-like errors where the filesystem cannot.
pub fn reflink(src: &File, dest: &File) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source descriptor as its argument; both stay open.
    let rc = unsafe { libc::ioctl(dest.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and has no arguments.
    unsafe { libc::geteuid() }
}

/// The owner of `path`.
pub fn owner(path: &Path) -> io::Result<u32> {
    Ok(std::fs::metadata(path)?.uid())
}

/// The login name of `uid`, for messages.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Reads until `buf` is full or the input ends; returns how much was read.
pub fn read_full(reader: &mut dyn io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A fresh temporary name beside `dest` for a file that is renamed to `dest`
/// once complete: `.NAME.larder-get.OWNER.N`, naming its owner process. The
/// leftovers of owners that died (killed mid-write) are removed the first
/// time a process writes into a folder, so they never pile up beside the
/// outputs; only the first time, so that writing many files into one folder
/// does not list it once per file.
pub(crate) fn output_temp(dest: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.larder-get.");
    remove_dead_temps_once(dir, ".larder-get.");
    let me = crate::holder::ProcessId::current();
    dir.join(format!("{prefix}{me}.{}", NONCE.fetch_add(1, Ordering::Relaxed)))
}

/// Removes the `.NAME{marker}OWNER.N` files in `dir` whose owner died, the
/// first time this process asks for `dir` and `marker` (as far as a bounded
/// memory tells): writing many files into one folder lists it once.
pub(crate) fn remove_dead_temps_once(dir: &Path, marker: &str) {
    static SWEPT: std::sync::Mutex<
        Option<std::collections::HashSet<(std::path::PathBuf, String)>>,
    > = std::sync::Mutex::new(None);
    {
        let mut swept = SWEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let swept = swept.get_or_insert_with(Default::default);
        if swept.len() >= 4096 {
            swept.clear();
        }
        if !swept.insert((dir.to_path_buf(), marker.to_string())) {
            return;
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some((_, rest)) =
            file_name.to_str().filter(|n| n.starts_with('.')).and_then(|n| n.split_once(marker))
        else {
            continue;
        };
        let owner = rest.rsplit_once('.').map_or(rest, |(owner, _)| owner);
        if owner.parse::<crate::holder::ProcessId>().is_ok_and(|o| !o.is_alive()) {
            tracing::info!("removing {}, left by a process that died", entry.path().display());
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: every output written into a folder listed the whole
    /// folder first, so `Store.get` of 10,000 blobs into one folder took
    /// 35 s (quadratic); the folder is now looked through once.
    #[test]
    fn a_folder_is_looked_through_for_dead_outputs_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("spawn");
        let dead = crate::holder::ProcessId::of_pid(child.id()).expect("running");
        child.kill().expect("kill");
        child.wait().expect("wait");
        let first = dir.path().join(format!(".a.larder-get.{dead}.0"));
        std::fs::write(&first, "half").expect("write");
        let temp = output_temp(&dir.path().join("a"));
        assert!(
            temp.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".a.larder-get."))
        );
        assert!(!first.exists(), "the first write into a folder removes dead outputs");
        let second = dir.path().join(format!(".b.larder-get.{dead}.0"));
        std::fs::write(&second, "half").expect("write");
        output_temp(&dir.path().join("b"));
        assert!(second.exists(), "later writes do not list the folder again");
    }
}
