//! Benchmark of the package index of `larder serve` beside pypiserver
//! serving the same folder, in the same run:
//!
//! - the time to index a folder of 20,000 files (2,000 projects, 5 versions,
//!   a wheel and an sdist each) at start;
//! - requests per second for `/simple/` and for one project's page, loaded
//!   by wrk (target: at least 1,000 times pypiserver's);
//! - `pip download` of a pinned set of wheels through `larder serve
//!   --upstream`, cold and warm, beside the same straight from the upstream
//!   (a static file server, Python's `http.server`, whose log counts the
//!   GETs the proxy made).
//!
//! pypiserver runs as `pip install pypiserver` leaves it (its default
//! backend), with no authentication and no fallback to PyPI.
//!
//! ```text
//! cargo bench --bench pypi                       full sizes
//! cargo test -p larder-cli --bench pypi          tiny sizes: a smoke test
//! LARDER_BENCH_SCALE=full|tiny                   overrides either
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");

struct Scale {
    name: &'static str,
    projects: usize,
    versions: usize,
    seconds: u32,
}

const FULL: Scale = Scale { name: "full", projects: 2000, versions: 5, seconds: 10 };
const TINY: Scale = Scale { name: "tiny", projects: 4, versions: 5, seconds: 1 };

fn main() {
    let scale = if full_scale() { FULL } else { TINY };
    let tmp = bench_folder();
    let root = tmp.path().to_path_buf();
    let folder = root.join("packages");
    let start = Instant::now();
    let files = make_packages(&folder, &scale);
    println!("larder package index benchmark, {} sizes", scale.name);
    println!("  binary: {LARDER}");
    println!(
        "  folder: {files} files ({} projects x {} versions, wheel and sdist), made in {:.1} s",
        scale.projects,
        scale.versions,
        start.elapsed().as_secs_f64()
    );
    println!("  wrk: 1 thread, 4 connections, {} s a run", scale.seconds);
    println!();
    let mut table = Table::default();

    // Indexing at start: the server listens once the folder is indexed.
    let start = Instant::now();
    // The index's own state, beside the folder it serves in place.
    let larder = Larder::start_with(
        &folder.with_extension("larder-home"),
        &["--rescan".as_ref(), "1h".as_ref(), folder.as_os_str()],
    );
    let indexing = start.elapsed().as_secs_f64();
    table.row(
        format!("index {files} files at start"),
        format!("{} ({:.0} files/s)", secs(indexing), files as f64 / indexing),
        "-".into(),
        "-".into(),
    );
    let pypiserver = Server::pypiserver(&folder);
    let project = format!("project-{:04}", scale.projects / 2);
    for (case, path) in [
        ("GET /simple/", "/simple/".to_string()),
        ("GET /simple/<project>/", format!("/simple/{project}/")),
    ] {
        let l = wrk(&format!("{}{path}", larder.url), scale.seconds);
        let p = wrk(&format!("{}{path}", pypiserver.url), scale.seconds);
        println!("    {case}: larder {l:.1} req/s, pypiserver {p:.2} req/s");
        table.row(
            format!("{case}, {files} files"),
            format!("{l:.0} req/s"),
            format!("pypiserver: {p:.2} req/s"),
            format!("{:.0}x of pypiserver (target >= 1000)", l / p.max(1e-9)),
        );
    }
    drop(larder);
    drop(pypiserver);
    proxy(&root, &scale, &mut table);
    println!();
    table.print();
    drop(tmp);
}

/// `pip download` of a pinned set through the proxy, cold and warm, beside
/// the same straight from the upstream, with the upstream's GETs counted.
fn proxy(root: &Path, scale: &Scale, table: &mut Table) {
    let projects = scale.projects.min(32);
    let tree = root.join("upstream");
    let packages = root.join("upstream-packages");
    make_packages(&packages, &Scale { projects, versions: 1, ..*scale });
    let mut requirements = String::new();
    for entry in fs::read_dir(&packages).expect("packages") {
        let path = entry.expect("entry").path();
        let filename = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
        let Some(module) = filename.strip_suffix("-1.0-py3-none-any.whl") else { continue };
        let project = module.replace('_', "-");
        let bytes = fs::read(&path).expect("wheel");
        let sha = larder::Digest::of(&bytes).hex();
        let dir = tree.join("simple").join(&project);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(
            dir.join("index.html"),
            format!("<a href=\"/files/{filename}#sha256={sha}\">{filename}</a>\n"),
        )
        .expect("page");
        fs::create_dir_all(tree.join("files")).expect("mkdir");
        fs::write(tree.join("files").join(&filename), bytes).expect("file");
        requirements.push_str(&format!("{project}==1.0\n"));
    }
    let requirements_file = root.join("requirements.txt");
    fs::write(&requirements_file, requirements).expect("requirements");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let log = root.join("upstream.log");
    let mut upstream = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(&tree)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("python3 -m http.server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the upstream did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let upstream_url = format!("http://127.0.0.1:{port}/simple/");
    let gets = || fs::read_to_string(&log).unwrap_or_default().matches("\"GET ").count();
    let download = |index: &str, into: &str| {
        let start = Instant::now();
        let out = Command::new(tool("pip"))
            .args(["download", "--no-deps", "--only-binary", ":all:", "-q", "--index-url", index])
            .arg("-d")
            .arg(root.join(into))
            .arg("-r")
            .arg(&requirements_file)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_NO_CACHE_DIR", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .output()
            .expect("pip (the test command installs it)");
        assert!(out.status.success(), "pip: {}", String::from_utf8_lossy(&out.stderr));
        start.elapsed().as_secs_f64()
    };
    let direct = download(&upstream_url, "direct");
    let direct_gets = gets();
    let home = root.join("proxy-home");
    fs::create_dir_all(&home).expect("mkdir");
    let proxy = Larder::start_with(&home, &["--upstream".as_ref(), upstream_url.as_ref()]);
    let index = format!("{}/simple/", proxy.url);
    let cold = download(&index, "cold");
    let cold_gets = gets() - direct_gets;
    let warm = download(&index, "warm");
    let warm_gets = gets() - direct_gets - cold_gets;
    println!(
        "    pip download {projects} wheels: direct {}, proxy cold {} ({cold_gets} upstream GETs), warm {} ({warm_gets})",
        secs(direct),
        secs(cold),
        secs(warm)
    );
    for (case, time, got) in [("cold", cold, cold_gets), ("warm", warm, warm_gets)] {
        table.row(
            format!("pip download {projects} wheels via the proxy, {case} ({got} upstream GETs)"),
            secs(time),
            format!("straight from the upstream: {} ({direct_gets} GETs)", secs(direct)),
            ratio(time, direct),
        );
    }
    drop(proxy);
    let _ = upstream.kill();
    let _ = upstream.wait();
}

/// Writes the folder of packages; returns how many files.
fn make_packages(folder: &Path, scale: &Scale) -> usize {
    fs::create_dir_all(folder).expect("mkdir");
    let mut count = 0;
    for p in 0..scale.projects {
        let name = format!("project-{p:04}");
        let module = name.replace('-', "_");
        for v in 0..scale.versions {
            let version = format!("1.{v}");
            let metadata = format!(
                "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Python: >=3.8\n\n{}\n",
                "A package for the benchmark. ".repeat(40)
            );
            // A wheel.
            let wheel = folder.join(format!("{module}-{version}-py3-none-any.whl"));
            let mut zip = zip::ZipWriter::new(fs::File::create(&wheel).expect("create"));
            let options = zip::write::SimpleFileOptions::default();
            zip.start_file(format!("{module}/__init__.py"), options).expect("zip");
            zip.write_all(format!("VERSION = {version:?}\n").as_bytes()).expect("zip");
            zip.start_file(format!("{module}-{version}.dist-info/METADATA"), options).expect("zip");
            zip.write_all(metadata.as_bytes()).expect("zip");
            // pip reads it before it takes a wheel.
            zip.start_file(format!("{module}-{version}.dist-info/WHEEL"), options).expect("zip");
            zip.write_all(
                b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            .expect("zip");
            zip.finish().expect("zip");
            // An sdist.
            let sdist = folder.join(format!("{module}-{version}.tar.gz"));
            let gz = flate2::write::GzEncoder::new(
                fs::File::create(&sdist).expect("create"),
                flate2::Compression::fast(),
            );
            let mut tar = tar::Builder::new(gz);
            let mut header = tar::Header::new_gnu();
            header.set_size(metadata.len() as u64);
            header.set_mode(0o644);
            tar.append_data(
                &mut header,
                format!("{module}-{version}/PKG-INFO"),
                metadata.as_bytes(),
            )
            .expect("tar");
            tar.into_inner().expect("tar").finish().expect("gz");
            count += 2;
        }
    }
    count
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn pypiserver(folder: &Path) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut child = Command::new(tool("pypi-server"))
            .args([
                "run",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-a",
                ".",
                "-P",
                ".",
                "--disable-fallback",
            ])
            .arg(folder)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pypi-server (the test command installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Server { child, url };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("pypiserver did not start");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    match std::env::var_os("TEST_TOOLS_BIN") {
        Some(dir) => Path::new(&dir).join(name),
        None => PathBuf::from(name),
    }
}

/// Requests per second wrk measures, with a timeout long enough for a slow server.
fn wrk(url: &str, seconds: u32) -> f64 {
    let out = Command::new("wrk")
        .args(["-t1", "-c4", &format!("-d{seconds}s"), "--timeout", "60s", url])
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {text}");
    assert!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    if requests > 0.0 {
        return requests;
    }
    // A server slower than one answer in the run: count what did complete.
    let done: f64 = text
        .lines()
        .find_map(|l| l.split(" requests in ").next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0.0);
    done / f64::from(seconds)
}
