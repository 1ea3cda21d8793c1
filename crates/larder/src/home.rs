//! The composition root: a larder home opened from its configuration. Every
//! part (the store, the remote tiers, the shared directories, the pools) is
//! put together here and nowhere else, so the binary, the server and library
//! users get the same larder from the same [`Config`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::Config;
use crate::coord::{Backend, HostAgent, RedisOptions};
use crate::dirs::Dirs;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pools;
use crate::remote::{Tier, redact};
use crate::store::Store;
use crate::tiers::Larder;

/// Starts a background uploader for the home at the given path (the binary
/// runs `larder push --queued --background`, detached). It may be called when
/// one already runs; that one keeps the queue and the new one exits.
pub type StartUploader = Arc<dyn Fn(&Path) + Send + Sync>;

/// A larder home and its configuration.
#[derive(Clone)]
pub struct Home {
    config: Config,
    uploader: Option<StartUploader>,
    agent: HostAgent,
    /// The coordinator, opened on first use and shared by the directories
    /// and pools of this home (and its clones).
    coordinator: Arc<Mutex<Option<Arc<dyn Backend>>>>,
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home").field("home", &self.config.home).finish()
    }
}

/// What [`Home::check_remotes`] found for one remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteCheck {
    /// The remote's name.
    pub name: String,
    /// Where it is (without credentials).
    pub url: String,
    /// Whether it passed.
    pub ok: bool,
    /// The expectation it failed, if any.
    pub error: Option<String>,
    /// What kind of failure that was (a refused password, an outage…).
    #[serde(skip)]
    pub kind: Option<ErrorKind>,
}

impl Home {
    /// The home `config` describes. Nothing is opened until asked for.
    pub fn new(config: Config) -> Home {
        Home {
            config,
            uploader: None,
            agent: HostAgent::Thread,
            coordinator: Arc::new(Mutex::new(None)),
        }
    }

    /// Who renews the leases of this host's holds at a Redis coordinator
    /// (see [`HostAgent`]); a thread of this process unless set. The binary
    /// starts a detached `larder coordinator-agent`, which outlives the
    /// command that took the hold and exits once the host holds nothing.
    pub fn with_coordinator_agent(mut self, agent: HostAgent) -> Home {
        self.agent = agent;
        self
    }

    /// Starts uploaders with `start` whenever write-back remotes are owed
    /// uploads: when a [`Larder`] is opened (uploads owed from an earlier run,
    /// a crash, a remote that was down) and when one is closed
    /// ([`Larder::close_local`]). Without it, the queue waits for
    /// `larder push --queued` or [`Larder::close`].
    pub fn with_uploader(mut self, start: impl Fn(&Path) + Send + Sync + 'static) -> Home {
        self.uploader = Some(Arc::new(start));
        self
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The local tier alone.
    pub fn store(&self) -> Result<Store> {
        Ok(Store::open(&self.config.home, self.config.capacity)?
            .with_verify_reads(self.config.verify_reads))
    }

    /// The store with its remote tiers. If uploads are owed to a write-back
    /// remote, a background uploader is started.
    pub fn larder(&self) -> Result<Larder> {
        let larder = self.larder_to_push()?;
        larder.start_uploader_if_needed()?;
        Ok(larder)
    }

    /// The store with its remote tiers, for those who send the queue
    /// themselves (`larder push`, the uploader): no uploader is started.
    pub fn larder_to_push(&self) -> Result<Larder> {
        let larder = Larder::open(&self.config)?;
        Ok(match &self.uploader {
            Some(start) => larder.with_uploader(start.clone()),
            None => larder,
        })
    }

    /// The configured coordinator (SQLite in the home unless
    /// `coordinator` names a Redis), connected on first use. A Redis that
    /// cannot be reached fails here, naming its URL without a password,
    /// before anything changed.
    pub fn coordinator(&self) -> Result<Arc<dyn Backend>> {
        let mut opened = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(backend) = opened.as_ref() {
            return Ok(backend.clone());
        }
        crate::store::check_home(&self.config.home)?;
        let backend =
            crate::coord::open(&self.config.coordinator, &self.config.home, self.redis_options())?;
        Ok(opened.insert(backend).clone())
    }

    /// How a Redis coordinator is reached: the configured lease, the agent,
    /// and a password from `REDISCLI_AUTH` or the netrc file when the URL
    /// has none.
    pub fn redis_options(&self) -> RedisOptions {
        RedisOptions {
            lease: self.config.coordinator_lease,
            agent: self.agent.clone(),
            home: Some(self.config.home.clone()),
            password: crate::coord::redis::password_for(&self.config.coordinator, &self.config.env),
            ..RedisOptions::default()
        }
    }

    /// Which coordinator the home uses, for people: the SQLite database, or
    /// the Redis URL without its password.
    pub fn coordinator_name(&self) -> String {
        crate::coord::describe(&self.config.coordinator, &self.config.home)
    }

    /// The shared directories, created in the configured places and
    /// coordinated by the configured coordinator; recipes download through
    /// the store and with the configured HTTP settings.
    pub fn dirs(&self) -> Result<Dirs> {
        let dirs = Dirs::open_with(&self.config.home, self.coordinator()?)?
            .with_places(self.config.dirs.clone())
            .with_store_config(self.config.capacity, self.config.verify_reads)
            .with_downloads(self.config.http, self.config.remotes.clone(), self.config.env.clone());
        if self.config.remotes.is_empty() {
            return Ok(dirs);
        }
        // Directories pushed to the remotes are restored from them and
        // deleted from them with the directory.
        let home = self.clone();
        Ok(dirs.with_remote_tiers(Arc::new(crate::dir_transfer::HomeTiers::new(move || {
            home.larder()
        }))))
    }

    /// The compute pools, with sources from the configured folders,
    /// coordinated by the configured coordinator.
    pub fn pools(&self) -> Result<Pools> {
        Pools::open_with(
            &self.config.home,
            &self.config.pool_roots,
            &self.config.env,
            self.coordinator()?,
        )
    }

    /// Runs the conformance suite against the remotes `names` (all if
    /// empty), each writing only if its mode allows.
    pub fn check_remotes(&self, names: &[String]) -> Result<Vec<RemoteCheck>> {
        let remotes = &self.config.remotes;
        for name in names {
            if !remotes.iter().any(|r| &r.name == name) {
                let known: Vec<&str> = remotes.iter().map(|r| r.name.as_str()).collect();
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no remote is named {name}; the configured ones: {}",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
            }
        }
        Ok(remotes
            .iter()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            .map(|config| {
                let verdict = Tier::open(config, &self.config.http, &self.config.env)
                    .and_then(|tier| tier.check());
                RemoteCheck {
                    name: config.name.clone(),
                    url: redact(&config.url),
                    ok: verdict.is_ok(),
                    kind: verdict.as_ref().err().map(Error::kind),
                    error: verdict.err().map(|e| e.to_string()),
                }
            })
            .collect())
    }
}
