//! Remote tiers: stores behind the local one. Reads fall through to them and
//! fill the local tier; writes go to those that accept writes. Each backend
//! implements [`Remote`]; [`open`] makes one from its configuration.

pub mod conformance;
mod endpoint;
mod larder_http;
pub mod layout;
mod netrc;
mod object;

use std::fs::File;
use std::io::Read;

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpOptions;
use crate::store::Target;

pub use endpoint::{Endpoint, redact};
pub use larder_http::LarderHttp;
pub use object::{ObjectRemote, open_s3_object};

/// What a remote tier may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteMode {
    /// Reads only.
    ReadOnly,
    /// Reads, and every write goes to it as it happens.
    WriteThrough,
    /// Reads, and writes go to it in the background from a queue kept in
    /// the index; what waits in the queue is never evicted.
    WriteBack,
}

impl RemoteMode {
    /// Its name in configuration.
    pub fn name(self) -> &'static str {
        match self {
            RemoteMode::ReadOnly => "read-only",
            RemoteMode::WriteThrough => "write-through",
            RemoteMode::WriteBack => "write-back",
        }
    }

    /// Whether writes go to it.
    pub fn writable(self) -> bool {
        self != RemoteMode::ReadOnly
    }
}

/// A `[[remote]]` of the configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Its name, for messages and `larder stats`.
    pub name: String,
    /// Where it is: `http(s)://[user@]host[:port][/path]` for a larder server.
    pub url: String,
    /// What it may be used for [default: write-through].
    #[serde(default = "default_mode")]
    pub mode: RemoteMode,
    /// An object store's endpoint, for S3-compatible servers other than AWS
    /// (`http://127.0.0.1:3900`), or a GCS or Azure emulator.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// An S3 region [default: AWS_REGION, or us-east-1].
    #[serde(default)]
    pub region: Option<String>,
}

impl std::fmt::Debug for RemoteConfig {
    // The URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("name", &self.name)
            .field("url", &endpoint::redact(&self.url))
            .field("mode", &self.mode)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish()
    }
}

fn default_mode() -> RemoteMode {
    RemoteMode::WriteThrough
}

/// A blob coming from a remote.
pub struct RemoteBlob {
    /// Its bytes.
    pub reader: Box<dyn Read + Send>,
    /// Its digest, as the remote says (checked as the bytes arrive).
    pub digest: Option<Digest>,
    /// Its size, if the remote says.
    pub size: Option<u64>,
}

/// What a remote knows of a blob or key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The blob's digest, if the remote says.
    pub digest: Option<Digest>,
    /// Its size, if the remote says.
    pub size: Option<u64>,
}

/// A remote's own figures, for `larder stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteStats {
    /// Blobs it holds.
    pub entries: Option<u64>,
    /// Bytes it holds.
    pub bytes: Option<u64>,
    /// Its capacity.
    pub capacity: Option<u64>,
}

/// What a remote can do besides reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It takes blobs and keys.
    pub write: bool,
    /// It removes them.
    pub delete: bool,
    /// It lists its keys.
    pub list: bool,
}

/// A store behind the local tier. Every backend passes
/// [`conformance::run`].
pub trait Remote: Send + Sync {
    /// Its configured name.
    fn name(&self) -> &str;

    /// What it may be used for.
    fn mode(&self) -> RemoteMode;

    /// Where it is, for messages (without credentials).
    fn location(&self) -> String;

    /// Opens `target` for reading; `None` if the remote lacks it.
    fn open(&self, target: &Target) -> Result<Option<RemoteBlob>>;

    /// Opens the blob `digest`, whose size the caller knows (from a
    /// manifest), for reading; `None` if the remote lacks it. Backends that
    /// would otherwise ask for the size first skip that request.
    fn open_sized(&self, digest: &Digest, size: u64) -> Result<Option<RemoteBlob>> {
        let _ = size;
        self.open(&Target::Digest(*digest))
    }

    /// What the remote knows of `target`; `None` if it lacks it.
    fn head(&self, target: &Target) -> Result<Option<RemoteEntry>>;

    /// Stores the blob `digest`, `size` bytes read from `file`, unless the
    /// remote has it already. Returns whether bytes were sent.
    fn upload(&self, digest: &Digest, file: File, size: u64) -> Result<bool>;

    /// Binds `key` to the blob `digest`, which the remote must hold.
    fn bind(&self, key: &str, digest: &Digest) -> Result<()>;

    /// Removes a key (not its blob) or a blob; whether it was there.
    fn delete(&self, target: &Target) -> Result<bool>;

    /// The keys that start with `prefix`, in order.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// The remote's own figures, if it can tell.
    fn stats(&self) -> Result<RemoteStats>;
}

/// Makes the remote a configuration entry describes.
pub fn open(config: &RemoteConfig, http: &HttpOptions) -> Result<Box<dyn Remote>> {
    let scheme = config.url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "http" | "https" => Ok(Box::new(LarderHttp::new(config, http)?)),
        s if object::SCHEMES.contains(&s) => Ok(Box::new(ObjectRemote::new(config, http)?)),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!(
                "remote {}: `{}` is not a URL larder can use: a larder server (http://HOST:PORT), s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, azblob://CONTAINER/PREFIX, webdav://HOST/PATH or file:///PATH",
                config.name,
                endpoint::redact(&config.url)
            ),
        )),
    }
}
