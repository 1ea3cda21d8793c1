//! Each host's copy of a directory. A directory name is one logical
//! directory for every host pointed at one coordinator; each host keeps its
//! own copy, made the first time one of its processes uses the directory:
//! built from the recipe, restored from the remote copy `larder dir push`
//! left, or empty. One process of the host makes it while the others wait
//! on a lock beside it; the copy is recorded in the coordinator only once it
//! is complete.
//!
//! The host that deletes the directory deletes its own copy and the remote
//! copy; every other host deletes its copy on its next look, when it finds
//! the directory gone or made anew (a copy the coordinator does not name).
//! A copy is known by the lock file beside it, which names the generation
//! it is a copy of, so a look never touches a folder larder did not make;
//! and it goes only once the coordinator says that generation was deleted,
//! never because a record went missing (a Redis restarted empty).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::building::{build_lock_path, lock_for_build, move_aside};
use super::{DirSpec, Dirs};
use crate::coord::{DirRecord, DirState};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;

/// The metadata key that names the remotes a directory was pushed to,
/// comma-separated: its remote copy is restored from them and deleted with it.
pub const PUSHED_TO: &str = "pushed_to";

/// What the directories need of the remote tiers, which they do not open
/// themselves: the composition root ([`crate::Home::dirs`]) gives it. A
/// directory's remote copy (`larder dir push`) is restored on a host without
/// one and deleted with the directory; a recipe's downloads are looked for
/// there before their origin, and sent there once downloaded, so hosts
/// sharing a remote download each file from its origin once.
pub trait RemoteTiers: Send + Sync {
    /// Writes the directory `name` as the first of `remotes` that has it
    /// keeps it into the empty folder `into`.
    fn restore_dir(
        &self,
        name: &str,
        remotes: &[String],
        into: &Path,
        progress: &dyn Progress,
    ) -> Result<()>;

    /// Deletes the remote copy of `name` from `remotes`.
    fn delete_dir(&self, name: &str, remotes: &[String]) -> Result<()>;

    /// The download kept under `key` by the first remote that has it, to
    /// read; `None` if none has.
    fn open_download(&self, key: &str) -> Result<Option<crate::remote::RemoteBlob>>;

    /// Sends the stored download `digest`, bound to `key`, to the remotes
    /// that take writes.
    fn send_download(&self, digest: &Digest, key: &str) -> Result<()>;
}

/// The remotes `record` says it was pushed to.
pub(super) fn pushed_to(record: &DirRecord) -> Vec<String> {
    record
        .meta
        .get(PUSHED_TO)
        .map(|v| v.split(',').filter(|r| !r.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The file in the home whose time says when this host last looked for
/// copies nobody names.
const ORPHANS_SWEPT: &str = "copies-swept";

impl Dirs {
    /// Makes this host's copy of `record` (ready, held by the caller, made
    /// elsewhere) and records it; returns the record with this host's path.
    pub(super) fn copy_here(
        &self,
        record: DirRecord,
        spec: &DirSpec,
        progress: &dyn Progress,
    ) -> Result<DirRecord> {
        let name = record.name.clone();
        let path = self.place(&name, spec.size.max(record.size))?.join(&name);
        // One process of this host makes the copy; the others wait here.
        let lock = lock_for_build(&build_lock_path(&path, &name));
        if let Some(now) = self.coord.get(&name)?
            && now.generation == record.generation
            && now.has_copy_here()
        {
            return Ok(now);
        }
        // Whatever is at the path now belongs to no directory anyone names.
        move_aside(&path, &name)?;
        let remotes = pushed_to(&record);
        if record.recipe_hash.is_some() {
            let spec = recipe_of(&record, spec)?;
            tracing::info!("building this host's copy of directory {name}");
            self.build_into_place(&record, &spec, &path, None, progress)?;
        } else if let (Some(copies), false) = (&self.remote_tiers, remotes.is_empty()) {
            let fill = |into: &Path| copies.restore_dir(&name, &remotes, into, progress);
            if !super::fill_into_place(&path, &name, fill)? {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} appeared while this host restored its copy; try again",
                        path.display()
                    ),
                ));
            }
        } else {
            fs::create_dir_all(&path).map_err(|e| Error::io("create", &path, e))?;
        }
        let recorded = self.coord.add_copy(&name, record.generation, &path.display().to_string());
        drop(lock);
        match recorded? {
            Some(now) if Path::new(&now.path) == path => Ok(now),
            Some(now) => {
                // Another process of this host, with other places, was first.
                move_aside(&path, &name)?;
                Ok(now)
            }
            None => {
                move_aside(&path, &name)?;
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "directory {name} was deleted while this host made its copy; try again"
                    ),
                ))
            }
        }
    }

    /// Marks this host's copy of `record` as larder's, with the generation
    /// it is a copy of (see [`Dirs::sweep_orphaned_copies`]), where hosts
    /// share the coordinator.
    pub(super) fn mark_copy(&self, record: &DirRecord) {
        if self.coord.lease().is_none() || !record.has_copy_here() {
            return;
        }
        let marker = build_lock_path(Path::new(&record.path), &record.name);
        let generation = record.generation.to_string();
        if fs::read_to_string(&marker).ok().as_deref() != Some(generation.as_str()) {
            // Written in place: the file is also the lock of builds.
            let _ = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&marker)
                .and_then(|mut f| {
                    use std::io::Write;
                    f.set_len(0)?;
                    f.write_all(generation.as_bytes())
                });
        }
    }

    /// Deletes this host's copies of directories that are gone or were made
    /// anew, at most once per lease. Only a coordinator shared by hosts
    /// leaves such copies: on one host, the deleter deletes the one copy.
    pub(super) fn sweep_orphaned_copies(&self) {
        // At most once per lease; and only a folder there for a lease or
        // longer may be one nobody names.
        let Some(lease) = self.coord.lease() else { return };
        let now = SystemTime::now();
        let old = |t: std::io::Result<SystemTime>| {
            t.ok().and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age >= lease)
        };
        // In the home, not in the places, which hold only directories.
        if let Some(stamp) = self.home.as_ref().map(|h| h.join(ORPHANS_SWEPT)) {
            if stamp.exists() && !old(fs::metadata(&stamp).and_then(|m| m.modified())) {
                return;
            }
            if fs::write(&stamp, b"").is_err() {
                return;
            }
        }
        for place in &self.places {
            let Ok(entries) = fs::read_dir(place) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
                let Ok(meta) = fs::symlink_metadata(&path) else { continue };
                // A copy is renamed into place before it is recorded (beside a
                // lock file that may still name the generation before): its
                // change time, which a rename sets, must be older than a lease.
                let changed = std::time::UNIX_EPOCH
                    + Duration::from_secs(
                        std::os::unix::fs::MetadataExt::ctime(&meta).max(0) as u64
                    );
                if name.starts_with('.') || !meta.is_dir() || !old(Ok(changed)) {
                    continue;
                }
                // Only folders larder made: each copy has its lock file beside
                // it, naming the generation it is a copy of, whatever else
                // the place holds.
                let marker = build_lock_path(&path, &name);
                let marked = fs::read_to_string(&marker).ok().and_then(|t| t.trim().parse().ok());
                let Some(generation) = marked else { continue };
                if super::validate_name(&name).is_err() {
                    continue;
                }
                // A copy goes only once the coordinator says its generation
                // was deleted: a record gone missing (a Redis restarted
                // empty) is not "nobody holds it".
                let gone = match self.coord.peek(&name) {
                    Ok(Some(record)) if names_copy(&record, &path) => false,
                    Ok(Some(DirRecord { state: DirState::Deleting { .. }, .. })) => false,
                    Ok(_) => self
                        .coord
                        .deleted_generation(&name)
                        .is_ok_and(|g| g.is_some_and(|g| g >= generation)),
                    Err(e) => {
                        tracing::debug!("looking for copies nobody names: {e}");
                        return;
                    }
                };
                if gone {
                    tracing::info!(
                        "deleting {}: this host's copy of a directory that is gone",
                        path.display()
                    );
                    if move_aside(&path, &name).is_ok() {
                        let _ = fs::remove_file(&marker);
                    }
                }
            }
        }
    }
}

/// Whether `record` names `path` as this host's copy (or is this host's
/// own record, whose path it is).
fn names_copy(record: &DirRecord, path: &Path) -> bool {
    let same = |p: &str| {
        Path::new(p) == path || fs::canonicalize(p).is_ok_and(|c| Some(c) == canonical(path))
    };
    record.has_copy_here() && same(&record.path)
}

fn canonical(path: &Path) -> Option<PathBuf> {
    fs::canonicalize(path).ok()
}

/// `spec` with the recipe that built `record`: the one given, or the one
/// the record keeps in its canonical form.
fn recipe_of(record: &DirRecord, spec: &DirSpec) -> Result<DirSpec> {
    if !spec.recipe.is_empty() {
        return Ok(spec.clone());
    }
    let kept = record.recipe.as_deref().unwrap_or_default();
    let steps: Vec<&str> = kept.split_whitespace().collect();
    match crate::recipe::Recipe::parse(&steps) {
        Ok(recipe) if Some(recipe.hash()) == record.recipe_hash => {
            Ok(DirSpec { recipe, ..spec.clone() })
        }
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "directory {} has no copy on this host yet; give its recipe to build one (larder dir show {} shows it)",
                record.name, record.name
            ),
        )),
    }
}
