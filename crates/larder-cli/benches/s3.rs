//! Benchmark of an S3 remote tier, with the real `larder` binary against a
//! real S3 server (Garage on loopback), beside the AWS command line doing
//! the same job in the same run:
//!
//! - `larder put --upload` of a large file into a fresh home whose remote is
//!   `s3://…` (hash, store locally, upload), against `aws s3 cp FILE s3://…`;
//! - `larder get` of it into a cold home (download, check, store durably,
//!   then copy to the output), and `larder get --link` (the output is a link
//!   to the stored copy), against `aws s3 cp s3://… FILE`;
//! - `larder put --upload` of many small files, against
//!   `aws s3 cp --recursive`; `larder dir push` of them as a directory, and
//!   `larder use --from-remote` into a cold home, against the same;
//! - the peak memory of the larder commands, which stays flat whatever the
//!   size.
//!
//! ```text
//! cargo bench --bench s3                  full sizes (1 GiB, 10,000 files of 4 KiB)
//! cargo test -p larder-cli --bench s3     tiny sizes: a smoke test
//! cargo bench --bench s3 -- large         only the large file (or: small)
//! ```
//!
//! It needs `TEST_TOOL_GARAGE` and `TEST_TOOL_AWS`, which the test
//! command sets. Each case runs 3 times and shows the median; `ratio` is
//! larder's time over the reference's, so above 1 means larder is slower.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/garage.rs"]
mod garage;

use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");
const REPS: usize = 3;

struct Scale {
    name: &'static str,
    large: u64,
    small_files: usize,
    small_size: usize,
}

const FULL: Scale = Scale { name: "full", large: 1 << 30, small_files: 10_000, small_size: 4096 };
const TINY: Scale = Scale { name: "tiny", large: 8 << 20, small_files: 50, small_size: 4096 };

fn main() {
    let scale = if full_scale() { FULL } else { TINY };
    let aws = std::env::var_os("TEST_TOOL_AWS")
        .map(PathBuf::from)
        .expect("TEST_TOOL_AWS names the aws command (the test command installs it)");
    let root = tempfile::Builder::new().prefix("larder-bench-s3").tempdir().expect("tempdir");
    let root = root.path();
    let g = garage::Garage::start(root);
    println!("larder S3 remote benchmark, {} sizes", scale.name);
    println!("  binary: {LARDER}");
    println!("  server: Garage on {}", g.endpoint);
    println!("  {REPS} runs of each case, median shown");
    println!();
    let large = root.join("large.bin");
    write_random(&large, scale.large, 7);
    let small = root.join("small");
    fs::create_dir_all(&small).expect("mkdir");
    let mut rng = XorShift::new(9);
    let mut buf = vec![0u8; scale.small_size];
    let mut small_files = Vec::new();
    for i in 0..scale.small_files {
        rng.fill(&mut buf);
        let path = small.join(format!("f{i:05}"));
        fs::write(&path, &buf).expect("write");
        small_files.push(path);
    }
    settle();
    let bench = Bench { root: root.to_path_buf(), garage: g, aws };
    let mut table = Table::default();
    if std::env::args().any(|a| a == "hold") {
        // A Garage to try things by hand: print its settings and wait.
        for (k, v) in bench.garage.env() {
            println!("export {k}={v}");
        }
        println!(
            "# bucket {} endpoint {}; large file {}",
            bench.garage.bucket,
            bench.garage.endpoint,
            large.display()
        );
        std::thread::sleep(std::time::Duration::from_secs(1800));
    }
    let only: Vec<String> =
        std::env::args().skip(1).filter(|a| !a.starts_with('-') && a != "hold").collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    if wanted("large") {
        bench_large(&bench, &scale, &large, &mut table);
    }
    if wanted("small") {
        bench_small(&bench, &scale, &small, &small_files, &mut table);
    }
    println!();
    table.print();
}

fn bench_large(bench: &Bench, scale: &Scale, large: &Path, table: &mut Table) {
    let root = bench.root.as_path();

    // A large file: put with upload, and a get into a cold home.
    let (mut put, mut cp_up, mut get, mut cp_down) = (vec![], vec![], vec![], vec![]);
    let mut linked = vec![];
    let (mut put_rss, mut get_rss) = (0, 0);
    for rep in 0..REPS {
        let prefix = format!("large-{rep}");
        let home = bench.home(&format!("put-{rep}"), &prefix);
        let (secs, rss) = bench.larder(&home, &["put", "--upload", "--key", "large"], &[large]);
        put.push(secs);
        put_rss = put_rss.max(rss);
        let dest = format!("s3://{}/ref-{prefix}/large.bin", bench.garage.bucket);
        cp_up.push(
            bench.aws(&["s3", "cp", "--only-show-errors"], &[large.as_os_str(), dest.as_ref()]),
        );
        settle();
        let cold = bench.home(&format!("get-{rep}"), &prefix);
        let out = root.join(format!("out-{rep}.bin"));
        let (secs, rss) = bench.larder(&cold, &["get", "large", "-o"], &[&out]);
        get.push(secs);
        get_rss = get_rss.max(rss);
        assert!(same_contents(large, &out), "larder got other bytes");
        remove(&out);
        remove(&cold.join("home"));
        settle();
        // The same, handed out as a link to the cached copy: what a cache
        // user does with a large file (one write of the bytes, not two).
        let (secs, rss) = bench.larder(&cold, &["get", "large", "--link", "-o"], &[&out]);
        linked.push(secs);
        get_rss = get_rss.max(rss);
        assert!(same_contents(large, &out), "larder got other bytes");
        remove(&out);
        let out = root.join(format!("ref-{rep}.bin"));
        cp_down.push(
            bench.aws(&["s3", "cp", "--only-show-errors"], &[dest.as_ref(), out.as_os_str()]),
        );
        assert!(same_contents(large, &out), "aws got other bytes");
        remove(&out);
        remove(&home.join("home"));
        remove(&cold.join("home"));
        settle();
    }
    show_reps("put --upload: larder", &put);
    show_reps("put: aws s3 cp", &cp_up);
    show_reps("get, cold: larder", &get);
    show_reps("get --link, cold: larder", &linked);
    show_reps("get: aws s3 cp", &cp_down);
    let (p, c) = (median(&put), median(&cp_up));
    table.row(
        format!("put --upload {}", size(scale.large)),
        format!("{} ({})", secs(p), rate(scale.large, p)),
        format!("aws s3 cp: {} ({})", secs(c), rate(scale.large, c)),
        format!("{} (target <= 0.8)", ratio(p, c)),
    );
    let (l, c) = (median(&get), median(&cp_down));
    table.row(
        format!("get {} into a cold home", size(scale.large)),
        format!("{} ({})", secs(l), rate(scale.large, l)),
        format!("aws s3 cp: {} ({})", secs(c), rate(scale.large, c)),
        format!("{} (target <= 0.8)", ratio(l, c)),
    );
    let l = median(&linked);
    table.row(
        format!("get --link {} into a cold home", size(scale.large)),
        format!("{} ({})", secs(l), rate(scale.large, l)),
        format!("aws s3 cp: {} ({})", secs(c), rate(scale.large, c)),
        format!("{} (target <= 0.8)", ratio(l, c)),
    );
    table.row(
        format!("peak RSS, put and get of {}", size(scale.large)),
        size(put_rss.max(get_rss)),
        "flat: 64 MiB".into(),
        format!("{:.2}x", put_rss.max(get_rss) as f64 / (64 * MIB) as f64),
    );
}

fn bench_small(
    bench: &Bench,
    scale: &Scale,
    small: &Path,
    small_files: &[PathBuf],
    table: &mut Table,
) {
    let root = bench.root.as_path();

    // Many small files.
    let (mut put, mut cp_up) = (vec![], vec![]);
    for rep in 0..REPS {
        let prefix = format!("small-{rep}");
        let home = bench.home(&format!("small-{rep}"), &prefix);
        let files: Vec<&Path> = small_files.iter().map(PathBuf::as_path).collect();
        let (secs, _) = bench.larder(&home, &["put", "--upload"], &files);
        put.push(secs);
        let dest = format!("s3://{}/ref-{prefix}/", bench.garage.bucket);
        cp_up.push(bench.aws(
            &["s3", "cp", "--recursive", "--only-show-errors"],
            &[small.as_os_str(), dest.as_ref()],
        ));
        remove(&home.join("home"));
        settle();
    }
    show_reps("put --upload of the small files: larder", &put);
    show_reps("aws s3 cp --recursive", &cp_up);
    let (p, c) = (median(&put), median(&cp_up));
    table.row(
        format!("put --upload {} files of {}", scale.small_files, size(scale.small_size as u64)),
        secs(p),
        format!("aws s3 cp --recursive: {}", secs(c)),
        format!("{} (target <= 0.8)", ratio(p, c)),
    );

    // The same files as a directory: pushed, then restored in a cold home.
    let (mut push, mut restore, mut cp_down) = (vec![], vec![], vec![]);
    for rep in 0..REPS {
        let prefix = format!("dir-{rep}");
        let home = bench.home(&format!("dir-{rep}"), &prefix);
        let path = PathBuf::from(bench.larder_out(&home, &["use", "--name", "small"]).trim());
        for file in small_files {
            fs::copy(file, path.join(file.file_name().expect("name"))).expect("copy");
        }
        settle();
        let (secs, _) = bench.larder(&home, &["dir", "push", "small"], &[]);
        push.push(secs);
        let cold = bench.home(&format!("dir-cold-{rep}"), &prefix);
        let (secs, _) =
            bench.larder(&cold, &["use", "--name", "small", "--from-remote", "s3"], &[]);
        restore.push(secs);
        let restored = PathBuf::from(bench.larder_out(&cold, &["use", "--name", "small"]).trim());
        assert_eq!(fs::read_dir(&restored).expect("restored").count(), scale.small_files);
        let out = root.join(format!("ref-dir-{rep}"));
        let src = format!("s3://{}/ref-small-{rep}/", bench.garage.bucket);
        cp_down.push(bench.aws(
            &["s3", "cp", "--recursive", "--only-show-errors"],
            &[src.as_ref(), out.as_os_str()],
        ));
        assert_eq!(fs::read_dir(&out).expect("out").count(), scale.small_files);
        remove(&out);
        settle();
    }
    show_reps("dir push: larder", &push);
    show_reps("use --from-remote, cold: larder", &restore);
    show_reps("aws s3 cp --recursive, down", &cp_down);
    let (p, c) = (median(&push), median(&cp_up));
    table.row(
        format!("dir push of {} files", scale.small_files),
        secs(p),
        format!("aws s3 cp --recursive: {}", secs(c)),
        format!("{} (target <= 0.8)", ratio(p, c)),
    );
    let (r, c) = (median(&restore), median(&cp_down));
    table.row(
        format!("use --from-remote of {} files, cold", scale.small_files),
        secs(r),
        format!("aws s3 cp --recursive: {}", secs(c)),
        format!("{} (target <= 0.8)", ratio(r, c)),
    );
}

struct Bench {
    root: PathBuf,
    garage: garage::Garage,
    aws: PathBuf,
}

impl Bench {
    /// A fresh folder with a home and a user configuration whose one remote
    /// is the bucket under `prefix`.
    fn home(&self, name: &str, prefix: &str) -> PathBuf {
        let dir = self.root.join(name);
        let config = dir.join("user/.config/larder/config.toml");
        fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
        fs::write(
            &config,
            format!(
                "capacity = \"8GiB\"\n[[remote]]\nname = \"s3\"\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"garage\"\n",
                self.garage.bucket, self.garage.endpoint
            ),
        )
        .expect("config");
        dir
    }

    /// Runs larder in `dir`'s home; its time and peak RSS.
    fn larder(&self, dir: &Path, args: &[&str], paths: &[&Path]) -> (f64, u64) {
        let mut cmd = Command::new(LARDER);
        cmd.args(args)
            .args(paths)
            .env("HOME", dir.join("user"))
            .env("LARDER_HOME", dir.join("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr")).expect("stderr"));
        for (k, v) in self.garage.env() {
            cmd.env(k, v);
        }
        let start = Instant::now();
        let child = cmd.spawn().expect("run larder");
        let (status, kib) = wait_with_rusage(child);
        let secs = start.elapsed().as_secs_f64();
        let stderr = fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        assert!(status.success(), "larder {args:?} failed: {status}: {stderr}");
        (secs, kib * 1024)
    }

    /// Runs larder in `dir`'s home; what it printed.
    fn larder_out(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new(LARDER);
        cmd.args(args)
            .env("HOME", dir.join("user"))
            .env("LARDER_HOME", dir.join("home"))
            .stdin(Stdio::null());
        for (k, v) in self.garage.env() {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run larder");
        assert!(out.status.success(), "larder {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the AWS command line against Garage; its time.
    fn aws(&self, args: &[&str], more: &[&std::ffi::OsStr]) -> f64 {
        let mut cmd = Command::new(&self.aws);
        cmd.args(["--endpoint-url", &self.garage.endpoint])
            .args(args)
            .args(more)
            .env("HOME", self.root.join("aws-home"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in self.garage.env() {
            cmd.env(k, v);
        }
        let start = Instant::now();
        let status = cmd.status().expect("run aws");
        let secs = start.elapsed().as_secs_f64();
        assert!(status.success(), "aws {args:?} failed: {status}");
        secs
    }
}
