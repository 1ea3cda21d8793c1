//! Benchmark of the real `larder` binary against plain tools doing the same
//! job in the same run: `cp` (with and without `sync`) for puts and gets,
//! `cat` for per-process gets, and `write` + `fdatasync` for puts into a full
//! store with a large index.
//!
//! ```text
//! cargo bench --bench store                      full sizes (cargo passes --bench)
//! cargo test -p larder-cli --bench store         tiny sizes: a smoke test
//! LARDER_BENCH_SCALE=full|tiny                   overrides either
//! ```
//!
//! Every case runs 5 times (the large-file cases after one uncounted warm-up)
//! and shows the median; `ratio` is larder's time over
//! the reference's, so above 1 means larder is slower. Times are printed, never
//! asserted; correctness is asserted (exit codes, outputs equal to sources).
//!
//! All data (sources, stores, destinations) lives in one temporary folder under
//! Cargo's `CARGO_TARGET_TMPDIR` (`target/tmp/larder-bench.*`), so everything is
//! on one filesystem; it is deleted at the end. The page cache cannot be
//! dropped, so sources are read once before timing (both sides start warm), and
//! `sync` runs before each timed step so no earlier write-back is still going.
//!
//! Folders of many files (stores, copies, outputs) are kept until the end
//! rather than deleted between repetitions: on ext4 without a journal, every
//! file created within a minute or so after thousands were deleted pays for a
//! scan past the recently freed inodes (the kernel's `recently_deleted()`), so
//! deleting between repetitions would charge the benchmark's own cleanup to
//! whichever step ran next. Deletions by other processes on the same
//! filesystem (a cargo build, say) can still skew figures that way.
//!
//! Large single files, on the other hand, are deleted right before the next
//! step that writes as much: on a VM whose balloon takes freed memory back (as
//! on the machine this was written on), copying into page-cache pages the guest
//! has not touched lately runs at a fraction of memcpy speed, so a step that
//! cannot reuse the pages the previous output just freed is slowed down for
//! reasons that have nothing to do with it.

use std::env;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use larder::{PutOptions, Store};

mod common;
use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");
const TIME_TOOL: &str = "/usr/bin/time";
const REPS: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Scale {
    name: &'static str,
    large_bytes: u64,
    small_files: usize,
    small_size: usize,
    small_gets: usize,
    index_entries: u64,
    evict_puts: usize,
}

const FULL: Scale = Scale {
    name: "full",
    large_bytes: 1 << 30,
    small_files: 10_000,
    small_size: 4096,
    small_gets: 200,
    index_entries: 1_000_000,
    evict_puts: 2_000,
};

const TINY: Scale = Scale {
    name: "tiny",
    large_bytes: 4 << 20,
    small_files: 200,
    small_size: 4096,
    small_gets: 50,
    index_entries: 10_000,
    evict_puts: 200,
};

const ENTRY_SIZE: u64 = 100;

fn scale() -> Scale {
    if common::full_scale() { FULL } else { TINY }
}

fn main() {
    let scale = scale();
    let tmp = bench_folder();
    let bench = Bench::new(tmp.path().to_path_buf(), scale);
    println!("larder store benchmark, {} sizes", scale.name);
    println!("  binary:  {LARDER}");
    println!("  data in: {} (one filesystem for source, store, destination)", bench.root.display());
    println!(
        "  peak RSS via: {}",
        if Path::new(TIME_TOOL).exists() { "/usr/bin/time -f %M" } else { "wait4 rusage" }
    );
    println!(
        "  each case {REPS} times (large files after one uncounted warm-up), median shown; ratio = larder / reference (above 1: slower)"
    );
    println!();

    let mut table = Table::default();
    let large = bench.large_file();
    let digest = bench.large_put(&large, &mut table);
    bench.large_get(&large, &digest, &mut table);
    let small = bench.small_files();
    let (home, digests) = bench.small_put(&small, &mut table);
    bench.small_get(&home, &small, &digests, &mut table);
    bench.eviction(&mut table);

    println!();
    table.print();
    drop(tmp);
}

// ---------------------------------------------------------------------------
// The cases

struct Bench {
    root: PathBuf,
    scale: Scale,
    /// Where children's stdout and stderr go.
    logs: PathBuf,
}

/// One timed child process.
struct Ran {
    secs: f64,
    stdout: String,
    /// Peak resident set in bytes, when asked for.
    peak_rss: Option<u64>,
}

impl Bench {
    fn new(root: PathBuf, scale: Scale) -> Bench {
        let logs = root.join("logs");
        fs::create_dir_all(&logs).expect("create logs folder");
        Bench { root, scale, logs }
    }

    /// A fresh, not yet existing LARDER_HOME.
    fn fresh_home(&self, name: &str) -> PathBuf {
        let home = self.root.join(name);
        remove(&home);
        home
    }

    /// `larder ARGS` against `home`, isolated from the user's configuration.
    fn larder<S: AsRef<OsStr>>(&self, home: &Path, args: &[S]) -> Command {
        let mut cmd = Command::new(LARDER);
        cmd.args(args);
        for (name, _) in env::vars_os() {
            if name.to_string_lossy().starts_with("LARDER_") {
                cmd.env_remove(name);
            }
        }
        let xdg = self.root.join("xdg");
        cmd.current_dir(&self.root)
            .env("LARDER_HOME", home)
            .env("LARDER_CAPACITY", "64GiB")
            .env("LARDER_LOG", "warn")
            .env("XDG_CONFIG_HOME", xdg.join("config"))
            .env("XDG_CACHE_HOME", xdg.join("cache"));
        cmd
    }

    fn tool<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&self.root);
        cmd
    }

    /// Runs `cmd` to completion (stdout to `stdout_to` or a log), asserting
    /// success. With `rss`, also measures the child's peak resident set.
    fn run(&self, mut cmd: Command, stdout_to: Option<&Path>, rss: bool) -> Ran {
        let rss_file = self.logs.join("rss");
        let use_time_tool = rss && Path::new(TIME_TOOL).exists();
        if use_time_tool {
            let mut wrapped = Command::new(TIME_TOOL);
            wrapped.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(cmd.get_program());
            wrapped.args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            if let Some(dir) = cmd.get_current_dir() {
                wrapped.current_dir(dir);
            }
            cmd = wrapped;
        }
        let out_path = stdout_to.map_or_else(|| self.logs.join("stdout"), Path::to_path_buf);
        let err_path = self.logs.join("stderr");
        let out = File::create(&out_path).expect("create stdout file");
        let err = File::create(&err_path).expect("create stderr file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let described = format!("{cmd:?}");
        let start = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {described}: {e}"));
        let (status, rusage_kib) = if rss && !use_time_tool {
            let (status, kib) = wait_with_rusage(child);
            (status, Some(kib))
        } else {
            let mut child = child;
            (child.wait().expect("wait for child"), None)
        };
        let secs = start.elapsed().as_secs_f64();
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        assert!(status.success(), "{described} failed ({status}):\n{stderr}");
        let stdout = if stdout_to.is_none() {
            fs::read_to_string(&out_path).unwrap_or_default()
        } else {
            String::new()
        };
        let peak_rss = if use_time_tool {
            let text = fs::read_to_string(&rss_file).expect("read /usr/bin/time output");
            let kib: u64 = text
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected /usr/bin/time output {text:?}"));
            Some(kib * 1024)
        } else {
            rusage_kib.map(|k| k * 1024)
        };
        Ran { secs, stdout, peak_rss }
    }

    fn large_file(&self) -> PathBuf {
        let path = self.root.join("large.bin");
        let start = Instant::now();
        write_random(&path, self.scale.large_bytes, 0x5eed_1a4d_e400_0001);
        println!(
            "generated {} of random bytes in {:.2} s",
            size(self.scale.large_bytes),
            start.elapsed().as_secs_f64()
        );
        path
    }

    /// Case 1: `larder put FILE` vs `cp FILE DEST` and `cp FILE DEST && sync DEST`.
    fn large_put(&self, src: &Path, table: &mut Table) -> String {
        let dest = self.root.join("large.cp");
        let mut larder_secs = Vec::new();
        let mut cp_secs = Vec::new();
        let mut cp_sync_secs = Vec::new();
        let mut peak = 0;
        let mut digest = String::new();
        read_through(src);
        // Rep 0 warms up (the first large write on this VM pays for fresh
        // memory, whoever does it) and is not counted.
        for rep in 0..=REPS {
            let counted = rep > 0;
            let home = self.fresh_home("home-large");
            settle();
            let ran =
                self.run(self.larder(&home, &[OsStr::new("put"), src.as_os_str()]), None, true);
            if counted {
                larder_secs.push(ran.secs);
            }
            peak = peak.max(ran.peak_rss.unwrap_or(0));
            let got = ran.stdout.trim().to_string();
            assert!(got.starts_with("sha256:") && got.len() == 71, "put printed {got:?}");
            if rep > 0 {
                assert_eq!(got, digest, "the same file got another digest");
            }
            digest = got;
            assert!(
                same_contents(src, &blob_path(&home, &digest)),
                "stored blob differs from source"
            );

            remove(&dest);
            settle();
            let secs = self.run(self.tool("cp", &[src, dest.as_path()]), None, false).secs;
            if counted {
                cp_secs.push(secs);
            }

            remove(&dest);
            settle();
            let start = Instant::now();
            self.run(self.tool("cp", &[src, dest.as_path()]), None, false);
            self.run(self.tool("sync", &[&dest]), None, false);
            if counted {
                cp_sync_secs.push(start.elapsed().as_secs_f64());
            }
            // `dest` goes just before the next step that writes as much (see
            // the top of this file).
        }
        remove(&dest);
        show_reps("put: larder", &larder_secs);
        show_reps("put: cp", &cp_secs);
        show_reps("put: cp && sync", &cp_sync_secs);
        let bytes = self.scale.large_bytes;
        let name = format!("put {} file", size(bytes));
        let l = median(&larder_secs);
        table.row(
            name.clone(),
            format!("{} ({})", secs(l), rate(bytes, l)),
            format!("cp: {} ({})", secs(median(&cp_secs)), rate(bytes, median(&cp_secs))),
            ratio(l, median(&cp_secs)),
        );
        table.row(
            name,
            format!("{} ({})", secs(l), rate(bytes, l)),
            format!(
                "cp && sync FILE: {} ({})",
                secs(median(&cp_sync_secs)),
                rate(bytes, median(&cp_sync_secs))
            ),
            ratio(l, median(&cp_sync_secs)),
        );
        table.row(
            format!("peak RSS of put {}", size(bytes)),
            size(peak),
            "(target < 64 MiB)".into(),
            "-".into(),
        );
        digest
    }

    /// Case 2: `larder get DIGEST -o OUT` vs `cp BLOB OUT`, in the store the
    /// last put left.
    fn large_get(&self, src: &Path, digest: &str, table: &mut Table) {
        let home = self.root.join("home-large");
        let blob = blob_path(&home, digest);
        let out = self.root.join("large.out");
        let mut larder_secs = Vec::new();
        let mut cp_secs = Vec::new();
        let mut peak = 0;
        read_through(&blob);
        for rep in 0..=REPS {
            let counted = rep > 0;
            remove(&out);
            settle();
            let ran = self.run(
                self.larder(
                    &home,
                    &[OsStr::new("get"), OsStr::new(digest), "-o".as_ref(), out.as_os_str()],
                ),
                None,
                true,
            );
            if counted {
                larder_secs.push(ran.secs);
            }
            peak = peak.max(ran.peak_rss.unwrap_or(0));
            assert!(same_contents(src, &out), "larder get wrote something else than the source");

            remove(&out);
            settle();
            let secs = self.run(self.tool("cp", &[&blob, &out]), None, false).secs;
            if counted {
                cp_secs.push(secs);
            }
            assert!(same_contents(src, &out), "cp of the blob differs from the source");
        }
        remove(&out);
        remove(&home);
        show_reps("get: larder", &larder_secs);
        show_reps("get: cp", &cp_secs);
        let bytes = self.scale.large_bytes;
        let (l, r) = (median(&larder_secs), median(&cp_secs));
        table.row(
            format!("get {} file -o OUT", size(bytes)),
            format!("{} ({})", secs(l), rate(bytes, l)),
            format!("cp BLOB OUT: {} ({})", secs(r), rate(bytes, r)),
            ratio(l, r),
        );
        table.row(
            format!("peak RSS of get {}", size(bytes)),
            size(peak),
            "(target < 64 MiB)".into(),
            "-".into(),
        );
    }

    /// A folder of distinct small files, in name order.
    fn small_files(&self) -> Vec<PathBuf> {
        let dir = self.root.join("small");
        fs::create_dir_all(&dir).expect("create small folder");
        let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; self.scale.small_size];
        let files: Vec<PathBuf> = (0..self.scale.small_files)
            .map(|i| {
                rng.fill(&mut buf);
                let path = dir.join(format!("f{i:05}"));
                fs::write(&path, &buf).expect("write small file");
                path
            })
            .collect();
        settle();
        files
    }

    /// Case 3: `larder put DIR/*` vs `cp -r DIR DEST` and `... && sync -f DEST`.
    fn small_put(&self, files: &[PathBuf], table: &mut Table) -> (PathBuf, Vec<String>) {
        let dir = self.root.join("small");
        // Relative paths keep the argument list short.
        let rel: Vec<PathBuf> = files
            .iter()
            .map(|f| f.strip_prefix(&self.root).expect("under root").to_path_buf())
            .collect();
        let mut args: Vec<&OsStr> = vec![OsStr::new("put")];
        args.extend(rel.iter().map(|p| p.as_os_str()));
        let mut larder_secs = Vec::new();
        let mut cp_secs = Vec::new();
        let mut cp_sync_secs = Vec::new();
        let mut digests = Vec::new();
        let mut home = PathBuf::new();
        for f in files {
            read_through(f);
        }
        for rep in 0..REPS {
            home = self.fresh_home(&format!("home-small-{rep}"));
            settle();
            let ran = self.run(self.larder(&home, &args), None, false);
            larder_secs.push(ran.secs);
            digests = ran
                .stdout
                .lines()
                .map(|line| {
                    let (digest, _) =
                        line.split_once("  ").unwrap_or_else(|| panic!("put printed {line:?}"));
                    digest.to_string()
                })
                .collect();
            assert_eq!(digests.len(), files.len(), "put printed one line per file");
            for (i, (d, f)) in digests.iter().zip(files).enumerate().step_by(97) {
                assert!(same_contents(f, &blob_path(&home, d)), "blob {i} differs from its source");
            }

            let dest = self.root.join(format!("small.cp-{rep}"));
            settle();
            cp_secs.push(
                self.run(
                    self.tool("cp", &[OsStr::new("-r"), dir.as_os_str(), dest.as_os_str()]),
                    None,
                    false,
                )
                .secs,
            );

            let dest = self.root.join(format!("small.cp-sync-{rep}"));
            settle();
            let start = Instant::now();
            self.run(
                self.tool("cp", &[OsStr::new("-r"), dir.as_os_str(), dest.as_os_str()]),
                None,
                false,
            );
            self.run(self.tool("sync", &[OsStr::new("-f"), dest.as_os_str()]), None, false);
            cp_sync_secs.push(start.elapsed().as_secs_f64());
        }
        show_reps("small put: larder", &larder_secs);
        show_reps("small put: cp -r", &cp_secs);
        show_reps("small put: cp -r && sync -f", &cp_sync_secs);
        let n = files.len();
        let name = format!("put {n} x {} files, one call", size(self.scale.small_size as u64));
        let files_per_sec = |s: f64| format!("{:.0} files/s", n as f64 / s);
        let l = median(&larder_secs);
        table.row(
            name.clone(),
            format!("{} ({}; target >= 5000)", secs(l), files_per_sec(l)),
            format!("cp -r: {} ({})", secs(median(&cp_secs)), files_per_sec(median(&cp_secs))),
            ratio(l, median(&cp_secs)),
        );
        table.row(
            name,
            format!("{} ({})", secs(l), files_per_sec(l)),
            format!(
                "cp -r && sync -f: {} ({})",
                secs(median(&cp_sync_secs)),
                files_per_sec(median(&cp_sync_secs))
            ),
            ratio(l, median(&cp_sync_secs)),
        );
        (home, digests)
    }

    /// Case 4: one `larder get` process per small file vs one `cat` per file.
    fn small_get(&self, home: &Path, files: &[PathBuf], digests: &[String], table: &mut Table) {
        let n = self.scale.small_gets.min(files.len());
        let mut larder_secs = Vec::new();
        let mut cat_secs = Vec::new();
        for rep in 0..REPS {
            let out_dir = self.root.join(format!("small.out-{rep}"));
            fs::create_dir_all(&out_dir).expect("create out folder");
            settle();
            let start = Instant::now();
            for (i, d) in digests.iter().take(n).enumerate() {
                let out = out_dir.join(format!("g{i:05}"));
                self.run(
                    self.larder(
                        home,
                        &[OsStr::new("get"), OsStr::new(d), "-o".as_ref(), out.as_os_str()],
                    ),
                    None,
                    false,
                );
            }
            larder_secs.push(start.elapsed().as_secs_f64());
            for (i, f) in files.iter().take(n).enumerate() {
                assert!(
                    same_contents(f, &out_dir.join(format!("g{i:05}"))),
                    "get {i} differs from its source"
                );
            }

            settle();
            let start = Instant::now();
            for (i, f) in files.iter().take(n).enumerate() {
                let out = out_dir.join(format!("c{i:05}"));
                self.run(self.tool("cat", &[f]), Some(&out), false);
            }
            cat_secs.push(start.elapsed().as_secs_f64());
            for (i, f) in files.iter().take(n).enumerate() {
                assert!(
                    same_contents(f, &out_dir.join(format!("c{i:05}"))),
                    "cat {i} differs from its source"
                );
            }
        }
        show_reps(&format!("{n} gets: larder"), &larder_secs);
        show_reps(&format!("{n} gets: cat"), &cat_secs);
        let (l, r) = (median(&larder_secs) / n as f64, median(&cat_secs) / n as f64);
        table.row(
            format!("get {n} x {} files, a process each", size(self.scale.small_size as u64)),
            format!("{} per get", ms(l)),
            format!("cat: {} per file", ms(r)),
            ratio(l, r),
        );
    }

    /// Case 6: puts into a store that is exactly full, with a large index, so
    /// each put evicts one entry; vs `write` + `fdatasync` of as many bytes.
    fn eviction(&self, table: &mut Table) {
        let entries = self.scale.index_entries;
        let puts = self.scale.evict_puts;
        let home = self.fresh_home("home-evict");
        let capacity = entries * ENTRY_SIZE;
        let store = Store::open(&home, capacity).expect("open store");
        let start = Instant::now();
        store.bench_fill_index(entries, ENTRY_SIZE).expect("fill the index");
        println!(
            "filled the index with {entries} entries in {:.2} s",
            start.elapsed().as_secs_f64()
        );
        let before = store.stats().expect("stats");
        assert_eq!(
            (before.entries, before.bytes),
            (entries, capacity),
            "the store is exactly full"
        );

        let mut rng = XorShift::new(0xe71c_7e57);
        let mut content = [0u8; ENTRY_SIZE as usize];
        let mut larder_lat = Vec::with_capacity(puts);
        let mut last = None;
        settle();
        for i in 0..puts {
            rng.fill(&mut content);
            content[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let start = Instant::now();
            let digest =
                store.put_bytes(&content, &PutOptions::default()).expect("put into a full store");
            larder_lat.push(start.elapsed());
            last = Some((digest, content));
        }
        let after = store.stats().expect("stats");
        assert_eq!(
            (after.entries, after.bytes),
            (entries, capacity),
            "each put evicted exactly one entry"
        );
        let (digest, last_content) = last.expect("at least one put");
        assert_eq!(
            store.read(&digest.into()).expect("read back"),
            last_content,
            "read back the last put"
        );
        store.close().expect("close store");

        let ref_dir = home.join("reference");
        fs::create_dir_all(&ref_dir).expect("create reference folder");
        let mut ref_lat = Vec::with_capacity(puts);
        settle();
        for i in 0..puts {
            rng.fill(&mut content);
            let start = Instant::now();
            let mut f =
                File::create(ref_dir.join(format!("r{i:05}"))).expect("create reference file");
            f.write_all(&content).expect("write reference file");
            f.sync_data().expect("sync reference file");
            drop(f);
            ref_lat.push(start.elapsed());
        }

        larder_lat.sort();
        ref_lat.sort();
        let name = format!("put 100 B, evicting 1 of {entries}");
        for (label, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            let (l, r) = (percentile(&larder_lat, q), percentile(&ref_lat, q));
            let target = if label == "p99" { " (target < 2 ms)" } else { "" };
            table.row(
                format!("{name}, {label} of {puts}"),
                format!("{}{target}", ms(l)),
                format!("write+fdatasync: {}", ms(r)),
                ratio(l, r),
            );
        }
    }
}
