//! Benchmark of compute pools with the real `larder` binary:
//!
//! - `larder pool acquire` + `larder pool release` of a cached instance (a
//!   `local` source with `reserve=1`), per second, beside two starts of the
//!   binary that do nothing (`larder --version`), the floor for two commands;
//! - `larder pool run -s HOST -- true` on an ssh source against a real sshd on
//!   loopback, beside plain `ssh HOST true` (a new connection each time, as
//!   crcache ran it), so the ratio is what larder adds or saves (it shares
//!   one connection per host);
//! - `larder pool run -s local -- true` beside running `true` directly.
//!
//! ```text
//! cargo bench --bench pool                  full counts
//! cargo test -p larder-cli --bench pool     tiny counts: a smoke test
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/sshd.rs"]
mod sshd;

use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");

fn larder(root: &Path) -> Command {
    let mut cmd = Command::new(LARDER);
    cmd.env("LARDER_HOME", root.join("home"))
        .env("HOME", root.join("user"))
        .current_dir(root.join("work"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

fn ok(cmd: &mut Command) {
    let status = cmd.status().expect("run");
    assert!(status.success(), "{cmd:?} failed");
}

/// Seconds per run of `f`, the median of 3 rounds of `n` runs.
fn per_run(n: usize, mut f: impl FnMut()) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        rounds.push(start.elapsed().as_secs_f64() / n as f64);
    }
    median(&rounds)
}

fn main() {
    let n = if full_scale() { 200 } else { 5 };
    let root = tempfile::Builder::new().prefix("larder-bench-pool").tempdir().expect("tempdir");
    let root = root.path();
    for sub in ["user", "work"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    let sources = root.join("work/.larder/sources");
    std::fs::create_dir_all(sources.join("local")).expect("mkdir");
    std::fs::write(sources.join("local/source.conf"), "[DEFAULT]\ntype=local\nreserve=1\n")
        .expect("conf");
    let sshd = sshd::Sshd::start(&root.join("sshd"));
    std::fs::create_dir_all(sources.join("host")).expect("mkdir");
    std::fs::write(
        sources.join("host/source.conf"),
        format!(
            "[DEFAULT]\ntype=ssh\nssh_host={}\nssh_config={}\n",
            sshd.alias,
            sshd.config.display()
        ),
    )
    .expect("conf");
    println!("larder pool benchmark, {n} runs per round, median of 3 rounds");
    println!("  binary: {LARDER}");
    println!();
    let mut table = Table::default();

    // Acquire and release of a cached instance.
    ok(larder(root).args(["pool", "acquire"]));
    ok(larder(root).args(["pool", "release", "local"]).stderr(Stdio::null()));
    let cycle = per_run(n, || {
        ok(larder(root).args(["pool", "acquire"]));
        ok(larder(root).args(["pool", "release", "local"]).stderr(Stdio::null()));
    });
    let floor = per_run(n, || {
        ok(larder(root).arg("--version"));
        ok(larder(root).arg("--version"));
    });
    table.row(
        "acquire + release, cached".into(),
        format!("{:.0}/s ({})", 1.0 / cycle, ms(cycle)),
        format!("2x larder --version: {:.0}/s ({})", 1.0 / floor, ms(floor)),
        ratio(cycle, floor),
    );

    // Run over ssh.
    ok(larder(root).args(["pool", "acquire", "-s", "host"]));
    let run = per_run(n, || ok(larder(root).args(["pool", "run", "-s", "host", "--", "true"])));
    let plain = per_run(n, || {
        ok(sshd.ssh().arg("true").stdin(Stdio::null()).stdout(Stdio::null()));
    });
    table.row(
        "pool run -- true, ssh source".into(),
        ms(run),
        format!("ssh HOST true: {}", ms(plain)),
        ratio(run, plain),
    );
    ok(larder(root).args(["pool", "release", "host"]).stderr(Stdio::null()));

    // Run on this host.
    ok(larder(root).args(["pool", "acquire"]));
    let local = per_run(n, || ok(larder(root).args(["pool", "run", "-s", "local", "--", "true"])));
    let direct = per_run(n, || ok(Command::new("true").stdin(Stdio::null())));
    table.row(
        "pool run -- true, local".into(),
        ms(local),
        format!("true: {}", ms(direct)),
        ratio(local, direct),
    );
    ok(larder(root).args(["pool", "release", "local"]).stderr(Stdio::null()));
    table.print();
}
