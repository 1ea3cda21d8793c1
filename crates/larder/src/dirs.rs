//! Shared directories: named folders with holders, metadata and a lock flag,
//! deleted when their last holder is gone unless locked. Without a recipe, a
//! directory is a scratch directory (Monolith's caches).
//!
//! Deletion is fenced: a deleter first marks the record as being deleted (so
//! newcomers wait), renames the folder aside, drops the record only if its
//! generation is still the one it marked, and removes the folder last. A
//! deleter that dies midway is taken over by whoever looks next.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::coord::{Attached, Coordinator, DirRecord, Holder, NewDir, SqliteCoordinator};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::size::format_size;

/// How long `use` waits for a directory of the same name to finish being deleted.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// The shared directories of one larder home.
#[derive(Clone)]
pub struct Dirs {
    places: Vec<PathBuf>,
    coord: Arc<dyn Coordinator>,
    me: Holder,
}

impl std::fmt::Debug for Dirs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dirs").field("places", &self.places).finish()
    }
}

impl Dirs {
    /// The shared directories of the larder home `home`, coordinated by SQLite,
    /// created in `home/dirs`.
    pub fn open(home: &Path) -> Result<Dirs> {
        crate::store::check_home(home)?;
        let coord = SqliteCoordinator::open(home)?;
        Ok(Dirs::with_coordinator(vec![home.join("dirs")], Arc::new(coord)))
    }

    /// Shared directories created in the first of `places` with room,
    /// coordinated by `coord`.
    pub fn with_coordinator(places: Vec<PathBuf>, coord: Arc<dyn Coordinator>) -> Dirs {
        Dirs { places, coord, me: Holder::current_process() }
    }

    /// Creates new directories in the first of `places` with enough free space.
    pub fn with_places(mut self, places: Vec<PathBuf>) -> Dirs {
        if !places.is_empty() {
            self.places = places;
        }
        self
    }

    /// Holds the directory `name` (a new one with a fresh id if `None`) for
    /// `holder`, creating it if nobody had it, in the first place with `size`
    /// bytes free. Returns its record.
    pub fn use_dir(&self, name: Option<&str>, size: u64, holder: &Holder) -> Result<DirRecord> {
        let name = match name {
            Some(n) => {
                validate_name(n)?;
                n.to_string()
            }
            None => fresh_id(),
        };
        // A directory that exists stays where it is; only a new one is placed.
        let path = match self.coord.get(&name)? {
            Some(record) => PathBuf::from(record.path),
            None => self.place(&name, size)?.join(&name),
        };
        let mut meta = BTreeMap::new();
        meta.insert("id".to_string(), name.clone());
        meta.insert(
            "created_at".to_string(),
            crate::time::format_rfc3339(crate::coord::now_ms() / 1000),
        );
        let new =
            NewDir { path: path.display().to_string(), recipe_hash: None, meta, build: false };
        let deadline = Instant::now() + DELETE_WAIT;
        loop {
            match self.coord.attach(&name, holder, &new)? {
                Attached::Held { record, .. } => {
                    let path = PathBuf::from(&record.path);
                    if let Err(e) = fs::create_dir_all(&path) {
                        let _ = self.coord.detach(&name, holder);
                        let _ = self.collect(&name);
                        return Err(Error::io("create", &path, e));
                    }
                    return Ok(record);
                }
                Attached::Deleting(record) => {
                    // Finish it ourselves if its deleter died; else wait for it.
                    self.collect(&name)?;
                    if Instant::now() > deadline {
                        return Err(Error::new(
                            ErrorKind::Busy,
                            format!(
                                "directory {name} is still being deleted by {} after {}s; try again later",
                                match &record.state {
                                    crate::coord::DirState::Deleting { by } => by.to_string(),
                                    _ => "someone".to_string(),
                                },
                                DELETE_WAIT.as_secs()
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Holds a directory for the calling process until the lease is dropped.
    pub fn lease(&self, name: Option<&str>) -> Result<DirLease> {
        let record = self.use_dir(name, 0, &self.me)?;
        Ok(DirLease { dirs: self.clone(), record, holder: self.me.clone(), released: false })
    }

    /// Releases `holder`'s hold on `name`, and deletes the directory if that
    /// was the last hold and it is not locked. Returns the record if it stays.
    pub fn unuse(&self, name: &str, holder: &Holder) -> Result<Option<DirRecord>> {
        if self.coord.detach(name, holder)?.is_none() {
            return Err(unknown_dir(name));
        }
        self.collect(name)?;
        self.coord.get(name)
    }

    /// The name of the directory at `path`.
    pub fn name_of_path(&self, path: &Path) -> Result<String> {
        let wanted = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for record in self.coord.list()? {
            let p = PathBuf::from(&record.path);
            if p == wanted || fs::canonicalize(&p).is_ok_and(|c| c == wanted) {
                return Ok(record.name);
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!("{} is not a larder directory; `larder dir ls` lists them", path.display()),
        ))
    }

    /// Every directory, after deleting those nobody holds any more.
    pub fn list(&self) -> Result<Vec<DirRecord>> {
        for record in self.coord.list()? {
            self.collect(&record.name)?;
        }
        self.coord.list()
    }

    /// One directory.
    pub fn show(&self, name: &str) -> Result<DirRecord> {
        self.collect(name)?;
        self.coord.get(name)?.ok_or_else(|| unknown_dir(name))
    }

    /// Keeps (`true`) or stops keeping the directory after its last holder.
    /// Unlocking a directory nobody holds deletes it at once.
    pub fn set_locked(&self, name: &str, locked: bool) -> Result<Option<DirRecord>> {
        self.coord.set_locked(name, locked)?.ok_or_else(|| unknown_dir(name))?;
        self.collect(name)?;
        self.coord.get(name)
    }

    /// Adds or replaces metadata entries.
    pub fn insert_meta(&self, name: &str, entries: &[(String, String)]) -> Result<DirRecord> {
        self.coord.insert_meta(name, entries)?.ok_or_else(|| unknown_dir(name))
    }

    /// Deletes `name` now if nobody holds it and it is not locked, or in any
    /// case with `force`. Returns whether it was deleted.
    pub fn remove(&self, name: &str, force: bool) -> Result<bool> {
        let record = self.coord.get(name)?.ok_or_else(|| unknown_dir(name))?;
        if !force && (record.locked || !record.holders.is_empty()) {
            let why = if record.locked {
                "it is locked (larder dir unlock)".to_string()
            } else {
                let who: Vec<String> =
                    record.holders.iter().map(|h| h.holder.to_string()).collect();
                format!("it is held by {}", who.join(", "))
            };
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("directory {name} stays: {why}; pass --force to delete it anyway"),
            ));
        }
        self.delete(name, force)
    }

    /// Deletes `name` if nobody holds it and it is not locked (or its earlier
    /// deleter died). Returns whether it was deleted.
    pub fn collect(&self, name: &str) -> Result<bool> {
        self.delete(name, false)
    }

    fn delete(&self, name: &str, force: bool) -> Result<bool> {
        let Some(record) = self.coord.begin_delete(name, &self.me, force)? else {
            return Ok(false);
        };
        let path = PathBuf::from(&record.path);
        // Beside the directory, so the rename never crosses filesystems.
        let trash = path.with_file_name(format!(".larder-trash-{name}-{}", record.generation));
        match fs::rename(&path, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &path, e)),
        }
        self.coord.finish_delete(name, record.generation)?;
        match fs::remove_dir_all(&trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &trash, e)),
        }
        tracing::info!(name, "deleted a shared directory");
        Ok(true)
    }
}

impl Dirs {
    /// The first place with `size` bytes free, or an error that lists each.
    fn place(&self, name: &str, size: u64) -> Result<PathBuf> {
        let mut seen = Vec::new();
        for place in &self.places {
            match free_space(place) {
                Ok(free) if free >= size => return Ok(place.clone()),
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

/// Free bytes for unprivileged users on the filesystem that holds (or would
/// hold) `path`.
fn free_space(path: &Path) -> io::Result<u64> {
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

/// A hold on a shared directory by the calling process, released on drop.
#[derive(Debug)]
pub struct DirLease {
    dirs: Dirs,
    record: DirRecord,
    holder: Holder,
    released: bool,
}

impl DirLease {
    /// The directory's name (its id when it was made without one).
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        Path::new(&self.record.path)
    }

    /// Its metadata as it is now.
    pub fn meta(&self) -> Result<BTreeMap<String, String>> {
        Ok(self.dirs.show(self.name())?.meta)
    }

    /// Adds or replaces one metadata entry.
    pub fn insert_meta(&self, key: &str, value: &str) -> Result<()> {
        self.dirs.insert_meta(self.name(), &[(key.to_string(), value.to_string())]).map(|_| ())
    }

    /// Keeps the directory after its last holder, even after a crash.
    pub fn lock(&self) -> Result<()> {
        self.dirs.set_locked(self.name(), true).map(|_| ())
    }

    /// Lets the directory go with its last holder.
    pub fn unlock(&self) -> Result<()> {
        self.dirs.set_locked(self.name(), false).map(|_| ())
    }

    /// Releases the hold now, reporting errors that drop would swallow.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.dirs.unuse(&self.record.name, &self.holder).map(|_| ())
    }
}

impl Drop for DirLease {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.dirs.unuse(&self.record.name, &self.holder);
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "directory name `{}` is not allowed: use letters, digits, `.`, `_` and `-`, not starting with `.`",
                name.escape_debug()
            ),
        ))
    }
}

/// A new directory's id: 16 hex digits no other process picks.
fn fresh_id() -> String {
    let me = crate::holder::ProcessId::current();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Digest::of(format!("{me}-{nanos}-{n}").as_bytes()).hex()[..16].to_string()
}

fn unknown_dir(name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("there is no directory named {name}; `larder dir ls` lists them"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_until_dropped_and_a_lock_keeps_the_folder() {
        let home = tempfile::tempdir().expect("tempdir");
        let dirs = Dirs::open(home.path()).expect("open");
        let lease = dirs.lease(None).expect("lease");
        let path = lease.path().to_path_buf();
        assert!(path.is_dir());
        let meta = lease.meta().expect("meta");
        assert_eq!(meta.get("id").map(String::as_str), Some(lease.name()));
        assert!(meta.contains_key("created_at"));
        lease.insert_meta("model", "resnet").expect("meta");
        assert_eq!(lease.meta().expect("meta").get("model").map(String::as_str), Some("resnet"));
        drop(lease);
        assert!(!path.exists(), "the last holder's drop deletes it");

        let lease = dirs.lease(Some("kept")).expect("lease");
        lease.lock().expect("lock");
        let path = lease.path().to_path_buf();
        drop(lease);
        assert!(path.is_dir(), "locked directories stay");
        let again = dirs.lease(Some("kept")).expect("attach existing");
        again.unlock().expect("unlock");
        again.release().expect("release");
        assert!(!path.exists());
    }

    #[test]
    fn names_are_checked() {
        let home = tempfile::tempdir().expect("tempdir");
        let dirs = Dirs::open(home.path()).expect("open");
        for bad in ["", "../x", ".hidden", "a/b", "sp ace"] {
            let err = dirs.lease(Some(bad)).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }
}
