//! Shared directories: named folders with holders, metadata and a lock flag,
//! deleted when their last holder is gone unless locked. Without a recipe, a
//! directory is a scratch directory (Monolith's caches); with one, it is a
//! repository (shared-cache's) that the first user builds while the others
//! wait (see `building`).
//!
//! Deletion is fenced: a deleter first marks the record as being deleted (so
//! newcomers wait), renames the folder aside, drops the record only if its
//! generation is still the one it marked, and removes the folder last. A
//! deleter that dies midway is taken over by whoever looks next.

mod building;
mod copies;
mod place;
mod status;

pub use copies::{PUSHED_TO, RemoteTiers};
pub use status::{DirStatus, HeldBy};

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::coord::{Attached, Coordinator, DirRecord, DirState, Holder, NewDir, SqliteCoordinator};
use crate::digest::Digest;
use crate::env::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpOptions;
use crate::progress::{NoProgress, Progress};
use crate::recipe::Recipe;
use crate::remote::RemoteConfig;
use crate::store::Store;

/// How long `use` waits for a directory of the same name to finish being deleted.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// What `use` asks for: a name (or one made up), the space it needs, and the
/// recipe that builds it (empty for a scratch directory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirSpec {
    /// Its name; without one, a scratch directory gets a fresh id and a
    /// recipe a name made from what it loads and its hash.
    pub name: Option<String>,
    /// The space it needs, in bytes: a new directory goes where this much is
    /// free, and a build may not write more.
    pub size: u64,
    /// How it is built; empty for a scratch directory.
    pub recipe: Recipe,
    /// If it is built here, download again what the store keeps from
    /// earlier downloads (a directory already built is used as it is).
    pub refresh: bool,
}

impl DirSpec {
    /// A scratch directory named `name`, or a new one with a fresh id.
    pub fn scratch(name: Option<&str>) -> DirSpec {
        DirSpec { name: name.map(str::to_string), ..DirSpec::default() }
    }

    /// A directory built from `recipe`.
    pub fn recipe(recipe: Recipe) -> DirSpec {
        DirSpec { recipe, ..DirSpec::default() }
    }

    /// Names it `name`.
    pub fn named(mut self, name: &str) -> DirSpec {
        self.name = Some(name.to_string());
        self
    }

    /// Downloads afresh, not from the store, if it is built here.
    pub fn refreshed(mut self, refresh: bool) -> DirSpec {
        self.refresh = refresh;
        self
    }

    /// Asks for `size` bytes.
    pub fn with_size(mut self, size: u64) -> DirSpec {
        self.size = size;
        self
    }

    /// The name the directory goes by.
    pub fn resolve_name(&self) -> Result<String> {
        match &self.name {
            Some(n) => {
                validate_name(n)?;
                Ok(n.clone())
            }
            None if self.recipe.is_empty() => Ok(fresh_id()),
            None => Ok(recipe_name(&self.recipe)),
        }
    }

    fn recipe_hash(&self) -> Option<String> {
        (!self.recipe.is_empty()).then(|| self.recipe.hash())
    }
}

/// A name for a recipe's directory without one: what its first source loads,
/// and enough of the recipe's hash to tell recipes apart.
fn recipe_name(recipe: &Recipe) -> String {
    let label =
        recipe.sources.first().map(|s| crate::build::file_label(&s.loader)).unwrap_or_default();
    let clean: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .take(60)
        .collect();
    let hash = recipe.hash();
    let hex = hash.strip_prefix("sha256:").unwrap_or(&hash);
    format!("{}-{}", clean.trim_start_matches('.'), &hex[..12]).trim_start_matches('-').to_string()
}

/// The shared directories of one larder home.
#[derive(Clone)]
pub struct Dirs {
    places: Vec<PathBuf>,
    coord: Arc<dyn Coordinator>,
    me: Holder,
    home: Option<PathBuf>,
    store: Arc<OnceLock<Arc<Store>>>,
    /// The capacity and read checks of the store opened when a recipe needs it.
    store_config: (u64, bool),
    /// How recipes download.
    http: HttpOptions,
    /// The configured remotes, for `s3://` loaders in their buckets.
    remotes: Vec<RemoteConfig>,
    /// Credentials and defaults for `s3://` loaders.
    env: Environment,
    /// The remote tiers, for pushed directories and recipes' downloads.
    remote_tiers: Option<Arc<dyn RemoteTiers>>,
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
        Dirs::open_with(home, Arc::new(SqliteCoordinator::open(home)?))
    }

    /// The shared directories of the larder home `home` (created in
    /// `home/dirs`, recipes downloading through its store), coordinated by
    /// `coord` (see [`crate::coord::open`]).
    pub fn open_with(home: &Path, coord: Arc<dyn Coordinator>) -> Result<Dirs> {
        crate::store::check_home(home)?;
        let mut dirs = Dirs::with_coordinator(vec![home.join("dirs")], coord);
        dirs.home = Some(home.to_path_buf());
        Ok(dirs)
    }

    /// Shared directories created in the first of `places` with room,
    /// coordinated by `coord`.
    pub fn with_coordinator(places: Vec<PathBuf>, coord: Arc<dyn Coordinator>) -> Dirs {
        Dirs {
            places,
            coord,
            me: Holder::current_process(),
            home: None,
            store: Arc::new(OnceLock::new()),
            store_config: (crate::config::DEFAULT_CAPACITY, false),
            http: HttpOptions::default(),
            remotes: Vec::new(),
            env: Environment::default(),
            remote_tiers: None,
        }
    }

    /// Directories pushed to remote tiers are restored from them on a host
    /// without a copy and deleted from them with the directory, and recipes'
    /// downloads are shared through them, by `copies`.
    pub fn with_remote_tiers(mut self, copies: Arc<dyn RemoteTiers>) -> Dirs {
        self.remote_tiers = Some(copies);
        self
    }

    /// The capacity and read checks of the store that recipes download into,
    /// when it is opened on demand.
    pub fn with_store_config(mut self, capacity: u64, verify_reads: bool) -> Dirs {
        self.store_config = (capacity, verify_reads);
        self
    }

    /// Downloads of recipes go through `store`. Without one, the store of the
    /// home is opened with the default capacity when a recipe needs it.
    pub fn with_store(self, store: Arc<Store>) -> Dirs {
        let _ = self.store.set(store);
        self
    }

    /// How recipes download: over HTTP as `http` says; `s3://` loaders with
    /// the endpoint and region of one of `remotes` in their bucket, and
    /// credentials and defaults from `env`.
    pub fn with_downloads(
        mut self,
        http: HttpOptions,
        remotes: Vec<RemoteConfig>,
        env: Environment,
    ) -> Dirs {
        self.http = http;
        self.remotes = remotes;
        self.env = env;
        self
    }

    fn store(&self) -> Result<&Store> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let home = self.home.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "building from a recipe needs a store; open the directories with Dirs::open or give one with with_store",
            )
        })?;
        let (capacity, verify_reads) = self.store_config;
        let store = Store::open(home, capacity)?.with_verify_reads(verify_reads);
        Ok(self.store.get_or_init(|| Arc::new(store)))
    }

    /// Creates new directories in the first of `places` with enough free space.
    pub fn with_places(mut self, places: Vec<PathBuf>) -> Dirs {
        if !places.is_empty() {
            self.places = places;
        }
        self
    }

    /// Holds the directory `spec` names for `holder`, creating it if nobody
    /// had it (in the first place with `spec.size` free) and, for a recipe,
    /// building it or waiting while another process builds it. Returns its
    /// record once it is ready.
    pub fn use_dir(
        &self,
        spec: &DirSpec,
        holder: &Holder,
        progress: &dyn Progress,
    ) -> Result<DirRecord> {
        let name = spec.resolve_name()?;
        let recipe_hash = spec.recipe_hash();
        self.sweep_places();
        // A directory that exists stays where it is; only a new one is placed
        // (and this host's copy of one made elsewhere, once it is ready).
        let path = match self.coord.get(&name)? {
            Some(record) => {
                check_recipe(&record, spec)?;
                if record.has_copy_here() {
                    PathBuf::from(record.path)
                } else {
                    self.place(&name, spec.size.max(record.size))?.join(&name)
                }
            }
            None => self.place(&name, spec.size)?.join(&name),
        };
        let mut meta = BTreeMap::new();
        meta.insert("id".to_string(), name.clone());
        meta.insert(
            "created_at".to_string(),
            crate::time::format_rfc3339(crate::coord::now_ms() / 1000),
        );
        let new = NewDir {
            path: path.display().to_string(),
            recipe: recipe_hash.as_ref().map(|_| spec.recipe.to_string()),
            recipe_hash,
            meta,
            builder: (!spec.recipe.is_empty()).then(|| self.me.clone()),
            size: spec.size,
        };
        let deadline = Instant::now() + DELETE_WAIT;
        let record = loop {
            match self.coord.attach(&name, holder, &new)? {
                Attached::Held { record, .. } => break record,
                Attached::Deleting(record) => {
                    // Finish it ourselves if its deleter died; else wait for it.
                    self.collect(&name)?;
                    if Instant::now() > deadline {
                        return Err(Error::new(
                            ErrorKind::Busy,
                            format!(
                                "directory {name} is still being deleted by {} after {}s; try again later",
                                match &record.state {
                                    DirState::Deleting { by } => by.to_string(),
                                    _ => "someone".to_string(),
                                },
                                DELETE_WAIT.as_secs()
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        if let Err(e) = check_recipe(&record, spec) {
            self.release(&name, holder);
            return Err(e);
        }
        let record = match self
            .wait_or_build(record, spec, holder, progress)
            .and_then(|r| if r.has_copy_here() { Ok(r) } else { self.copy_here(r, spec, progress) })
        {
            Ok(record) => record,
            Err(e) => {
                self.release(&name, holder);
                return Err(e);
            }
        };
        if spec.recipe.is_empty() && record.recipe_hash.is_none() {
            let path = PathBuf::from(&record.path);
            if let Err(e) = fs::create_dir_all(&path) {
                self.release(&name, holder);
                return Err(Error::io("create", &path, e));
            }
        }
        self.mark_copy(&record);
        Ok(record)
    }

    /// Holds the scratch directory `name` for `holder`, made from what `fill`
    /// writes into an empty folder, unless a directory of that name exists
    /// already (then it is used as it is). The folder is filled beside where
    /// the directory goes and renamed into place whole, so nobody sees it
    /// half-filled. Returns its record, and whether it was filled here.
    pub fn use_filled(
        &self,
        name: &str,
        size: u64,
        holder: &Holder,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(DirRecord, bool)> {
        validate_name(name)?;
        let spec = DirSpec::scratch(Some(name)).with_size(size);
        if self.coord.get(name)?.is_some() {
            return Ok((self.use_dir(&spec, holder, &NoProgress)?, false));
        }
        let path = self.place(name, size)?.join(name);
        // Someone else's directory got there first: theirs is used.
        let placed = fill_into_place(&path, name, fill)?;
        match self.use_dir(&spec, holder, &NoProgress) {
            Ok(record) => Ok((record, placed)),
            Err(e) => {
                if placed {
                    let _ = fs::remove_dir_all(&path);
                }
                Err(e)
            }
        }
    }

    /// Holds the directory `spec` names for the calling process until the
    /// lease is dropped.
    pub fn lease(&self, spec: &DirSpec) -> Result<DirLease> {
        let record = self.use_dir(spec, &self.me, &NoProgress)?;
        Ok(DirLease { dirs: self.clone(), record, holder: self.me.clone(), released: false })
    }

    /// Releases a hold after a failure, deleting what nobody holds any more;
    /// errors are logged, the caller reports the failure.
    fn release(&self, name: &str, holder: &Holder) {
        if let Err(e) = self.coord.detach(name, holder).and_then(|_| self.collect(name)) {
            tracing::warn!("releasing directory {name}: {e}");
        }
    }

    /// Releases `holder`'s hold on the directory `spec` names (checking that
    /// it was built from the same recipe, if one is given).
    pub fn unuse_spec(&self, spec: &DirSpec, holder: &Holder) -> Result<Option<DirRecord>> {
        let name = match (&spec.name, spec.recipe.is_empty()) {
            (None, true) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "name the directory to release: --name NAME, its recipe, or its path",
                ));
            }
            _ => spec.resolve_name()?,
        };
        let record = self.coord.get(&name)?.ok_or_else(|| unknown_dir(&name))?;
        check_recipe(&record, spec)?;
        self.unuse(&name, holder)
    }

    /// Releases `holder`'s hold on `name`, and deletes the directory if that
    /// was the last hold and it is not locked. Returns the record if it stays.
    pub fn unuse(&self, name: &str, holder: &Holder) -> Result<Option<DirRecord>> {
        self.sweep_orphaned_copies();
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

    /// Removes what processes that died left in the places (half-built and
    /// half-deleted folders of any directory).
    fn sweep_places(&self) {
        for place in &self.places {
            building::remove_stale_leftovers(place);
        }
        self.sweep_orphaned_copies();
    }

    /// Every directory, after deleting those nobody holds any more.
    pub fn list(&self) -> Result<Vec<DirRecord>> {
        self.sweep_places();
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
    /// Adds or replaces metadata entries of `name`; `id` and `created_at`,
    /// set for every directory, cannot be changed.
    pub fn insert_meta(&self, name: &str, entries: &[(String, String)]) -> Result<DirRecord> {
        for (key, _) in entries {
            check_meta_key(key)?;
        }
        self.coord.insert_meta(name, entries)?.ok_or_else(|| unknown_dir(name))
    }

    /// Removes metadata entries of `name` (keys it lacks are no error); not
    /// `id` or `created_at`.
    pub fn remove_meta(&self, name: &str, keys: &[String]) -> Result<DirRecord> {
        for key in keys {
            check_meta_key(key)?;
        }
        self.coord.remove_meta(name, keys)?.ok_or_else(|| unknown_dir(name))
    }

    /// Records that `name` was pushed to `remotes` (besides those it was
    /// pushed to before): its remote copy goes with it.
    pub(crate) fn record_push(&self, name: &str, remotes: &[String]) -> Result<DirRecord> {
        let record = self.show(name)?;
        let mut all = copies::pushed_to(&record);
        for r in remotes {
            if !all.contains(r) {
                all.push(r.clone());
            }
        }
        let entry = [(PUSHED_TO.to_string(), all.join(","))];
        self.coord.insert_meta(name, &entry)?.ok_or_else(|| unknown_dir(name))
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
        // Only this host's copy is this host's to delete; the others' go
        // on their hosts' next look.
        let here = record.has_copy_here();
        let path = PathBuf::from(&record.path);
        if here && let Some(parent) = path.parent() {
            building::remove_stale_leftovers(parent);
        }
        // Where grants are leases, this process may have been stopped past
        // its lease since it began: the folder is touched only if the
        // deletion is still its own.
        if self.coord.lease().is_some()
            && self.coord.peek(name)?.is_none_or(|r| r.fence != record.fence)
        {
            return Err(deletion_taken_over(name));
        }
        // Beside the directory, so the rename never crosses filesystems.
        let trash = building::trash_path(&path, name);
        let moved = match if here { fs::rename(&path, &trash) } else { Ok(()) } {
            Ok(()) => here,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("delete", &path, e)),
        };
        if !self.coord.finish_delete(name, record.fence)? {
            // Someone else holds the deletion now (or made the directory
            // anew): what was moved is theirs, so it goes back.
            if moved && path.symlink_metadata().is_err() {
                let _ = fs::rename(&trash, &path);
            }
            return Err(deletion_taken_over(name));
        }
        let remotes = copies::pushed_to(&record);
        if let (Some(copies), false) = (&self.remote_tiers, remotes.is_empty())
            && let Err(e) = copies.delete_dir(name, &remotes)
        {
            tracing::warn!("deleting the remote copy of directory {name}: {e}");
        }
        if here {
            let _ = fs::remove_file(building::build_lock_path(&path, name));
            match fs::remove_dir_all(&trash) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete", &trash, e)),
            }
        }
        tracing::info!(name, "deleted a shared directory");
        Ok(true)
    }
}

/// Fills a folder beside `path` with `fill` and renames it to `path` whole,
/// so nobody sees it half-filled (shared with the group where the place is,
/// flushed first). Returns false if something was at `path` already: the
/// filled folder is thrown away.
fn fill_into_place(
    path: &Path,
    name: &str,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<bool> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let staging = parent.join(format!(".{name}.filling-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| Error::io("create", &staging, e))?;
    let filled = fill(&staging).and_then(|()| {
        if crate::sharing::folder_is_shared(parent) {
            crate::sharing::share_tree(&staging)
                .map_err(|e| Error::io("share with the group", &staging, e))?;
        }
        crate::fsutil::sync_filesystem(&staging).map_err(|e| Error::io("flush", &staging, e))
    });
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let placed = fs::rename(&staging, path).is_ok();
    if !placed {
        let _ = fs::remove_dir_all(&staging);
    }
    Ok(placed)
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

/// The bytes of the files under `path`, links not followed.
pub fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Refuses a recipe that is not the one the directory was made from.
fn check_recipe(record: &DirRecord, spec: &DirSpec) -> Result<()> {
    let Some(wanted) = spec.recipe_hash() else { return Ok(()) };
    if record.recipe_hash.as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let was = match &record.recipe {
        Some(r) => format!("from the recipe `{r}`"),
        None => "without a recipe".to_string(),
    };
    Err(Error::new(
        ErrorKind::Conflict,
        format!(
            "directory {} was made {was}, not from `{}`; use another --name, or delete it first (larder dir rm {})",
            record.name, spec.recipe, record.name
        ),
    ))
}

fn deletion_taken_over(name: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "the deletion of directory {name} was taken over by another larder process (this one \
             was stopped or cut off from the coordinator past its lease); nothing was deleted here"
        ),
    )
}

/// Metadata larder sets for every directory, which stays as set.
const FIXED_META: [&str; 2] = ["id", "created_at"];

fn check_meta_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, "a metadata key cannot be empty"));
    }
    if key == PUSHED_TO {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("`{key}` is set by larder dir push and cannot be changed; use another key"),
        ));
    }
    if FIXED_META.contains(&key) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "`{key}` is set by larder for every directory and cannot be changed; use another key"
            ),
        ));
    }
    Ok(())
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
        let lease = dirs.lease(&DirSpec::scratch(None)).expect("lease");
        let path = lease.path().to_path_buf();
        assert!(path.is_dir());
        let meta = lease.meta().expect("meta");
        assert_eq!(meta.get("id").map(String::as_str), Some(lease.name()));
        assert!(meta.contains_key("created_at"));
        lease.insert_meta("model", "resnet").expect("meta");
        assert_eq!(lease.meta().expect("meta").get("model").map(String::as_str), Some("resnet"));
        drop(lease);
        assert!(!path.exists(), "the last holder's drop deletes it");

        let lease = dirs.lease(&DirSpec::scratch(Some("kept"))).expect("lease");
        lease.lock().expect("lock");
        let path = lease.path().to_path_buf();
        drop(lease);
        assert!(path.is_dir(), "locked directories stay");
        let again = dirs.lease(&DirSpec::scratch(Some("kept"))).expect("attach existing");
        again.unlock().expect("unlock");
        again.release().expect("release");
        assert!(!path.exists());
    }

    #[test]
    fn two_threads_asking_for_one_recipe_build_it_once() {
        let home = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        archive.append_data(&mut header, "f", &b"hello"[..]).expect("append");
        let tar_path = work.path().join("a.tar");
        std::fs::write(&tar_path, archive.into_inner().expect("tar")).expect("write");
        let count = work.path().join("count");
        let command = format!(
            "exec:echo built >> {}; sleep 0.2; cat {}",
            count.display(),
            tar_path.display()
        );
        let recipe = Recipe::parse(&[command.as_str(), "tar"]).expect("recipe");
        let dirs = Dirs::open(home.path()).expect("open");
        let spec = DirSpec::recipe(recipe).named("r");
        let paths: Vec<PathBuf> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (dirs, spec) = (dirs.clone(), spec.clone());
                    scope.spawn(move || {
                        let record = dirs.use_dir(&spec, &dirs.me, &NoProgress).expect("use");
                        PathBuf::from(record.path)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("thread")).collect()
        });
        assert_eq!(paths[0], paths[1]);
        assert_eq!(std::fs::read(paths[0].join("f")).expect("f"), b"hello");
        assert_eq!(std::fs::read_to_string(&count).expect("count"), "built\n");
    }

    #[test]
    fn names_are_checked() {
        let home = tempfile::tempdir().expect("tempdir");
        let dirs = Dirs::open(home.path()).expect("open");
        for bad in ["", "../x", ".hidden", "a/b", "sp ace"] {
            let err = dirs.lease(&DirSpec::scratch(Some(bad))).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }
}
