//! Coordination: who holds which shared directory, and the directories'
//! states, counters and metadata. One trait, [`Coordinator`], with an SQLite
//! backend in the larder home for one host and a Redis backend for many
//! hosts ([`redis`]); both pass the same [`conformance`] suite.
//!
//! Holders are released by whoever looks next once their process is gone or
//! their lease expired, so no listing ever shows a dead holder, and a crash
//! never leaks a count.
//!
//! Every grant (a directory's creation, a build claimed, a deletion begun)
//! carries a fencing token, [`DirRecord::fence`], that only grows: finishing
//! the work is refused once someone else holds a later grant, so a process
//! that lost its grant (it died, or was stopped or cut off past its lease)
//! cannot finish over the work of the one that took over.

pub mod conformance;
mod pools;
pub mod redis;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::holder::ProcessId;

pub use pools::{Failure, Instance, InstanceState, Liveness, PoolCoordinator, PoolState, update};
pub use redis::{HostAgent, RedisCoordinator, RedisOptions};
pub use sqlite::SqliteCoordinator;

/// Who holds a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Holder {
    /// A process on a host, named by pid and start time (so a reused pid is
    /// not the holder), on a host and boot (so a pid of another host or an
    /// earlier boot is not mistaken for a local process).
    Process {
        /// The host's name.
        host: String,
        /// The kernel's boot id on that host.
        boot_id: String,
        /// The process id.
        pid: u32,
        /// Its start time in clock ticks since boot.
        start: u64,
    },
    /// A named lease that ends at `expires_at` unless renewed.
    Token {
        /// The token's name.
        id: String,
        /// When the lease ends, in milliseconds since the Unix epoch.
        expires_at: i64,
    },
}

impl Holder {
    /// The process `id` on this host.
    pub fn process(id: ProcessId) -> Holder {
        let this = Host::current();
        Holder::Process {
            host: this.name.clone(),
            boot_id: this.boot_id.clone(),
            pid: id.pid,
            start: id.start,
        }
    }

    /// The calling process.
    pub fn current_process() -> Holder {
        Holder::process(ProcessId::current())
    }

    /// The script or shell that ran this process, as [`ProcessId::caller`]
    /// finds it: what `larder use` without a command is held by.
    pub fn caller() -> Result<Holder> {
        ProcessId::caller().map(Holder::process)
    }

    /// A holder named `id` whose hold lasts `ttl` from now.
    pub fn token(id: &str, ttl: std::time::Duration) -> Result<Holder> {
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                format!("holder name `{}` is empty or has control characters", id.escape_debug()),
            ));
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        Ok(Holder::Token { id: id.to_string(), expires_at: now_ms().saturating_add(ttl_ms) })
    }

    /// A stable key naming this holder (a token's key does not change when
    /// its lease is renewed).
    pub fn key(&self) -> String {
        match self {
            Holder::Process { host, boot_id, pid, start } => {
                format!("process:{host}:{boot_id}:{pid}:{start}")
            }
            Holder::Token { id, .. } => format!("token:{id}"),
        }
    }

    /// Whether this is a process of this host (and boot), which only this
    /// host can check.
    pub fn is_on_this_host(&self) -> bool {
        let this = Host::current();
        matches!(self, Holder::Process { host, boot_id, .. } if *host == this.name && *boot_id == this.boot_id)
    }

    /// Whether the holder still holds: its process runs, or its lease has
    /// not expired at `now_ms`. A process of this host's earlier boot is gone;
    /// a process on another host cannot be checked from here and counts as
    /// alive (a coordinator shared by hosts also gives it a lease, which its
    /// host renews, and releases it when the lease runs out).
    pub fn is_alive(&self, now_ms: i64) -> bool {
        match self {
            Holder::Process { host, boot_id, pid, start } => {
                let this = Host::current();
                if *host != this.name {
                    return true;
                }
                if *boot_id != this.boot_id {
                    return false;
                }
                ProcessId { pid: *pid, start: *start }.is_alive()
            }
            Holder::Token { expires_at, .. } => *expires_at > now_ms,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Process { host, pid, .. } => write!(f, "pid {pid} on {host}"),
            Holder::Token { id, .. } => write!(f, "token {id}"),
        }
    }
}

/// This host's name and boot id.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) name: String,
    pub(crate) boot_id: String,
}

impl Host {
    /// Read once per process: neither changes while it runs.
    pub(crate) fn current() -> &'static Host {
        static HOST: std::sync::OnceLock<Host> = std::sync::OnceLock::new();
        HOST.get_or_init(|| {
            let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
            Host {
                name: read("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into()),
                boot_id: read("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            }
        })
    }
}

/// A holder and since when it holds (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Who.
    pub holder: Holder,
    /// Since when.
    pub since: i64,
}

/// Where a directory is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    /// Being built by `by`; users wait for it, and take over if `by` dies.
    Building {
        /// Who builds it.
        by: Holder,
    },
    /// In use, or waiting for users.
    Ready,
    /// Its last build failed with `error`; those who waited for it report the
    /// error, and the next `use` builds it again.
    Failed {
        /// What went wrong, as the builder reported it.
        error: String,
    },
    /// Being deleted by `by`; attaching must wait until the record is gone.
    Deleting {
        /// Who deletes it.
        by: Holder,
    },
}

/// A shared directory as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirRecord {
    /// Its name, unique in one home.
    pub name: String,
    /// Where it is on disk: this host's copy, or where the host that made
    /// the directory keeps it while this host has none.
    pub path: String,
    /// Every host's copy, by host name. A directory is one logical directory
    /// for every host pointed at one coordinator; each host keeps its own
    /// copy, made when it first uses the directory.
    pub copies: BTreeMap<String, String>,
    /// It grows each time a directory of this name is created, so work meant
    /// for an earlier one cannot touch a later one.
    pub generation: u64,
    /// The fencing token of the latest grant: the creation (then it equals
    /// `generation`), a build claimed or a deletion begun. It only grows;
    /// finishing a build or a deletion needs the grant's own token.
    pub fence: u64,
    /// Where it is in its life.
    pub state: DirState,
    /// Whether it stays after its last holder.
    pub locked: bool,
    /// The hash of the recipe that built it, if any.
    pub recipe_hash: Option<String>,
    /// The recipe itself, in its canonical form.
    pub recipe: Option<String>,
    /// The space asked for when it was created (`use --size`), in bytes;
    /// reserved in its folder while it is being built.
    pub size: u64,
    /// How far its build has come, as its builder last reported.
    pub progress: Option<BuildProgress>,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Metadata: `id`, `created_at` and whatever users added.
    pub meta: BTreeMap<String, String>,
    /// Live holders, oldest first.
    pub holders: Vec<Holding>,
}

impl DirRecord {
    /// Whether this host has its copy of the directory.
    pub fn has_copy_here(&self) -> bool {
        self.copies.contains_key(&Host::current().name)
    }

    /// Sets `path` to this host's copy, if it has one.
    fn with_local_path(mut self) -> DirRecord {
        if let Some(path) = self.copies.get(&Host::current().name) {
            self.path = path.clone();
        }
        self
    }
}

/// How far a build has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildProgress {
    /// What the builder does now, like `downloading data.tar.gz`.
    pub phase: String,
    /// Bytes (or items) done in this phase.
    pub done: u64,
    /// The phase's total, if known.
    pub total: Option<u64>,
    /// Bytes written into the directory so far, all phases together.
    #[serde(default)]
    pub written: u64,
}

/// What a new directory record starts with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewDir {
    /// Where it will be on disk.
    pub path: String,
    /// The hash of its recipe, if any.
    pub recipe_hash: Option<String>,
    /// The recipe in its canonical form, if any.
    pub recipe: Option<String>,
    /// Its first metadata.
    pub meta: BTreeMap<String, String>,
    /// Who builds it, if it must be built before use. The builder need not be
    /// a holder: a command builds what its calling shell holds.
    pub builder: Option<Holder>,
    /// The space it needs, reserved in its folder while it is built.
    pub size: u64,
}

/// The result of [`Coordinator::attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// Now held; `created` if this call made the record.
    Held {
        /// The record after attaching.
        record: DirRecord,
        /// Whether this call created it.
        created: bool,
    },
    /// The directory is being deleted; wait for it to go, then try again.
    Deleting(DirRecord),
}

/// Where holders and shared directories' states live.
///
/// Every method first releases dead and expired holders of the records it
/// touches. Implementations make each method atomic across every process and
/// host that shares them.
pub trait Coordinator: Send + Sync {
    /// Adds `holder` to `name` (again is fine), creating the record from `new`
    /// if there is none.
    fn attach(&self, name: &str, holder: &Holder, new: &NewDir) -> Result<Attached>;

    /// Removes `holder` from `name`; returns the record after, if there is one.
    fn detach(&self, name: &str, holder: &Holder) -> Result<Option<DirRecord>>;

    /// One record.
    fn get(&self, name: &str) -> Result<Option<DirRecord>>;

    /// One record as it is, without releasing anyone: cheap enough to poll.
    /// Its holders may include dead ones.
    fn peek(&self, name: &str) -> Result<Option<DirRecord>>;

    /// Every record, by name.
    fn list(&self) -> Result<Vec<DirRecord>>;

    /// Sets whether `name` stays after its last holder.
    fn set_locked(&self, name: &str, locked: bool) -> Result<Option<DirRecord>>;

    /// Adds or replaces metadata entries.
    fn insert_meta(&self, name: &str, entries: &[(String, String)]) -> Result<Option<DirRecord>>;

    /// Removes metadata entries (keys it lacks are no error).
    fn remove_meta(&self, name: &str, keys: &[String]) -> Result<Option<DirRecord>>;

    /// Marks `name` as being deleted by `deleter` if nobody holds it and it is
    /// not locked (or `force`), or if its earlier deleter died; returns the
    /// record to delete. `None`: leave it alone.
    fn begin_delete(&self, name: &str, deleter: &Holder, force: bool) -> Result<Option<DirRecord>>;

    /// Drops the record of `name` if it is still being deleted under the
    /// grant `fence` (from [`begin_delete`](Coordinator::begin_delete)); false
    /// if someone took the deletion over, or the directory was made anew.
    fn finish_delete(&self, name: &str, fence: u64) -> Result<bool>;

    /// Makes `builder` the builder of `name` if it is being built and its
    /// builder is `builder` already or has died (or lost its lease), or if its
    /// last build failed; returns the record to (re)build, with its progress
    /// cleared and a new [`fence`](DirRecord::fence) for the build. `None`:
    /// someone alive builds it, or it is ready or being deleted.
    fn claim_build(&self, name: &str, builder: &Holder) -> Result<Option<DirRecord>>;

    /// Marks `name` ready if `builder` still builds it under the grant
    /// `fence` (the record's fence when it was created with `builder`, or
    /// when `builder` claimed it); false if someone took the build over.
    fn finish_build(&self, name: &str, fence: u64, builder: &Holder) -> Result<bool>;

    /// Marks the build of `name` failed with `error` if `builder` still builds
    /// it under the grant `fence`; false if someone took the build over.
    fn fail_build(&self, name: &str, fence: u64, builder: &Holder, error: &str) -> Result<bool>;

    /// Records how far `builder`'s build of `name` under the grant `fence`
    /// has come, for those who wait, and renews the grant's lease; false if
    /// `builder` no longer builds it.
    fn report_progress(
        &self,
        name: &str,
        fence: u64,
        builder: &Holder,
        progress: &BuildProgress,
    ) -> Result<bool>;

    /// Renews the lease of `holder`'s build or deletion of `name` under the
    /// grant `fence`; false if the grant is lost (someone took it over).
    fn renew_grant(&self, name: &str, fence: u64, holder: &Holder) -> Result<bool>;

    /// Records `path` as this host's copy of the directory `name` of
    /// `generation`, unless this host has one already; returns the record
    /// (whose [`copies`](DirRecord::copies) say which copy is this host's).
    /// `None`: the directory is gone, made anew, or being deleted.
    fn add_copy(&self, name: &str, generation: u64, path: &str) -> Result<Option<DirRecord>>;

    /// The latest generation of `name` that was deleted, if the coordinator
    /// remembers (for a while): hosts delete their copies of it only then,
    /// never because a record went missing (a Redis restarted empty).
    fn deleted_generation(&self, _name: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// How long a grant or a hold lasts unless renewed, for backends shared
    /// by hosts that cannot see each other's processes. `None`: they last as
    /// long as their process (one host).
    fn lease(&self) -> Option<Duration> {
        None
    }
}

/// A coordinator of both directories and pools.
pub trait Backend: Coordinator + PoolCoordinator {}

impl<T: Coordinator + PoolCoordinator> Backend for T {}

/// Opens the coordinator `spec` names: empty or `sqlite` for the SQLite
/// database in the larder home `home`, a `redis://`, `rediss://`,
/// `redis+unix://` or `unix://` URL (or several, comma-separated, for a
/// Redis Cluster) for Redis, with `options`.
pub fn open(spec: &str, home: &Path, options: RedisOptions) -> Result<Arc<dyn Backend>> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "sqlite" {
        return Ok(Arc::new(SqliteCoordinator::open(home)?));
    }
    if redis::is_redis_url(spec) {
        let options =
            RedisOptions { home: options.home.or_else(|| Some(home.to_path_buf())), ..options };
        return Ok(Arc::new(RedisCoordinator::connect(spec, options)?));
    }
    Err(crate::Error::new(
        crate::ErrorKind::Config,
        format!(
            "coordinator `{}` is neither `sqlite` nor a redis://, rediss://, redis+unix:// or unix:// URL; fix the coordinator setting",
            redis::redact(spec)
        ),
    ))
}

/// What `larder config` and `larder dir ls -v` say of the coordinator
/// `spec` of the home `home`: the SQLite database, or the Redis URL with its
/// password hidden.
pub fn describe(spec: &str, home: &Path) -> String {
    let spec = spec.trim();
    if spec.is_empty() || spec == "sqlite" {
        format!("sqlite ({})", sqlite::database(home).display())
    } else {
        redis::redact(spec)
    }
}

/// `value` as JSON, as the backends store it.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
