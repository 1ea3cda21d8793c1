//! Hosts sharing one Redis coordinator, each a test host of its own
//! (`hosts.rs`: own network, PID and UTS namespaces, own larder home), all
//! pointed at a real `redis-server` listening on the bridge, with a short
//! lease so that a host's death or cut-off shows within seconds.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use larder::testing::RedisServer;

use crate::util::{LARDER, TestDir, wait_for};
use larder::testing::hosts::{FileServer, Host, Network};

/// How long a hold lasts unless its host renews it, in the tests.
const LEASE: &str = "2s";

/// Hosts, their Redis and where their homes are.
struct Cluster {
    net: Network,
    redis: RedisServer,
    url: String,
    t: TestDir,
}

impl Cluster {
    /// `hosts` hosts and a Redis that keeps nothing on disk.
    fn new(hosts: usize) -> Cluster {
        Cluster::with_redis(hosts, &["--appendonly", "no"])
    }

    /// `hosts` hosts and a Redis started with `extra` arguments.
    fn with_redis(hosts: usize, extra: &[&str]) -> Cluster {
        let net = Network::new(hosts);
        let addr = net.service_addr();
        let mut args = vec!["--port", "6379", "--bind", &addr, "--protected-mode", "no"];
        args.extend_from_slice(extra);
        let redis = RedisServer::start_by(&net.service_launcher(), &args);
        let url = format!("redis://{addr}:6379/0");
        Cluster { net, redis, url, t: TestDir::new() }
    }

    fn home(&self, host: &Host) -> PathBuf {
        self.t.path().join(&host.name)
    }

    /// `script` run by bash on `host`, with the binary as `$L` and the
    /// host's own home, pointed at the shared Redis.
    fn bash(&self, host: &Host, script: &str) -> Command {
        let home = self.home(host);
        std::fs::create_dir_all(home.join("user")).expect("mkdir");
        let mut cmd = host.command("bash");
        // Entering the host's mount namespace leaves the working folder
        // behind: the script goes to the project folder itself.
        let script = format!("cd '{}' && {{ {script}\n}}", self.t.work().display());
        cmd.arg("-c")
            .arg(script)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.join("user"))
            .env("LARDER_HOME", home.join("home"))
            .env("LARDER_COORDINATOR", &self.url)
            .env("LARDER_COORDINATOR_LEASE", LEASE)
            .env("L", LARDER);
        cmd
    }

    /// Runs `script` on `host`; its standard output, after checking it
    /// succeeded.
    fn ok(&self, host: &Host, script: &str) -> String {
        let out = self.bash(host, script).output().expect("run on a host");
        assert!(
            out.status.success(),
            "on {}: {script}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn json(&self, host: &Host, script: &str) -> serde_json::Value {
        let out = self.ok(host, script);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// A shell on `host` that runs `script` and prints `ready` once it
    /// held what it takes, then goes on; returned once `ready` came.
    fn spawn_ready(&self, host: &Host, script: &str) -> Child {
        let mut child =
            self.bash(host, script).stdout(Stdio::piped()).spawn().expect("spawn on a host");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "ready", "{script}");
        child
    }
}

/// The directory records as `larder dir ls --json` on `host` lists them.
fn dirs_seen_from(c: &Cluster, host: &Host) -> Vec<serde_json::Value> {
    c.json(host, "$L dir ls --json").as_array().cloned().unwrap_or_default()
}

#[test]
fn a_host_cut_off_loses_its_holds_after_the_lease_and_its_late_release_spares_the_new_directory() {
    let c = Cluster::new(2);
    let (a, b) = (&c.net.hosts[0], &c.net.hosts[1]);
    let go = c.t.path().join("go");
    // A shell on host1 holds `scratch`; after it is told to go on, it
    // releases it and says how that went.
    let holder = c.spawn_ready(
        a,
        &format!(
            "$L use --name scratch >/dev/null && echo ready && \
             while [ ! -e {go} ]; do sleep 0.1; done; \
             $L unuse --name scratch; echo \"unuse: $?\"",
            go = go.display()
        ),
    );
    // host2 sees host1's holder, named by its host.
    let seen = dirs_seen_from(&c, b);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["holders"][0]["holder"]["host"], "host1", "{seen:?}");
    let listed = c.ok(b, "$L dir ls");
    assert!(listed.contains("1 (host1)"), "{listed}");

    // Cut off, host1 cannot renew: host2 sees the hold end after the lease,
    // and nobody holding it, the directory goes.
    a.cut_off();
    wait_for("host1's hold to expire", || dirs_seen_from(&c, b).is_empty());
    // host2 makes a directory of that name anew.
    c.ok(b, "$L use --name scratch --holder on-host2 >/dev/null");
    let generation = dirs_seen_from(&c, b)[0]["generation"].clone();

    // host1 comes back and its shell releases what it held: the new
    // directory, which host2 holds, is left alone.
    a.reconnect();
    std::fs::write(&go, "").expect("go");
    let out = holder.wait_with_output().expect("wait");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("unuse: "), "{said}");
    let after = dirs_seen_from(&c, b);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["generation"], generation, "{after:?}");
    assert_eq!(after[0]["holders"][0]["holder"]["id"], "on-host2", "{after:?}");
}

/// Gives every host of `c` the write-through remote `shared`: a folder
/// all of them reach (an NFS mount, as it were).
fn shared_remote(c: &Cluster) -> PathBuf {
    let remote = c.t.path().join("remote");
    std::fs::create_dir_all(&remote).expect("mkdir");
    for host in &c.net.hosts {
        let config = c.home(host).join("user/.config/larder/config.toml");
        std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
        let toml = format!(
            "[[remote]]\nname = \"shared\"\nurl = \"file://{}\"\nmode = \"write-through\"\n",
            remote.display()
        );
        std::fs::write(config, toml).expect("config");
    }
    remote
}

#[test]
fn a_directory_held_on_two_hosts_has_a_copy_on_each_and_goes_everywhere_when_both_let_go() {
    let c = Cluster::new(2);
    let (a, b) = (&c.net.hosts[0], &c.net.hosts[1]);
    shared_remote(&c);
    let go = c.t.path().join("go");
    // A shell on host1 makes `results`, writes into it, pushes it, and
    // holds it until told to go on.
    let holder = c.spawn_ready(
        a,
        &format!(
            "d=$($L use --name results) && echo computed > \"$d/out\" && \
             $L dir push results >/dev/null && echo ready && \
             while [ ! -e {go} ]; do sleep 0.1; done; $L unuse --name results",
            go = go.display()
        ),
    );
    let on_a = c.ok(a, "$L dir show results --json");
    let on_a: serde_json::Value = serde_json::from_str(&on_a).expect("json");
    let path_a = PathBuf::from(on_a["path"].as_str().expect("path"));

    // host2 uses the same name: its own copy, restored from the remote.
    let path_b = c.ok(b, "$L use --name results --holder on-b");
    let path_b = PathBuf::from(path_b.trim());
    assert_ne!(path_a, path_b, "each host keeps its own copy");
    assert!(path_b.starts_with(c.home(b)), "{path_b:?}");
    assert_eq!(std::fs::read_to_string(path_b.join("out")).expect("restored"), "computed\n");
    let shown: serde_json::Value =
        serde_json::from_str(&c.ok(b, "$L dir show results --json")).expect("json");
    let copies = shown["copies"].as_object().expect("copies");
    assert_eq!(copies.len(), 2, "{shown}");
    assert_eq!(copies["host1"], path_a.display().to_string());
    assert_eq!(copies["host2"], path_b.display().to_string());
    assert_eq!(shown["holders"].as_array().map(Vec::len), Some(2), "one count for both hosts");

    // host1 lets go: host2 still holds it, so every copy stays.
    std::fs::write(&go, "").expect("go");
    assert!(holder.wait_with_output().expect("wait").status.success());
    assert!(path_a.join("out").exists() && path_b.join("out").exists());

    // host2 lets go, the last holder anywhere: its copy and the remote copy
    // go now, host1's on host1's next look.
    c.ok(b, "$L unuse --name results --holder on-b");
    assert!(!path_b.exists(), "the deleting host's copy goes at once");
    assert!(dirs_seen_from(&c, b).is_empty());
    let restore = c.bash(b, "$L use --name results --from-remote shared").output().expect("run");
    let said = String::from_utf8_lossy(&restore.stderr);
    assert!(!restore.status.success() && said.contains("no directory results"), "{said}");
    wait_for("host1's copy to go on its next look", || {
        c.ok(a, "$L dir ls >/dev/null");
        !path_a.exists()
    });
}

/// An origin every host reaches, serving `dir` at 64 KiB per `pause`
/// seconds (0: at full speed).
fn origin(c: &Cluster, dir: &std::path::Path, pause: f64) -> FileServer {
    c.net.file_server(dir, pause, &c.t.path().join("origin.log"))
}

#[test]
fn three_hosts_of_eight_processes_using_one_recipe_download_it_from_its_origin_once() {
    let c = Cluster::new(3);
    shared_remote(&c);
    let (files, sha) = origin_files(&c);
    let content = c.t.path().join("content");
    let origin = origin(&c, &files, 0.0);
    let go = c.t.path().join("go");
    // Eight processes on each host at once, each holding the directory
    // until told to go on, so that all of them hold it together.
    let children: Vec<(String, Child)> = c
        .net
        .hosts
        .iter()
        .flat_map(|host| (0..8).map(move |i| (host, i)))
        .map(|(host, i)| {
            let script = format!(
                "$L use --name data {url}/data.tar sha256:{sha} tar -- sh -c \
                 'cat \"$LARDER_DIR/hello\"; cmp -s \"$LARDER_DIR/data.bin\" {data} && echo same; \
                  while [ ! -e {go} ]; do sleep 0.1; done'",
                url = origin.url,
                data = content.join("data.bin").display(),
                go = go.display()
            );
            let child = c.bash(host, &script).stdout(Stdio::piped()).spawn().expect("spawn");
            (format!("{} #{i}", host.name), child)
        })
        .collect();
    // Each says what it found once it holds the directory, complete.
    let mut children: Vec<(String, Child, String)> = children
        .into_iter()
        .map(|(who, mut child)| {
            let mut out = BufReader::new(child.stdout.take().expect("stdout"));
            let mut said = String::new();
            for _ in 0..2 {
                out.read_line(&mut said).expect("read");
            }
            (who, child, said)
        })
        .collect();
    let shown: serde_json::Value =
        serde_json::from_str(&c.ok(&c.net.hosts[1], "$L dir show data --json")).expect("json");
    assert_eq!(shown["holders"].as_array().map(Vec::len), Some(24), "{shown}");
    assert_eq!(shown["copies"].as_object().map(|o| o.len()), Some(3), "a copy on each host");
    std::fs::write(&go, "").expect("go");
    for (who, child, said) in children.drain(..) {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{who}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(said, "hello from the origin\nsame\n", "{who}");
    }
    assert_eq!(origin.gets("/data.tar"), 1, "one origin download for 24 processes on 3 hosts");
}

/// A folder to serve holding `data.tar` (a 2 MiB file and `hello`), and
/// the tar's sha256.
fn origin_files(c: &Cluster) -> (PathBuf, String) {
    let files = c.t.path().join("origin");
    let content = c.t.path().join("content");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::create_dir_all(&content).expect("mkdir");
    std::fs::write(content.join("data.bin"), crate::util::bytes(7, 2 << 20)).expect("write");
    std::fs::write(content.join("hello"), "hello from the origin\n").expect("write");
    let tar = files.join("data.tar");
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&content)
        .args(["data.bin", "hello"])
        .status()
        .expect("tar");
    assert!(made.success());
    let sha = crate::util::digest_of(&std::fs::read(&tar).expect("tar"));
    (files, sha.trim_start_matches("sha256:").to_string())
}

#[test]
fn a_builders_host_killed_mid_download_is_taken_over_by_a_waiter_on_another_host() {
    let mut c = Cluster::new(2);
    let (files, sha) = origin_files(&c);
    // 2 MiB at 512 KiB/s: four seconds of download to die in.
    let origin = origin(&c, &files, 0.125);
    let use_data = format!(
        "$L use --name data {}/data.tar sha256:{sha} tar -- sh -c 'cat \"$LARDER_DIR/hello\"'",
        origin.url
    );
    let builder = c.bash(&c.net.hosts[0], &use_data).spawn().expect("spawn");
    wait_for("host1 to start downloading", || origin.gets("/data.tar") == 1);
    let waiter = c
        .bash(&c.net.hosts[1], &format!("{use_data} 2>&1"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for("host2 to wait for host1's build", || {
        let shown = c.ok(&c.net.hosts[1], "$L dir show data --json");
        shown.contains("host1") && shown.contains("\"building\"")
    });
    // host1 loses power mid-download: host2 takes the build over once
    // host1's lease runs out, downloads it again and uses it.
    c.net.hosts[0].kill();
    let out = waiter.wait_with_output().expect("wait");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("hello from the origin"), "{said}");
    assert!(said.contains("host1") && said.contains("building it here"), "{said}");
    drop(builder);
    assert_eq!(origin.gets("/data.tar"), 2, "the dead builder's download and the new one");
    let shown: serde_json::Value =
        serde_json::from_str(&c.ok(&c.net.hosts[1], "$L dir ls --json")).expect("json");
    assert_eq!(shown, serde_json::json!([]), "the last holder's end deleted it");
}

#[test]
fn a_builder_stopped_past_its_lease_finds_its_late_finish_refused_after_sigcont() {
    let c = Cluster::new(2);
    let (a, b) = (&c.net.hosts[0], &c.net.hosts[1]);
    let (files, sha) = origin_files(&c);
    let origin = origin(&c, &files, 0.125);
    let recipe = format!("{}/data.tar sha256:{sha} tar", origin.url);
    let pid_file = c.t.path().join("builder.pid");
    // host1's builder runs in the background so that its pid is known on
    // its host; the shell says how it ended.
    let builder = c
        .bash(
            a,
            &format!(
                "$L use --name data {recipe} -- true 2>&1 & echo $! > {pid}; wait $!; echo \"exit: $?\"",
                pid = pid_file.display()
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for("host1 to start downloading", || origin.gets("/data.tar") == 1);
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    c.ok(a, &format!("kill -STOP {}", pid.trim()));
    // Frozen, host1's builder stops renewing its grant: host2 takes the
    // build over after the lease.
    let path_b = c.ok(b, &format!("$L use --name data {recipe} --holder on-b"));
    let path_b = PathBuf::from(path_b.trim());
    assert_eq!(
        std::fs::read_to_string(path_b.join("hello")).expect("built"),
        "hello from the origin\n"
    );
    assert_eq!(origin.gets("/data.tar"), 2);
    // Woken, host1's builder finishes its download, and its finish is refused.
    c.ok(a, &format!("kill -CONT {}", pid.trim()));
    let out = builder.wait_with_output().expect("wait");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("was taken over by another larder process"), "{said}");
    assert!(said.contains("exit: 2"), "{said}");
    // What host2 built stands: ready, host2's copy the only one, intact.
    let shown: serde_json::Value =
        serde_json::from_str(&c.ok(b, "$L dir show data --json")).expect("json");
    assert_eq!(shown["state"], "ready", "{shown}");
    assert_eq!(shown["copies"], serde_json::json!({"host2": path_b.display().to_string()}));
    assert_eq!(
        std::fs::read_to_string(path_b.join("hello")).expect("kept"),
        "hello from the origin\n"
    );
    c.ok(b, "$L unuse --name data --holder on-b");
    assert!(!path_b.exists());
}

#[test]
fn a_redis_paused_past_the_lease_takes_no_build_over() {
    let c = Cluster::new(2);
    let (a, b) = (&c.net.hosts[0], &c.net.hosts[1]);
    shared_remote(&c);
    let (files, sha) = origin_files(&c);
    let origin = origin(&c, &files, 0.125);
    let use_data = format!(
        "$L use --name data {}/data.tar sha256:{sha} tar -- sh -c 'cat \"$LARDER_DIR/hello\"' 2>&1",
        origin.url
    );
    let builder = c.bash(a, &use_data).stdout(Stdio::piped()).spawn().expect("spawn");
    wait_for("host1 to start downloading", || origin.gets("/data.tar") == 1);
    let waiter = c.bash(b, &use_data).stdout(Stdio::piped()).spawn().expect("spawn");
    wait_for("host2 to wait for host1's build", || {
        let shown = c.ok(b, "$L dir show data --json");
        shown.contains("host1") && shown.contains("\"building\"")
    });
    // Every client, the builder's renewals and the waiter's claims alike,
    // waits out a pause twice the lease: the builder keeps its build.
    c.redis.command(&["CLIENT", "PAUSE", "4000", "ALL"]).expect("pause");
    for (who, child) in [("host1", builder), ("host2", waiter)] {
        let out = child.wait_with_output().expect("wait");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{who}: {said}");
        assert!(said.contains("hello from the origin"), "{who}: {said}");
        assert!(
            !said.contains("building it here") && !said.contains("taken over"),
            "{who}: {said}"
        );
    }
    assert_eq!(origin.gets("/data.tar"), 1, "one download: nothing was taken over");
}

/// A shell on `host` that holds the scratch directory `name`, writes
/// `file` into it, says `ready` and holds it until `go` exists; then it
/// lets go and says how that went.
fn holding_shell(c: &Cluster, host: &Host, name: &str, file: &str, go: &std::path::Path) -> Child {
    c.spawn_ready(
        host,
        &format!(
            "d=$($L use --name {name}) && echo kept > \"$d/{file}\" && echo ready && \
             while [ ! -e {go} ]; do sleep 0.1; done; $L unuse --name {name}; echo \"unuse: $?\"",
            go = go.display()
        ),
    )
}

/// The copies of `name` as `host` sees them (host name → path).
fn copies_seen_from(c: &Cluster, host: &Host, name: &str) -> serde_json::Value {
    let shown = c.bash(host, &format!("$L dir show {name} --json")).output().expect("run");
    serde_json::from_slice::<serde_json::Value>(&shown.stdout)
        .map(|v| v["copies"].clone())
        .unwrap_or_default()
}

/// Both hosts hold `kept`, each with a file in its copy; Redis is killed
/// (SIGKILL) and started again. Returns the shells, the copies before and
/// the go file.
fn kept_on_two_hosts_through_a_redis_crash(
    c: &mut Cluster,
) -> (Vec<Child>, serde_json::Value, PathBuf) {
    let go = c.t.path().join("go");
    let shells = vec![
        holding_shell(c, &c.net.hosts[0], "kept", "from-host1", &go),
        holding_shell(c, &c.net.hosts[1], "kept", "from-host2", &go),
    ];
    let copies = copies_seen_from(c, &c.net.hosts[1], "kept");
    assert_eq!(copies.as_object().map(|o| o.len()), Some(2), "{copies}");
    // Copies older than a lease are those a look may take for orphans.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    c.redis.kill();
    c.redis.restart();
    (shells, copies, go)
}

/// Every copy in `copies` still has the file its host wrote.
fn assert_copies_intact(copies: &serde_json::Value) {
    for (host, path) in copies.as_object().expect("copies") {
        let file = PathBuf::from(path.as_str().expect("path")).join(format!("from-{host}"));
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "kept\n", "{host}");
    }
}

/// Lets the shells go; each let go of the directory without an error.
fn let_go(shells: Vec<Child>, go: &std::path::Path) {
    std::fs::write(go, "").expect("go");
    for shell in shells {
        let out = shell.wait_with_output().expect("wait");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("unuse: 0"), "{said}");
    }
}

#[test]
fn redis_killed_and_restarted_empty_deletes_nothing_in_use_and_live_holds_come_back() {
    let mut c = Cluster::new(2);
    let (shells, copies, go) = kept_on_two_hosts_through_a_redis_crash(&mut c);
    // Redis forgot everything: no host reads that as "nobody holds it", and
    // each host's agent records its holds again, with its copy.
    wait_for("both hosts' holds to come back", || {
        dirs_seen_from(&c, &c.net.hosts[1])
            .first()
            .and_then(|d| d["holders"].as_array().map(Vec::len))
            == Some(2)
    });
    wait_for("both copies to be recorded again", || {
        copies_seen_from(&c, &c.net.hosts[0], "kept") == copies
    });
    assert_copies_intact(&copies);
    // As before the crash, the last to let go deletes it everywhere.
    let_go(shells, &go);
    assert!(dirs_seen_from(&c, &c.net.hosts[0]).is_empty());
    wait_for("every copy to go", || {
        c.net.hosts.iter().for_each(|h| drop(c.ok(h, "$L dir ls >/dev/null")));
        copies
            .as_object()
            .expect("copies")
            .values()
            .all(|p| !std::path::Path::new(p.as_str().expect("path")).exists())
    });
}

#[test]
fn redis_killed_and_restarted_with_its_data_keeps_every_hold() {
    let mut c = Cluster::with_redis(2, &["--appendonly", "yes", "--appendfsync", "always"]);
    c.ok(&c.net.hosts[1], "$L use --name kept --holder a-token >/dev/null");
    let (shells, copies, go) = kept_on_two_hosts_through_a_redis_crash(&mut c);
    let seen = dirs_seen_from(&c, &c.net.hosts[0]);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["holders"].as_array().map(Vec::len), Some(3), "{seen:?}");
    assert_eq!(seen[0]["copies"], copies);
    assert_copies_intact(&copies);
    let_go(shells, &go);
    let seen = dirs_seen_from(&c, &c.net.hosts[0]);
    assert_eq!(seen[0]["holders"][0]["holder"]["id"], "a-token", "{seen:?}");
}

/// A command source `vm` with at most `maximum` instances, each a folder
/// under `machines/`, defined in the project every host works in.
fn vm_source(c: &Cluster, maximum: u32) -> PathBuf {
    let machines = c.t.path().join("machines");
    std::fs::create_dir_all(&machines).expect("mkdir");
    let m = machines.display();
    c.t.file(
        "work/.larder/sources/vm/source.conf",
        format!(
            "[DEFAULT]\ntype=command\nprovision=mkdir \"{m}/$INSTANCE\"\n\
             run=cd \"{m}/$INSTANCE\" && \"$@\"\ndiscard=rm -rf \"{m}/$INSTANCE\"\n\
             maximum={maximum}\n"
        ),
    );
    machines
}

#[test]
fn hosts_racing_for_a_pools_last_instance_never_exceed_its_maximum() {
    let c = Cluster::new(3);
    vm_source(&c, 1);
    // Four acquires on each of three hosts at once: exactly one gets it.
    let racers: Vec<Child> = c
        .net
        .hosts
        .iter()
        .flat_map(|h| (0..4).map(move |i| (h, i)))
        .map(|(h, i)| {
            c.bash(h, &format!("$L pool acquire -s vm --holder {}-{i}", h.name))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut got = Vec::new();
    for racer in racers {
        let out = racer.wait_with_output().expect("wait");
        if out.status.success() {
            got.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("at most 1"), "{err}");
        }
    }
    assert_eq!(got.len(), 1, "{got:?}");
    // Released on another host than the one that took it.
    let b = &c.net.hosts[1];
    c.ok(b, &format!("$L pool release {}", got[0]));
    let got = c.ok(b, "$L pool acquire -s vm --holder again");
    assert!(!got.trim().is_empty());
}

/// The instances `larder pool status -a --json` on `host` lists.
fn instances_seen_from(c: &Cluster, host: &Host) -> Vec<serde_json::Value> {
    c.json(host, "$L pool status -a --json")["instances"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_instance_held_on_one_host_is_in_use_everywhere_until_its_host_dies() {
    let mut c = Cluster::new(2);
    vm_source(&c, 1);
    // A script on host1 holds the pool's one instance.
    let mut holder = c.spawn_ready(
        &c.net.hosts[0],
        "$L pool acquire -s vm >/dev/null && echo ready && sleep 600",
    );
    let b = &c.net.hosts[1];
    // Past a whole lease, host1's agent has renewed it: host2 sees it in use,
    // held on host1, and cannot take it.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let seen = instances_seen_from(&c, b);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["state"], "in-use", "{seen:?}");
    assert!(seen[0]["holder"].as_str().is_some_and(|h| h.contains("host1")), "{seen:?}");
    let out = c.bash(b, "$L pool acquire -s vm --holder b").output().expect("run");
    assert!(!out.status.success(), "host2 took an instance held on host1");
    // host1 dies: after the lease its instance is back, and host2 gets it.
    c.net.hosts[0].kill();
    let _ = holder.wait();
    let b = &c.net.hosts[1];
    wait_for("host1's instance to come back", || {
        c.bash(b, "$L pool acquire -s vm --holder b").output().expect("run").status.success()
    });
    let seen = instances_seen_from(&c, b);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["holder"], "token b", "{seen:?}");
}
