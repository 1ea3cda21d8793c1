//! The state of the compute pools: every instance, who holds it, and the
//! sources' counters and last failures. A backend stores it whole and
//! changes it atomically; the pool logic (`crate::pool`) decides the changes.
//! Instances number in the tens, so reading and writing all of it in one
//! transaction costs less than the process that asks.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Holder, Host};
use crate::error::Result;

/// Every instance and what the sources remember.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    /// Instances by name.
    #[serde(default)]
    pub instances: BTreeMap<String, Instance>,
    /// The next instance number of each source that makes many.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Each source's last failure (provisioning, probing, hooks, discarding).
    #[serde(default)]
    pub failures: BTreeMap<String, Failure>,
}

/// One machine (or container, or this host) a source made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The source that made it (never a pool).
    pub source: String,
    /// The sources it counts for, from the one that holds it down to the one
    /// that made it: `["pool", "vm"]` for a `vm` instance acquired through
    /// `pool`. A pool's in-use and maximum count the instances whose path
    /// names it; its cached ones are idle instances whose path starts with it.
    pub path: Vec<String>,
    /// Where it is in its life.
    pub state: InstanceState,
    /// When it entered that state, in milliseconds since the Unix epoch.
    pub since: i64,
    /// How many jobs it runs at once, as probed (`nproc`) or configured; 0
    /// until known.
    #[serde(default)]
    pub concurrency: u32,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl Instance {
    /// The source it counts for first: the one that holds or caches it.
    pub fn owner(&self) -> &str {
        self.path.first().map_or(self.source.as_str(), String::as_str)
    }

    /// Whether it counts for `source`.
    pub fn counts_for(&self, source: &str) -> bool {
        self.path.iter().any(|p| p == source)
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceState {
    /// Being made by `by`, for `holder`; thrown away if `by` dies first.
    Provisioning {
        /// The process that provisions it.
        by: Holder,
        /// Who will hold it once it is ready.
        holder: Holder,
    },
    /// Cached: ready, held by nobody, handed out before any new one is made.
    Idle,
    /// Held by `holder`; released (cached or thrown away) when it dies.
    InUse {
        /// Who holds it.
        holder: Holder,
    },
    /// Being thrown away by `by`; taken over when `by` dies.
    Discarding {
        /// The process that discards it (a token that expires when the last
        /// try failed, so the next one waits a while).
        by: Holder,
    },
}

impl InstanceState {
    /// The state's name in listings: `provisioning`, `cached`, `in-use`,
    /// `discarding`.
    pub fn label(&self) -> &'static str {
        match self {
            InstanceState::Provisioning { .. } => "provisioning",
            InstanceState::Idle => "cached",
            InstanceState::InUse { .. } => "in-use",
            InstanceState::Discarding { .. } => "discarding",
        }
    }
}

/// What went wrong last for a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The instance it happened to.
    pub instance: String,
    /// The error, one line.
    pub error: String,
    /// When, in milliseconds since the Unix epoch.
    pub at: i64,
}

/// Which holders still hold, as seen at one moment: processes of this host
/// by pid and start time, tokens by their expiry, and processes of other
/// hosts by their host's lease, where the backend knows it.
#[derive(Debug, Clone)]
pub struct Liveness {
    now: i64,
    /// Other hosts (name, boot id) whose lease runs; `None`: every process
    /// of another host counts as alive (nobody here can tell).
    hosts: Option<HashSet<(String, String)>>,
}

impl Liveness {
    /// What this host alone can tell at `now` (milliseconds since the epoch).
    pub fn local(now: i64) -> Liveness {
        Liveness { now, hosts: None }
    }

    /// The same, and the other hosts whose lease runs: processes of any
    /// other host are gone.
    pub fn with_hosts(now: i64, hosts: HashSet<(String, String)>) -> Liveness {
        Liveness { now, hosts: Some(hosts) }
    }

    /// When it was seen, in milliseconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Whether `holder` still holds.
    pub fn is_alive(&self, holder: &Holder) -> bool {
        match (holder, &self.hosts) {
            (Holder::Process { host, boot_id, .. }, Some(hosts))
                if *host != Host::current().name =>
            {
                hosts.contains(&(host.clone(), boot_id.clone()))
            }
            _ => holder.is_alive(self.now),
        }
    }
}

/// Where the pools' state lives. Implementations make [`update_pools`]
/// atomic across every process and host that shares them.
///
/// [`update_pools`]: PoolCoordinator::update_pools
pub trait PoolCoordinator: Send + Sync {
    /// The state as it is.
    fn pools(&self) -> Result<PoolState>;

    /// Runs `change` on the state and stores the result, with no other
    /// change in between. If `change` fails, nothing is stored. `change` may
    /// run more than once (a backend may retry when another change got in
    /// first), so it must do nothing but change the state.
    fn update_pools(&self, change: &mut dyn FnMut(&mut PoolState) -> Result<()>) -> Result<()>;

    /// Which holders still hold, for sweeping what the dead left.
    fn liveness(&self) -> Result<Liveness> {
        Ok(Liveness::local(super::now_ms()))
    }
}

/// Runs `change` on the pools' state atomically and returns what it returned.
pub fn update<T>(
    coord: &dyn PoolCoordinator,
    mut change: impl FnMut(&mut PoolState) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    coord.update_pools(&mut |state| {
        out = Some(change(state)?);
        Ok(())
    })?;
    out.ok_or_else(|| {
        crate::Error::new(crate::ErrorKind::Io, "the pool state was not updated; try again")
    })
}
