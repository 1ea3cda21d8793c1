//! Where the local tier keeps things on disk. The folder name carries a format
//! version so that a later layout can live beside this one and migrate it.
//!
//! ```text
//! <home>/store-v1/
//!   index.sqlite            the index (WAL)
//!   content/sha256/ab/<hex> each blob, read-only, named by its full digest
//!   tmp/                    writes in progress, named after their owner process
//!   quarantine/             blobs whose bytes no longer match their digest
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::holder::ProcessId;

/// Paths of one store.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
}

/// What a file in `tmp/` is, from its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TempKind {
    /// Bytes being streamed in; digest not yet known.
    Partial,
    /// A complete, hashed blob being added; it may already be linked into
    /// `content/`.
    Put(String),
    /// A blob being evicted, moved out of `content/`.
    Evict(String),
}

static NONCE: AtomicU64 = AtomicU64::new(0);

impl Layout {
    pub(crate) fn new(home: &Path) -> Layout {
        Layout { root: home.join("store-v1") }
    }

    pub(crate) fn index(&self) -> PathBuf {
        self.root.join("index.sqlite")
    }

    pub(crate) fn content_root(&self) -> PathBuf {
        self.root.join("content").join("sha256")
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub(crate) fn blob(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.content_root().join(&hex[..2]).join(hex)
    }

    /// A fresh name in `tmp/` for bytes being streamed in by `owner`.
    pub(crate) fn partial(&self, owner: ProcessId) -> PathBuf {
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        self.tmp().join(format!("part.{owner}.{nonce}"))
    }

    /// The name a complete blob takes in `tmp/` once its digest is known.
    pub(crate) fn put_temp(&self, owner: ProcessId, digest: &Digest) -> PathBuf {
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        self.tmp().join(format!("put.{owner}.{nonce}.{}", digest.hex()))
    }

    /// Where an evicted blob waits between the index change and its deletion.
    pub(crate) fn evict_temp(&self, owner: ProcessId, digest: &Digest) -> PathBuf {
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        self.tmp().join(format!("evict.{owner}.{nonce}.{}", digest.hex()))
    }
}

/// Parses a `tmp/` file name into its owner and kind.
pub(crate) fn parse_temp(name: &str) -> Option<(ProcessId, TempKind)> {
    let mut parts = name.split('.');
    let kind = parts.next()?;
    let owner: ProcessId = parts.next()?.parse().ok()?;
    let _nonce = parts.next()?;
    let kind = match (kind, parts.next()) {
        ("part", None) => TempKind::Partial,
        ("put", Some(hex)) => TempKind::Put(hex.to_string()),
        ("evict", Some(hex)) => TempKind::Evict(hex.to_string()),
        _ => return None,
    };
    Some((owner, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_round_trip() {
        let layout = Layout::new(Path::new("/h"));
        let owner = ProcessId { pid: 12, start: 34 };
        let digest = Digest::of(b"x");
        let name = |p: PathBuf| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
        let partial = name(layout.partial(owner)).expect("name");
        assert_eq!(parse_temp(&partial), Some((owner, TempKind::Partial)));
        let put = name(layout.put_temp(owner, &digest)).expect("name");
        assert_eq!(parse_temp(&put), Some((owner, TempKind::Put(digest.hex()))));
        let evict = name(layout.evict_temp(owner, &digest)).expect("name");
        assert_eq!(parse_temp(&evict), Some((owner, TempKind::Evict(digest.hex()))));
        assert_eq!(parse_temp("random-file"), None);
    }
}
