//! Archives for tests, honest and crafted: tar entries are written header by
//! header, so names with `..`, absolute paths, links and devices go in as given.

use std::io::Write;

/// One entry of a test archive.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str),
    Fifo(&'a str),
}

/// A tar archive of `entries`, written as they are.
pub fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match entry {
            Entry::File(n, d) => (n, tar::EntryType::Regular, d, None),
            Entry::Dir(n) => (n, tar::EntryType::Directory, b"", None),
            Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", Some(t)),
            Entry::Hardlink(n, t) => (n, tar::EntryType::Link, b"", Some(t)),
            Entry::CharDevice(n) => (n, tar::EntryType::Char, b"", None),
            Entry::Fifo(n) => (n, tar::EntryType::Fifo, b"", None),
        };
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().expect("gnu header");
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    enc.write_all(data).expect("bzip2");
    enc.finish().expect("bzip2")
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(data).expect("xz");
    enc.finish().expect("xz")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

/// A zip archive: files, and symlinks written with `->` in the name
/// (`link->target`).
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        if let Some((link, target)) = name.split_once("->") {
            zip.add_symlink(link, target, options).expect("symlink");
        } else {
            zip.start_file(*name, options).expect("start");
            zip.write_all(data).expect("write");
        }
    }
    zip.finish().expect("finish zip").into_inner()
}

/// The md5 of `data` in hex, with the system's md5sum.
pub fn md5_hex(data: &[u8]) -> String {
    sum_hex("md5sum", data)
}

/// The digest of `data` in hex by a coreutils tool (`sha1sum`, `sha512sum`).
pub fn sum_hex(tool: &str, data: &[u8]) -> String {
    let mut child = std::process::Command::new(tool)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect(tool);
    child.stdin.take().expect("stdin").write_all(data).expect("write");
    let out = child.wait_with_output().expect(tool);
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// The sha256 of `data` in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    crate::util::digest_of(data).trim_start_matches("sha256:").to_string()
}
