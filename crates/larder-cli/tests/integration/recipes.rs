//! Directories built from recipes (shared-cache's repositories): the seed's
//! example, one download for many users, builders killed mid-way, failing
//! servers, crafted archives and bombs, every loader and transform.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::archives::{Entry, bzip2, gzip, md5_hex, sha256_hex, sum_hex, tar, xz, zip, zstd};
use crate::http_server::{Fault, Server};
use crate::util::{Run, TestDir, bytes, wait_for, wait_until};

/// A small project tree as a tar: files, a folder, a symlink, a hard link.
fn project_tar() -> Vec<u8> {
    tar(&[
        Entry::Dir("payload"),
        Entry::File("payload/a.txt", b"hello\n"),
        Entry::Dir("payload/sub"),
        Entry::File("payload/sub/b.bin", &bytes(7, 200_000)),
        Entry::Symlink("payload/link", "a.txt"),
        Entry::Hardlink("payload/hard", "payload/a.txt"),
    ])
}

/// Checks that `dir` holds exactly what [`project_tar`] unpacks to.
#[track_caller]
fn assert_project(dir: &Path) {
    let p = dir.join("payload");
    assert_eq!(std::fs::read(p.join("a.txt")).expect("a.txt"), b"hello\n");
    assert_eq!(std::fs::read(p.join("sub/b.bin")).expect("b.bin"), bytes(7, 200_000));
    assert_eq!(std::fs::read_link(p.join("link")).expect("link"), Path::new("a.txt"));
    assert_eq!(std::fs::read(p.join("hard")).expect("hard"), b"hello\n");
}

/// The leftovers of builds in a folder of directories (not the lock files
/// that wake waiters, which live as long as their directories).
fn staging_folders(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".larder-") && !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default()
}

impl TestDir {
    fn dir_json(&self, name: &str) -> serde_json::Value {
        self.json(&["dir", "show", name, "--json"])
    }

    fn dir_names(&self) -> Vec<String> {
        let list = self.json(&["dir", "ls", "--json"]);
        list.as_array()
            .expect("array")
            .iter()
            .map(|d| d["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Runs larder with fast retries, for failing servers.
    fn run_impatient(&self, args: &[&str]) -> Run {
        self.run_with(
            self.command()
                .env("LARDER_HTTP_RETRIES", "2")
                .env("LARDER_HTTP_TIMEOUT", "1s")
                .args(args),
        )
    }

    /// Starts `larder ARGS` in the background, in a process group of its own
    /// (so [`kill9`] takes its children too); its holder is this test process.
    fn spawn(&self, args: &[&str]) -> Child {
        use std::os::unix::process::CommandExt;
        self.command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn larder")
    }
}

fn finish(child: Child) -> Run {
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Kills `child` and, if it leads a process group, everything in it.
fn kill9(child: &mut Child) {
    // SAFETY: kill with a pid we own (or its group) and a valid signal.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

#[test]
fn the_seed_example_works_as_written() {
    let t = TestDir::new();
    let server = Server::start();
    let archive = gzip(&project_tar());
    server.add("/pigay/vsg/archive/vsg-0.2.0.tar.gz", archive.clone());
    let script = format!(
        r#"set -e
        url={url}
        md5={md5}

        repo=test-repo
        repo_args="--name=$repo --size=10GB http:$url md5:$md5 tar"

        p=$($L use $repo_args)
        echo "$p"
        cat "$p/payload/a.txt"
        $L dir ls
        $L unuse $repo_args
        test ! -e "$p" && echo gone"#,
        url = server.url("/pigay/vsg/archive/vsg-0.2.0.tar.gz"),
        md5 = md5_hex(&archive),
    );
    let out = t.script(&script).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "$T/home/dirs/test-repo");
    assert_eq!(lines[1], "hello");
    assert!(lines[3].starts_with("test-repo") && lines[3].contains("ready"), "{out}");
    assert_eq!(lines.last(), Some(&"gone"));
    assert_eq!(server.count("/pigay/vsg/archive/vsg-0.2.0.tar.gz"), 1);
    assert!(t.dir_names().is_empty());
}

#[test]
fn the_repository_holds_the_archive_and_is_shared_by_path() {
    let t = TestDir::new();
    let server = Server::start();
    let archive = gzip(&project_tar());
    server.add("/p.tar.gz", archive.clone());
    let url = server.url("/p.tar.gz");
    let sha = format!("sha256:{}", sha256_hex(&archive));
    let dir = t.run(&["use", "--name", "r", &url, &sha, "tar"]).ok();
    let dir = t.real(&dir);
    assert_project(&dir);
    let shown = t.dir_json("r");
    assert_eq!(shown["state"], "ready");
    assert_eq!(shown["recipe"], format!("http:{url} {sha} tar"));
    assert!(shown["size"].as_u64().expect("size") >= 200_006, "{shown}");
    assert_eq!(shown["holders"].as_array().expect("holders").len(), 1);
    // Using it again from the same caller attaches, building nothing.
    t.run(&["use", "--name", "r", &url, &sha, "tar"]).ok();
    assert_eq!(server.count("/p.tar.gz"), 1);
    t.run(&["unuse", dir.to_str().expect("utf-8")]).ok();
    assert!(!dir.exists());
}

#[test]
fn the_same_download_is_fetched_once_for_every_directory() {
    let t = TestDir::new();
    let server = Server::start();
    let archive = gzip(&project_tar());
    server.add("/p.tar.gz", archive.clone());
    let url = server.url("/p.tar.gz");
    let md5 = format!("md5:{}", md5_hex(&archive));
    for name in ["one", "two"] {
        let dir = t.run(&["use", "--name", name, &url, &md5, "tar"]).ok();
        assert_project(&t.real(&dir));
    }
    // Another transform of the same bytes: still no download.
    let dir = t.run(&["use", "--name", "three", &url, &md5, "gunzip"]).ok();
    assert_eq!(std::fs::read(t.real(&dir).join("p.tar")).expect("p.tar"), project_tar());
    assert_eq!(server.count("/p.tar.gz"), 1);
    for name in ["one", "two", "three"] {
        t.run(&["unuse", "--name", name]).ok();
    }
    // A rebuild after deletion takes the bytes from the store too.
    t.run(&["use", "--name", "one", &url, &md5, "tar"]).ok();
    assert_eq!(server.count("/p.tar.gz"), 1);
    let keys = t.json(&["ls", "--json"]);
    assert_eq!(keys.as_array().expect("entries").len(), 1, "{keys}");
}

#[test]
fn sixteen_processes_share_one_download() {
    let t = TestDir::new();
    let server = Server::start();
    let archive = gzip(&project_tar());
    server.add("/p.tar.gz", archive.clone());
    // Slow enough that all sixteen ask while the first still downloads.
    server.throttle("/p.tar.gz", archive.len());
    let url = server.url("/p.tar.gz");
    let sha = format!("sha256:{}", sha256_hex(&archive));
    let release = t.path().join("release");
    let children: Vec<Child> = (0..16)
        .map(|i| {
            let body = format!(
                r#"p=$($L use --name shared {url} {sha} tar) || exit 1
                echo "$p" > {root}/out.{i}
                while [ ! -e {release} ]; do sleep 0.05; done"#,
                root = t.path().display(),
                release = release.display(),
            );
            t.bash(&body).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn")
        })
        .collect();
    let outputs: Vec<PathBuf> = (0..16).map(|i| t.path().join(format!("out.{i}"))).collect();
    // Up to ninety seconds: sixteen processes on a busy machine.
    let all = wait_until(Duration::from_secs(90), || outputs.iter().all(|o| o.exists()));
    assert!(all, "all sixteen got the directory");
    let paths: Vec<String> =
        outputs.iter().map(|o| std::fs::read_to_string(o).expect("out")).collect();
    assert!(paths.iter().all(|p| *p == paths[0]), "{paths:?}");
    assert_eq!(server.count("/p.tar.gz"), 1, "one download for sixteen users");
    assert_project(Path::new(paths[0].trim()));
    let shown = t.dir_json("shared");
    assert_eq!(shown["holders"].as_array().expect("holders").len(), 16, "{shown}");
    std::fs::write(&release, "").expect("release");
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Their scripts ended: the next look deletes it.
    assert!(t.dir_names().is_empty());
    assert!(!Path::new(paths[0].trim()).exists());
}

#[test]
fn a_builder_killed_mid_download_is_taken_over_by_a_waiter() {
    let t = TestDir::new();
    let server = Server::start();
    let archive = gzip(&tar(&[Entry::File("big.bin", &bytes(3, 3_000_000))]));
    server.add("/big.tar.gz", archive.clone());
    server.throttle("/big.tar.gz", 1_000_000);
    let url = server.url("/big.tar.gz");
    let mut builder = t.spawn(&["use", "--name", "r", &url, "tar"]);
    wait_for("the build to start downloading", || {
        let shown = t.run(&["dir", "show", "r", "--json"]);
        shown.code == 0
            && shown.stdout.contains("\"done\": ")
            && !shown.stdout.contains("\"done\": 0")
    });
    let shown = t.run(&["dir", "show", "r"]).ok();
    assert!(
        shown.contains(&format!("state:    building by pid {}", builder.id()))
            && shown.contains("downloading big.tar.gz"),
        "{shown}"
    );
    let log = t.path().join("waiter.log");
    let waiter = t
        .command()
        .args(["-v", "use", "--name", "r", &url, "tar"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    wait_for("the waiter to wait", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("waiting for pid"))
    });
    kill9(&mut builder);
    let out = finish(waiter);
    assert_eq!(out.code, 0, "{out:#?}");
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(log.contains("died; building it here"), "{log}");
    let dir = PathBuf::from(out.stdout.trim());
    assert_eq!(std::fs::read(dir.join("big.bin")).expect("big.bin"), bytes(3, 3_000_000));
    assert_eq!(server.count("/big.tar.gz"), 2, "the dead builder's and the waiter's");
    assert!(staging_folders(&t.home.join("dirs")).is_empty(), "the half-built folder is gone");
    assert_eq!(t.dir_json("r")["state"], "ready");
}

#[test]
fn a_builder_killed_mid_extraction_leaves_nothing_half_built() {
    let t = TestDir::new();
    let files: Vec<(String, Vec<u8>)> =
        (0..20).map(|i| (format!("f{i:02}"), bytes(i, 50_000))).collect();
    let entries: Vec<Entry<'_>> =
        files.iter().map(|(n, d)| Entry::File(n.as_str(), d.as_slice())).collect();
    let archive = t.file("a.tar", tar(&entries));
    let flag = t.path().join("go-on");
    // Half the archive, a pause (until the flag exists), then the rest.
    let command = format!(
        "exec:head -c 500000 {a}; while [ ! -e {f} ]; do sleep 0.05; done; tail -c +500001 {a}",
        a = archive.display(),
        f = flag.display(),
    );
    let mut builder = t.spawn(&["use", "--name", "r", &command, "tar"]);
    let dirs = t.home.join("dirs");
    wait_for("some files unpacked", || {
        staging_folders(&dirs).iter().any(|s| dirs.join(s).join("f00").exists())
    });
    kill9(&mut builder);
    assert!(!dirs.join("r").exists(), "nobody sees a half-built directory");
    let shown = t.run(&["dir", "show", "r"]).ok();
    assert!(shown.contains("its builder (pid") && shown.contains("died"), "{shown}");
    std::fs::write(&flag, "").expect("flag");
    let dir = t.run(&["use", "--name", "r", &command, "tar"]).ok();
    for (name, data) in &files {
        assert_eq!(&std::fs::read(t.real(&dir).join(name)).expect("file"), data);
    }
    assert!(staging_folders(&dirs).is_empty(), "{:?}", staging_folders(&dirs));
}

#[test]
fn a_wrong_checksum_leaves_no_directory_and_keeps_no_bytes() {
    let t = TestDir::new();
    let server = Server::start();
    let archive = gzip(&project_tar());
    server.add("/p.tar.gz", archive.clone());
    let url = server.url("/p.tar.gz");
    let wrong = format!("md5:{}", "0".repeat(32));
    let err = t.run(&["use", "--name", "r", &url, &wrong, "tar"]).fails(3);
    assert_eq!(
        err.trim(),
        format!(
            "larder: error: p.tar.gz has md5 {}, but the recipe expects {}; the file is not the one the recipe names (check the URL and the checksum); nothing was kept",
            md5_hex(&archive),
            "0".repeat(32)
        )
    );
    assert!(t.dir_names().is_empty());
    assert_eq!(t.json(&["ls", "--json"]), serde_json::json!([]), "the bad bytes are not kept");
    assert!(staging_folders(&t.home.join("dirs")).is_empty());
    assert!(!t.home.join("dirs/r").exists());
    // The right checksum then works.
    let right = format!("md5:{}", md5_hex(&archive));
    let dir = t.run(&["use", "--name", "r", &url, &right, "tar"]).ok();
    assert_project(&t.real(&dir));
}

#[test]
fn servers_that_fail_are_retried_then_reported() {
    let t = TestDir::new();
    let server = Server::start();
    let body = gzip(&project_tar());
    for path in ["/flaky", "/dropped", "/stalled", "/norange", "/broken", "/new"] {
        server.add(path, body.clone());
    }
    let use_ok = |path: &str| {
        let dir = t.run_impatient(&["use", &server.url(path), "tar"]).ok();
        assert_project(&t.real(&dir));
    };

    server.faults("/flaky", &[Fault::Status(503), Fault::Status(500)]);
    use_ok("/flaky");
    assert_eq!(server.count("/flaky"), 3);

    server.faults("/dropped", &[Fault::Drop(10_000)]);
    use_ok("/dropped");
    assert_eq!(server.ranges("/dropped"), vec!["".to_string(), "bytes=10000-".to_string()]);

    server.faults("/stalled", &[Fault::Stall(20_000)]);
    use_ok("/stalled");
    assert_eq!(server.ranges("/stalled"), vec!["".to_string(), "bytes=20000-".to_string()]);

    // A server that ignores Range sends it all again; the bytes we had are skipped.
    server.no_ranges("/norange");
    server.faults("/norange", &[Fault::Drop(5_000)]);
    use_ok("/norange");
    assert_eq!(server.count("/norange"), 2);

    server.redirect("/old", &server.url("/new"));
    use_ok("/old");

    // Broken at 30,000; the retry is sent everything and breaks again while
    // the first 20,000 of the 30,000 already had are being skipped; the third
    // resumes from 30,000 properly. Nothing may be lost or doubled.
    server.add("/mixed", body.clone());
    server.faults("/mixed", &[Fault::Drop(30_000), Fault::WholeThenDrop(20_000)]);
    use_ok("/mixed");
    assert_eq!(server.ranges("/mixed")[2], "bytes=30000-");

    // A download that keeps breaking is reported as such, not as a damaged archive.
    server.add("/breaks", body.clone());
    server.faults("/breaks", &[Fault::Drop(10_000), Fault::Drop(0), Fault::Drop(0)]);
    let err = t.run_impatient(&["use", &server.url("/breaks"), "tar"]).fails(6);
    assert!(err.contains("cannot download") && err.contains("/breaks"), "{err}");

    let err = t.run_impatient(&["use", &server.url("/missing"), "tar"]).fails(1);
    assert!(err.contains("/missing: 404 Not Found; check the URL"), "{err}");
    assert_eq!(server.count("/missing"), 1, "a 404 is not retried");

    server.always("/broken", 500);
    let err = t.run_impatient(&["use", &server.url("/broken"), "tar"]).fails(6);
    assert!(err.contains("the server answered 500 Internal Server Error, 3 tries in all"), "{err}");
    assert_eq!(server.count("/broken"), 3);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let err = t.run_impatient(&["use", &format!("http://127.0.0.1:{port}/x.tar"), "tar"]).fails(6);
    assert!(err.contains("cannot connect to the server"), "{err}");
    // Nothing of the failures is left.
    assert!(staging_folders(&t.home.join("dirs")).is_empty());
    assert_eq!(t.dir_names().len(), 6, "the six that worked");
}

/// Serves `archive` and expects `use … URL STEPS` to refuse it with a message
/// containing `expected`, leaving nothing.
fn check_refused(archive: Vec<u8>, steps: &[&str], expected: &str) {
    let t = TestDir::new();
    let server = Server::start();
    server.add("/bad", archive);
    let url = server.url("/bad");
    let mut args = vec!["use", "--name", "bad", &url];
    args.extend_from_slice(steps);
    let err = t.run(&args).fails(2);
    assert!(err.contains(expected), "expected {expected:?} in {err}");
    assert!(t.dir_names().is_empty());
    assert!(staging_folders(&t.home.join("dirs")).is_empty());
    assert!(!t.path().join("evil").exists(), "nothing landed outside");
    assert!(!t.home.join("evil").exists(), "nothing landed outside");
}

/// A tar with one file deeper than any filesystem takes (a GNU long name).
fn deep_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    let path = format!("{}f", "deep/".repeat(1000));
    builder.append_data(&mut header, path, &b"x"[..]).expect("append");
    builder.into_inner().expect("tar")
}

#[test]
fn crafted_archives_are_refused() {
    let abs = std::env::temp_dir().join("larder-test-absolute-evil");
    let abs = abs.to_str().expect("utf-8");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            tar(&[Entry::File("../../../evil", b"x")]),
            "entry `../../../evil` has an absolute path or `..`",
        ),
        (tar(&[Entry::File(abs, b"x")]), "has an absolute path or `..`"),
        (
            tar(&[Entry::Symlink("link", "../../../evil")]),
            "entry `link` is a link to `../../../evil`, outside the directory",
        ),
        (tar(&[Entry::Symlink("etc", "/etc")]), "entry `etc` is a link to `/etc`, outside"),
        (
            tar(&[Entry::Hardlink("h", "../../../evil")]),
            "entry `h` is a hard link to `../../../evil`, outside the directory",
        ),
        (tar(&[Entry::Hardlink("h", "/etc/passwd")]), "is a hard link to `/etc/passwd`"),
        (tar(&[Entry::CharDevice("dev/null")]), "entry `dev/null` is a device file or a fifo"),
        (tar(&[Entry::Fifo("pipe")]), "entry `pipe` is a device file or a fifo"),
        (
            tar(&[Entry::Symlink("y", "."), Entry::Symlink("x", "y/..")]),
            "the link `x` leads outside the directory",
        ),
        (
            tar(&[Entry::Symlink("x", "y/.."), Entry::Symlink("y", ".")]),
            "the link `x` leads outside the directory",
        ),
        (
            tar(&[Entry::Dir("sub"), Entry::Symlink("d", "sub"), Entry::File("d/f", b"x")]),
            "entry `d/f` would be written through the link `d`",
        ),
        // Regression: refused as leading outside the directory.
        (
            tar(&[Entry::Symlink("a", "b"), Entry::Symlink("b", "a")]),
            "the link `a` is part of a loop of links",
        ),
        // Regression: exit 6 with a bare `File name too long (os error 36)`.
        (deep_tar(), "entry `deep/deep/deep/"),
    ];
    for (archive, expected) in cases {
        check_refused(gzip(&archive), &["tar"], expected);
    }
    check_refused(zip(&[("../evil", b"x")]), &["unzip"], "entry `../evil` has an absolute path");
    check_refused(
        zip(&[("ok.txt", b"x"), ("l->../../evil", b"")]),
        &["unzip"],
        "entry `l` is a link to `../../evil`, outside the directory",
    );
    check_refused(b"not an archive at all".to_vec(), &["unzip"], "not a zip file");
    assert!(!Path::new(abs).exists());
}

#[test]
fn decompression_bombs_stop_at_a_limit() {
    // Half a gigabyte of zeros in a few kilobytes.
    let zeros = || std::io::Read::take(std::io::repeat(0), 512 << 20);
    let mut bomb = Vec::new();
    zstd::stream::copy_encode(zeros(), &mut bomb, 3).expect("zstd");
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    check_refused(
        bomb.clone(),
        &["unzstd"],
        "more than 1000 times its size (a decompression bomb?)",
    );
    let tar_bomb = {
        let mut header = tar::Header::new_gnu();
        header.set_path("zeros").expect("path");
        header.set_size(512 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        let encoder = zstd::Encoder::new(Vec::new(), 3).expect("zstd");
        let mut b = tar::Builder::new(encoder);
        b.append(&header, zeros()).expect("append");
        b.into_inner().expect("tar").finish().expect("zstd")
    };
    check_refused(tar_bomb, &["tar"], "a decompression bomb?");
    // With --size, the size given is the limit.
    let t = TestDir::new();
    let server = Server::start();
    server.add("/z.gz", gzip(&vec![0u8; 4 << 20]));
    let err = t.run(&["use", "--size", "1MB", &server.url("/z.gz"), "gunzip"]).fails(2);
    assert!(err.contains("more than the 976.6 KiB given with --size"), "{err}");
    let dir = t.run(&["use", "--size", "5MB", &server.url("/z.gz"), "gunzip"]).ok();
    assert_eq!(std::fs::metadata(t.real(&dir).join("z")).expect("z").len(), 4 << 20);
}

#[test]
fn every_loader_and_transform() {
    let t = TestDir::new();
    let server = Server::start();
    let data = bytes(11, 100_000);
    server.add("/data.bin.gz", gzip(&data));
    server.add("/other.bin.zst", zstd(&data));
    server.add("/tree.tar.zst", zstd(&project_tar()));
    let other_tree = tar(&[Entry::File("bz/in.txt", b"bzip2"), Entry::File("bz/more.txt", b"x")]);
    server.add("/tree.tar.bz2", bzip2(&other_tree));
    server.add("/tree.tar.xz", xz(&tar(&[Entry::File("xz/in.txt", b"xz")])));
    server.add(
        "/files.zip",
        zip(&[("z/one.txt", b"one"), ("z/two.txt", b"two"), ("z/l->one.txt", b"")]),
    );
    server.add("/data.xz", xz(&data));
    let local = t.file("local.txt", "from a file\n");
    let stored = t.put("stored.bin", b"from the store");
    let recipe = vec![
        format!("file:{}", local.display()),
        format!("sha256:{}", sha256_hex(b"from a file\n")),
        format!("sha1:{}", sum_hex("sha1sum", b"from a file\n")),
        format!("larder:{stored}"),
        "exec:printf 'made by a command'".to_string(),
        server.url("/data.bin.gz"),
        format!("sha512:{}", sum_hex("sha512sum", &gzip(&data))),
        format!("blake3:{}", blake3::hash(&gzip(&data)).to_hex()),
        "gunzip".to_string(),
        format!("sha256:{}", sha256_hex(&data)),
        format!("http:{}", server.url("/other.bin.zst")),
        "unzstd".to_string(),
        server.url("/tree.tar.zst"),
        "tar".to_string(),
        server.url("/tree.tar.bz2"),
        "tar".to_string(),
        server.url("/tree.tar.xz"),
        "tar".to_string(),
        server.url("/files.zip"),
        "unzip".to_string(),
        server.url("/data.xz"),
        "unxz".to_string(),
    ];
    let mut args = vec!["use", "--name", "all"];
    args.extend(recipe.iter().map(String::as_str));
    let mut with_command = args.clone();
    with_command.extend(["--", "sh", "-c", "ls -A \"$LARDER_DIR\""]);
    let listing = t.run(&with_command).ok();
    let mut expected = vec![
        "bz",
        "data",
        "data.bin",
        "exec-3",
        "local.txt",
        "other.bin",
        "payload",
        "xz",
        "z",
        stored.trim_start_matches("sha256:"),
    ];
    expected.sort();
    let mut got: Vec<&str> = listing.lines().collect();
    got.sort();
    assert_eq!(got, expected);
    // `use -- CMD` released it when the command ended; build it again to look.
    let dir = t.run(&args).ok();
    let dir = &t.real(&dir);
    assert_eq!(std::fs::read(dir.join("local.txt")).expect("local"), b"from a file\n");
    assert_eq!(std::fs::read(dir.join("exec-3")).expect("exec"), b"made by a command");
    assert_eq!(std::fs::read(dir.join("data.bin")).expect("data.bin"), data);
    assert_eq!(std::fs::read(dir.join("other.bin")).expect("other.bin"), data);
    assert_eq!(std::fs::read(dir.join("z/two.txt")).expect("zip"), b"two");
    assert_eq!(std::fs::read_link(dir.join("z/l")).expect("zip link"), Path::new("one.txt"));
    assert_project(dir);
    assert_eq!(std::fs::read(dir.join("data")).expect("xz"), data);
    assert_eq!(std::fs::read(dir.join("bz/in.txt")).expect("bz"), b"bzip2");
    assert_eq!(std::fs::read(dir.join("xz/in.txt")).expect("xz tar"), b"xz");
    for path in ["/data.bin.gz", "/other.bin.zst", "/tree.tar.zst", "/files.zip"] {
        assert_eq!(server.full_gets(path), 1, "{path} downloaded once for both builds");
    }
    // What no checksum pins was asked after conditionally, and was unchanged.
    assert_eq!(server.conditional_gets("/data.bin.gz"), 0, "pinned by its checksums");
    for path in ["/other.bin.zst", "/tree.tar.zst", "/files.zip"] {
        assert_eq!(server.not_modified(path), 1, "{path} revalidated for the second build");
    }
    // A command that fails fails the build.
    let err = t.run(&["use", "exec:echo oops >&2; exit 3", "tar"]);
    assert_eq!(err.code, 6, "{err:#?}");
    assert!(err.stderr.contains("oops") && err.stderr.contains("exit status: 3"), "{err:#?}");
}

#[test]
fn dirac_files_come_through_its_client_once() {
    let t = TestDir::new();
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let catalog = t.path().join("catalog");
    std::fs::create_dir_all(catalog.join("lhcb/data")).expect("catalog");
    std::fs::write(catalog.join("lhcb/data/run.tar.gz"), gzip(&project_tar())).expect("file");
    let log = t.path().join("dirac.log");
    let fake = bin.join("dirac-dms-get-file");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$1\" >> {log}\ncp {catalog}\"$1\" . || exit 2\n",
            log = log.display(),
            catalog = catalog.display()
        ),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = |args: &[&str]| t.run_with(t.command().env("PATH", &path).args(args));
    for name in ["a", "b"] {
        let dir = run(&["use", "--name", name, "dirac:/lhcb/data/run.tar.gz", "tar"]).ok();
        assert_project(&t.real(&dir));
    }
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "/lhcb/data/run.tar.gz\n");
    let err = run(&["use", "dirac:/lhcb/data/missing.tar", "tar"]).fails(6);
    assert!(err.contains("dirac-dms-get-file failed"), "{err}");
    let err = t.run(&["use", "dirac:/lhcb/x", "tar"]).fails(1);
    assert!(err.contains("dirac-dms-get-file is not on PATH"), "{err}");
}

#[test]
fn a_name_is_bound_to_its_recipe() {
    let t = TestDir::new();
    let server = Server::start();
    server.add("/a.tar.gz", gzip(&project_tar()));
    server.add("/b.tar.gz", gzip(&project_tar()));
    let (a, b) = (server.url("/a.tar.gz"), server.url("/b.tar.gz"));
    t.run(&["use", "--name", "r", &a, "tar"]).ok();
    let err = t.run(&["use", "--name", "r", &b, "tar"]).fails(2);
    assert!(
        err.contains(&format!(
            "directory r was made from the recipe `http:{a} tar`, not from `http:{b} tar`"
        )),
        "{err}"
    );
    let err = t.run(&["unuse", "--name", "r", &b, "tar"]).fails(2);
    assert!(err.contains("was made from the recipe"), "{err}");
    // Attaching by name alone is Monolith's existing cache.
    let dir = t.run(&["use", "--name", "r"]).ok();
    assert_project(&t.real(&dir));
    // The recipe alone names it too.
    t.run(&["unuse", &a, "tar"]).fails(1);
    t.run(&["unuse", "--name", "r", &a, "tar"]).ok();
    assert!(t.dir_names().is_empty());
    // A scratch name cannot take a recipe later.
    t.run(&["use", "--name", "s"]).ok();
    let err = t.run(&["use", "--name", "s", &a, "tar"]).fails(2);
    assert!(err.contains("directory s was made without a recipe"), "{err}");
}

#[test]
fn bad_recipes_are_parse_errors_that_point_at_the_word() {
    let t = TestDir::new();
    let check = |args: &[&str], expected: &str| {
        let err = t.run(args).fails(2);
        assert_eq!(err.trim(), format!("larder: error: {expected}"));
    };
    check(
        &["use", "md5:7b9d54095bd53e27615c96e7b7318af7"],
        "recipe step 1 `md5:7b9d54095bd53e27615c96e7b7318af7`: is a transform, but a recipe starts with a loader such as http:URL or file:PATH",
    );
    check(
        &["use", "http:notaurl", "tar"],
        "recipe step 1 `http:notaurl`: not an http:// or https:// URL with a host",
    );
    let err = t.run(&["use", "file:/x", "untar"]).fails(2);
    assert!(err.contains("recipe step 2 `untar`: unknown loader or transform"), "{err}");
    assert!(t.dir_names().is_empty());
}

#[test]
fn placement_counts_the_space_builds_in_progress_reserved() {
    let t = TestDir::new();
    let small = t.path().join("small");
    let _fs = crate::bad_input::Tmpfs::mount(&small, "8m");
    let big = t.path().join("big");
    let server = Server::start();
    let archive = gzip(&tar(&[Entry::File("f", &bytes(5, 400_000))]));
    server.add("/slow.tar.gz", archive.clone());
    server.throttle("/slow.tar.gz", 200_000);
    server.add("/fast.tar.gz", archive);
    let places = format!("{}:{}", small.display(), big.display());
    let slow = t.spawn(&[
        "use",
        "--name",
        "a",
        "--size",
        "6MB",
        "--dirs",
        &places,
        &server.url("/slow.tar.gz"),
        "tar",
    ]);
    wait_for("the slow build to start", || {
        let shown = t.run(&["dir", "show", "a", "--json"]);
        shown.code == 0 && shown.stdout.contains("\"state\": \"building\"")
    });
    // The small folder has 8 MiB free, but 6 MB of it is promised to `a`.
    let b = t
        .run(&[
            "use",
            "--name",
            "b",
            "--size",
            "6MB",
            "--dirs",
            &places,
            &server.url("/fast.tar.gz"),
            "tar",
        ])
        .ok();
    assert_eq!(b.trim(), "$T/big/b");
    let err = t
        .run(&[
            "use",
            "--name",
            "c",
            "--size",
            "1PB",
            "--dirs",
            &places,
            &server.url("/fast.tar.gz"),
            "tar",
        ])
        .fails(4);
    assert!(
        err.starts_with("larder: error: no folder has 909.5 TiB free for directory c: $T/small has 8.0 MiB free, ")
            && err.contains("of it reserved by builds in progress, $T/big has "),
        "{err}"
    );
    let a = slow.wait_with_output().expect("wait");
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(String::from_utf8_lossy(&a.stdout).trim(), small.join("a").display().to_string());
    // Once built, only what it wrote counts.
    let d = t
        .run(&[
            "use",
            "--name",
            "d",
            "--size",
            "6MB",
            "--dirs",
            &places,
            &server.url("/fast.tar.gz"),
            "tar",
        ])
        .ok();
    assert_eq!(d.trim(), "$T/small/d");
    for name in ["a", "b", "d"] {
        t.run(&["dir", "rm", "--force", name]).ok();
    }
}

#[test]
fn a_killed_holder_releases_its_repository() {
    use std::os::unix::process::CommandExt;
    let t = TestDir::new();
    let server = Server::start();
    server.add("/p.tar.gz", gzip(&project_tar()));
    let url = server.url("/p.tar.gz");
    let mut holder = t
        .bash(&format!("$L use --name r {url} tar >/dev/null && sleep 30"))
        .process_group(0)
        .spawn()
        .expect("spawn");
    let dir = t.home.join("dirs/r");
    wait_for("the repository", || dir.join("payload/a.txt").exists());
    let mut other = t
        .bash(&format!("$L use --name r {url} tar >/dev/null && sleep 30"))
        .process_group(0)
        .spawn()
        .expect("spawn");
    wait_for("two holders", || t.dir_json("r")["holders"].as_array().is_some_and(|h| h.len() == 2));
    kill9(&mut holder);
    assert_eq!(t.dir_json("r")["holders"].as_array().expect("holders").len(), 1, "one left");
    assert!(dir.exists());
    kill9(&mut other);
    assert!(t.dir_names().is_empty(), "the last holder's death released it");
    assert!(!dir.exists());
    assert_eq!(server.count("/p.tar.gz"), 1);
}

#[test]
fn links_of_two_archives_cannot_lead_outside_together() {
    let t = TestDir::new();
    let server = Server::start();
    // Each link alone stays inside; together, d/e/l leads to the root's parent.
    server.add(
        "/a.tar",
        tar(&[Entry::Dir("d"), Entry::Dir("d/e"), Entry::Symlink("d/e/l", "a/../../..")]),
    );
    server.add(
        "/b.tar",
        tar(&[Entry::Dir("d"), Entry::Dir("d/e"), Entry::Symlink("d/e/a", "../..")]),
    );
    let err = t
        .run(&["use", "--name", "x", &server.url("/a.tar"), "tar", &server.url("/b.tar"), "tar"])
        .fails(2);
    assert!(err.contains("the link `d/e/l` leads outside the directory"), "{err}");
    assert!(t.dir_names().is_empty());
    assert!(staging_folders(&t.home.join("dirs")).is_empty());
}

#[test]
fn modes_and_times_from_archives_are_tamed() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let server = Server::start();
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, mtime) in [
        ("open", tar::EntryType::Directory, 0o777, 1_700_000_000),
        ("open/run", tar::EntryType::Regular, 0o4777, u64::MAX),
        ("open/data", tar::EntryType::Regular, 0o666, 1_600_000_000),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).expect("path");
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(mtime);
        header.set_size(if kind == tar::EntryType::Regular { 2 } else { 0 });
        header.set_cksum();
        let data: &[u8] = if kind == tar::EntryType::Regular { b"hi" } else { b"" };
        b.append(&header, data).expect("append");
    }
    server.add("/modes.tar", b.into_inner().expect("tar"));
    let dir = t.run(&["use", &server.url("/modes.tar"), "tar"]).ok();
    let dir = t.real(&dir);
    let mode = |p: &str| std::fs::metadata(dir.join(p)).expect(p).permissions().mode() & 0o7777;
    assert_eq!(mode("open"), 0o755, "a shared folder is never writable by others");
    assert_eq!(mode("open/run"), 0o755, "no setuid, no write for others");
    assert_eq!(mode("open/data"), 0o644);
    let mtime = std::fs::metadata(dir.join("open/data")).expect("data").modified().expect("mtime");
    assert_eq!(mtime, std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
}

#[test]
fn a_checksum_after_a_decompression_checks_what_tar_reads() {
    let t = TestDir::new();
    let server = Server::start();
    let inner = project_tar();
    server.add("/p.tar.gz", gzip(&inner));
    let url = server.url("/p.tar.gz");
    let good = format!("sha256:{}", sha256_hex(&inner));
    let dir = t.run(&["use", "--name", "good", &url, "gunzip", &good, "tar"]).ok();
    assert_project(&t.real(&dir));
    let bad = format!("sha256:{}", "1".repeat(64));
    let err = t.run(&["use", "--name", "bad", &url, "gunzip", &bad, "tar"]).fails(3);
    assert!(err.contains("but the recipe expects 1111"), "{err}");
    assert_eq!(t.dir_names(), vec!["good".to_string()]);
}

#[test]
fn downloads_larger_than_the_store_are_unpacked_without_being_kept() {
    let t = TestDir::new();
    let server = Server::start();
    let big = gzip(&tar(&[Entry::File("big.bin", &bytes(9, 3_000_000))]));
    server.add("/big.tar.gz", big);
    let dir = t.run(&["--capacity", "1MB", "use", &server.url("/big.tar.gz"), "tar"]).ok();
    assert_eq!(std::fs::read(t.real(&dir).join("big.bin")).expect("big"), bytes(9, 3_000_000));
    assert_eq!(t.json(&["ls", "--json"]), serde_json::json!([]));
    // A plain file counts against --size though it is a link to the store.
    server.add("/plain.bin", bytes(1, 3_000_000));
    let err = t.run(&["use", "--size", "1MB", &server.url("/plain.bin")]).fails(2);
    assert!(err.contains("given with --size"), "{err}");
}

/// Regression: a blob bound to a recipe download's key (a key anyone can
/// compute from a public recipe) was unpacked without the recipe's checksums.
#[test]
fn a_poisoned_download_cache_is_checked_against_the_recipe() {
    let t = TestDir::new();
    let server = Server::start();
    let good = gzip(&project_tar());
    server.add("/a.tar.gz", good.clone());
    let url = server.url("/a.tar.gz");
    // Each recipe's download has a key of its own; both name the same blob.
    let mut seen = Vec::new();
    for check in [format!("md5:{}", md5_hex(&good)), format!("sha256:{}", sha256_hex(&good))] {
        let recipe = [&*url, &check, "tar"];
        let mut args = vec!["use", "--name", "r"];
        args.extend(recipe);
        let dir = t.real(&t.run(&args).ok());
        assert_project(&dir);
        let mut unuse = vec!["unuse", "--name", "r"];
        unuse.extend(recipe);
        t.run(&unuse).ok();
        let keys = t.json(&["ls", "--json"]);
        let key = keys
            .as_array()
            .expect("array")
            .iter()
            .flat_map(|e| e["keys"].as_array().cloned().unwrap_or_default())
            .filter_map(|k| k.as_str().map(String::from))
            .find(|k| k.starts_with("larder/downloads/") && !seen.contains(k))
            .unwrap_or_else(|| panic!("no new download key in {keys}"));
        seen.push(key.clone());
        // Neither door binds larder's own keys.
        let evil = gzip(&tar(&[Entry::File("payload/a.txt", b"evil\n")]));
        let evil_path = t.file("evil.tar.gz", &evil);
        let evil_path = evil_path.to_str().expect("utf-8");
        let refused = t.run(&["put", evil_path, "--key", &key]).fails(2);
        assert!(refused.contains("larder keeps for itself"), "{refused}");
        let s = crate::serve::Served::start(&t, &[]);
        let put = crate::serve::curl(&["-T", evil_path, &format!("{}/{key}", s.url)]);
        assert_eq!(put.status, 403, "{}", put.text());
        drop(s);
        // Bound behind the doors' backs, the recipe's checksum still decides.
        let store = larder::Store::open(&t.home, 1 << 30).expect("open the store");
        let opts = larder::PutOptions { key: Some(key.clone()), ..Default::default() };
        store
            .put_reader(&mut evil.as_slice(), &opts, &larder::NoProgress)
            .expect("bind the evil blob");
        drop(store);
        let before = server.count("/a.tar.gz");
        let dir = t.real(&t.run(&args).ok());
        assert_project(&dir);
        assert_eq!(server.count("/a.tar.gz"), before + 1, "downloaded again");
        t.run(&unuse).ok();
    }
}

/// Starts `larder ARGS` on a pseudo-terminal 72 columns wide (through
/// `script`); its standard output is everything larder drew.
fn on_a_terminal(t: &TestDir, args: &str) -> Child {
    t.bash(&format!("script -qefc \"stty rows 24 cols 72; $L {args}\" /dev/null"))
        .env("TERM", "xterm")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script")
}

/// Regression: nothing showed for downloads under 32 MiB, a waiter's line
/// could freeze at `0 B 0 B/s`, its first rates were wrong, and its line
/// wrapped. Every wait over a second shows, within the terminal's width;
/// a pipe gets nothing.
#[test]
fn every_wait_over_a_second_shows_progress_on_a_terminal_and_none_in_a_pipe() {
    let t = TestDir::new();
    let server = Server::start();
    let archive = gzip(&tar(&[Entry::File("data.bin", &bytes(3, 600_000))]));
    server.add("/p.tar.gz", archive.clone());
    // About three seconds.
    server.throttle("/p.tar.gz", archive.len() / 3);
    let url = server.url("/p.tar.gz");
    let builder = on_a_terminal(&t, &format!("use --name p {url} tar"));
    wait_for("the build to start", || t.dir_names().contains(&"p".to_string()));
    let waiter = on_a_terminal(&t, &format!("use --name p {url} tar"));
    let piped = t.spawn(&["use", "--name", "p", &url, "tar"]);
    let (builder, waiter, piped) = (finish(builder), finish(waiter), finish(piped));
    assert_eq!(builder.code, 0, "{builder:#?}");
    assert!(builder.stdout.contains("downloading p.tar.gz"), "{builder:#?}");
    assert!(waiter.stdout.contains("waiting for pid"), "{waiter:#?}");
    assert!(waiter.stdout.contains("downloading p.tar.gz"), "{waiter:#?}");
    for run in [&builder, &waiter] {
        // Lines are drawn padded to the terminal's width: cut into rows of
        // 72 columns, each row is one whole line (a bar row starts with its
        // bar); a line wider than the terminal would spill into the next row.
        let text = strip_escapes(&run.stdout);
        for segment in text.split(['\n', '\r']) {
            let chars: Vec<char> = segment.chars().collect();
            for row in chars.chunks(72) {
                let row: String = row.iter().collect();
                if row.contains(" eta ") {
                    assert!(row.starts_with('['), "{row:?} is not a whole line of 72 columns");
                }
            }
        }
    }
    assert_eq!(piped.stderr, "", "a pipe gets no progress");
}

/// `text` without terminal escape sequences.
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn an_unchecked_download_is_revalidated_when_a_directory_is_built_from_it() {
    let t = TestDir::new();
    let server = Server::start();
    server.add("/ver.txt", b"v1\n".to_vec());
    let url = server.url("/ver.txt");
    let use_v = |extra: &[&str]| {
        let mut args = vec!["use", "--name", "v"];
        args.extend_from_slice(extra);
        args.push(&url);
        let run = t.run_with(t.command().env("LARDER_HTTP_RETRIES", "0").args(&args));
        assert_eq!(run.code, 0, "{run:#?}");
        let text = std::fs::read_to_string(t.real(&run.stdout).join("ver.txt")).expect("ver.txt");
        (text, run.stderr)
    };
    let unuse_v = || t.run(&["unuse", "--name", "v"]).ok();

    // The first build downloads it, and says how to pin it.
    let (text, said) = use_v(&[]);
    assert_eq!(text, "v1\n");
    let pinned = format!("`http:{url} sha256:{}`", sha256_hex(b"v1\n"));
    assert!(said.contains(&pinned), "the sha256 in a form to paste: {said}");
    assert_eq!((server.full_gets("/ver.txt"), server.conditional_gets("/ver.txt")), (1, 0));
    unuse_v();

    // Unchanged on the server: a conditional request, answered 304, reuses it.
    let (text, _) = use_v(&[]);
    assert_eq!(text, "v1\n");
    assert_eq!(server.not_modified("/ver.txt"), 1);
    assert_eq!(server.full_gets("/ver.txt"), 1, "nothing downloaded again");
    // --refresh on a directory that exists downloads nothing, and says so.
    let (_, said) = use_v(&["--refresh"]);
    assert!(said.contains("built already and is in use"), "{said}");
    assert_eq!(server.full_gets("/ver.txt"), 1);
    unuse_v();

    // Changed on the server: the new directory has the new content.
    server.add("/ver.txt", b"v2\n".to_vec());
    let (text, said) = use_v(&[]);
    assert_eq!(text, "v2\n");
    assert!(said.contains(&sha256_hex(b"v2\n")), "{said}");
    assert_eq!(server.conditional_gets("/ver.txt"), 2);
    assert_eq!(server.full_gets("/ver.txt"), 2);
    unuse_v();
    let keys = t.json(&["ls", "--json"]);
    let kept: Vec<&serde_json::Value> = keys
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["keys"].as_array().is_some_and(|k| !k.is_empty()))
        .collect();
    assert_eq!(kept.len(), 1, "the key names the new version only: {keys}");
    assert_eq!(kept[0]["digest"], format!("sha256:{}", sha256_hex(b"v2\n")));

    // --refresh downloads it again, unconditionally.
    let (text, _) = use_v(&["--refresh"]);
    assert_eq!(text, "v2\n");
    assert_eq!(server.full_gets("/ver.txt"), 3);
    assert_eq!(server.conditional_gets("/ver.txt"), 2);
    unuse_v();

    // The server down: the kept copy is used, and the warning says so.
    server.stop();
    let (text, said) = use_v(&[]);
    assert_eq!(text, "v2\n");
    assert!(said.contains("cannot ask whether ver.txt changed"), "{said}");
    assert!(said.contains("using the copy kept in the store"), "{said}");
    assert!(said.contains("--refresh"), "{said}");
    unuse_v();
    // Refreshing from a server that is down fails, naming the URL.
    let run = t.run_with(t.command().env("LARDER_HTTP_RETRIES", "0").args([
        "use",
        "--name",
        "v",
        "--refresh",
        &url,
    ]));
    assert_ne!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains(&url) && run.stderr.contains("cannot connect"), "{run:#?}");
}
