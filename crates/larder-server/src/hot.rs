//! Small blobs kept in memory once read, so that the hot ones are served
//! without a trip to a blocking thread, SQLite and the file. Only bytes that
//! hashed right are kept, so what is served from here is always right; what a
//! key names may change, so the whole cache is dropped whenever another
//! connection changes the index (SQLite's `data_version` says so cheaply).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use larder::{Digest, Store, Target};

/// A blob in memory, with the headers of a whole-body answer made once.
pub struct Hot {
    pub digest: Digest,
    pub body: Bytes,
    /// When its key was bound (or it was stored), seconds since the epoch.
    pub modified: i64,
    pub headers: axum::http::HeaderMap,
}

/// The cache, and the store handle that watches for changes (and records the
/// reads, which, being its own writes, do not count as changes).
pub struct HotCache {
    max_bytes: usize,
    watch: Mutex<Store>,
    /// Set while the watching handle writes (which may wait on SQLite's
    /// lock): lookups then miss rather than wait on an async thread.
    writing: std::sync::atomic::AtomicUsize,
    inner: Mutex<Inner>,
    /// Lookups that found the handle taken (seen by the tests).
    #[cfg(test)]
    contended: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Target, std::sync::Arc<Hot>>,
    order: VecDeque<Target>,
    bytes: usize,
    /// The `data_version` the entries were read under.
    version: i64,
}

/// The largest blob kept.
pub const MAX_ENTRY: usize = 256 << 10;

/// What an entry costs beyond its body: its key, headers and bookkeeping,
/// so that many tiny blobs cannot outgrow the budget.
fn cost(target: &Target, hot: &Hot) -> usize {
    let key = match target {
        Target::Key(k) => k.len(),
        Target::Digest(_) => 0,
    };
    hot.body.len() + 2 * key + 512
}

impl HotCache {
    pub fn new(watch: Store, max_bytes: usize) -> HotCache {
        HotCache {
            max_bytes,
            watch: Mutex::new(watch),
            writing: std::sync::atomic::AtomicUsize::new(0),
            inner: Mutex::default(),
            #[cfg(test)]
            contended: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index's version now, or `None` while the watching handle writes
    /// (then nothing is served from memory or kept in it, and nobody waits).
    /// Never blocks on a write: the lock is only tried, and waited for only
    /// while another lookup (a microsecond) holds it.
    pub fn version(&self) -> Option<i64> {
        loop {
            // A write raises the flag before it takes the lock and lowers it
            // after, so a lock held while the flag is down is a lookup's.
            if self.writing.load(std::sync::atomic::Ordering::Acquire) > 0 {
                return None;
            }
            match self.watch.try_lock() {
                Ok(watch) => return watch.changes().ok(),
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner().changes().ok(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    #[cfg(test)]
                    self.contended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::yield_now();
                }
            }
        }
    }

    /// The blob `target` names, if it is in memory and nothing changed since.
    /// Waits only on other lookups (a microsecond each), never on a write:
    /// while the watching handle writes, it is a miss.
    pub fn get(&self, target: &Target) -> Option<std::sync::Arc<Hot>> {
        if self.max_bytes == 0 {
            return None;
        }
        let version = self.version()?;
        let mut inner = self.lock();
        if inner.version != version {
            inner.map.clear();
            inner.order.clear();
            inner.bytes = 0;
            inner.version = version;
            return None;
        }
        inner.map.get(target).cloned()
    }

    /// Keeps a blob read while the index was at `version`, unless it changed
    /// since or the blob is too large.
    pub fn insert(&self, target: &Target, hot: Hot, version: i64) {
        if hot.body.len() > MAX_ENTRY || hot.body.len() > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if inner.version != version {
            return;
        }
        let key = target.clone();
        let size = cost(target, &hot);
        if let Some(old) = inner.map.insert(key.clone(), std::sync::Arc::new(hot)) {
            inner.bytes -= cost(target, &old);
        } else {
            inner.order.push_back(key);
        }
        inner.bytes += size;
        // Oldest first out: hot entries come back at their next read.
        while inner.bytes > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some(old) = inner.map.remove(&oldest) {
                inner.bytes -= cost(&oldest, &old);
            }
        }
    }

    /// Runs `f` with the watching handle (for writes that must not count as
    /// changes: the reads recorded).
    pub fn with_watch<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        struct Writing<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Writing<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Release);
            }
        }
        self.writing.fetch_add(1, std::sync::atomic::Ordering::Release);
        let _writing = Writing(&self.writing);
        f(&self.watch.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;

    /// A write that took the watching handle after a lookup checked the
    /// flag used to make the lookup (on an async worker) wait for the whole
    /// write: now the lookup misses instead.
    #[test]
    fn a_lookup_never_waits_on_a_write_that_began_after_its_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        let hot = Arc::new(HotCache::new(store, 1 << 20));
        assert!(hot.version().is_some());
        // The write holds the handle; the lookup has already seen the flag down.
        let held = hot.watch.lock().expect("lock");
        let (tx, rx) = std::sync::mpsc::channel();
        let looking = {
            let hot = hot.clone();
            std::thread::spawn(move || tx.send(hot.version()).expect("send"))
        };
        // Once the lookup is past the flag and finds the handle taken, the
        // write raises its flag: the lookup must give up rather than wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while hot.contended.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the lookup waits for the handle instead of trying it"
            );
            match rx.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => std::thread::yield_now(),
                other => panic!("the lookup ended without trying the handle: {other:?}"),
            }
        }
        hot.writing.fetch_add(1, Ordering::Release);
        let got = rx.recv_timeout(Duration::from_secs(30));
        hot.writing.fetch_sub(1, Ordering::Release);
        drop(held);
        looking.join().expect("lookup");
        assert_eq!(got, Ok(None), "the lookup waited on the write");
    }
}
