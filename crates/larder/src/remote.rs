//! Remote tiers: stores behind the local one. Reads fall through to them and
//! fill the local tier; writes go to those that accept writes. Each backend
//! implements [`Remote`]; [`open`] makes one from its configuration, and
//! [`Tier`] gives it its name and mode. [`InMemoryRemote`] and
//! [`FailingRemote`] are doubles for tests, beside the real backends.

pub mod conformance;
mod endpoint;
mod failing;
mod larder_http;
pub mod layout;
mod memory;
pub(crate) mod netrc;
mod object;

use std::fs::File;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::env::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpOptions;
use crate::store::{Follower, Target};

pub use endpoint::{Endpoint, redact};
pub use failing::{FailingRemote, Outage};
pub use larder_http::LarderHttp;
pub use memory::InMemoryRemote;
pub use object::{ObjectRemote, open_s3_object};

/// What a remote tier may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

/// A `[[remote]]` of the configuration. In JSON its URL shows without a
/// password.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Its name, for messages and `larder stats`.
    pub name: String,
    /// Where it is: `http(s)://[user@]host[:port][/path]` for a larder server.
    #[serde(serialize_with = "redacted")]
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

fn redacted<S: serde::Serializer>(url: &str, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&endpoint::redact(url))
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

/// An upload fed range by range as a blob is staged (see
/// [`Remote::begin_upload`]). Dropped unfinished, it leaves nothing behind.
pub trait GrowingUpload: Follower {
    /// How many bytes from the start it holds.
    fn covered(&self) -> u64;

    /// Puts the bytes it holds in place as the blob `digest`, unless the
    /// remote has it already. Returns whether bytes were sent.
    fn finish(self: Box<Self>, digest: &Digest) -> Result<bool>;
}

/// A store behind the local tier: what a backend does, and nothing of how
/// larder uses it (that is [`Tier`]'s). Every backend passes
/// [`conformance::run`].
pub trait Remote: Send + Sync {
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

    /// Starts an upload that takes a blob's bytes while they are staged,
    /// before their digest is known, so that sending overlaps hashing (a
    /// folder). `None` where the remote takes blobs whole, once hashed.
    fn begin_upload(&self) -> Result<Option<Box<dyn GrowingUpload>>> {
        Ok(None)
    }

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

/// A remote as one tier of a [`crate::Larder`]: the backend, and the policy
/// the configuration gives it: its name (which the upload queue and messages
/// use) and what it may be used for.
pub struct Tier {
    name: String,
    mode: RemoteMode,
    remote: Box<dyn Remote>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("location", &self.remote.location())
            .finish()
    }
}

impl Tier {
    /// `remote` as the tier `name`, used as `mode` says.
    pub fn new(name: impl Into<String>, mode: RemoteMode, remote: Box<dyn Remote>) -> Tier {
        Tier { name: name.into(), mode, remote }
    }

    /// The tier a `[[remote]]` describes (see [`open`]).
    pub fn open(config: &RemoteConfig, http: &HttpOptions, env: &Environment) -> Result<Tier> {
        Ok(Tier::new(config.name.clone(), config.mode, open(config, http, env)?))
    }

    /// Its configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it may be used for.
    pub fn mode(&self) -> RemoteMode {
        self.mode
    }

    /// Whether writes go to it (and it can take them).
    pub fn writable(&self) -> bool {
        self.mode.writable()
    }

    /// The backend.
    pub fn remote(&self) -> &dyn Remote {
        self.remote.as_ref()
    }

    /// Runs [`conformance::run`] against it, writing only if its mode allows.
    pub fn check(&self) -> Result<()> {
        conformance::run(self.remote(), self.writable())
    }
}

/// Makes the remote a configuration entry describes, speaking HTTP as
/// `http` says, with credentials and defaults from `env`.
pub fn open(
    config: &RemoteConfig,
    http: &HttpOptions,
    env: &Environment,
) -> Result<Box<dyn Remote>> {
    let scheme = config.url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "http" | "https" => Ok(Box::new(LarderHttp::new(config, http, env)?)),
        s if object::SCHEMES.contains(&s) => Ok(Box::new(ObjectRemote::new(config, http, env)?)),
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
