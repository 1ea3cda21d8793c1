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
    /// The store's commit marker, and what it read when the version was
    /// last asked: while it reads the same, the version is the same, and no
    /// lookup asks SQLite (which takes locks, by system calls).
    marker: Option<Marker>,
    seen: Mutex<Option<([u8; MARKER], i64)>>,
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

/// The bytes of the commit marker compared.
const MARKER: usize = 48;

/// The store's commit marker, mapped into memory where it can be, so that
/// reading it costs no system call.
struct Marker {
    file: std::fs::File,
    map: Option<std::ptr::NonNull<u8>>,
}

// SAFETY: the mapping is only read, through volatile reads, and lives as
// long as the marker.
unsafe impl Send for Marker {}
// SAFETY: as above.
unsafe impl Sync for Marker {}

impl Marker {
    fn new(file: std::fs::File) -> Marker {
        use std::os::fd::AsRawFd;
        // Mapped only if the file holds the header: reading a mapping past
        // the end of its file is a SIGBUS. SQLite never shrinks it while any
        // connection of this process (the watching one, which lives as long
        // as the cache) has it open.
        let long_enough = file.metadata().is_ok_and(|m| m.len() >= MARKER as u64);
        let map = long_enough
            .then(|| {
                // SAFETY: a fresh read-only shared mapping of an open file;
                // checked for failure below.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        MARKER,
                        libc::PROT_READ,
                        libc::MAP_SHARED,
                        file.as_raw_fd(),
                        0,
                    )
                };
                (p != libc::MAP_FAILED).then_some(p.cast::<u8>())
            })
            .flatten()
            .and_then(std::ptr::NonNull::new);
        Marker { file, map }
    }

    /// The header as it is now, or `None` if it cannot be read.
    fn read(&self) -> Option<[u8; MARKER]> {
        let mut bytes = [0u8; MARKER];
        match self.map {
            Some(map) => {
                for (i, b) in bytes.iter_mut().enumerate() {
                    // SAFETY: within the MARKER bytes mapped; volatile, as
                    // other processes write them.
                    *b = unsafe { std::ptr::read_volatile(map.as_ptr().add(i)) };
                }
                Some(bytes)
            }
            None => {
                use std::os::unix::fs::FileExt;
                self.file.read_exact_at(&mut bytes, 0).ok().map(|()| bytes)
            }
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        if let Some(map) = self.map {
            // SAFETY: unmaps what `new` mapped, once.
            unsafe {
                libc::munmap(map.as_ptr().cast(), MARKER);
            }
        }
    }
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
            marker: watch.open_commit_marker().map(Marker::new),
            seen: Mutex::new(None),
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
        if self.writing.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        // Read before SQLite is asked: a commit after it changes it again.
        let marker = self.marker.as_ref().and_then(Marker::read);
        let seen = || self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(now) = &marker
            && let Some((then, version)) = *seen()
            && then == *now
        {
            return Some(version);
        }
        let version = self.ask_version()?;
        if let Some(now) = marker {
            *seen() = Some((now, version));
        }
        Some(version)
    }

    /// The index's version, from SQLite.
    fn ask_version(&self) -> Option<i64> {
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
        // Another process commits: the next lookup must ask SQLite.
        let other = Store::open(dir.path(), 1 << 20).expect("store");
        other.put_bytes(b"x", &larder::PutOptions::default()).expect("put");
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

#[cfg(test)]
mod marker_tests {
    use super::*;

    /// The version is read from SQLite only when the commit marker moved,
    /// and a commit anywhere moves it.
    #[test]
    fn the_version_follows_commits_made_elsewhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hot = HotCache::new(Store::open(dir.path(), 1 << 20).expect("store"), 1 << 20);
        assert!(hot.marker.as_ref().is_some_and(|m| m.map.is_some()), "the marker is mapped");
        let first = hot.version().expect("version");
        assert_eq!(hot.version(), Some(first));
        let other = Store::open(dir.path(), 1 << 20).expect("store");
        for i in 0..3u8 {
            other.put_bytes(&[i], &larder::PutOptions::default()).expect("put");
            let now = hot.version().expect("version");
            assert_ne!(now, first, "a commit elsewhere is seen");
            assert_eq!(hot.version(), Some(now));
        }
        // The watching handle's own writes are not changes.
        let before = hot.version();
        hot.with_watch(|store| store.note_reads(&[], 1, 0)).expect("note");
        assert_eq!(hot.version(), before);
    }
}
