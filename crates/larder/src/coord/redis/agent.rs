//! Renewing the leases of one host's holds: the host agent.
//!
//! A process of this host that takes a hold records it in the host's
//! registry (`P:{coord}:holds:HOST:BOOT`) and renews the host's lease, then
//! makes sure an agent runs: one per larder home and coordinator, found by
//! its lock file, started detached (or as a thread) if none runs. The agent
//! renews, every third of a lease, the host's lease and the lease of every
//! hold whose process lives; it releases the holds of processes that died,
//! and exits once the host holds nothing. Idle hosts run nothing and send
//! nothing. An agent that was killed is started again by the next larder
//! process of the host that connects while the host holds something.
//!
//! The agent keeps what it renews in memory too: if Redis restarts empty, it
//! records the holds again, and makes the records of directories whose
//! folder is here anew, so a directory in use is never lost with Redis.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{HostAgent, RedisCoordinator, RedisOptions};
use crate::coord::json;
use crate::coord::{
    Coordinator, DirRecord, Holder, InstanceState, NewDir, PoolCoordinator, now_ms,
};
use crate::error::Result;

/// One hold of a process of this host, as its registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Entry {
    /// A directory: enough to make its record anew after Redis lost it.
    Dir {
        name: String,
        holder: Holder,
        generation: u64,
        path: String,
        recipe_hash: Option<String>,
        recipe: Option<String>,
        size: u64,
    },
    /// Instances of the pools held (or being provisioned or discarded) by a
    /// process of this host: they live while the host's lease runs.
    Pool { holder: Holder },
}

impl Entry {
    pub(super) fn dir(name: &str, holder: &Holder, record: &DirRecord) -> Entry {
        Entry::Dir {
            name: name.to_string(),
            holder: holder.clone(),
            generation: record.generation,
            path: record.path.clone(),
            recipe_hash: record.recipe_hash.clone(),
            recipe: record.recipe.clone(),
            size: record.size,
        }
    }

    pub(super) fn pool(holder: &Holder) -> Entry {
        Entry::Pool { holder: holder.clone() }
    }

    pub(super) fn to_json(&self) -> String {
        json(self)
    }

    fn holder(&self) -> &Holder {
        match self {
            Entry::Dir { holder, .. } | Entry::Pool { holder } => holder,
        }
    }
}

/// The registry field of `holder`'s hold on the directory `name`.
pub(super) fn dir_field(name: &str, holder: &Holder) -> String {
    format!("dir\x1f{name}\x1f{}", holder.key())
}

/// The registry field of `holder`'s instances.
pub(super) fn pool_field(holder: &Holder) -> String {
    format!("pool\x1f{}", holder.key())
}

/// The lock file that says an agent runs for this home and coordinator.
fn lock_path(coord: &RedisCoordinator) -> PathBuf {
    let home = coord.options.home.clone().unwrap_or_else(std::env::temp_dir);
    let id =
        crate::digest::Digest::of(format!("{}\n{}", coord.options.prefix, coord.shown).as_bytes());
    home.join(format!("coordinator-agent-{}.lock", &id.hex()[..12]))
}

/// Whether an agent runs for this home and coordinator.
fn agent_runs(coord: &RedisCoordinator) -> bool {
    match crate::lockfile::try_lock(&lock_path(coord)) {
        Ok(Some(_free)) => false,
        Ok(None) => true,
        Err(e) => {
            // Nothing can be started where no lock can be taken.
            tracing::warn!("cannot tell whether the coordinator's agent runs: {e}");
            true
        }
    }
}

/// Starts an agent again if this host holds something and none runs (it
/// was killed): called at connect, so any larder command of this host that
/// reaches the coordinator revives it.
pub(super) fn revive(coord: &RedisCoordinator) -> Result<()> {
    if matches!(coord.options.agent, HostAgent::None) || agent_runs(coord) {
        return Ok(());
    }
    let key = coord.holds_key();
    let held: i64 = coord.with_conn(|conn| redis::cmd("HLEN").arg(&key).query(conn))?;
    if held > 0 {
        ensure_running(coord);
    }
    Ok(())
}

/// Starts an agent unless one runs. Called after a hold is recorded, so an
/// agent that is letting go either sees the hold or has let go of its lock
/// by the time this looks.
pub(super) fn ensure_running(coord: &RedisCoordinator) {
    if matches!(coord.options.agent, HostAgent::None) || agent_runs(coord) {
        return;
    }
    match &coord.options.agent {
        HostAgent::None => {}
        HostAgent::Thread => {
            let url = coord.spec.clone();
            let options = coord.options.clone();
            let handle = std::thread::spawn(move || {
                if let Err(e) = run_host_agent(&url, options) {
                    tracing::warn!("the coordinator's agent stopped: {e}");
                }
            });
            *coord.thread_agent.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
        HostAgent::Command(argv) => {
            let Some((program, args)) = argv.split_first() else { return };
            let mut cmd = Command::new(program);
            cmd.args(args)
                .arg("--lease-ms")
                .arg(coord.lease_ms().to_string())
                .arg("--prefix")
                .arg(&coord.options.prefix)
                .env("LARDER_COORDINATOR", &coord.spec);
            if let Some(home) = &coord.options.home {
                cmd.env("LARDER_HOME", home);
            }
            if let Err(e) = crate::lockfile::spawn_detached(&mut cmd) {
                tracing::warn!(
                    "cannot start the coordinator's agent ({e}); holds of this host end after {}s",
                    coord.options.lease.as_secs()
                );
            }
        }
    }
}

/// The host agent of the coordinator at `url`: renews this host's leases
/// while its processes hold something, then returns. Returns at once if
/// another agent runs for the same home and coordinator. A coordinator that
/// cannot be reached (restarting) is tried again for ten leases, at least a
/// minute.
pub fn run_host_agent(url: &str, options: RedisOptions) -> Result<()> {
    let options = RedisOptions { agent: HostAgent::None, ..options };
    let patience = (options.lease * 10).max(std::time::Duration::from_secs(60));
    let started = std::time::Instant::now();
    let coord = loop {
        match RedisCoordinator::connect(url, options.clone()) {
            Ok(coord) => break coord,
            Err(e) if e.kind() == crate::ErrorKind::Io && started.elapsed() < patience => {
                tracing::debug!("{e}; trying again");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    };
    renew_while_held(&coord)
}

fn renew_while_held(coord: &RedisCoordinator) -> Result<()> {
    let lock = lock_path(coord);
    let every = (coord.options.lease / 3).max(std::time::Duration::from_millis(10));
    let mut agent = Agent::default();
    loop {
        let Some(held) = crate::lockfile::try_lock(&lock)? else { return Ok(()) };
        tracing::info!("renewing this host's holds at {}", coord.shown);
        loop {
            if let Err(e) = agent.tick(coord) {
                tracing::warn!("renewing this host's holds: {e}");
            }
            if agent.memory.is_empty() {
                break;
            }
            std::thread::sleep(every);
        }
        drop(held);
        // A hold recorded while this agent let go found the lock taken: one
        // more look, now that it is free.
        if read_registry(coord)?.is_empty() {
            return Ok(());
        }
    }
}

pub(super) fn read_registry(coord: &RedisCoordinator) -> Result<BTreeMap<String, Entry>> {
    let key = coord.holds_key();
    let raw: BTreeMap<String, String> =
        coord.with_conn(|conn| redis::cmd("HGETALL").arg(&key).query(conn))?;
    Ok(raw.into_iter().filter_map(|(f, v)| Some((f, serde_json::from_str(&v).ok()?))).collect())
}

#[derive(Default)]
struct Agent {
    /// What this host holds, as last seen: kept across a Redis that lost it.
    memory: BTreeMap<String, Entry>,
    /// The server's run id when last seen: another one means it restarted.
    run_id: Option<String>,
}

impl Agent {
    fn tick(&mut self, coord: &RedisCoordinator) -> Result<()> {
        // Whose process is gone needs no Redis: an agent cut off from it
        // still lets go once its host holds nothing.
        let now = now_ms();
        let dead: Vec<String> = self
            .memory
            .iter()
            .filter(|(_, e)| !e.holder().is_alive(now))
            .map(|(f, _)| f.clone())
            .collect();
        let mut gone = Vec::new();
        for field in &dead {
            if let Some(entry) = self.memory.remove(field) {
                gone.push((field.clone(), entry));
            }
        }
        coord.register(&[])?;
        let run_id = coord.run_id();
        let restarted = self.run_id.as_ref().is_some_and(|r| *r != run_id);
        let registry = read_registry(coord)?;
        let mut missing = Vec::new();
        for (field, entry) in &self.memory {
            if !registry.contains_key(field) {
                missing.push((field.clone(), entry.clone()));
            }
        }
        for (field, entry) in registry {
            if entry.holder().is_alive(now) {
                self.memory.insert(field, entry);
            } else if !gone.iter().any(|(f, _)| *f == field) {
                gone.push((field, entry));
            }
        }
        for (field, entry) in missing {
            if restarted {
                // Redis lost what this host holds: record it again.
                coord.register(&[(field, entry.to_json())])?;
            } else {
                // Released (detached) since the last look.
                self.memory.remove(&field);
            }
        }
        for (field, entry) in gone {
            if let Entry::Dir { name, holder, .. } = &entry {
                coord.detach(name, holder)?;
            }
            coord.unregister(&[field])?;
        }
        self.renew(coord, restarted)?;
        self.run_id = Some(run_id);
        Ok(())
    }

    fn renew(&mut self, coord: &RedisCoordinator, restarted: bool) -> Result<()> {
        let pools_held = self.memory.values().any(|e| matches!(e, Entry::Pool { .. }));
        let pools = if pools_held { Some(coord.pools()?) } else { None };
        let fields: Vec<String> = self.memory.keys().cloned().collect();
        for field in fields {
            let Some(entry) = self.memory.get(&field).cloned() else { continue };
            match &entry {
                Entry::Dir { name, holder, generation, .. } => {
                    let args = [
                        holder.key(),
                        json(holder),
                        coord.ttl_ms(holder).to_string(),
                        generation.to_string(),
                    ];
                    let reply = coord.dir_eval(&coord.dir_scripts.renew_hold, name, &[], &args)?;
                    if reply.status() != 0 {
                        continue;
                    }
                    if restarted && let Some(again) = self.make_again(coord, &entry)? {
                        self.memory.insert(field, again);
                        continue;
                    }
                    tracing::warn!(
                        "the hold of {holder} on directory {name} was lost (its lease ran out while this host could not renew it, and the directory was deleted or made anew)"
                    );
                    coord.unregister(std::slice::from_ref(&field))?;
                    self.memory.remove(&field);
                }
                Entry::Pool { holder } => {
                    let holds = pools.as_ref().is_some_and(|state| {
                        state.instances.values().any(|i| match &i.state {
                            InstanceState::Provisioning { by, holder: h } => {
                                by == holder || h == holder
                            }
                            InstanceState::InUse { holder: h } => h == holder,
                            InstanceState::Discarding { by } => by == holder,
                            InstanceState::Idle => false,
                        })
                    });
                    if !holds {
                        coord.unregister(std::slice::from_ref(&field))?;
                        self.memory.remove(&field);
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes the record of a directory held here anew after Redis lost it,
    /// if its folder is here: its holders come back as their hosts renew.
    fn make_again(&self, coord: &RedisCoordinator, entry: &Entry) -> Result<Option<Entry>> {
        let Entry::Dir { name, holder, path, recipe_hash, recipe, size, .. } = entry else {
            return Ok(None);
        };
        // Made anew by another host's agent already, or not: either way
        // this host holds it again.
        if !Path::new(path).is_dir() {
            return Ok(None);
        }
        let mut meta = BTreeMap::new();
        meta.insert("id".to_string(), name.clone());
        let new = NewDir {
            path: path.clone(),
            recipe_hash: recipe_hash.clone(),
            recipe: recipe.clone(),
            meta,
            builder: None,
            size: *size,
        };
        match coord.attach(name, holder, &new)? {
            crate::coord::Attached::Held { mut record, .. } => {
                // Made anew by another host: this host's folder is its copy.
                if !record.has_copy_here()
                    && let Some(with_copy) = coord.add_copy(name, record.generation, path)?
                {
                    record = with_copy;
                }
                tracing::info!("recorded directory {name} again after the coordinator lost it");
                Ok(Some(Entry::dir(name, holder, &record)))
            }
            crate::coord::Attached::Deleting(_) => Ok(None),
        }
    }
}
