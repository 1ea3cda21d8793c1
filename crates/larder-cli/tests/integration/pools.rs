//! Compute pools (crcache's sources) with the real binary: this host, a
//! command source whose machines are folders, a real sshd, pools of them;
//! concurrent acquires against a maximum, holders killed with SIGKILL, and
//! bad configurations.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::sshd::Sshd;
use crate::util::*;

/// Writes `sources/<name>/source.conf` under the project's `.larder`.
fn source(t: &TestDir, name: &str, conf: &str) -> PathBuf {
    t.file(&format!("work/.larder/sources/{name}/source.conf"), format!("[DEFAULT]\n{conf}"))
}

/// Writes an executable hook `folder/<file>` of the source `name`.
fn hook(t: &TestDir, name: &str, file: &str, body: &str) {
    let path = t.file(&format!("work/.larder/sources/{name}/{file}"), format!("#!/bin/sh\n{body}"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A command source `name` whose machines are folders under `machines/`.
fn folder_machines(t: &TestDir, name: &str, extra: &str) -> PathBuf {
    let machines = t.path().join("machines");
    std::fs::create_dir_all(&machines).expect("mkdir");
    let m = machines.display();
    source(
        t,
        name,
        &format!(
            "type=command\nprovision=mkdir \"{m}/$INSTANCE\"\nrun=cd \"{m}/$INSTANCE\" && \"$@\"\n\
             discard=rm -rf \"{m}/$INSTANCE\"\n{extra}"
        ),
    );
    machines
}

/// A shell that acquires an instance of `source` and then sleeps, holding
/// it; returned once the acquire has printed. `exec` keeps the shell's pid
/// and start time, so the sleeper is the holder.
fn holding_shell(t: &TestDir, source: &str) -> std::process::Child {
    let child = t
        .bash(&format!("$L pool acquire -s {source} > got && exec sleep 600"))
        .spawn()
        .expect("spawn");
    wait_for("the acquire", || {
        std::fs::read_to_string(t.work().join("got")).is_ok_and(|s| s.ends_with('\n'))
    });
    child
}

fn names(out: &str) -> Vec<String> {
    out.split_whitespace().map(str::to_string).collect()
}

fn machines_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read machines")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[test]
fn the_local_source_is_there_by_default_and_run_passes_output_through() {
    let t = TestDir::new();
    insta::assert_snapshot!(t.run(&["pool", "status"]).ok(), @r"
    SOURCE  CACHED  IN-USE  MAX
    local   0       0       1
    ");
    assert_eq!(t.run(&["pool", "acquire"]).ok(), "local\n");
    insta::assert_snapshot!(t.run(&["pool", "status"]).ok(), @r"
    SOURCE  CACHED  IN-USE  MAX
    local   0       1       1
    ");
    // Output and exit status pass through untouched: no \r, no extra lines.
    let run = t.run(&[
        "pool",
        "run",
        "-s",
        "local",
        "--",
        "sh",
        "-c",
        "printf 'a\\nb'; printf e >&2; exit 3",
    ]);
    assert_eq!((run.code, run.stdout.as_str(), run.stderr.as_str()), (3, "a\nb", "e"));
    // crcache's form, without `--`.
    assert_eq!(t.run(&["pool", "run", "-s", "local", "echo", "-n", "foo"]).ok(), "foo");
    let err = t.run(&["pool", "acquire", "-s", "local"]).fails(4);
    assert!(err.contains("source `local` cannot give 1 instance: it may have at most 1 at once (now: local held by pid"), "{err}");
    t.run(&["pool", "release", "local"]).ok();
    let status = t.json(&["pool", "status", "--json", "-a"]);
    assert_eq!(status["sources"][0]["in_use"], serde_json::json!([]));
    assert_eq!(status["instances"], serde_json::json!([]), "reserve 0: thrown away");
}

#[test]
fn run_on_local_needs_no_acquire_and_run_on_a_cached_instance_is_refused() {
    let t = TestDir::new();
    // This host is always there.
    assert_eq!(t.run(&["pool", "run", "-s", "local", "--", "echo", "here"]).ok(), "here\n");
    assert_eq!(t.run(&["pool", "run", "--instance", "local", "--", "true"]).code, 0);
    folder_machines(&t, "vm", "reserve=1\nmaximum=2\n");
    assert_eq!(t.run(&["pool", "acquire", "--source", "vm"]).ok(), "vm-0\n");
    assert_eq!(t.run(&["pool", "run", "-s", "vm-0", "--", "echo", "held"]).ok(), "held\n");
    assert_eq!(t.run(&["pool", "release", "vm-0"]).stderr, "vm-0: cached\n");
    let err = t.run(&["pool", "run", "-s", "vm-0", "--", "true"]).fails(2);
    insta::assert_snapshot!(err, @r"larder: error: `vm-0` is cached, not acquired: another acquire could take it while this runs; acquire it first (larder pool acquire -s vm)");
    let err = t.run(&["pool", "cp", "vm-0:x", "y"]).fails(2);
    assert!(err.contains("is cached, not acquired"), "{err}");
}

#[test]
fn reserve_one_maximum_one_hands_the_cached_instance_out_again() {
    // crcache's "Instance limit exceeded" on the second acquire; its own
    // config folder is read too.
    let t = TestDir::new();
    t.file(
        "work/.crcache/sources/local/source.conf",
        "[DEFAULT]\ntype=local\nreserve=1\nmaximum=1\n",
    );
    assert_eq!(t.run(&["pool", "acquire"]).ok(), "local\n");
    assert_eq!(t.run(&["pool", "release", "local"]).stderr, "local: cached\n");
    insta::assert_snapshot!(t.run(&["pool", "status", "-v"]).ok().replace(&t.path().display().to_string(), "$T"), @r"
    source: local
    cached: local
    in-use: 
    reserve: 1
    maximum: 1
    type: local
    concurrency: probed
    defined in: $T/work/.crcache/sources/local/source.conf
    ");
    assert_eq!(t.run(&["pool", "acquire", "-s", "local"]).ok(), "local\n");
    let all = t.json(&["pool", "acquire", "--json", "-n", "0"]);
    assert_eq!(all, serde_json::json!([]));
}

#[test]
fn a_command_source_makes_runs_copies_and_discards_machines_with_hooks() {
    let t = TestDir::new();
    let machines = folder_machines(&t, "vm", "maximum=4\n");
    let log = t.path().join("hooks.log");
    hook(
        &t,
        "vm",
        "provision.d/10-mark",
        &format!(
            "echo \"provision $1\" >> {log}\n\"{LARDER}\" pool run -s \"$1\" -- sh -c 'echo ready > marker'\n",
            log = log.display()
        ),
    );
    hook(&t, "vm", "provision.d/20-second", &format!("echo \"second $1\" >> {}\n", log.display()));
    hook(&t, "vm", "provision.d/README.md", "exit 1\n");
    hook(&t, "vm", "discard.d/10-note", &format!("echo \"discard $1\" >> {}\n", log.display()));
    let got = names(&t.run(&["pool", "acquire", "-s", "vm", "-n", "2"]).ok());
    assert_eq!(got, ["vm-0", "vm-1"]);
    assert_eq!(machines_in(&machines), ["vm-0", "vm-1"]);
    assert_eq!(std::fs::read_to_string(machines.join("vm-0/marker")).expect("marker"), "ready\n");
    let hooks = std::fs::read_to_string(&log).expect("log");
    for line in ["provision vm-0", "second vm-0", "provision vm-1", "second vm-1"] {
        assert!(hooks.contains(line), "{hooks}");
    }
    let pos = |s: &str| hooks.find(s).expect("line");
    assert!(pos("provision vm-0") < pos("second vm-0"), "run-parts order: {hooks}");

    // cp: a file in, a folder in, out again, and from one machine to another.
    let file = t.file("work/data.txt", "hello\n");
    t.file("work/tree/a/b.txt", "deep\n");
    t.file("work/tree/.hidden", "dot\n");
    t.run(&["pool", "cp", file.to_str().expect("utf-8"), "vm-0:"]).ok();
    t.run(&["pool", "cp", "tree", "vm-0:copied"]).ok();
    t.run(&["pool", "cp", "tree", "vm-0:copied"]).ok();
    assert_eq!(
        t.run(&[
            "pool",
            "run",
            "-s",
            "vm-0",
            "--",
            "cat",
            "data.txt",
            "copied/a/b.txt",
            "copied/.hidden"
        ])
        .ok(),
        "hello\ndeep\ndot\n"
    );
    // As cp -r: a copy onto an existing folder goes inside it.
    assert!(machines.join("vm-0/copied/tree/a/b.txt").exists());
    t.run(&["pool", "cp", "vm-0:copied", "vm-1:"]).ok();
    assert_eq!(
        std::fs::read_to_string(machines.join("vm-1/copied/a/b.txt")).expect("copied"),
        "deep\n"
    );
    t.run(&["pool", "cp", "vm-1:copied/a/b.txt", "back.txt"]).ok();
    assert_eq!(std::fs::read_to_string(t.work().join("back.txt")).expect("back"), "deep\n");
    let err = t.run(&["pool", "cp", "vm-0:missing", "x"]).fails(6);
    assert!(
        err.contains(
            "cannot read vm-0:missing (exit status 2): no such file or folder; the copy at x may be incomplete"
        ),
        "{err}"
    );
    let err = t.run(&["pool", "cp", "tree", "vm-0:no/such/place"]).fails(6);
    assert!(
        err.contains("cannot write vm-0:no/such/place (exit status 2): no/such is no folder"),
        "{err}"
    );
    let err = t.run(&["pool", "cp", "vm-9:x", "y"]).fails(1);
    assert!(err.contains("no instance named `vm-9`"), "{err}");

    // Release: reserve 0, so both go, with discard.d first.
    let released = t.json(&["pool", "release", "--json", "vm-0", "vm-1"]);
    assert_eq!(released[0]["outcome"], "discarded");
    assert!(machines_in(&machines).is_empty());
    let hooks = std::fs::read_to_string(&log).expect("log");
    assert!(hooks.contains("discard vm-0") && hooks.contains("discard vm-1"), "{hooks}");
    // Numbers are not reused.
    assert_eq!(t.run(&["pool", "acquire", "-s", "vm"]).ok(), "vm-2\n");
}

#[test]
fn eight_acquires_at_once_never_exceed_a_maximum_of_three() {
    let t = TestDir::new();
    let log = t.path().join("count.log");
    let machines = folder_machines(&t, "vm", "maximum=3\n");
    hook(
        &t,
        "vm",
        "provision.d/10-count",
        &format!("sleep 0.2; ls {} | wc -l >> {}\n", machines.display(), log.display()),
    );
    // Without --wait: exactly three get one, each a different one.
    let children: Vec<_> = (0..8)
        .map(|i| {
            t.command()
                .args(["pool", "acquire", "-s", "vm", "--holder", &format!("job{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut got = Vec::new();
    let mut refused = 0;
    for child in children {
        let out = child.wait_with_output().expect("wait");
        if out.status.success() {
            got.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("it may have at most 3 at once (now: vm-"), "{err}");
            refused += 1;
        }
    }
    got.sort();
    assert_eq!((got.clone(), refused), (vec!["vm-0".to_string(), "vm-1".into(), "vm-2".into()], 5));
    t.run(&["pool", "release", "vm-0", "vm-1", "vm-2"]).ok();

    // With --wait: all eight get one in turn, never more than three at once.
    let children: Vec<_> = (0..8)
        .map(|_| {
            t.bash("n=$($L pool acquire --wait 120s -s vm) && sleep 0.1 && $L pool release \"$n\"")
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let counts: Vec<u32> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| l.trim().parse().expect("count"))
        .collect();
    assert_eq!(counts.len(), 11, "{counts:?}");
    assert!(counts.iter().all(|&n| (1..=3).contains(&n)), "{counts:?}");
    assert!(machines_in(&machines).is_empty());
}

#[test]
fn a_holder_killed_with_sigkill_gives_its_instance_back() {
    let t = TestDir::new();
    let machines = folder_machines(&t, "vm", "reserve=1\n");
    let mut holder = holding_shell(&t, "vm");
    let status = t.json(&["pool", "status", "--json", "vm"]);
    assert_eq!(status["sources"][0]["in_use"], serde_json::json!(["vm-0"]));
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reap");
    let status = t.json(&["pool", "status", "--json", "vm"]);
    assert_eq!(status["sources"][0]["in_use"], serde_json::json!([]));
    assert_eq!(status["sources"][0]["cached"], serde_json::json!(["vm-0"]), "kept by reserve=1");
    assert_eq!(t.run(&["pool", "acquire", "-s", "vm"]).ok(), "vm-0\n");
    assert_eq!(machines_in(&machines), ["vm-0"]);
}

#[test]
fn a_provisioner_killed_mid_provision_leaves_nothing_behind() {
    let t = TestDir::new();
    let machines = folder_machines(&t, "vm", "");
    hook(
        &t,
        "vm",
        "provision.d/10-slow",
        &format!("touch {}/started; exec sleep 30\n", t.path().display()),
    );
    let mut acquire = t
        .command()
        .args(["pool", "acquire", "-s", "vm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("provisioning", || t.path().join("started").exists());
    acquire.kill().expect("SIGKILL");
    acquire.wait().expect("reap");
    assert_eq!(machines_in(&machines), ["vm-0"]);
    let verbose = t.run(&["pool", "status", "-v", "vm"]).ok();
    assert!(verbose.contains("in-use: \n"), "{verbose}");
    assert!(verbose.contains("last failure: vm-0"), "{verbose}");
    assert!(verbose.contains("its provisioning stopped when pid"), "{verbose}");
    assert!(machines_in(&machines).is_empty(), "the sweeper threw vm-0 away");
    assert_eq!(t.json(&["pool", "status", "-a", "--json"])["instances"], serde_json::json!([]));
}

#[test]
fn provisioning_that_fails_or_hangs_is_thrown_away_and_reported() {
    let t = TestDir::new();
    let machines = folder_machines(&t, "vm", "timeout=1s\n");
    hook(&t, "vm", "provision.d/10-fail", "echo 'no network' >&2; exit 4\n");
    let err = t.run(&["pool", "acquire", "-s", "vm", "-n", "2"]);
    assert_eq!(err.code, 6, "{err:#?}");
    assert!(err.stderr.contains("provision.d/10-fail failed for `vm-"), "{err:#?}");
    assert!(err.stderr.contains("(exit status 4); `vm-"), "{err:#?}");
    assert!(err.stderr.contains("was thrown away"), "{err:#?}");
    assert!(machines_in(&machines).is_empty());
    let status = t.json(&["pool", "status", "--json", "-a"]);
    assert_eq!(status["instances"], serde_json::json!([]));
    assert!(
        status["sources"]
            .as_array()
            .expect("list")
            .iter()
            .any(|s| s["last_failure"]["error"].as_str().is_some_and(|e| e.contains("10-fail")))
    );

    let t = TestDir::new();
    let machines = folder_machines(&t, "vm", "timeout=1s\n");
    hook(&t, "vm", "provision.d/10-hang", "sleep 60\n");
    let err = t.run(&["pool", "acquire", "-s", "vm"]).fails(6);
    assert!(err.contains("10-hang did not finish within 1s; it was killed"), "{err}");
    assert!(machines_in(&machines).is_empty());

    // The source's own provision command failing.
    let t = TestDir::new();
    source(&t, "vm", "type=command\nprovision=exit 3\nrun=\"$@\"\n");
    let err = t.run(&["pool", "acquire", "-s", "vm"]).fails(6);
    assert!(err.contains("provision command of source `vm` failed for `vm-0` (exit status 3); `vm-0` was thrown away"), "{err}");
}

#[test]
fn bad_configurations_and_names_get_one_line_errors() {
    let check = |files: &[(&str, &str)], args: &[&str], code: i32, expected: &str| {
        let t = TestDir::new();
        for (name, text) in files {
            source(&t, name, text);
        }
        // A broken source is also reported as a warning before the error.
        let run = t.run(args);
        assert_eq!(run.code, code, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(expected), "{args:?}: {run:#?}");
    };
    check(
        &[("p", "type=pool\nsources=a\njunk\n")],
        &["pool", "acquire", "-s", "p"],
        2,
        "work/.larder/sources/p/source.conf:4: expected key=value, found `junk`",
    );
    check(
        &[("p", "type=vm\n")],
        &["pool", "acquire", "-s", "p"],
        2,
        "source.conf:2: unknown type `vm`; use local, ssh, pool or command",
    );
    check(
        &[("a", "type=pool\nsources=b\n"), ("b", "type=pool\nsources=local,a\n")],
        &["pool", "acquire", "-s", "a"],
        2,
        "pool `a` contains itself (a → b → a)",
    );
    check(
        &[("a", "type=pool\nsources=ghost\n")],
        &["pool", "acquire", "-s", "a"],
        2,
        "pool `a` lists `ghost`, which is no source",
    );
    check(
        &[],
        &["pool", "release", "nope"],
        1,
        "no instance named `nope`; larder pool status -a lists them",
    );
    check(&[], &["pool", "acquire", "-s", "nope"], 1, "no source named `nope` (sources: local)");
    check(&[], &["pool", "run", "-s", "nope", "--", "true"], 1, "no instance named `nope`");
    check(&[], &["pool", "status", "nope"], 1, "no source named `nope`");
    // The user's definition wins over the project's, as in crcache.
    let t = TestDir::new();
    source(&t, "vm", "type=bogus\n");
    t.file("user/.config/larder/sources/vm/source.conf", "[DEFAULT]\ntype=local\n");
    assert!(t.run(&["pool", "status", "vm"]).ok().contains("vm      0       0       1"));
}

#[test]
fn a_malformed_source_is_reported_and_the_others_still_work() {
    let t = TestDir::new();
    // A typo in the user's crcache folder, which every project reads.
    t.file("user/.config/crcache/sources/typo/source.conf", "[DEFAULT]\ntype=comand\n");
    folder_machines(&t, "vm", "maximum=1\n");
    source(&t, "both", "type=pool\nsources=vm,typo\n");
    let run = t.run(&["pool", "status"]);
    assert_eq!(run.code, 0, "{run:#?}");
    insta::assert_snapshot!(run.stdout, @r"
        SOURCE  CACHED  IN-USE  MAX
        local   0       0       1
        vm      0       0       1
        ");
    let warnings = run.stderr.replace(&t.path().display().to_string(), "$T");
    insta::assert_snapshot!(warnings, @r"
        WARN source `both` cannot be used, the others can: $T/work/.larder/sources/both/source.conf: pool `both` lists `typo`, which cannot be used ($T/user/.config/crcache/sources/typo/source.conf:2: unknown type `comand`; use local, ssh, pool or command)
        WARN source `typo` cannot be used, the others can: $T/user/.config/crcache/sources/typo/source.conf:2: unknown type `comand`; use local, ssh, pool or command
        ");
    assert_eq!(t.run(&["pool", "acquire", "-s", "vm"]).ok(), "vm-0\n");
    // The warnings come first; the error is the last line.
    let run = t.run(&["pool", "acquire", "-s", "typo"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("larder: error: ") && last.contains("unknown type `comand`"),
        "{last}"
    );
}

#[test]
fn pools_pick_the_least_loaded_member_and_show_as_a_tree() {
    let t = TestDir::new();
    folder_machines(&t, "a", "maximum=2\n");
    folder_machines(&t, "b", "maximum=1\nconcurrency=5\n");
    source(&t, "both", "type=pool\nsources=a,b\nreserve=1\n");
    assert_eq!(t.run(&["pool", "acquire", "-s", "a"]).ok(), "a-0\n");
    assert_eq!(t.run(&["pool", "acquire", "-s", "both"]).ok(), "b-0\n");
    assert_eq!(t.run(&["pool", "acquire", "-s", "both"]).ok(), "a-1\n");
    let err = t.run(&["pool", "acquire", "-s", "both", "-n", "2"]).fails(4);
    assert!(err.contains("`both` cannot give 2 instances: it may have at most 3 at once, its members a 2, b 1 (now: a-0 held by"), "{err}");
    // A configured concurrency is reported without probing; others are probed.
    let all = t.json(&["pool", "status", "-a", "--json"]);
    let of = |name: &str| {
        let list = all["instances"].as_array().expect("instances");
        list.iter().find(|i| i["name"] == name).map(|i| i["concurrency"].clone())
    };
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!((of("b-0"), of("a-1")), (Some(5.into()), Some(nproc.into())), "{all}");
    insta::assert_snapshot!(t.run(&["pool", "status", "-t"]).ok(), @r"
    SOURCE  CACHED  IN-USE  MAX
    both    0       2       3
    + a
    + b
    local   0       0       1
    a       0       2       2
    b       0       1       1
    ");
    // `both` keeps one released instance (reserve=1), counting those in use.
    assert_eq!(t.run(&["pool", "release", "a-1"]).stderr, "a-1: discarded\n");
    assert_eq!(t.run(&["pool", "release", "b-0"]).stderr, "b-0: cached\n");
    let status = t.json(&["pool", "status", "--json", "both"]);
    assert_eq!(status["sources"][0]["cached"], serde_json::json!(["b-0"]));
    assert_eq!(t.run(&["pool", "acquire", "-s", "both"]).ok(), "b-0\n", "cached first");
}

#[test]
fn an_ssh_source_runs_copies_and_probes_on_a_real_sshd() {
    let t = TestDir::new();
    let sshd = Sshd::start(&t.path().join("sshd"));
    source(
        &t,
        "host",
        &format!("type=ssh\nssh_host={}\nssh_config={}\n", sshd.alias, sshd.config.display()),
    );
    assert_eq!(t.run(&["pool", "acquire", "-s", "host"]).ok(), "host\n");
    // Bytes, arguments and exit status pass through as they are.
    let run =
        t.run(&["pool", "run", "-s", "host", "--", "printf", "%s|", "a b", "it's", "$HOME", "*"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "a b|it's|$HOME|*|"), "{run:#?}");
    // Plain ssh hands its arguments to the remote shell to split again.
    let plain = sshd.ssh().args(["echo", "one  two"]).output().expect("ssh");
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "one two\n", "plain ssh: {plain:?}");
    let run = t.run(&["pool", "run", "-s", "host", "--", "echo", "one  two"]);
    assert_eq!(run.stdout, "one  two\n", "larder keeps it one argument");
    let run = t.run(&["pool", "run", "-s", "host", "--", "sh", "-c", "printf 'x\\ny\\n'; exit 7"]);
    assert_eq!((run.code, run.stdout.as_str()), (7, "x\ny\n"), "no \\r\\n: {run:#?}");
    let remote = t.path().join("remote");
    std::fs::create_dir_all(&remote).expect("mkdir");
    t.file("work/tree/f.txt", "over ssh\n");
    t.run(&["pool", "cp", "tree", &format!("host:{}", remote.display())]).ok();
    assert_eq!(std::fs::read_to_string(remote.join("tree/f.txt")).expect("copied"), "over ssh\n");
    t.run(&["pool", "cp", &format!("host:{}/tree/f.txt", remote.display()), "again.txt"]).ok();
    assert_eq!(std::fs::read_to_string(t.work().join("again.txt")).expect("back"), "over ssh\n");
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = t.json(&["pool", "status", "-a", "--json"]);
    assert_eq!(all["instances"][0]["concurrency"], nproc, "probed with nproc: {all}");
    t.run(&["pool", "release", "host"]).ok();

    // A host that refuses: a clear error, and nothing left in use.
    let closed = crate::sshd::free_port();
    let config =
        t.file("refusing_config", format!("Host down\n  HostName 127.0.0.1\n  Port {closed}\n"));
    source(&t, "down", &format!("type=ssh\nssh_host=down\nssh_config={}\n", config.display()));
    let err = t.run(&["pool", "acquire", "-s", "down"]).fails(6);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(err.contains("check that `ssh down true` works"), "{err}");
    assert_eq!(t.json(&["pool", "status", "-a", "--json"])["instances"], serde_json::json!([]));
}

#[test]
fn a_discard_that_keeps_failing_is_reported_and_can_be_forgotten() {
    let t = TestDir::new();
    source(&t, "vm", "type=command\nrun=\"$@\"\ndiscard=echo 'host gone' >&2; exit 1\nmaximum=1\n");
    assert_eq!(t.run(&["pool", "acquire", "-s", "vm"]).ok(), "vm-0\n");
    // The discard command's own words pass through, then larder's one line.
    let run = t.run(&["pool", "release", "vm-0"]);
    assert_eq!(run.code, 6, "{run:#?}");
    assert!(run.stderr.starts_with("host gone\n"), "{run:#?}");
    assert!(
        run.stderr.contains("throwing `vm-0` away failed")
            && run.stderr.contains("tries again later"),
        "{run:#?}"
    );
    let all = t.json(&["pool", "status", "-a", "--json"]);
    assert_eq!(all["instances"][0]["state"], "discarding", "{all}");
    // Still counted (the machine may exist), until it is forgotten.
    t.run(&["pool", "acquire", "-s", "vm"]).fails(4);
    assert_eq!(t.run(&["pool", "release", "--forget", "vm-0"]).stderr, "vm-0: forgotten\n");
    assert_eq!(t.run(&["pool", "acquire", "-s", "vm"]).ok(), "vm-1\n");
    t.run(&["pool", "release", "--forget", "nope"]).fails(1);
}

#[test]
fn instances_of_a_source_defined_elsewhere_are_left_alone() {
    let t = TestDir::new();
    let machines = folder_machines(&t, "vm", "");
    let mut holder = holding_shell(&t, "vm");
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reap");
    // From a folder that does not define `vm`: its instance is not swept.
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let mut cmd = t.command();
    let all = t.run_with(cmd.current_dir(&elsewhere).args(["pool", "status", "-a", "--json"])).ok();
    assert!(all.contains("\"vm-0\""), "{all}");
    assert_eq!(machines_in(&machines), ["vm-0"]);
    // Where it is defined, the dead holder's instance is thrown away.
    let all = t.json(&["pool", "status", "-a", "--json"]);
    assert_eq!(all["instances"], serde_json::json!([]));
    assert!(machines_in(&machines).is_empty());
}

#[test]
fn a_copy_refused_at_the_destination_does_not_hang() {
    let t = TestDir::new();
    folder_machines(&t, "vm", "");
    assert_eq!(t.run(&["pool", "acquire", "-s", "vm"]).ok(), "vm-0\n");
    // More than a pipe holds, so the packer blocks unless the pipe closes.
    t.file("work/big/data.bin", bytes(3, 4_000_000));
    let err = t.run(&["pool", "cp", "big", "vm-0:no/such/place"]).fails(6);
    assert!(err.contains("cannot write vm-0:no/such/place"), "{err}");
}
