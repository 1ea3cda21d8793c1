//! Core metadata of distributions: a wheel's `*.dist-info/METADATA` (also
//! served on its own, PEP 658) and an sdist's `PKG-INFO`.

use std::io::{Read, Seek};

use super::names::Kind;

/// The metadata fields the index needs, and a wheel's METADATA file itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// `Name`.
    pub name: Option<String>,
    /// `Version`.
    pub version: Option<String>,
    /// `Requires-Python`.
    pub requires_python: Option<String>,
    /// `Metadata-Version`.
    pub metadata_version: Option<String>,
    /// The METADATA file of a wheel, byte for byte.
    pub file: Option<Vec<u8>>,
}

/// The largest metadata file read.
const LIMIT: u64 = 16 << 20;

/// How far into an sdist's tar PKG-INFO is looked for: entries, and bytes
/// once decompressed.
const SCAN_ENTRIES: usize = 100_000;
const SCAN_BYTES: u64 = 4 << 30;

/// Reads the metadata of a distribution in `file`. A distribution without any
/// is an error naming what is missing.
pub fn read(file: impl Read + Seek, kind: Kind) -> Result<Meta, String> {
    let bytes = match kind {
        Kind::Wheel => wheel_metadata(file)?,
        Kind::Sdist => sdist_pkg_info(file)?,
    };
    let mut meta = parse(&bytes);
    if kind == Kind::Wheel {
        meta.file = Some(bytes);
    }
    Ok(meta)
}

fn wheel_metadata(file: impl Read + Seek) -> Result<Vec<u8>, String> {
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a wheel (zip): {e}"))?;
    let name = names_of(&zip)
        .into_iter()
        .find(|n| {
            let mut parts = n.split('/');
            matches!((parts.next(), parts.next(), parts.next()), (Some(d), Some("METADATA"), None) if d.ends_with(".dist-info"))
        })
        .ok_or("the wheel has no *.dist-info/METADATA")?;
    let entry = zip.by_name(&name).map_err(|e| format!("{name}: {e}"))?;
    read_limited(entry, &name)
}

fn sdist_pkg_info(mut file: impl Read + Seek) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 4];
    let n = file.read(&mut head).map_err(|e| e.to_string())?;
    file.rewind().map_err(|e| e.to_string())?;
    let is_pkg_info = |path: &str| {
        let mut parts = path.trim_start_matches("./").split('/');
        matches!((parts.next(), parts.next(), parts.next()), (Some(_), Some("PKG-INFO"), None))
    };
    if n >= 2 && head[..2] == [0x50, 0x4b] {
        let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a zip: {e}"))?;
        let name = names_of(&zip)
            .into_iter()
            .find(|n| is_pkg_info(n))
            .ok_or("the sdist has no PKG-INFO")?;
        let entry = zip.by_name(&name).map_err(|e| format!("{name}: {e}"))?;
        return read_limited(entry, &name);
    }
    let decoded: Box<dyn Read> = if n >= 2 && head[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if n >= 3 && &head[..3] == b"BZh" {
        Box::new(bzip2::read::BzDecoder::new(file))
    } else {
        Box::new(file)
    };
    // A compression bomb is not read to its end: PKG-INFO comes early.
    let mut archive = tar::Archive::new(decoded.take(SCAN_BYTES));
    for (i, entry) in archive.entries().map_err(|e| format!("not a tar archive: {e}"))?.enumerate()
    {
        if i >= SCAN_ENTRIES {
            return Err(format!("the sdist has no PKG-INFO in its first {SCAN_ENTRIES} entries"));
        }
        let entry = entry.map_err(|e| format!("a damaged tar archive: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        if is_pkg_info(&path) {
            return read_limited(entry, &path);
        }
    }
    Err("the sdist has no PKG-INFO".to_string())
}

/// The names of a zip's entries that are valid UTF-8.
fn names_of<R: Read + Seek>(zip: &zip::ZipArchive<R>) -> Vec<String> {
    zip.file_names().filter_map(|n| n.ok().map(|n| n.into_owned())).collect()
}

fn read_limited(entry: impl Read, name: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    entry.take(LIMIT + 1).read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > LIMIT {
        return Err(format!("{name} is larger than {} MiB", LIMIT >> 20));
    }
    Ok(bytes)
}

/// Reads the header fields of a core metadata file (an RFC 822 message).
pub fn parse(bytes: &[u8]) -> Meta {
    let text = String::from_utf8_lossy(bytes);
    let mut meta = Meta::default();
    for line in text.lines() {
        if line.is_empty() {
            break; // the description follows
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim().to_string();
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "name" => &mut meta.name,
            "version" => &mut meta.version,
            "requires-python" => &mut meta.requires_python,
            "metadata-version" => &mut meta.metadata_version,
            _ => continue,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value);
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let meta = parse(
            b"Metadata-Version: 2.1\nName: Holy-Grail\nVersion: 1.0\nRequires-Python: >=3.8, <4\nRequires-Dist: x\n\nName: not this\n",
        );
        assert_eq!(meta.name.as_deref(), Some("Holy-Grail"));
        assert_eq!(meta.version.as_deref(), Some("1.0"));
        assert_eq!(meta.requires_python.as_deref(), Some(">=3.8, <4"));
        assert_eq!(meta.metadata_version.as_deref(), Some("2.1"));
    }
}
