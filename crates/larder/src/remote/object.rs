//! Object stores and file systems as remote tiers, through Apache OpenDAL:
//! `s3://BUCKET/PREFIX` (any S3-compatible endpoint, path style), `gs://`,
//! `azblob://CONTAINER/PREFIX`, `webdav://HOST[:PORT]/PATH` (`webdavs://`
//! for https) and `file:///PATH`. What lives there is laid out by
//! [`super::layout`]. OpenDAL stays behind this file: nothing else in larder
//! names it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use opendal::HttpTransporter;
use opendal::blocking;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use opendal::services;
use opendal_http_transport_reqwest::ReqwestTransport;

use super::layout;
use super::{
    Capabilities, GrowingUpload, Remote, RemoteBlob, RemoteConfig, RemoteEntry, RemoteMode,
    RemoteStats,
};
use crate::digest::Digest;
use crate::env::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpOptions;
use crate::store::{Follower, Target};

/// The runtime OpenDAL's blocking operators run on: one per process, made
/// when the first object remote is opened.
static RUNTIME: LazyLock<std::result::Result<tokio::runtime::Runtime, String>> =
    LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("larder-remote")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });

/// Bytes per part of a large upload, and parts sent at once.
const PART: usize = 8 << 20;
const PARTS_AT_ONCE: usize = 4;
/// Blobs up to this size whose size is known are read in one request, whole.
const SMALL_READ: u64 = 1 << 20;

/// The URL schemes this backend takes.
pub const SCHEMES: &[&str] = &["s3", "gs", "gcs", "azblob", "webdav", "webdavs", "file"];

/// A remote tier in an object store or a file system.
pub struct ObjectRemote {
    /// Its configured name, for messages.
    name: String,
    location: String,
    op: blocking::Operator,
    /// Whether it lives in a bucket or container (which must exist) rather
    /// than a folder (made by the first write).
    bucketed: bool,
    /// Whether the bucket was found, checked once, so that a missing bucket
    /// is an error and not a miss.
    checked: OnceLock<std::result::Result<(), (ErrorKind, String)>>,
    /// For WebDAV, which OpenDAL writes in one piece from memory: a client
    /// that streams a blob's file in one PUT instead.
    dav: Option<DavUpload>,
    /// For a folder (`file://`): its root and the folder beside it that
    /// whole files are written in before they are renamed into place. A
    /// blob is copied there file to file, by the kernel where it can.
    folder: Option<(PathBuf, PathBuf)>,
}

/// What names a folder remote's temporary files, before their owner.
const UPLOAD_MARKER: &str = ".larder-upload.";

/// A blob on its way into a folder remote: a temporary file beside the
/// folder, renamed into place once complete. As a [`GrowingUpload`] it is
/// filled range by range while the blob is staged.
struct FolderUpload {
    /// The remote's name, for messages.
    remote: String,
    root: PathBuf,
    temp: tempfile::NamedTempFile,
    covered: u64,
}

impl FolderUpload {
    fn new(remote: &str, root: &Path, tmp: &Path) -> Result<FolderUpload> {
        // Named after its owner, so that what a killed upload left is removed
        // by the next process that uploads here.
        crate::fsutil::remove_dead_temps_once(tmp, UPLOAD_MARKER);
        let owner = crate::holder::ProcessId::current();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".blob{UPLOAD_MARKER}{owner}."))
            .tempfile_in(tmp)
            .map_err(|e| Error::io(&format!("write a blob to remote {remote} in"), tmp, e))?;
        Ok(FolderUpload { remote: remote.to_string(), root: root.to_path_buf(), temp, covered: 0 })
    }

    fn dest(&self, digest: &Digest) -> PathBuf {
        self.root.join(layout::blob_path(digest).trim_start_matches('/'))
    }

    /// Fills the temporary file from `file`, whole: file to file, by
    /// `copy_file_range`, so the bytes never pass through here.
    fn fill(&mut self, digest: &Digest, mut file: File) -> Result<()> {
        std::io::copy(&mut file, self.temp.as_file_mut())
            .map(|_| ())
            .map_err(|e| self.error(digest, e))
    }

    fn error(&self, digest: &Digest, e: std::io::Error) -> Error {
        write_error(&self.remote, digest, &self.dest(digest), e)
    }

    /// Renames the temporary file to the blob's place.
    fn place(self, digest: &Digest) -> Result<()> {
        let dest = self.dest(digest);
        let FolderUpload { remote, temp, .. } = self;
        let fail = |e| write_error(&remote, digest, &dest, e);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        temp.persist(&dest).map(|_| ()).map_err(|e| fail(e.error))
    }
}

/// Writing `digest` to `dest` in the folder remote `remote` failed.
fn write_error(remote: &str, digest: &Digest, dest: &Path, e: std::io::Error) -> Error {
    Error::io(&format!("write {digest} to remote {remote} at"), dest, e)
}

impl Follower for FolderUpload {
    fn follow(&mut self, staged: &File, offset: u64, len: usize) -> std::io::Result<()> {
        if offset != self.covered {
            return Err(std::io::Error::other(format!(
                "bytes at {offset} came while {} were held",
                self.covered
            )));
        }
        crate::store::copy_range(staged, self.temp.as_file(), offset, len)?;
        self.covered += len as u64;
        Ok(())
    }
}

impl GrowingUpload for FolderUpload {
    fn covered(&self) -> u64 {
        self.covered
    }

    fn finish(self: Box<Self>, digest: &Digest) -> Result<bool> {
        // Content-addressed: what is there with this size is these bytes.
        if std::fs::metadata(self.dest(digest)).is_ok_and(|m| m.len() == self.covered) {
            return Ok(false);
        }
        self.place(digest).map(|()| true)
    }
}

/// Streams uploads to a WebDAV server.
struct DavUpload {
    /// `http(s)://host[:port]/root/`, with a final `/`.
    base: String,
    user: Option<String>,
    password: Option<String>,
    client: reqwest::blocking::Client,
    timeout: Duration,
}

/// Opens the object `key` of the S3 bucket `bucket` for an `s3://` recipe
/// loader: the endpoint and region of one of `remotes` in that bucket (else
/// `AWS_ENDPOINT_URL` and `AWS_REGION` of `env`), credentials as for remotes.
/// Returns the reader and the object's size.
pub fn open_s3_object(
    bucket: &str,
    key: &str,
    remotes: &[RemoteConfig],
    http: &HttpOptions,
    env: &Environment,
) -> Result<(Box<dyn Read + Send>, u64)> {
    let in_bucket = |r: &&RemoteConfig| {
        r.url.strip_prefix("s3://").is_some_and(|rest| rest.split('/').next() == Some(bucket))
    };
    let borrowed = remotes.iter().find(in_bucket);
    let config = RemoteConfig {
        name: format!("s3://{bucket}/{key}"),
        url: format!("s3://{bucket}"),
        mode: RemoteMode::ReadOnly,
        endpoint: borrowed
            .and_then(|r| r.endpoint.clone())
            .or_else(|| env.get("AWS_ENDPOINT_URL").map(str::to_string)),
        region: borrowed.and_then(|r| r.region.clone()),
    };
    let remote = ObjectRemote::new(&config, http, env)?;
    let what = format!("reading s3://{bucket}/{key}");
    let Some(size) = remote.stat(key, &what)? else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("s3://{bucket}/{key} does not exist; check the bucket and key"),
        ));
    };
    let reader = remote.op.reader(key).map_err(|e| remote.error(&what, &e))?;
    let reader = reader.into_std_read(0..size).map_err(|e| remote.error(&what, &e))?;
    Ok((Box::new(reader), size))
}

impl ObjectRemote {
    /// The remote a configuration entry describes.
    pub fn new(
        config: &RemoteConfig,
        http: &HttpOptions,
        env: &Environment,
    ) -> Result<ObjectRemote> {
        let bad =
            |why: String| Error::new(ErrorKind::Config, format!("remote {}: {why}", config.name));
        let shown = super::endpoint::redact(&config.url);
        if !config.url.contains("://") {
            return Err(bad(format!("`{shown}` has no scheme")));
        }
        let url = url::Url::parse(&config.url)
            .map_err(|e| bad(format!("`{shown}` is not a URL: {e}")))?;
        let scheme = url.scheme();
        // The server, with any user and port (webdav), and the bucket or
        // container (object stores).
        let authority = url.authority();
        let bucket = url.host_str().unwrap_or("");
        // The prefix or folder as a name: the URL carries it escaped.
        let path = crate::percent::decode_lossy(url.path());
        let root = format!("/{}/", path.trim_matches('/')).replace("//", "/");
        let mut dav = None;
        let mut folder = None;
        let operator = match scheme {
            "s3" => {
                if bucket.is_empty() {
                    return Err(bad("an s3:// URL names a bucket: s3://BUCKET/PREFIX".into()));
                }
                let region = config
                    .region
                    .clone()
                    .or_else(|| env.aws_region().map(str::to_string))
                    .unwrap_or_else(|| "us-east-1".to_string());
                let mut builder =
                    services::S3::default().bucket(bucket).root(&root).region(&region);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.endpoint(endpoint);
                }
                opendal::Operator::new(builder)
            }
            "gs" | "gcs" => {
                if bucket.is_empty() {
                    return Err(bad("a gs:// URL names a bucket: gs://BUCKET/PREFIX".into()));
                }
                let mut builder = services::Gcs::default().bucket(bucket).root(&root);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.endpoint(endpoint);
                }
                opendal::Operator::new(builder)
            }
            "azblob" => {
                if bucket.is_empty() {
                    return Err(bad(
                        "an azblob:// URL names a container: azblob://CONTAINER/PREFIX".into(),
                    ));
                }
                let mut builder = match env.get("AZURE_STORAGE_CONNECTION_STRING") {
                    Some(conn) => services::Azblob::from_connection_string(conn)
                        .map_err(|e| bad(format!("AZURE_STORAGE_CONNECTION_STRING: {e}")))?,
                    None => services::Azblob::default(),
                };
                builder = builder.container(bucket).root(&root);
                let account = env.get("AZURE_STORAGE_ACCOUNT");
                if let Some(account) = account {
                    builder = builder.account_name(account);
                }
                if let Some(key) = env.get("AZURE_STORAGE_KEY") {
                    builder = builder.account_key(key);
                }
                match (&config.endpoint, &account) {
                    (Some(endpoint), _) => builder = builder.endpoint(endpoint),
                    (None, Some(account)) => {
                        builder =
                            builder.endpoint(&format!("https://{account}.blob.core.windows.net"));
                    }
                    (None, None) => {}
                }
                opendal::Operator::new(builder)
            }
            "webdav" | "webdavs" => {
                let web = if scheme == "webdav" { "http" } else { "https" };
                let endpoint = super::Endpoint::parse_in(&format!("{web}://{authority}"), env)
                    .map_err(&bad)?;
                let client = crate::http::blocking_client(http)?;
                dav = Some(DavUpload {
                    base: format!("{}{root}", endpoint.base),
                    user: endpoint.user.clone(),
                    password: endpoint.password.clone(),
                    client,
                    timeout: http.timeout,
                });
                let mut builder = services::Webdav::default().endpoint(&endpoint.base).root(&root);
                if let Some(user) = &endpoint.user {
                    builder = builder.username(user);
                }
                if let Some(password) = &endpoint.password {
                    builder = builder.password(password);
                }
                opendal::Operator::new(builder)
            }
            "file" => {
                if !authority.is_empty() {
                    return Err(bad(format!(
                        "`{}` names a host; a folder is file:///ABSOLUTE/PATH",
                        config.url
                    )));
                }
                // Whole files only: a write lands in the folder by a rename.
                let tmp = format!("{root}.tmp");
                std::fs::create_dir_all(&tmp)
                    .map_err(|e| bad(format!("cannot make the folder {tmp}: {e}")))?;
                folder = Some((PathBuf::from(&root), PathBuf::from(&tmp)));
                opendal::Operator::new(services::Fs::default().root(&root).atomic_write_dir(&tmp))
            }
            other => {
                return Err(bad(format!("`{other}://` is not a kind of remote larder knows")));
            }
        }
        .map_err(|e| bad(e.to_string()))?;
        // OpenDAL's HTTP services speak through larder's one client.
        let transport =
            HttpTransporter::new(ReqwestTransport::new(crate::http::async_client(http)?));
        let context = operator.context().with_http_transport(transport);
        let operator = operator
            .with_context(context)
            // A timed-out attempt is retried: the timeout is inside the retry.
            .layer(TimeoutLayer::new().with_timeout(http.timeout).with_io_timeout(http.timeout))
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(http.retries as usize)
                    .with_min_delay(http.backoff)
                    .with_max_delay(crate::http::MAX_BACKOFF),
            );
        let runtime = RUNTIME.as_ref().map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot start the remote runtime: {e}"))
        })?;
        let _entered = runtime.enter();
        let op = blocking::Operator::new(operator).map_err(|e| bad(e.to_string()))?;
        Ok(ObjectRemote {
            name: config.name.clone(),
            location: super::endpoint::redact(&config.url),
            op,
            bucketed: matches!(scheme, "s3" | "gs" | "gcs" | "azblob"),
            checked: OnceLock::new(),
            dav,
            folder,
        })
    }

    /// A library error for an OpenDAL one, naming the remote and what was
    /// being done.
    fn error(&self, what: &str, e: &opendal::Error) -> Error {
        if e.to_string().contains("failed to load signing credential") {
            return Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "remote {} ({}): {what}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), GOOGLE_APPLICATION_CREDENTIALS, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY",
                    self.name, self.location
                ),
            );
        }
        let (kind, fix) = match e.kind() {
            opendal::ErrorKind::NotFound => (ErrorKind::NotFound, ""),
            opendal::ErrorKind::PermissionDenied => (
                ErrorKind::PermissionDenied,
                "; check its credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_KEY, or the user in the URL)",
            ),
            opendal::ErrorKind::ConfigInvalid => {
                (ErrorKind::Config, "; check the remote's url, endpoint and region")
            }
            opendal::ErrorKind::RateLimited => {
                (ErrorKind::Busy, "; it asks to slow down: try again later")
            }
            _ if e.is_temporary() => {
                (ErrorKind::Io, "; it may be down: try again later, or use --local")
            }
            _ => (ErrorKind::Io, ""),
        };
        Error::new(
            kind,
            format!("remote {} ({}): {what}: {}{fix}", self.name, self.location, short(e)),
        )
    }

    /// Fails if the bucket or folder is not there (once per process).
    fn check(&self) -> Result<()> {
        let missing = |e: &opendal::Error| {
            e.kind() == opendal::ErrorKind::NotFound
                || ["NoSuchBucket", "ContainerNotFound"].iter().any(|c| e.to_string().contains(c))
        };
        let verdict = self.checked.get_or_init(|| match self.op.list(layout::BLOBS) {
            Ok(_) => Ok(()),
            Err(e) if missing(&e) && !self.bucketed => Ok(()),
            Err(e) if missing(&e) => {
                // An empty prefix lists as not found on some stores; the
                // bucket itself must answer.
                match self.op.list("/") {
                    Ok(_) => Ok(()),
                    Err(e) if missing(&e) => Err((
                        ErrorKind::Config,
                        format!(
                            "remote {} ({}): the bucket or folder does not exist; create it, or fix the url",
                            self.name, self.location
                        ),
                    )),
                    Err(e) => {
                        let err = self.error("reaching it", &e);
                        Err((err.kind(), err.to_string()))
                    }
                }
            }
            Err(e) => {
                let err = self.error("reaching it", &e);
                Err((err.kind(), err.to_string()))
            }
        });
        match verdict {
            Ok(()) => Ok(()),
            Err((kind, message)) => Err(Error::new(*kind, message.clone())),
        }
    }

    /// The size of the object at `path`; `None` if there is none.
    fn stat(&self, path: &str, what: &str) -> Result<Option<u64>> {
        self.check()?;
        match self.op.stat(path) {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(what, &e)),
        }
    }

    /// The digest a key names; `None` if there is no such key.
    fn resolve(&self, key: &str) -> Result<Option<Digest>> {
        crate::validate_key(key)?;
        self.check()?;
        let what = format!("reading the key {key}");
        let bytes = match self.op.read(&layout::key_path(key)) {
            Ok(b) => b.to_vec(),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(&what, &e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim().parse::<Digest>().map(Some).map_err(|_| {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "remote {} ({}): the key {key} holds `{}`, not a digest",
                    self.name,
                    self.location,
                    text.trim().chars().take(80).collect::<String>()
                ),
            )
        })
    }

    fn digest_of(&self, target: &Target) -> Result<Option<Digest>> {
        match target {
            Target::Digest(d) => Ok(Some(*d)),
            Target::Key(k) => self.resolve(k),
        }
    }
}

impl ObjectRemote {
    /// Copies `file` to the blob `digest`'s place in the folder `root`: into
    /// a temporary file in `tmp`, renamed into place whole.
    fn upload_to_folder(&self, root: &Path, tmp: &Path, digest: &Digest, file: File) -> Result<()> {
        let mut upload = FolderUpload::new(&self.name, root, tmp)?;
        upload.fill(digest, file)?;
        upload.place(digest)
    }

    fn upload_dav(
        &self,
        dav: &DavUpload,
        path: &str,
        what: &str,
        file: File,
        size: u64,
    ) -> Result<()> {
        if let Some((folder, _)) = path.rsplit_once('/') {
            self.op.create_dir(&format!("{folder}/")).map_err(|e| self.error(what, &e))?;
        }
        let url = format!("{}{path}", dav.base);
        // As long as it needs at 64 KiB/s, like uploads to a larder server.
        let allowed = crate::http::upload_timeout(dav.timeout, size);
        let mut request =
            dav.client.put(url).body(reqwest::blocking::Body::sized(file, size)).timeout(allowed);
        if let Some(user) = &dav.user {
            request = request.basic_auth(user, dav.password.as_deref());
        }
        let fail = |why: String| {
            Error::new(
                ErrorKind::Io,
                format!("remote {} ({}): {what}: {why}", self.name, self.location),
            )
        };
        let response = request.send().map_err(|e| fail(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let kind = match status.as_u16() {
            401 | 403 => ErrorKind::PermissionDenied,
            413 | 507 => ErrorKind::StoreFull,
            _ => ErrorKind::Io,
        };
        Err(Error::new(
            kind,
            format!("remote {} ({}): {what}: it answered {status}", self.name, self.location),
        ))
    }
}

/// OpenDAL's message without its context list, on one line.
fn short(e: &opendal::Error) -> String {
    let text = e.to_string();
    let message = match text.split_once(" => ") {
        Some((_, m)) => m.to_string(),
        None => format!("{}", e.kind()),
    };
    let line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

impl Remote for ObjectRemote {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn open(&self, target: &Target) -> Result<Option<RemoteBlob>> {
        let Some(digest) = self.digest_of(target)? else { return Ok(None) };
        let path = layout::blob_path(&digest);
        let what = format!("reading {digest}");
        // A key whose blob is gone is a miss, not an error.
        let Some(size) = self.stat(&path, &what)? else { return Ok(None) };
        let reader = self.op.reader(&path).map_err(|e| self.error(&what, &e))?;
        let reader = reader.into_std_read(0..size).map_err(|e| self.error(&what, &e))?;
        Ok(Some(RemoteBlob { reader: Box::new(reader), digest: Some(digest), size: Some(size) }))
    }

    fn open_sized(&self, digest: &Digest, size: u64) -> Result<Option<RemoteBlob>> {
        self.check()?;
        let path = layout::blob_path(digest);
        let what = format!("reading {digest}");
        let blob = |reader: Box<dyn Read + Send>| {
            Some(RemoteBlob { reader, digest: Some(*digest), size: Some(size) })
        };
        // A small blob is one request, read whole (no more than the size
        // asked for, whatever the object holds); a large one streams (a
        // missing one then fails as it is read, not as a miss).
        if size <= SMALL_READ {
            let options = ReadOptions { range: (0..size).into(), ..Default::default() };
            return match self.op.read_options(&path, options) {
                Ok(bytes) => Ok(blob(Box::new(std::io::Cursor::new(bytes.to_bytes())))),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.error(&what, &e)),
            };
        }
        let reader = self.op.reader(&path).map_err(|e| self.error(&what, &e))?;
        let reader = reader.into_std_read(0..size).map_err(|e| self.error(&what, &e))?;
        Ok(blob(Box::new(reader)))
    }

    fn head(&self, target: &Target) -> Result<Option<RemoteEntry>> {
        let Some(digest) = self.digest_of(target)? else { return Ok(None) };
        let size = self.stat(&layout::blob_path(&digest), &format!("looking for {digest}"))?;
        Ok(size.map(|size| RemoteEntry { digest: Some(digest), size: Some(size) }))
    }

    fn upload(&self, digest: &Digest, mut file: File, size: u64) -> Result<bool> {
        let path = layout::blob_path(digest);
        let what = format!("uploading {digest}");
        // Content-addressed: what is there under this name with this size
        // is these bytes (reads check them anyway).
        if self.stat(&path, &what)? == Some(size) {
            return Ok(false);
        }
        if let Some(dav) = &self.dav {
            return self.upload_dav(dav, &path, &what, file, size).map(|()| true);
        }
        if let Some((root, tmp)) = &self.folder {
            return self.upload_to_folder(root, tmp, digest, file).map(|()| true);
        }
        let options =
            WriteOptions { chunk: Some(PART), concurrent: PARTS_AT_ONCE, ..Default::default() };
        let writer = self.op.writer_options(&path, options).map_err(|e| self.error(&what, &e))?;
        let mut writer = writer.into_std_write();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| {
                Error::new(ErrorKind::Io, format!("{what}: reading the local copy: {e}"))
            })?;
            if n == 0 {
                break;
            }
            writer.write_all(&buf[..n]).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("remote {} ({}): {what}: {e}", self.name, self.location),
                )
            })?;
        }
        writer.close().map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("remote {} ({}): {what}: {e}", self.name, self.location),
            )
        })?;
        Ok(true)
    }

    fn begin_upload(&self) -> Result<Option<Box<dyn GrowingUpload>>> {
        match &self.folder {
            Some((root, tmp)) => Ok(Some(Box::new(FolderUpload::new(&self.name, root, tmp)?))),
            None => Ok(None),
        }
    }

    fn bind(&self, key: &str, digest: &Digest) -> Result<()> {
        crate::validate_key(key)?;
        self.check()?;
        let what = format!("binding {key}");
        self.op
            .write(&layout::key_path(key), layout::key_content(digest).into_bytes())
            .map_err(|e| self.error(&what, &e))?;
        Ok(())
    }

    fn delete(&self, target: &Target) -> Result<bool> {
        let (path, what) = match target {
            Target::Digest(d) => (layout::blob_path(d), format!("removing {d}")),
            Target::Key(k) => {
                crate::validate_key(k)?;
                (layout::key_path(k), format!("removing {k}"))
            }
        };
        if self.stat(&path, &what)?.is_none() {
            return Ok(false);
        }
        self.op.delete(&path).map_err(|e| self.error(&what, &e))?;
        Ok(true)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.check()?;
        let folder = layout::key_folder(prefix);
        let what = format!("listing the keys under {prefix}");
        let entries = match self
            .op
            .list_options(&folder, ListOptions { recursive: true, ..Default::default() })
        {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(&what, &e)),
        };
        let mut keys: Vec<String> = entries
            .iter()
            .filter_map(|entry| layout::key_of(entry.path()))
            .filter(|key| key.starts_with(prefix))
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn capabilities(&self) -> Capabilities {
        let cap = self.op.info().capability();
        Capabilities { write: cap.write, delete: cap.delete, list: cap.list }
    }

    fn stats(&self) -> Result<RemoteStats> {
        // Object stores keep no running total; counting would list every blob.
        Ok(RemoteStats::default())
    }
}
