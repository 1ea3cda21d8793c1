//! `_larder.Tiers`: the store, with or without the configured remotes behind
//! it. The Python package's `Store`, `Larder` and `CloudManager` wrap it.

use std::io::Read;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use larder::{Config, Digest, GetMode, Larder, NoProgress, Removed, Target};

use crate::errors::IntoPyResult;
use crate::home;
use crate::per_process::PerProcess;

/// Reads are recorded this often (or every this many blobs), not in one
/// transaction each, as the server records them: each touched row dirties a
/// page of the index, and a commit that writes a few pages per read costs
/// far more than the read. Recency lags by at most this much.
const READS_EVERY: Duration = Duration::from_secs(1);
const READS_BATCH: usize = 16384;

/// What one process has open.
pub struct Opened {
    pub larder: Larder,
    reads: Mutex<Reads>,
}

#[derive(Default)]
struct Reads {
    /// Blobs read, least recently first.
    used: Vec<Digest>,
    hits: u64,
    since: Option<Instant>,
}

impl Opened {
    fn new(larder: Larder) -> Opened {
        Opened { larder, reads: Mutex::new(Reads::default()) }
    }

    fn reads(&self) -> MutexGuard<'_, Reads> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note_read(&self, digest: Digest) -> larder::Result<()> {
        let mut reads = self.reads();
        reads.hits += 1;
        // A blob read again is moved to the end: recency keeps the last read.
        if let Some(at) = reads.used.iter().rev().take(64).position(|d| *d == digest) {
            let at = reads.used.len() - 1 - at;
            reads.used.remove(at);
        }
        reads.used.push(digest);
        let since = *reads.since.get_or_insert_with(Instant::now);
        if reads.used.len() >= READS_BATCH || since.elapsed() >= READS_EVERY {
            return self.flush(&mut reads);
        }
        Ok(())
    }

    /// The blob `target` names, ready to read: fetched from a remote if the
    /// local tier lacks it, and hashed unless its file is unchanged since it
    /// last hashed right. The read is noted.
    fn found(&self, target: &Target) -> larder::Result<larder::Found> {
        let store = self.larder.store();
        let mut found = match store.lookup(target)? {
            Some(found) => found,
            None => {
                // Fetched from a remote, or the miss counted and named as
                // the store names it.
                self.larder.warm_up(target)?;
                store.lookup(target)?.ok_or_else(|| {
                    larder::Error::new(
                        larder::ErrorKind::NotFound,
                        format!("{target} was evicted as it was fetched; try again"),
                    )
                })?
            }
        };
        store.check_found(&mut found)?;
        self.note_read(found.digest)?;
        Ok(found)
    }

    fn flush_reads(&self) -> larder::Result<()> {
        self.flush(&mut self.reads())
    }

    fn flush(&self, reads: &mut Reads) -> larder::Result<()> {
        let used = std::mem::take(&mut reads.used);
        let hits = std::mem::take(&mut reads.hits);
        reads.since = None;
        self.larder.store().note_reads(&used, hits, 0)
    }
}

impl Drop for Tiers {
    fn drop(&mut self) {
        // Reads this process recorded and did not flush yet; a forked
        // child's inherited handle is the parent's to flush.
        if let Some(opened) = self.handle.close() {
            let _ = opened.flush_reads();
        }
    }
}

/// The store of a larder home, and its remotes when asked for.
#[pyclass(frozen, module = "larder._larder")]
pub struct Tiers {
    handle: PerProcess<Opened>,
    home: PathBuf,
    capacity: u64,
    remotes: Vec<String>,
}

impl Tiers {
    pub fn opened(&self) -> PyResult<std::sync::Arc<Opened>> {
        self.handle.get().py()
    }
}

fn target(text: &str) -> PyResult<Target> {
    Target::parse(text).py()
}

#[pymethods]
impl Tiers {
    #[new]
    #[pyo3(signature = (home=None, capacity=None, remotes=false))]
    fn new(
        py: Python<'_>,
        home: Option<PathBuf>,
        capacity: Option<u64>,
        remotes: bool,
    ) -> PyResult<Tiers> {
        py.detach(|| {
            let config = home::config(home, capacity)?;
            let larder = home::open_larder(&config, remotes)?;
            let names = larder.remotes().iter().map(|r| r.name().to_string()).collect();
            let reopen = move || open(&config, remotes);
            Ok::<_, larder::Error>(Tiers {
                home: larder.store().home().to_path_buf(),
                capacity: larder.store().capacity(),
                remotes: names,
                handle: PerProcess::opened("store", Opened::new(larder), reopen),
            })
        })
        .py()
    }

    #[getter]
    fn home(&self) -> PathBuf {
        self.home.clone()
    }

    #[getter]
    fn capacity(&self) -> u64 {
        self.capacity
    }

    #[getter]
    fn remotes(&self) -> Vec<String> {
        self.remotes.clone()
    }

    /// Raises `ConfigError`, saying how to add one, unless a remote takes
    /// writes.
    fn require_writable_remote(&self) -> PyResult<()> {
        self.opened()?.larder.require_writable_remote().py()
    }

    /// Stores files; one digest each, in order. Every file is tried; the first
    /// failure is raised after the others are stored.
    #[pyo3(signature = (paths, key=None, pin=false))]
    fn put(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        key: Option<String>,
        pin: bool,
    ) -> PyResult<Vec<String>> {
        let opened = self.opened()?;
        py.detach(|| {
            if let Some(key) = &key {
                larder::validate_user_key(key)?;
            }
            let larder = &opened.larder;
            let opts = larder.put_options(key.clone(), pin);
            let results = larder.store().put_files(&paths, &opts, &NoProgress);
            let stored: Vec<(Digest, Option<String>)> =
                results.iter().filter_map(|r| r.as_ref().ok().map(|d| (*d, key.clone()))).collect();
            let mut sent = larder.send_all(&stored, false).into_iter();
            let mut digests = Vec::with_capacity(results.len());
            let mut first_error = None;
            for result in results {
                let result = result.and_then(|digest| match sent.next() {
                    Some(Ok(())) | None => Ok(digest),
                    Some(Err(e)) => Err(larder::Error::new(
                        e.kind(),
                        format!("{digest} is stored locally, but: {e}"),
                    )),
                });
                match result {
                    Ok(digest) => digests.push(digest.to_string()),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(digests),
            }
        })
        .py()
    }

    /// Stores bytes.
    #[pyo3(signature = (data, key=None, pin=false))]
    fn put_bytes(
        &self,
        py: Python<'_>,
        data: PyBackedBytes,
        key: Option<String>,
        pin: bool,
    ) -> PyResult<String> {
        let opened = self.opened()?;
        py.detach(|| {
            if let Some(key) = &key {
                larder::validate_user_key(key)?;
            }
            let larder = &opened.larder;
            let opts = larder.put_options(key.clone(), pin);
            let digest = larder.store().put_bytes(&data, &opts)?;
            larder.send(&digest, key.as_deref())?;
            Ok(digest.to_string())
        })
        .py()
    }

    /// Stores a file and sends it to every remote that takes writes; the
    /// digest comes back once they have it.
    fn upload(&self, py: Python<'_>, path: PathBuf) -> PyResult<String> {
        let opened = self.opened()?;
        py.detach(|| opened.larder.upload(&path).map(|d| d.to_string())).py()
    }

    /// Writes the blob `target` names to `dest`, complete and verified.
    #[pyo3(signature = (target, dest, link=false))]
    fn get(&self, py: Python<'_>, target: &str, dest: PathBuf, link: bool) -> PyResult<String> {
        let target = self::target(target)?;
        let opened = self.opened()?;
        py.detach(|| {
            let larder = &opened.larder;
            if !larder.remotes().is_empty() {
                if link {
                    larder.fetch(&target, &NoProgress)?;
                } else if let Some(digest) = larder.fetch_to_path(&target, &dest, &NoProgress)? {
                    return Ok(digest.to_string());
                }
            }
            let mode = if link { GetMode::Link } else { GetMode::Copy };
            // Looked up and noted in a batch, as `open` does: no write to
            // the index per blob.
            let store = larder.store();
            let found = opened.found(&target)?;
            let (digest, _) = store.get_found_to_path(found, &target, &dest, mode, &NoProgress)?;
            Ok(digest.to_string())
        })
        .py()
    }

    /// Opens the blob `target` names: its file descriptor (read-only, at the
    /// start), digest and size. Its bytes hashed right since its file last
    /// changed, or are hashed now, before the descriptor is handed out.
    fn open(&self, py: Python<'_>, target: &str) -> PyResult<(i32, String, u64)> {
        let target = self::target(target)?;
        let opened = self.opened()?;
        py.detach(|| {
            let found = opened.found(&target)?;
            Ok((found.file.into_raw_fd(), found.digest.to_string(), found.size))
        })
        .py()
    }

    /// The bytes of the blob `target` names, checked as [`Self::open`]
    /// checks them: one call, where opening and reading takes several.
    fn read<'py>(&self, py: Python<'py>, target: &str) -> PyResult<Bound<'py, PyBytes>> {
        let text = target;
        let target = self::target(text)?;
        let opened = self.opened()?;
        let bytes = py
            .detach(|| {
                let mut found = opened.found(&target)?;
                let mut bytes = Vec::with_capacity(found.size as usize);
                found.file.read_to_end(&mut bytes).map_err(|e| {
                    larder::Error::new(larder::ErrorKind::Io, format!("reading {text}: {e}"))
                })?;
                Ok(bytes)
            })
            .py()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Whether the local tier holds `target` (`local`), or any tier does.
    #[pyo3(signature = (target, local=false))]
    fn has(&self, py: Python<'_>, target: &str, local: bool) -> PyResult<bool> {
        let target = self::target(target)?;
        let opened = self.opened()?;
        py.detach(|| {
            if local { opened.larder.on_cache(&target) } else { opened.larder.exists(&target) }
        })
        .py()
    }

    /// Makes sure the local tier holds `target`, fetching it from the first
    /// remote that has it; returns its digest.
    fn warm_up(&self, py: Python<'_>, target: &str) -> PyResult<String> {
        let target = self::target(target)?;
        let opened = self.opened()?;
        py.detach(|| opened.larder.warm_up(&target).map(|d| d.to_string())).py()
    }

    /// The tiers that hold `target`: `local` and remotes' names.
    fn where_is(&self, py: Python<'_>, target: &str) -> PyResult<Vec<String>> {
        let target = self::target(target)?;
        let opened = self.opened()?;
        py.detach(|| opened.larder.where_is(&target)).py()
    }

    /// Pins or unpins; returns the digest.
    fn set_pinned(&self, py: Python<'_>, target: &str, pinned: bool) -> PyResult<String> {
        let target = self::target(target)?;
        let opened = self.opened()?;
        py.detach(|| opened.larder.store().set_pinned(&target, pinned).map(|d| d.to_string())).py()
    }

    /// Removes a blob (with its keys) or a key.
    #[pyo3(signature = (target, force=false))]
    fn remove(&self, py: Python<'_>, target: &str, force: bool) -> PyResult<RemovedOut> {
        let target = self::target(target)?;
        let opened = self.opened()?;
        let removed = py.detach(|| opened.larder.store().remove(&target, force)).py()?;
        Ok(match removed {
            Removed::Blob { digest, keys } => {
                RemovedOut { digest: digest.to_string(), keys, blob_removed: true }
            }
            Removed::Key { key, digest, blob_removed } => {
                RemovedOut { digest: digest.to_string(), keys: vec![key], blob_removed }
            }
        })
    }

    /// Every entry, most recently used first.
    fn ls(&self, py: Python<'_>) -> PyResult<Vec<EntryOut>> {
        let opened = self.opened()?;
        let entries = py
            .detach(|| {
                opened.flush_reads()?;
                opened.larder.store().list()
            })
            .py()?;
        Ok(entries
            .into_iter()
            .map(|e| EntryOut {
                digest: e.digest.to_string(),
                size: e.size,
                pinned: e.pinned,
                used_at: e.used_at,
                created_at: e.created_at,
                keys: e.keys,
            })
            .collect())
    }

    /// The store's totals.
    fn stats(&self, py: Python<'_>) -> PyResult<StatsOut> {
        let opened = self.opened()?;
        let s = py
            .detach(|| {
                opened.flush_reads()?;
                opened.larder.store().stats()
            })
            .py()?;
        Ok(StatsOut {
            entries: s.entries,
            bytes: s.bytes,
            pinned_bytes: s.pinned_bytes,
            capacity: s.capacity,
            usage_ratio: s.usage_ratio,
            hits: s.hits,
            misses: s.misses,
        })
    }

    /// Evicts down to `to` bytes (the capacity by default).
    #[pyo3(signature = (to=None))]
    fn gc(&self, py: Python<'_>, to: Option<u64>) -> PyResult<GcOut> {
        let opened = self.opened()?;
        let r = py
            .detach(|| {
                opened.flush_reads()?;
                opened.larder.store().gc(to)
            })
            .py()?;
        Ok(GcOut { evicted: r.evicted, freed: r.freed, swept: r.swept, bytes: r.bytes })
    }

    /// Re-hashes everything; with `repair`, fixes the index.
    #[pyo3(signature = (repair=false))]
    fn verify(&self, py: Python<'_>, repair: bool) -> PyResult<VerifyOut> {
        let opened = self.opened()?;
        let r = py.detach(|| opened.larder.store().verify(repair, &NoProgress)).py()?;
        Ok(VerifyOut {
            clean: r.clean,
            checked: r.checked,
            bytes: r.bytes,
            corrupt: r.corrupt.iter().map(|q| q.digest.to_string()).collect(),
            missing: r.missing.iter().map(ToString::to_string).collect(),
            orphans: r.orphans,
            adopted: r.adopted,
            dropped: r.dropped,
        })
    }

    /// Bytes held over capacity, 0 to 1.
    fn usage_ratio(&self, py: Python<'_>) -> PyResult<f64> {
        let opened = self.opened()?;
        py.detach(|| opened.larder.usage_ratio()).py()
    }

    /// Closes this process's handle; with `send`, first sends what the
    /// write-back remotes are owed. Later calls raise.
    #[pyo3(signature = (send=true))]
    fn close(&self, py: Python<'_>, send: bool) -> PyResult<()> {
        let Some(opened) = self.handle.close() else { return Ok(()) };
        py.detach(|| {
            opened.flush_reads()?;
            // Another thread may still be inside a call; then the handle
            // closes when that call ends, and only sending is done here.
            match std::sync::Arc::try_unwrap(opened) {
                Ok(opened) if send => opened.larder.close(),
                Ok(opened) => opened.larder.close_local(),
                Err(shared) if send => {
                    let report = shared.larder.drain(true, &NoProgress)?;
                    match report.left {
                        0 => Ok(()),
                        left => Err(larder::Error::new(
                            larder::ErrorKind::Io,
                            format!(
                                "{left} uploads are still owed and stay queued: {}",
                                report.last_error.unwrap_or_default()
                            ),
                        )),
                    }
                }
                Err(_) => Ok(()),
            }
        })
        .py()
    }

    /// Records the reads not recorded yet (they are, within a second, and
    /// when the store closes).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        if !self.handle.is_open_here() {
            return Ok(());
        }
        let opened = self.opened()?;
        py.detach(|| opened.flush_reads()).py()
    }

    /// Whether this process has the store open.
    #[getter]
    fn is_open(&self) -> bool {
        self.handle.is_open_here()
    }
}

fn open(config: &Config, remotes: bool) -> larder::Result<Opened> {
    home::open_larder(config, remotes).map(Opened::new)
}

#[derive(IntoPyObject)]
pub struct EntryOut {
    digest: String,
    size: u64,
    pinned: bool,
    used_at: i64,
    created_at: i64,
    keys: Vec<String>,
}

#[derive(IntoPyObject)]
pub struct StatsOut {
    entries: u64,
    bytes: u64,
    pinned_bytes: u64,
    capacity: u64,
    usage_ratio: f64,
    hits: u64,
    misses: u64,
}

#[derive(IntoPyObject)]
pub struct GcOut {
    evicted: u64,
    freed: u64,
    swept: u64,
    bytes: u64,
}

#[derive(IntoPyObject)]
pub struct VerifyOut {
    clean: bool,
    checked: u64,
    bytes: u64,
    corrupt: Vec<String>,
    missing: Vec<String>,
    orphans: Vec<PathBuf>,
    adopted: u64,
    dropped: u64,
}

#[derive(IntoPyObject)]
pub struct RemovedOut {
    digest: String,
    keys: Vec<String>,
    blob_removed: bool,
}
