//! Benchmark of repositories built from recipes, with the real `larder`
//! binary against a local HTTP server, beside the shell pipeline that does the
//! same job in the same run:
//!
//! - `larder use URL sha256:HEX tar` (download, checksum and unpack streamed
//!   together) against `curl -o f URL && sha256sum -c && tar xzf f`, with and
//!   without a final `sync` (larder flushes what it built before publishing
//!   it);
//! - 32 processes asking for the same repository at once against one alone
//!   (one download either way);
//! - `use` + `unuse` round trips on a repository that exists, against two
//!   spawns of `true` (the floor for two processes).
//!
//! ```text
//! cargo bench --bench dirs                       full sizes (a ~200 MB tar.gz)
//! cargo test -p larder-cli --bench dirs          tiny sizes: a smoke test
//! LARDER_BENCH_SCALE=full|tiny                   overrides either
//! ```
//!
//! Each case runs 5 times and shows the median; `ratio` is larder's figure
//! over the reference's, so above 1 means larder is slower (or, for round
//! trips, that it manages fewer). Times are printed, never asserted;
//! correctness is (exit codes, unpacked contents, the download count).

use std::env;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/http_server.rs"]
mod http_server;

use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");
const REPS: usize = 5;
const CROWD: usize = 32;

struct Scale {
    name: &'static str,
    /// Files of random bytes and of text in the archive, and each one's size.
    random_files: usize,
    text_files: usize,
    file_size: usize,
    round_trips: usize,
}

const FULL: Scale = Scale {
    name: "full",
    random_files: 150,
    text_files: 200,
    file_size: 1 << 20,
    round_trips: 200,
};

const TINY: Scale =
    Scale { name: "tiny", random_files: 4, text_files: 4, file_size: 256 << 10, round_trips: 10 };

fn main() {
    let scale = if full_scale() { FULL } else { TINY };
    let tmp = bench_folder();
    let root = tmp.path().to_path_buf();
    let start = Instant::now();
    let (archive, probe) = make_archive(&scale);
    let sha = sha256_hex(&archive);
    let bytes = archive.len() as u64;
    println!("larder repository benchmark, {} sizes", scale.name);
    println!("  binary:  {LARDER}");
    println!("  data in: {}", root.display());
    println!(
        "  archive: {} tar.gz of {} files ({} unpacked), made in {:.1} s",
        size(bytes),
        scale.random_files + scale.text_files,
        size(((scale.random_files + scale.text_files) * scale.file_size) as u64),
        start.elapsed().as_secs_f64()
    );
    println!("  each case {REPS} times, median shown; ratio = larder / reference");
    println!();
    let server = http_server::Server::start();
    server.add("/data.tar.gz", archive);
    let url = server.url("/data.tar.gz");
    let bench = Bench { root, url, sha, probe, server };

    let mut table = Table::default();
    bench.one_use(bytes, &mut table);
    bench.crowd(&mut table);
    bench.round_trips(scale.round_trips, &mut table);
    println!();
    table.print();
    drop(tmp);
}

struct Bench {
    root: PathBuf,
    url: String,
    sha: String,
    /// One unpacked file's name and contents, to check results by.
    probe: (String, Vec<u8>),
    server: http_server::Server,
}

impl Bench {
    fn larder(&self, home: &Path) -> Command {
        let mut cmd = Command::new(LARDER);
        for (name, _) in env::vars_os() {
            if name.to_string_lossy().starts_with("LARDER_") {
                cmd.env_remove(name);
            }
        }
        let xdg = self.root.join("xdg");
        cmd.current_dir(&self.root)
            .env("LARDER_HOME", home)
            .env("LARDER_CAPACITY", "64GiB")
            .env("XDG_CONFIG_HOME", xdg.join("config"))
            .env("XDG_CACHE_HOME", xdg.join("cache"))
            .stdin(Stdio::null());
        cmd
    }

    /// The args of `use` for the benchmark's repository.
    fn use_args(&self, places: &Path) -> Vec<String> {
        vec![
            "use".into(),
            "--name".into(),
            "r".into(),
            "--dirs".into(),
            places.display().to_string(),
            self.url.clone(),
            format!("sha256:{}", self.sha),
            "tar".into(),
        ]
    }

    #[track_caller]
    fn check_unpacked(&self, dir: &Path) {
        let (name, data) = &self.probe;
        let got = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(got == *data, "{name} in {} differs from the archive's", dir.display());
    }

    /// Case 1: one `larder use` on a cold store against the shell pipeline.
    fn one_use(&self, bytes: u64, table: &mut Table) {
        let (mut larder, mut shell, mut shell_sync) = (Vec::new(), Vec::new(), Vec::new());
        let work = self.root.join("shell");
        for _ in 0..REPS {
            let home = self.root.join("home");
            let places = self.root.join("dirs");
            remove(&home);
            remove(&places);
            settle();
            let start = Instant::now();
            let out = self.larder(&home).args(self.use_args(&places)).output().expect("run");
            larder.push(start.elapsed().as_secs_f64());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            self.check_unpacked(Path::new(String::from_utf8_lossy(&out.stdout).trim()));
            remove(&home);
            remove(&places);

            for (with_sync, times) in [(false, &mut shell), (true, &mut shell_sync)] {
                remove(&work);
                fs::create_dir_all(work.join("out")).expect("mkdir");
                settle();
                let script = format!(
                    "curl -sSf -o f.tar.gz '{url}' && echo '{sha}  f.tar.gz' | sha256sum -c --quiet && tar xzf f.tar.gz -C out{sync}",
                    url = self.url,
                    sha = self.sha,
                    sync = if with_sync { " && sync" } else { "" },
                );
                let start = Instant::now();
                let status = Command::new("sh")
                    .args(["-c", &script])
                    .current_dir(&work)
                    .status()
                    .expect("run sh");
                times.push(start.elapsed().as_secs_f64());
                assert!(status.success(), "{script}");
                self.check_unpacked(&work.join("out"));
            }
        }
        remove(&work);
        show_reps("use: larder", &larder);
        show_reps("use: curl && sha256sum && tar", &shell);
        show_reps("use: curl && sha256sum && tar && sync", &shell_sync);
        let l = median(&larder);
        let name = format!("use {} tar.gz (http, sha256, tar)", size(bytes));
        for (label, times) in [
            ("curl && sha256sum && tar", &shell),
            ("curl && sha256sum && tar && sync", &shell_sync),
        ] {
            let r = median(times);
            table.row(name.clone(), secs(l), format!("{label}: {}", secs(r)), ratio(l, r));
        }
    }

    /// Case 2: 32 processes using the repository at once, on a cold store,
    /// beside one alone, measured in turn.
    fn crowd(&self, table: &mut Table) {
        let (mut crowd, mut alone) = (Vec::new(), Vec::new());
        for _ in 0..REPS {
            for (count, times) in [(1, &mut alone), (CROWD, &mut crowd)] {
                let home = self.root.join("home");
                let places = self.root.join("dirs");
                remove(&home);
                remove(&places);
                settle();
                let before = self.server.count("/data.tar.gz");
                let start = Instant::now();
                let children: Vec<_> = (0..count)
                    .map(|_| {
                        self.larder(&home)
                            .args(self.use_args(&places))
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .spawn()
                            .expect("spawn")
                    })
                    .collect();
                let outputs: Vec<_> =
                    children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect();
                times.push(start.elapsed().as_secs_f64());
                for out in &outputs {
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                }
                let dir = String::from_utf8_lossy(&outputs[0].stdout).trim().to_string();
                assert!(outputs.iter().all(|o| String::from_utf8_lossy(&o.stdout).trim() == dir));
                self.check_unpacked(Path::new(&dir));
                assert_eq!(self.server.count("/data.tar.gz") - before, 1, "one download for all");
                remove(&home);
                remove(&places);
            }
        }
        show_reps("1 alone", &alone);
        show_reps(&format!("{CROWD} at once"), &crowd);
        let (c, a) = (median(&crowd), median(&alone));
        table.row(
            format!("{CROWD} processes use it at once (1 download)"),
            secs(c),
            format!("one alone: {}", secs(a)),
            ratio(c, a),
        );
    }

    /// Case 3: `use` + `unuse` of a repository that exists.
    fn round_trips(&self, n: usize, table: &mut Table) {
        let home = self.root.join("home");
        let places = self.root.join("dirs");
        remove(&home);
        remove(&places);
        // A named holder keeps it while the round trips come and go.
        let mut keep = self.use_args(&places);
        keep.extend(["--holder".into(), "bench".into()]);
        let out = self.larder(&home).args(&keep).output().expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut unuse = self.use_args(&places);
        unuse[0] = "unuse".into();
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run");
            assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let (mut larder, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..REPS {
            let start = Instant::now();
            for _ in 0..n {
                run(self.larder(&home).args(self.use_args(&places)));
                run(self.larder(&home).args(&unuse));
            }
            larder.push(n as f64 / start.elapsed().as_secs_f64());
            let start = Instant::now();
            for _ in 0..n {
                run(&mut Command::new("true"));
                run(&mut Command::new("true"));
            }
            floor.push(n as f64 / start.elapsed().as_secs_f64());
        }
        show_reps_in("round trips: larder", &larder, "/s");
        show_reps_in("round trips: 2 x true", &floor, "/s");
        let (l, f) = (median(&larder), median(&floor));
        table.row(
            "use + unuse of an existing repository".into(),
            format!("{l:.0}/s"),
            format!("2 x true: {f:.0}/s"),
            ratio(f, l),
        );
        remove(&home);
        remove(&places);
    }
}

/// A tar.gz of random files (which do not compress) and text files (which do,
/// about fourfold), and one file's name and contents to check results by.
fn make_archive(scale: &Scale) -> (Vec<u8>, (String, Vec<u8>)) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut rng = XorShift::new(0x5eed_7a26);
    let mut probe = None;
    let mut data = vec![0u8; scale.file_size];
    for i in 0..scale.random_files + scale.text_files {
        if i < scale.random_files {
            rng.fill(&mut data);
        } else {
            fill_text(&mut rng, &mut data);
        }
        let name = format!(
            "data/{:03}/file-{i:05}.{}",
            i % 16,
            if i < scale.random_files { "bin" } else { "csv" }
        );
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, &name, data.as_slice()).expect("append");
        if i == scale.random_files {
            probe = Some((name, data.clone()));
        }
    }
    let gz = tar.into_inner().expect("finish tar");
    (gz.finish().expect("finish gzip"), probe.expect("a probe file"))
}

fn fill_text(rng: &mut XorShift, buf: &mut [u8]) {
    let mut text = Vec::with_capacity(buf.len() + 64);
    while text.len() < buf.len() {
        let n = rng.next();
        writeln!(
            text,
            "{},{},{:.6},label-{}",
            n % 100_000,
            (n >> 20) % 1000,
            (n >> 30) as f64 / 1e9,
            (n >> 50) % 64
        )
        .expect("write");
    }
    buf.copy_from_slice(&text[..buf.len()]);
}

fn sha256_hex(data: &[u8]) -> String {
    let mut h = larder::Hasher::new();
    h.update(data);
    h.finish().hex()
}
