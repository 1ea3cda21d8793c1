//! The wheels and sdists of the served folder (curdling's `curd-server DIR`):
//! indexed at start, and rescanned every so often; a file that changed is
//! indexed again, and one that went is dropped from the index.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use larder::{Error, PutOptions, Store, Target};

use super::index::{FOLDER, FileRow, Index};
use super::names::{self, Kind};
use super::{file_key, meta};

/// What a scan did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Files indexed anew (or again, changed).
    pub added: usize,
    /// Files gone from the folder, dropped from the index.
    pub removed: usize,
    /// Files that are not distributions the index can read.
    pub skipped: usize,
}

/// Folders of a larder home that hold larder's own things, not packages.
const OWN: [&str; 3] = ["store-v1", "dirs", "target"];

/// Indexes the distribution files under `root` that are new or changed, and
/// forgets those that went.
pub fn scan(root: &Path, store: &Store, index: &Index) -> Result<Scan, Error> {
    let mut scan = Scan::default();
    let mut found = Vec::new();
    walk(root, root, &mut found);
    let known: std::collections::HashMap<String, FileRow> =
        index.folder_files()?.into_iter().filter_map(|r| Some((r.path.clone()?, r))).collect();
    let mut seen = std::collections::HashSet::new();
    let mut todo = Vec::new();
    for (path, stamp) in found {
        let shown = path.display().to_string();
        seen.insert(shown.clone());
        if known.get(&shown).is_none_or(|r| r.stamp.as_deref() != Some(stamp.as_str())) {
            todo.push((path, stamp));
        }
    }
    // In batches: one flush of the disk per batch, not one per file.
    for chunk in todo.chunks(256) {
        let (added, skipped) = add_batch(root, chunk, store, index)?;
        scan.added += added;
        scan.skipped += skipped;
    }
    for (path, row) in known {
        if !seen.contains(&path) {
            index.remove(&row.filename)?;
            let _ = store.remove(&Target::Key(file_key(&row.project, &row.filename)), true);
            scan.removed += 1;
        }
    }
    Ok(scan)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || (dir == root && OWN.contains(&name.as_ref())) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(root, &path, out);
        } else if meta.is_file() && names::parse_filename(&name).is_some() {
            out.push((path, format!("{}:{}.{}", meta.len(), meta.mtime(), meta.mtime_nsec())));
        }
    }
}

/// A file to index, read but not yet stored.
struct Prepared {
    path: PathBuf,
    stamp: String,
    filename: String,
    dist: names::DistName,
    meta: meta::Meta,
    /// Where its METADATA waits to be stored, for a wheel.
    metadata_file: Option<PathBuf>,
}

fn prepare(
    path: &Path,
    stamp: &str,
    index: &Index,
    scratch: &Path,
    n: usize,
) -> Result<Prepared, Error> {
    let filename = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dist = names::parse_filename(&filename)
        .ok_or_else(|| Error::new(larder::ErrorKind::InvalidInput, "not a distribution"))?;
    if let Some(other) = index.file(&filename)?
        && other.path.as_deref() != Some(&*path.display().to_string())
    {
        return Err(Error::new(
            larder::ErrorKind::Conflict,
            format!(
                "{filename} is indexed already (from {})",
                other.path.as_deref().unwrap_or(&other.origin)
            ),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    let meta = meta::read(std::io::BufReader::new(file), dist.kind)
        .map_err(|why| Error::new(larder::ErrorKind::InvalidInput, why))?;
    let metadata_file = match (&meta.file, dist.kind) {
        (Some(bytes), Kind::Wheel) => {
            let at = scratch.join(format!("{n}.metadata"));
            std::fs::write(&at, bytes).map_err(|e| Error::io("write", &at, e))?;
            Some(at)
        }
        _ => None,
    };
    Ok(Prepared {
        path: path.to_path_buf(),
        stamp: stamp.to_string(),
        filename,
        dist,
        meta,
        metadata_file,
    })
}

/// Stores and indexes a batch of files; returns how many were added and skipped.
fn add_batch(
    root: &Path,
    batch: &[(PathBuf, String)],
    store: &Store,
    index: &Index,
) -> Result<(usize, usize), Error> {
    let scratch = root.join(format!(".larder-index.{}", larder::holder::ProcessId::current()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io("create", &scratch, e))?;
    let mut skipped = 0;
    let mut prepared = Vec::new();
    for (n, (path, stamp)) in batch.iter().enumerate() {
        match prepare(path, stamp, index, &scratch, n) {
            Ok(p) => prepared.push(p),
            Err(e) => {
                tracing::warn!("{}: {e}; not indexed", path.display());
                skipped += 1;
            }
        }
    }
    let pin = |key: String| PutOptions { key: Some(key), pin: true, ..Default::default() };
    let mut items: Vec<(PathBuf, PutOptions)> = Vec::new();
    for p in &prepared {
        items.push((p.path.clone(), pin(file_key(&p.dist.project, &p.filename))));
        if let Some(m) = &p.metadata_file {
            items.push((
                m.clone(),
                pin(file_key(&p.dist.project, &format!("{}.metadata", p.filename))),
            ));
        }
    }
    let mut results = store.put_files_each(&items, &larder::NoProgress).into_iter();
    let _ = std::fs::remove_dir_all(&scratch);
    let mut rows = Vec::new();
    for p in prepared {
        let stored = results.next();
        let metadata = if p.metadata_file.is_some() { results.next() } else { None };
        let digest = match stored {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::warn!("{}: {e}; not indexed", p.path.display());
                skipped += 1;
                continue;
            }
            None => continue,
        };
        let metadata_sha256 = match metadata {
            Some(Ok(d)) => Some(d.hex()),
            _ => None,
        };
        let file_meta = std::fs::metadata(&p.path).ok();
        rows.push(FileRow {
            filename: p.filename,
            project: p.dist.project,
            version: p.dist.version,
            sha256: Some(digest.hex()),
            size: file_meta.as_ref().map(|m| m.len()),
            upload_time: Some(larder::time::format_rfc3339(
                file_meta.as_ref().map_or(0, |m| m.mtime()),
            )),
            requires_python: p.meta.requires_python,
            metadata_sha256,
            yanked: None,
            origin: FOLDER.to_string(),
            url: None,
            path: Some(p.path.display().to_string()),
            stamp: Some(p.stamp),
        });
    }
    index.put_all(&rows)?;
    Ok((rows.len(), skipped))
}
