//! The exit codes of the README's table, one test per row: every way to
//! reach a code exits with it, whoever hits it (a builder or its waiters).

use std::process::{Command, Stdio};

use crate::archives::{Entry, gzip, tar, zip};
use crate::http_server::Server;
use crate::serve::Served;
use crate::util::{TestDir, wait_for};

#[test]
fn exit_1_is_for_what_does_not_exist() {
    let t = TestDir::new();
    assert_eq!(t.run(&["has", "nothing/here"]).code, 1);
    let err = t.run(&["get", "nothing/here", "-o", "-"]).fails(1);
    assert!(err.contains("nothing/here"), "{err}");
}

#[test]
fn exit_2_for_an_output_folder_that_does_not_exist() {
    let t = TestDir::new();
    let digest = t.put("f", "some bytes");
    let err = t.run(&["get", &digest, "-o", "nodir/file"]).fails(2);
    insta::assert_snapshot!(err, @r"larder: error: the folder nodir does not exist; create it first (mkdir -p nodir) or give -o another path");
    assert!(!t.work().join("nodir").exists());
}

/// Serves `archive` and runs `use URL STEP`; the one-line error.
fn unpack(archive: Vec<u8>, name: &str, step: &str) -> String {
    let t = TestDir::new();
    let server = Server::start();
    server.add(&format!("/{name}"), archive);
    let url = server.url(&format!("/{name}"));
    let err = t.run(&["use", "--name", "p", &url, step]).fails(2);
    assert!(t.run(&["dir", "ls", "--json"]).ok().trim() == "[]", "nothing is left");
    err.replace(&url, "URL")
}

#[test]
fn exit_2_for_a_zip_given_to_tar_and_a_tar_given_to_unzip_each_naming_the_other() {
    let project = [Entry::Dir("proj"), Entry::File("proj/a.txt", b"hello\n")];
    let err = unpack(zip(&[("proj/a.txt", b"hello\n")]), "proj-1.0.zip", "tar");
    insta::assert_snapshot!(err, @r"larder: error: tar proj-1.0.zip: this is a zip archive, not a tar; write `unzip` instead of `tar` in the recipe");
    let err = unpack(gzip(&tar(&project)), "proj-1.0.tar.gz", "unzip");
    insta::assert_snapshot!(err, @r"larder: error: unzip proj-1.0.tar.gz: this is a compressed file (a .tar.gz or the like), not a zip; write `tar` instead of `unzip` in the recipe");
    let err = unpack(tar(&project), "proj-1.0.tar", "unzip");
    insta::assert_snapshot!(err, @r"larder: error: unzip proj-1.0.tar: this is a tar archive, not a zip; write `tar` instead of `unzip` in the recipe");
    // Neither a tar nor a zip: said plainly, without the bytes of the header.
    let err = unpack(vec![0xffu8; 4096], "noise.bin", "tar");
    insta::assert_snapshot!(err, @r"larder: error: tar noise.bin: the file is damaged or not a tar archive (a header does not parse)");
}

#[test]
fn exit_3_for_a_bad_checksum_for_the_builder_and_every_waiter() {
    let t = TestDir::new();
    let server = Server::start();
    let body = gzip(&tar(&[Entry::File("big.bin", &crate::util::bytes(5, 1_500_000))]));
    server.add("/big.tar.gz", body.clone());
    // Slow enough for the waiters to come while the builder downloads.
    server.throttle("/big.tar.gz", body.len() / 4);
    let url = server.url("/big.tar.gz");
    let wrong = format!("md5:{}", "0".repeat(32));
    // Each from a shell of its own, as users would: each shell holds the directory.
    let spawn = |log: &str| {
        let log = t.path().join(log);
        let script = format!("$L -v use --name bad {url} {wrong} tar 2>{}; exit $?", log.display());
        t.bash(&script).stdout(Stdio::null()).spawn().expect("spawn")
    };
    let builder = spawn("builder.log");
    wait_for("the build to start", || {
        t.run(&["dir", "show", "bad"]).stdout.contains("building by pid")
    });
    let waiters: Vec<_> = ["w1.log", "w2.log"].into_iter().map(|log| (log, spawn(log))).collect();
    for (log, _) in &waiters {
        wait_for("a waiter to wait", || {
            std::fs::read_to_string(t.path().join(log)).is_ok_and(|l| l.contains("waiting for"))
        });
    }
    for (log, child) in std::iter::once(("builder.log", builder)).chain(waiters) {
        let out = child.wait_with_output().expect("wait");
        let text = std::fs::read_to_string(t.path().join(log)).expect("log");
        assert_eq!(out.status.code(), Some(3), "{log}: {text}");
        assert!(text.contains("but the recipe expects"), "{log}: {text}");
    }
}

#[test]
fn exit_4_for_a_pool_at_its_maximum_and_no_wait_suggested_to_who_waited() {
    let t = TestDir::new();
    assert_eq!(t.run(&["pool", "acquire"]).ok(), "local\n");
    let err = t.run(&["pool", "acquire"]).fails(4);
    assert!(err.contains("wait for one with --wait"), "{err}");
    let err = t.run(&["pool", "acquire", "--wait", "1s"]).fails(4);
    assert!(
        err.starts_with("larder: error: source `local` cannot give 1 instance: it may have at most 1 at once (now: local held by pid ")
            && err.ends_with("; none came free in 1s; release one with larder pool release, or raise maximum= in the implicit local source\n")
            && !err.contains("--wait"),
        "{err}"
    );
}

#[test]
fn exit_5_for_a_remote_that_refuses_the_credentials() {
    let t = TestDir::new();
    let users = t.path().join("users");
    let status = Command::new("htpasswd")
        .args(["-bcB"])
        .arg(&users)
        .args(["alice", "pw"])
        .stderr(Stdio::null())
        .status();
    assert!(status.expect("htpasswd").success());
    let server_home = TestDir::new();
    let served = Served::start(&server_home, &["-u", users.to_str().expect("utf-8")]);
    t.file(
        "user/.config/larder/config.toml",
        format!("[[remote]]\nname = \"team\"\nurl = \"http://alice@{}\"\n", served.addr),
    );
    let check = t.run_with(t.command().env("LARDER_PASSWORD", "wrong").args(["remote", "check"]));
    assert_eq!(check.code, 5, "{check:#?}");
    assert!(check.stdout.contains("refused alice's credentials"), "{check:#?}");
    let err = t
        .run_with(t.command().env("LARDER_PASSWORD", "wrong").args(["get", "some/key", "-o", "-"]))
        .fails(5);
    assert!(err.contains("refused alice's credentials"), "{err}");
    t.run_with(t.command().env("LARDER_PASSWORD", "pw").args(["remote", "check"])).ok();
}

#[test]
fn exit_127_for_a_command_that_does_not_exist_as_shells_do() {
    let t = TestDir::new();
    let err = t.run(&["use", "--", "no-such-command-here"]).fails(127);
    insta::assert_snapshot!(err, @r"larder: error: cannot run `no-such-command-here`: no such command (it is not in PATH); check the command after --");
    assert_eq!(t.run(&["use", "--", "sh", "-c", "exit 7"]).code, 7);
}
