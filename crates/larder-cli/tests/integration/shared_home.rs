//! A home shared by a Unix group (`larder init --shared-group`): two real
//! users race on one repository, share the store, and release each other's
//! dead holders; a user outside the group is refused.

use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::archives::{Entry, gzip, sha256_hex, tar};
use crate::http_server::Server;
use crate::util::{LARDER, Run, TestDir, wait_for};

const GROUP: &str = "larder-test-build";
const ALICE: &str = "larder-test-alice";
const BOB: &str = "larder-test-bob";
/// Not in the group.
const CAROL: &str = "larder-test-carol";

/// Makes the test users and their group, once per machine.
fn make_users() {
    static MADE: Mutex<bool> = Mutex::new(false);
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if *made {
        return;
    }
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the shared-home tests switch between Unix users, so they run as root (as scripts/test does)"
    );
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().expect(args[0]);
        // 9: the user or group exists already.
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["groupadd", "-f", GROUP]);
    for (user, groups) in [(ALICE, GROUP), (BOB, GROUP), (CAROL, "")] {
        run(&["useradd", "--no-create-home", "--user-group", "--shell", "/bin/sh", user]);
        if !groups.is_empty() {
            run(&["usermod", "-aG", groups, user]);
        }
    }
    *made = true;
}

fn gid_of(group: &str) -> u32 {
    larder::sharing::group_id(group).expect("the test group exists")
}

/// A command run as `user` with their groups, in the test's environment.
fn as_user(t: &TestDir, user: &str, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--", program]);
    cmd.env_clear();
    for (k, v) in t.command().get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.env("L", LARDER).current_dir(t.work()).stdin(Stdio::null());
    cmd
}

fn larder_as(t: &TestDir, user: &str, args: &[&str]) -> Run {
    t.run_with(as_user(t, user, LARDER).args(args))
}

/// A shell script of `user`'s, started in a process group of its own: it
/// holds what it uses until it is killed.
fn script_as(t: &TestDir, user: &str, body: &str) -> Child {
    use std::os::unix::process::CommandExt;
    as_user(t, user, "bash")
        .args(["-c", body])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn bash")
}

fn kill_group(child: &mut Child) {
    // SAFETY: kills the process group this test started.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Reads the first line `child` prints.
fn first_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.as_mut().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).expect("read");
    line.trim().to_string()
}

#[track_caller]
fn assert_group_writable(path: &Path) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(meta.gid(), gid_of(GROUP), "{} belongs to the group", path.display());
    assert_eq!(meta.mode() & 0o060, 0o060, "{} is group-writable", path.display());
}

fn holders(t: &TestDir, user: &str, name: &str) -> Vec<serde_json::Value> {
    let run = larder_as(t, user, &["dir", "show", name, "--json"]);
    let shown: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"));
    shown["holders"].as_array().cloned().unwrap_or_default()
}

#[test]
fn two_users_share_a_home_through_their_group() {
    make_users();
    let t = TestDir::new();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The home exists, with a blob, before it is shared: init hands it over.
    let before = t.put("before.txt", "stored before");
    let said = t.run(&["init", "--shared-group", GROUP]).ok();
    assert!(said.contains(&format!("shared with group {GROUP}")), "{said}");
    let home = std::fs::metadata(&t.home).expect("home");
    assert_eq!(home.mode() & 0o7777, 0o2775);
    assert_group_writable(&t.home.join("store-v1/index.sqlite"));
    assert_group_writable(&t.home.join("state-v1.sqlite"));

    // Outside the group: refused, and told why.
    let err = larder_as(&t, CAROL, &["ls"]).fails(5);
    assert!(err.contains(&format!("shared with group {GROUP}, which you are not in")), "{err}");

    // Both users race on one repository: one download, one build, one path.
    let server = Server::start();
    let archive = gzip(&tar(&[Entry::Dir("payload"), Entry::File("payload/a.txt", b"hello\n")]));
    server.add("/p.tar.gz", archive.clone());
    server.throttle("/p.tar.gz", archive.len());
    let url = server.url("/p.tar.gz");
    let sha = format!("sha256:{}", sha256_hex(&archive));
    let script = format!(
        "set -e; d=$($L use --name repo {url} {sha} tar); echo \"$d\"; cat \"$d/payload/a.txt\" >&2; exec sleep 600"
    );
    let mut alice = script_as(&t, ALICE, &script);
    let mut bob = script_as(&t, BOB, &script);
    let path_a = first_line(&mut alice);
    let path_b = first_line(&mut bob);
    assert!(!path_a.is_empty() && path_a == path_b, "{path_a:?} {path_b:?}");
    assert_eq!(server.count("/p.tar.gz"), 1, "one download for both users");
    let repo = Path::new(&path_a);
    assert_eq!(std::fs::read(repo.join("payload/a.txt")).expect("a.txt"), b"hello\n");
    assert_group_writable(&repo.join("payload"));
    assert_eq!(holders(&t, ALICE, "repo").len(), 2);

    // Both put and get in the one store.
    let put_as = |user: &str, key: &str, text: &str| {
        let file = t.file(&format!("{user}.txt"), text);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let file = file.to_str().expect("utf-8").to_string();
        larder_as(&t, user, &["put", "--key", key, &file]).ok();
    };
    put_as(ALICE, "notes/alice", "from alice");
    put_as(BOB, "notes/bob", "from bob");
    assert_eq!(larder_as(&t, BOB, &["get", "notes/alice", "-o", "-"]).ok(), "from alice");
    assert_eq!(larder_as(&t, ALICE, &["get", "notes/bob", "-o", "-"]).ok(), "from bob");
    assert_eq!(larder_as(&t, ALICE, &["get", &before, "-o", "-"]).ok(), "stored before");
    for db in ["store-v1/index.sqlite", "state-v1.sqlite"] {
        for suffix in ["", "-wal", "-shm"] {
            let path = t.home.join(format!("{db}{suffix}"));
            if path.exists() {
                assert_group_writable(&path);
            }
        }
    }
    assert_eq!(t.verify()["clean"], true);

    // Bob's holder dies: Alice's live one keeps the repository.
    kill_group(&mut bob);
    let left = holders(&t, ALICE, "repo");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(repo.exists());
    // Alice's dies too: whoever looks next (not its builder) deletes it.
    kill_group(&mut alice);
    let builder_uid = std::fs::metadata(repo).expect("repo").uid();
    let other = if Some(builder_uid) == uid_of(ALICE) { BOB } else { ALICE };
    let listed = larder_as(&t, other, &["dir", "ls", "--json"]).ok();
    assert_eq!(listed.trim(), "[]", "{listed}");
    wait_for("the repository to be deleted", || !repo.exists());
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
