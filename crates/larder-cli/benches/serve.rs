//! Benchmark of `larder serve` beside nginx serving the same files, both on
//! loopback in the same run, loaded by wrk:
//!
//! - GET of a hot 4 KiB blob: requests per second (target: at least 0.9x
//!   nginx's);
//! - GET of a 100 MiB blob: throughput (target: at least 0.95x nginx's);
//! - PUT of a 1 GiB file with curl, beside `cp` of it and `sync`;
//! - the server's peak memory with 1,000 connections at once (target: 100
//!   MiB) and during a 1 GiB upload (target: 64 MiB).
//!
//! ```text
//! cargo bench --bench serve                      full sizes
//! cargo test -p larder-cli --bench serve         tiny sizes: a smoke test
//! LARDER_BENCH_SCALE=full|tiny                   overrides either
//! ```
//!
//! Each wrk case runs 3 times, alternating servers, and shows the median.
//! Figures are printed, never asserted; correctness is (status codes, bytes).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");
const REPS: usize = 3;

struct Scale {
    name: &'static str,
    seconds: u32,
    large: u64,
    upload: u64,
    connections: u32,
}

const FULL: Scale =
    Scale { name: "full", seconds: 5, large: 100 * MIB, upload: 1 << 30, connections: 1000 };

const TINY: Scale =
    Scale { name: "tiny", seconds: 1, large: 8 * MIB, upload: 16 * MIB, connections: 100 };

fn main() {
    let scale = if full_scale() { FULL } else { TINY };
    let tmp = bench_folder();
    let root = tmp.path().to_path_buf();
    let www = root.join("www");
    fs::create_dir_all(&www).expect("mkdir");
    write_random(&www.join("small"), 4096, 1);
    write_random(&www.join("large"), scale.large, 2);
    let home = root.join("home");
    for (file, key) in [("small", "small"), ("large", "large")] {
        let status = Command::new(LARDER)
            .args(["put", "--key", key])
            .arg(www.join(file))
            .env("LARDER_HOME", &home)
            .stdout(Stdio::null())
            .status()
            .expect("larder put");
        assert!(status.success());
    }
    println!("larder serve benchmark, {} sizes", scale.name);
    println!("  binary: {LARDER}");
    println!("  wrk cases {REPS} times each, {} s a run, median shown", scale.seconds);
    println!();
    let larder = Larder::start(&home);
    let nginx = Nginx::start(&root, &www);
    let mut table = Table::default();

    let rate = |url: &str, conns: u32| wrk(url, conns, scale.seconds);
    let (mut l, mut n) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        l.push(rate(&format!("{}/small", larder.url), 64).requests);
        n.push(rate(&format!("{}/small", nginx.url), 64).requests);
    }
    show_reps_in("GET 4 KiB: larder", &l, "req/s");
    show_reps_in("GET 4 KiB: nginx", &n, "req/s");
    let (lm, nm) = (median(&l), median(&n));
    table.row(
        "GET hot 4 KiB blob, 64 connections".into(),
        format!("{lm:.0} req/s"),
        format!("nginx: {nm:.0} req/s"),
        format!("{:.2}x of nginx (target >= 0.9)", lm / nm),
    );

    let (mut l, mut n) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        l.push(rate(&format!("{}/large", larder.url), 4).bytes_per_sec);
        n.push(rate(&format!("{}/large", nginx.url), 4).bytes_per_sec);
    }
    let mib = |v: &[f64]| v.iter().map(|b| b / MIB as f64).collect::<Vec<_>>();
    show_reps_in(&format!("GET {}: larder", size(scale.large)), &mib(&l), "MiB/s");
    show_reps_in(&format!("GET {}: nginx", size(scale.large)), &mib(&n), "MiB/s");
    let (lm, nm) = (median(&l), median(&n));
    table.row(
        format!("GET {} blob, 4 connections", size(scale.large)),
        format!("{:.0} MiB/s", lm / MIB as f64),
        format!("nginx: {:.0} MiB/s", nm / MIB as f64),
        format!("{:.2}x of nginx (target >= 0.95)", lm / nm),
    );

    // Peak memory under many connections: a fresh server, so its peak is this load's.
    drop(larder);
    let larder = Larder::start(&home);
    let many = rate(&format!("{}/small", larder.url), scale.connections);
    let peak = larder.peak_rss();
    println!(
        "    {} connections: {:.0} req/s, {} errors",
        scale.connections, many.requests, many.errors
    );
    table.row(
        format!("peak RSS, {} connections", scale.connections),
        size(peak),
        "target: 100 MiB".into(),
        format!("{:.2}x of target", peak as f64 / (100 * MIB) as f64),
    );
    drop(larder);

    // A large upload: time beside cp, and peak memory.
    let upload = root.join("upload.bin");
    write_random(&upload, scale.upload, 3);
    let (mut put, mut cp) = (Vec::new(), Vec::new());
    let mut peak = 0;
    for rep in 0..REPS {
        let larder = Larder::start(&home);
        settle();
        let start = Instant::now();
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
            .arg(&upload)
            .arg(format!("{}/upload-{rep}", larder.url))
            .output()
            .expect("curl");
        put.push(start.elapsed().as_secs_f64());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "201",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        peak = peak.max(larder.peak_rss());
        drop(larder);
        let copy = root.join("upload.cp");
        remove(&copy);
        settle();
        let start = Instant::now();
        assert!(Command::new("cp").arg(&upload).arg(&copy).status().expect("cp").success());
        assert!(Command::new("sync").arg(&copy).status().expect("sync").success());
        cp.push(start.elapsed().as_secs_f64());
        remove(&copy);
    }
    show_reps("PUT: larder (curl -T)", &put);
    show_reps("PUT: cp && sync", &cp);
    let (pm, cm) = (median(&put), median(&cp));
    table.row(
        format!("PUT {} (curl -T)", size(scale.upload)),
        format!("{} ({})", secs(pm), common::rate(scale.upload, pm)),
        format!("cp && sync: {} ({})", secs(cm), common::rate(scale.upload, cm)),
        ratio(pm, cm),
    );
    table.row(
        format!("peak RSS, PUT of {}", size(scale.upload)),
        size(peak),
        "target: 64 MiB".into(),
        format!("{:.2}x of target", peak as f64 / (64 * MIB) as f64),
    );
    drop(nginx);
    println!();
    table.print();
    drop(tmp);
}

/// nginx serving `www`, two workers, sendfile on, no access log.
struct Nginx {
    child: Child,
    url: String,
}

impl Nginx {
    fn start(root: &Path, www: &Path) -> Nginx {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let prefix = root.join("nginx");
        fs::create_dir_all(prefix.join("logs")).expect("mkdir");
        // SAFETY: geteuid cannot fail.
        let user = if unsafe { libc::geteuid() } == 0 { "user root;" } else { "" };
        let conf = prefix.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "{user}\nworker_processes 2;\ndaemon off;\npid {pid};\nerror_log {err};\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n\
                 client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
                 server {{ listen 127.0.0.1:{port}; root {www}; }} }}\n",
                pid = prefix.join("nginx.pid").display(),
                err = prefix.join("logs/error.log").display(),
                tmp = prefix.display(),
                www = www.display(),
            ),
        )
        .expect("write nginx.conf");
        let mut child = Command::new(nginx_binary())
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&prefix)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx-light; the test command installs it)");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx { child, url };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nginx did not start; see {}", prefix.join("logs/error.log").display());
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    for path in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(path).exists() {
            return PathBuf::from(path);
        }
    }
    PathBuf::from("nginx")
}

/// What one wrk run measured.
struct Wrk {
    requests: f64,
    bytes_per_sec: f64,
    errors: u64,
}

fn wrk(url: &str, connections: u32, seconds: u32) -> Wrk {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), url])
        .output()
        .expect("wrk (Debian's wrk; the test command installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or("0")
            .to_string()
    };
    let non2xx: u64 = field("Non-2xx or 3xx responses:").parse().unwrap_or(0);
    assert_eq!(non2xx, 0, "wrk saw errors: {text}");
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Wrk {
        requests: field("Requests/sec:").parse().unwrap_or(0.0),
        bytes_per_sec: parse_rate(&field("Transfer/sec:")),
        errors,
    }
}

/// `3.69GB` → bytes (wrk's units are powers of 1024).
fn parse_rate(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().unwrap_or(0.0);
    n * match unit {
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    }
}
