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
    pub added: usize,
    pub removed: usize,
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
    for (path, stamp) in found {
        let shown = path.display().to_string();
        seen.insert(shown.clone());
        if known.get(&shown).is_some_and(|r| r.stamp.as_deref() == Some(stamp.as_str())) {
            continue;
        }
        match add(&path, &stamp, store, index) {
            Ok(()) => scan.added += 1,
            Err(e) => {
                tracing::warn!("{}: {e}; not indexed", path.display());
                scan.skipped += 1;
            }
        }
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

fn add(path: &Path, stamp: &str, store: &Store, index: &Index) -> Result<(), Error> {
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
    let key = file_key(&dist.project, &filename);
    let digest =
        store.put_file(path, &PutOptions { key: Some(key), pin: true }, &larder::NoProgress)?;
    let metadata_sha256 = match (&meta.file, dist.kind) {
        (Some(bytes), Kind::Wheel) => {
            let key = file_key(&dist.project, &format!("{filename}.metadata"));
            Some(store.put_bytes(bytes, &PutOptions { key: Some(key), pin: true })?.hex())
        }
        _ => None,
    };
    let modified = std::fs::metadata(path).map(|m| m.mtime()).unwrap_or(0);
    index.put(&FileRow {
        filename,
        project: dist.project,
        version: dist.version,
        sha256: Some(digest.hex()),
        size: std::fs::metadata(path).ok().map(|m| m.len()),
        upload_time: Some(larder::time::format_rfc3339(modified)),
        requires_python: meta.requires_python,
        metadata_sha256,
        yanked: None,
        origin: FOLDER.to_string(),
        url: None,
        path: Some(path.display().to_string()),
        stamp: Some(stamp.to_string()),
    })
}
