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
        let mut cmd = Command::new(LARDER);
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

fn main() {
    let n = if full_scale() { 200 } else { 5 };
    let tmp = tempfile::Builder::new()
        .prefix("larder-bench-coordinator.")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
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
    println!();
    table.print();
}
