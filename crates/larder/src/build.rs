//! Building a shared directory from its recipe, into a staging folder that the
//! caller renames into place once everything succeeded.
//!
//! Each source is one loader and its transforms. Downloads (`http:`, `dirac:`)
//! go through the store under a key named after the loader and its checksums,
//! so the same download for another directory, or for a rebuild, costs
//! nothing. A fresh download is streamed three ways at once: into the store,
//! through the checksums, and into the unpacker on a second thread; the blob is
//! committed only if the checksums match and the unpacking succeeded, so a bad
//! download leaves nothing behind.
//!
//! An `http:` download that no checksum pins may change on its server. Each
//! time a directory is built from one kept in the store, the server is asked
//! whether it changed (`If-None-Match`, `If-Modified-Since`, with the ETag
//! and Last-Modified kept beside the blob in the store's index): `304` reuses
//! the kept copy, new bytes replace it, and a server that cannot be reached
//! leaves the kept copy in use, with a warning. The sha256 of such a download
//! is printed in a form that pins it.

mod checksum;
pub(crate) mod extract;
mod source;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::env::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpOptions;
use crate::http::download::{Download, Revalidated, Validators};
use crate::progress::Progress;
use crate::recipe::{Algorithm, Checksum, Loader, Recipe, Source, Transform};
use crate::remote::RemoteConfig;
use crate::store::{GetMode, PutOptions, Store, Target};
use checksum::Checker;
pub(crate) use extract::Budget;
use extract::Compression;

/// What a build needs.
pub(crate) struct Build<'a> {
    pub(crate) store: &'a Store,
    /// How downloads talk HTTP.
    pub(crate) http: &'a HttpOptions,
    /// The configured remotes, whose endpoints and regions `s3://` loaders
    /// borrow for their bucket.
    pub(crate) remotes: &'a [RemoteConfig],
    /// Credentials and defaults for `s3://` loaders.
    pub(crate) env: &'a Environment,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) budget: &'a Budget,
    /// A folder beside the staging folder for files a build needs for a while
    /// (a zip to unpack, what a loader's tool writes); created on demand, and
    /// removed by the caller. Never inside the staging folder, where an
    /// archive's entries could collide with it.
    pub(crate) scratch: &'a Path,
    /// Download again what the store keeps from earlier downloads.
    pub(crate) refresh: bool,
    /// The remote tiers, asked for a download before its origin and sent it
    /// after, so hosts that share them download each file once.
    pub(crate) tiers: Option<&'a dyn crate::dirs::RemoteTiers>,
}

/// Builds every source of `recipe` into `staging`.
pub(crate) fn build(b: &Build<'_>, recipe: &Recipe, staging: &Path) -> Result<()> {
    let mut unpinned = Vec::new();
    for (i, source) in recipe.sources.iter().enumerate() {
        b.budget.next_source();
        let plan = Plan::new(i + 1, source);
        let loaded = build_source(b, &plan, staging)?;
        if let (Some(digest), true) = (loaded, plan.is_unchecked()) {
            unpinned.push((plan.label.clone(), digest, plan.pinned(&digest)));
        }
    }
    extract::check_all_links(staging)?;
    // Said once the build stands: a failed one has nothing worth pinning.
    for (label, digest, pinned) in unpinned {
        tracing::warn!(
            "{label} is not checked against a checksum, so its server may change it; its sha256 is {}; \
             to pin it, write it in the recipe as `{pinned}`",
            digest.hex()
        );
    }
    Ok(())
}

/// The key under which a download is kept in the store: the same loader with
/// the same checksums is the same file.
pub(crate) fn download_key(source: &Source) -> String {
    let mut text = source.loader.to_string();
    for sum in raw_checks(source) {
        text.push(' ');
        text.push_str(&format!("{}:{}", sum.algorithm.name(), sum.hex));
    }
    format!("larder/downloads/{}", Digest::of(text.as_bytes()).hex())
}

/// The checksums that apply to the loaded bytes themselves: those right after
/// the loader, before any decompression.
fn raw_checks(source: &Source) -> impl Iterator<Item = &Checksum> {
    source.transforms.iter().map_while(|t| match t {
        Transform::Check(c) => Some(c),
        _ => None,
    })
}

/// How one source is built.
struct Plan<'a> {
    /// Its place in the recipe, from 1.
    number: usize,
    source: &'a Source,
    /// The checksums of the loaded bytes.
    raw_checks: Vec<&'a Checksum>,
    /// The transforms after those.
    rest: &'a [Transform],
    /// The file it makes when it is not unpacked.
    name: String,
    /// The name people know it by, for messages: the file's name as loaded.
    label: String,
}

impl<'a> Plan<'a> {
    fn new(number: usize, source: &'a Source) -> Plan<'a> {
        let raw_checks: Vec<&Checksum> = raw_checks(source).collect();
        let rest = &source.transforms[raw_checks.len()..];
        let label = source::file_name(&source.loader, number);
        let mut name = label.clone();
        for t in rest {
            name = match t {
                Transform::Gunzip => strip_suffix(&name, &[(".tgz", ".tar"), (".gz", "")]),
                Transform::Unxz => strip_suffix(&name, &[(".txz", ".tar"), (".xz", "")]),
                Transform::Unzstd => {
                    strip_suffix(&name, &[(".tzst", ".tar"), (".zst", ""), (".zstd", "")])
                }
                _ => name,
            };
        }
        if name.len() > 255 {
            name = format!("source-{number}");
        }
        Plan { number, source, raw_checks, rest, name, label }
    }

    /// Whether the source ends in `unzip`, which needs the whole file at hand.
    fn unzips(&self) -> bool {
        self.rest.last() == Some(&Transform::Unzip)
    }

    /// Whether the loaded bytes land as they are, as one file.
    fn is_plain(&self) -> bool {
        self.rest.iter().all(|t| matches!(t, Transform::Check(_)))
    }

    /// Whether nothing in the recipe pins what is loaded: no checksum at all.
    fn is_unchecked(&self) -> bool {
        !self.source.transforms.iter().any(|t| matches!(t, Transform::Check(_)))
    }

    /// The URL of an `http:` download that no checksum pins: one whose kept
    /// copy is checked with its server before it is used again.
    fn revalidated_url(&self) -> Option<&str> {
        match &self.source.loader {
            Loader::Http(url) if self.is_unchecked() => Some(url),
            _ => None,
        }
    }

    /// This source as a recipe's steps, pinned to the loaded bytes `digest`.
    fn pinned(&self, digest: &Digest) -> Recipe {
        let mut source = self.source.clone();
        let sum = Checksum { algorithm: Algorithm::Sha256, hex: digest.hex() };
        source.transforms.insert(0, Transform::Check(sum));
        Recipe { sources: vec![source] }
    }
}

fn strip_suffix(name: &str, suffixes: &[(&str, &str)]) -> String {
    for (suffix, replacement) in suffixes {
        if let Some(stem) = name.strip_suffix(suffix)
            && !stem.is_empty()
        {
            return format!("{stem}{replacement}");
        }
    }
    format!("{name}.out")
}

/// Builds one source into `staging`. Returns the digest of the loaded bytes
/// of a download, when it is known.
fn build_source(b: &Build<'_>, plan: &Plan<'_>, staging: &Path) -> Result<Option<Digest>> {
    match &plan.source.loader {
        Loader::Http(_) | Loader::Dirac(_) | Loader::S3 { .. } => {
            let key = download_key(plan.source);
            let mut changed = None;
            match kept_download(b, plan, &key)? {
                Kept::Use { digest, file, size } => {
                    let input = Input::Blob { digest, file, size };
                    unpack_input(b, plan, input, &[], staging)?;
                    return Ok(Some(digest));
                }
                Kept::Changed(download) => changed = Some(download),
                Kept::None => {}
            }
            let scratch = b.scratch.join(format!("fetch-{}", plan.number));
            let mut opened = changed.map(Opened::http);
            // Another host may have downloaded it into a remote tier: read
            // from there, checked as from its origin. Not an unpinned
            // download, which is checked with its origin anyway.
            let mut from_remote = false;
            if let (None, Some(tiers), false) = (&opened, b.tiers, b.refresh)
                && plan.revalidated_url().is_none()
            {
                match tiers.open_download(&key) {
                    Ok(Some(blob)) => {
                        tracing::info!(key, "{}: from a remote tier", plan.label);
                        let (reader, total) = (blob.reader, blob.size);
                        opened = Some(Opened { reader, total, validators: Validators::default() });
                        from_remote = true;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("cannot ask the remotes for {}: {e}", plan.label),
                }
            }
            let opened = match opened {
                Some(opened) => Ok(opened),
                None => source::open_remote(b, &plan.source.loader, &scratch),
            };
            let fetched = opened.and_then(|opened| match opened.total {
                // Too large for the store: unpack it without keeping it.
                Some(t) if t > b.store.capacity() => {
                    tracing::info!(
                        "{} ({t} bytes) is larger than the store; it is not kept",
                        plan.label
                    );
                    let input = Input::Stream(opened.reader);
                    unpack_input(b, plan, input, &plan.raw_checks, staging).map(|()| None)
                }
                _ => {
                    let digest =
                        through_store(b, plan, opened.reader, opened.total, &key, staging)?;
                    if let (Some(tiers), Some(digest), false) = (b.tiers, digest, from_remote)
                        && let Err(e) = tiers.send_download(&digest, &key)
                    {
                        tracing::warn!("cannot send {} to the remotes: {e}", plan.label);
                    }
                    if let Some(digest) = digest.filter(|_| !opened.validators.is_empty()) {
                        let v = &opened.validators;
                        let recorded = b.store.set_download_validators(
                            &key,
                            &digest,
                            v.etag.as_deref(),
                            v.last_modified.as_deref(),
                        );
                        if let Err(e) = recorded {
                            tracing::warn!("cannot record the version of {}: {e}", plan.label);
                        }
                    }
                    Ok(digest)
                }
            });
            let _ = fs::remove_dir_all(&scratch);
            fetched
        }
        Loader::Larder(digest) => {
            let (digest, file, size) =
                b.store.open_verified(&Target::Digest(*digest), b.progress)?;
            let input = Input::Blob { digest, file, size };
            unpack_input(b, plan, input, &plan.raw_checks, staging).map(|()| None)
        }
        Loader::File(path) => {
            let file = File::open(path).map_err(|e| Error::io("read", path, e))?;
            let size = file.metadata().map_err(|e| Error::io("read", path, e))?.len();
            unpack_input(b, plan, Input::File { file, size }, &plan.raw_checks, staging)
                .map(|()| None)
        }
        Loader::Exec(command) => {
            let reader = source::run_command(command)?;
            unpack_input(b, plan, Input::Stream(Box::new(reader)), &plan.raw_checks, staging)
                .map(|()| None)
        }
    }
}

/// A remote loader opened: its bytes, their length if known, and what the
/// server said of their version (nothing, but for `http:`).
pub(crate) struct Opened {
    pub(crate) reader: Box<dyn Read>,
    pub(crate) total: Option<u64>,
    pub(crate) validators: Validators,
}

impl Opened {
    pub(crate) fn http(download: Box<Download>) -> Opened {
        let total = download.total();
        let validators = download.validators().clone();
        Opened { reader: download, total, validators }
    }
}

/// What the store keeps of a download, and whether to use it.
enum Kept {
    /// Nothing usable: download it.
    None,
    /// Its kept copy, checked against the recipe (and its server).
    Use { digest: Digest, file: File, size: u64 },
    /// Its server has a new version, being downloaded.
    Changed(Box<Download>),
}

/// Looks for the download of `plan` kept under `key` and decides whether it
/// serves: it must match the recipe's checksums, and an unpinned `http:`
/// download must still be what its server has (or the server be out of reach).
fn kept_download(b: &Build<'_>, plan: &Plan<'_>, key: &str) -> Result<Kept> {
    if b.refresh {
        tracing::info!("{}: downloading it again (--refresh)", plan.label);
        return Ok(Kept::None);
    }
    let found = b.store.open_verified(&Target::Key(key.to_string()), b.progress);
    let (digest, file, size) = match found {
        Ok(found) => found,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
            return Ok(Kept::None);
        }
        Err(e) => return Err(e),
    };
    // The key is computable from a public recipe, so what it names is checked
    // against the recipe like a fresh download before anything is unpacked.
    if let Some(m) = cached_matches(b, plan, digest, &file, size)? {
        tracing::warn!(
            "{} in the store under {key} has {} {}, not the recipe's {}; downloading it again",
            plan.label,
            m.expected.algorithm.name(),
            m.actual,
            m.expected.hex
        );
        drop(file);
        let _ = b.store.remove(&Target::Key(key.to_string()), false);
        return Ok(Kept::None);
    }
    let Some(url) = plan.revalidated_url() else {
        tracing::info!(key, "{} is in the store already", plan.label);
        return Ok(Kept::Use { digest, file, size });
    };
    let (known, checked_at) = match b.store.download_version(key)? {
        Some(v) => {
            (Validators { etag: v.etag, last_modified: v.last_modified }, Some(v.checked_at))
        }
        None => (Validators::default(), None),
    };
    match Download::open_unless_unchanged(url, b.http, &known) {
        Ok(Revalidated::Unchanged) => {
            tracing::info!(key, "{} is unchanged on its server; using the kept copy", plan.label);
            Ok(Kept::Use { digest, file, size })
        }
        Ok(Revalidated::Changed(download)) => {
            tracing::info!(
                "{} changed on its server (or cannot be asked conditionally); downloading it again",
                plan.label
            );
            Ok(Kept::Changed(download))
        }
        Err(e) => {
            let e = source::read_error(e);
            let when = checked_at
                .map(|at| format!(", as its server had it at {}", crate::time::format_rfc3339(at)))
                .unwrap_or_default();
            tracing::warn!(
                "cannot ask whether {} changed ({e}); using the copy kept in the store \
                 (sha256:{}{when}); `larder use --refresh` downloads it again",
                plan.label,
                digest.hex()
            );
            Ok(Kept::Use { digest, file, size })
        }
    }
}

/// Whether a blob kept under a download's key matches the recipe's checksums
/// of the loaded bytes; `Some` names the first that does not. A sha256 is the
/// blob's own digest; any other checksum reads the blob once.
fn cached_matches(
    b: &Build<'_>,
    plan: &Plan<'_>,
    digest: Digest,
    file: &File,
    size: u64,
) -> Result<Option<checksum::Mismatch>> {
    let own = |c: &Checksum| c.algorithm == Algorithm::Sha256;
    if let Some(sum) = plan.raw_checks.iter().find(|c| own(c))
        && sum.hex != digest.hex()
    {
        return Ok(Some(checksum::Mismatch { expected: (*sum).clone(), actual: digest.hex() }));
    }
    let mut checker = Checker::new(plan.raw_checks.iter().copied().filter(|c| !own(c)));
    if checker.is_empty() {
        return Ok(None);
    }
    b.progress.start(&format!("checking {}", plan.label), Some(size));
    let mut reading = ProgressReader { inner: file, progress: b.progress };
    let read = copy_checking(&mut reading, &mut checker);
    b.progress.finish();
    read.map_err(|e| Error::io("read", Path::new(&plan.label), e))?;
    let mut rewind = file;
    std::io::Seek::rewind(&mut rewind).map_err(|e| Error::io("read", Path::new(&plan.label), e))?;
    Ok(checker.finish())
}

/// A reader that reports how far it got.
struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// What a source's bytes come from, once loaded.
enum Input {
    /// A blob of the store, verified.
    Blob { digest: Digest, file: File, size: u64 },
    /// A local file.
    File { file: File, size: u64 },
    /// Anything else: a command's output.
    Stream(Box<dyn Read>),
}

/// Streams a fresh download into the store and, at the same time, into the
/// unpacker; keeps the blob only if everything checks out.
fn through_store(
    b: &Build<'_>,
    plan: &Plan<'_>,
    reader: Box<dyn Read>,
    total: Option<u64>,
    key: &str,
    staging: &Path,
) -> Result<Option<Digest>> {
    let what = format!("downloading {}", plan.label);
    let failure = Arc::new(Mutex::new(None));
    let keep = PutOptions { key: Some(key.to_string()), pin: false, ..Default::default() };
    let tee = |to_unpacker| Tee {
        inner: reader,
        checker: Checker::new(plan.raw_checks.iter().copied()),
        to_unpacker,
        unpacker_stopped: false,
        budget: b.budget,
        failure: failure.clone(),
    };
    if plan.is_plain() {
        // Nothing to overlap: store it, then link it out of the store.
        let mut tee = tee(None);
        let pending = b.store.stage_stream(&mut tee, &what, total, b.progress);
        let pending = pending.map_err(|e| take(&failure).unwrap_or(e))?;
        check_sums(tee.checker, &plan.label)?;
        let digest = pending.commit(&keep)?;
        let (digest, file, size) = b.store.open_verified(&Target::Digest(digest), b.progress)?;
        unpack_input(b, plan, Input::Blob { digest, file, size }, &[], staging)?;
        return Ok(Some(digest));
    }
    if plan.unzips() {
        // Zip needs the whole file: unpack the staged bytes, then keep them.
        let mut tee = tee(None);
        let pending = b.store.stage_stream(&mut tee, &what, total, b.progress);
        let pending = pending.map_err(|e| take(&failure).unwrap_or(e))?;
        check_sums(tee.checker, &plan.label)?;
        extract::unzip(pending.open()?, staging, b.budget, &step("unzip", plan))?;
        return Ok(keep_download(pending, &keep, &plan.label));
    }
    let (unpacked, staged, checker, unpacker_stopped) = std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Vec<u8>>(8);
        let unpacker = scope.spawn(move || {
            let mut input = ChannelReader { rx, buf: Vec::new(), pos: 0 };
            let result = unpack_stream(&mut input, plan, b.budget, staging);
            if result.is_ok() {
                // Let the download finish whatever follows the archive's end.
                let _ = io::copy(&mut input, &mut io::sink());
            }
            result
        });
        // The tee (and with it the channel's only sender) lives in this scope,
        // so that a panic while downloading closes the channel and the
        // unpacker ends, rather than the scope waiting for it for ever.
        let mut tee = tee(Some(tx));
        let staged = b.store.stage_stream(&mut tee, &what, total, b.progress);
        let Tee { checker, unpacker_stopped, to_unpacker, .. } = tee;
        // Closing the channel ends the unpacker's input.
        drop(to_unpacker);
        let unpacked = unpacker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (unpacked, staged, checker, unpacker_stopped)
    });
    let staged = staged.map_err(|e| take(&failure).unwrap_or(e));
    match (staged, unpacked) {
        (Err(e), Ok(())) => Err(e),
        // The unpacker stopping is why the download stopped; otherwise the
        // download's failure is why the unpacker saw its input end early.
        (Err(e), Err(u)) => Err(if unpacker_stopped { u } else { e }),
        (Ok(pending), unpacked) => {
            // A wrong checksum explains anything the unpacker made of the bytes.
            check_sums(checker, &plan.label)?;
            unpacked?;
            Ok(keep_download(pending, &keep, &plan.label))
        }
    }
}

/// Keeps a download whose directory is built: if the store cannot take it
/// (all pinned, say), the build still stands; only the next one downloads again.
/// Returns the digest of the downloaded bytes.
fn keep_download(
    pending: crate::store::Pending<'_>,
    keep: &PutOptions,
    label: &str,
) -> Option<Digest> {
    let digest = pending.digest();
    match pending.commit(keep) {
        Ok(digest) => Some(digest),
        Err(e) => {
            tracing::warn!("{label} is unpacked but not kept in the store: {e}");
            digest
        }
    }
}

/// Unpacks a loaded source, checking `checks` on the loaded bytes.
fn unpack_input(
    b: &Build<'_>,
    plan: &Plan<'_>,
    input: Input,
    checks: &[&Checksum],
    staging: &Path,
) -> Result<()> {
    let failure = Arc::new(Mutex::new(None));
    let mut checker = Checker::new(checks.iter().copied());
    match input {
        Input::Blob { digest, file, .. } if plan.is_plain() && checker.is_empty() => {
            let dest = staging.join(&plan.name);
            if dest.symlink_metadata().is_ok() {
                return Err(two_make(&plan.name));
            }
            // A link takes no room of its own, but the store may evict its
            // blob: the file counts against --size like any other.
            let size = file.metadata().map_err(|e| Error::io("read", &dest, e))?.len();
            b.budget
                .charge_file(size)
                .map_err(|e| extract::unpack_error(&step("writing", plan), staging, e))?;
            b.store.get_to_path(&Target::Digest(digest), &dest, GetMode::Link, b.progress)?;
            drop(file);
            Ok(())
        }
        Input::Blob { file, size, .. } | Input::File { file, size } if plan.unzips() => {
            if !checker.is_empty() {
                let mut reading = Metered::new(&file, b.budget, b.progress, &failure);
                b.progress.start(&format!("checking {}", plan.label), Some(size));
                copy_checking(&mut reading, &mut checker).map_err(|e| {
                    take(&failure).unwrap_or_else(|| Error::io("read", Path::new(&plan.label), e))
                })?;
                b.progress.finish();
                check_sums(checker, &plan.label)?;
            }
            let mut file = file;
            std::io::Seek::rewind(&mut file)
                .map_err(|e| Error::io("read", Path::new(&plan.label), e))?;
            b.budget.raw_in.store(size, std::sync::atomic::Ordering::Relaxed);
            extract::unzip(file, staging, b.budget, &step("unzip", plan))
        }
        Input::Stream(reader) if plan.unzips() => {
            // Zip needs the whole file at hand: keep it beside the build.
            fs::create_dir_all(b.scratch).map_err(|e| Error::io("create", b.scratch, e))?;
            let temp = b.scratch.join(format!("unzip-{}", plan.number));
            let mut reading = Checking { inner: reader, checker: &mut checker };
            let mut metered = Metered::new(&mut reading, b.budget, b.progress, &failure);
            b.progress.start(&format!("loading {}", plan.label), None);
            let budget = Budget::new(Some(u64::MAX));
            let written = extract::write_stream(
                &mut metered,
                staging,
                &file_name(&temp),
                &budget,
                &plan.label,
            );
            b.progress.finish();
            let written = written.map_err(|e| take(&failure).unwrap_or(e));
            let result = written.and_then(|()| {
                check_sums(checker, &plan.label)?;
                let file = File::open(&temp).map_err(|e| Error::io("read", &temp, e))?;
                extract::unzip(file, staging, b.budget, &step("unzip", plan))
            });
            let _ = fs::remove_file(&temp);
            result
        }
        input => {
            let (reader, size): (Box<dyn Read + '_>, Option<u64>) = match input {
                Input::Blob { file, size, .. } | Input::File { file, size } => {
                    (Box::new(file), Some(size))
                }
                Input::Stream(reader) => (reader, None),
            };
            let mut checking = Checking { inner: reader, checker: &mut checker };
            let mut metered = Metered::new(&mut checking, b.budget, b.progress, &failure);
            b.progress.start(&format!("unpacking {}", plan.label), size);
            let result = unpack_stream(&mut metered, plan, b.budget, staging);
            let result = result.and_then(|()| {
                // Whatever follows an archive's end still counts for its checksum.
                io::copy(&mut metered, &mut io::sink())
                    .map(drop)
                    .map_err(|e| Error::io("read", Path::new(&plan.label), e))
            });
            b.progress.finish();
            result.map_err(|e| take(&failure).unwrap_or(e))?;
            check_sums(checker, &plan.label)
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Runs the transforms after the raw checksums on a stream: decompressions,
/// further checksums, and the final unpacking or writing.
fn unpack_stream(
    input: &mut dyn Read,
    plan: &Plan<'_>,
    budget: &Budget,
    staging: &Path,
) -> Result<()> {
    let mut checkers = Vec::new();
    let mut chain: Box<dyn Read + '_> = Box::new(input);
    let mut words = Vec::new();
    for t in plan.rest {
        let kind = match t {
            Transform::Gunzip => Some(Compression::Gzip),
            Transform::Unxz => Some(Compression::Xz),
            Transform::Unzstd => Some(Compression::Zstd),
            _ => None,
        };
        if let Some(kind) = kind {
            words.push(t.to_string());
            let step = format!("{} of {}", words.join(" "), plan.label);
            chain = extract::decoder(kind, io::BufReader::with_capacity(256 << 10, chain))
                .map_err(|e| extract::unpack_error(&step, staging, e))?;
            continue;
        }
        match t {
            Transform::Check(sum) => {
                let slot = Arc::new(Mutex::new(None));
                checkers.push((sum.clone(), slot.clone()));
                chain =
                    Box::new(Checked { inner: chain, checker: Some(Checker::new([sum])), slot });
            }
            Transform::Tar => {
                extract::untar(&mut chain, staging, budget, &step("tar", plan))?;
                drop(chain);
                return finish_checks(checkers, &plan.label);
            }
            Transform::Unzip => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{}: unzip needs the whole file; put it right after the loader",
                        plan.label
                    ),
                ));
            }
            _ => {}
        }
    }
    if staging.join(&plan.name).symlink_metadata().is_ok() {
        return Err(two_make(&plan.name));
    }
    extract::write_stream(&mut chain, staging, &plan.name, budget, &step("writing", plan))?;
    drop(chain);
    finish_checks(checkers, &plan.label)
}

fn step(word: &str, plan: &Plan<'_>) -> String {
    format!("{word} {}", plan.label)
}

fn two_make(name: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!(
            "two sources of the recipe make the file {name}; give one of them another name or unpack it"
        ),
    )
}

fn finish_checks(checkers: Vec<(Checksum, Verdict)>, label: &str) -> Result<()> {
    for (sum, slot) in checkers {
        match take(&slot) {
            Some(None) => {}
            Some(Some(m)) => return Err(mismatch(&m, label)),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{label}: the {} checksum could not be checked, the data did not end where expected",
                        sum.algorithm.name()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_sums(checker: Checker, label: &str) -> Result<()> {
    match checker.finish() {
        None => Ok(()),
        Some(m) => Err(mismatch(&m, label)),
    }
}

fn mismatch(m: &checksum::Mismatch, label: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "{label} has {} {}, but the recipe expects {}; the file is not the one the recipe names (check the URL and the checksum); nothing was kept",
            m.expected.algorithm.name(),
            m.actual,
            m.expected.hex
        ),
    )
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Reads `reader` to its end through `checker`.
fn copy_checking(reader: &mut dyn Read, checker: &mut Checker) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => checker.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads a loaded source once for three readers: the store (which pulls), the
/// checksums, and the unpacker (sent a copy of every chunk).
struct Tee<'a> {
    inner: Box<dyn Read>,
    checker: Checker,
    to_unpacker: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Whether the unpacker stopped reading first.
    unpacker_stopped: bool,
    budget: &'a Budget,
    /// The source's own failure, reported instead of what the store makes of it.
    failure: Arc<Mutex<Option<Error>>>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let error = source::read_error(e);
                let message = error.to_string();
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                return Err(io::Error::other(message));
            }
        };
        self.checker.update(&buf[..n]);
        self.budget.raw_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        if n > 0
            && let Some(tx) = &self.to_unpacker
            && tx.send(buf[..n].to_vec()).is_err()
        {
            self.unpacker_stopped = true;
            return Err(io::Error::other("the unpacking stopped"));
        }
        Ok(n)
    }
}

/// The unpacker's end of the tee.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Hashes what passes through it.
struct Checking<'c, R> {
    inner: R,
    checker: &'c mut Checker,
}

impl<R: Read> Read for Checking<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.checker.update(&buf[..n]);
        Ok(n)
    }
}

/// Where a checksum's verdict lands once its data ended: `Some(None)` if it
/// matched, `Some(Some(mismatch))` if not; `None` while the data has not ended.
type Verdict = Arc<Mutex<Option<Option<checksum::Mismatch>>>>;

/// Hashes what passes through it and, at the end of the data, leaves the
/// verdict in `slot`.
struct Checked<R> {
    inner: R,
    checker: Option<Checker>,
    slot: Verdict,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(checker) = self.checker.as_mut() {
            checker.update(&buf[..n]);
            if n == 0 && !buf.is_empty() {
                let verdict = self.checker.take().and_then(Checker::finish);
                *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
            }
        }
        Ok(n)
    }
}

/// Counts loaded bytes for the budget and the progress bar, and keeps the
/// source's own error.
struct Metered<'a, R> {
    inner: R,
    budget: &'a Budget,
    progress: &'a dyn Progress,
    failure: &'a Mutex<Option<Error>>,
}

impl<'a, R: Read> Metered<'a, R> {
    fn new(
        inner: R,
        budget: &'a Budget,
        progress: &'a dyn Progress,
        failure: &'a Mutex<Option<Error>>,
    ) -> Metered<'a, R> {
        Metered { inner, budget, progress, failure }
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.budget.raw_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                self.progress.advance(n as u64);
                Ok(n)
            }
            Err(e) => {
                let error = source::read_error(e);
                let message = error.to_string();
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                Err(io::Error::other(message))
            }
        }
    }
}

/// The name of the file a loader makes, for messages and made-up names.
pub(crate) fn file_label(loader: &Loader) -> String {
    source::file_name(loader, 1)
}
