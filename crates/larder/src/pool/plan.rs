//! The pool decisions, as pure changes to the state: what an acquire takes or
//! makes, what a release keeps or throws away, what a sweep reclaims from the
//! dead. No process runs here; the caller does the work the plan names.

use crate::coord::{Failure, Holder, Instance, InstanceState, Liveness, PoolState};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

use super::conf::{SourceKind, Sources};

/// What an acquire got: an instance to hand out now, or one the caller must
/// provision first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// A cached instance, now in use.
    Cached(String),
    /// A new instance, now provisioning by the caller.
    New(String),
}

impl Taken {
    /// The instance's name.
    pub fn name(&self) -> &str {
        match self {
            Taken::Cached(n) | Taken::New(n) => n,
        }
    }
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Kept, idle, by the first source in its path.
    Cached,
    /// Now discarding by the caller, who must throw it away.
    Discard,
    /// It was idle already.
    AlreadyCached,
}

/// Takes `count` instances of `source` for `holder`, all or none: cached
/// ones first (those `source` cached itself before others under it), then
/// new ones, each from the least loaded source under it with room. `me`
/// provisions the new ones. `waited` is how long the caller has waited for
/// room (`--wait`), if it waits at all.
#[allow(clippy::too_many_arguments)]
pub fn acquire(
    state: &mut PoolState,
    sources: &Sources,
    source: &str,
    count: usize,
    holder: &Holder,
    me: &Holder,
    now: i64,
    waited: Option<Duration>,
) -> Result<Vec<Taken>> {
    sources.get(source)?;
    // All or none: the changes are made on a copy, kept only if all fit.
    let mut trial = state.clone();
    match take(&mut trial, sources, source, count, holder, me, now, waited) {
        Ok(taken) => {
            *state = trial;
            Ok(taken)
        }
        // Described as things are, not as the failed attempt left them.
        Err(e) if e.kind() == ErrorKind::StoreFull => {
            Err(full(state, sources, source, count, waited))
        }
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)]
fn take(
    state: &mut PoolState,
    sources: &Sources,
    source: &str,
    count: usize,
    holder: &Holder,
    me: &Holder,
    now: i64,
    waited: Option<Duration>,
) -> Result<Vec<Taken>> {
    let paths = sources.paths(source);
    let mut taken = Vec::new();
    let mut idle: Vec<String> = state
        .instances
        .iter()
        .filter(|(_, i)| i.state == InstanceState::Idle)
        .filter(|(_, i)| paths.iter().any(|p| p.last() == Some(&i.source)))
        .map(|(n, _)| n.clone())
        .collect();
    idle.sort_by_key(|n| state.instances.get(n).is_none_or(|i| i.owner() != source));
    for name in idle {
        if taken.len() == count {
            break;
        }
        let Some(leaf) = state.instances.get(&name).map(|i| i.source.clone()) else { continue };
        let Some(path) = paths.iter().find(|p| p.last() == Some(&leaf)) else { continue };
        if !fits(state, sources, path, Some(&name)) {
            continue;
        }
        if let Some(instance) = state.instances.get_mut(&name) {
            instance.path = path.clone();
            instance.state = InstanceState::InUse { holder: holder.clone() };
            instance.since = now;
            taken.push(Taken::Cached(name));
        }
    }
    while taken.len() < count {
        let Some(path) = paths
            .iter()
            .filter(|p| fits(state, sources, p, None))
            .min_by_key(|p| p.last().map_or(0, |leaf| load(state, leaf)))
        else {
            return Err(full(state, sources, source, count, waited));
        };
        let path = path.clone();
        let leaf = path.last().cloned().unwrap_or_default();
        let name = new_name(state, sources, &leaf);
        if let Some(other) = state.instances.get(&name) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "source `{leaf}` would make the instance `{name}`, but that name is an \
                     instance of source `{}`; rename one of the sources",
                    other.source
                ),
            ));
        }
        state.instances.insert(
            name.clone(),
            Instance {
                source: leaf,
                path,
                state: InstanceState::Provisioning { by: me.clone(), holder: holder.clone() },
                since: now,
                concurrency: 0,
                created_at: now,
            },
        );
        taken.push(Taken::New(name));
    }
    Ok(taken)
}

/// Marks the instance `name`, which `me` provisioned, in use by its holder.
pub fn provisioned(
    state: &mut PoolState,
    name: &str,
    me: &Holder,
    concurrency: u32,
    now: i64,
) -> Result<()> {
    let instance = state.instances.get_mut(name).ok_or_else(|| gone(name))?;
    match &instance.state {
        InstanceState::Provisioning { by, holder } if by == me => {
            instance.state = InstanceState::InUse { holder: holder.clone() };
            instance.concurrency = concurrency;
            instance.since = now;
            Ok(())
        }
        _ => Err(gone(name)),
    }
}

/// Releases `name`: the first source in its path that has no more than its
/// reserve of instances keeps it, idle; if none does (or `discard`), `me`
/// must throw it away.
pub fn release(
    state: &mut PoolState,
    sources: &Sources,
    name: &str,
    discard: bool,
    me: &Holder,
    now: i64,
) -> Result<Released> {
    let Some(instance) = state.instances.get(name) else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no instance named `{name}`; larder pool status -a lists them"),
        ));
    };
    match &instance.state {
        InstanceState::InUse { .. } => {}
        InstanceState::Idle if !discard => return Ok(Released::AlreadyCached),
        InstanceState::Idle => {}
        InstanceState::Provisioning { .. } => {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "`{name}` is still being provisioned; release it once acquire has printed it"
                ),
            ));
        }
        InstanceState::Discarding { .. } => {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("`{name}` is being thrown away already"),
            ));
        }
    }
    let path = instance.path.clone();
    let keeper = if discard {
        None
    } else {
        (0..path.len()).find(|&i| {
            let level = &path[i];
            let reserve = sources.get(level).map_or(0, |c| c.reserve) as usize;
            let count = state
                .instances
                .values()
                .filter(|other| !matches!(other.state, InstanceState::Discarding { .. }))
                .filter(|other| other.counts_for(level))
                .count();
            count <= reserve
        })
    };
    let Some(instance) = state.instances.get_mut(name) else { return Err(gone(name)) };
    instance.since = now;
    match keeper {
        Some(i) => {
            instance.path = path[i..].to_vec();
            instance.state = InstanceState::Idle;
            Ok(Released::Cached)
        }
        None => {
            instance.state = InstanceState::Discarding { by: me.clone() };
            Ok(Released::Discard)
        }
    }
}

/// Reclaims what the dead left: instances of dead holders are released,
/// those whose provisioner or discarder died are thrown away (by `me`, who
/// must do it). Returns the instances `me` must discard.
pub fn sweep(
    state: &mut PoolState,
    sources: &Sources,
    me: &Holder,
    alive: &Liveness,
) -> Vec<String> {
    let now = alive.now();
    let mut discard = Vec::new();
    // Dead provisioners and discarders first, so the instances they left
    // no longer count against the reserve of those released next.
    for (name, instance) in state.instances.iter_mut() {
        // Another project's source (or one removed): not ours to touch.
        if !sources.contains(&instance.source) {
            continue;
        }
        match &instance.state {
            InstanceState::Provisioning { by, .. } if !alive.is_alive(by) => {
                let error = format!("its provisioning stopped when {by} died");
                state.failures.insert(
                    instance.source.clone(),
                    Failure { instance: name.clone(), error, at: now },
                );
                instance.state = InstanceState::Discarding { by: me.clone() };
                instance.since = now;
                discard.push(name.clone());
            }
            InstanceState::Discarding { by } if !alive.is_alive(by) => {
                instance.state = InstanceState::Discarding { by: me.clone() };
                discard.push(name.clone());
            }
            _ => {}
        }
    }
    let dead: Vec<String> = state
        .instances
        .iter()
        .filter(|(_, i)| sources.contains(&i.source))
        .filter(
            |(_, i)| matches!(&i.state, InstanceState::InUse { holder } if !alive.is_alive(holder)),
        )
        .map(|(n, _)| n.clone())
        .collect();
    for name in dead {
        if let Ok(Released::Discard) = release(state, sources, &name, false, me, now) {
            discard.push(name);
        }
    }
    discard.sort();
    discard
}

/// Drops the record of `name` once `me` has thrown it away.
pub fn discarded(state: &mut PoolState, name: &str, me: &Holder) {
    if matches!(state.instances.get(name), Some(Instance { state: InstanceState::Discarding { by }, .. }) if by == me)
    {
        state.instances.remove(name);
    }
}

/// Records that throwing `name` away failed; the next sweep after `retry_at`
/// tries again.
pub fn discard_failed(state: &mut PoolState, name: &str, error: &str, retry_at: i64, now: i64) {
    if let Some(instance) = state.instances.get_mut(name) {
        instance.state = InstanceState::Discarding {
            by: Holder::Token { id: format!("retry-discard-{name}"), expires_at: retry_at },
        };
        let source = instance.source.clone();
        state.failures.insert(
            source,
            Failure { instance: name.to_string(), error: error.to_string(), at: now },
        );
    }
}

/// Whether one more instance (or `existing`, moved onto `path`) keeps every
/// source in `path` within its maximum.
fn fits(state: &PoolState, sources: &Sources, path: &[String], existing: Option<&str>) -> bool {
    path.iter().all(|level| {
        let maximum = sources.maximum(level) as usize;
        if maximum == 0 {
            return true;
        }
        let count = state
            .instances
            .iter()
            .filter(|(n, i)| i.counts_for(level) && Some(n.as_str()) != existing)
            .count();
        count < maximum
    })
}

/// How busy the source `leaf` is: its instances that are not idle.
fn load(state: &PoolState, leaf: &str) -> usize {
    state.instances.values().filter(|i| i.source == leaf && i.state != InstanceState::Idle).count()
}

/// A name for a new instance of `leaf`: the source's own name for a source of
/// one machine, else `<leaf>-<n>` with a number not used before.
fn new_name(state: &mut PoolState, sources: &Sources, leaf: &str) -> String {
    if sources.get(leaf).is_ok_and(|c| c.is_single()) {
        return leaf.to_string();
    }
    let counter = state.counters.entry(leaf.to_string()).or_insert(0);
    loop {
        let name = format!("{leaf}-{counter}");
        *counter += 1;
        if !state.instances.contains_key(&name) && !sources.contains(&name) {
            return name;
        }
    }
}

fn gone(name: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("`{name}` was taken over by another process while it was provisioned"),
    )
}

/// The error when `source` cannot give `count` instances: its limits and
/// its members', every instance that counts against them, and what to do
/// (not `--wait` to whoever waited already).
fn full(
    state: &PoolState,
    sources: &Sources,
    source: &str,
    count: usize,
    waited: Option<Duration>,
) -> Error {
    let leaves: Vec<String> =
        sources.paths(source).iter().filter_map(|p| p.last().cloned()).collect();
    let now: Vec<String> = state
        .instances
        .iter()
        .filter(|(_, i)| i.counts_for(source) || leaves.contains(&i.source))
        .map(|(n, i)| match &i.state {
            InstanceState::InUse { holder } => format!("{n} held by {holder}"),
            other => format!("{n} {}", other.label()),
        })
        .collect();
    let room = |name: &str| match sources.maximum(name) {
        0 => "any number".to_string(),
        n => n.to_string(),
    };
    let mut limits = format!("it may have at most {} at once", room(source));
    if let Ok(SourceKind::Pool { members }) = sources.get(source).map(|c| &c.kind) {
        let each: Vec<String> = members.iter().map(|m| format!("{m} {}", room(m))).collect();
        limits.push_str(&format!(", its members {}", each.join(", ")));
    }
    let origin = sources.get(source).map(|c| c.origin()).unwrap_or_default();
    let fix = match waited {
        None => format!(
            "release one with larder pool release, wait for one with --wait, or raise maximum= in {origin}"
        ),
        Some(waited) => format!(
            "none came free in {}; release one with larder pool release, or raise maximum= in {origin}",
            crate::time::human_duration(waited)
        ),
    };
    Error::new(
        ErrorKind::StoreFull,
        format!(
            "source `{source}` cannot give {count} instance{}: {limits} (now: {}); {fix}",
            if count == 1 { "" } else { "s" },
            if now.is_empty() { "none".to_string() } else { now.join(", ") },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::conf::SourceConf;

    fn vm(name: &str, maximum: u32, reserve: u32) -> SourceConf {
        let kind = SourceKind::Command { provision: None, run: "\"$@\"".into(), discard: None };
        SourceConf { name: name.into(), kind, maximum, reserve, ..SourceConf::implicit_local() }
    }

    fn pool(name: &str, members: &[&str], maximum: u32, reserve: u32) -> SourceConf {
        let members = members.iter().map(|m| m.to_string()).collect();
        SourceConf {
            name: name.into(),
            kind: SourceKind::Pool { members },
            maximum,
            reserve,
            ..SourceConf::implicit_local()
        }
    }

    fn local(reserve: u32) -> SourceConf {
        SourceConf { reserve, ..SourceConf::implicit_local() }
    }

    fn me() -> Holder {
        Holder::current_process()
    }

    fn user(id: &str) -> Holder {
        Holder::Token { id: id.into(), expires_at: i64::MAX }
    }

    /// A compact view of the state: `name:state:path` per instance.
    fn show(state: &PoolState) -> String {
        state
            .instances
            .iter()
            .map(|(n, i)| format!("{n}:{}:{}", i.state.label(), i.path.join("/")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs `steps` (`acquire SOURCE N`, `release NAME`, `discard NAME`,
    /// `provision NAME`) in order and compares what each returned, then the
    /// final state, with `expected`.
    fn check(sources: Vec<SourceConf>, steps: &[&str], expected: &str) {
        let sources = Sources::from_list(sources).expect("sources");
        let mut state = PoolState::default();
        let mut out = Vec::new();
        for step in steps {
            let words: Vec<&str> = step.split(' ').collect();
            let got = match words[..] {
                ["acquire", source, n] => acquire(
                    &mut state,
                    &sources,
                    source,
                    n.parse().expect("n"),
                    &user("u"),
                    &me(),
                    1,
                    None,
                )
                .map(|t| t.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(",")),
                ["release", name] => {
                    release(&mut state, &sources, name, false, &me(), 2).map(|r| format!("{r:?}"))
                }
                ["discard", name] => {
                    let r = release(&mut state, &sources, name, true, &me(), 2)
                        .map(|r| format!("{r:?}"));
                    discarded(&mut state, name, &me());
                    r
                }
                ["drop", name] => {
                    discarded(&mut state, name, &me());
                    Ok("dropped".into())
                }
                ["provision", name] => {
                    provisioned(&mut state, name, &me(), 2, 3).map(|()| "ok".into())
                }
                _ => panic!("bad step {step}"),
            };
            out.push(match got {
                Ok(s) => s,
                Err(e) => format!("error: {}", e.to_string().split(':').next().unwrap_or_default()),
            });
        }
        out.push(show(&state));
        assert_eq!(out.join("\n"), expected);
    }

    #[test]
    fn a_cached_instance_never_counts_against_the_maximum() {
        // crcache's "Instance limit exceeded": reserve 1 and maximum 1, then
        // acquire, release, acquire.
        check(
            vec![local(1)],
            &[
                "acquire local 1",
                "provision local",
                "release local",
                "acquire local 1",
                "acquire local 1",
            ],
            "New(\"local\")\nok\nCached\nCached(\"local\")\nerror: source `local` cannot give 1 instance\nlocal:in-use:local",
        );
    }

    #[test]
    fn reserve_keeps_released_instances_up_to_its_count() {
        check(
            vec![vm("vm", 0, 1)],
            &[
                "acquire vm 2",
                "provision vm-0",
                "provision vm-1",
                "release vm-0",
                "drop vm-0",
                "release vm-1",
                "acquire vm 2",
            ],
            "New(\"vm-0\"),New(\"vm-1\")\nok\nok\nDiscard\ndropped\nCached\nCached(\"vm-1\"),New(\"vm-2\")\nvm-1:in-use:vm vm-2:provisioning:vm",
        );
    }

    #[test]
    fn maximum_is_all_or_nothing() {
        check(
            vec![vm("vm", 3, 0)],
            &["acquire vm 2", "acquire vm 2", "acquire vm 1", "acquire vm 1"],
            "New(\"vm-0\"),New(\"vm-1\")\nerror: source `vm` cannot give 2 instances\nNew(\"vm-2\")\nerror: source `vm` cannot give 1 instance\nvm-0:provisioning:vm vm-1:provisioning:vm vm-2:provisioning:vm",
        );
    }

    #[test]
    fn a_pool_takes_the_least_loaded_member_and_respects_every_maximum() {
        check(
            vec![vm("a", 2, 0), vm("b", 1, 0), pool("p", &["a", "b"], 0, 0)],
            &["acquire a 1", "acquire p 1", "acquire p 1", "acquire p 1"],
            "New(\"a-0\")\nNew(\"b-0\")\nNew(\"a-1\")\nerror: source `p` cannot give 1 instance\na-0:provisioning:a a-1:provisioning:p/a b-0:provisioning:p/b",
        );
        check(
            vec![vm("a", 0, 0), pool("p", &["a"], 1, 0)],
            &["acquire p 1", "acquire p 1", "acquire a 1"],
            "New(\"a-0\")\nerror: source `p` cannot give 1 instance\nNew(\"a-1\")\na-0:provisioning:p/a a-1:provisioning:a",
        );
    }

    #[test]
    fn a_pool_caches_by_its_own_reserve_then_its_members() {
        check(
            vec![vm("a", 0, 1), pool("p", &["a"], 0, 0), pool("q", &["a"], 0, 1)],
            &[
                "acquire p 2",
                "provision a-0",
                "provision a-1",
                "release a-0",
                "drop a-0",
                "release a-1",
                "acquire q 1",
                "release a-1",
            ],
            "New(\"a-0\"),New(\"a-1\")\nok\nok\nDiscard\ndropped\nCached\nCached(\"a-1\")\nCached\na-1:cached:q/a",
        );
    }

    #[test]
    fn a_refused_acquire_changes_nothing_and_describes_what_it_found() {
        let sources = Sources::from_list(vec![vm("vm", 2, 1)]).expect("sources");
        let mut state = PoolState::default();
        acquire(&mut state, &sources, "vm", 1, &user("u"), &me(), 1, None).expect("one");
        provisioned(&mut state, "vm-0", &me(), 1, 1).expect("ready");
        release(&mut state, &sources, "vm-0", false, &me(), 2).expect("cached");
        let before = state.clone();
        let err =
            acquire(&mut state, &sources, "vm", 3, &user("u"), &me(), 3, None).expect_err("three");
        assert_eq!(state, before);
        assert!(err.to_string().contains("at most 2 at once (now: vm-0 cached);"), "{err}");
    }

    #[test]
    fn a_new_source_never_takes_over_an_instance_of_the_same_name() {
        let host = SourceConf {
            name: "vm-0".into(),
            kind: SourceKind::Ssh { host: "h".into(), config: None },
            ..SourceConf::implicit_local()
        };
        let before = Sources::from_list(vec![vm("vm", 0, 0)]).expect("sources");
        let after = Sources::from_list(vec![vm("vm", 0, 0), host]).expect("sources");
        let mut state = PoolState::default();
        acquire(&mut state, &before, "vm", 1, &user("u"), &me(), 1, None).expect("vm-0");
        let err =
            acquire(&mut state, &after, "vm-0", 1, &user("u"), &me(), 2, None).expect_err("taken");
        assert!(err.to_string().contains("that name is an instance of source `vm`"), "{err}");
        assert_eq!(state.instances["vm-0"].source, "vm");
    }

    #[test]
    fn releasing_what_is_not_held() {
        check(
            vec![vm("vm", 0, 0)],
            &["release vm-9", "acquire vm 1", "release vm-0", "discard vm-0"],
            "error: no instance named `vm-9`; larder pool status -a lists them\nNew(\"vm-0\")\nerror: `vm-0` is still being provisioned; release it once acquire has printed it\nerror: `vm-0` is still being provisioned; release it once acquire has printed it\nvm-0:provisioning:vm",
        );
    }

    #[test]
    fn the_dead_are_swept() {
        let sources = Sources::from_list(vec![vm("vm", 0, 1)]).expect("sources");
        let mut state = PoolState::default();
        let dead = {
            let mut child = std::process::Command::new("true").spawn().expect("spawn");
            let id = crate::holder::ProcessId::of_pid(child.id()).expect("running");
            child.wait().expect("wait");
            Holder::process(id)
        };
        acquire(&mut state, &sources, "vm", 3, &dead, &me(), 1, None).expect("acquire");
        for name in ["vm-0", "vm-1"] {
            provisioned(&mut state, name, &me(), 1, 1).expect("provisioned");
        }
        // vm-2's provisioner died; vm-0 and vm-1's holder died.
        if let Some(i) = state.instances.get_mut("vm-2") {
            i.state = InstanceState::Provisioning { by: dead.clone(), holder: dead.clone() };
        }
        let discard = sweep(&mut state, &sources, &me(), &Liveness::local(5));
        assert_eq!(discard, vec!["vm-0".to_string(), "vm-2".to_string()]);
        assert_eq!(show(&state), "vm-0:discarding:vm vm-1:cached:vm vm-2:discarding:vm");
        assert!(state.failures["vm"].error.contains("provisioning stopped"));
        discard_failed(&mut state, "vm-0", "boom", 10, 5);
        assert!(
            sweep(&mut state, &sources, &me(), &Liveness::local(9)).is_empty(),
            "a failed discard waits"
        );
        assert_eq!(
            sweep(&mut state, &sources, &me(), &Liveness::local(11)),
            vec!["vm-0".to_string()]
        );
    }
}
