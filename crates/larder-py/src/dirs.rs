//! `_larder.Dirs` and `_larder.Hold`: shared directories held by the Python
//! process. The package's `use`, `scratch` and `CacheManager` wrap them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;

use larder::coord::{DirRecord, DirState};
use larder::recipe::Recipe;
use larder::{DirSpec, NoProgress};

use crate::errors::IntoPyResult;
use crate::home;
use crate::per_process::PerProcess;
use crate::tiers::Tiers;

type Shared = Arc<PerProcess<larder::Dirs>>;

/// How many holds this process has on each directory, by coordinator and
/// name. The coordinator knows one holder per process, however many threads,
/// `with` blocks or managers hold a directory, so only the last of them to
/// let go releases it. A forked child starts with none.
struct Holds {
    pid: u32,
    counts: Vec<HoldCount>,
}

struct HoldCount {
    scope: String,
    name: String,
    count: usize,
}

static HOLDS: Mutex<Holds> = Mutex::new(Holds { pid: 0, counts: Vec::new() });

fn holds() -> MutexGuard<'static, Holds> {
    let mut holds = HOLDS.lock().unwrap_or_else(|p| p.into_inner());
    if holds.pid != std::process::id() {
        *holds = Holds { pid: std::process::id(), counts: Vec::new() };
    }
    holds
}

/// Counts one more hold on `name`.
fn count_hold(scope: &str, name: &str) {
    let mut holds = holds();
    match holds.counts.iter_mut().find(|c| c.scope == scope && c.name == name) {
        Some(entry) => entry.count += 1,
        None => holds.counts.push(HoldCount {
            scope: scope.to_string(),
            name: name.to_string(),
            count: 1,
        }),
    }
}

/// Counts one hold on `name` less, and runs `release` (with the count locked,
/// so that a new hold waits for it) if that was this process's last.
fn uncount_hold<T>(scope: &str, name: &str, release: impl FnOnce() -> T) -> Option<T> {
    let mut holds = holds();
    let at = holds.counts.iter().position(|c| c.scope == scope && c.name == name)?;
    holds.counts[at].count -= 1;
    if holds.counts[at].count > 0 {
        return None;
    }
    holds.counts.swap_remove(at);
    Some(release())
}

/// The shared directories of a larder home.
#[pyclass(frozen, module = "larder._larder")]
pub struct Dirs {
    handle: Shared,
    /// Which coordinator: the home, or the coordinator's URL.
    scope: String,
}

impl Dirs {
    /// Holds a directory for this process with `attach`, counted. The count
    /// waits for a release in progress, so it runs with the GIL released.
    fn hold_with(
        &self,
        py: Python<'_>,
        name: Option<&str>,
        attach: impl FnOnce(&larder::Dirs) -> larder::Result<DirRecord> + Send,
    ) -> PyResult<Hold> {
        let record = py
            .detach(|| {
                // A new scratch directory's name is made up by the attach.
                if let Some(name) = name {
                    count_hold(&self.scope, name);
                }
                let record = match self.handle.get().and_then(|dirs| attach(&dirs)) {
                    Ok(record) => record,
                    Err(e) => {
                        if let Some(name) = name {
                            uncount_hold(&self.scope, name, || self.unuse_quietly(name));
                        }
                        return Err(e);
                    }
                };
                if name.is_none_or(|n| n != record.name) {
                    count_hold(&self.scope, &record.name);
                    if let Some(name) = name {
                        uncount_hold(&self.scope, name, || ());
                    }
                }
                Ok(record)
            })
            .py()?;
        Ok(Hold {
            dirs: self.handle.clone(),
            scope: self.scope.clone(),
            name: record.name,
            path: record.path,
            pid: std::process::id(),
            released: AtomicBool::new(false),
        })
    }

    fn unuse_quietly(&self, name: &str) {
        if let Ok(dirs) = self.handle.get() {
            let _ = dirs.unuse(name, &home::holder());
        }
    }
}

#[pymethods]
impl Dirs {
    #[new]
    #[pyo3(signature = (home=None, places=None, coordinator=None))]
    fn new(
        py: Python<'_>,
        home: Option<PathBuf>,
        places: Option<Vec<PathBuf>>,
        coordinator: Option<String>,
    ) -> PyResult<Dirs> {
        py.detach(|| {
            let config = home::config(home, None)?;
            let dirs = home::open_dirs(&config, places.clone(), coordinator.as_deref())?;
            let scope = coordinator.clone().unwrap_or_else(|| config.home.display().to_string());
            let reopen = move || home::open_dirs(&config, places.clone(), coordinator.as_deref());
            Ok::<_, larder::Error>(Dirs {
                handle: Arc::new(PerProcess::opened("directory handle", dirs, reopen)),
                scope,
            })
        })
        .py()
    }

    /// Holds the directory `name` (a new scratch directory with a fresh id if
    /// none and no recipe) for this process, creating it with `size` bytes
    /// free and, for a recipe, building it or waiting while another builds.
    #[pyo3(signature = (name=None, size=0, recipe=Vec::new(), refresh=false))]
    fn hold(
        &self,
        py: Python<'_>,
        name: Option<String>,
        size: u64,
        recipe: Vec<String>,
        refresh: bool,
    ) -> PyResult<Hold> {
        let recipe = Recipe::parse(&recipe).py()?;
        let spec = DirSpec { name: name.clone(), size, recipe, refresh };
        // A recipe's directory has a name even when none is given.
        let name = match name {
            Some(name) => Some(name),
            None if !spec.recipe.is_empty() => Some(spec.resolve_name().py()?),
            None => None,
        };
        self.hold_with(py, name.as_deref(), |dirs| {
            dirs.use_dir(&spec, &home::holder(), &NoProgress)
        })
    }

    /// Holds the directory at `path` for this process.
    fn hold_path(&self, py: Python<'_>, path: PathBuf) -> PyResult<Hold> {
        let name = py.detach(|| self.handle.get()?.name_of_path(&path)).py()?;
        self.hold_with(py, Some(&name), |dirs| {
            dirs.use_dir(&DirSpec::scratch(Some(&name)), &home::holder(), &NoProgress)
        })
    }

    /// The name of the directory at `path`.
    fn name_of_path(&self, py: Python<'_>, path: PathBuf) -> PyResult<String> {
        py.detach(|| self.handle.get()?.name_of_path(&path)).py()
    }

    /// Holds the scratch directory `name`: this host's if it has one, else
    /// restored from the manifest a remote keeps (`dir push`). Returns the
    /// hold and whether it was restored here.
    #[pyo3(signature = (tiers, name, remote=None))]
    fn restore(
        &self,
        py: Python<'_>,
        tiers: &Tiers,
        name: String,
        remote: Option<String>,
    ) -> PyResult<(Hold, bool)> {
        let opened = tiers.opened()?;
        let mut restored = false;
        let hold = self.hold_with(py, Some(&name), |dirs| {
            let (record, here) = opened.larder.restore_dir(
                dirs,
                &name,
                remote.as_deref(),
                &home::holder(),
                &NoProgress,
            )?;
            restored = here;
            Ok(record)
        })?;
        Ok((hold, restored))
    }

    /// Sends the directory `name` to `remote` (else every remote that takes
    /// writes): its files' blobs and a manifest, kept after the directory is
    /// deleted if `keep`. Returns the manifest's digest.
    #[pyo3(signature = (tiers, name, remote=None, keep=false))]
    fn push(
        &self,
        py: Python<'_>,
        tiers: &Tiers,
        name: String,
        remote: Option<String>,
        keep: bool,
    ) -> PyResult<Option<String>> {
        let opened = tiers.opened()?;
        py.detach(|| {
            let dirs = self.handle.get()?;
            let pushed =
                opened.larder.push_dir(&dirs, &name, remote.as_deref(), keep, &NoProgress)?;
            Ok(pushed.manifest.map(|d| d.to_string()))
        })
        .py()
    }

    /// The directory `name` as it is now.
    fn show(&self, py: Python<'_>, name: String) -> PyResult<RecordOut> {
        py.detach(|| self.handle.get()?.show(&name)).py().map(RecordOut::from)
    }

    /// Every directory, after deleting those nobody holds any more (holders
    /// whose process died are released first).
    fn list(&self, py: Python<'_>) -> PyResult<Vec<RecordOut>> {
        let records = py.detach(|| self.handle.get()?.list()).py()?;
        Ok(records.into_iter().map(RecordOut::from).collect())
    }

    /// Adds or replaces metadata entries.
    fn insert_meta(
        &self,
        py: Python<'_>,
        name: String,
        entries: Vec<(String, String)>,
    ) -> PyResult<RecordOut> {
        py.detach(|| self.handle.get()?.insert_meta(&name, &entries)).py().map(RecordOut::from)
    }

    /// Keeps the directory after its last holder (`locked`), or not.
    fn set_locked(&self, py: Python<'_>, name: String, locked: bool) -> PyResult<()> {
        py.detach(|| self.handle.get()?.set_locked(&name, locked).map(|_| ())).py()
    }

    /// Deletes `name` now if nobody holds it and it is not locked, or in any
    /// case with `force`. Returns whether it was deleted.
    #[pyo3(signature = (name, force=false))]
    fn remove(&self, py: Python<'_>, name: String, force: bool) -> PyResult<bool> {
        py.detach(|| self.handle.get()?.remove(&name, force)).py()
    }
}

/// A hold on a shared directory by the process that made it. Releasing it
/// (or its being collected) lets the directory go with its last holder,
/// unless locked. In a forked child it is the parent's, and does nothing.
#[pyclass(frozen, module = "larder._larder")]
pub struct Hold {
    dirs: Shared,
    scope: String,
    name: String,
    path: String,
    pid: u32,
    released: AtomicBool,
}

impl Hold {
    fn mine(&self) -> bool {
        self.pid == std::process::id()
    }
}

#[pymethods]
impl Hold {
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn path(&self) -> &Path {
        Path::new(&self.path)
    }

    /// The process that holds it.
    #[getter]
    fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this process still holds it through this object.
    #[getter]
    fn held(&self) -> bool {
        self.mine() && !self.released.load(Ordering::SeqCst)
    }

    /// Releases the hold; the directory is deleted if that was its last
    /// holder and it is not locked. Returns whether this call released it
    /// (false if it was released before, or belongs to another process).
    fn release(&self, py: Python<'_>) -> PyResult<bool> {
        if !self.mine() || self.released.swap(true, Ordering::SeqCst) {
            return Ok(false);
        }
        py.detach(|| {
            uncount_hold(&self.scope, &self.name, || {
                self.dirs.get()?.unuse(&self.name, &home::holder())
            })
            .transpose()
        })
        .py()?;
        Ok(true)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.mine() && !self.released.swap(true, Ordering::SeqCst) {
            // Collected without release(): the interpreter may be ending,
            // so this stays attached rather than detach and come back.
            uncount_hold(&self.scope, &self.name, || {
                if let Ok(dirs) = self.dirs.get() {
                    let _ = dirs.unuse(&self.name, &home::holder());
                }
            });
        }
    }
}

/// A directory's record, for Python.
#[derive(IntoPyObject)]
pub struct RecordOut {
    name: String,
    path: String,
    state: String,
    locked: bool,
    recipe: Option<String>,
    size: u64,
    created_at: i64,
    meta: BTreeMap<String, String>,
    holders: Vec<String>,
}

impl From<DirRecord> for RecordOut {
    fn from(r: DirRecord) -> RecordOut {
        let state = match r.state {
            DirState::Building { .. } => "building",
            DirState::Ready => "ready",
            DirState::Failed { .. } => "failed",
            DirState::Deleting { .. } => "deleting",
        };
        RecordOut {
            name: r.name,
            path: r.path,
            state: state.to_string(),
            locked: r.locked,
            recipe: r.recipe,
            size: r.size,
            created_at: r.created_at,
            meta: r.meta,
            holders: r.holders.iter().map(|h| h.holder.to_string()).collect(),
        }
    }
}
