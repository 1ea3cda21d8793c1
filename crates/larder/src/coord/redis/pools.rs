//! The pools' state in Redis: one hash (`P:{coord}:pools`: the state as
//! JSON and its version) changed by compare-and-set, and the hosts' leases
//! beside it, read in the same script, for telling who is alive.

use redis::Value;

use super::{RedisCoordinator, agent, pairs, text};
use crate::coord::{Holder, InstanceState, Liveness, PoolCoordinator, PoolState, json, now_ms};
use crate::error::{Error, ErrorKind, Result};

impl RedisCoordinator {
    /// The pools' state, its version and the liveness of hosts as the
    /// server sees them now.
    fn read_pools(&self) -> Result<(Option<String>, String, Liveness)> {
        let sent = self.sent_at();
        let value =
            self.eval(&self.pool_read, &[self.coord_key("pools"), self.hosts_key()], &[])?;
        let Value::Array(parts) = value else {
            return Err(self.pools_unreadable("not an array"));
        };
        let mut parts = parts.into_iter();
        let state = parts.next().and_then(|v| text(&v));
        let version = parts.next().and_then(|v| text(&v)).unwrap_or_else(|| "0".into());
        let now: i64 =
            parts.next().and_then(|v| text(&v)).and_then(|t| t.parse().ok()).unwrap_or(0);
        let leases = pairs(parts.next().unwrap_or_default());
        let alive = if now < self.grace_until() || self.waited_in_queue(sent, now) {
            // Just restarted, or the read waited in a stalled server's queue
            // with every host's renewal: hosts have had no time to renew.
            Liveness::local(now_ms())
        } else {
            let hosts = leases
                .into_iter()
                .filter(|(_, until)| until.parse::<i64>().is_ok_and(|u| u > now))
                .filter_map(|(field, _)| {
                    let (host, boot) = field.split_once('\x1f')?;
                    Some((host.to_string(), boot.to_string()))
                })
                .collect();
            Liveness::with_hosts(now_ms(), hosts)
        };
        Ok((state, version, alive))
    }

    fn pools_unreadable(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "the pool state in the coordinator at {} is unreadable ({why}); release what you can, then delete the key {} to start afresh",
                self.shown,
                self.coord_key("pools")
            ),
        )
    }

    fn parse_pools(&self, text: Option<String>) -> Result<PoolState> {
        match text {
            None => Ok(PoolState::default()),
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| self.pools_unreadable(&e.to_string()))
            }
        }
    }

    /// Registers the processes of this host that the pools' state names, so
    /// that the host's lease is renewed while they live.
    fn register_pool_holders(&self, state: &PoolState) -> Result<()> {
        let mut entries = Vec::new();
        {
            let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            for instance in state.instances.values() {
                let holders: Vec<&Holder> = match &instance.state {
                    InstanceState::Provisioning { by, holder } => vec![by, holder],
                    InstanceState::InUse { holder } => vec![holder],
                    InstanceState::Discarding { by } => vec![by],
                    InstanceState::Idle => vec![],
                };
                for holder in holders {
                    let field = agent::pool_field(holder);
                    if holder.is_on_this_host()
                        && !registered.contains(&field)
                        && !entries.iter().any(|(f, _)| *f == field)
                    {
                        entries.push((field, agent::Entry::pool(holder).to_json()));
                    }
                }
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.register(&entries)?;
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        registered.extend(entries.into_iter().map(|(f, _)| f));
        Ok(())
    }
}

/// How many times an update of the pools is tried while others get in first.
const POOL_TRIES: usize = 1000;

impl PoolCoordinator for RedisCoordinator {
    fn pools(&self) -> Result<PoolState> {
        let (text, _, _) = self.read_pools()?;
        self.parse_pools(text)
    }

    fn update_pools(&self, change: &mut dyn FnMut(&mut PoolState) -> Result<()>) -> Result<()> {
        for _ in 0..POOL_TRIES {
            let (before, version, _) = self.read_pools()?;
            let mut state = self.parse_pools(before.clone())?;
            change(&mut state)?;
            let after = json(&state);
            if before.as_deref() == Some(after.as_str()) {
                return Ok(());
            }
            let stored =
                self.eval(&self.pool_write, &[self.coord_key("pools")], &[version, after])?;
            if stored == Value::Int(1) {
                return self.register_pool_holders(&state);
            }
        }
        Err(Error::new(
            ErrorKind::Busy,
            format!(
                "the pool state at {} changed under every one of {POOL_TRIES} tries; try again",
                self.shown
            ),
        ))
    }

    fn liveness(&self) -> Result<Liveness> {
        Ok(self.read_pools()?.2)
    }
}
