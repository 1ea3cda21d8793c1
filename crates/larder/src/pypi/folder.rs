//! The served folder (curdling's `curd-server DIR`, pypiserver's packages
//! folder): its wheels and sdists served in place, never copied. Each file
//! is hashed and its metadata read when it is indexed; its size and mtime
//! (its stamp) are kept with its row, and a file whose stamp moved is
//! indexed again before it is served. Only a wheel's METADATA, served on its
//! own (PEP 658), goes to the store.
//!
//! Changes are seen by the next request: each request stats the folder's
//! directories (one `stat` each; a file added, renamed or removed changes
//! its directory's mtime) and the files that could not be read last time
//! (a copy still being written), and rescans when one moved. This works on
//! every filesystem, NFS included, where inotify misses other hosts'
//! changes. A periodic rescan catches files rewritten in place.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::{Digest, Error, ErrorKind, PutOptions, Store, Target};

use super::index::{FOLDER, FileRow, Index};
use super::names::{self, Kind};
use super::{file_key, meta};

/// What a scan did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Files indexed anew (or again, changed).
    pub added: usize,
    /// Files gone from the folder, dropped from the index.
    pub removed: usize,
    /// Files that are not distributions the index can read.
    pub skipped: usize,
}

/// Folders of a larder home that hold larder's own things, not packages
/// (when the home itself is the served folder).
const OWN: [&str; 3] = ["store-v1", "dirs", "target"];

/// A directory changed this close before it was read may change again
/// within the same tick of the filesystem's clock, unseen: it is read again.
const RACY: Duration = Duration::from_millis(100);

/// How many unreadable files are watched for a change.
const WATCHED_SKIPS: usize = 256;

/// The served folder, and what its last scan saw.
pub struct Folder {
    root: PathBuf,
    /// One folder per home at a time: its index's rows are this folder's
    /// (`None` when another server of this same folder holds it).
    _serving: Option<crate::lockfile::Held>,
    /// Where a scan writes metadata files before storing them (the home).
    scratch_in: PathBuf,
    seen: Mutex<Seen>,
}

/// What the last scan saw: each directory's mtime, and the files it could
/// not index (with their stamps), which may be copies still being written.
#[derive(Default)]
struct Seen {
    /// Empty until the first scan (which always sees the folder itself).
    dirs: Vec<(PathBuf, Option<SystemTime>)>,
    skipped: Unread,
    /// A directory changed just before it was read.
    racy: bool,
}

/// Files that could not be indexed yet, with their stamps.
type Unread = Vec<(PathBuf, String)>;

/// The stamp of a file: its size, mtime, inode and ctime. A write changes
/// the first two; a replacement (`mv`, `rsync`, `cp -p`, which may keep size
/// and mtime) the inode or the ctime, which nobody can set.
pub fn stamp_of(meta: &std::fs::Metadata) -> String {
    format!(
        "{}:{}.{}:{}:{}.{}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

impl Folder {
    /// The folder `root`, served from the home `home` (its index and
    /// scratch space). A home serves one folder at a time: another server of
    /// a folder on it is refused, with the fix.
    pub fn open(root: PathBuf, home: &Path) -> Result<Folder, Error> {
        let lock = home.join("pypi-folder.lock");
        let shown = root.display().to_string();
        let serving = match crate::lockfile::try_lock(&lock)? {
            Some(held) => {
                std::fs::write(&lock, &shown).map_err(|e| Error::io("write", &lock, e))?;
                Some(held)
            }
            // Another server of the same folder shares its rows.
            None if std::fs::read_to_string(&lock).is_ok_and(|s| s == shown) => None,
            None => {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "the larder home {} serves another folder of packages already (another larder serve); give this one a home of its own: larder --home DIR serve {shown}",
                        home.display()
                    ),
                ));
            }
        };
        sweep_scratch(home);
        Ok(Folder {
            root,
            _serving: serving,
            scratch_in: home.to_path_buf(),
            seen: Mutex::default(),
        })
    }

    /// The folder served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether anything may have changed since the last scan: a directory's
    /// mtime moved, or an unreadable file's stamp did.
    pub fn looks_changed(&self) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.dirs.is_empty() || seen.racy {
            return true;
        }
        seen.dirs.iter().any(|(dir, mtime)| modified(dir) != *mtime)
            || seen.skipped.iter().any(|(file, stamp)| {
                std::fs::metadata(file).map(|m| stamp_of(&m)).ok().as_deref() != Some(stamp)
            })
    }

    /// Indexes the distribution files that are new or changed, and forgets
    /// those that went (and the files of any other folder this home served).
    pub fn scan(&self, store: &Store, index: &Index) -> Result<Scan, Error> {
        let started = SystemTime::now();
        // What was indexed, read before the folder: a file that arrives
        // meanwhile (an upload) is either walked or left alone, never dropped.
        let known: std::collections::HashMap<String, FileRow> =
            index.folder_files()?.into_iter().filter_map(|r| Some((r.path.clone()?, r))).collect();
        let mut walked = Walked::default();
        walk(&self.root, &self.root, &mut walked);
        let mut todo = Vec::new();
        let mut present = std::collections::HashSet::new();
        for (path, stamp) in walked.files {
            let shown = path.display().to_string();
            if known.get(&shown).is_none_or(|r| r.stamp.as_deref() != Some(stamp.as_str())) {
                todo.push((path, stamp));
            }
            present.insert(shown);
        }
        let mut scan = Scan::default();
        let mut skipped = Vec::new();
        let mut indexed = std::collections::HashSet::new();
        // In batches: one flush of the disk per batch of metadata files.
        for chunk in todo.chunks(256) {
            let (added, mut not) = self.add_batch(chunk, store, index)?;
            scan.added += added.len();
            indexed.extend(added);
            scan.skipped += not.len();
            skipped.append(&mut not);
        }
        for (path, row) in &known {
            if present.contains(path) {
                continue;
            }
            // Only its own row goes: a file of that name found elsewhere in
            // the folder (moved) was indexed above.
            index.remove_folder_file(&row.filename, path)?;
            if !indexed.contains(&row.filename) {
                // Its metadata, and the copy an earlier larder kept in the store.
                for key in [
                    file_key(&row.project, &format!("{}.metadata", row.filename)),
                    file_key(&row.project, &row.filename),
                ] {
                    let _ = store.remove(&Target::Key(key), true);
                }
            }
            scan.removed += 1;
        }
        skipped.truncate(WATCHED_SKIPS);
        // A time in the future (a clock elsewhere, times restored by tar)
        // says nothing of the last tick: only recent past times are racy.
        let now = SystemTime::now();
        let racy = walked
            .dirs
            .iter()
            .any(|(_, mtime)| mtime.is_some_and(|m| m + RACY > started && m <= now));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Seen { dirs: walked.dirs, skipped, racy };
        Ok(scan)
    }

    /// Indexes a batch of files; returns the names of those added, and the
    /// files that could not be (with their stamps).
    fn add_batch(
        &self,
        batch: &[(PathBuf, String)],
        store: &Store,
        index: &Index,
    ) -> Result<(Vec<String>, Unread), Error> {
        let scratch = tempfile::Builder::new()
            .prefix(&temp_name("index"))
            .rand_bytes(0)
            .tempdir_in(&self.scratch_in)
            .map_err(|e| Error::io("create a folder in", &self.scratch_in, e))?;
        let mut skipped = Vec::new();
        let mut prepared = Vec::new();
        for (n, (path, stamp)) in batch.iter().enumerate() {
            match prepare(path, stamp, index, scratch.path(), n) {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    tracing::warn!("{}: {e}; not indexed", path.display());
                    skipped.push((path.clone(), stamp.clone()));
                }
            }
        }
        let pin = |key: String| PutOptions { key: Some(key), pin: true, ..Default::default() };
        let items: Vec<(PathBuf, PutOptions)> = prepared
            .iter()
            .filter_map(|p| {
                let at = p.metadata_file.clone()?;
                Some((at, pin(file_key(&p.dist.project, &format!("{}.metadata", p.filename)))))
            })
            .collect();
        let mut stored = store.put_files_each(&items, &crate::NoProgress).into_iter();
        let mut rows = Vec::new();
        for p in prepared {
            let metadata_sha256 = match p.metadata_file {
                Some(_) => match stored.next() {
                    Some(Ok(d)) => Some(d.hex()),
                    Some(Err(e)) => {
                        tracing::warn!("{}: {e}; not indexed", p.path.display());
                        skipped.push((p.path, p.stamp));
                        continue;
                    }
                    None => None,
                },
                None => None,
            };
            rows.push(FileRow {
                filename: p.filename,
                project: p.dist.project,
                version: p.dist.version,
                sha256: Some(p.digest.hex()),
                size: Some(p.size),
                upload_time: Some(crate::time::format_rfc3339(p.mtime)),
                requires_python: p.meta.requires_python,
                metadata_sha256,
                yanked: p.yanked,
                origin: FOLDER.to_string(),
                url: None,
                path: Some(p.path.display().to_string()),
                stamp: Some(p.stamp),
            });
        }
        index.put_all(&rows)?;
        Ok((rows.into_iter().map(|r| r.filename).collect(), skipped))
    }

    /// Places an upload's bytes in the folder as `filename`, never replacing
    /// a file there: written beside it under a hidden name, flushed, then
    /// linked into place. Returns its path and stamp.
    pub fn place(
        &self,
        mut from: std::fs::File,
        filename: &str,
    ) -> Result<(PathBuf, String), Error> {
        let to = self.root.join(filename);
        let mut temp = tempfile::Builder::new()
            .prefix(&temp_name(filename))
            .rand_bytes(0)
            .tempfile_in(&self.root)
            .map_err(|e| Error::io("write in", &self.root, e))?;
        // Readable as a file copied in would be (tempfile makes it 0600).
        use std::os::unix::fs::PermissionsExt;
        std::io::copy(&mut from, temp.as_file_mut())
            .and_then(|_| temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)))
            .and_then(|_| temp.as_file().sync_all())
            .map_err(|e| Error::io("write", temp.path(), e))?;
        match std::fs::hard_link(temp.path(), &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("{filename} is in the served folder already"),
                ));
            }
            Err(e) => return Err(Error::io("write", &to, e)),
        }
        let meta = std::fs::metadata(&to).map_err(|e| Error::io("read", &to, e))?;
        Ok((to, stamp_of(&meta)))
    }
}

/// A folder file's bytes, opened for sending if the file is still as it was
/// indexed (`Ok(None)` if it changed or went: it must be indexed again).
pub fn open_unchanged(row: &FileRow) -> Result<Option<crate::Found>, Error> {
    let (Some(path), Some(stamp), Some(hex)) = (&row.path, &row.stamp, &row.sha256) else {
        return Ok(None);
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", Path::new(path), e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("read", Path::new(path), e))?;
    if stamp_of(&meta) != *stamp {
        return Ok(None);
    }
    let digest: Digest = format!("sha256:{hex}")
        .parse()
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{path}: {e}")))?;
    Ok(Some(crate::Found { digest, size: meta.len(), file, trusted: true, modified: meta.mtime() }))
}

/// Removes a folder file that the index lists (the listing went first).
pub fn remove_file(row: &FileRow) -> Result<(), Error> {
    let Some(path) = &row.path else { return Ok(()) };
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", Path::new(path), e)),
    }
}

/// The hidden name of a temporary file or folder of this process, for
/// `what`: `.WHAT.larder-PID-START`, so that a dead owner's are told apart.
fn temp_name(what: &str) -> String {
    format!(".{what}.larder-{}", crate::holder::ProcessId::current())
}

/// The owner a temporary name of [`temp_name`]'s names.
fn owner_of(name: &str) -> Option<crate::holder::ProcessId> {
    name.rsplit_once(".larder-")?.1.parse().ok()
}

/// Removes the temporary folders dead processes left in `home`.
fn sweep_scratch(home: &Path) {
    let Ok(entries) = std::fs::read_dir(home) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".index.larder-") && owner_of(&name).is_some_and(|o| !o.is_alive()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn modified(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

#[derive(Default)]
struct Walked {
    files: Vec<(PathBuf, String)>,
    dirs: Vec<(PathBuf, Option<SystemTime>)>,
}

fn walk(root: &Path, dir: &Path, out: &mut Walked) {
    // Its mtime before its entries: a change while it is read moves it past this.
    out.dirs.push((dir.to_path_buf(), modified(dir)));
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            // An upload's bytes left by a server that died before placing them.
            if dir == root && owner_of(&name).is_some_and(|o| !o.is_alive()) {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        if dir == root && OWN.contains(&name.as_ref()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(root, &path, out);
        } else if meta.is_file() && names::parse_filename(&name).is_some() {
            out.files.push((path, stamp_of(&meta)));
        }
    }
}

/// A file to index, hashed and read, its METADATA waiting to be stored.
struct Prepared {
    path: PathBuf,
    stamp: String,
    filename: String,
    dist: names::DistName,
    meta: meta::Meta,
    digest: Digest,
    size: u64,
    mtime: i64,
    /// Whether it was yanked, indexed before (rewritten or moved, it stays so).
    yanked: Option<String>,
    /// Where its METADATA waits to be stored, for a wheel.
    metadata_file: Option<PathBuf>,
}

fn prepare(
    path: &Path,
    stamp: &str,
    index: &Index,
    scratch: &Path,
    n: usize,
) -> Result<Prepared, Error> {
    let filename = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dist = names::parse_filename(&filename)
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "not a distribution"))?;
    let before = index.file(&filename)?;
    if let Some(other) = &before
        && other.path.as_deref() != Some(&*path.display().to_string())
        && (other.origin != FOLDER || other.path.as_deref().is_some_and(|p| Path::new(p).exists()))
    {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{filename} is indexed already (from {})",
                other.path.as_deref().unwrap_or(&other.origin)
            ),
        ));
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    let (digest, size) = Digest::of_reader(&mut file).map_err(|e| Error::io("read", path, e))?;
    let after = file.metadata().map_err(|e| Error::io("read", path, e))?;
    // Hashed while it was being written: a later scan indexes it whole.
    if stamp_of(&after) != stamp || size != after.len() {
        return Err(Error::new(ErrorKind::Busy, "it changed while it was read"));
    }
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io("read", path, e))?;
    let meta = meta::read(std::io::BufReader::new(&file), dist.kind)
        .map_err(|why| Error::new(ErrorKind::InvalidInput, why))?;
    let metadata_file = match (&meta.file, dist.kind) {
        (Some(bytes), Kind::Wheel) => {
            let at = scratch.join(format!("{n}.metadata"));
            std::fs::write(&at, bytes).map_err(|e| Error::io("write", &at, e))?;
            Some(at)
        }
        _ => None,
    };
    Ok(Prepared {
        path: path.to_path_buf(),
        stamp: stamp.to_string(),
        filename,
        dist,
        meta,
        digest,
        size,
        mtime: after.mtime(),
        yanked: before.filter(|b| b.origin == FOLDER).and_then(|b| b.yanked),
        metadata_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_dead_servers_left_behind_is_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (home, root) = (dir.path().join("home"), dir.path().join("root"));
        std::fs::create_dir_all(&home).expect("mkdir");
        std::fs::create_dir_all(&root).expect("mkdir");
        let dead = ".x-1.0-py3-none-any.whl.larder-4194303-1";
        let mine = temp_name("x-1.0-py3-none-any.whl");
        for name in [dead, mine.as_str(), ".hidden"] {
            std::fs::write(root.join(name), "bytes").expect("write");
        }
        std::fs::create_dir_all(home.join(".index.larder-4194303-1")).expect("mkdir");
        let folder = Folder::open(root.clone(), &home).expect("open");
        assert!(!home.join(".index.larder-4194303-1").exists());
        let store = Store::open(&home, 1 << 30).expect("store");
        let index = Index::open(&home).expect("index");
        folder.scan(&store, &index).expect("scan");
        assert!(!root.join(dead).exists(), "a dead server's upload is swept");
        assert!(
            root.join(&mine).exists() && root.join(".hidden").exists(),
            "others are left alone"
        );
    }
}
