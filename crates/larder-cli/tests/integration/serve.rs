//! `larder serve` with real clients: curl on every front door, ccache in its
//! three layouts, sccache over WebDAV, htpasswd auth, TLS and HTTP/2, bad
//! requests, slow and idle clients, and signals mid-upload.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{TestDir, bytes, digest_of, wait_for};

/// A running `larder serve`, stopped with SIGTERM when dropped.
pub struct Served {
    child: Child,
    pub url: String,
    pub addr: String,
}

impl Served {
    /// Serves `t`'s home on a free port of 127.0.0.1 (or `-H` in `args`) with `args`.
    pub fn start(t: &TestDir, args: &[&str]) -> Served {
        Served::start_with(t, args, |_| {})
    }

    /// Serves with `args`, its command first changed by `change`.
    pub fn start_with(t: &TestDir, args: &[&str], change: impl FnOnce(&mut Command)) -> Served {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.path().join("serve.log"))
            .expect("log");
        let mut command = t.command();
        command.args(["serve", "-p", "0"]);
        // On loopback unless the test says where.
        if !args.contains(&"-H") {
            command.args(["-H", "127.0.0.1"]);
        }
        command.args(args).stdout(Stdio::piped()).stderr(log);
        change(&mut command);
        let mut child = command.spawn().expect("spawn larder serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the address");
        let url = line.trim().to_string();
        assert!(url.starts_with("http"), "larder serve printed {line:?}");
        let addr = url.split("://").nth(1).expect("address").to_string();
        Served { child, url, addr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What `/status` says now.
    pub fn status(&self) -> serde_json::Value {
        let got = curl(&[&format!("{}/status", self.url)]);
        serde_json::from_slice(&got.body).unwrap_or_else(|e| panic!("/status: {e}: {got:?}"))
    }

    /// Waits until `n` uploads stream into the store.
    pub fn wait_for_uploads(&self, n: u64) {
        wait_for(&format!("{n} uploads in flight"), || {
            self.status()["uploads_in_flight"].as_u64() == Some(n)
        });
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        self.child.wait().expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// What curl got: status, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Runs curl with `args`, returning what the server answered.
pub fn curl(args: &[&str]) -> Got {
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "--path-as-is", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    Got {
        status,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

#[test]
fn curl_on_every_front_door() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let u = |p: &str| format!("{}{p}", s.url);
    // Health, and the probe ccache's tests send.
    assert_eq!(curl(&["-I", &u("/")]).status, 200);
    assert_eq!(curl(&[&u("/healthz")]).text(), "ok\n");
    // A key: PUT, GET, HEAD, DELETE.
    let f = t.file("f", "hello\n");
    let f = f.to_str().expect("utf-8");
    assert_eq!(curl(&["-T", f, &u("/ccache/ab/cdef")]).status, 201);
    let got = curl(&[&u("/ccache/ab/cdef")]);
    assert_eq!((got.status, got.text().as_str()), (200, "hello\n"));
    let digest = digest_of(b"hello\n");
    assert_eq!(got.header("etag"), Some(format!("\"{digest}\"")));
    assert_eq!(got.header("x-larder-digest"), Some(digest.clone()));
    assert_eq!(got.header("content-length").as_deref(), Some("6"));
    let head = curl(&["-I", &u("/ccache/ab/cdef")]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("6"));
    // Conditional and partial reads.
    let tag = format!("If-None-Match: \"{digest}\"");
    assert_eq!(curl(&["-H", &tag, &u("/ccache/ab/cdef")]).status, 304);
    let part = curl(&["-r", "1-3", &u("/ccache/ab/cdef")]);
    assert_eq!((part.status, part.text().as_str()), (206, "ell"));
    assert_eq!(part.header("content-range").as_deref(), Some("bytes 1-3/6"));
    assert_eq!(curl(&["-r", "10-", &u("/ccache/ab/cdef")]).status, 416);
    // Bazel: CAS checked against its digest, AC by key, any instance name.
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(curl(&["-T", f, &u(&format!("/cas/{hex}"))]).status, 201);
    assert_eq!(curl(&[&u(&format!("/main/cas/{hex}"))]).text(), "hello\n");
    let bad = t.file("bad", "not hello\n");
    let wrong =
        curl(&["-T", bad.to_str().expect("utf-8"), &u(&format!("/cas/{}", "0".repeat(64)))]);
    assert_eq!(wrong.status, 400);
    assert!(wrong.text().contains("nothing was stored"), "{}", wrong.text());
    assert_eq!(curl(&[&u(&format!("/cas/{}", "0".repeat(64)))]).status, 404);
    // Instance names partition the action cache.
    let ac = format!("/my/instance/ac/{}", "a".repeat(64));
    assert_eq!(curl(&["-T", f, &u(&ac)]).status, 201);
    assert_eq!(curl(&[&u(&ac)]).text(), "hello\n");
    assert_eq!(curl(&[&u(&format!("/my/instance/ac/{}", "A".repeat(64)))]).text(), "hello\n");
    assert_eq!(curl(&[&u(&format!("/ac/{}", "a".repeat(64)))]).status, 404);
    assert_eq!(curl(&[&u(&format!("/other/ac/{}", "a".repeat(64)))]).status, 404);
    // Misses, deletes.
    assert_eq!(curl(&[&u("/nope")]).status, 404);
    assert_eq!(curl(&["-X", "DELETE", &u("/ccache/ab/cdef")]).status, 204);
    assert_eq!(curl(&[&u("/ccache/ab/cdef")]).status, 404);
    assert_eq!(curl(&["-X", "DELETE", &u("/ccache/ab/cdef")]).status, 404);
    // What the operators see.
    let status: serde_json::Value =
        serde_json::from_slice(&curl(&[&u("/status")]).body).expect("json");
    for field in [
        "entries",
        "bytes",
        "capacity",
        "usage_ratio",
        "hits",
        "misses",
        "bytes_in",
        "bytes_out",
        "uptime_seconds",
    ] {
        assert!(status.get(field).is_some(), "/status lacks {field}: {status}");
    }
    assert!(status["hits"].as_u64().expect("hits") >= 4, "{status}");
    assert!(status["misses"].as_u64().expect("misses") >= 2, "{status}");
    let metrics = curl(&[&u("/metrics")]).text();
    assert!(metrics.contains("larder_http_requests_total{method=\"PUT\"}"), "{metrics}");
    assert!(metrics.contains("# TYPE larder_cache_hits_total counter"), "{metrics}");
    let page = curl(&[&u("/")]);
    assert!(page.text().contains("hit ratio"), "{}", page.text());
    // The server's blobs are the store's: the command line sees them.
    let ls = t.json(&["ls", "--json"]);
    assert!(ls.to_string().contains(&format!("ac/{}", "a".repeat(64))), "{ls}");
    assert!(s.stop().success());
}

#[test]
fn bad_requests_get_the_right_status_and_store_nothing() {
    let t = TestDir::new();
    let s = Served::start(&t, &["--max-blob-size", "1000"]);
    let u = |p: &str| format!("{}{p}", s.url);
    for path in ["/a/../b", "/a/%2e%2e/b", "/a/%2E%2E", "/a//b", "/a/%00", "/%ff"] {
        let got = curl(&[&u(path)]);
        assert_eq!(got.status, 400, "{path}: {}", got.text());
        let put = curl(&["-X", "PUT", "--data-binary", "x", &u(path)]);
        assert_eq!(put.status, 400, "{path}");
    }
    let big = t.file("big", bytes(1, 5000));
    let big = big.to_str().expect("utf-8");
    assert_eq!(curl(&["-T", big, &u("/big")]).status, 413);
    // Without a length up front, the limit is found while streaming.
    let chunked = curl(&["-T", big, "-H", "Transfer-Encoding: chunked", &u("/big")]);
    assert_eq!(chunked.status, 413, "{}", chunked.text());
    assert_eq!(curl(&["-X", "PATCH", &u("/x")]).status, 405);
    assert_eq!(curl(&["-X", "PUT", "--data-binary", "x", &u("/")]).status, 405);
    // An upload that breaks off leaves nothing.
    let mut tcp = TcpStream::connect(&s.addr).expect("connect");
    tcp.write_all(b"PUT /truncated HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n0123456789")
        .expect("write");
    s.wait_for_uploads(1);
    drop(tcp);
    s.wait_for_uploads(0);
    assert_eq!(curl(&[&u("/truncated")]).status, 404);
    assert_eq!(t.json(&["ls", "--json"]), serde_json::json!([]));
    let verify = t.verify();
    assert_eq!(verify["corrupt"], serde_json::json!([]), "{verify}");
    assert_eq!(verify["orphans"], serde_json::json!([]), "{verify}");
}

#[test]
fn slow_and_idle_clients_are_timed_out_and_many_are_refused() {
    let t = TestDir::new();
    let s = Served::start(&t, &["--timeout", "1s", "--max-connections", "60"]);
    // A client that sends half a body and goes quiet gets 408; nothing is kept.
    let mut slow = TcpStream::connect(&s.addr).expect("connect");
    slow.write_all(b"PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // Fifty idle connections: the server still answers, and closes them.
    let idle: Vec<TcpStream> =
        (0..50).map(|_| TcpStream::connect(&s.addr).expect("connect")).collect();
    assert_eq!(curl(&[&format!("{}/healthz", s.url)]).status, 200);
    // Past the limit, connections are answered 503.
    let more: Vec<TcpStream> =
        (0..20).map(|_| TcpStream::connect(&s.addr).expect("connect")).collect();
    let refused = curl(&[&format!("{}/healthz", s.url)]);
    assert_eq!(refused.status, 503, "{refused:?}");
    drop(more);
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = Vec::new();
        // Closed by the server: read ends (0 bytes) rather than timing out.
        let n = c.read_to_end(&mut buf).expect("the server closes idle connections");
        assert_eq!(n, 0);
    }
    // Half an HTTP/2 preface, and a whole one with nothing after it: let go too.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    for sent in [&preface[..9], &preface[..]] {
        let mut c = TcpStream::connect(&s.addr).expect("connect");
        c.write_all(sent).expect("write");
        c.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).expect("the server closes a silent HTTP/2 connection");
    }
    assert_eq!(curl(&[&format!("{}/healthz", s.url)]).status, 200);
    assert!(s.stop().success());
}

#[test]
fn sigterm_lets_an_upload_in_flight_finish_and_sigkill_leaves_no_partial_blob() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let data = bytes(5, 300_000);
    let mut tcp = TcpStream::connect(&s.addr).expect("connect");
    let head =
        format!("PUT /inflight HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", data.len());
    tcp.write_all(head.as_bytes()).expect("head");
    tcp.write_all(&data[..100_000]).expect("first part");
    s.wait_for_uploads(1);
    // SAFETY: kill with our child's pid and a valid signal.
    unsafe {
        libc::kill(s.pid(), libc::SIGTERM);
    }
    // It stopped listening: it is finishing what is in flight.
    wait_for("the server to stop listening", || TcpStream::connect(&s.addr).is_err());
    tcp.write_all(&data[100_000..]).expect("the rest");
    let mut answer = String::new();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
    assert!(s.stop().success());
    let out = t.path().join("inflight.out");
    t.run(&["get", "inflight", "-o", out.to_str().expect("utf-8")]).ok();
    assert_eq!(std::fs::read(&out).expect("out"), data);

    // Killed outright mid-upload: nothing half-written, once the store is opened again.
    let s = Served::start(&t, &[]);
    let mut tcp = TcpStream::connect(&s.addr).expect("connect");
    tcp.write_all(head.replace("/inflight", "/killed").as_bytes()).expect("head");
    tcp.write_all(&data[..150_000]).expect("part");
    s.wait_for_uploads(1);
    // The store is writing it into its temporary folder.
    let tmp = t.home.join("store-v1/tmp");
    let staged = || std::fs::read_dir(&tmp).into_iter().flatten().flatten().next().is_some();
    wait_for("the upload's file in the store", staged);
    // SAFETY: kill with our child's pid and a valid signal.
    unsafe {
        libc::kill(s.pid(), libc::SIGKILL);
    }
    drop(s);
    assert_eq!(t.run(&["has", "killed"]).code, 1);
    let verify = t.verify();
    assert_eq!(verify["orphans"], serde_json::json!([]), "{verify}");
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").collect();
    assert!(left.is_empty(), "the dead server's partial upload was swept: {left:?}");
}

#[test]
fn webdav_as_sccache_sends_it() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let u = |p: &str| format!("{}{p}", s.url);
    let allprop = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;
    let propfind = |path: &str, depth: &str| {
        curl(&[
            "-X",
            "PROPFIND",
            "-H",
            &format!("Depth: {depth}"),
            "-H",
            "Content-Type: application/xml",
            "--data",
            allprop,
            &u(path),
        ])
    };
    let key = format!("/sccache/9/6/e/{}", "e".repeat(64));
    // The file is missing; its folders, being virtual, exist; MKCOL is fine.
    assert_eq!(propfind(&key, "0").status, 404);
    let folder = propfind("/sccache/9/6/e/", "0");
    assert_eq!(folder.status, 207);
    assert!(folder.text().contains("<D:collection/>") && folder.text().contains("getlastmodified"));
    for dir in ["/sccache/", "/sccache/9/", "/sccache/9/6/", "/sccache/9/6/e/"] {
        assert_eq!(curl(&["-X", "MKCOL", &u(dir)]).status, 201, "{dir}");
    }
    let f = t.file("obj", bytes(2, 5000));
    assert_eq!(curl(&["-T", f.to_str().expect("utf-8"), &u(&key)]).status, 201);
    let file = propfind(&key, "0");
    assert_eq!(file.status, 207);
    assert!(
        file.text().contains("<D:getcontentlength>5000</D:getcontentlength>"),
        "{}",
        file.text()
    );
    let listing = propfind("/sccache/9/", "1").text();
    assert!(listing.contains("<D:href>/sccache/9/6/</D:href>"), "{listing}");
    assert_eq!(curl(&[&u(&key)]).body, bytes(2, 5000));
    assert_eq!(curl(&["-X", "MKCOL", &u(&key)]).status, 405, "a key is not a folder");
    // Bad PROPFINDs.
    let bad = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 0",
        "--data",
        "<D:propfind xmlns:D=\"DAV:\"><D:allprop>",
        &u("/sccache/"),
    ]);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("malformed PROPFIND body"));
    assert_eq!(curl(&["-X", "PROPFIND", "-H", "Depth: 2", &u("/")]).status, 400);
}

/// The sccache binary: on PATH, or where the test command put it.
fn sccache() -> PathBuf {
    if let Some(dir) = std::env::var_os("TEST_TOOLS_BIN") {
        let path = Path::new(&dir).join("sccache");
        if path.exists() {
            return path;
        }
    }
    PathBuf::from("sccache")
}

#[test]
fn sccache_caches_through_webdav() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let src = t.file("work/hello.c", "int main(void) { return 0; }\n");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let run = |args: &[&str]| {
        let out = Command::new(sccache())
            .args(args)
            .current_dir(t.work())
            .env("SCCACHE_WEBDAV_ENDPOINT", format!("{}/sccache", s.url))
            .env("SCCACHE_SERVER_PORT", port.to_string())
            .env("SCCACHE_DIR", t.path().join("sccache-local"))
            .env("HOME", t.path().join("user"))
            .env("SCCACHE_IDLE_TIMEOUT", "0")
            .output()
            .expect("run sccache (the test command installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let stats = |run: &dyn Fn(&[&str]) -> (bool, String)| {
        let (_, out) = run(&["--show-stats"]);
        out
    };
    let _ = run(&["--stop-server"]);
    let (ok, out) = run(&["gcc", "-c", src.to_str().expect("utf-8"), "-o", "a.o"]);
    assert!(ok, "{out}");
    let first = stats(&run);
    assert!(first.contains("Cache misses                          1"), "{first}");
    assert!(first.contains("webdav"), "{first}");
    let _ = run(&["--stop-server"]);
    // A new sccache server has nothing but the remote: a hit means WebDAV worked.
    let (ok, out) = run(&["gcc", "-c", src.to_str().expect("utf-8"), "-o", "b.o"]);
    assert!(ok, "{out}");
    let second = stats(&run);
    assert!(second.contains("Cache hits                             1"), "{second}");
    let _ = run(&["--stop-server"]);
    let listing = curl(&["-X", "PROPFIND", "-H", "Depth: 1", &format!("{}/sccache/", s.url)]);
    assert!(listing.text().contains(".sccache_check"), "{}", listing.text());
}

/// Compiles `hello.c` with ccache twice, each time from an empty local
/// cache, against `remote`; returns ccache's counters of both runs.
fn ccache_twice(t: &TestDir, remote: &str, n: u32) -> [String; 2] {
    // Each call its own source: bazel's layout ignores the path before `ac/`.
    let src = t.file("work/hello.c", format!("int main(void) {{ return {n}; }}\n"));
    [1, 2].map(|n| {
        let dir = t.path().join(format!("ccache-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("ccache")
            .args(["gcc", "-c", src.to_str().expect("utf-8"), "-o"])
            .arg(t.path().join(format!("hello-{n}.o")))
            .env("CCACHE_DIR", &dir)
            .env("CCACHE_REMOTE_STORAGE", remote)
            .env("CCACHE_CONFIGPATH", t.path().join("ccache.conf"))
            .output()
            .expect("run ccache (the test command installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stats = Command::new("ccache")
            .arg("--print-stats")
            .env("CCACHE_DIR", &dir)
            .env("CCACHE_CONFIGPATH", t.path().join("ccache.conf"))
            .output()
            .expect("ccache --print-stats");
        String::from_utf8_lossy(&stats.stdout).into_owned()
    })
}

fn counter(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

#[test]
fn ccache_hits_the_server_in_all_three_layouts_with_and_without_auth() {
    let t = TestDir::new();
    let htpasswd = t.path().join("users");
    let status = Command::new("htpasswd")
        .args(["-cbB"])
        .arg(&htpasswd)
        .args(["builder", "s3cret"])
        .status()
        .expect("htpasswd (apache2-utils; the test command installs it)");
    assert!(status.success());
    let open = Served::start(&t, &[]);
    let closed = Served::start(&t, &["-u", htpasswd.to_str().expect("utf-8")]);
    // Regression: `subdirs` puts a key starting with `ac` under `ac/`, which
    // was refused as a malformed Bazel path (one compile in a few hundred).
    let entry = t.file("entry", "a ccache result");
    let ac = format!("{}/ccache-subdirs/ac/5kt3nl8odq0mh1v2b4c6e8g0R", open.url);
    assert_eq!(curl(&["-T", entry.to_str().expect("utf-8"), &ac]).status, 201);
    assert_eq!(curl(&[&ac]).text(), "a ccache result");
    let mut n = 0;
    for layout in ["subdirs", "flat", "bazel"] {
        for (server, creds) in [(&open, ""), (&closed, "builder:s3cret@")] {
            n += 1;
            // ccache's default timeouts (100 ms to connect) are for a quiet
            // network, not a machine running every test at once.
            let url = format!(
                "http://{creds}{}/ccache-{layout}|layout={layout}|connect-timeout=5000|operation-timeout=60000",
                server.addr
            );
            let [first, second] = ccache_twice(&t, &url, n);
            assert_eq!(counter(&first, "remote_storage_error"), 0, "{url}: {first}");
            assert_eq!(counter(&first, "remote_storage_write"), 2, "{url}: {first}");
            assert_eq!(counter(&second, "remote_storage_read_hit"), 2, "{url}: {second}");
            assert_eq!(counter(&second, "local_storage_read_miss"), 2, "{url}: {second}");
        }
    }
    // A wrong password is an error ccache reports, not a hit.
    let url = format!("http://builder:wrong@{}/ccache-subdirs|layout=subdirs", closed.addr);
    let [first, _] = ccache_twice(&t, &url, 99);
    assert!(counter(&first, "remote_storage_error") > 0, "{first}");
}

#[test]
fn htpasswd_users_read_only_users_and_anonymous_reads() {
    let t = TestDir::new();
    let users = t.path().join("users");
    let users_arg = users.to_str().expect("utf-8").to_string();
    for (flag, user, password) in
        [("-cbB", "alice", "pw-a"), ("-bm", "bob", "pw-b"), ("-bs", "carol", "pw-c")]
    {
        let status = Command::new("htpasswd")
            .args([flag, &users_arg, user, password])
            .stderr(Stdio::null())
            .status()
            .expect("htpasswd");
        assert!(status.success());
    }
    let s = Served::start(&t, &["-u", &users_arg, "--read-only-users", "carol"]);
    let f = t.file("f", "data");
    let f = f.to_str().expect("utf-8");
    let u = |p: &str| format!("{}{p}", s.url);
    let refused = curl(&[&u("/k")]);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate").as_deref(), Some("Basic realm=\"larder\""));
    assert_eq!(curl(&["-u", "alice:pw-a", "-T", f, &u("/k")]).status, 201, "bcrypt");
    assert_eq!(curl(&["-u", "bob:pw-b", "-T", f, &u("/k2")]).status, 201, "apr1");
    assert_eq!(curl(&["-u", "carol:pw-c", &u("/k")]).status, 200, "SHA, reading");
    let forbidden = curl(&["-u", "carol:pw-c", "-T", f, &u("/k3")]);
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.text(), "carol may only read\n");
    assert_eq!(curl(&["-u", "alice:wrong", &u("/k")]).status, 401);
    assert_eq!(curl(&["-u", "mallory:pw-a", &u("/k")]).status, 401);
    assert_eq!(curl(&["-u", "alice:pw-a", "-X", "PROPFIND", &u("/")]).status, 207);
    assert_eq!(curl(&["-X", "PROPFIND", &u("/")]).status, 401);
    assert_eq!(curl(&[&u("/status")]).status, 401);
    assert_eq!(curl(&[&u("/healthz")]).status, 200, "health needs no credentials");
    drop(s);
    let s = Served::start(&t, &["-u", &users_arg, "--anonymous-read"]);
    assert_eq!(curl(&[&format!("{}/k", s.url)]).text(), "data");
    assert_eq!(curl(&["-T", f, &format!("{}/k4", s.url)]).status, 401);
    drop(s);
    // Misconfigurations stop the server at once, with one line.
    let err = t.run(&["serve", "-p", "0", "--anonymous-read"]).fails(2);
    assert!(err.contains("need users: give an htpasswd file with -u"), "{err}");
    let err = t.run(&["serve", "-p", "0", "-u", &users_arg, "--read-only-users", "dave"]).fails(2);
    assert!(err.contains("--read-only-users names dave, who is not in"), "{err}");
    let plain = t.file("plain", "# users\nalice:secret\n");
    let err = t.run(&["serve", "-p", "0", "-u", plain.to_str().expect("utf-8")]).fails(2);
    assert!(
        err.contains("plain:2: the password of alice is in a form larder does not read"),
        "{err}"
    );
}

/// A self-signed certificate for 127.0.0.1 and its key, in `t`'s folder.
pub fn self_signed(t: &TestDir) -> (PathBuf, PathBuf) {
    let (cert, key) = (t.path().join("cert.pem"), t.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    (cert, key)
}

#[test]
fn https_and_http2() {
    let t = TestDir::new();
    let (cert, key) = self_signed(&t);
    let (cert_arg, key_arg) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let s = Served::start(&t, &["--tls-cert", cert_arg, "--tls-key", key_arg]);
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let f = t.file("f", bytes(3, 100_000));
    let put =
        curl(&["--cacert", cert_arg, "-T", f.to_str().expect("utf-8"), &format!("{}/tls", s.url)]);
    assert_eq!(put.status, 201);
    let version = Command::new("curl")
        .args(["-sS", "--http2", "--cacert", cert_arg, "-o", "/dev/null", "-w", "%{http_version}"])
        .arg(format!("{}/tls", s.url))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&version.stdout), "2", "HTTP/2 by ALPN");
    assert_eq!(curl(&["--cacert", cert_arg, &format!("{}/tls", s.url)]).body, bytes(3, 100_000));
    drop(s);
    // Without TLS, HTTP/2 with prior knowledge (h2c).
    let s = Served::start(&t, &[]);
    let version = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version}"])
        .arg(format!("{}/tls", s.url))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&version.stdout), "2", "h2c");
    drop(s);
    let err = t.run(&["serve", "-p", "0", "--tls-cert", key_arg, "--tls-key", key_arg]).fails(2);
    assert!(
        err.contains("no certificate in") || err.contains("cannot read the certificate"),
        "{err}"
    );
}

/// TLS abuse: bytes that are no ClientHello are dropped at once, handshakes
/// that stall (silent, half a hello, a record that claims more than it sends)
/// are let go after the timeout, and meanwhile real clients are served.
#[test]
fn tls_garbage_and_stalled_handshakes_are_let_go() {
    let t = TestDir::new();
    let (cert, key) = self_signed(&t);
    let (cert_arg, key_arg) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let s = Served::start(
        &t,
        &[
            "--tls-cert",
            cert_arg,
            "--tls-key",
            key_arg,
            "--timeout",
            "1s",
            "--max-connections",
            "60",
        ],
    );
    let healthz = format!("{}/healthz", s.url);
    let closed_by_server = |mut c: TcpStream, what: &str| {
        c.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut buf = Vec::new();
        // Ends in EOF or a reset, never in our read timeout.
        if let Err(e) = c.read_to_end(&mut buf) {
            assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "{what}: the server kept the connection: {e}"
            );
        }
    };
    // Plain HTTP, random bytes and a handshake record of the wrong type.
    let garbage: [&[u8]; 3] = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x8f, 0x02, 0x77, 0x00, 0x13, 0xfe, 0x99, 0x41, 0x00, 0x00, 0x01, 0x7a],
        &[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
    ];
    for sent in garbage {
        let mut c = TcpStream::connect(&s.addr).expect("connect");
        c.write_all(sent).expect("write");
        closed_by_server(c, &format!("garbage {sent:02x?}"));
    }
    // Forty stalled handshakes, three kinds.
    let hello_start: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03];
    let claims_more: &[u8] = &[0x16, 0x03, 0x01, 0x40, 0x00, 0x01];
    let stalled: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut c = TcpStream::connect(&s.addr).expect("connect");
            match i % 3 {
                0 => {}
                1 => c.write_all(hello_start).expect("write"),
                _ => c.write_all(claims_more).expect("write"),
            }
            c
        })
        .collect();
    // A real client is not kept out by them.
    let served = curl(&["--cacert", cert_arg, &healthz]);
    assert_eq!(served.status, 200, "{served:?}");
    for c in stalled {
        closed_by_server(c, "a stalled handshake");
    }
    // Their places are free again: as many more, and still a real client.
    let again: Vec<TcpStream> =
        (0..40).map(|_| TcpStream::connect(&s.addr).expect("connect")).collect();
    assert_eq!(curl(&["--cacert", cert_arg, &healthz]).status, 200);
    drop(again);
    assert!(s.stop().success());
}

/// Writes a client configuration with one remote into `t`'s user config.
fn remote_config(t: &TestDir, url: &str, mode: &str) {
    t.file(
        "user/.config/larder/config.toml",
        format!("[[remote]]\nname = \"team\"\nurl = \"{url}\"\nmode = \"{mode}\"\n"),
    );
}

#[test]
fn a_larder_client_puts_to_a_larder_server_and_a_cold_home_gets_from_it() {
    let server_home = TestDir::new();
    let users = server_home.path().join("users");
    let status = Command::new("htpasswd")
        .args(["-cbB"])
        .arg(&users)
        .args(["alice", "pw"])
        .stderr(Stdio::null())
        .status()
        .expect("htpasswd");
    assert!(status.success());
    let s = Served::start(&server_home, &["-u", users.to_str().expect("utf-8")]);
    let t = TestDir::new();
    remote_config(&t, &format!("http://alice@{}", s.addr), "write-through");
    let with_password =
        |args: &[&str]| t.run_with(t.command().env("LARDER_PASSWORD", "pw").args(args));
    let data = bytes(6, 200_000);
    let f = t.file("data.bin", &data);
    let digest = with_password(&["put", f.to_str().expect("utf-8"), "--key", "datasets/x"]).ok();
    let digest = digest.trim().to_string();
    // The server has the blob and the key.
    let got = curl(&["-u", "alice:pw", &format!("{}/datasets/x", s.url)]);
    assert_eq!((got.status, got.body.len()), (200, data.len()));
    assert_eq!(got.header("x-larder-digest"), Some(digest.clone()));

    // A cold home finds it through the remote, and fills its local tier.
    let cold = |args: &[&str]| {
        t.run_with(
            t.command()
                .env("LARDER_HOME", t.path().join("cold"))
                .env("LARDER_PASSWORD", "pw")
                .args(args),
        )
    };
    assert_eq!(cold(&["has", "--local", "datasets/x"]).code, 1);
    assert_eq!(cold(&["has", "datasets/x"]).code, 0);
    assert_eq!(cold(&["has", "--where", "datasets/x"]).ok(), "team\n");
    let out = t.path().join("out.bin");
    cold(&["get", "datasets/x", "-o", out.to_str().expect("utf-8")]).ok();
    assert_eq!(std::fs::read(&out).expect("out"), data);
    assert_eq!(cold(&["has", "--where", "datasets/x"]).ok(), "local\nteam\n");
    assert_eq!(cold(&["has", "--local", &digest]).code, 0);
    // By digest, from another cold home; and the password from ~/.netrc instead.
    t.file("user/.netrc", "machine 127.0.0.1 login alice password pw\n");
    let other = t.run_with(
        t.command().env("LARDER_HOME", t.path().join("other")).args(["get", &digest, "-o", "-"]),
    );
    assert_eq!(other.code, 0, "{other:#?}");
    std::fs::remove_file(t.path().join("user/.netrc")).expect("rm netrc");
    // A wrong password is a clear error, and a miss everywhere a plain one.
    let wrong = t.run_with(
        t.command()
            .env("LARDER_HOME", t.path().join("third"))
            .env("LARDER_PASSWORD", "nope")
            .args(["get", "datasets/x", "-o", "-"]),
    );
    let err = wrong.fails(5);
    assert!(err.contains("it refused alice's credentials: set LARDER_PASSWORD"), "{err}");
    assert!(cold(&["get", "no/such/key", "-o", "-"]).fails(1).contains("no/such/key"));
    // stats shows the remote beside the local tier.
    let stats = with_password(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats.ok()).expect("json");
    assert_eq!(stats["tiers"][1]["tier"], "team");
    assert_eq!(stats["tiers"][1]["entries"], 1);

    // The server goes away: the local tier still works; puts say what failed.
    drop(s);
    let err = cold(&["get", "elsewhere/y", "-o", "-"]).fails(6);
    assert!(err.contains("remote team") && err.contains("cannot connect"), "{err}");
    assert_eq!(cold(&["get", "datasets/x", "-o", "-"]).code, 0, "local hits need no remote");
    let g = t.file("g.bin", "more");
    let err = with_password(&["put", g.to_str().expect("utf-8")]).fails(6);
    assert!(err.contains("is stored locally, but: remote team"), "{err}");
    assert_eq!(with_password(&["has", "--local", &digest_of(b"more")]).code, 0);
}

#[test]
fn push_sends_what_the_local_tier_holds_and_read_only_remotes_get_nothing() {
    let server = TestDir::new();
    let s = Served::start(&server, &[]);
    let t = TestDir::new();
    let a = t.put("a", "aaa");
    let b = t.file("b", "bbb");
    t.run(&["put", b.to_str().expect("utf-8"), "--key", "k/b"]).ok();
    remote_config(&t, &s.url, "read-only");
    let c = t.file("c", "ccc");
    t.run(&["put", c.to_str().expect("utf-8")]).ok();
    let err = t.run(&["put", c.to_str().expect("utf-8"), "--upload"]).fails(2);
    assert!(err.contains("--upload needs a remote that takes writes"), "{err}");
    assert_eq!(
        curl(&[&format!("{}/cas/{}", s.url, digest_of(b"ccc").trim_start_matches("sha256:"))])
            .status,
        404
    );
    assert!(t.run(&["push"]).fails(2).contains("no remote takes writes"));
    remote_config(&t, &s.url, "write-through");
    let pushed: serde_json::Value =
        serde_json::from_str(&t.run(&["push", "--json"]).ok()).expect("json");
    assert_eq!(
        pushed,
        serde_json::json!([{"remote": "team", "uploaded": 3, "present": 0, "keys": 1}])
    );
    let again: serde_json::Value =
        serde_json::from_str(&t.run(&["push", "--json"]).ok()).expect("json");
    assert_eq!(again[0]["present"], 3, "nothing is sent twice");
    assert_eq!(curl(&[&format!("{}/k/b", s.url)]).text(), "bbb");
    assert_eq!(
        curl(&[&format!("{}/cas/{}", s.url, a.trim_start_matches("sha256:"))]).text(),
        "aaa"
    );
}

#[test]
fn a_corrupt_remote_copy_is_reported_and_never_kept() {
    let t = TestDir::new();
    let server = crate::http_server::Server::start();
    let wanted = digest_of(b"the real bytes");
    server.add(&format!("/cas/{}", wanted.trim_start_matches("sha256:")), b"other bytes".to_vec());
    remote_config(&t, &server.url(""), "read-only");
    let err = t.run(&["get", &wanted, "-o", "-"]).fails(3);
    assert!(
        err.contains("remote team's copy of") && err.contains("corrupt and was not kept"),
        "{err}"
    );
    assert_eq!(t.json(&["ls", "--json"]), serde_json::json!([]));
    let err = t.run(&["stats"]);
    assert_eq!(err.code, 0, "{err:#?}");
}

#[test]
fn blobs_kept_in_memory_follow_changes_made_elsewhere() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let u = format!("{}/config/current", s.url);
    let one = t.file("one", "first version");
    t.run(&["put", one.to_str().expect("utf-8"), "--key", "config/current"]).ok();
    // Read twice: the second comes from memory.
    assert_eq!(curl(&[&u]).text(), "first version");
    assert_eq!(curl(&[&u]).text(), "first version");
    // Another process binds the key to other bytes: the next read sees them.
    let two = t.file("two", "second version");
    t.run(&["put", two.to_str().expect("utf-8"), "--key", "config/current"]).ok();
    assert_eq!(curl(&[&u]).text(), "second version");
    assert_eq!(curl(&[&u]).text(), "second version");
    t.run(&["rm", "config/current"]).ok();
    assert_eq!(curl(&[&u]).status, 404);
    // With the memory cache off, the same.
    drop(s);
    let s = Served::start(&t, &["--memory-cache", "0"]);
    t.run(&["put", one.to_str().expect("utf-8"), "--key", "config/current"]).ok();
    assert_eq!(curl(&[&format!("{}/config/current", s.url)]).text(), "first version");
}

#[test]
fn a_client_that_stops_reading_is_let_go() {
    let t = TestDir::new();
    let big = t.file("big", bytes(9, 30 << 20));
    t.run(&["put", big.to_str().expect("utf-8"), "--key", "big"]).ok();
    let s = Served::start(&t, &["--timeout", "1s"]);
    let mut tcp = TcpStream::connect(&s.addr).expect("connect");
    tcp.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    // Read nothing: the server's writes stall, then it gives up and closes
    // the connection (the only one left open is the one asking).
    wait_for("the server to drop a client that does not read", || {
        s.status()["connections_open"].as_u64() == Some(1)
    });
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut got = Vec::new();
    let read = tcp.read_to_end(&mut got);
    assert!(read.is_ok() || got.len() < 30 << 20, "{read:?}");
    assert!(got.len() < 30 << 20, "the whole body came through a client that did not read");
    // And the server serves others meanwhile.
    assert_eq!(curl(&[&format!("{}/healthz", s.url)]).status, 200);
    let full = curl(&[&format!("{}/big", s.url)]);
    assert_eq!(full.body.len(), 30 << 20);
}

/// Under a small limit on open files, the server serves fewer connections
/// than asked (and says so) rather than failing to accept: clients past it
/// get a 503 whose length is right, instead of hanging in the backlog.
#[test]
fn past_the_limit_on_open_files_clients_get_503_not_a_hang() {
    use std::os::unix::process::CommandExt as _;
    let t = TestDir::new();
    let s = Served::start_with(&t, &["--max-connections", "10000"], |command| {
        // SAFETY: setrlimit is async-signal-safe; it only changes the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit { rlim_cur: 128, rlim_max: 128 };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let log = || std::fs::read_to_string(t.path().join("serve.log")).unwrap_or_default();
    wait_for("the note on the connections served", || log().contains("serving at most"));
    assert!(log().contains("raise `ulimit -n`"), "{}", log());
    // More idle connections than the descriptors allow.
    let idle: Vec<TcpStream> =
        (0..150).map(|_| TcpStream::connect(&s.addr).expect("connect")).collect();
    let mut late = TcpStream::connect(&s.addr).expect("connect");
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    late.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut answer = Vec::new();
    late.read_to_end(&mut answer).expect("an answer, not a hang");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse::<usize>().ok())
        .expect("Content-Length");
    assert_eq!(length, body.len(), "{answer:?}");
    drop(idle);
    wait_for("the server to serve again", || curl(&[&format!("{}/healthz", s.url)]).status == 200);
}

/// The listen backlog holds a burst of connects (Linux clamps it to
/// net.core.somaxconn): `ss` shows it as the listener's Send-Q.
#[test]
fn the_listen_backlog_holds_bursts() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let port = s.addr.rsplit(':').next().expect("port");
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let backlog: u64 = text
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ss said {text:?}"));
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(backlog, somaxconn.min(4096), "{text}");
}

#[test]
fn serving_beyond_loopback_without_users_warns_and_names_u() {
    let t = TestDir::new();
    let log = || std::fs::read_to_string(t.path().join("serve.log")).unwrap_or_default();
    let s = Served::start(&t, &["-H", "0.0.0.0"]);
    wait_for("the startup lines", || log().contains("serving"));
    let warning = log().lines().find(|l| l.contains("warning")).map(str::to_string);
    insta::assert_snapshot!(warning.unwrap_or_default(), @r"larder: warning: listening on 0.0.0.0 without -u: anyone who can reach it may read and write; give -u USERS.htpasswd (htpasswd -B), or -H 127.0.0.1 to serve this host only");
    drop(s);
    std::fs::remove_file(t.path().join("serve.log")).expect("rm log");
    // On loopback, or with users, nothing to warn about.
    let s = Served::start(&t, &[]);
    wait_for("the startup line", || log().contains("serving"));
    drop(s);
    assert!(!log().contains("warning"), "{}", log());
}

#[test]
fn the_access_log_is_off_by_default_and_says_who_asked_what() {
    let t = TestDir::new();
    let users = t.path().join("users");
    let status = Command::new("htpasswd").args(["-bcB"]).arg(&users).args(["alice", "pw"]).status();
    assert!(status.expect("htpasswd").success());
    let log = || std::fs::read_to_string(t.path().join("serve.log")).unwrap_or_default();
    let s = Served::start(&t, &["-u", users.to_str().expect("utf-8")]);
    assert_eq!(curl(&["-u", "alice:pw", &format!("{}/status", s.url)]).status, 200);
    drop(s);
    assert!(!log().contains("\"GET /status"), "{}", log());
    let s = Served::start(&t, &["-u", users.to_str().expect("utf-8"), "--access-log"]);
    let body = t.file("body", "some bytes");
    let body = body.to_str().expect("utf-8");
    assert_eq!(curl(&["-u", "alice:pw", "-T", body, &format!("{}/k", s.url)]).status, 201);
    assert_eq!(curl(&[&format!("{}/k", s.url)]).status, 401);
    wait_for("two lines", || log().matches("\" 20").count() + log().matches("\" 40").count() >= 2);
    let lines: Vec<String> = log()
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - "))
        .map(|l| {
            // The time and the milliseconds change from run to run.
            let (head, rest) = l.split_once(" [").expect("time");
            let (_, rest) = rest.split_once("] ").expect("time");
            let rest = rest.rsplit_once(' ').map_or(rest, |(r, _)| r);
            format!("{head} [TIME] {rest} MS")
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"), @r#"
        127.0.0.1 - alice [TIME] "PUT /k HTTP/1.1" 201 - MS
        127.0.0.1 - - [TIME] "GET /k HTTP/1.1" 401 - MS
        "#);
}

#[test]
fn the_page_counts_in_english_and_says_uptime_as_people_do() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    // The first request: the page counts itself.
    let page = curl(&[&format!("{}/", s.url)]).text();
    assert!(page.contains(", 1 request</td>"), "{page}");
    assert!(page.contains("(0 hits, 0 misses)"), "{page}");
    let uptime = page.split("<th>up for</th><td>").nth(1).and_then(|r| r.split('<').next());
    let uptime = uptime.expect("uptime");
    assert!(uptime.ends_with('s') && !uptime.contains(' '), "{uptime}");
    let digest = t.put("one", "one blob");
    let verify = t.run(&["verify"]).ok();
    assert!(verify.starts_with("checked 1 blob ("), "{verify} {digest}");
}
