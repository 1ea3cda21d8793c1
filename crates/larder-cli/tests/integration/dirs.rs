//! Shared scratch directories: use, unuse, dir ls/show/lock/unlock/meta/rm,
//! and holders that die.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{LARDER, TestDir, wait_for};

impl TestDir {
    fn dirs(&self) -> serde_json::Value {
        self.json(&["dir", "ls", "--json"])
    }

    /// A bash process that holds directory `name` until killed.
    fn spawn_holder(&self, name: &str) -> std::process::Child {
        let child = Command::new("bash")
            .args(["-c", &format!("$L use --name {name} >/dev/null && sleep 30")])
            .env("L", LARDER)
            .env("LARDER_HOME", &self.home)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let dir = self.home.join("dirs").join(name);
        wait_for("the holder", || dir.is_dir());
        child
    }
}

#[test]
fn a_script_uses_and_unuses_a_named_directory() {
    let t = TestDir::new();
    let out = t
        .script(
            r#"set -e
            p=$($L use --name=scratch)
            test -d "$p"
            echo "$p"
            $L dir ls
            $L dir meta scratch owner=alice stage=train >/dev/null
            $L dir meta scratch --json
            $L unuse --name scratch
            test ! -e "$p" && echo gone"#,
        )
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "$T/home/dirs/scratch");
    assert!(lines[1].starts_with("NAME") && lines[2].starts_with("scratch"), "{out}");
    assert!(out.contains("\"owner\": \"alice\"") && out.contains("\"id\": \"scratch\""), "{out}");
    assert!(out.contains("\"created_at\": \"20"), "{out}");
    assert_eq!(lines.last(), Some(&"gone"));
    assert_eq!(t.dirs(), serde_json::json!([]));
}

#[test]
fn unnamed_directories_get_an_id_and_unuse_takes_the_path() {
    let t = TestDir::new();
    let out = t
        .script(
            r#"set -e
            a=$($L use); b=$($L use)
            test "$a" != "$b" && test -d "$a" && test -d "$b"
            $L unuse "$a"; test ! -e "$a"; test -d "$b"; echo ok"#,
        )
        .ok();
    assert_eq!(out, "ok\n");
    // The script is gone, so its remaining directory is released by whoever looks.
    assert_eq!(t.dirs(), serde_json::json!([]));
}

#[test]
fn the_last_of_several_holders_deletes_it() {
    let t = TestDir::new();
    let dir = t.home.join("dirs/shared");
    let mut first = t.spawn_holder("shared");
    t.script("$L use --name shared >/dev/null && $L unuse --name shared").ok();
    assert!(dir.is_dir(), "the first holder still holds it");
    let shown = t.json(&["dir", "show", "shared", "--json"]);
    assert_eq!(shown["holders"].as_array().map(Vec::len), Some(1));
    first.kill().expect("kill -9");
    first.wait().expect("wait");
    // A SIGKILLed holder is released by whoever looks next.
    assert_eq!(t.dirs(), serde_json::json!([]));
    assert!(!dir.exists());
}

#[test]
fn a_killed_use_command_releases_its_directory() {
    let t = TestDir::new();
    let mut child = t
        .command()
        .args(["use", "--name", "job", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let dir = t.home.join("dirs/job");
    wait_for("the directory", || dir.is_dir());
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    assert_eq!(t.run(&["dir", "show", "job"]).code, 1);
    assert!(!dir.exists());
}

#[test]
fn use_with_a_command_sets_larder_dir_and_passes_the_exit_status() {
    let t = TestDir::new();
    let run = t.run(&[
        "use",
        "--name",
        "c",
        "--",
        "sh",
        "-c",
        "test -d \"$LARDER_DIR\" && echo $LARDER_DIR && exit 7",
    ]);
    assert_eq!(run.code, 7, "{run:#?}");
    assert_eq!(run.stdout, "$T/home/dirs/c\n");
    assert!(!Path::new(&t.home.join("dirs/c")).exists());
    let err = t.run(&["use", "--", "no-such-program-here"]).fails(127);
    assert!(err.contains("cannot run `no-such-program-here`"), "{err}");
}

#[test]
fn a_locked_directory_survives_its_holders_until_unlocked() {
    let t = TestDir::new();
    let out = t
        .script(
            r#"set -e
            p=$($L use --name keep)
            touch "$p/model.bin"
            $L dir lock keep
            $L unuse --name keep
            test -f "$p/model.bin" && echo kept
            $L dir unlock keep"#,
        )
        .ok();
    assert_eq!(out, "locked keep\nkept\nunlocked keep; nobody held it, so it was deleted\n");
    assert!(!t.home.join("dirs/keep").exists());
}

#[test]
fn a_locked_directory_survives_a_killed_holder_and_use_attaches_to_it() {
    let t = TestDir::new();
    t.script("p=$($L use --name exp) && touch $p/data && $L dir lock exp").ok();
    assert_eq!(t.dirs()[0]["locked"], true);
    // Monolith's existing_cache: attach by name and find the data.
    let out = t.script("p=$($L use --name exp) && ls $p && $L dir unlock exp && $L unuse $p").ok();
    assert_eq!(out, "data\nunlocked exp\n");
    assert_eq!(t.dirs(), serde_json::json!([]));
}

#[test]
fn dir_rm_refuses_held_directories_unless_forced() {
    let t = TestDir::new();
    let mut holder = t.spawn_holder("busy");
    let err = t.run(&["dir", "rm", "busy"]).fails(2);
    assert!(err.contains("directory busy stays: it is held by pid"), "{err}");
    assert_eq!(t.run(&["dir", "rm", "busy", "--force"]).ok(), "deleted busy\n");
    assert!(!t.home.join("dirs/busy").exists());
    holder.kill().expect("kill");
    holder.wait().expect("wait");
}

#[test]
fn bad_names_and_unknown_directories() {
    let t = TestDir::new();
    let err = t.run(&["use", "--name", "../escape"]).fails(2);
    assert!(err.contains("directory name `../escape` is not allowed"), "{err}");
    let err = t.run(&["dir", "show", "nope"]).fails(1);
    assert!(err.contains("there is no directory named nope"), "{err}");
    t.run(&["unuse", "--name", "nope"]).fails(1);
    let err = t.run(&["unuse", "/not/a/larder/dir"]).fails(1);
    assert!(err.contains("is not a larder directory"), "{err}");
    t.script("$L use --name m >/dev/null").ok();
    let err = t.run(&["dir", "meta", "m", "a=1", "novalue"]).fails(2);
    assert!(err.contains("`novalue` is not KEY=VALUE"), "{err}");
}

#[test]
fn dir_meta_reads_one_key_removes_keys_and_keeps_what_larder_set() {
    let t = TestDir::new();
    t.run(&["use", "--name", "s", "--holder", "job", "--ttl", "1h"]).ok();
    t.run(&["dir", "meta", "s", "owner=alice", "stage=2"]).ok();
    assert_eq!(t.run(&["dir", "meta", "s", "owner"]).ok(), "alice\n");
    assert_eq!(t.run(&["dir", "meta", "s", "id"]).ok(), "s\n");
    let err = t.run(&["dir", "meta", "s", "nothere"]).fails(1);
    insta::assert_snapshot!(err, @r"larder: error: directory s has no metadata entry nothere; larder dir meta s lists them");
    let err = t.run(&["dir", "meta", "s", "id=other"]).fails(2);
    insta::assert_snapshot!(err, @r"larder: error: `id` is set by larder for every directory and cannot be changed; use another key");
    let err = t.run(&["dir", "meta", "s", "--rm", "created_at"]).fails(2);
    assert!(err.contains("`created_at` is set by larder"), "{err}");
    let out = t.run(&["dir", "meta", "s", "--rm", "owner", "--rm", "absent"]).ok();
    let keys: Vec<&str> =
        out.lines().skip(1).map(|l| l.split_whitespace().next().unwrap_or("")).collect();
    assert_eq!(keys, ["created_at", "id", "stage"], "{out}");
    assert_eq!(t.run(&["dir", "meta", "s", "id"]).ok(), "s\n");
}

#[test]
fn a_new_directory_goes_to_the_first_folder_with_room() {
    let t = TestDir::new();
    let small = t.path().join("small");
    let _fs = crate::bad_input::Tmpfs::mount(&small, "1m");
    let big = t.path().join("big");
    let dirs = format!("{}:{}", small.display(), big.display());
    let placed = |name: &str, size: &str| {
        let args = ["use", "--name", name, "--size", size, "--dirs", &dirs];
        t.run(&[&args[..], &["--", "sh", "-c", "echo $LARDER_DIR"]].concat()).ok()
    };
    assert_eq!(placed("fits", "100KiB"), "$T/small/fits\n");
    assert_eq!(placed("large", "10MB"), "$T/big/large\n");
    // From the configuration too, and an existing directory stays where it is.
    let held = t
        .script(&format!(
            "p=$(LARDER_DIRS={dirs} $L use --name cfg --size 5MB) && echo $p && $L use --name cfg --size 1PB && $L unuse $p"
        ))
        .ok();
    assert_eq!(held, "$T/big/cfg\n$T/big/cfg\n");
    let err = t.run(&["use", "--size", "1PB", "--dirs", &dirs]).fails(4);
    assert!(err.contains("no folder has 909.5 TiB free for directory"), "{err}");
    assert!(err.contains("$T/small has") && err.contains("$T/big has"), "{err}");
    assert!(err.contains("give other folders with --dirs"), "{err}");
}

/// How long from now (in milliseconds) the hold of `holder` on `name` lasts.
fn lease_left(t: &TestDir, name: &str) -> i64 {
    let shown = t.json(&["dir", "show", name, "--json"]);
    let holder = &shown["holders"][0]["holder"];
    assert_eq!((&holder["kind"], &holder["id"]), (&"token".into(), &"ci-job".into()), "{shown}");
    holder["expires_at"].as_i64().expect("expires_at") - larder::coord::now_ms()
}

#[test]
fn a_named_holder_lasts_its_ttl_and_renews_by_using_again() {
    let t = TestDir::new();
    let path = t.run(&["use", "--name", "tok", "--holder", "ci-job", "--ttl", "90s"]).ok();
    assert_eq!(path, "$T/home/dirs/tok\n");
    assert!((0..=90_000).contains(&lease_left(&t, "tok")));
    // Using it again renews the lease, for the TTL given now.
    t.run(&["use", "--name", "tok", "--holder", "ci-job", "--ttl", "1h30m"]).ok();
    assert!(lease_left(&t, "tok") > 3_600_000);
    let shown = t.run(&["dir", "show", "tok"]).ok();
    let line = shown.lines().find(|l| l.starts_with("  token ci-job (for ")).expect("holder");
    assert!(line.ends_with("s, expires in 89m)") || line.ends_with("s, expires in 88m)"), "{line}");
    assert_eq!(t.dirs()[0]["holders"].as_array().map(Vec::len), Some(1), "one holder");
    t.run(&["unuse", "--name", "tok", "--holder", "ci-job"]).ok();
    assert_eq!(t.dirs(), serde_json::json!([]));
    // A lease that ran out (given its expiry, rather than waited for) is
    // released by whoever looks next, and the directory goes with it.
    let dirs = larder::Dirs::open(&t.home).expect("dirs");
    let expired = larder::coord::Holder::Token {
        id: "ci-job".into(),
        expires_at: larder::coord::now_ms() - 1,
    };
    let spec = larder::DirSpec::scratch(Some("brief"));
    dirs.use_dir(&spec, &expired, &larder::NoProgress).expect("use");
    assert!(t.home.join("dirs/brief").exists());
    assert_eq!(t.dirs(), serde_json::json!([]));
    assert!(!t.home.join("dirs/brief").exists());
    // A hold that would be over as it begins is refused.
    let err = t.run(&["use", "--holder", "x", "--ttl", "0s"]).fails(2);
    assert!(err.contains("ends the hold as it begins"), "{err}");
    let err = t.run(&["use", "--holder", "x", "--ttl", "10y"]).fails(2);
    assert!(err.contains("malformed duration `10y`"), "{err}");
}

#[test]
fn a_terminated_use_command_stops_its_command_and_deletes_at_once() {
    let t = TestDir::new();
    let child = t
        .command()
        .args(["use", "--name", "term", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let dir = t.home.join("dirs/term");
    wait_for("the directory", || dir.is_dir());
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(128 + 15), "the command's death is reported");
    assert!(!dir.exists(), "released and deleted before larder exits");
}

#[test]
fn sixteen_scripts_sharing_one_name_never_see_a_half_deleted_directory() {
    let t = TestDir::new();
    std::thread::scope(|s| {
        for worker in 0..16 {
            let t = &t;
            s.spawn(move || {
                // Each round attaches, writes into the folder and releases;
                // releases race with other workers' attaches and deletions.
                let body = format!(
                    r#"set -e
                    for round in 1 2 3 4 5; do
                        p=$($L use --name shared)
                        test -d "$p"
                        echo {worker} > "$p/w{worker}-$round"
                        $L unuse --name shared
                    done
                    echo done"#
                );
                let run = t.script(&body);
                assert_eq!(run.code, 0, "worker {worker}: {run:#?}");
                assert_eq!(run.stdout, "done\n");
            });
        }
    });
    assert_eq!(t.dirs(), serde_json::json!([]));
    let leftovers: Vec<_> = std::fs::read_dir(t.home.join("dirs"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Regression: in shell idioms other than a bare `$(larder use …)` the shell
/// forks a short-lived subshell (or a wrapper runs larder), so holding the
/// parent process let the directory, with what the script wrote into it, be
/// deleted as soon as `use` returned. The holder is the script itself.
#[test]
fn the_holder_is_the_calling_script_in_every_shell_idiom() {
    let idioms = [
        ("bare", "$($L use --name d)"),
        ("a redirection", "$($L use --name d 2>/dev/null)"),
        ("a pipe", "$($L use --name d | tail -n1)"),
        ("a nested subshell", "$( ( $L use --name d ) )"),
        ("timeout", "$(timeout 60 $L use --name d)"),
        ("env", "$(env $L use --name d 2>/dev/null)"),
        ("nice", "$(nice -n 1 $L use --name d 2>&1)"),
        ("a group", "$({ $L use --name d; } 2>/dev/null)"),
    ];
    for (idiom, substitution) in idioms {
        let t = TestDir::new();
        let out = t
            .script(&format!(
                r#"set -e
                d={substitution}
                echo data > "$d/file"
                $L dir ls >/dev/null
                test -f "$d/file" || {{ echo "deleted under the script"; exit 1; }}
                $L dir show d --json | grep -o '"pid": [0-9]*' | head -n1
                echo "pid $$""#
            ))
            .ok();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{idiom}: {out}");
        assert_eq!(
            lines[0].trim_start_matches("\"pid\": "),
            lines[1].trim_start_matches("pid "),
            "{idiom}: held by the script"
        );
        // The script is gone: its directory goes with it.
        assert_eq!(t.dirs(), serde_json::json!([]), "{idiom}");
        assert!(!t.home.join("dirs/d").exists(), "{idiom}");
    }
}

/// Regression: a `use` whose caller died before larder looked at its parent
/// was held by pid 1, for ever.
#[test]
fn a_use_whose_caller_is_gone_holds_nothing() {
    let t = TestDir::new();
    let out = t.path().join("orphan.out");
    // The subshell outlives its parent, is adopted, and only then runs larder.
    t.script(&format!(
        "( sleep 0.5; exec $L use --name orphan > {0} 2>&1; ) & exit 0",
        out.display()
    ))
    .ok();
    wait_for("the orphan to finish", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.ends_with('\n'))
    });
    let said = std::fs::read_to_string(&out).expect("output");
    assert!(said.contains("the process that ran larder is gone"), "{said}");
    assert_eq!(t.dirs(), serde_json::json!([]));
}

/// Regression: a killed `unuse` (or builder) left `.larder-trash-NAME.*` and
/// `.larder-build-NAME.*` folders that only a later use of the same name
/// removed, so unnamed scratch directories leaked them for good.
#[test]
fn leftovers_of_killed_deletes_and_builds_go_at_the_next_look() {
    let t = TestDir::new();
    t.run(&["use", "--name", "keep", "--", "true"]).ok();
    let dirs = t.home.join("dirs");
    std::fs::create_dir_all(&dirs).expect("mkdir");
    let dead = crate::util::dead_owner();
    let trash = dirs.join(format!(".larder-trash-0f3a9c.{dead}.0"));
    std::fs::create_dir_all(trash.join("sub")).expect("mkdir");
    std::fs::write(trash.join("sub/file"), "x").expect("write");
    let staging = dirs.join(format!(".larder-build-gone.{dead}.3"));
    std::fs::create_dir_all(&staging).expect("mkdir");
    let live = dirs.join(format!(".larder-trash-other.{}.0", crate::util::live_owner()));
    std::fs::create_dir_all(&live).expect("mkdir");
    t.run(&["dir", "ls"]).ok();
    assert!(!trash.exists(), "a dead unuse's trash is removed");
    assert!(!staging.exists(), "a dead builder's staging folder is removed");
    assert!(live.exists(), "a live process's folder stays");
}
