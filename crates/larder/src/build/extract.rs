//! Unpacking archives and decompressing streams into a folder, safely: no
//! entry lands outside the folder or writes through a link, links may not
//! point outside it, device files and fifos are refused, and the bytes written
//! are counted against a budget so that a decompression bomb stops early.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::size::format_size;

/// How far archives may expand beyond the bytes that came in, when no size was
/// given: more than this is taken for a decompression bomb.
pub(crate) const MAX_RATIO: u64 = 1000;
/// Slack on top of the ratio, so that small archives of sparse data pass.
const RATIO_SLACK: u64 = 64 << 20;
/// What each entry is counted as on top of its bytes: an inode and a block.
const ENTRY_COST: u64 = 4096;

/// Counts the bytes a build writes and stops it past a limit: the size the
/// user gave (`use --size`), or else [`MAX_RATIO`] times what came in.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// The user's limit on everything the build writes, if any.
    pub(crate) size: Option<u64>,
    /// Bytes written so far, by every source.
    written: AtomicU64,
    /// Bytes that came in so far for the current source.
    pub(crate) raw_in: AtomicU64,
    /// Bytes written so far for the current source.
    source_written: AtomicU64,
}

impl Budget {
    pub(crate) fn new(size: Option<u64>) -> Budget {
        Budget { size, ..Budget::default() }
    }

    /// Starts counting a new source.
    pub(crate) fn next_source(&self) {
        self.raw_in.store(0, Ordering::Relaxed);
        self.source_written.store(0, Ordering::Relaxed);
    }

    /// Total bytes written.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Records a file of `n` bytes that was not written here (a link to a
    /// stored blob) but still counts against `--size`.
    pub(crate) fn charge_file(&self, n: u64) -> io::Result<()> {
        self.charge(n.saturating_add(ENTRY_COST))
    }

    /// Records one more entry (a file, folder or link), which costs an inode
    /// and a block whatever its size: millions of empty entries are a bomb too.
    fn charge_entry(&self) -> io::Result<()> {
        self.charge(ENTRY_COST)
    }

    /// Records `n` more bytes written; fails once past the limit.
    fn charge(&self, n: u64) -> io::Result<()> {
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        let mine = self.source_written.fetch_add(n, Ordering::Relaxed) + n;
        let over = match self.size {
            Some(limit) => total > limit,
            None => {
                let raw = self.raw_in.load(Ordering::Relaxed);
                mine > raw.saturating_mul(MAX_RATIO).saturating_add(RATIO_SLACK)
            }
        };
        if over {
            return Err(io::Error::other(BudgetExceeded {
                size: self.size,
                written: total,
                raw_in: self.raw_in.load(Ordering::Relaxed),
            }));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct BudgetExceeded {
    size: Option<u64>,
    written: u64,
    raw_in: u64,
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.size {
            Some(limit) => write!(
                f,
                "it unpacks to more than the {} given with --size; give a larger --size if that is expected",
                format_size(limit)
            ),
            None => write!(
                f,
                "it unpacked to {} from {}, more than {MAX_RATIO} times its size (a decompression bomb?); give its real size with --size if that is expected",
                format_size(self.written),
                format_size(self.raw_in)
            ),
        }
    }
}

impl std::error::Error for BudgetExceeded {}

/// Compression formats told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    pub(crate) fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader that decompresses `input` as `kind`.
pub(crate) fn decoder<'a>(
    kind: Compression,
    input: impl BufRead + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    })
}

/// A reader that decompresses whatever `input` turns out to be.
pub(crate) fn auto_decoder<'a>(input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::with_capacity(256 << 10, input);
    let head = input.fill_buf()?;
    let kind = Compression::detect(head);
    decoder(kind, input)
}

/// Why an archive was refused, or failed to unpack.
fn refused(step: &str, why: String) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("{step}: {why}; larder refused the archive"))
}

/// Turns an I/O error while unpacking into a larder error for `step`.
pub(crate) fn unpack_error(step: &str, root: &Path, e: io::Error) -> Error {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<BudgetExceeded>()) {
        return Error::new(ErrorKind::InvalidInput, format!("{step}: {inner}"));
    }
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::new(
            ErrorKind::DiskFull,
            format!(
                "{step}: the disk holding {} is full; free space or choose another folder with --dirs",
                root.display()
            ),
        ),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => Error::new(
            ErrorKind::InvalidInput,
            format!("{step}: the archive is damaged or not in this format ({e})"),
        ),
        _ => Error::new(ErrorKind::Io, format!("{step}: {e}")).with_source(e),
    }
}

/// The path of an entry, made relative and checked: `None` if it is absolute
/// or has a `..` in it.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a link at `at` (relative to the root) pointing to `target` stays
/// inside the root, reading the names alone.
fn target_stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = at.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Where a link leads, followed on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// Every step stays inside the root.
    Inside,
    /// A step leaves it.
    Outside,
    /// It never ends: links that lead back to each other.
    Loop,
}

/// Follows the link at `link` (relative to `root`) the way the kernel would,
/// reading links on disk, and says whether every step stays inside `root`.
/// Names that do not exist are followed by name alone.
fn resolve(root: &Path, link: &Path) -> Resolved {
    /// As many links as the kernel follows in one path before it gives up.
    const MAX_HOPS: usize = 40;
    let mut stack: Vec<std::ffi::OsString> =
        link.parent().map(|p| p.iter().map(|c| c.to_os_string()).collect()).unwrap_or_default();
    let Ok(first) = fs::read_link(root.join(link)) else { return Resolved::Outside };
    let mut queue: std::collections::VecDeque<std::ffi::OsString> =
        first.iter().map(|c| c.to_os_string()).collect();
    if first.is_absolute() {
        return Resolved::Outside;
    }
    let mut hops = 0;
    while let Some(part) = queue.pop_front() {
        match part.to_str() {
            Some(".") => continue,
            Some("..") => {
                if stack.pop().is_none() {
                    return Resolved::Outside;
                }
                continue;
            }
            Some("/") => return Resolved::Outside,
            _ => {}
        }
        stack.push(part);
        let here: PathBuf = stack.iter().collect();
        if let Ok(target) = fs::read_link(root.join(&here)) {
            hops += 1;
            if hops > MAX_HOPS {
                return Resolved::Loop;
            }
            if target.is_absolute() {
                return Resolved::Outside;
            }
            stack.pop();
            for c in target.iter().rev() {
                queue.push_front(c.to_os_string());
            }
        }
    }
    Resolved::Inside
}

/// An I/O failure placing the entry `rel`: a name the filesystem will not
/// take is the archive's fault, and says which entry.
fn placing_error(step: &str, root: &Path, rel: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidFilename {
        return refused(
            step,
            format!("entry `{}` has a name the filesystem cannot hold ({e})", shown(rel)),
        );
    }
    unpack_error(step, root, e)
}

/// Makes the folders above `rel` inside `root`, refusing to pass through a
/// link or anything but a folder.
fn make_parents(root: &Path, rel: &Path, step: &str) -> Result<()> {
    let mut here = root.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(()) };
    for part in parent.iter() {
        here.push(part);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    step,
                    format!("entry `{}` would be written through the link `{}`", rel.display(), {
                        here.strip_prefix(root).unwrap_or(&here).display()
                    }),
                ));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(refused(
                    step,
                    format!(
                        "entry `{}` needs `{}` to be a folder, but it is a file",
                        rel.display(),
                        here.strip_prefix(root).unwrap_or(&here).display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&here).map_err(|e| placing_error(step, root, rel, e))?;
            }
            Err(e) => return Err(placing_error(step, root, rel, e)),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` unless it is a folder (later entries win,
/// as in tar), so nothing is written through an old link.
fn clear(path: &Path, root: &Path, step: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => fs::remove_file(path).map_err(|e| unpack_error(step, root, e)),
        Err(_) => Ok(()),
    }
}

/// Permissions for extracted files: the archive's, without setuid, setgid or
/// sticky bits, never writable by others (the directory is shared), and always
/// readable and writable by the owner.
fn file_mode(mode: u32) -> u32 {
    (mode & 0o755) | 0o600
}

/// Permissions for extracted folders: as for files, and always searchable by
/// the owner, so that the build can go on and the folder can be deleted.
fn dir_mode(mode: u32) -> u32 {
    (mode & 0o755) | 0o700
}

/// Writes `data` to a new file at `rel` in `root`, charging the budget.
fn write_file(
    root: &Path,
    rel: &Path,
    data: &mut dyn Read,
    mode: u32,
    budget: &Budget,
    step: &str,
) -> Result<File> {
    make_parents(root, rel, step)?;
    let dest = root.join(rel);
    clear(&dest, root, step)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file_mode(mode))
        .open(&dest)
        .map_err(|e| placing_error(step, root, rel, e))?;
    let mut out = Charged { inner: &mut file, budget };
    io::copy(data, &mut out).map_err(|e| unpack_error(step, root, e))?;
    Ok(file)
}

/// A writer that charges a budget for every byte.
struct Charged<'a, W> {
    inner: W,
    budget: &'a Budget,
}

impl<W: Write> Write for Charged<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.budget.charge(buf.len() as u64)?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses (or copies) `input` into the file `name` in `root`.
pub(crate) fn write_stream(
    input: &mut dyn Read,
    root: &Path,
    name: &str,
    budget: &Budget,
    step: &str,
) -> Result<()> {
    write_file(root, Path::new(name), input, 0o644, budget, step).map(drop)
}

/// Unpacks the tar archive `input` (compressed or not) into `root`, then
/// reads `input` to its end (charged to the budget), so that whatever checks
/// the stream sees all of it.
pub(crate) fn untar(input: &mut dyn Read, root: &Path, budget: &Budget, step: &str) -> Result<()> {
    let decoded = auto_decoder(&mut *input).map_err(|e| unpack_error(step, root, e))?;
    let mut decoded = BufReader::new(decoded);
    let head = decoded.fill_buf().map_err(|e| unpack_error(step, root, e))?;
    if head.starts_with(ZIP_MAGIC) || head.starts_with(EMPTY_ZIP_MAGIC) {
        return Err(wrong_format(step, "a zip archive, not a tar", "unzip"));
    }
    untar_entries(&mut decoded, root, budget, step)?;
    drop(decoded);
    let mut rest = Charged { inner: io::sink(), budget };
    io::copy(input, &mut rest).map_err(|e| unpack_error(step, root, e))?;
    Ok(())
}

fn untar_entries(input: &mut dyn Read, root: &Path, budget: &Budget, step: &str) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut links = Vec::new();
    // The tar reader's own complaints quote the bytes of a header that does
    // not parse, which are binary if the file is no tar at all.
    let header_error = |e: io::Error| {
        if e.kind() == io::ErrorKind::Other
            && e.get_ref().is_some_and(|i| !i.is::<BudgetExceeded>())
        {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{step}: the file is damaged or not a tar archive (a header does not parse)"
                ),
            )
        } else {
            unpack_error(step, root, e)
        }
    };
    let entries = archive.entries().map_err(header_error)?;
    for entry in entries {
        let mut entry = entry.map_err(header_error)?;
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        // Headers for the entries after them, whatever name they carry.
        if matches!(kind, T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink) {
            continue;
        }
        let raw = entry.path().map_err(|e| unpack_error(step, root, e))?.into_owned();
        let link_name = |entry: &tar::Entry<'_, _>| -> Result<PathBuf> {
            let name = entry.link_name().map_err(|e| unpack_error(step, root, e))?;
            Ok(name.map(|t| t.into_owned()).unwrap_or_default())
        };
        let what = match kind {
            T::Directory => Kind::Dir { mode: entry.header().mode().unwrap_or(0o755) },
            T::Regular | T::Continuous | T::GNUSparse => Kind::File {
                mode: entry.header().mode().unwrap_or(0o644),
                mtime: entry.header().mtime().ok(),
            },
            T::Symlink => Kind::Symlink { target: link_name(&entry)? },
            T::Link => Kind::HardLink { target: link_name(&entry)? },
            T::Char | T::Block | T::Fifo => Kind::Special,
            other => Kind::Unknown(format!("{other:?}")),
        };
        let place = Place { root, budget, step };
        place.entry(&raw, what, &mut entry, &mut links)?;
    }
    check_links(root, &links, step)
}

/// What an archive entry is, whichever format it came from.
enum Kind {
    Dir {
        mode: u32,
    },
    /// Its bytes are the entry's data.
    File {
        mode: u32,
        mtime: Option<u64>,
    },
    Symlink {
        target: PathBuf,
    },
    /// A second name for a file the archive made before.
    HardLink {
        target: PathBuf,
    },
    /// A device file or a fifo.
    Special,
    Unknown(String),
}

/// Where entries go: the one place the safety checks of every archive
/// format live, so that tar and zip cannot drift apart.
struct Place<'a> {
    root: &'a Path,
    budget: &'a Budget,
    step: &'a str,
}

/// The longest name of one path component, and of a whole path, that
/// Linux filesystems take (`NAME_MAX`, `PATH_MAX`).
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4095;

impl Place<'_> {
    /// Places the entry `raw` (its name in the archive) of kind `kind`,
    /// reading a file's bytes from `data`: checks its path, charges the
    /// budget, and refuses anything that could land outside the root or
    /// write through a link. Links made are added to `links`, to be followed
    /// once every entry is in place.
    fn entry(
        &self,
        raw: &Path,
        kind: Kind,
        data: &mut dyn Read,
        links: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let (root, step) = (self.root, self.step);
        let Some(rel) = safe_relative(raw) else {
            return Err(refused(
                step,
                format!("entry `{}` has an absolute path or `..`", shown(raw)),
            ));
        };
        self.budget.charge_entry().map_err(|e| unpack_error(step, root, e))?;
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        self.check_length(&rel)?;
        let dest = root.join(&rel);
        let placed = match kind {
            Kind::Dir { mode } => {
                make_parents(root, &rel, step)?;
                // The entry's own name is looked at, not what a link there
                // points to: a link is replaced, never followed.
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        clear(&dest, root, step)?;
                        fs::create_dir(&dest).map_err(|e| self.io(&rel, e))?;
                    }
                    Err(_) => fs::create_dir(&dest).map_err(|e| self.io(&rel, e))?,
                }
                fs::set_permissions(&dest, fs::Permissions::from_mode(dir_mode(mode)))
            }
            Kind::File { mode, mtime } => {
                let file = write_file(root, &rel, data, mode, self.budget, step)?;
                let when = mtime.and_then(|secs| {
                    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
                });
                if let Some(when) = when {
                    let _ = file.set_modified(when);
                }
                Ok(())
            }
            Kind::Symlink { target } => {
                if !target_stays_inside(&rel, &target) {
                    return Err(refused(
                        step,
                        format!(
                            "entry `{}` is a link to `{}`, outside the directory",
                            shown(&rel),
                            shown(&target)
                        ),
                    ));
                }
                make_parents(root, &rel, step)?;
                clear(&dest, root, step)?;
                let made = std::os::unix::fs::symlink(&target, &dest);
                links.push(rel.clone());
                made
            }
            Kind::HardLink { target } => {
                let source = safe_relative(&target).filter(|t| !t.as_os_str().is_empty());
                let Some(source) = source else {
                    return Err(refused(
                        step,
                        format!(
                            "entry `{}` is a hard link to `{}`, outside the directory",
                            shown(&rel),
                            shown(&target)
                        ),
                    ));
                };
                // The source must be a file this archive already made, reached
                // without passing through a link.
                make_parents(root, &source, step)?;
                let is_file =
                    fs::symlink_metadata(root.join(&source)).is_ok_and(|m| m.file_type().is_file());
                if !is_file {
                    return Err(refused(
                        step,
                        format!(
                            "entry `{}` is a hard link to `{}`, which is not a file of the archive",
                            shown(&rel),
                            shown(&source)
                        ),
                    ));
                }
                make_parents(root, &rel, step)?;
                clear(&dest, root, step)?;
                fs::hard_link(root.join(&source), &dest)
            }
            Kind::Special => {
                return Err(refused(
                    step,
                    format!("entry `{}` is a device file or a fifo", shown(&rel)),
                ));
            }
            Kind::Unknown(what) => {
                return Err(refused(
                    step,
                    format!("entry `{}` has an unknown type ({what})", shown(&rel)),
                ));
            }
        };
        placed.map_err(|e| self.io(&rel, e))
    }

    /// Refuses an entry whose name no filesystem here could hold, naming it,
    /// before anything is made for it.
    fn check_length(&self, rel: &Path) -> Result<()> {
        let full = self.root.join(rel).as_os_str().len();
        let longest = rel.iter().map(|c| c.len()).max().unwrap_or(0);
        if longest > NAME_MAX || full > PATH_MAX {
            return Err(refused(
                self.step,
                format!(
                    "entry `{}` has a path too long for the filesystem ({} bytes, {} in its longest part; at most {PATH_MAX} and {NAME_MAX})",
                    shown(rel),
                    rel.as_os_str().len(),
                    longest
                ),
            ));
        }
        Ok(())
    }

    fn io(&self, rel: &Path, e: io::Error) -> Error {
        placing_error(self.step, self.root, rel, e)
    }
}

/// A path for a message: whole if short, else its start and its length.
fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    match text.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Checks, once everything is unpacked, that every link resolves inside the
/// root: links to links can escape where each alone looked harmless.
fn check_links(root: &Path, links: &[PathBuf], step: &str) -> Result<()> {
    for link in links {
        // A later entry of the same name replaced it: nothing to follow.
        let still_a_link = fs::symlink_metadata(root.join(link)).is_ok_and(|m| m.is_symlink());
        if !still_a_link {
            continue;
        }
        let why = match resolve(root, link) {
            Resolved::Inside => continue,
            Resolved::Outside => "leads outside the directory",
            Resolved::Loop => "is part of a loop of links that never ends in a file or folder",
        };
        let _ = fs::remove_file(root.join(link));
        return Err(refused(step, format!("the link `{}` {why}", shown(link))));
    }
    Ok(())
}

/// Checks every link under `root` (the whole build, whichever source made
/// it): links made by different archives can lead outside together.
pub(crate) fn check_all_links(root: &Path) -> Result<()> {
    let mut links = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = fs::read_dir(root.join(&rel)).map_err(|e| Error::io("read", root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", root, e))?;
            let path = rel.join(entry.file_name());
            match entry.file_type() {
                Ok(t) if t.is_symlink() => links.push(path),
                Ok(t) if t.is_dir() => stack.push(path),
                _ => {}
            }
        }
    }
    check_links(root, &links, "the recipe's files")
}

/// The first bytes of a zip archive's first entry, and of an empty zip.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const EMPTY_ZIP_MAGIC: &[u8] = b"PK\x05\x06";

/// A file given to the wrong unpacking step (as its first bytes tell).
fn wrong_format(step: &str, what: &str, instead: &str) -> Error {
    let used = step.split(' ').next().unwrap_or(step);
    Error::new(
        ErrorKind::InvalidInput,
        format!("{step}: this is {what}; write `{instead}` instead of `{used}` in the recipe"),
    )
}

/// Unpacks the zip archive in `file` into `root`.
pub(crate) fn unzip(file: File, root: &Path, budget: &Budget, step: &str) -> Result<()> {
    let mut head = [0u8; 512];
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0)
        .map_err(|e| unpack_error(step, root, e))?;
    let head = &head[..n];
    if !head.starts_with(ZIP_MAGIC) {
        if head.len() > 262 && &head[257..262] == b"ustar" {
            return Err(wrong_format(step, "a tar archive, not a zip", "tar"));
        }
        if Compression::detect(head) != Compression::None {
            return Err(wrong_format(
                step,
                "a compressed file (a .tar.gz or the like), not a zip",
                "tar",
            ));
        }
    }
    let zip_error = |e: zip::result::ZipError| match e {
        zip::result::ZipError::Io(e) => unpack_error(step, root, e),
        other => Error::new(
            ErrorKind::InvalidInput,
            format!("{step}: the archive is damaged or not a zip file ({other})"),
        ),
    };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_error)?;
    let mut links = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_error)?;
        let raw = PathBuf::from(entry.name().map_err(zip_error)?.into_owned());
        let mode = entry.unix_mode().unwrap_or(0o644);
        let kind = if entry.is_dir() {
            Kind::Dir { mode }
        } else if entry.is_symlink() {
            let mut target = String::new();
            (&mut entry).take(4096).read_to_string(&mut target).map_err(|e| {
                refused(step, format!("entry `{}` is a link with a bad target ({e})", shown(&raw)))
            })?;
            Kind::Symlink { target: PathBuf::from(target) }
        } else {
            const S_IFMT: u32 = 0o170000;
            const S_IFREG: u32 = 0o100000;
            if mode & S_IFMT != 0 && mode & S_IFMT != S_IFREG {
                Kind::Special
            } else {
                Kind::File { mode, mtime: None }
            }
        };
        Place { root, budget, step }.entry(&raw, kind, &mut entry, &mut links)?;
    }
    check_links(root, &links, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(safe_relative(Path::new(input)), expected.map(PathBuf::from), "{input}");
        };
        check("a/b", Some("a/b"));
        check("./a/./b", Some("a/b"));
        check("/etc/passwd", None);
        check("a/../../b", None);
        check("a/..", None);
        check("./", Some(""));
    }

    #[test]
    fn link_targets_by_name() {
        let check = |at: &str, target: &str, inside: bool| {
            assert_eq!(target_stays_inside(Path::new(at), Path::new(target)), inside, "{at}");
        };
        check("a", "b", true);
        check("a", ".", true);
        check("a", "..", false);
        check("d/a", "..", true);
        check("d/a", "../..", false);
        check("d/a", "../x/../y", true);
        check("a", "/etc", false);
    }

    #[test]
    fn links_through_links_are_followed_on_disk() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::os::unix::fs::symlink(".", r.join("y")).expect("link");
        std::os::unix::fs::symlink("y/..", r.join("x")).expect("link");
        std::os::unix::fs::symlink("y/y/y", r.join("z")).expect("link");
        fs::create_dir(r.join("d")).expect("dir");
        std::os::unix::fs::symlink("../d/../missing", r.join("d/ok")).expect("link");
        assert_eq!(resolve(r, Path::new("y")), Resolved::Inside);
        assert_eq!(resolve(r, Path::new("x")), Resolved::Outside, "y/.. is the root's parent");
        assert_eq!(resolve(r, Path::new("z")), Resolved::Inside);
        assert_eq!(resolve(r, Path::new("d/ok")), Resolved::Inside);
        std::os::unix::fs::symlink("a", r.join("b")).expect("link");
        std::os::unix::fs::symlink("b", r.join("a")).expect("link");
        assert_eq!(resolve(r, Path::new("a")), Resolved::Loop, "a loop never resolves");
    }

    fn untar_bytes(archive: &[u8], root: &Path) -> Result<()> {
        untar(&mut &archive[..], root, &Budget::new(None), "tar test.tar")
    }

    /// A tar whose entries' names may be long (GNU long names).
    fn long_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(0);
            if kind.is_symlink() {
                builder.append_link(&mut header, name, link).expect("append link");
            } else {
                builder.append_data(&mut header, name, &b""[..]).expect("append");
            }
        }
        builder.into_inner().expect("tar")
    }

    /// Regression: a path deeper than the filesystem takes ended in exit 6
    /// with a bare `File name too long (os error 36)`.
    #[test]
    fn a_too_deep_path_is_refused_naming_its_entry() {
        let root = tempfile::tempdir().expect("tempdir");
        let deep = format!("{}file", "directory-name/".repeat(300));
        let archive = long_tar(&[(&deep, tar::EntryType::Regular, "")]);
        let err = untar_bytes(&archive, root.path()).expect_err("too deep");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let text = err.to_string();
        assert!(text.contains("entry `directory-name/directory-name/"), "{text}");
        assert!(text.contains("has a path too long for the filesystem (4504 bytes"), "{text}");
        assert!(text.contains("larder refused the archive") && text.len() < 400, "{text}");
        let long_name = format!("{}.txt", "n".repeat(300));
        let archive = long_tar(&[(&long_name, tar::EntryType::Regular, "")]);
        let err = untar_bytes(&archive, root.path()).expect_err("too long");
        assert!(err.to_string().contains("304 in its longest part"), "{err}");
    }

    /// Regression: links that lead to each other were refused as leading
    /// outside the directory.
    #[test]
    fn a_loop_of_links_is_refused_as_a_loop() {
        let root = tempfile::tempdir().expect("tempdir");
        let archive =
            long_tar(&[("a", tar::EntryType::Symlink, "b"), ("b", tar::EntryType::Symlink, "a")]);
        let err = untar_bytes(&archive, root.path()).expect_err("loop");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("the link `a` is part of a loop of links"), "{err}");
    }

    fn zip_bytes(build: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>)) -> File {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        build(&mut writer);
        let bytes = writer.finish().expect("zip").into_inner();
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&bytes).expect("write");
        std::io::Seek::rewind(&mut file).expect("rewind");
        file
    }

    /// Regression: zip took a folder entry over a link to a folder for the
    /// folder itself (it followed the link), where tar replaced the link.
    #[test]
    fn a_folder_entry_replaces_a_link_in_zip_as_in_tar() {
        let options = zip::write::SimpleFileOptions::default();
        let zipped = zip_bytes(|w| {
            w.add_directory("real/", options.unix_permissions(0o755)).expect("dir");
            w.add_symlink("d", "real", options).expect("link");
            w.add_directory("d/", options.unix_permissions(0o700)).expect("dir");
        });
        let root = tempfile::tempdir().expect("tempdir");
        unzip(zipped, root.path(), &Budget::new(None), "unzip test.zip").expect("unzip");
        let tarred = long_tar(&[
            ("real/", tar::EntryType::Directory, ""),
            ("d", tar::EntryType::Symlink, "real"),
            ("d/", tar::EntryType::Directory, ""),
        ]);
        let other = tempfile::tempdir().expect("tempdir");
        untar_bytes(&tarred, other.path()).expect("untar");
        for r in [root.path(), other.path()] {
            let d = fs::symlink_metadata(r.join("d")).expect("d");
            assert!(
                d.is_dir() && !d.file_type().is_symlink(),
                "{}: d is a folder now",
                r.display()
            );
            assert!(r.join("real").is_dir());
        }
    }

    #[test]
    fn compression_is_detected() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(Compression::detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]), Compression::Xz);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
    }
}
