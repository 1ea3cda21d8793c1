//! The behaviour every [`Coordinator`] backend must show. Backends' tests call
//! [`run`] with a fresh, empty coordinator.

use std::collections::BTreeMap;

use super::{Attached, BuildProgress, Coordinator, DirState, Holder, NewDir, now_ms};
use crate::holder::ProcessId;

fn new_dir(path: &str) -> NewDir {
    let mut meta = BTreeMap::new();
    meta.insert("id".to_string(), path.to_string());
    NewDir { path: path.to_string(), meta, ..NewDir::default() }
}

fn token(id: &str, ttl_ms: i64) -> Holder {
    Holder::Token { id: id.to_string(), expires_at: now_ms() + ttl_ms }
}

/// A process holder whose process has exited.
fn dead_process() -> Holder {
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let id = ProcessId::of_pid(child.id()).unwrap_or(ProcessId { pid: child.id(), start: 1 });
    child.wait().expect("wait");
    Holder::process(id)
}

fn held(a: Attached) -> (super::DirRecord, bool) {
    match a {
        Attached::Held { record, created } => (record, created),
        Attached::Deleting(r) => panic!("unexpectedly deleting: {r:?}"),
    }
}

/// Runs every check against `coord`, which must start empty.
pub fn run(coord: &dyn Coordinator) {
    first_attach_creates_and_later_ones_share(coord);
    dead_and_expired_holders_are_released_by_whoever_looks(coord);
    deletion_waits_for_holders_and_locks(coord);
    attaching_during_deletion_waits_and_generations_fence(coord);
    a_dead_deleter_is_taken_over(coord);
    metadata_is_kept(coord);
    one_builds_the_others_wait_and_a_dead_builder_is_taken_over(coord);
    a_failed_build_is_reported_and_built_again(coord);
    fences_only_grow_and_refuse_late_finishes(coord);
    a_hosts_copy_is_recorded_once_per_generation(coord);
}

/// The host that makes a directory has its copy at the path it gave; a
/// host's copy is recorded once, and only for the directory's generation.
fn a_hosts_copy_is_recorded_once_per_generation(coord: &dyn Coordinator) {
    let me = Holder::current_process();
    let (record, _) = held(coord.attach("g", &me, &new_dir("/x/g")).expect("attach"));
    assert!(record.has_copy_here(), "{record:?}");
    assert_eq!(record.path, "/x/g");
    let again = coord.add_copy("g", record.generation, "/y/g").expect("add").expect("record");
    assert_eq!(again.path, "/x/g", "this host had its copy already");
    assert_eq!(again.copies.len(), 1, "{again:?}");
    assert_eq!(coord.add_copy("g", record.generation + 1, "/y/g").expect("add"), None);
    coord.detach("g", &me).expect("detach");
    let deleting = coord.begin_delete("g", &me, false).expect("begin").expect("free");
    assert_eq!(coord.add_copy("g", record.generation, "/x/g").expect("add"), None, "deleting");
    coord.finish_delete("g", deleting.fence).expect("finish");
    assert_eq!(coord.add_copy("g", record.generation, "/x/g").expect("add"), None, "gone");
}

/// Every grant carries a token greater than every earlier one of the same
/// directory, and finishing needs the grant's own: a deleter or builder that
/// lost its grant finds its late finish refused and the newer work intact.
fn fences_only_grow_and_refuse_late_finishes(coord: &dyn Coordinator) {
    let me = Holder::current_process();
    let (created, _) = held(coord.attach("k", &me, &new_dir("/x/k")).expect("attach"));
    assert_eq!(created.fence, created.generation, "the creation is the first grant");
    coord.detach("k", &me).expect("detach");

    // A deleter that died is taken over; its late finish is refused.
    let ghost = dead_process();
    let lost = coord.begin_delete("k", &ghost, false).expect("begin").expect("free");
    assert!(lost.fence > created.fence, "a deletion is a new grant");
    let deleter = token("deleter", 60_000);
    let taken = coord.begin_delete("k", &deleter, false).expect("begin").expect("taken over");
    assert!(taken.fence > lost.fence);
    assert!(!coord.renew_grant("k", lost.fence, &ghost).expect("renew"), "lost");
    assert!(coord.renew_grant("k", taken.fence, &deleter).expect("renew"));
    assert!(!coord.finish_delete("k", lost.fence).expect("finish"), "stale deleter refused");
    assert!(coord.get("k").expect("get").is_some(), "the record stays for the live deleter");
    assert!(coord.finish_delete("k", taken.fence).expect("finish"));
    assert_eq!(coord.get("k").expect("get"), None);

    // Made anew: its generation is past every token the old one handed out.
    let (again, created) = held(coord.attach("k", &me, &new_dir("/x/k")).expect("attach"));
    assert!(created);
    assert!(again.generation > taken.fence, "generations grow past earlier fences");
    coord.detach("k", &me).expect("detach");
    let r = coord.begin_delete("k", &me, false).expect("begin").expect("free");
    assert!(coord.finish_delete("k", r.fence).expect("finish"));

    // A build taken over: every call of the old grant is refused, even the
    // same builder's with its earlier token.
    let dead_builder = dead_process();
    let building = NewDir { builder: Some(dead_builder.clone()), ..new_dir("/x/l") };
    let (first, _) = held(coord.attach("l", &me, &building).expect("attach"));
    let b = token("builder-b", 60_000);
    let claimed = coord.claim_build("l", &b).expect("claim").expect("taken over");
    assert!(claimed.fence > first.fence);
    let progress = BuildProgress { phase: "x".into(), done: 1, total: None, written: 0 };
    assert!(!coord.report_progress("l", first.fence, &dead_builder, &progress).expect("report"));
    assert!(!coord.fail_build("l", first.fence, &dead_builder, "late").expect("fail"));
    assert!(!coord.renew_grant("l", first.fence, &dead_builder).expect("renew"));
    assert!(coord.renew_grant("l", claimed.fence, &b).expect("renew"));
    let reclaimed = coord.claim_build("l", &b).expect("claim").expect("its own build");
    assert!(reclaimed.fence > claimed.fence);
    assert!(!coord.finish_build("l", claimed.fence, &b).expect("finish"), "an earlier grant");
    assert!(coord.report_progress("l", reclaimed.fence, &b, &progress).expect("report"));
    // A forced deletion during the build fences the builder off.
    let forced = coord.begin_delete("l", &me, true).expect("begin").expect("forced");
    assert!(forced.fence > reclaimed.fence);
    assert!(!coord.finish_build("l", reclaimed.fence, &b).expect("finish"), "being deleted");
    assert!(!coord.renew_grant("l", reclaimed.fence, &b).expect("renew"));
    assert!(coord.finish_delete("l", forced.fence).expect("finish"));
    assert_eq!(coord.get("l").expect("get"), None);
}

fn a_failed_build_is_reported_and_built_again(coord: &dyn Coordinator) {
    let a = token("builder-a", 60_000);
    let b = token("builder-b", 60_000);
    let new = NewDir {
        builder: Some(a.clone()),
        recipe: Some("file:/x".into()),
        recipe_hash: Some("sha256:1".into()),
        size: 1234,
        ..new_dir("/x/i")
    };
    let (rec, _) = held(coord.attach("i", &a, &new).expect("attach"));
    assert_eq!((rec.size, rec.recipe.as_deref()), (1234, Some("file:/x")));
    coord.attach("i", &b, &new).expect("attach");
    let progress =
        BuildProgress { phase: "downloading x".into(), done: 10, total: Some(100), written: 5 };
    assert!(coord.report_progress("i", rec.generation, &a, &progress).expect("report"));
    assert!(!coord.report_progress("i", rec.generation, &b, &progress).expect("report"));
    let seen = coord.get("i").expect("get").expect("record");
    assert_eq!(seen.progress, Some(progress.clone()));
    let peeked = coord.peek("i").expect("peek").expect("record");
    assert_eq!((peeked.progress, peeked.generation), (Some(progress), seen.generation));
    assert_eq!(coord.peek("nope").expect("peek"), None);
    assert!(!coord.fail_build("i", rec.generation, &b, "not mine").expect("fail"));
    assert!(coord.fail_build("i", rec.generation, &a, "checksum mismatch").expect("fail"));
    let failed = coord.get("i").expect("get").expect("record");
    assert_eq!(failed.state, DirState::Failed { error: "checksum mismatch".into() });
    assert_eq!(failed.progress, None);
    assert_eq!(coord.begin_delete("i", &a, false).expect("begin"), None, "still held");
    // Whoever comes next builds it again.
    let again = coord.claim_build("i", &b).expect("claim").expect("failed builds are claimable");
    assert_eq!(again.state, DirState::Building { by: b.clone() });
    assert!(coord.fail_build("i", again.fence, &b, "again").expect("fail"));
    // Nobody holds a failed directory: it goes, lock or not.
    coord.set_locked("i", true).expect("lock");
    coord.detach("i", &a).expect("detach");
    coord.detach("i", &b).expect("detach");
    let r = coord.begin_delete("i", &a, false).expect("begin").expect("free");
    coord.finish_delete("i", r.fence).expect("finish");
    assert_eq!(coord.get("i").expect("get"), None);
}

fn one_builds_the_others_wait_and_a_dead_builder_is_taken_over(coord: &dyn Coordinator) {
    let building = NewDir { builder: Some(a_builder()), ..new_dir("/x/g") };
    let a = a_builder();
    let b = token("builder-b", 60_000);
    let (first, created) = held(coord.attach("g", &a, &building).expect("attach"));
    assert!(created);
    assert_eq!(first.state, DirState::Building { by: a.clone() });
    let (second, created) = held(coord.attach("g", &b, &building).expect("attach"));
    assert!(!created, "the second user waits for the first build");
    assert_eq!(second.state, DirState::Building { by: a.clone() });
    assert_eq!(coord.claim_build("g", &b).expect("claim"), None, "a live builder keeps it");
    assert_eq!(coord.begin_delete("g", &b, false).expect("begin"), None, "never while building");
    assert!(coord.finish_build("g", first.generation, &a).expect("finish"));
    assert_eq!(coord.get("g").expect("get").expect("record").state, DirState::Ready);
    assert_eq!(coord.claim_build("g", &b).expect("claim"), None, "ready: nothing to build");
    coord.detach("g", &a).expect("detach");
    coord.detach("g", &b).expect("detach");
    let r = coord.begin_delete("g", &a, false).expect("begin").expect("free");
    coord.finish_delete("g", r.fence).expect("finish");

    // The builder dies: a waiter takes over, and the dead one's late finish is fenced off.
    let ghost = dead_process();
    let (rec, _) = held(
        coord
            .attach("h", &ghost, &NewDir { builder: Some(ghost.clone()), ..new_dir("/x/h") })
            .expect("attach"),
    );
    coord.attach("h", &b, &building).expect("attach");
    let claimed = coord.claim_build("h", &b).expect("claim").expect("taken over");
    assert_eq!(claimed.state, DirState::Building { by: b.clone() });
    assert!(!coord.finish_build("h", rec.generation, &ghost).expect("finish"), "fenced");
    assert!(!coord.finish_build("h", claimed.fence + 1000, &b).expect("finish"), "wrong fence");
    assert!(coord.finish_build("h", claimed.fence, &b).expect("finish"));
    coord.detach("h", &b).expect("detach");
    let r = coord.begin_delete("h", &b, false).expect("begin").expect("free");
    coord.finish_delete("h", r.fence).expect("finish");
}

/// The builder of the first build checks: it also holds what it builds.
fn a_builder() -> Holder {
    Holder::Token { id: "builder-a".to_string(), expires_at: i64::MAX }
}

fn first_attach_creates_and_later_ones_share(coord: &dyn Coordinator) {
    let me = Holder::current_process();
    let other = token("other", 60_000);
    let (record, created) = held(coord.attach("a", &me, &new_dir("/x/a")).expect("attach"));
    assert!(created);
    assert_eq!(record.path, "/x/a");
    assert_eq!(record.holders.len(), 1);
    let (record, created) =
        held(coord.attach("a", &other, &new_dir("/elsewhere")).expect("attach"));
    assert!(!created, "the second attach shares");
    assert_eq!(record.path, "/x/a", "the first definition's path stays");
    assert_eq!(record.holders.len(), 2);
    // Attaching twice is one holder.
    let (record, _) = held(coord.attach("a", &me, &new_dir("/x/a")).expect("attach"));
    assert_eq!(record.holders.len(), 2);
    let after = coord.detach("a", &me).expect("detach").expect("record");
    assert_eq!(after.holders.len(), 1);
    let after = coord.detach("a", &other).expect("detach").expect("record");
    assert!(after.holders.is_empty());
    let gone = coord.begin_delete("a", &me, false).expect("begin").expect("free");
    coord.finish_delete("a", gone.fence).expect("finish");
    assert_eq!(coord.get("a").expect("get"), None);
}

fn dead_and_expired_holders_are_released_by_whoever_looks(coord: &dyn Coordinator) {
    coord.attach("b", &dead_process(), &new_dir("/x/b")).expect("attach");
    coord.attach("b", &token("expired", -1), &new_dir("/x/b")).expect("attach");
    coord.attach("b", &token("live", 60_000), &new_dir("/x/b")).expect("attach");
    // A process of this host before it rebooted.
    let Holder::Process { host, .. } = Holder::current_process() else { unreachable!() };
    let earlier = Holder::Process { host, boot_id: "an-earlier-boot".into(), pid: 1, start: 1 };
    coord.attach("b", &earlier, &new_dir("/x/b")).expect("attach");
    let record = coord.get("b").expect("get").expect("record");
    assert_eq!(record.holders.len(), 1, "{:?}", record.holders);
    assert_eq!(record.holders[0].holder.key(), "token:live");
    let listed = coord.list().expect("list");
    assert!(listed.iter().all(|r| r.holders.iter().all(|h| h.holder.is_alive(now_ms()))));
    coord.detach("b", &token("live", 0)).expect("detach");
    let gone = coord.begin_delete("b", &Holder::current_process(), false).expect("begin");
    coord.finish_delete("b", gone.expect("free").fence).expect("finish");
}

fn deletion_waits_for_holders_and_locks(coord: &dyn Coordinator) {
    let me = Holder::current_process();
    coord.attach("c", &me, &new_dir("/x/c")).expect("attach");
    assert_eq!(coord.begin_delete("c", &me, false).expect("begin"), None, "held");
    coord.set_locked("c", true).expect("lock");
    coord.detach("c", &me).expect("detach");
    assert_eq!(coord.begin_delete("c", &me, false).expect("begin"), None, "locked");
    assert!(coord.get("c").expect("get").expect("record").locked);
    coord.set_locked("c", false).expect("unlock");
    let record = coord.begin_delete("c", &me, false).expect("begin").expect("free");
    assert_eq!(record.state, DirState::Deleting { by: me.clone() });
    coord.finish_delete("c", record.fence).expect("finish");
    // Force deletes what is held.
    coord.attach("c", &token("t", 60_000), &new_dir("/x/c")).expect("attach");
    let record = coord.begin_delete("c", &me, true).expect("begin").expect("forced");
    coord.finish_delete("c", record.fence).expect("finish");
    assert_eq!(coord.get("c").expect("get"), None);
}

fn attaching_during_deletion_waits_and_generations_fence(coord: &dyn Coordinator) {
    let me = Holder::current_process();
    let (first, _) = held(coord.attach("d", &me, &new_dir("/x/d")).expect("attach"));
    coord.detach("d", &me).expect("detach");
    let deleting = coord.begin_delete("d", &me, false).expect("begin").expect("free");
    match coord.attach("d", &token("late", 60_000), &new_dir("/x/d")).expect("attach") {
        Attached::Deleting(r) => assert_eq!(r.generation, deleting.generation),
        other => panic!("attach during deletion must wait: {other:?}"),
    }
    coord.finish_delete("d", deleting.fence).expect("finish");
    let (second, created) = held(coord.attach("d", &me, &new_dir("/x/d")).expect("attach"));
    assert!(created);
    assert!(second.generation > first.generation, "generations grow");
    // A late finish of the old generation leaves the new one alone.
    assert!(!coord.finish_delete("d", first.fence).expect("finish"), "fenced");
    assert!(coord.get("d").expect("get").is_some());
    coord.detach("d", &me).expect("detach");
    let r = coord.begin_delete("d", &me, false).expect("begin").expect("free");
    coord.finish_delete("d", r.fence).expect("finish");
}

fn a_dead_deleter_is_taken_over(coord: &dyn Coordinator) {
    let me = Holder::current_process();
    coord.attach("e", &me, &new_dir("/x/e")).expect("attach");
    coord.detach("e", &me).expect("detach");
    let ghost = dead_process();
    coord.begin_delete("e", &ghost, false).expect("begin").expect("free");
    let live_deleter = token("deleter", 60_000);
    let taken = coord.begin_delete("e", &live_deleter, false).expect("begin");
    let taken = taken.expect("a dead deleter's work is taken over");
    assert_eq!(taken.state, DirState::Deleting { by: live_deleter.clone() });
    assert_eq!(
        coord.begin_delete("e", &me, false).expect("begin"),
        None,
        "a live deleter keeps it"
    );
    coord.finish_delete("e", taken.fence).expect("finish");
}

fn metadata_is_kept(coord: &dyn Coordinator) {
    let me = Holder::current_process();
    coord.attach("f", &me, &new_dir("/x/f")).expect("attach");
    let entries = [("k".to_string(), "v".to_string()), ("id".to_string(), "changed".to_string())];
    let record = coord.insert_meta("f", &entries).expect("meta").expect("record");
    assert_eq!(record.meta.get("k").map(String::as_str), Some("v"));
    assert_eq!(record.meta.get("id").map(String::as_str), Some("changed"));
    assert_eq!(coord.insert_meta("nope", &entries).expect("meta"), None);
    let keys = ["k".to_string(), "absent".to_string()];
    let record = coord.remove_meta("f", &keys).expect("remove").expect("record");
    assert_eq!(record.meta.get("k"), None);
    assert_eq!(record.meta.get("id").map(String::as_str), Some("changed"));
    let all: Vec<String> = record.meta.keys().cloned().collect();
    let record = coord.remove_meta("f", &all).expect("remove all").expect("record");
    assert!(record.meta.is_empty(), "{:?}", record.meta);
    assert_eq!(coord.remove_meta("nope", &keys).expect("meta"), None);
    let names: Vec<String> = coord.list().expect("list").into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec!["f"]);
    coord.detach("f", &me).expect("detach");
    let r = coord.begin_delete("f", &me, false).expect("begin").expect("free");
    coord.finish_delete("f", r.fence).expect("finish");
}

/// Runs every check of the pools' state against `coord`, which must start
/// with none.
pub fn run_pools(coord: &dyn super::PoolCoordinator) {
    use super::{Instance, InstanceState, PoolState, update};
    assert_eq!(coord.pools().expect("read"), PoolState::default(), "starts empty");

    // A change that fails stores nothing.
    let failed = update(coord, |state| {
        state.counters.insert("vm".into(), 7);
        Err::<(), _>(crate::Error::new(crate::ErrorKind::Conflict, "no"))
    });
    assert!(failed.is_err());
    assert!(coord.pools().expect("read").counters.is_empty(), "a failed change leaves no trace");

    // What is stored reads back the same.
    let instance = Instance {
        source: "vm".into(),
        path: vec!["pool".into(), "vm".into()],
        state: InstanceState::InUse { holder: token("ci", 60_000) },
        since: now_ms(),
        concurrency: 4,
        created_at: now_ms(),
    };
    update(coord, |state| {
        state.instances.insert("vm-0".into(), instance.clone());
        Ok(())
    })
    .expect("store");
    assert_eq!(coord.pools().expect("read").instances.get("vm-0"), Some(&instance));

    // Changes from many threads at once are serialized: none is lost.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..10 {
                    update(coord, |state| {
                        *state.counters.entry("n".into()).or_insert(0) += 1;
                        Ok(())
                    })
                    .expect("update");
                }
            });
        }
    });
    assert_eq!(coord.pools().expect("read").counters.get("n"), Some(&80));
}
