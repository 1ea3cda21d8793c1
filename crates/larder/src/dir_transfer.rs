//! Directories to and from remote tiers (Monolith's S3 caching): a directory
//! is pushed as its files' blobs plus a manifest (paths, kinds, modes,
//! digests and the directory's metadata) bound to the key `dirs/<name>`, and
//! restored on another host from that manifest, blobs deduplicated both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::coord::{DirRecord, Holder};
use crate::digest::Digest;
use crate::dirs::{Dirs, RemoteTiers};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::remote::Tier;
use crate::store::{GetMode, PutOptions, Target};
use crate::tiers::{Larder, in_parallel};

/// What a manifest says it is.
const FORMAT: &str = "larder-dir-v1";

/// A directory as a remote keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `larder-dir-v1`.
    pub format: String,
    /// The directory's name.
    pub name: String,
    /// Its metadata.
    pub meta: BTreeMap<String, String>,
    /// Everything in it, parents before children.
    pub entries: Vec<ManifestEntry>,
}

/// One thing in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ManifestEntry {
    /// A folder.
    Dir {
        /// Where, relative to the directory.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A file.
    File {
        /// Where, relative to the directory.
        path: String,
        /// Its bytes, a blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Its permission bits.
        mode: u32,
    },
    /// A symbolic link, relative and inside the directory.
    Symlink {
        /// Where, relative to the directory.
        path: String,
        /// What it points to.
        target: String,
    },
}

/// What [`Larder::push_dir`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushedDir {
    /// The directory's name.
    pub name: String,
    /// Files in the directory.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs that had to be sent (the others were there already).
    pub sent: u64,
    /// The remotes it went to.
    pub remotes: Vec<String>,
    /// The manifest's digest.
    pub manifest: Option<Digest>,
}

/// The key a directory's manifest is bound to.
pub fn manifest_key(name: &str) -> String {
    format!("dirs/{name}")
}

impl Larder {
    /// Sends the directory `name` to `remote` (every remote that takes
    /// writes if `None`): its files' blobs, then its manifest. The remote
    /// copy is deleted with the directory, unless `keep` (an archive that
    /// outlives it, as Monolith's S3 caches do).
    pub fn push_dir(
        &self,
        dirs: &Dirs,
        name: &str,
        remote: Option<&str>,
        keep: bool,
        progress: &dyn Progress,
    ) -> Result<PushedDir> {
        let targets = self.write_targets(remote)?;
        let record = dirs.show(name)?;
        if !record.has_copy_here() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "this host has no copy of directory {name}: push it from a host that uses it (larder dir ls lists them), or use it here first"
                ),
            ));
        }
        let root = PathBuf::from(&record.path);
        let mut entries = Vec::new();
        let mut files = Vec::new();
        walk(&root, &root, &mut entries, &mut files)?;
        let bytes: u64 = files.iter().map(|(_, size)| size).sum();
        // Into the local tier first: hashed once, and a stable copy to send
        // even if the folder changes meanwhile.
        let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
        let stored = self.store().put_files(&paths, &PutOptions::default(), progress);
        let mut digests = Vec::with_capacity(stored.len());
        for result in stored {
            digests.push(result?);
        }
        let mut digest_of = digests.iter();
        for entry in &mut entries {
            if let ManifestEntry::File { digest, .. } = entry
                && let Some(d) = digest_of.next()
            {
                *digest = *d;
            }
        }
        let unique: Vec<Digest> =
            digests.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let mut report = PushedDir {
            name: name.to_string(),
            files: files.len() as u64,
            bytes,
            remotes: targets.iter().map(|r| r.name().to_string()).collect(),
            ..PushedDir::default()
        };
        for remote in &targets {
            let sent = in_parallel(&unique, |d| self.send_to(remote, d, None));
            for outcome in sent {
                if outcome? {
                    report.sent += 1;
                }
            }
        }
        let manifest = Manifest {
            format: FORMAT.to_string(),
            name: name.to_string(),
            meta: record.meta.clone(),
            entries,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| {
            Error::new(ErrorKind::Io, format!("writing the manifest of {name}: {e}"))
        })?;
        let key = manifest_key(name);
        let opts = PutOptions { key: Some(key.clone()), ..PutOptions::default() };
        let digest = self.store().put_bytes(&json, &opts)?;
        for remote in &targets {
            self.send_to(remote, &digest, Some(&key))?;
        }
        report.manifest = Some(digest);
        if !keep {
            dirs.record_push(name, &report.remotes)?;
        }
        Ok(report)
    }

    /// Holds the scratch directory `name` for `holder`: the local one if it
    /// exists, else one restored from the manifest that `remote` (the first
    /// remote that has it, if `None`) keeps. Returns its record, and whether
    /// it was restored here.
    pub fn restore_dir(
        &self,
        dirs: &Dirs,
        name: &str,
        remote: Option<&str>,
        holder: &Holder,
        progress: &dyn Progress,
    ) -> Result<(DirRecord, bool)> {
        if dirs.list()?.iter().any(|r| r.name == name) {
            return dirs.use_filled(name, 0, holder, |_| Ok(()));
        }
        let manifest = self.manifest(name, remote, progress)?;
        let size: u64 = manifest
            .entries
            .iter()
            .map(|e| if let ManifestEntry::File { size, .. } = e { *size } else { 0 })
            .sum();
        let (record, restored) =
            dirs.use_filled(name, size, holder, |into| self.fill(&manifest, into, progress))?;
        if restored {
            let meta: Vec<(String, String)> = manifest
                .meta
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "id" | "created_at" | crate::dirs::PUSHED_TO)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !meta.is_empty() {
                return Ok((dirs.insert_meta(name, &meta)?, true));
            }
        }
        Ok((record, restored))
    }

    /// The remotes a push goes to: the one named, or every one that takes writes.
    fn write_targets(&self, remote: Option<&str>) -> Result<Vec<&Tier>> {
        match remote {
            Some(name) => {
                let Some(r) = self.remotes().iter().find(|r| r.name() == name) else {
                    return Err(unknown_remote(self, name));
                };
                if !r.writable() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "remote {name} is read-only; give it mode = \"write-through\" to push to it"
                        ),
                    ));
                }
                Ok(vec![r])
            }
            None => {
                let all: Vec<&Tier> = self.remotes().iter().filter(|r| r.writable()).collect();
                if all.is_empty() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "no remote takes writes: add a [[remote]] to the configuration, or name one with --remote",
                    ));
                }
                Ok(all)
            }
        }
    }

    /// The manifest of `name`, from `remote` or the first remote with it.
    fn manifest(
        &self,
        name: &str,
        remote: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<Manifest> {
        let key = Target::Key(manifest_key(name));
        let digest = match remote {
            Some(r) => {
                let Some(remote) = self.remotes().iter().find(|x| x.name() == r) else {
                    return Err(unknown_remote(self, r));
                };
                self.fetch_from(remote, &key, progress)?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "remote {r} has no directory {name} (larder dir push {name} sends one)"
                        ),
                    )
                })?
            }
            None => self.fetch(&key, progress).map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "no remote has a directory {name} (larder dir push {name} sends one)"
                        ),
                    )
                } else {
                    e
                }
            })?,
        };
        let mut bytes = Vec::new();
        self.store().get_to_writer(&Target::Digest(digest), &mut bytes, progress)?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("the manifest of directory {name} is not one: {e}"),
            )
        })?;
        if manifest.format != FORMAT {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the manifest of directory {name} is in the format {}, which this larder does not read ({FORMAT}); upgrade larder",
                    manifest.format
                ),
            ));
        }
        for entry in &manifest.entries {
            check_entry(name, entry)?;
        }
        Ok(manifest)
    }

    /// Writes what `manifest` lists into the empty folder `into`.
    fn fill(&self, manifest: &Manifest, into: &Path, progress: &dyn Progress) -> Result<()> {
        let unique: Vec<(Digest, u64)> = manifest
            .entries
            .iter()
            .filter_map(|e| {
                if let ManifestEntry::File { digest, size, .. } = e {
                    Some((*digest, *size))
                } else {
                    None
                }
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.fetch_all(&unique)?;
        let mut folders = Vec::new();
        for entry in &manifest.entries {
            match entry {
                ManifestEntry::Dir { path, mode } => {
                    let dest = into.join(path);
                    fs::create_dir_all(&dest).map_err(|e| Error::io("create", &dest, e))?;
                    folders.push((dest, *mode));
                }
                ManifestEntry::File { path, digest, mode, .. } => {
                    let dest = into.join(path);
                    if let Some(parent) = dest.parent() {
                        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
                    }
                    self.store().get_to_path(
                        &Target::Digest(*digest),
                        &dest,
                        GetMode::Copy,
                        progress,
                    )?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o777))
                        .map_err(|e| Error::io("set the mode of", &dest, e))?;
                }
                ManifestEntry::Symlink { path, target } => {
                    let dest = into.join(path);
                    if let Some(parent) = dest.parent() {
                        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
                    }
                    std::os::unix::fs::symlink(target, &dest)
                        .map_err(|e| Error::io("link", &dest, e))?;
                }
            }
        }
        // Modes of folders last: a read-only folder is still filled first.
        for (dest, mode) in folders.iter().rev() {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| Error::io("set the mode of", dest, e))?;
        }
        Ok(())
    }
}

/// What directories need of the remote tiers ([`RemoteTiers`]), over the
/// store and remotes of a home, opened when first needed.
pub struct HomeTiers {
    open: Box<dyn Fn() -> Result<Larder> + Send + Sync>,
    larder: OnceLock<Larder>,
}

impl HomeTiers {
    /// Copies kept by the tiers that `open` opens.
    pub fn new(open: impl Fn() -> Result<Larder> + Send + Sync + 'static) -> HomeTiers {
        HomeTiers { open: Box::new(open), larder: OnceLock::new() }
    }

    fn larder(&self) -> Result<&Larder> {
        if let Some(larder) = self.larder.get() {
            return Ok(larder);
        }
        let larder = (self.open)()?;
        Ok(self.larder.get_or_init(|| larder))
    }
}

impl RemoteTiers for HomeTiers {
    fn restore_dir(
        &self,
        name: &str,
        remotes: &[String],
        into: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let larder = self.larder()?;
        let mut last = None;
        for remote in remotes {
            match larder.manifest(name, Some(remote), progress) {
                Ok(manifest) => {
                    tracing::info!("restoring this host's copy of directory {name} from {remote}");
                    return larder.fill(&manifest, into, progress);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("no remote keeps directory {name}"))
        }))
    }

    fn delete_dir(&self, name: &str, remotes: &[String]) -> Result<()> {
        let larder = self.larder()?;
        let key = Target::Key(manifest_key(name));
        for name in remotes {
            if let Some(tier) = larder.remotes().iter().find(|t| t.name() == name) {
                tier.remote().delete(&key)?;
            }
        }
        Ok(())
    }

    fn open_download(&self, key: &str) -> Result<Option<crate::remote::RemoteBlob>> {
        let target = Target::Key(key.to_string());
        for tier in self.larder()?.remotes() {
            match tier.remote().open(&target) {
                Ok(Some(blob)) => return Ok(Some(blob)),
                Ok(None) => {}
                Err(e) => tracing::warn!("asking remote {} for {key}: {e}", tier.name()),
            }
        }
        Ok(None)
    }

    fn send_download(&self, digest: &Digest, key: &str) -> Result<()> {
        self.larder()?.send_now(digest, Some(key))
    }
}

fn unknown_remote(larder: &Larder, name: &str) -> Error {
    let known: Vec<&str> = larder.remotes().iter().map(|r| r.name()).collect();
    Error::new(
        ErrorKind::NotFound,
        format!(
            "no remote is named {name}; the configured ones: {}",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ),
    )
}

/// Lists what is under `dir` into `entries` (parents first, in name order),
/// and its files with their sizes into `files`.
fn walk(
    root: &Path,
    dir: &Path,
    entries: &mut Vec<ManifestEntry>,
    files: &mut Vec<(PathBuf, u64)>,
) -> Result<()> {
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io("read", dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("read", dir, e))?;
    children.sort();
    for path in children {
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        let rel = path
            .strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{}: larder pushes only UTF-8 file names", path.display()),
                )
            })?
            .to_string();
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|e| Error::io("read", &path, e))?;
            let target = target.to_str().map(str::to_string).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{}: a link to a non-UTF-8 name", path.display()),
                )
            })?;
            let entry = ManifestEntry::Symlink { path: rel, target };
            check_entry("", &entry)?;
            entries.push(entry);
        } else if meta.is_dir() {
            entries.push(ManifestEntry::Dir { path: rel, mode });
            walk(root, &path, entries, files)?;
        } else if meta.is_file() {
            entries.push(ManifestEntry::File {
                path: rel,
                digest: Digest::of(b""),
                size: meta.len(),
                mode,
            });
            files.push((path, meta.len()));
        } else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is neither a file, a folder nor a link; larder pushes only those",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses entries that would write outside the directory.
fn check_entry(name: &str, entry: &ManifestEntry) -> Result<()> {
    let (path, link) = match entry {
        ManifestEntry::Dir { path, .. } | ManifestEntry::File { path, .. } => (path, None),
        ManifestEntry::Symlink { path, target } => (path, Some(target)),
    };
    let bad = |why: &str| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("directory {name}: the entry {path:?} {why}; it is refused"),
        )
    };
    let rel = Path::new(path);
    if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("is not a plain relative path"));
    }
    if let Some(target) = link {
        if Path::new(target).is_absolute() {
            return Err(bad("links to an absolute path"));
        }
        // Where the link leads, lexically, from its folder.
        let mut depth: i64 = rel.components().count() as i64 - 1;
        for c in Path::new(target).components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                _ => return Err(bad("has a link target larder cannot follow")),
            }
            if depth < 0 {
                return Err(bad("links outside the directory"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(entry: ManifestEntry, ok: bool) {
        assert_eq!(check_entry("d", &entry).is_ok(), ok, "{entry:?}");
    }

    #[test]
    fn entries_stay_inside_the_directory() {
        let file = |p: &str| ManifestEntry::File {
            path: p.into(),
            digest: Digest::of(b""),
            size: 0,
            mode: 0o644,
        };
        let link = |p: &str, t: &str| ManifestEntry::Symlink { path: p.into(), target: t.into() };
        check(file("a/b"), true);
        check(file("../a"), false);
        check(file("/etc/passwd"), false);
        check(file("a/./b"), true);
        check(file(""), false);
        check(link("a/l", "../b"), true);
        check(link("a/l", "../../b"), false);
        check(link("l", "/etc"), false);
        check(link("l", "x/../../y"), false);
    }
}
