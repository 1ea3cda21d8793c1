//! Directories in Redis: the `Coordinator` over the scripts of
//! `scripts.rs`, and the records they return.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{Script, Value};

use super::{RedisCoordinator, agent, pairs};
use crate::coord::{
    Attached, BuildProgress, Coordinator, DirRecord, DirState, Holder, Holding, Host, NewDir, json,
    now_ms,
};
use crate::error::{Error, ErrorKind, Result};

/// A script's answer: its status and the record after it, if any.
pub(super) struct Reply {
    status: Value,
    pub(super) record: Option<DirRecord>,
}

impl Reply {
    pub(super) fn status(&self) -> i64 {
        match &self.status {
            Value::Int(n) => *n,
            _ => 0,
        }
    }
}

impl RedisCoordinator {
    pub(super) fn dir_keys(&self, name: &str) -> [String; 5] {
        let rec = self.key(&format!("{{dir:{name}}}"));
        let holders = format!("{rec}:holders");
        let leases = format!("{rec}:leases");
        let fence = format!("{rec}:fence");
        let gone = format!("{rec}:gone");
        [rec, holders, leases, fence, gone]
    }

    /// Runs a directory script. If the record it returns has holders (or a
    /// builder or deleter) of this host whose process is gone, which only
    /// this host can tell, runs it again telling it so.
    pub(super) fn dir_call(&self, script: &Script, name: &str, args: &[String]) -> Result<Reply> {
        let first = self.dir_eval(script, name, &[], args)?;
        let dead = first.record.as_ref().map(local_dead).unwrap_or_default();
        if dead.is_empty() {
            return Ok(first);
        }
        self.dir_eval(script, name, &dead, args)
    }

    pub(super) fn dir_eval(
        &self,
        script: &Script,
        name: &str,
        dead: &[String],
        args: &[String],
    ) -> Result<Reply> {
        let mut all = vec![
            format!("{} {}", self.grace_until(), self.sent_at()),
            serde_json::to_string(dead).unwrap_or_else(|_| "[]".into()),
            self.lease_ms().to_string(),
        ];
        all.extend_from_slice(args);
        let value = self.eval(script, &self.dir_keys(name), &all)?;
        self.parse_reply(name, value)
    }

    fn parse_reply(&self, name: &str, value: Value) -> Result<Reply> {
        let Value::Array(mut parts) = value else {
            return Err(self.unreadable(name, "not an array"));
        };
        if parts.len() != 2 {
            return Err(self.unreadable(name, "not a status and a record"));
        }
        let record = match parts.pop() {
            Some(Value::Array(mut halves)) if halves.len() == 2 => {
                let holders = pairs(halves.pop().unwrap_or_default());
                let fields = pairs(halves.pop().unwrap_or_default());
                Some(self.parse_record(name, fields, holders)?)
            }
            _ => None,
        };
        let status = parts.pop().unwrap_or_default();
        Ok(Reply { status, record })
    }

    fn unreadable(&self, name: &str, why: &str) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "the record of directory {name} in the coordinator at {} is unreadable ({why}); delete its keys ({}:{{dir:{name}}}*) to start afresh",
                self.shown, self.options.prefix
            ),
        )
    }

    fn parse_record(
        &self,
        name: &str,
        fields: BTreeMap<String, String>,
        holders: BTreeMap<String, String>,
    ) -> Result<DirRecord> {
        let number = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let grant = || -> Result<Holder> {
            let text = fields.get("grant").ok_or_else(|| self.unreadable(name, "no grant"))?;
            serde_json::from_str(text).map_err(|e| self.unreadable(name, &e.to_string()))
        };
        let state = match fields.get("state").map(String::as_str) {
            Some("building") => DirState::Building { by: grant()? },
            Some("deleting") => DirState::Deleting { by: grant()? },
            Some("failed") => {
                DirState::Failed { error: fields.get("failure").cloned().unwrap_or_default() }
            }
            _ => DirState::Ready,
        };
        let mut holdings: Vec<(String, Holding)> = holders
            .into_iter()
            .filter_map(|(key, entry)| {
                let (since, json) = entry.split_once(' ')?;
                let holder = serde_json::from_str(json).ok()?;
                Some((key, Holding { holder, since: since.parse().ok()? }))
            })
            .collect();
        holdings.sort_by(|(ka, a), (kb, b)| (a.since, ka).cmp(&(b.since, kb)));
        let path = fields.get("path").cloned().unwrap_or_default();
        // A record from before copies were kept: its one path is everyone's.
        let copies = match fields.get("copies") {
            Some(c) => {
                serde_json::from_str(c).map_err(|e| self.unreadable(name, &e.to_string()))?
            }
            None => BTreeMap::from([(Host::current().name.clone(), path.clone())]),
        };
        Ok(DirRecord {
            name: name.to_string(),
            path,
            copies,
            generation: number("generation").max(0) as u64,
            fence: number("fence").max(0) as u64,
            state,
            locked: fields.get("locked").is_some_and(|v| v == "1"),
            recipe_hash: fields.get("recipe_hash").cloned(),
            recipe: fields.get("recipe").cloned(),
            size: number("size").max(0) as u64,
            progress: fields.get("progress").and_then(|p| serde_json::from_str(p).ok()),
            created_at: number("created_at"),
            meta: fields.get("meta").and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default(),
            holders: holdings.into_iter().map(|(_, h)| h).collect(),
        }
        .with_local_path())
    }

    pub(super) fn set_index(&self, name: &str, generation: u64) -> Result<()> {
        self.eval(&self.index_set, &[self.index_key()], &[name.to_string(), generation.to_string()])
            .map(drop)
    }

    pub(super) fn drop_index(&self, name: &str, generation: &str) -> Result<()> {
        self.eval(&self.index_del, &[self.index_key()], &[name.to_string(), generation.to_string()])
            .map(drop)
    }

    pub(super) fn grant_args(&self, holder: &Holder) -> [String; 3] {
        [holder.key(), json(holder), self.ttl_ms(holder).to_string()]
    }
}

/// The holders (and the builder or deleter) of `record` that are processes
/// of this host that are gone: only this host can tell.
fn local_dead(record: &DirRecord) -> Vec<String> {
    let this = &Host::current().name;
    let now = now_ms();
    let grant = match &record.state {
        DirState::Building { by } | DirState::Deleting { by } => Some(by),
        _ => None,
    };
    record
        .holders
        .iter()
        .map(|h| &h.holder)
        .chain(grant)
        .filter(|h| matches!(h, Holder::Process { host, .. } if host == this) && !h.is_alive(now))
        .map(Holder::key)
        .collect()
}

impl Coordinator for RedisCoordinator {
    fn attach(&self, name: &str, holder: &Holder, new: &NewDir) -> Result<Attached> {
        let (builder_json, builder_key, builder_ttl) = match &new.builder {
            Some(b) => (json(b), b.key(), self.ttl_ms(b)),
            None => (String::new(), String::new(), 0),
        };
        let [key, holder_json, ttl] = self.grant_args(holder);
        let args = [
            key,
            holder_json,
            ttl,
            new.path.clone(),
            new.recipe_hash.clone().unwrap_or_default(),
            new.recipe.clone().unwrap_or_default(),
            json(&new.meta),
            new.size.to_string(),
            builder_json,
            builder_key,
            builder_ttl.to_string(),
            Host::current().name.clone(),
        ];
        let script = &self.dir_scripts.attach;
        let first = self.dir_eval(script, name, &[], &args)?;
        let dead = first.record.as_ref().map(local_dead).unwrap_or_default();
        let created_first = first.status() == 1;
        let reply =
            if dead.is_empty() { first } else { self.dir_eval(script, name, &dead, &args)? };
        let record =
            reply.record.clone().ok_or_else(|| self.unreadable(name, "no record after attach"))?;
        if matches!(&reply.status, Value::BulkString(b) if b == b"deleting") {
            return Ok(Attached::Deleting(record));
        }
        let created = created_first || reply.status() == 1;
        if created {
            self.set_index(name, record.generation)?;
        }
        if holder.is_on_this_host() {
            let mut entry = agent::Entry::dir(name, holder, &record);
            // Without a copy here yet, the one this host makes goes where it
            // asked: an agent that makes the record anew finds it there.
            if !record.has_copy_here()
                && let agent::Entry::Dir { path, .. } = &mut entry
            {
                path.clone_from(&new.path);
            }
            if let Err(e) = self.register(&[(agent::dir_field(name, holder), entry.to_json())]) {
                // Nobody would renew the hold: it is not kept.
                let _ = self.detach(name, holder);
                return Err(e);
            }
        }
        Ok(Attached::Held { record, created })
    }

    fn detach(&self, name: &str, holder: &Holder) -> Result<Option<DirRecord>> {
        let reply = self.dir_call(&self.dir_scripts.detach, name, &[holder.key()])?;
        if holder.is_on_this_host() {
            self.unregister(&[agent::dir_field(name, holder)])?;
        }
        Ok(reply.record)
    }

    fn get(&self, name: &str) -> Result<Option<DirRecord>> {
        Ok(self.dir_call(&self.dir_scripts.get, name, &[])?.record)
    }

    fn peek(&self, name: &str) -> Result<Option<DirRecord>> {
        Ok(self.dir_eval(&self.dir_scripts.peek, name, &[], &[])?.record)
    }

    fn list(&self) -> Result<Vec<DirRecord>> {
        let key = self.index_key();
        let index: BTreeMap<String, String> =
            self.with_conn(|conn| redis::cmd("HGETALL").arg(&key).query(conn))?;
        let mut out = Vec::new();
        for (name, generation) in index {
            match self.get(&name)? {
                Some(record) => out.push(record),
                // Its deleter died between dropping the record and the entry.
                None => self.drop_index(&name, &generation)?,
            }
        }
        Ok(out)
    }

    fn set_locked(&self, name: &str, locked: bool) -> Result<Option<DirRecord>> {
        let flag = if locked { "1" } else { "0" };
        Ok(self.dir_call(&self.dir_scripts.set_locked, name, &[flag.to_string()])?.record)
    }

    fn insert_meta(&self, name: &str, entries: &[(String, String)]) -> Result<Option<DirRecord>> {
        let map: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let args = [serde_json::Value::Object(map).to_string()];
        Ok(self.dir_call(&self.dir_scripts.insert_meta, name, &args)?.record)
    }

    fn remove_meta(&self, name: &str, keys: &[String]) -> Result<Option<DirRecord>> {
        let args = [serde_json::Value::from(keys.to_vec()).to_string()];
        Ok(self.dir_call(&self.dir_scripts.remove_meta, name, &args)?.record)
    }

    fn begin_delete(&self, name: &str, deleter: &Holder, force: bool) -> Result<Option<DirRecord>> {
        let [key, deleter_json, ttl] = self.grant_args(deleter);
        let args = [key, deleter_json, ttl, if force { "1" } else { "0" }.to_string()];
        let reply = self.dir_call(&self.dir_scripts.begin_delete, name, &args)?;
        Ok(if reply.status() == 1 { reply.record } else { None })
    }

    fn finish_delete(&self, name: &str, fence: u64) -> Result<bool> {
        let reply =
            self.dir_eval(&self.dir_scripts.finish_delete, name, &[], &[fence.to_string()])?;
        let generation = reply.status();
        if generation == 0 {
            return Ok(false);
        }
        self.drop_index(name, &generation.to_string())?;
        Ok(true)
    }

    fn claim_build(&self, name: &str, builder: &Holder) -> Result<Option<DirRecord>> {
        let reply =
            self.dir_call(&self.dir_scripts.claim_build, name, &self.grant_args(builder))?;
        Ok(if reply.status() == 1 { reply.record } else { None })
    }

    fn finish_build(&self, name: &str, fence: u64, builder: &Holder) -> Result<bool> {
        let args = [fence.to_string(), builder.key(), "ready".into(), String::new()];
        Ok(self.dir_eval(&self.dir_scripts.finish_build, name, &[], &args)?.status() == 1)
    }

    fn fail_build(&self, name: &str, fence: u64, builder: &Holder, error: &str) -> Result<bool> {
        let args = [fence.to_string(), builder.key(), "failed".into(), error.to_string()];
        Ok(self.dir_eval(&self.dir_scripts.finish_build, name, &[], &args)?.status() == 1)
    }

    fn report_progress(
        &self,
        name: &str,
        fence: u64,
        builder: &Holder,
        progress: &BuildProgress,
    ) -> Result<bool> {
        let args =
            [fence.to_string(), builder.key(), self.ttl_ms(builder).to_string(), json(progress)];
        Ok(self.dir_eval(&self.dir_scripts.renew_grant, name, &[], &args)?.status() == 1)
    }

    fn renew_grant(&self, name: &str, fence: u64, holder: &Holder) -> Result<bool> {
        let args =
            [fence.to_string(), holder.key(), self.ttl_ms(holder).to_string(), String::new()];
        Ok(self.dir_eval(&self.dir_scripts.renew_grant, name, &[], &args)?.status() == 1)
    }

    fn add_copy(&self, name: &str, generation: u64, path: &str) -> Result<Option<DirRecord>> {
        let args = [generation.to_string(), Host::current().name.clone(), path.to_string()];
        let reply = self.dir_call(&self.dir_scripts.add_copy, name, &args)?;
        let (1, Some(record)) = (reply.status(), reply.record) else { return Ok(None) };
        // This host's holds of it name its copy now, so that an agent that
        // makes the record anew after Redis lost it finds the folder.
        let stale: Vec<(String, String)> = agent::read_registry(self)?
            .into_iter()
            .filter_map(|(field, entry)| match &entry {
                agent::Entry::Dir { name: held, holder, path, .. }
                    if held == name && *path != record.path =>
                {
                    Some((field, agent::Entry::dir(name, holder, &record).to_json()))
                }
                _ => None,
            })
            .collect();
        if !stale.is_empty() {
            self.register(&stale)?;
        }
        Ok(Some(record))
    }

    fn deleted_generation(&self, name: &str) -> Result<Option<u64>> {
        let [.., gone] = self.dir_keys(name);
        let value: Option<u64> = self.with_conn(|conn| redis::cmd("GET").arg(&gone).query(conn))?;
        Ok(value)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.options.lease)
    }
}
