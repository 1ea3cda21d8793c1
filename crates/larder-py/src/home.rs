//! The one place this crate composes the library: configuration read as the
//! `larder` command reads it, and the store, remotes, directories and pools
//! opened from it. Everything else in the crate asks here, so a change in how
//! the library is put together (or a new coordinator) touches this file only.

use std::path::PathBuf;

use larder::config::Sources;
use larder::coord::Holder;
use larder::pool::Pools;
use larder::{Config, Dirs, Home, Larder, Result};

/// The coordinators [`open_dirs`] can use, by URL scheme; the Python package
/// exposes this list so its tests know what to expect.
pub const COORDINATORS: &[&str] = &["local", "redis"];

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
    let home = Home::new(config.clone());
    if remotes {
        return home.larder_to_push();
    }
    Ok(Larder::new(home.store()?, Vec::new()))
}

/// The shared directories of `config`'s home, created in `places` (else the
/// configured `dirs`), coordinated by `coordinator` (a Redis URL; else the
/// configured coordinator).
pub fn open_dirs(
    config: &Config,
    places: Option<Vec<PathBuf>>,
    coordinator: Option<&str>,
) -> Result<Dirs> {
    // This process renews its own holds at a Redis while it lives (the
    // home's default agent), so its death (or its host's) ends them one
    // lease later.
    let mut config = config.clone();
    if let Some(url) = coordinator {
        config.coordinator = url.to_string();
    }
    let dirs = Home::new(config.clone()).dirs()?;
    Ok(match places {
        Some(places) => dirs.with_places(places),
        None => dirs.with_places(config.dirs.clone()),
    })
}

/// Who holds what this process acquires (directories, instances): the
/// process itself, so its death releases them wherever it happens.
pub fn holder() -> Holder {
    Holder::current_process()
}

/// The compute pools of `config`'s home, with sources found as the command
/// line finds them.
pub fn open_pools(config: &Config) -> Result<Pools> {
    Home::new(config.clone()).pools()
}
