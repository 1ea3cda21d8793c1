//! The Redis coordinator against a real `redis-server`, started per test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::coord::{
    Attached, Coordinator, DirState, NewDir, PoolCoordinator, PoolState, conformance,
};
use crate::testing::RedisServer;

fn options(lease_ms: u64) -> RedisOptions {
    RedisOptions { lease: Duration::from_millis(lease_ms), ..RedisOptions::default() }
}

fn connect(server: &RedisServer, options: RedisOptions) -> RedisCoordinator {
    RedisCoordinator::connect(&server.url(), options).expect("connect")
}

/// Waits (up to a minute, for a loaded machine) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scratch(path: &std::path::Path) -> NewDir {
    NewDir { path: path.display().to_string(), ..NewDir::default() }
}

/// A process of another host, which this host cannot check: only its lease
/// tells.
fn remote_process() -> Holder {
    Holder::Process { host: "another-host".into(), boot_id: "b".into(), pid: 4242, start: 1 }
}

#[test]
fn passes_the_conformance_suite() {
    let server = RedisServer::start();
    let coord = connect(&server, RedisOptions::default());
    conformance::run(&coord);
    conformance::run_pools(&coord);
}

#[test]
fn passes_the_conformance_suite_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let options = RedisOptions { cluster: true, ..RedisOptions::default() };
    let coord = RedisCoordinator::connect(&cluster.urls(), options).expect("connect");
    conformance::run(&coord);
    conformance::run_pools(&coord);
}

#[test]
fn an_evicting_memory_policy_is_refused_with_the_setting_to_change() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let err =
        RedisCoordinator::connect(&server.url(), RedisOptions::default()).expect_err("evicts");
    assert_eq!(err.kind(), ErrorKind::Config);
    let message = err.to_string();
    assert!(message.contains("maxmemory-policy allkeys-lru"), "{message}");
    assert!(message.contains("noeviction"), "{message}");
    assert!(!message.contains('\n'));
    // Evicting only keys with an expiry is fine: larder's state has none
    // that matter.
    server.command(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]).expect("config");
    RedisCoordinator::connect(&server.url(), RedisOptions::default()).expect("volatile-lru");
}

#[test]
fn an_unreachable_url_is_named_without_its_password() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://:s3cret@127.0.0.1:{port}/0");
    let err = RedisCoordinator::connect(&url, RedisOptions::default()).expect_err("unreachable");
    assert_eq!(err.kind(), ErrorKind::Io);
    let message = err.to_string();
    assert!(message.contains(&format!("redis://:***@127.0.0.1:{port}/0")), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(message.contains("check that Redis runs there"), "{message}");

    let gone = tempfile::tempdir().expect("tempdir");
    let url = format!("unix://{}/no.sock", gone.path().display());
    let err = RedisCoordinator::connect(&url, RedisOptions::default()).expect_err("no socket");
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn a_wrong_password_is_refused_without_printing_it() {
    let server = RedisServer::start_with(&["--requirepass", "right"]);
    let url = format!("{}?pass=s3cret", server.url());
    let err = RedisCoordinator::connect(&url, RedisOptions::default()).expect_err("wrong password");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().contains("pass=***"), "{err}");
    let right = RedisOptions { password: Some("right".into()), ..RedisOptions::default() };
    RedisCoordinator::connect(&server.url(), right).expect("the right password");
}

#[test]
fn a_holder_on_another_host_is_released_once_its_lease_runs_out() {
    let server = RedisServer::start();
    let coord = connect(&server, options(300));
    let me = Holder::current_process();
    let remote = remote_process();
    coord.attach("x", &remote, &scratch(std::path::Path::new("/x/x"))).expect("attach");
    assert_eq!(coord.begin_delete("x", &me, false).expect("begin"), None, "held from afar");
    // Nobody renews it: it goes once its lease (and the server's first
    // lease, its grace) has passed, at whatever look comes next.
    wait_until("the remote hold expired", || {
        coord.get("x").expect("get").is_some_and(|r| r.holders.is_empty())
    });
    let r = coord.begin_delete("x", &me, false).expect("begin").expect("free");
    assert!(coord.finish_delete("x", r.fence).expect("finish"));

    // The pools see the same: a process of a host without a lease is gone,
    // this host's own are checked here.
    let alive = coord.liveness().expect("liveness");
    assert!(!alive.is_alive(&remote));
    assert!(alive.is_alive(&me));
}

#[test]
fn a_redis_pause_takes_nothing_over_but_a_builder_silent_after_it_loses_its_grant() {
    let server = RedisServer::start();
    let coord = Arc::new(connect(&server, options(300)));
    let builder = Holder::current_process();
    let new = NewDir { builder: Some(builder.clone()), ..scratch(std::path::Path::new("/x/p")) };
    let waiter = Holder::Token { id: "waiter".into(), expires_at: now_ms() + 600_000 };
    let (record, _) = match coord.attach("p", &waiter, &new).expect("attach") {
        Attached::Held { record, created } => (record, created),
        other => panic!("{other:?}"),
    };
    // Redis stalls every client for longer than the lease: a claim that
    // waited in its queue takes nothing over, since the builder's renewals
    // waited in the same queue.
    server.command(&["CLIENT", "PAUSE", "2000", "ALL"]).expect("pause");
    let claimant = {
        let coord = Arc::clone(&coord);
        let waiter = waiter.clone();
        std::thread::spawn(move || coord.claim_build("p", &waiter))
    };
    let queued = claimant.join().expect("thread").expect("claim");
    assert_eq!(queued, None, "a claim that waited out the pause takes nothing over");
    // A builder that does not renew once the server answers again has lost
    // its grant to the next claim.
    let claimed = coord.claim_build("p", &waiter).expect("claim").expect("taken over");
    assert_eq!(claimed.state, DirState::Building { by: waiter.clone() });
    assert!(claimed.fence > record.fence);
    assert!(!coord.renew_grant("p", record.fence, &builder).expect("renew"), "lost");
    assert!(!coord.finish_build("p", record.fence, &builder).expect("finish"), "fenced off");
    assert!(coord.finish_build("p", claimed.fence, &waiter).expect("finish"));
}

#[test]
fn killed_mid_build_and_restarted_empty_loses_the_build_but_deletes_nothing() {
    let mut server = RedisServer::start();
    let coord = connect(&server, RedisOptions::default());
    let me = Holder::current_process();
    let folder = tempfile::tempdir().expect("tempdir");
    let new = NewDir { builder: Some(me.clone()), ..scratch(&folder.path().join("b")) };
    let record = match coord.attach("b", &me, &new).expect("attach") {
        Attached::Held { record, .. } => record,
        other => panic!("{other:?}"),
    };
    server.kill();
    let down = coord.get("b").expect_err("down");
    assert_eq!(down.kind(), ErrorKind::Io);
    assert!(down.to_string().contains(&server.url()), "{down}");
    server.restart();
    // The record is gone: nobody may read that as "nobody holds it".
    assert_eq!(coord.get("b").expect("get"), None);
    assert_eq!(coord.begin_delete("b", &me, true).expect("begin"), None, "nothing to delete");
    assert!(!coord.finish_build("b", record.fence, &me).expect("finish"), "the build is lost");
    assert!(coord.list().expect("list").is_empty());
    // A directory made after the restart still gets fences past the lost ones.
    let again = match coord.attach("b", &me, &scratch(&folder.path().join("b"))).expect("attach") {
        Attached::Held { record, .. } => record,
        other => panic!("{other:?}"),
    };
    assert!(again.fence > record.fence, "fences grow across a restart that lost them");
}

#[test]
fn killed_mid_build_and_restarted_with_its_data_keeps_holds_and_builds() {
    let mut server = RedisServer::start_persistent();
    let coord = connect(&server, RedisOptions::default());
    let me = Holder::current_process();
    let other = Holder::Token { id: "other".into(), expires_at: now_ms() + 600_000 };
    let new = NewDir { builder: Some(me.clone()), ..scratch(std::path::Path::new("/x/d")) };
    let record = match coord.attach("d", &other, &new).expect("attach") {
        Attached::Held { record, .. } => record,
        other => panic!("{other:?}"),
    };
    server.kill();
    server.restart();
    let after = coord.get("d").ok().flatten().or_else(|| coord.get("d").expect("get"));
    let after = after.expect("kept");
    assert_eq!(after.state, DirState::Building { by: me.clone() });
    assert_eq!(after.holders.len(), 1);
    assert!(coord.finish_build("d", record.fence, &me).expect("finish"), "the build goes on");
    assert_eq!(coord.list().expect("list").len(), 1);
}

#[test]
fn the_agent_renews_holds_while_their_process_lives_then_exits() {
    let server = RedisServer::start();
    let home = tempfile::tempdir().expect("tempdir");
    let agent = RedisOptions {
        agent: HostAgent::Thread,
        home: Some(home.path().to_path_buf()),
        ..options(1000)
    };
    let coord = connect(&server, agent);
    let mut child = std::process::Command::new("sleep").arg("600").spawn().expect("sleep");
    let id = crate::holder::ProcessId::of_pid(child.id()).expect("running");
    let holder = Holder::process(id);
    let folder = home.path().join("a");
    coord.attach("a", &holder, &scratch(&folder)).expect("attach");
    let [_, _, leases, ..] = coord.dir_keys("a");
    let score = |c: &RedisCoordinator| -> Option<i64> {
        let key = holder.key();
        c.with_conn(|conn| redis::cmd("ZSCORE").arg(&leases).arg(&key).query(conn)).expect("zscore")
    };
    let first = score(&coord).expect("a lease");
    // Renewed past its first end: the hold outlives its lease.
    wait_until("the agent renewed the hold", || score(&coord).is_some_and(|s| s > first + 1000));
    let record = coord.get("a").expect("get").expect("record");
    assert_eq!(record.holders.len(), 1, "still held after a lease");

    // The holder dies: the agent releases it and, holding nothing, stops.
    child.kill().expect("kill");
    child.wait().expect("wait");
    wait_until("the agent released the dead holder", || {
        agent::read_registry(&coord).expect("registry").is_empty()
    });
    wait_until("the agent stopped", || {
        coord.thread_agent.lock().expect("lock").as_ref().is_some_and(|h| h.is_finished())
    });
    assert!(coord.peek("a").expect("peek").expect("record").holders.is_empty());
}

#[test]
fn holds_come_back_after_redis_restarts_empty() {
    let mut server = RedisServer::start();
    let home = tempfile::tempdir().expect("tempdir");
    let agent = RedisOptions {
        agent: HostAgent::Thread,
        home: Some(home.path().to_path_buf()),
        ..options(1000)
    };
    let coord = Arc::new(connect(&server, agent));
    let dirs = crate::Dirs::with_coordinator(vec![home.path().join("dirs")], coord.clone());
    let lease = dirs.lease(&crate::dirs::DirSpec::scratch(Some("kept"))).expect("lease");
    std::fs::write(lease.path().join("data"), b"precious").expect("write");
    let [_, _, leases, ..] = coord.dir_keys("kept");
    let key = Holder::current_process().key();
    let score = || -> Option<i64> {
        coord
            .with_conn(|conn| redis::cmd("ZSCORE").arg(&leases).arg(&key).query(conn))
            .expect("zscore")
    };
    let first = score().expect("a lease");
    wait_until("the agent renewed the hold", || score().is_some_and(|s| s > first));
    server.kill();
    server.restart();
    // Nothing in use is deleted: a lost record is not "nobody holds it".
    assert!(dirs.list().expect("list").is_empty());
    assert!(lease.path().join("data").is_file());
    // The host's agent records the hold again, and the directory with it.
    wait_until("the agent recorded the hold again", || {
        coord.get("kept").ok().flatten().is_some_and(|r| r.holders.len() == 1)
    });
    let record = dirs.show("kept").expect("show");
    assert_eq!(record.path, lease.path().display().to_string());
    let path = lease.path().to_path_buf();
    lease.release().expect("release");
    assert!(!path.exists(), "the last release deletes it, as before the restart");
}

/// A Redis Cluster of `n` primaries on loopback ports.
struct RedisCluster {
    nodes: Vec<RedisServer>,
    ports: Vec<u16>,
}

impl RedisCluster {
    fn start(n: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..n {
            // A free port whose cluster bus port (+10000) is free too.
            let port = loop {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let port = l.local_addr().expect("addr").port();
                if port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
                {
                    break port;
                }
            };
            let port_arg = port.to_string();
            nodes.push(RedisServer::start_with(&[
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--appendonly",
                "no",
            ]));
            ports.push(port);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (from redis-tools)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes, ports };
        wait_until("the cluster is ok", || {
            cluster.nodes.iter().all(|n| {
                matches!(n.command(&["CLUSTER", "INFO"]), Ok(redis::Value::BulkString(b))
                    if String::from_utf8_lossy(&b).contains("cluster_state:ok"))
            })
        });
        cluster
    }

    fn urls(&self) -> String {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }
}

#[test]
fn open_picks_the_backend_from_the_coordinator_setting() {
    let home = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start();
    for spec in ["", "sqlite", server.url().as_str()] {
        let backend = crate::coord::open(spec, home.path(), RedisOptions::default()).expect(spec);
        let dirs: Arc<dyn Coordinator> = backend.clone();
        let pools: Arc<dyn PoolCoordinator> = backend;
        assert_eq!(dirs.get("none").expect("get"), None, "{spec}");
        assert_eq!(pools.pools().expect("pools"), PoolState::default(), "{spec}");
        assert_eq!(dirs.lease().is_some(), spec.starts_with("unix:"), "{spec}");
    }
    let Err(err) = crate::coord::open("http://:pw@host/", home.path(), RedisOptions::default())
    else {
        panic!("http:// is not a coordinator")
    };
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("http://:***@host/"), "{err}");
}

/// A recipe whose build takes `seconds` (longer than the tests' leases),
/// then unpacks one file `f` holding `hello`.
fn slow_recipe(work: &std::path::Path, seconds: f64) -> crate::recipe::Recipe {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    archive.append_data(&mut header, "f", &b"hello"[..]).expect("append");
    let tar_path = work.join("a.tar");
    std::fs::write(&tar_path, archive.into_inner().expect("tar")).expect("write");
    let command = format!("exec:sleep {seconds}; cat {}", tar_path.display());
    crate::recipe::Recipe::parse(&[command.as_str(), "tar"]).expect("recipe")
}

#[test]
fn a_builder_renews_its_lease_while_it_builds() {
    let server = RedisServer::start();
    let home = tempfile::tempdir().expect("tempdir");
    // A lease long enough that a loaded machine still renews in time.
    let coord = Arc::new(connect(&server, options(1000)));
    let dirs = crate::Dirs::open_with(home.path(), coord.clone()).expect("dirs");
    let spec = crate::dirs::DirSpec::recipe(slow_recipe(home.path(), 3.0)).named("r");
    let other = Holder::Token { id: "other".into(), expires_at: now_ms() + 600_000 };
    std::thread::scope(|scope| {
        let build = scope.spawn(|| {
            dirs.use_dir(&spec, &Holder::current_process(), &crate::progress::NoProgress)
        });
        // Three leases long, the build is never up for grabs.
        let mut tries = 0;
        while !build.is_finished() {
            if coord.peek("r").expect("peek").is_some() {
                assert_eq!(coord.claim_build("r", &other).expect("claim"), None, "renewed");
                tries += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let record = build.join().expect("thread").expect("built");
        assert_eq!(
            std::fs::read(std::path::Path::new(&record.path).join("f")).expect("f"),
            b"hello"
        );
        assert!(tries > 0);
    });
}

#[test]
fn a_builder_that_lost_its_lease_keeps_nothing_and_says_so() {
    let server = RedisServer::start();
    let home = tempfile::tempdir().expect("tempdir");
    let coord = Arc::new(connect(&server, options(300)));
    let dirs = crate::Dirs::open_with(home.path(), coord.clone()).expect("dirs");
    let spec = crate::dirs::DirSpec::recipe(slow_recipe(home.path(), 2.0)).named("r");
    let other = Holder::Token { id: "other".into(), expires_at: now_ms() + 600_000 };
    std::thread::scope(|scope| {
        let build = scope.spawn(|| {
            dirs.use_dir(&spec, &Holder::current_process(), &crate::progress::NoProgress)
        });
        // As if the builder had been stopped past its lease: its grant runs
        // out, and another takes the build over.
        let [rec, ..] = coord.dir_keys("r");
        let taken = loop {
            if coord.peek("r").expect("peek").is_some() {
                server.command(&["HSET", &rec, "grant_expires", "0"]).expect("hset");
                if let Some(taken) = coord.claim_build("r", &other).expect("claim") {
                    break taken;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let err = build.join().expect("thread").expect_err("taken over");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let message = err.to_string();
        assert!(message.contains("was taken over by another larder process"), "{message}");
        assert!(message.contains("past its lease"), "{message}");
        assert!(!std::path::Path::new(&taken.path).exists(), "nothing put in place");
        let record = coord.get("r").expect("get").expect("record");
        assert_eq!(record.state, DirState::Building { by: other.clone() }, "the new builder's");
    });
}
