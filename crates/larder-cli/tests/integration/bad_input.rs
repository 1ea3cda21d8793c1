//! Bad input gets one clear line, the documented exit code, and loses nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::util::{TestDir, bytes, flip_byte};

#[test]
fn a_missing_file() {
    let t = TestDir::new();
    let kept = t.put("kept", "kept");
    let err = t.run(&["put", "/no/such/file"]).fails(1);
    assert_eq!(err, "larder: error: /no/such/file does not exist; check the path\n");
    assert_eq!(t.run(&["has", &kept]).code, 0);
}

#[test]
fn one_bad_file_among_many_does_not_stop_the_others() {
    let t = TestDir::new();
    let a = t.file("a", "a");
    let run = t.run(&["put", a.to_str().expect("utf-8"), "/no/such/file"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("$T/a"), "{run:#?}");
    assert_eq!(t.json(&["stats", "--json"])["entries"], 1);
}

#[test]
fn a_folder_instead_of_a_file() {
    let t = TestDir::new();
    let err = t.run(&["put", t.path().to_str().expect("utf-8")]).fails(2);
    assert!(err.contains("is a folder; put the files in it"), "{err}");
}

#[test]
fn malformed_digests_and_keys() {
    let t = TestDir::new();
    for (args, code, text) in [
        (vec!["get", "sha256:abc", "-o", "-"], 2, "malformed digest `sha256:abc`"),
        (vec!["has", "sha256:zz"], 2, "malformed digest"),
        (vec!["rm", "sha256:"], 2, "malformed digest"),
        (vec!["get", "no/such/key", "-o", "-"], 1, "no entry has the key `no/such/key`"),
        (vec!["pin", "no/such/key"], 1, "no entry has the key"),
        (vec!["put", "-", "--key", ""], 2, "key `` is empty"),
    ] {
        let err = t.run(&args).fails(code);
        assert!(err.contains(text), "{args:?}: {err}");
    }
}

#[test]
fn get_refuses_to_print_binary_to_a_terminal_only() {
    // In a pipe (as here), get without -o writes to standard output.
    let t = TestDir::new();
    let digest = t.put("p", "piped");
    assert_eq!(t.run(&["get", &digest]).ok(), "piped");
}

#[test]
fn a_flipped_byte_is_never_served() {
    let t = TestDir::new();
    let data = bytes(3, 200_000);
    let digest = t.put("d", &data);
    let other = t.put("o", "other");
    flip_byte(&t.blob_path(&digest), 100_000);
    let out = t.path().join("out");
    let err = t.run(&["get", &digest, "-o", out.to_str().expect("utf-8")]).fails(3);
    assert!(err.contains(&format!("{digest} is corrupt")), "{err}");
    assert!(err.contains("put the original again"), "{err}");
    assert!(!out.exists(), "no corrupt output may appear");
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("larder-get"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Standard output gets nothing either.
    t.put("d2", &data);
    flip_byte(&t.blob_path(&digest), 5);
    let run = t.run(&["get", &digest, "-o", "-"]);
    assert_eq!(run.code, 3);
    assert_eq!(run.stdout, "");
    // Everything else is intact, and the store is consistent.
    assert_eq!(t.run(&["get", &other]).ok(), "other");
    assert_eq!(t.verify()["clean"], true);
    t.put("d3", &data);
    assert!(t.command().args(["get", &digest]).output().expect("get").stdout == data);
}

#[test]
fn a_home_another_user_owns() {
    let t = TestDir::new();
    let digest = t.put("x", "x");
    std::os::unix::fs::chown(&t.home, Some(65534), Some(65534)).expect("chown (tests run as root)");
    let err = t.run(&["stats"]).fails(5);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(err.contains("set LARDER_HOME to a folder of your own"), "{err}");
    std::os::unix::fs::chown(&t.home, Some(0), Some(0)).expect("chown back");
    assert_eq!(t.run(&["has", &digest]).code, 0);
}

#[test]
fn an_unreadable_file() {
    // Root reads everything, so read as the unprivileged user `nobody`.
    let t = TestDir::new();
    let secret = t.file("secret", "secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let home = t.path().join("nobody-home");
    std::fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).expect("chown");
    for dir in [t.path(), &t.work()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", crate::util::LARDER, "put"])
        .arg(&secret)
        .env_clear()
        .env("LARDER_HOME", &home)
        .current_dir("/");
    let err = t.run_with(&mut cmd).fails(5);
    assert_eq!(
        err,
        "larder: error: cannot read $T/secret: Permission denied; check its permissions\n"
    );
}

/// Mounts a small tmpfs; unmounts it on drop.
pub struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    pub fn mount(at: &'a Path, size: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(at).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root, as the test command runs");
        Tmpfs(at)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_one_write_and_keeps_the_store() {
    let t = TestDir::new();
    let mount = t.path().join("small");
    let _fs = Tmpfs::mount(&mount, "2m");
    let home = mount.join("home");
    let with_home = |args: &[&str]| {
        let mut cmd = t.command();
        cmd.args(args).env("LARDER_HOME", &home);
        t.run_with(&mut cmd)
    };
    let small = t.file("small.bin", bytes(1, 300_000));
    let digest = with_home(&["put", small.to_str().expect("utf-8")]).ok().trim().to_string();
    let big = t.file("big.bin", bytes(2, 3_000_000));
    let err = with_home(&["put", big.to_str().expect("utf-8")]).fails(4);
    assert!(err.contains("No space left on device; free space on that disk"), "{err}");
    // Nothing half-written stays behind, and the old entry is whole.
    assert_eq!(std::fs::read_dir(home.join("store-v1/tmp")).expect("ls").count(), 0);
    let out = with_home(&["verify", "--json"]).ok();
    assert!(out.contains("\"clean\": true"), "{out}");
    let got = t.path().join("got");
    with_home(&["get", &digest, "-o", got.to_str().expect("utf-8")]).ok();
    assert!(std::fs::read(got).expect("read") == bytes(1, 300_000));
    // And once there is room again, puts work.
    with_home(&["put", t.file("more", "more").to_str().expect("utf-8")]).ok();
}

#[test]
fn a_put_of_many_files_on_a_full_disk_says_so_in_one_line() {
    let t = TestDir::new();
    let mount = t.path().join("small");
    // Room for the index and some of the files, whichever order the
    // parallel puts stage them in.
    let _fs = Tmpfs::mount(&mount, "8m");
    let files: Vec<String> = (0..30)
        .map(|i| {
            let path = t.file(&format!("many/f{i:02}"), bytes(100 + i, 400_000));
            path.to_str().expect("utf-8").to_string()
        })
        .collect();
    let mut cmd = t.command();
    cmd.arg("put").args(&files).env("LARDER_HOME", mount.join("home"));
    let run = t.run_with(&mut cmd);
    assert_eq!(run.code, 4, "{run:#?}");
    let stored = run.stdout.lines().count();
    assert!(stored > 0 && stored < 30, "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line for all the files: {}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "larder: error: {} of 30 files were not stored; the first: ",
            30 - stored
        )) && (run.stderr.contains("No space left on device")
            || run.stderr.contains("disk is full")),
        "{}",
        run.stderr
    );
}

/// Sets a file's modification time back to what it was, as a careful tamperer
/// (or a disk flipping bits under an unchanged inode) would leave it.
fn keep_mtime_while(path: &Path, change: impl FnOnce()) {
    let before = std::fs::metadata(path).expect("meta").modified().expect("mtime");
    change();
    let file = std::fs::File::options().write(true).open(path).expect("open");
    file.set_modified(before).expect("set mtime");
}

#[test]
fn reads_trust_an_unchanged_file_and_verify_reads_trusts_nothing() {
    let t = TestDir::new();
    let data = bytes(4, 50_000);
    let digest = t.put("v", &data);
    let blob = t.blob_path(&digest);
    keep_mtime_while(&blob, || flip_byte(&blob, 10));
    // A file that looks unchanged is served without re-hashing: the cost of
    // not paying SHA-256 on every read, which `verify_reads` and `verify` cover.
    assert_eq!(t.run(&["get", &digest, "-o", "/dev/null"]).code, 0);
    let err = t.run(&["get", &digest, "-o", "/dev/null", "--verify"]).fails(3);
    assert!(err.contains("is corrupt"), "{err}");
    assert_dev_null_is_a_device();
    t.put("v2", &data);
    keep_mtime_while(&blob, || flip_byte(&blob, 10));
    let run = t.run_with(t.command().args(["get", &digest]).env("LARDER_VERIFY_READS", "true"));
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(run.stdout, "");
    t.put("v3", &data);
    keep_mtime_while(&blob, || flip_byte(&blob, 10));
    assert_eq!(t.verify()["corrupt"][0]["digest"], digest.as_str());
}

#[track_caller]
fn assert_dev_null_is_a_device() {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata("/dev/null").expect("/dev/null");
    assert!(
        meta.file_type().is_char_device(),
        "/dev/null was replaced by a {:?}",
        meta.file_type()
    );
}

/// Regression: `get -o /dev/null` renamed its output over /dev/null.
#[test]
fn get_into_a_device_writes_to_it_and_leaves_it_a_device() {
    let t = TestDir::new();
    let digest = t.put("d", bytes(8, 300_000));
    assert_eq!(t.run(&["get", &digest, "-o", "/dev/null"]).code, 0);
    assert_dev_null_is_a_device();
    assert_eq!(t.run(&["get", &digest, "-o", "/dev/null", "--link"]).code, 0);
    assert_dev_null_is_a_device();
    // A fifo gets the bytes too.
    let fifo = t.path().join("fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::read(fifo).expect("read fifo")
    });
    assert_eq!(t.run(&["get", &digest, "-o", fifo.to_str().expect("utf-8")]).code, 0);
    assert_eq!(reader.join().expect("reader"), bytes(8, 300_000));
}
