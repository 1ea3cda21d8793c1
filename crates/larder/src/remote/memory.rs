//! A remote in memory, for tests: it behaves as every backend must (it
//! passes the conformance suite), and lets a test look inside and spoil a
//! copy. Clones share the same contents, so a test keeps one while a
//! [`crate::Larder`] owns another.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Capabilities, Remote, RemoteBlob, RemoteEntry, RemoteStats};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::store::Target;

/// A remote whose blobs and keys live in memory.
#[derive(Clone, Default)]
pub struct InMemoryRemote {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    blobs: BTreeMap<Digest, Vec<u8>>,
    keys: BTreeMap<String, Digest>,
    /// Uploads that sent bytes.
    uploads: u64,
    /// Blobs and keys asked for (`open`, `open_sized`), found or not.
    reads: u64,
}

impl std::fmt::Debug for InMemoryRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("InMemoryRemote")
            .field("blobs", &state.blobs.len())
            .field("keys", &state.keys.len())
            .finish()
    }
}

impl InMemoryRemote {
    /// An empty one.
    pub fn new() -> InMemoryRemote {
        InMemoryRemote::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `bytes` (bound to `key`, if given), as if uploaded; their digest.
    pub fn insert(&self, bytes: &[u8], key: Option<&str>) -> Digest {
        let digest = Digest::of(bytes);
        let mut state = self.lock();
        state.blobs.insert(digest, bytes.to_vec());
        if let Some(key) = key {
            state.keys.insert(key.to_string(), digest);
        }
        digest
    }

    /// The bytes it holds for `digest`.
    pub fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.lock().blobs.get(digest).cloned()
    }

    /// The digest `key` is bound to.
    pub fn key(&self, key: &str) -> Option<Digest> {
        self.lock().keys.get(key).copied()
    }

    /// Flips a byte of its copy of `digest`, as a disk or a careless hand
    /// would; whether it had one.
    pub fn corrupt(&self, digest: &Digest) -> bool {
        match self.lock().blobs.get_mut(digest) {
            Some(bytes) if !bytes.is_empty() => {
                bytes[0] ^= 0x55;
                true
            }
            Some(bytes) => {
                bytes.push(0);
                true
            }
            None => false,
        }
    }

    /// Blobs it holds.
    pub fn blob_count(&self) -> usize {
        self.lock().blobs.len()
    }

    /// Uploads that sent bytes so far.
    pub fn uploads(&self) -> u64 {
        self.lock().uploads
    }

    /// Blobs and keys asked for so far, found or not.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }

    fn digest_of(&self, target: &Target) -> Result<Option<Digest>> {
        match target {
            Target::Digest(d) => Ok(Some(*d)),
            Target::Key(k) => {
                crate::store::validate_key(k)?;
                Ok(self.lock().keys.get(k).copied())
            }
        }
    }
}

impl Remote for InMemoryRemote {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn open(&self, target: &Target) -> Result<Option<RemoteBlob>> {
        self.lock().reads += 1;
        let Some(digest) = self.digest_of(target)? else { return Ok(None) };
        let state = self.lock();
        Ok(state.blobs.get(&digest).map(|bytes| RemoteBlob {
            size: Some(bytes.len() as u64),
            reader: Box::new(std::io::Cursor::new(bytes.clone())),
            digest: Some(digest),
        }))
    }

    fn head(&self, target: &Target) -> Result<Option<RemoteEntry>> {
        let Some(digest) = self.digest_of(target)? else { return Ok(None) };
        let state = self.lock();
        Ok(state
            .blobs
            .get(&digest)
            .map(|bytes| RemoteEntry { digest: Some(digest), size: Some(bytes.len() as u64) }))
    }

    fn upload(&self, digest: &Digest, mut file: File, size: u64) -> Result<bool> {
        if self.lock().blobs.contains_key(digest) {
            return Ok(false);
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(|e| {
            Error::new(ErrorKind::Io, format!("remote memory: reading {digest}: {e}"))
        })?;
        let mut state = self.lock();
        state.blobs.insert(*digest, bytes);
        state.uploads += 1;
        Ok(true)
    }

    fn bind(&self, key: &str, digest: &Digest) -> Result<()> {
        crate::store::validate_key(key)?;
        let mut state = self.lock();
        if !state.blobs.contains_key(digest) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("remote memory: binding {key}: it has no blob {digest}; upload it first"),
            ));
        }
        state.keys.insert(key.to_string(), *digest);
        Ok(())
    }

    fn delete(&self, target: &Target) -> Result<bool> {
        let mut state = self.lock();
        Ok(match target {
            Target::Digest(d) => state.blobs.remove(d).is_some(),
            Target::Key(k) => state.keys.remove(k).is_some(),
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let state = self.lock();
        // A key whose blob is gone is a miss, so it is not listed either.
        Ok(state
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, d)| state.blobs.contains_key(d))
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { write: true, delete: true, list: true }
    }

    fn stats(&self) -> Result<RemoteStats> {
        let state = self.lock();
        Ok(RemoteStats {
            entries: Some(state.blobs.len() as u64),
            bytes: Some(state.blobs.values().map(|b| b.len() as u64).sum()),
            capacity: None,
        })
    }
}
