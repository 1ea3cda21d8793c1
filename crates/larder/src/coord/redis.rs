//! The coordinator for many hosts: one Redis (or Redis Cluster) that every
//! host points at.
//!
//! Keys (`P` is the prefix, `larder` unless configured):
//! - `P:{dir:NAME}` (hash): a directory's record: `path`, `generation`,
//!   `fence`, `state` (`building`, `ready`, `failed`, `deleting`), `locked`,
//!   `size`, `created_at`, `meta` (JSON), `recipe_hash`, `recipe`,
//!   `failure`, `progress` (JSON), and the grant under way: `grant` (holder
//!   JSON), `grant_key`, `grant_expires`;
//! - `P:{dir:NAME}:holders` (hash): holder key → `SINCE HOLDER-JSON`;
//! - `P:{dir:NAME}:leases` (sorted set): holder key by the end of its lease;
//! - `P:{dir:NAME}:fence` (counter): the last fencing token handed out,
//!   kept a day after the record goes;
//! - `P:{coord}:dirs` (hash): name → latest generation, for listing;
//! - `P:{coord}:pools` (hash): the pools' state (JSON) and its `version`;
//! - `P:{coord}:hosts` (hash): `HOST\x1fBOOT` → the end of its lease;
//! - `P:{coord}:holds:HOST:BOOT` (hash): what that host's processes hold,
//!   for its agent.
//!
//! Every change is one Lua script over keys of one hash tag (`{dir:NAME}`
//! or `{coord}`), so it is atomic, and runs on one node of a Cluster. Times
//! are the server's (`TIME`), never a host's clock. `scripts.rs` holds the
//! scripts, `dirs.rs` and `pools.rs` the two traits over them, `agent.rs`
//! the renewal of leases.
//!
//! A process is checked alive only by its own host; its holds and grants
//! also carry a lease, which its host's agent (holds) or the process itself
//! (builds, deletions) renews. A lease that ran out is released by the next
//! look from any host. For one lease after the server starts, larder's own
//! leases do not run out: a restarted Redis gives every host time to renew.

mod agent;
mod dirs;
mod pools;
mod scripts;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use redis::{ConnectionLike, IntoConnectionInfo, RedisError, Script, Value};

use super::{Holder, Host, now_ms};
use crate::error::{Error, ErrorKind, Result};

pub use agent::run_host_agent;
use scripts::DirScripts;

/// The lease of holds and grants unless configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How a [`RedisCoordinator`] is set up, beyond its URL.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// How long a hold or a grant lasts unless renewed.
    pub lease: Duration,
    /// What every key starts with, so that several larder installations
    /// can share one Redis.
    pub prefix: String,
    /// Who renews the leases of this host's holds.
    pub agent: HostAgent,
    /// The larder home, where the agent's lock file lives.
    pub home: Option<PathBuf>,
    /// The password, when the URL has none.
    pub password: Option<String>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one command may take.
    pub timeout: Duration,
    /// Whether the URLs name nodes of a Redis Cluster (also when there are
    /// several, comma-separated).
    pub cluster: bool,
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions {
            lease: DEFAULT_LEASE,
            prefix: "larder".to_string(),
            agent: HostAgent::None,
            home: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            cluster: false,
        }
    }
}

/// Who renews the leases of the holds this host's processes have.
#[derive(Debug, Clone, Default)]
pub enum HostAgent {
    /// Nobody: a hold of a process of this host ends one lease after it was
    /// taken. For tests, and callers that renew by themselves.
    #[default]
    None,
    /// A thread of this process, while it lives: for long-running servers.
    Thread,
    /// This command (program and arguments), started detached when this host
    /// first holds something and no agent runs for the home; it must call
    /// [`run_host_agent`]. It is given `--lease-ms MS --prefix PREFIX` and the
    /// coordinator's URL in `LARDER_COORDINATOR` (never on its command line,
    /// where other users could read a password).
    Command(Vec<OsString>),
}

/// Whether `spec` is a URL (or a comma-separated list of URLs) of Redis.
pub fn is_redis_url(spec: &str) -> bool {
    spec.split(',').all(|u| {
        let u = u.trim();
        ["redis://", "rediss://", "redis+unix://", "unix://", "valkey://", "valkeys://"]
            .iter()
            .any(|scheme| u.starts_with(scheme))
    })
}

/// `spec` with every password (`:PASSWORD@`, or `pass=` in a socket's
/// query) replaced by `***`, for messages.
pub fn redact(spec: &str) -> String {
    spec.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let url = match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let user = rest[..at].split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
                }
                None => url.to_string(),
            };
            match url.split_once('?') {
                Some((path, query)) => {
                    let query: Vec<String> = query
                        .split('&')
                        .map(|kv| match kv.split_once('=') {
                            Some(("pass", _)) => "pass=***".to_string(),
                            _ => kv.to_string(),
                        })
                        .collect();
                    format!("{path}?{}", query.join("&"))
                }
                None => url,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The password for the coordinator at `spec` when its URL gives none:
/// `REDISCLI_AUTH`, else the netrc entry of its (first) host, for the URL's
/// user if it names one. `None` when the URL has a password, or nothing
/// gives one.
pub fn password_for(spec: &str, env: &crate::env::Environment) -> Option<String> {
    let first = spec.split(',').map(str::trim).find(|u| !u.is_empty())?;
    let info = first.into_connection_info().ok()?;
    if info.redis_settings().password().is_some() {
        return None;
    }
    if let Some(password) = env.redis_password() {
        return Some(password.to_string());
    }
    let host = match info.addr() {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => host,
        _ => return None,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    crate::remote::netrc::password(env, host, info.redis_settings().username())
}

/// What larder last learned of the server at connect.
#[derive(Debug, Clone, Default)]
struct ServerInfo {
    /// Its `run_id`, which changes when it restarts.
    run_id: String,
    /// Until when (server time, ms) larder's own leases do not run out: one
    /// lease after the server started.
    grace_until: i64,
    /// The server's clock minus this host's, in ms, as last seen.
    offset_ms: i64,
}

type Connection = Box<dyn ConnectionLike + Send>;

/// Coordination in a Redis shared by every host.
pub struct RedisCoordinator {
    /// The URL as given, password and all: only for the agent it starts.
    spec: String,
    shown: String,
    nodes: Vec<redis::ConnectionInfo>,
    options: RedisOptions,
    conn: Mutex<Option<Connection>>,
    server: Mutex<ServerInfo>,
    dir_scripts: DirScripts,
    index_set: Script,
    index_del: Script,
    pool_read: Script,
    pool_write: Script,
    register: Script,
    /// Registry fields this process wrote already.
    registered: Mutex<HashSet<String>>,
    /// The thread that renews this host's leases, with [`HostAgent::Thread`].
    thread_agent: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordinator").field("url", &self.shown).finish()
    }
}

impl RedisCoordinator {
    /// Connects to the Redis at `url` (several comma-separated URLs: nodes
    /// of a Cluster), checking that it will not evict what larder keeps.
    pub fn connect(url: &str, options: RedisOptions) -> Result<RedisCoordinator> {
        let shown = redact(url);
        let mut nodes = Vec::new();
        for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let mut info = one.into_connection_info().map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "coordinator URL {shown} is not valid ({}); write it as redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://… or redis+unix:///PATH",
                        one_line(&e)
                    ),
                )
            })?;
            if info.redis_settings().password().is_none()
                && let Some(password) = &options.password
            {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
            nodes.push(info);
        }
        if nodes.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the coordinator URL is empty; give redis://HOST:PORT",
            ));
        }
        let coord = RedisCoordinator {
            spec: url.to_string(),
            shown,
            nodes,
            options,
            conn: Mutex::new(None),
            server: Mutex::new(ServerInfo::default()),
            dir_scripts: DirScripts::new(),
            index_set: Script::new(scripts::INDEX_SET),
            index_del: Script::new(scripts::INDEX_DEL),
            pool_read: Script::new(scripts::POOL_READ),
            pool_write: Script::new(scripts::POOL_WRITE),
            register: Script::new(scripts::REGISTER),
            registered: Mutex::new(HashSet::new()),
            thread_agent: Mutex::new(None),
        };
        // Connect now: a wrong URL or an evicting server fails here, once.
        coord.with_conn(|_| Ok(()))?;
        agent::revive(&coord)?;
        Ok(coord)
    }

    /// The URL with its password hidden, for messages.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The options it was made with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    fn is_cluster(&self) -> bool {
        self.options.cluster || self.nodes.len() > 1
    }

    fn open(&self) -> Result<Connection> {
        let mut server = ServerInfo::default();
        let mut checked = |conn: &mut dyn ConnectionLike| -> Result<()> {
            let found = self.check_server(conn)?;
            server.grace_until = server.grace_until.max(found.grace_until);
            server.offset_ms = found.offset_ms;
            server.run_id.push_str(&found.run_id);
            Ok(())
        };
        let conn: Connection = if self.is_cluster() {
            // Every seed node is checked; the cluster connection finds the rest.
            for info in &self.nodes {
                let mut one = self.connect_one(info)?;
                checked(&mut one)?;
            }
            let client = redis::cluster::ClusterClient::builder(self.nodes.clone())
                .connection_timeout(self.options.connect_timeout)
                .response_timeout(self.options.timeout)
                .build()
                .map_err(|e| self.error(&e))?;
            Box::new(client.get_connection().map_err(|e| self.error(&e))?)
        } else {
            let mut one = self.connect_one(&self.nodes[0])?;
            checked(&mut one)?;
            Box::new(one)
        };
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = server;
        Ok(conn)
    }

    fn connect_one(&self, info: &redis::ConnectionInfo) -> Result<redis::Connection> {
        let client = redis::Client::open(info.clone()).map_err(|e| self.error(&e))?;
        let conn = client
            .get_connection_with_timeout(self.options.connect_timeout)
            .map_err(|e| self.error(&e))?;
        let timeout = Some(self.options.timeout);
        conn.set_read_timeout(timeout).map_err(|e| self.error(&e))?;
        conn.set_write_timeout(timeout).map_err(|e| self.error(&e))?;
        Ok(conn)
    }

    /// Refuses a server that evicts keys when full: it would drop holds and
    /// records without a word. `noeviction` is safe; so are the `volatile-*`
    /// policies, which evict only keys with an expiry, and the only such keys
    /// of larder are retired fence counters, whose loss the clock floor of
    /// the fences covers. Learns when the server started.
    fn check_server(&self, conn: &mut dyn ConnectionLike) -> Result<ServerInfo> {
        // The default sections hold both `server` and `memory`, on every version.
        let info: String = redis::cmd("INFO").query(conn).map_err(|e| self.error(&e))?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
        };
        let policy = field("maxmemory_policy").unwrap_or("noeviction");
        if policy != "noeviction" && !policy.starts_with("volatile-") {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the coordinator at {} evicts keys when it is full (maxmemory-policy {policy}), which would drop holds without a word; set maxmemory-policy to noeviction there (CONFIG SET maxmemory-policy noeviction, and in redis.conf)",
                    self.shown
                ),
            ));
        }
        let (secs, micros): (i64, i64) =
            redis::cmd("TIME").query(conn).map_err(|e| self.error(&e))?;
        let now = secs * 1000 + micros / 1000;
        let uptime: i64 = field("uptime_in_seconds").and_then(|u| u.parse().ok()).unwrap_or(0);
        // Uptime counts whole seconds, so this start is up to one second
        // late: the grace errs long, never short.
        let started = now - uptime * 1000;
        Ok(ServerInfo {
            run_id: field("run_id").unwrap_or_default().to_string(),
            grace_until: started + self.lease_ms(),
            offset_ms: now - now_ms(),
        })
    }

    /// Runs `f` on the connection, connecting first if needed. A connection
    /// that failed is dropped, so the next call connects again (and learns
    /// of a restart). A connection that was open from before and turns out
    /// dropped (the server restarted since) is opened again and `f` tried
    /// once more, unless `f` must not run twice.
    fn with_conn<T>(
        &self,
        f: impl FnMut(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.with_conn_tries(true, f)
    }

    fn with_conn_tries<T>(
        &self,
        retry: bool,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut reused = guard.is_some();
        loop {
            let conn = match guard.as_mut() {
                Some(conn) => conn,
                None => guard.insert(self.open()?),
            };
            match f(conn.as_mut()) {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let lost = e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_timeout()
                        || e.is_unrecoverable_error();
                    if lost {
                        *guard = None;
                    }
                    if !(lost && reused && retry && e.is_connection_dropped()) {
                        return Err(self.error(&e));
                    }
                    reused = false;
                }
            }
        }
    }

    /// One line naming the server (never its password) and the fix.
    fn error(&self, e: &RedisError) -> Error {
        let url = &self.shown;
        let code = e.code().unwrap_or_default();
        let text = one_line(e);
        let (kind, message) = if text.contains("invalid peer certificate") {
            (
                ErrorKind::PermissionDenied,
                format!(
                    "the coordinator at {url} shows a TLS certificate this host does not trust ({text}); give its CA in SSL_CERT_FILE, or check the host name in the coordinator URL"
                ),
            )
        } else if e.is_connection_refusal()
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
        {
            (
                ErrorKind::Io,
                format!(
                    "cannot reach the coordinator at {url}: {}; check that Redis runs there and that the coordinator URL is right",
                    one_line(e)
                ),
            )
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || code == "NOAUTH"
            || code == "WRONGPASS"
            || code == "NOPERM"
        {
            (
                ErrorKind::PermissionDenied,
                format!(
                    "the coordinator at {url} refused larder ({}); give the right user and password in the coordinator URL (redis://USER:PASSWORD@HOST)",
                    one_line(e)
                ),
            )
        } else if code == "LOADING" {
            (
                ErrorKind::Busy,
                format!(
                    "the coordinator at {url} is loading its data after a restart; try again in a moment"
                ),
            )
        } else if code == "OOM" {
            (
                ErrorKind::Io,
                format!(
                    "the coordinator at {url} is out of memory ({}); raise its maxmemory or free memory there",
                    one_line(e)
                ),
            )
        } else if code == "READONLY" {
            (
                ErrorKind::Config,
                format!(
                    "the coordinator at {url} is a read-only replica; point the coordinator URL at the primary"
                ),
            )
        } else {
            (ErrorKind::Io, format!("the coordinator at {url} failed: {}", one_line(e)))
        };
        Error::new(kind, message).with_source(e.clone())
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    fn grace_until(&self) -> i64 {
        self.server.lock().unwrap_or_else(|p| p.into_inner()).grace_until
    }

    /// Now by the server's clock, as this host reckons it: when a command
    /// is sent. A script that finds it ran much later than that waited in
    /// the server's queue (a `CLIENT PAUSE`, a stall), and so did every
    /// host's renewals: it lets no process's lease run out.
    fn sent_at(&self) -> i64 {
        now_ms() + self.server.lock().unwrap_or_else(|p| p.into_inner()).offset_ms
    }

    /// Whether a reply computed at `server_now` by a command sent at `sent`
    /// waited in the server's queue past a quarter lease.
    fn waited_in_queue(&self, sent: i64, server_now: i64) -> bool {
        server_now - sent > self.lease_ms() / 4
    }

    fn run_id(&self) -> String {
        self.server.lock().unwrap_or_else(|p| p.into_inner()).run_id.clone()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.options.prefix)
    }

    /// How long `holder`'s hold or grant lasts from now: a process's, one
    /// lease (its host renews it); a token's, until it expires.
    fn ttl_ms(&self, holder: &Holder) -> i64 {
        match holder {
            Holder::Process { .. } => self.lease_ms(),
            // Past 30,000 years a lease is forever; Lua counts in doubles.
            Holder::Token { expires_at, .. } => {
                expires_at.saturating_sub(now_ms()).min(1_000_000_000_000_000)
            }
        }
    }

    fn eval(&self, script: &Script, keys: &[String], args: &[String]) -> Result<Value> {
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(k);
        }
        for a in args {
            call.arg(a);
        }
        // Finishing and storing the pools' state cannot be tried twice: a
        // second try after a first that got through would say "refused".
        let once =
            [&self.dir_scripts.finish_delete, &self.dir_scripts.finish_build, &self.pool_write];
        let retry = !once.iter().any(|s| std::ptr::eq(*s, script));
        self.with_conn_tries(retry, |conn| call.invoke::<Value>(conn))
    }

    fn coord_key(&self, rest: &str) -> String {
        self.key(&format!("{{coord}}:{rest}"))
    }

    fn index_key(&self) -> String {
        self.coord_key("dirs")
    }

    fn hosts_key(&self) -> String {
        self.coord_key("hosts")
    }

    fn holds_key(&self) -> String {
        let host = Host::current();
        self.coord_key(&format!("holds:{}:{}", host.name, host.boot_id))
    }

    fn host_field() -> String {
        let host = Host::current();
        format!("{}\x1f{}", host.name, host.boot_id)
    }

    /// Renews this host's lease and records `entries` (field, JSON) among
    /// its holds, then makes sure an agent renews them.
    fn register(&self, entries: &[(String, String)]) -> Result<()> {
        let mut args = vec![Self::host_field(), self.lease_ms().to_string()];
        for (field, entry) in entries {
            args.push(field.clone());
            args.push(entry.clone());
        }
        self.eval(&self.register, &[self.hosts_key(), self.holds_key()], &args)?;
        if !entries.is_empty() {
            agent::ensure_running(self);
        }
        Ok(())
    }

    fn unregister(&self, fields: &[String]) -> Result<()> {
        if fields.is_empty() {
            return Ok(());
        }
        let key = self.holds_key();
        self.with_conn(|conn| redis::cmd("HDEL").arg(&key).arg(fields).query::<i64>(conn))?;
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        for field in fields {
            registered.remove(field);
        }
        Ok(())
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The fields of a flat `HGETALL` answer.
fn pairs(value: Value) -> BTreeMap<String, String> {
    let Value::Array(items) = value else { return BTreeMap::new() };
    let texts: Vec<Option<String>> = items.iter().map(text).collect();
    texts
        .chunks(2)
        .filter_map(|kv| match kv {
            [Some(k), Some(v)] => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}
