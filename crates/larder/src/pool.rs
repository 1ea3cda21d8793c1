//! Compute pools, as crcache meant them: sources (this host, ssh hosts,
//! commands that make VMs or containers, pools of other sources) make
//! instances, which are acquired, used, released and cached up to a source's
//! `reserve`, never more than its `maximum`.
//!
//! The state lives behind [`PoolCoordinator`], changed in short atomic
//! updates; no update is held while a machine is made or thrown away (a new
//! instance is recorded as provisioning first, then as in use). Every
//! operation first sweeps: instances of dead holders are released, those
//! whose provisioner or discarder died are thrown away by the sweeper.

pub(crate) mod conf;
mod copy;
mod driver;
mod plan;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::coord::{
    Failure, Holder, Instance, InstanceState, PoolCoordinator, SqliteCoordinator, now_ms, update,
};
use crate::env::Environment;
use crate::error::{Error, ErrorKind, Result};

pub use conf::{DEFAULT_TIMEOUT, SourceConf, SourceKind, Sources};
use driver::Driver;
pub use driver::{describe, shell_quote};
use plan::{Released, Taken};

/// How long a failed discard waits before the next sweep tries again.
const DISCARD_RETRY: Duration = Duration::from_secs(60);

/// The pools of one larder home.
pub struct Pools {
    home: PathBuf,
    sources: Sources,
    coord: Arc<dyn PoolCoordinator>,
    me: Holder,
    /// The shell `pool run` starts without a command.
    shell: String,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("home", &self.home).finish()
    }
}

/// What to acquire.
#[derive(Debug, Clone)]
pub struct Acquire {
    /// From which source.
    pub source: String,
    /// How many instances, all or none.
    pub count: usize,
    /// Who holds them: the instances come back when it dies.
    pub holder: Holder,
    /// How long to wait for room when the source is at its maximum; none
    /// fails at once.
    pub wait: Option<Duration>,
}

/// An instance handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acquired {
    /// Its name, for `run`, `cp` and `release`.
    pub name: String,
    /// The source that made it.
    pub source: String,
    /// How many jobs it runs at once.
    pub concurrency: u32,
    /// Whether it was made for this acquire (false: it was cached).
    pub new: bool,
}

/// What became of a released instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// Kept for the next acquire.
    Cached,
    /// Thrown away.
    Discarded,
    /// It was not in use.
    AlreadyCached,
}

/// An instance released, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleasedInstance {
    /// Its name.
    pub name: String,
    /// What became of it.
    pub outcome: ReleaseOutcome,
}

/// `larder pool status`: sources, and with `-a` every instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolReport {
    /// The sources shown.
    pub sources: Vec<SourceStatus>,
    /// Their instances, if asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceStatus>>,
}

/// A source as `larder pool status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// Its name.
    pub source: String,
    /// `local`, `ssh`, `command` or `pool`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Idle instances it keeps.
    pub cached: Vec<String>,
    /// Instances in use (or being provisioned) through it.
    pub in_use: Vec<String>,
    /// Released instances are kept while it has at most this many.
    pub reserve: u32,
    /// Its maximum; `None` for no limit.
    pub maximum: Option<u32>,
    /// The configured concurrency; `None` to probe.
    pub concurrency: Option<u32>,
    /// A pool's members.
    pub members: Vec<String>,
    /// Where it is defined.
    pub origin: String,
    /// Its last failure.
    pub last_failure: Option<Failure>,
}

/// An instance as `larder pool status -a` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// Its name.
    pub name: String,
    /// The source that made it.
    pub source: String,
    /// The sources it counts for, from its holder's down.
    pub path: Vec<String>,
    /// `provisioning`, `cached`, `in-use` or `discarding`.
    pub state: &'static str,
    /// Who holds it, if it is in use.
    pub holder: Option<String>,
    /// Its concurrency (0 until known).
    pub concurrency: u32,
    /// Since when it is in its state, in milliseconds since the Unix epoch.
    pub since: i64,
}

impl Pools {
    /// The pools of the home `home`, with sources read from `roots` (each
    /// holding `sources/<name>/source.conf`; the first definition wins).
    /// `~/` in a source's paths is `env`'s home folder, and `pool run`
    /// without a command runs `env`'s shell.
    pub fn open(home: &Path, roots: &[PathBuf], env: &Environment) -> Result<Pools> {
        Pools::open_with(home, roots, env, Arc::new(SqliteCoordinator::open(home)?))
    }

    /// [`Pools::open`], coordinated by `coord` (see [`crate::coord::open`]).
    pub fn open_with(
        home: &Path,
        roots: &[PathBuf],
        env: &Environment,
        coord: Arc<dyn PoolCoordinator>,
    ) -> Result<Pools> {
        let sources = Sources::load(roots, env.home_dir().as_deref())?;
        for (name, why) in sources.broken() {
            tracing::warn!("source `{name}` cannot be used, the others can: {why}");
        }
        let mut pools = Pools::with_coordinator(home, sources, coord);
        pools.shell = env.shell().to_string();
        Ok(pools)
    }

    /// Pools over a given coordinator and sources.
    pub fn with_coordinator(
        home: &Path,
        sources: Sources,
        coord: Arc<dyn PoolCoordinator>,
    ) -> Pools {
        Pools {
            home: home.to_path_buf(),
            sources,
            coord,
            me: Holder::current_process(),
            shell: "sh".to_string(),
        }
    }

    /// The sources.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// [`Pools::status`] of the sources `only` names (every one if empty),
    /// with their instances if `instances`: an instance is shown when its
    /// source, or a pool it counts for, is.
    pub fn report(&self, only: &[String], instances: bool) -> Result<PoolReport> {
        for name in only {
            self.sources.get(name)?;
        }
        let (sources, all) = self.status()?;
        let shown = |name: &str| only.is_empty() || only.iter().any(|s| s == name);
        Ok(PoolReport {
            sources: sources.into_iter().filter(|s| shown(&s.source)).collect(),
            instances: instances.then(|| {
                all.into_iter()
                    .filter(|i| shown(&i.source) || i.path.iter().any(|p| shown(p)))
                    .collect()
            }),
        })
    }

    /// Every source with its counts, by name, after a sweep.
    pub fn status(&self) -> Result<(Vec<SourceStatus>, Vec<InstanceStatus>)> {
        self.sweep()?;
        let state = self.coord.pools()?;
        let sources = self
            .sources
            .iter()
            .map(|conf| {
                let name = conf.name.as_str();
                let cached = state
                    .instances
                    .iter()
                    .filter(|(_, i)| i.state == InstanceState::Idle && i.owner() == name)
                    .map(|(n, _)| n.clone())
                    .collect();
                let in_use = state
                    .instances
                    .iter()
                    .filter(|(_, i)| {
                        matches!(
                            i.state,
                            InstanceState::InUse { .. } | InstanceState::Provisioning { .. }
                        ) && i.counts_for(name)
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                let maximum = self.sources.maximum(name);
                SourceStatus {
                    source: name.to_string(),
                    kind: conf.kind.type_name(),
                    cached,
                    in_use,
                    reserve: conf.reserve,
                    maximum: (maximum > 0).then_some(maximum),
                    concurrency: (conf.concurrency > 0).then_some(conf.concurrency),
                    members: match &conf.kind {
                        SourceKind::Pool { members } => members.clone(),
                        _ => Vec::new(),
                    },
                    origin: conf.origin(),
                    last_failure: state.failures.get(name).cloned(),
                }
            })
            .collect();
        let instances = state
            .instances
            .iter()
            .map(|(name, i)| InstanceStatus {
                name: name.clone(),
                source: i.source.clone(),
                path: i.path.clone(),
                state: i.state.label(),
                holder: match &i.state {
                    InstanceState::InUse { holder }
                    | InstanceState::Provisioning { holder, .. } => Some(holder.to_string()),
                    _ => None,
                },
                concurrency: self.concurrency_of(i),
                since: i.since,
            })
            .collect();
        Ok((sources, instances))
    }

    /// Acquires instances: cached ones first, then new ones, provisioned
    /// (with `provision.d`) and probed before they are handed out. All or
    /// none: if one fails, the others are released and the failed one is
    /// thrown away and reported.
    pub fn acquire(&self, request: &Acquire) -> Result<Vec<Acquired>> {
        if request.count == 0 {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        let taken = loop {
            self.sweep()?;
            let attempt = update(&*self.coord, |state| {
                plan::acquire(
                    state,
                    &self.sources,
                    &request.source,
                    request.count,
                    &request.holder,
                    &self.me,
                    now_ms(),
                    request.wait.map(|_| started.elapsed()),
                )
            });
            match (attempt, request.wait) {
                (Err(e), Some(wait))
                    if e.kind() == ErrorKind::StoreFull && started.elapsed() < wait =>
                {
                    std::thread::sleep(pause.min(wait.saturating_sub(started.elapsed())));
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                (result, _) => break result?,
            }
        };
        let results: Vec<(Taken, Result<u32>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = taken
                .iter()
                .map(|t| {
                    scope.spawn(move || match t {
                        Taken::Cached(_) => Ok(0),
                        Taken::New(name) => self.provision(name),
                    })
                })
                .collect();
            taken
                .iter()
                .cloned()
                .zip(handles.into_iter().map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::new(ErrorKind::Io, "provisioning panicked; see the log"))
                    })
                }))
                .collect()
        });
        let mut first_error = None;
        for (taken, result) in &results {
            if let (Taken::New(name), Err(e)) = (taken, result) {
                let error = format!("{e}; `{name}` was thrown away");
                let _ = update(&*self.coord, |state| {
                    if let Some(i) = state.instances.get_mut(name) {
                        i.state = InstanceState::Discarding { by: self.me.clone() };
                        let source = i.source.clone();
                        state.failures.insert(
                            source,
                            Failure { instance: name.clone(), error: error.clone(), at: now_ms() },
                        );
                    }
                    Ok(())
                });
                if let Err(discard) = self.discard_now(name) {
                    tracing::warn!("{discard}");
                }
                first_error.get_or_insert(Error::new(e.kind(), error));
            }
        }
        if let Some(error) = first_error {
            for (taken, result) in &results {
                if result.is_ok() {
                    if let Taken::New(name) = taken {
                        let concurrency = result.as_ref().copied().unwrap_or(0);
                        if let Err(e) = update(&*self.coord, |state| {
                            plan::provisioned(state, name, &self.me, concurrency, now_ms())
                        }) {
                            tracing::warn!("{e}");
                        }
                    }
                    if let Err(e) = self.release(&[taken.name().to_string()], false) {
                        tracing::warn!("{e}");
                    }
                }
            }
            return Err(error);
        }
        // All are marked in use in one update: all or none.
        let ready: Vec<(Taken, u32)> =
            results.into_iter().map(|(t, r)| r.map(|c| (t, c))).collect::<Result<_>>()?;
        let instances = update(&*self.coord, |state| {
            let mut got = Vec::new();
            for (taken, concurrency) in &ready {
                if let Taken::New(name) = taken {
                    plan::provisioned(state, name, &self.me, *concurrency, now_ms())?;
                }
                let name = taken.name();
                let instance = state.instances.get(name).cloned().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Conflict,
                        format!("`{name}` vanished while it was acquired"),
                    )
                })?;
                got.push((taken.clone(), instance));
            }
            Ok(got)
        })?;
        Ok(instances
            .into_iter()
            .map(|(taken, instance)| Acquired {
                concurrency: self.concurrency_of(&instance),
                source: instance.source,
                new: matches!(taken, Taken::New(_)),
                name: taken.name().to_string(),
            })
            .collect())
    }

    /// Acquires one instance of `source` held by this process until the
    /// returned lease drops.
    pub fn lease(&self, source: &str) -> Result<InstanceLease<'_>> {
        let request = Acquire {
            source: source.to_string(),
            count: 1,
            holder: Holder::current_process(),
            wait: None,
        };
        let mut got = self.acquire(&request)?;
        let instance =
            got.pop().ok_or_else(|| Error::new(ErrorKind::Io, "acquire gave nothing"))?;
        Ok(InstanceLease { pools: self, instance })
    }

    /// Releases instances: each is cached if a source in its path is within
    /// its reserve, else thrown away (with `discard.d`); `discard` throws
    /// them away whatever the reserve. Every name is checked before any is
    /// released.
    pub fn release(&self, names: &[String], discard: bool) -> Result<Vec<ReleasedInstance>> {
        // An instance named twice (by its name and as `SOURCE-N`) is released once.
        let mut seen = std::collections::HashSet::new();
        let names: Vec<String> = names.iter().filter(|n| seen.insert(*n)).cloned().collect();
        let names = &names[..];
        self.sweep()?;
        let decided = update(&*self.coord, |state| {
            let mut trial = state.clone();
            let mut decided = Vec::new();
            for name in names {
                let r =
                    plan::release(&mut trial, &self.sources, name, discard, &self.me, now_ms())?;
                decided.push((name.clone(), r));
            }
            *state = trial;
            Ok(decided)
        })?;
        let mut out = Vec::new();
        let mut first_error = None;
        for (name, decision) in decided {
            let outcome = match decision {
                Released::Cached => ReleaseOutcome::Cached,
                Released::AlreadyCached => ReleaseOutcome::AlreadyCached,
                Released::Discard => {
                    if let Err(e) = self.discard_now(&name) {
                        first_error.get_or_insert(e);
                        continue;
                    }
                    ReleaseOutcome::Discarded
                }
            };
            out.push(ReleasedInstance { name, outcome });
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Drops the records of instances without running anything: for
    /// machines thrown away by hand, or whose discard can never succeed.
    pub fn forget(&self, names: &[String]) -> Result<()> {
        update(&*self.coord, |state| {
            for name in names {
                if state.instances.remove(name).is_none() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no instance named `{name}`; larder pool status -a lists them"),
                    ));
                }
            }
            Ok(())
        })
    }

    /// The command that runs `argv` on the instance `name` (a shell if
    /// empty), with its input, output and exit status passed through.
    pub fn command(&self, name: &str, argv: &[String]) -> Result<Command> {
        let source = self.runnable(name)?;
        let conf = self.sources.get(&source)?;
        Ok(Driver::new(conf, &self.home, &self.shell).command(name, argv))
    }

    /// The source of `name` if commands may run on it now: an instance in
    /// use or being provisioned, or a `local` source (this host is always
    /// there, acquired or not). A cached instance is refused: nobody holds
    /// it, so another acquire could take it while the command runs.
    fn runnable(&self, name: &str) -> Result<String> {
        let local = |source: &str| {
            self.sources.get(source).is_ok_and(|c| matches!(c.kind, SourceKind::Local))
        };
        match self.live_instance(name) {
            Ok(instance) if instance.state == InstanceState::Idle && !local(&instance.source) => {
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "`{name}` is cached, not acquired: another acquire could take it while this runs; acquire it first (larder pool acquire -s {})",
                        instance.owner()
                    ),
                ))
            }
            Ok(instance) => Ok(instance.source),
            Err(e) if e.kind() == ErrorKind::NotFound && local(name) => Ok(name.to_string()),
            Err(e) => Err(e),
        }
    }

    /// Copies files or folders, as `cp -r` would, between this host and
    /// instances (`INSTANCE:PATH`) or between two instances.
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        let from = self.endpoint(from)?;
        let to = self.endpoint(to)?;
        copy::copy(self, &from, &to)
    }

    fn endpoint(&self, text: &str) -> Result<copy::Endpoint> {
        if let Some((name, path)) = text.split_once(':')
            && !name.is_empty()
            && !name.contains('/')
        {
            let state = self.coord.pools()?;
            if state.instances.contains_key(name) {
                self.runnable(name)?;
                let path = if path.is_empty() { ".".to_string() } else { path.to_string() };
                return Ok(copy::Endpoint { instance: Some(name.to_string()), path });
            }
            if !Path::new(text).exists() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no instance named `{name}` (in `{text}`); larder pool status -a lists them, \
                         and a local path with a colon can be written ./{text}"
                    ),
                ));
            }
        }
        Ok(copy::Endpoint { instance: None, path: text.to_string() })
    }

    /// The instance `name`, if it can run commands (in use, cached or being
    /// provisioned, so that provision.d may use it).
    fn live_instance(&self, name: &str) -> Result<Instance> {
        let state = self.coord.pools()?;
        match state.instances.get(name) {
            Some(i) if !matches!(i.state, InstanceState::Discarding { .. }) => Ok(i.clone()),
            Some(_) => Err(Error::new(
                ErrorKind::Conflict,
                format!("`{name}` is being thrown away; acquire another"),
            )),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no instance named `{name}`; larder pool status -a lists them, larder pool acquire makes one"
                ),
            )),
        }
    }

    /// The concurrency to report for `instance`: the holder's source's
    /// setting, else its own source's, else what was probed.
    fn concurrency_of(&self, instance: &Instance) -> u32 {
        let configured = |name: &str| self.sources.get(name).map_or(0, |c| c.concurrency);
        match (configured(instance.owner()), configured(&instance.source)) {
            (0, 0) => instance.concurrency,
            (0, n) | (n, _) => n,
        }
    }

    /// Makes the new instance `name`: the source's provision step, its
    /// `provision.d`, and a probe of its concurrency unless configured.
    fn provision(&self, name: &str) -> Result<u32> {
        let instance = self.coord.pools()?.instances.get(name).cloned().ok_or_else(|| {
            Error::new(ErrorKind::Conflict, format!("`{name}` vanished while it was provisioned"))
        })?;
        let conf = self.sources.get(&instance.source)?;
        let driver = Driver::new(conf, &self.home, &self.shell);
        driver.provision(name)?;
        driver.hooks("provision.d", name)?;
        match self.concurrency_of(&instance) {
            0 => driver.probe_concurrency(name),
            n => Ok(n),
        }
    }

    /// Throws away `name`, which this process is discarding: `discard.d`,
    /// then the source's discard step; drops the record, or on failure keeps
    /// it for a later sweep to try again.
    fn discard_now(&self, name: &str) -> Result<()> {
        let instance = self.coord.pools()?.instances.get(name).cloned();
        // Only this process's own discard runs the commands: one stopped or
        // cut off past its host's lease may find the instance swept and
        // thrown away by another, and its name given to a new one.
        if let Some(Instance { state: InstanceState::Discarding { by }, .. }) = &instance
            && *by != self.me
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "throwing `{name}` away was taken over by {by} (this process was stopped or \
                     cut off from the coordinator past its lease); it was left to them"
                ),
            ));
        }
        let source = instance.map(|i| i.source);
        let result = match source.as_deref().map(|s| self.sources.get(s)) {
            Some(Ok(conf)) => {
                let driver = Driver::new(conf, &self.home, &self.shell);
                driver.hooks("discard.d", name).and_then(|()| driver.discard(name))
            }
            // Its source is not defined here (another project's, or gone):
            // nothing here may throw it away; its record stays.
            Some(Err(_)) => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "its source `{}` is not defined here; run larder where it is defined, \
                     or forget it with larder pool release --forget",
                    source.as_deref().unwrap_or_default()
                ),
            )),
            None => Ok(()),
        };
        match result {
            Ok(()) => update(&*self.coord, |state| {
                plan::discarded(state, name, &self.me);
                Ok(())
            }),
            Err(e) => {
                let error = format!("throwing `{name}` away failed: {e}; larder tries again later");
                let retry_at = now_ms() + DISCARD_RETRY.as_millis() as i64;
                update(&*self.coord, |state| {
                    plan::discard_failed(state, name, &error, retry_at, now_ms());
                    Ok(())
                })?;
                Err(Error::new(e.kind(), error))
            }
        }
    }

    /// Releases what dead holders held and throws away what dead
    /// provisioners and discarders left.
    fn sweep(&self) -> Result<()> {
        let alive = self.coord.liveness()?;
        let discard =
            update(&*self.coord, |state| Ok(plan::sweep(state, &self.sources, &self.me, &alive)))?;
        for name in discard {
            if let Err(e) = self.discard_now(&name) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }
}

/// An instance held by this process; dropping it releases it.
#[derive(Debug)]
pub struct InstanceLease<'a> {
    pools: &'a Pools,
    instance: Acquired,
}

impl InstanceLease<'_> {
    /// The instance.
    pub fn instance(&self) -> &Acquired {
        &self.instance
    }

    /// The command that runs `argv` on it.
    pub fn command(&self, argv: &[String]) -> Result<Command> {
        self.pools.command(&self.instance.name, argv)
    }
}

impl Drop for InstanceLease<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.pools.release(std::slice::from_ref(&self.instance.name), false) {
            tracing::warn!("cannot release {}: {e}", self.instance.name);
        }
    }
}
