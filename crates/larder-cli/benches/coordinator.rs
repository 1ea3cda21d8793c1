//! Benchmark of the coordinators with the real `larder` binary: the same
//! commands with the home's SQLite database and with a real `redis-server`
//! (on its unix socket, `coordinator = unix://…`), measured in the same run:
//!
//! - `larder use --name d` + `larder unuse --name d` round trips per second
//!   on a scratch directory that exists (a named holder keeps it), Redis
//!   beside SQLite;
//! - `larder pool acquire` + `larder pool release` of a cached instance (a
//!   `local` source with `reserve=1`) per second, Redis beside SQLite.
//!
//! - the same `use` + `unuse` from three test hosts at once (network
//!   namespaces on a bridge where Redis listens, as `larder::testing::hosts`
//!   makes them), beside three processes at once on one host with SQLite;
//! - three hosts of eight processes each using one recipe (a 200 MB tar
//!   from an origin on the bridge, shared through a `file://` remote) beside
//!   one process on one host: the wall time's ratio and the downloads the
//!   origin served.
//!
//! The three-host cases need root (network namespaces); without it they are
//! skipped, saying so.
//!
//! With Redis, the first hold of the host starts its lease agent (`larder
//! coordinator-agent`, detached), which then renews in the background while
//! the round trips run, as it would on a build machine.
//!
//! ```text
//! cargo bench --bench coordinator                  full counts
//! cargo test -p larder-cli --bench coordinator     tiny counts: a smoke test
//! ```
//!
//! `ratio` is Redis's rate over SQLite's, so below 1 means Redis manages
//! fewer. Rates are printed, never asserted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use larder::testing::RedisServer;
use larder::testing::hosts::{Host, Network};

mod common;

use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");

/// One larder installation: its own home, user folder and work folder, with
/// the given coordinator (empty for SQLite).
struct Setup {
    root: PathBuf,
    coordinator: String,
}

impl Setup {
    fn new(root: &Path, coordinator: String) -> Setup {
        for sub in ["user", "work/.larder/sources/local"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        std::fs::write(
            root.join("work/.larder/sources/local/source.conf"),
            "[DEFAULT]\ntype=local\nreserve=1\n",
        )
        .expect("conf");
        Setup { root: root.to_path_buf(), coordinator }
    }

    fn larder(&self) -> Command {
        self.command(LARDER)
    }

    /// `program` run with this installation's home and settings.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LARDER_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("LARDER_HOME", self.root.join("home"))
            .env("HOME", self.root.join("user"))
            .env("XDG_CONFIG_HOME", self.root.join("user/.config"))
            .current_dir(self.root.join("work"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !self.coordinator.is_empty() {
            cmd.env("LARDER_COORDINATOR", &self.coordinator);
        }
        cmd
    }

    fn ok(&self, args: &[&str]) {
        let status = self.larder().args(args).status().expect("run larder");
        assert!(status.success(), "larder {} failed", args.join(" "));
    }
}

/// Round trips per second of `f`, the median of 3 rounds of `n`.
fn per_second(n: usize, mut f: impl FnMut()) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        rounds.push(n as f64 / start.elapsed().as_secs_f64());
    }
    median(&rounds)
}

fn use_unuse(setup: &Setup, n: usize) -> f64 {
    setup.ok(&["use", "--name", "d", "--holder", "bench"]);
    let rate = per_second(n, || {
        setup.ok(&["use", "--name", "d"]);
        setup.ok(&["unuse", "--name", "d"]);
    });
    setup.ok(&["unuse", "--name", "d", "--holder", "bench"]);
    rate
}

fn acquire_release(setup: &Setup, n: usize) -> f64 {
    setup.ok(&["pool", "acquire"]);
    setup.ok(&["pool", "release", "local"]);
    per_second(n, || {
        setup.ok(&["pool", "acquire"]);
        setup.ok(&["pool", "release", "local"]);
    })
}

/// `n` `use` + `unuse` round trips by each of three processes at once;
/// returns all of them per second. `run(i)` starts process `i`'s loop.
fn at_once(n: usize, run: impl Fn(usize) -> std::process::Child) -> f64 {
    let start = Instant::now();
    let children: Vec<_> = (0..3).map(run).collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    (3 * n) as f64 / start.elapsed().as_secs_f64()
}

/// The loop of `n` round trips a script runs, holding `d` as itself.
fn loop_script(n: usize) -> String {
    format!(
        "for i in $(seq {n}); do \"$L\" use --name d >/dev/null && \"$L\" unuse --name d || exit 1; done"
    )
}

/// Three test hosts pointed at one Redis on their bridge, each with its
/// own home under `root` and the write-through remote `shared` (a folder
/// all of them reach).
struct Hosts {
    net: Network,
    _redis: RedisServer,
    url: String,
    root: PathBuf,
}

impl Hosts {
    fn new(root: &Path) -> Hosts {
        let net = Network::new(3);
        let addr = net.service_addr();
        let redis = RedisServer::start_by(
            &net.service_launcher(),
            &["--port", "6379", "--bind", &addr, "--protected-mode", "no"],
        );
        let url = format!("redis://{addr}:6379/0");
        Hosts { net, _redis: redis, url, root: root.to_path_buf() }
    }

    /// Gives every host a fresh home named `tag`, with the remote `remote`.
    fn homes(&self, tag: &str, remote: &Path) {
        std::fs::create_dir_all(remote).expect("mkdir");
        for host in &self.net.hosts {
            let config = self.root.join(tag).join(&host.name).join("user/.config/larder");
            std::fs::create_dir_all(&config).expect("mkdir");
            std::fs::write(
                config.join("config.toml"),
                format!("[[remote]]\nname = \"shared\"\nurl = \"file://{}\"\n", remote.display()),
            )
            .expect("config");
        }
    }

    /// `script` run by bash on `host` in its home `tag`.
    fn bash(&self, host: &Host, tag: &str, script: &str) -> Command {
        let base = self.root.join(tag).join(&host.name);
        let mut cmd = host.command("bash");
        cmd.arg("-c")
            .arg(format!("cd '{}' && {{ {script}\n}}", base.display()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", base.join("user"))
            .env("LARDER_HOME", base.join("home"))
            .env("LARDER_COORDINATOR", &self.url)
            .env("L", LARDER)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }
}

/// The three-host cases, as table rows.
fn three_hosts(root: &Path, n: usize, table: &mut Table, sqlite: &Setup) {
    let hosts = Hosts::new(root);
    hosts.homes("rt", &root.join("remote-rt"));
    let first = &hosts.net.hosts[0];
    let keep = hosts.bash(first, "rt", "\"$L\" use --name d --holder bench >/dev/null").status();
    assert!(keep.expect("run").success());
    let redis = at_once(n, |i| {
        hosts.bash(&hosts.net.hosts[i], "rt", &loop_script(n)).spawn().expect("spawn")
    });
    sqlite.ok(&["use", "--name", "d", "--holder", "bench"]);
    let local = at_once(n, |_| {
        let mut bash = sqlite.command("bash");
        bash.arg("-c").arg(loop_script(n)).env("L", LARDER).stderr(Stdio::piped());
        bash.spawn().expect("spawn")
    });
    sqlite.ok(&["unuse", "--name", "d", "--holder", "bench"]);
    table.row(
        "use + unuse, 3 at once".into(),
        format!("redis, 3 hosts {redis:.0}/s"),
        format!("sqlite, 1 host {local:.0}/s"),
        ratio(redis, local),
    );

    // One recipe: one process on one host, then 3 hosts × 8 processes.
    let size = if full_scale() { 200 * MIB } else { 4 * MIB };
    let origin_dir = root.join("origin");
    std::fs::create_dir_all(&origin_dir).expect("mkdir");
    let content = root.join("content");
    std::fs::create_dir_all(&content).expect("mkdir");
    write_random(&content.join("data.bin"), size, 7);
    let tar = origin_dir.join("data.tar");
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&content)
        .arg("data.bin")
        .status()
        .expect("tar");
    assert!(made.success());
    let sha = sha256_hex(&tar);
    // The origin on the bridge at full speed, then at 50 MiB/s, as an
    // origin across the internet is slower than a remote tier nearby.
    for (pace, pause) in [("origin at full speed", 0.0), ("origin at 50 MiB/s", 0.00125)] {
        let log = root.join(format!("origin-{pause}.log"));
        let origin = hosts.net.file_server(&origin_dir, pause, &log);
        let script =
            format!("\"$L\" use --name data {}/data.tar sha256:{sha} tar -- true", origin.url);
        let timed = |tag: &str, per_host: usize, host_count: usize| -> f64 {
            let tag = format!("{tag}-{pause}");
            hosts.homes(&tag, &root.join(format!("remote-{tag}")));
            settle();
            let start = Instant::now();
            let children: Vec<_> = hosts.net.hosts[..host_count]
                .iter()
                .flat_map(|h| (0..per_host).map(move |_| h))
                .map(|h| hosts.bash(h, &tag, &script).spawn().expect("spawn"))
                .collect();
            for child in children {
                let out = child.wait_with_output().expect("wait");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            start.elapsed().as_secs_f64()
        };
        let one = timed("one", 1, 1);
        let before = origin.gets("/data.tar");
        let many = timed("many", 8, 3);
        let downloads = origin.gets("/data.tar") - before;
        table.row(
            format!("use of a {} recipe, {pace}", self::size(size)),
            format!("3 hosts x 8 {}, {downloads} download(s)", secs(many)),
            format!("1 process {}", secs(one)),
            format!("{:.2}x time", many / one),
        );
        // The next origin listens on the same port.
        drop(origin);
    }
}

/// The sha256 of `path` in hex.
fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

fn main() {
    let n = if full_scale() { 200 } else { 5 };
    let tmp = bench_folder();
    let server = RedisServer::start();
    let sqlite = Setup::new(&tmp.path().join("sqlite"), String::new());
    let redis = Setup::new(&tmp.path().join("redis"), server.url());
    println!("larder coordinator benchmark, {n} round trips per round, median of 3 rounds");
    println!("  binary: {LARDER}");
    println!("  redis:  {}", server.url());
    println!("  ratio = Redis / SQLite");
    println!();
    let mut table = Table::default();
    let (s, r) = (use_unuse(&sqlite, n), use_unuse(&redis, n));
    table.row(
        "use + unuse, existing directory".into(),
        format!("redis {r:.0}/s"),
        format!("sqlite {s:.0}/s"),
        ratio(r, s),
    );
    let (s, r) = (acquire_release(&sqlite, n), acquire_release(&redis, n));
    table.row(
        "pool acquire + release, cached".into(),
        format!("redis {r:.0}/s"),
        format!("sqlite {s:.0}/s"),
        ratio(r, s),
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        three_hosts(tmp.path(), n, &mut table, &sqlite);
    } else {
        println!("three-host cases skipped: they make network namespaces, which needs root");
    }
    println!();
    table.print();
}
