//! A home shared by a Unix group: the jobs of many users on one host using
//! one home, and so one store and one set of shared directories
//! (shared-cache's own use: a `/scratch` repository folder for a group).
//!
//! A folder is *shared with its group* when it is setgid and its group may
//! read, write and enter it (`chmod 2775`), as `larder init --shared-group
//! GROUP` leaves a home. The folder's mode is the one record of the choice,
//! so every user's larder sees it without a setting of their own. In such a
//! home larder:
//! - lets anyone of the group in, whoever owns the folder (a home that is
//!   not the caller's and not shared with a group of theirs is refused);
//! - clears the group's bits from the process's umask, so that what it
//!   creates is group-writable, and setgid folders give it their group;
//! - creates its SQLite databases group-writable (SQLite gives the `-wal`
//!   and `-shm` files the database's mode);
//! - gives the group what the owner has on every file and folder of a
//!   directory built or filled in a shared folder, so that whichever user
//!   lets it go last can delete it.
//!
//! Processes of other users are told alive or dead by `/proc` as one's own
//! are; where `/proc` hides them (`hidepid`), by `kill(pid, 0)`, whose
//! `EPERM` means "alive, not yours" (see `holder.rs`).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;

/// The setgid bit of a folder's mode: what is created in it gets its group.
const SETGID: u32 = 0o2000;

/// Whether a folder with this metadata is shared with its group: setgid, and
/// its group may read, write and enter it.
pub fn is_shared(meta: &fs::Metadata) -> bool {
    meta.is_dir() && meta.mode() & SETGID != 0 && meta.mode() & 0o070 == 0o070
}

/// Whether the folder at `path` is shared with its group.
pub fn folder_is_shared(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| is_shared(&m))
}

/// Whether the calling process belongs to group `gid` (as its effective
/// group or a supplementary one).
pub fn in_group(gid: u32) -> bool {
    // SAFETY: getegid cannot fail and has no arguments.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    // SAFETY: with a size of 0, getgroups only counts.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return false;
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds `n` entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

/// Clears the group's bits from the process's umask, once: files and folders
/// created from now on are as writable by the group as by their owner.
pub(crate) fn let_group_write() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mask = current_umask().unwrap_or(0o022);
        // SAFETY: umask cannot fail.
        unsafe {
            libc::umask((mask & !0o070) as libc::mode_t);
        }
    });
}

/// The process's umask, read without changing it (`/proc/self/status`).
fn current_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Gives the group what the owner has on `path` (a file or folder this
/// process owns; anything else is left as it is).
pub(crate) fn share_path(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() || meta.uid() != fsutil::effective_uid() {
        return Ok(());
    }
    let mode = meta.mode() & 0o7777;
    let owner = (mode >> 6) & 0o7;
    let mut wanted = (mode & !0o070) | (owner << 3);
    if meta.is_dir() {
        wanted |= SETGID;
    }
    if wanted != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Gives the group what the owner has on every file and folder under `root`
/// (itself included), so that any user of the group can read it and delete
/// it. Archives bring modes of their own, which the umask does not touch.
pub(crate) fn share_tree(root: &Path) -> io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        share_path(&path)?;
        if fs::symlink_metadata(&path)?.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Makes the SQLite database at `path` group-writable before SQLite opens
/// it, in a folder shared with its group: SQLite creates databases `0644`
/// whatever the umask, and its `-wal` and `-shm` files with the database's
/// mode, so the database is created here (`0664`). Existing files this
/// process owns are given the group's write permission too.
pub(crate) fn prepare_database(path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent() else { return Ok(()) };
    if !folder_is_shared(parent) {
        return Ok(());
    }
    match fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match share_path(Path::new(&file)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// The id of the group named `name` (or given as a number), from
/// `/etc/group`.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    groups().into_iter().find(|(n, _)| n == name).map(|(_, gid)| gid)
}

/// The name of group `gid`, for messages.
pub fn group_name(gid: u32) -> Option<String> {
    groups().into_iter().find(|(_, g)| *g == gid).map(|(n, _)| n)
}

fn groups() -> Vec<(String, u32)> {
    let text = fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            Some((name.to_string(), gid))
        })
        .collect()
}

/// What `larder init --shared-group` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedHome {
    /// The home.
    pub home: PathBuf,
    /// The group it is shared with.
    pub group: String,
    /// Its id.
    pub gid: u32,
    /// Files and folders given to the group.
    pub changed: u64,
}

/// Shares the home `home` (created if missing) with the group `group`: the
/// home and everything in it are given to the group, folders made setgid and
/// group-writable, files as readable and writable by the group as by their
/// owner. Only the home's owner (or root) may, and only with a group they
/// belong to (root: any).
pub fn share_home(home: &Path, group: &str) -> Result<SharedHome> {
    let gid = group_id(group).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "there is no group named {group}; create it (groupadd {group}) or name another"
            ),
        )
    })?;
    let me = fsutil::effective_uid();
    if me != 0 && !in_group(gid) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "you are not in group {group}, so you cannot share a home with it; ask for it \
                 (usermod -aG {group} YOU) and log in again"
            ),
        ));
    }
    fs::create_dir_all(home).map_err(|e| Error::io("create larder home", home, e))?;
    let owner = fsutil::owner(home).map_err(|e| Error::io("open larder home", home, e))?;
    if owner != me && me != 0 {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "larder home {} belongs to uid {owner}, not to you (uid {me}); only its owner can share it",
                home.display()
            ),
        ));
    }
    let mut changed = 0;
    let mut stack = vec![home.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.gid() != gid {
            std::os::unix::fs::lchown(&path, None, Some(gid))
                .map_err(|e| Error::io("give to the group", &path, e))?;
        }
        let before = meta.mode() & 0o7777;
        share_owned_by_anyone(&path, &meta).map_err(|e| Error::io("share", &path, e))?;
        let after = fs::symlink_metadata(&path).map(|m| m.mode() & 0o7777).unwrap_or(before);
        if meta.gid() != gid || after != before {
            changed += 1;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| Error::io("list", &path, e))? {
                stack.push(entry.map_err(|e| Error::io("list", &path, e))?.path());
            }
        }
    }
    Ok(SharedHome {
        home: home.to_path_buf(),
        group: group_name(gid).unwrap_or_else(|| gid.to_string()),
        gid,
        changed,
    })
}

/// As [`share_path`], for whoever owns the file (root shares others').
fn share_owned_by_anyone(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let mode = meta.mode() & 0o7777;
    let owner = (mode >> 6) & 0o7;
    let mut wanted = (mode & !0o070) | (owner << 3);
    if meta.is_dir() {
        wanted |= SETGID | 0o070;
    }
    if wanted != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_gets_what_the_owner_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o604)).expect("chmod");
        let sub = dir.path().join("d");
        fs::create_dir(&sub).expect("mkdir");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o705)).expect("chmod");
        share_tree(dir.path()).expect("share");
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!(mode(&file), 0o664);
        assert_eq!(mode(&sub), 0o2775);
        assert!(folder_is_shared(&sub));
        assert!(!folder_is_shared(&file));
    }

    #[test]
    fn groups_by_name_and_number() {
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("no-such-group-of-larder"), None);
    }
}
