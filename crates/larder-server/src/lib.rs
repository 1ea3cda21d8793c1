//! `larder serve`: the store over HTTP/1.1 and HTTP/2 (h2c, or TLS with
//! ALPN), with the protocols its clients already speak: Bazel's HTTP cache
//! and its remote API over gRPC (REAPI v2, on the same port),
//! plain GET/PUT/HEAD/DELETE for ccache and Gradle, the WebDAV that sccache
//! sends, and larder's own remote tier. Bodies stream both ways; memory stays
//! flat whatever their size.
//!
//! This crate is the only one that knows HTTP serving; the store it serves
//! knows nothing of it.
#![deny(missing_docs)]

mod app;
mod auth;
mod blobs;
mod body;
mod encoding;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod hot;
mod htpasswd;
mod listen;
mod metrics;
mod paths;
mod pool;
pub mod pypi;
mod reapi;
mod respond;
mod state;
mod status;
#[cfg(test)]
mod tests;
mod webdav;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder::{Error, ErrorKind};

pub use htpasswd::Htpasswd;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The larder home whose store is served.
    pub home: PathBuf,
    /// A folder of wheels and sdists the package index serves in place
    /// (uploads land in it); larder's own state stays in the home.
    pub folder: Option<PathBuf>,
    /// The store's capacity in bytes.
    pub capacity: u64,
    /// The address to listen on.
    pub addr: SocketAddr,
    /// An htpasswd file; without one, anyone may read and write.
    pub user_db: Option<PathBuf>,
    /// Let requests without credentials read.
    pub anonymous_read: bool,
    /// Users of the htpasswd file who may only read.
    pub read_only_users: Vec<String>,
    /// The largest body accepted (the store's capacity in any case).
    pub max_blob_size: Option<u64>,
    /// A certificate chain and its key, PEM, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long a client may stay silent: while sending its request's
    /// headers, between body bytes, and on an idle kept-alive connection.
    pub timeout: Duration,
    /// Connections served at once; more are refused with 503.
    pub max_connections: usize,
    /// How long in-flight requests may run on after SIGTERM or SIGINT.
    pub grace: Duration,
    /// Bytes of small blobs kept in memory once read (0: none).
    pub memory_cache: u64,
    /// Simple indexes the package index proxies, in order.
    pub upstreams: Vec<String>,
    /// How long an upstream's page is trusted before it is asked again.
    pub upstream_ttl: Duration,
    /// How long an upstream may stay silent, well inside pip's and uv's own
    /// timeouts (15 s and 30 s), so their clients hear from this server first.
    pub upstream_timeout: Duration,
    /// How often the served folder is looked through for new packages.
    pub rescan: Duration,
    /// Hash every blob read from disk, not only those whose file changed.
    pub verify_reads: bool,
    /// Write a line per request to standard error: client, user, time,
    /// request line, status, bytes and how long it took.
    pub access_log: bool,
}

impl ServeOptions {
    /// Defaults for `home` on `addr`: no auth, 60 s timeouts, 10,000
    /// connections, 30 s of grace.
    pub fn new(home: PathBuf, capacity: u64, addr: SocketAddr) -> ServeOptions {
        ServeOptions {
            home,
            folder: None,
            capacity,
            addr,
            user_db: None,
            anonymous_read: false,
            read_only_users: Vec::new(),
            max_blob_size: None,
            tls: None,
            timeout: Duration::from_secs(60),
            max_connections: 10_000,
            grace: Duration::from_secs(30),
            memory_cache: 32 << 20,
            upstreams: Vec::new(),
            upstream_ttl: Duration::from_secs(600),
            upstream_timeout: Duration::from_secs(10),
            rescan: Duration::from_secs(30),
            verify_reads: false,
            access_log: false,
        }
    }
}

/// Refuses to serve a folder that is not one.
fn check_folder(folder: &std::path::Path) -> Result<(), Error> {
    let shown = folder.display();
    match std::fs::metadata(folder) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{shown} is not a folder: name the folder of wheels and sdists to serve"),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "there is no folder {shown}: create it (mkdir -p {shown}), or name the folder of packages to serve"
                ),
            ));
        }
        Err(e) => return Err(Error::io("read", folder, e)),
    }
    Ok(())
}

/// Serves until SIGTERM or SIGINT, then lets in-flight requests finish (for
/// up to `grace`) and records what was read. `ready` is told the address once
/// the server listens.
pub fn run(options: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("larder-serve")
        .build()
        .map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot start the server's runtime: {e}"))
        })?;
    runtime.block_on(serve(options, ready))
}

/// The server's parts, before it listens.
struct Assembled {
    state: Arc<state::AppState>,
    pypi: Arc<pypi::PypiState>,
}

impl Assembled {
    /// Opens the store, the memory cache, the package index and the users.
    fn open(options: &ServeOptions) -> Result<Assembled, Error> {
        let auth = match &options.user_db {
            Some(path) => {
                let users = Htpasswd::load(path)?;
                for user in &options.read_only_users {
                    if !users.contains(user) {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "--read-only-users names {user}, who is not in {}",
                                path.display()
                            ),
                        ));
                    }
                }
                let read_only: HashSet<String> = options.read_only_users.iter().cloned().collect();
                Some(Arc::new(auth::Auth::new(users, read_only, options.anonymous_read)))
            }
            None if !options.read_only_users.is_empty() || options.anonymous_read => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "--read-only-users and --anonymous-read need users: give an htpasswd file with -u",
                ));
            }
            None => None,
        };
        let pool = Arc::new(pool::StorePool::open(
            options.home.clone(),
            options.capacity,
            options.verify_reads,
        )?);
        let watch = larder::Store::open(&options.home, options.capacity)?;
        let hot = Arc::new(hot::HotCache::new(
            watch,
            usize::try_from(options.memory_cache).unwrap_or(usize::MAX),
        ));
        let core = Arc::new(state::Core {
            pool,
            hot,
            metrics: Arc::default(),
            uploads: state::Uploads::new(
                options.max_blob_size.unwrap_or(u64::MAX),
                options.timeout,
            ),
        });
        if let Some(folder) = &options.folder {
            check_folder(folder)?;
        }
        let pypi = Arc::new(pypi::PypiState::open(
            &options.home,
            options.folder.clone(),
            core.clone(),
            options.upstreams.clone(),
            options.upstream_ttl,
            options.upstream_timeout,
        )?);
        let started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let state = Arc::new(state::AppState {
            core,
            auth,
            started: Instant::now(),
            started_at,
            access_log: options.access_log,
        });
        Ok(Assembled { state, pypi })
    }

    /// The whole server: gRPC requests go to Bazel's remote API, the rest
    /// to the HTTP router.
    fn router(&self) -> axum::Router {
        reapi::beside(app::router(self.state.clone(), self.pypi.clone()), self.state.clone())
    }
}

async fn serve(mut options: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<(), Error> {
    let tls = match &options.tls {
        Some((cert, key)) => Some(listen::tls_acceptor(cert, key)?),
        None => None,
    };
    let server = Assembled::open(&options)?;
    let (pool, hot, metrics) = {
        let core = &server.state.core;
        (core.pool.clone(), core.hot.clone(), core.metrics.clone())
    };
    let pypi = server.pypi.clone();
    // The folder's packages are indexed before the first request, then
    // looked through every so often for files rewritten in place (files
    // added or removed are seen by the next request).
    pypi::folder::refresh(&pypi, true).await;
    let rescanner = {
        let (every, pypi) = (options.rescan, pypi.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                pypi::folder::refresh(&pypi, true).await;
            }
        })
    };
    // `larder pypi rm|yank|unyank` change the index from another process.
    let index_watcher = {
        let pypi = pypi.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut seen = None;
            loop {
                tick.tick().await;
                let p = pypi.clone();
                let Ok(Ok(now)) = tokio::task::spawn_blocking(move || p.index.data_version()).await
                else {
                    continue;
                };
                if seen.is_some_and(|s| s != now) {
                    pypi.changed();
                }
                seen = Some(now);
            }
        })
    };
    let allowed = usize::try_from(listen::connections_allowed()).unwrap_or(usize::MAX).max(1);
    if options.max_connections > allowed {
        tracing::warn!(
            "serving at most {allowed} connections, not {}: the limit on open files allows no more (raise `ulimit -n`)",
            options.max_connections
        );
        options.max_connections = allowed;
    }
    let listener = listen::bind(options.addr).map_err(|e| {
        let fix = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another program listens there: choose a port with -p"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need privileges: choose one with -p"
            }
            _ => "",
        };
        Error::new(ErrorKind::Io, format!("cannot listen on {}: {e}{fix}", options.addr))
    })?;
    let addr = listener.local_addr().map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    ready(addr);

    // Reads are recorded once a second, not once a request, with the hot
    // cache's own handle: its own writes do not count as changes to it.
    let flush = {
        let (pool, hot) = (pool.clone(), hot.clone());
        move || {
            if let Err(e) = hot.with_watch(|store| pool.flush_reads_with(store)) {
                tracing::warn!("recording reads: {e}");
            }
        }
    };
    let flusher = {
        let flush = flush.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let _ = tokio::task::spawn_blocking(flush.clone()).await;
            }
        })
    };
    let router = server.router();
    listen::accept_until_signal(listener, tls, router, &options, metrics).await;
    flusher.abort();
    rescanner.abort();
    index_watcher.abort();
    let _ = tokio::task::spawn_blocking(flush).await;
    Ok(())
}
