//! The one place this crate composes the library: configuration read as the
//! `larder` command reads it, and the store, remotes, directories and pools
//! opened from it. Everything else in the crate asks here, so a change in how
//! the library is put together (or a new coordinator) touches this file only.

use std::path::PathBuf;

use larder::config::Sources;
use larder::coord::Holder;
use larder::pool::Pools;
use larder::{Config, Dirs, Error, ErrorKind, Larder, Result, Store};

/// The coordinators [`open_dirs`] can use, by URL scheme; the Python package
/// exposes this list so its tests know what to expect.
pub const COORDINATORS: &[&str] = &["local"];

/// The effective configuration: files, `LARDER_*` variables, then what the
/// Python caller gave (as the command line's flags would be).
pub fn config(home: Option<PathBuf>, capacity: Option<u64>) -> Result<Config> {
    let mut sources = Sources::from_process()?;
    if let Some(home) = home {
        sources = sources.flag("home", home.display().to_string(), "home= (Python)");
    }
    if let Some(capacity) = capacity {
        sources = sources.flag("capacity", capacity.to_string(), "capacity= (Python)");
    }
    Config::load(&sources)
}

/// The local store of `config`, with the configured remotes behind it when
/// `remotes` is true (else none: the local tier alone).
pub fn open_larder(config: &Config, remotes: bool) -> Result<Larder> {
    if remotes {
        return Larder::open(config);
    }
    let store = Store::open(&config.home, config.capacity)?.with_verify_reads(config.verify_reads);
    Ok(Larder::new(store, Vec::new()))
}

/// The shared directories of `config`'s home, created in `places` (else the
/// configured `dirs`), coordinated by `coordinator` (a URL; else the home's
/// own SQLite coordinator).
pub fn open_dirs(
    config: &Config,
    places: Option<Vec<PathBuf>>,
    coordinator: Option<&str>,
) -> Result<Dirs> {
    let dirs = match coordinator {
        None => Dirs::open(&config.home)?,
        // The Redis coordinator plugs in here, as
        // `Dirs::with_coordinator(Vec::new(), <the coordinator for url>)`.
        Some(url) => return Err(no_coordinator(url)),
    };
    Ok(dirs
        .with_places(places.unwrap_or_else(|| config.dirs.clone()))
        .with_store_config(config.capacity, config.verify_reads)
        .with_fetch(config.fetch.clone()))
}

/// Who holds what this process acquires (directories, instances): the
/// process itself, so its death releases them wherever it happens.
pub fn holder() -> Holder {
    Holder::current_process()
}

/// The compute pools of `config`'s home, with sources found as the command
/// line finds them.
pub fn open_pools(config: &Config) -> Result<Pools> {
    Pools::open(&config.home, &config.pool_roots)
}

fn no_coordinator(url: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "coordinator {url}: this larder has no coordinator for it (it knows {}); leave host and port unset to use this host's own",
            COORDINATORS.join(", ")
        ),
    )
}
