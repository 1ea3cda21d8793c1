//! What the benchmarks share: timing helpers, test data, and the table they
//! print. Each benchmark uses some of it.
#![allow(dead_code)]

pub mod bazel;

use std::env;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const MIB: u64 = 1 << 20;

/// Whether to run at full size: `cargo bench` passes `--bench`, `cargo test`
/// does not; `LARDER_BENCH_SCALE=full|tiny` overrides either.
pub fn full_scale() -> bool {
    match env::var("LARDER_BENCH_SCALE").ok().as_deref().map(str::trim) {
        Some("full") => true,
        Some("tiny") => false,
        None | Some("") => env::args().skip(1).any(|a| a == "--bench"),
        Some(other) => panic!("LARDER_BENCH_SCALE must be `full` or `tiny`, not `{other}`"),
    }
}

/// The benchmark's temporary folder, under Cargo's `CARGO_TARGET_TMPDIR`
/// (`target/tmp/larder-bench.*`): on the build's disk, removed when dropped.
pub fn bench_folder() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("larder-bench.")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create the benchmark's temporary folder")
}

/// Flushes all dirty data, so a timed step does not pay for an earlier one.
pub fn settle() {
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
}

pub fn remove(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    result.unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
}

pub fn blob_path(home: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    home.join("store-v1").join("content").join("sha256").join(&hex[..2]).join(hex)
}

/// Reads a file once so it starts warm in the page cache.
pub fn read_through(path: &Path) {
    let mut f = File::open(path).expect("open for reading");
    io::copy(&mut f, &mut io::sink()).expect("read through");
}

pub fn same_contents(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (File::open(a), File::open(b)) else { return false };
    let (Ok(ma), Ok(mb)) = (fa.metadata(), fb.metadata()) else { return false };
    if ma.len() != mb.len() {
        return false;
    }
    let mut ba = vec![0u8; 4 << 20];
    let mut bb = vec![0u8; 4 << 20];
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na < ba.len() {
            return true;
        }
    }
}

pub fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    filled
}

/// xorshift64*: fast, and plenty random for incompressible test data.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

pub fn write_random(path: &Path, len: u64, seed: u64) {
    let mut rng = XorShift::new(seed);
    let mut f = File::create(path).expect("create source file");
    let mut buf = vec![0u8; 8 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write source file");
        left -= n as u64;
    }
    f.sync_all().expect("sync source file");
}

/// Prints every repetition, so noise shows.
pub fn show_reps(label: &str, values: &[f64]) {
    show_reps_in(label, values, "s");
}

/// Prints every repetition of a figure in `unit`.
pub fn show_reps_in(label: &str, values: &[f64], unit: &str) {
    let all: Vec<String> = values.iter().map(|v| format!("{v:.3}")).collect();
    println!("    {label}: {} {unit}", all.join(" / "));
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nearest-rank percentile of sorted durations, in seconds.
pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64()
}

pub fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= 1024 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

pub fn secs(s: f64) -> String {
    format!("{s:.3} s")
}

pub fn ms(s: f64) -> String {
    format!("{:.3} ms", s * 1e3)
}

pub fn rate(bytes: u64, s: f64) -> String {
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / s)
}

pub fn ratio(larder: f64, reference: f64) -> String {
    format!("{:.2}x", larder / reference)
}

#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    pub fn row(&mut self, case: String, larder: String, reference: String, ratio: String) {
        println!("  {case}: larder {larder}, reference {reference}, ratio {ratio}");
        self.rows.push([case, larder, reference, ratio]);
    }

    pub fn print(&self) {
        let header = ["case", "larder", "reference", "ratio"].map(String::from);
        let mut widths = [0; 4];
        for row in std::iter::once(&header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 4]| {
            println!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        };
        line(&header);
        println!("{}", "-".repeat(widths.iter().sum::<usize>() + 6));
        for row in &self.rows {
            line(row);
        }
    }
}

/// Waits for `child` with `wait4`, returning its status and peak RSS in KiB.
pub fn wait_with_rusage(child: std::process::Child) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child, not yet reaped (std only reaps in wait);
        // both pointers are to live locals.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let e = io::Error::last_os_error();
        assert!(e.kind() == io::ErrorKind::Interrupted, "wait4({pid}): {e}");
    }
    (std::process::ExitStatus::from_raw(status), usage.ru_maxrss.max(0) as u64)
}

/// A `larder serve` of `home` on a free port of 127.0.0.1, stopped with
/// SIGTERM when dropped.
pub struct Larder {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`, as `grpc://` takes it.
    pub addr: String,
}

impl Larder {
    pub fn start(home: &Path) -> Larder {
        Larder::start_with(home, &[])
    }

    /// `larder serve` of `home` with more arguments (a folder to serve,
    /// upstreams).
    pub fn start_with(home: &Path, args: &[&std::ffi::OsStr]) -> Larder {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
            .args(["serve", "-H", "127.0.0.1", "-p", "0"])
            .args(args)
            .env("LARDER_HOME", home)
            .env("LARDER_CAPACITY", "64GiB")
            .env("LARDER_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("larder serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address");
        let url = line.trim().to_string();
        let addr = url.trim_start_matches("http://").to_string();
        Larder { child, url, addr }
    }

    /// The process's peak resident memory so far, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .expect("VmHWM")
    }
}

impl Drop for Larder {
    fn drop(&mut self) {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
