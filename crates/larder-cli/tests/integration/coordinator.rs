//! Coordination through a real Redis: the host agent that larder starts
//! detached to renew this host's leases.

use std::path::Path;
use std::time::{Duration, Instant};

use larder::coord::{
    Coordinator, Holder, HostAgent, NewDir, RedisCoordinator, RedisOptions, now_ms,
};
use larder::holder::ProcessId;
use larder::testing::RedisServer;

use crate::util::{LARDER, TestDir};

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of `larder coordinator-agent` processes of the home `home`.
fn agents_of(home: &Path) -> Vec<u32> {
    let wanted = format!("LARDER_HOME={}", home.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let is_agent = cmdline.split(|&b| b == 0).any(|a| a == b"coordinator-agent");
        let of_home = environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes());
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')));
        if is_agent && of_home && !zombie {
            found.push(pid);
        }
    }
    found
}

/// When the lease of `holder`'s hold on `a` ends (server time, ms).
fn lease_end(server: &RedisServer, holder: &Holder) -> Option<i64> {
    server.query(&["ZSCORE", "larder:{dir:a}:leases", &holder.key()]).expect("zscore")
}

#[test]
fn the_host_agent_starts_detached_renews_holds_and_exits_when_nothing_is_held() {
    let t = TestDir::new();
    std::fs::create_dir_all(&t.home).expect("home");
    let server = RedisServer::start();
    let options = RedisOptions {
        lease: Duration::from_millis(300),
        home: Some(t.home.clone()),
        agent: HostAgent::Command(vec![LARDER.into(), "coordinator-agent".into()]),
        ..RedisOptions::default()
    };
    let coord = RedisCoordinator::connect(&server.url(), options.clone()).expect("connect");
    let mut shell = std::process::Command::new("sleep").arg("600").spawn().expect("sleep");
    let holder = Holder::process(ProcessId::of_pid(shell.id()).expect("running"));
    let new = NewDir { path: t.path().join("a").display().to_string(), ..NewDir::default() };
    coord.attach("a", &holder, &new).expect("attach");
    let first = lease_end(&server, &holder).expect("a lease");

    // Holding something, this host gets one agent, which renews the hold.
    wait_until("an agent runs", || agents_of(&t.home).len() == 1);
    wait_until("the agent renewed the hold", || {
        lease_end(&server, &holder).is_some_and(|end| end > first + 300)
    });
    // Another hold finds the agent running and starts no other.
    let token = Holder::Token { id: "t".into(), expires_at: now_ms() + 600_000 };
    coord.attach("a", &token, &new).expect("attach");
    assert_eq!(agents_of(&t.home).len(), 1);

    // An agent killed while its host holds something is started again by
    // the next larder process of this host that reaches the coordinator.
    let killed = agents_of(&t.home)[0];
    std::process::Command::new("kill").args(["-9", &killed.to_string()]).status().expect("kill");
    wait_until("the agent died", || !agents_of(&t.home).contains(&killed));
    let again = RedisCoordinator::connect(&server.url(), options.clone()).expect("connect");
    wait_until("another agent runs", || agents_of(&t.home).len() == 1);
    drop(again);

    // The holder dies: the agent releases its hold and, with nothing of
    // this host held, exits.
    shell.kill().expect("kill");
    shell.wait().expect("wait");
    wait_until("the agent exited", || agents_of(&t.home).is_empty());
    let record = coord.get("a").expect("get").expect("record");
    assert_eq!(record.holders.len(), 1, "only the token holds it: {:?}", record.holders);
}
