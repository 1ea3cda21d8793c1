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
