//! The store as the server uses it: a few handles (each with its own SQLite
//! connection, so lookups run side by side), used on tokio's blocking
//! threads, and reads recorded in batches rather than one write per request.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use larder::{Digest, Error, ErrorKind, Store};

/// Handles on one store.
pub struct StorePool {
    home: PathBuf,
    capacity: u64,
    verify_reads: bool,
    idle: Mutex<Vec<Store>>,
    reads: Reads,
}

/// Idle handles kept for the next request; past a burst, the extra ones are
/// closed rather than held (each is a SQLite connection and its files).
const IDLE_HANDLES: usize = 32;

/// Reads waiting to be recorded: which blobs were used, hits and misses.
#[derive(Default)]
struct Reads {
    used: Mutex<Vec<Digest>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl StorePool {
    /// Opens the store in `home`; the first handle checks it (and cleans up
    /// after processes that died writing to it).
    pub fn open(home: PathBuf, capacity: u64, verify_reads: bool) -> Result<StorePool, Error> {
        let first = Store::open(&home, capacity)?.with_verify_reads(verify_reads);
        Ok(StorePool {
            home,
            capacity,
            verify_reads,
            idle: Mutex::new(vec![first]),
            reads: Reads::default(),
        })
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Runs `f` with a store handle on a blocking thread.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .unwrap_or_else(|e| Err(Error::new(ErrorKind::Io, format!("a store task failed: {e}"))))
    }

    /// Runs `f` with a store handle on this thread (which may block).
    pub fn with<T>(&self, f: impl FnOnce(&Store) -> Result<T, Error>) -> Result<T, Error> {
        let store = self.take()?;
        let result = f(&store);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_HANDLES {
            idle.push(store);
        }
        result
    }

    fn take(&self) -> Result<Store, Error> {
        if let Some(store) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(store);
        }
        Ok(Store::open(&self.home, self.capacity)?.with_verify_reads(self.verify_reads))
    }

    /// Notes a read of `digest` (a hit) or a miss, to record later.
    pub fn note(&self, found: Option<Digest>) {
        match found {
            Some(digest) => {
                self.reads.hits.fetch_add(1, Ordering::Relaxed);
                self.reads.used.lock().unwrap_or_else(|p| p.into_inner()).push(digest);
            }
            None => {
                self.reads.misses.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Notes that `digests` were used without reading them (their blobs
    /// were named, as by FindMissingBlobs or an action result), so they
    /// stay as recently used as the reads beside them; not counted as hits.
    pub fn touch(&self, digests: impl IntoIterator<Item = Digest>) {
        self.reads.used.lock().unwrap_or_else(|p| p.into_inner()).extend(digests);
    }

    /// Records the reads noted so far, in one transaction, with `store`.
    pub fn flush_reads_with(&self, store: &Store) -> Result<(), Error> {
        let used = std::mem::take(&mut *self.reads.used.lock().unwrap_or_else(|p| p.into_inner()));
        let hits = self.reads.hits.swap(0, Ordering::Relaxed);
        let misses = self.reads.misses.swap(0, Ordering::Relaxed);
        // Each blob once, at the place of its last use.
        let mut seen = HashSet::new();
        let mut order: Vec<Digest> = used.into_iter().rev().filter(|d| seen.insert(*d)).collect();
        order.reverse();
        let result = store.note_reads(&order, hits, misses);
        if result.is_err() {
            // Counted again next time rather than lost.
            self.reads.hits.fetch_add(hits, Ordering::Relaxed);
            self.reads.misses.fetch_add(misses, Ordering::Relaxed);
        }
        result
    }
}
