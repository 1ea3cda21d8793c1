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
/// leftovers of owners that died (killed mid-write) are removed first, so
/// they never pile up beside the output.
pub(crate) fn output_temp(dest: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.larder-get.");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let owner = rest.rsplit_once('.').map_or(rest, |(owner, _)| owner);
            if owner.parse::<crate::holder::ProcessId>().is_ok_and(|o| !o.is_alive()) {
                tracing::info!("removing {}, left by a process that died", entry.path().display());
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let me = crate::holder::ProcessId::current();
    dir.join(format!("{prefix}{me}.{}", NONCE.fetch_add(1, Ordering::Relaxed)))
}
