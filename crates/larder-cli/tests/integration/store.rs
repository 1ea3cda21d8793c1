//! The store's commands end to end: put, get, has, rm, pin, ls, stats, gc, verify.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::util::{TestDir, bytes, digest_of};

#[test]
fn put_prints_the_digest_and_get_returns_the_bytes() {
    let t = TestDir::new();
    let data = bytes(1, 300_000);
    let digest = t.put("a.bin", &data);
    assert_eq!(digest, digest_of(&data));
    let out = t.path().join("out.bin");
    t.run(&["get", &digest, "-o", out.to_str().expect("utf-8")]).ok();
    assert!(std::fs::read(&out).expect("read") == data);
    // Bare hex works too, as cloud-manager's hashes were.
    let hex = digest.trim_start_matches("sha256:");
    let out = t.command().args(["get", hex, "-o", "-"]).output().expect("run");
    assert!(out.status.success());
    assert!(out.stdout == data);
}

#[test]
fn put_many_files_prints_each_with_its_name() {
    let t = TestDir::new();
    let a = t.file("in/a", "alpha");
    let b = t.file("in/b", "beta");
    let out = t.run(&["put", a.to_str().expect("utf-8"), b.to_str().expect("utf-8")]).ok();
    let expected = format!("{}  $T/in/a\n{}  $T/in/b\n", digest_of(b"alpha"), digest_of(b"beta"));
    assert_eq!(out, expected);
}

#[test]
fn stdin_is_read_with_a_dash() {
    let t = TestDir::new();
    let data = bytes(2, 5_000_000);
    let mut child = t
        .command()
        .args(["put", "-", "--key", "from/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&data).expect("feed");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest_of(&data));
    let got = std::process::Command::new(crate::util::LARDER)
        .env("LARDER_HOME", &t.home)
        .args(["get", "from/stdin", "-o", "-"])
        .output()
        .expect("get");
    assert!(got.stdout == data);
}

#[test]
fn has_answers_by_exit_status() {
    let t = TestDir::new();
    let digest = t.put("x", "x");
    t.run(&["put", t.file("y", "y").to_str().expect("utf-8"), "--key", "why"]).ok();
    for (target, code) in [
        (digest.as_str(), 0),
        ("why", 0),
        ("--local why", 0),
        ("nope", 1),
        ("sha256:0000000000000000000000000000000000000000000000000000000000000000", 1),
    ] {
        let args: Vec<&str> = ["has"].into_iter().chain(target.split(' ')).collect();
        let run = t.run(&args);
        assert_eq!(run.code, code, "has {target}: {run:#?}");
        assert_eq!(run.stdout, "", "has is silent");
    }
}

#[test]
fn keys_share_blobs_and_ls_shows_them() {
    let t = TestDir::new();
    let f = t.file("f", "shared bytes");
    let f = f.to_str().expect("utf-8");
    t.run(&["put", f, "--key", "one"]).ok();
    t.run(&["put", f, "--key", "two", "--pin"]).ok();
    let ls = t.json(&["ls", "--json"]);
    let rows = ls.as_array().expect("array");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["keys"], serde_json::json!(["one", "two"]));
    assert_eq!(rows[0]["pinned"], true);
    insta::assert_snapshot!(t.run(&["ls"]).ok(), @r"
    DIGEST               SIZE  PIN     KEY
    sha256:98aa966a3605  12 B  pinned  one (+1 more)
    ");
    let long = t.run(&["ls", "--long"]).ok();
    assert!(long.contains("one,two"), "{long}");
}

#[test]
fn capacity_evicts_least_recently_used_and_spares_pins() {
    let t = TestDir::new();
    let cap = ["--capacity", "10KiB"];
    let put = |name: &str, seed: u64, extra: &[&str]| {
        let path = t.file(name, bytes(seed, 3000));
        let mut args = vec!["put", path.to_str().expect("utf-8")];
        args.extend_from_slice(&cap);
        args.extend_from_slice(extra);
        t.run(&args).ok().trim().to_string()
    };
    let a = put("a", 1, &["--pin"]);
    let b = put("b", 2, &[]);
    let c = put("c", 3, &[]);
    // Reading b makes c the least recently used.
    t.run(&["get", &b, "-o", "-"]).ok();
    let d = put("d", 4, &[]);
    let has = |d: &str| t.run(&["has", d]).code == 0;
    assert!(has(&a) && has(&b) && !has(&c) && has(&d));
    let stats = t.json(&["stats", "--json", "--capacity", "10KiB"]);
    assert_eq!(stats["bytes"], 9000);
    assert_eq!(stats["capacity"], 10240);
    assert_eq!(stats["pinned_bytes"], 3000);
    // A file larger than the whole capacity is a clear error.
    let big = t.file("big", bytes(9, 20_000));
    let err = t.run(&["put", big.to_str().expect("utf-8"), "--capacity", "10KiB"]).fails(4);
    assert!(err.contains("larger than the store's whole capacity"), "{err}");
    // When pins leave no room, the put fails and nothing is evicted.
    t.run(&["pin", &b, &d]).ok();
    let e = t.file("e", bytes(5, 3000));
    let err = t.run(&["put", e.to_str().expect("utf-8"), "--capacity", "10KiB"]).fails(4);
    assert!(err.contains("no room for") && err.contains("unpin"), "{err}");
    assert!(has(&a) && has(&b) && has(&d));
}

#[test]
fn stats_counts_hits_and_misses() {
    let t = TestDir::new();
    let digest = t.put("s", "stats");
    t.run(&["get", &digest, "-o", "-"]).ok();
    t.run(&["get", "missing-key", "-o", "-"]).fails(1);
    let text = t.run(&["stats"]).ok();
    insta::assert_snapshot!(text, @r"
    TIER   ENTRIES  USED  PINNED  CAPACITY  USAGE  HITS  MISSES  HIT RATIO
    local  1        5 B   0 B     20.0 GiB  0.0%   1     1       50.0%
    ");
    let json = t.json(&["stats", "--json"]);
    assert_eq!(json["entries"], 1);
    assert_eq!(json["hits"], 1);
    assert_eq!(json["misses"], 1);
    assert_eq!(json["tiers"][0]["tier"], "local");
}

#[test]
fn rm_pin_and_unpin() {
    let t = TestDir::new();
    let digest = t.put("r", "remove me");
    t.run(&["pin", &digest]).ok();
    let err = t.run(&["rm", &digest]).fails(2);
    assert!(err.contains("is pinned") && err.contains("larder unpin"), "{err}");
    t.run(&["unpin", &digest]).ok();
    assert_eq!(t.run(&["rm", &digest]).ok(), format!("removed {digest}\n"));
    assert_eq!(t.run(&["has", &digest]).code, 1);
    assert!(!t.blob_path(&digest).exists());
    let err = t.run(&["rm", &digest]).fails(1);
    assert!(err.contains("is not in the store"), "{err}");
}

#[test]
fn rm_of_the_last_key_of_a_pinned_blob_is_refused_and_force_removes_both() {
    let t = TestDir::new();
    let path = t.file("m", "pinned by key");
    let digest = t.run(&["put", path.to_str().expect("utf-8"), "--key", "datasets/m"]).ok();
    let digest = digest.trim();
    t.run(&["put", path.to_str().expect("utf-8"), "--key", "other"]).ok();
    t.run(&["pin", "datasets/m"]).ok();
    // Another key still names it: the key goes, the blob stays.
    let out = t.run(&["rm", "other"]).ok();
    assert_eq!(out, format!("removed other; {digest} stays (named by another key)\n"));
    let err = t.run(&["rm", "datasets/m"]).fails(2);
    insta::assert_snapshot!(err.replace(digest, "DIGEST"), @r"larder: error: datasets/m names DIGEST, which is pinned; unpin it first (larder unpin datasets/m) or pass --force to remove both");
    t.run(&["has", "datasets/m"]).ok();
    let out = t.run(&["rm", "--force", "datasets/m"]).ok();
    assert_eq!(out, format!("removed datasets/m ({digest})\n"));
    assert_eq!(t.run(&["has", digest]).code, 1);
    assert!(!t.blob_path(digest).exists());
}

#[test]
fn short_digests_as_ls_prints_them_are_accepted_when_unambiguous() {
    let t = TestDir::new();
    let digest = t.put("a", "one blob");
    let short = &digest[..19];
    assert!(t.run(&["ls"]).ok().contains(short));
    assert_eq!(t.run(&["get", short, "-o", "-"]).ok(), "one blob");
    t.run(&["has", short]).ok();
    assert_eq!(t.run(&["pin", short]).ok(), format!("pinned {digest}\n"));
    t.run(&["unpin", &digest[..11]]).ok();
    // Two blobs share every prefix of no digits; shorter than 4 is no prefix.
    let err = t.run(&["get", "sha256:", "-o", "-"]).fails(2);
    assert!(err.contains("malformed digest"), "{err}");
    let err = t.run(&["get", "sha256:0000000", "-o", "-"]).fails(1);
    insta::assert_snapshot!(err, @r"larder: error: no stored blob's digest starts with sha256:0000000; `larder ls` lists them");
    // Two blobs whose digests share their first 4 digits: that prefix is ambiguous.
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..)
        .find_map(|i| {
            let text = format!("blob {i}");
            let d = digest_of(text.as_bytes());
            seen.insert(d[..11].to_string(), text.clone()).map(|other| (other, text))
        })
        .expect("a shared prefix");
    let (da, db) = (t.put("a", &a), t.put("b", &b));
    let err = t.run(&["rm", &da[..11]]).fails(2);
    assert!(err.contains("is ambiguous") && err.contains(&da) && err.contains(&db), "{err}");
}

#[test]
fn ls_filters_by_digest_or_key_prefix() {
    let t = TestDir::new();
    let path = t.file("x", "x");
    let x = t.run(&["put", path.to_str().expect("utf-8"), "--key", "datasets/x"]).ok();
    let path = t.file("y", "y");
    t.run(&["put", path.to_str().expect("utf-8"), "--key", "models/y"]).ok();
    t.put("z", "no key");
    let keys = |args: &[&str]| -> Vec<String> {
        let list = t.json(args);
        let mut out: Vec<String> = list
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                e["keys"]
                    .as_array()
                    .expect("keys")
                    .iter()
                    .map(|k| k.as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(keys(&["ls", "--json", "datasets/"]), ["datasets/x"]);
    assert_eq!(keys(&["ls", "--json", &x.trim()[..12]]), ["datasets/x"]);
    assert_eq!(keys(&["ls", "--json", "--key", ""]), ["datasets/x", "models/y"]);
    assert_eq!(keys(&["ls", "--json", "--key", "models"]), ["models/y"]);
    assert_eq!(keys(&["ls", "--json"]).len(), 3);
}

#[test]
fn put_recursive_stores_every_file_of_a_folder() {
    let t = TestDir::new();
    t.file("build/a.o", "a");
    t.file("build/sub/b.o", "b");
    t.file("build/sub/deeper/c.o", "c");
    std::os::unix::fs::symlink(t.path().join("build/sub"), t.path().join("build/loop"))
        .expect("ln");
    let build = t.path().join("build");
    let err = t.run(&["put", build.to_str().expect("utf-8")]).fails(2);
    assert!(err.contains("is a folder; put the files in it (larder put -r"), "{err}");
    let out = t.run(&["put", "-r", build.to_str().expect("utf-8")]).ok();
    let names: Vec<&str> = out.lines().map(|l| l.split("  ").nth(1).unwrap_or("")).collect();
    assert_eq!(names, ["$T/build/a.o", "$T/build/sub/b.o", "$T/build/sub/deeper/c.o"], "{out}");
    assert_eq!(t.json(&["stats", "--json"])["entries"], 3);
}

#[test]
fn gc_evicts_down_to_a_size() {
    let t = TestDir::new();
    for i in 0..5 {
        t.put(&format!("g{i}"), bytes(i, 1000));
    }
    let out = t.run(&["gc", "--to", "2500", "--dry-run"]).ok();
    assert_eq!(out, "would evict 3 entries (2.9 KiB); 2.0 KiB in use, target 2.4 KiB\n");
    assert_eq!(t.json(&["stats", "--json"])["entries"], 5, "a dry run removes nothing");
    let out = t.run(&["gc", "--to", "2500"]).ok();
    assert_eq!(out, "evicted 3 entries (2.9 KiB); 2.0 KiB in use, target 2.4 KiB\n");
    assert_eq!(t.json(&["stats", "--json"])["entries"], 2);
}

/// Makes the index say `digest` was last used `secs` seconds ago.
fn age(t: &TestDir, digest: &str, secs: i64) {
    let index = t.home.join("store-v1/index.sqlite");
    let script = "import sqlite3, sys, time\n\
        c = sqlite3.connect(sys.argv[1])\n\
        c.execute('UPDATE blobs SET used_at = ? WHERE digest = ?', (int(time.time()) - int(sys.argv[3]), sys.argv[2]))\n\
        c.commit()\n";
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&index)
        .args([digest, &secs.to_string()])
        .status()
        .expect("python3");
    assert!(status.success());
}

#[test]
fn gc_older_than_evicts_what_was_not_used_lately_and_spares_pins() {
    let t = TestDir::new();
    let old = t.put("old", "old bytes");
    let pinned = t.put("pinned", "old but pinned");
    let fresh = t.put("fresh", "fresh bytes");
    t.run(&["pin", &pinned]).ok();
    age(&t, &old, 40 * 86_400);
    age(&t, &pinned, 40 * 86_400);
    age(&t, &fresh, 3_600);
    let out = t.run(&["gc", "--older-than", "30d", "--dry-run", "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((report["evicted"].as_u64(), report["dry_run"].as_bool()), (Some(1), Some(true)));
    t.run(&["has", &old]).ok();
    let out = t.run(&["gc", "--older-than", "30d"]).ok();
    assert!(out.starts_with("evicted 1 entry (9 B)"), "{out}");
    assert_eq!(t.run(&["has", &old]).code, 1);
    t.run(&["has", &pinned]).ok();
    t.run(&["has", &fresh]).ok();
    let err = t.run(&["gc", "--older-than", "a month"]).fails(2);
    assert!(err.contains("malformed duration"), "{err}");
}

#[test]
fn gc_quarantine_empties_what_verify_set_aside() {
    let t = TestDir::new();
    let digest = t.put("q", "to be corrupted");
    crate::util::flip_byte(&t.blob_path(&digest), 0);
    assert_eq!(t.run(&["verify"]).code, 3, "verify finds the corrupt blob");
    let quarantine = t.home.join("store-v1/quarantine");
    assert_eq!(std::fs::read_dir(&quarantine).expect("quarantine").count(), 1);
    let out = t.run(&["gc", "--quarantine", "--dry-run"]).ok();
    assert!(out.contains("would delete 1 file from quarantine/"), "{out}");
    assert_eq!(std::fs::read_dir(&quarantine).expect("quarantine").count(), 1);
    let out = t.run(&["gc", "--quarantine"]).ok();
    assert!(out.contains("deleted 1 file from quarantine/"), "{out}");
    assert_eq!(std::fs::read_dir(&quarantine).expect("quarantine").count(), 0);
}

#[test]
fn get_link_hands_out_a_read_only_link() {
    let t = TestDir::new();
    let data = bytes(7, 100_000);
    let digest = t.put("l", &data);
    let out = t.path().join("linked");
    t.run(&["get", &digest, "--link", "-o", out.to_str().expect("utf-8")]).ok();
    assert!(std::fs::read(&out).expect("read") == data);
    let meta = std::fs::metadata(&out).expect("meta");
    let blob = std::fs::metadata(t.blob_path(&digest)).expect("blob");
    // On a filesystem with reflinks the copy is private; otherwise it is the
    // stored inode itself, read-only.
    if meta.ino() == blob.ino() {
        assert_eq!(meta.permissions().mode() & 0o222, 0, "a hardlink must be read-only");
    }
}

#[test]
fn get_into_a_folder_uses_the_key_name() {
    let t = TestDir::new();
    t.run(&["put", t.file("k", "keyed").to_str().expect("utf-8"), "--key", "data/set.csv"]).ok();
    let dir = t.path().join("outdir");
    std::fs::create_dir(&dir).expect("mkdir");
    t.run(&["get", "data/set.csv", "-o", dir.to_str().expect("utf-8")]).ok();
    assert_eq!(std::fs::read_to_string(dir.join("set.csv")).expect("read"), "keyed");
}

#[test]
fn verify_finds_corruption_and_repair_rebuilds_a_lost_index() {
    let t = TestDir::new();
    let good = t.put("v1", bytes(1, 10_000));
    let bad = t.put("v2", bytes(2, 10_000));
    crate::util::flip_byte(&t.blob_path(&bad), 77);
    let report = t.verify();
    assert_eq!(report["clean"], false);
    assert_eq!(report["corrupt"][0]["digest"], bad.as_str());
    assert_eq!(t.run(&["verify"]).code, 0, "the corrupt blob was quarantined");
    // Lose the index: verify --repair adds the content back.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(t.home.join(format!("store-v1/index.sqlite{suffix}")));
    }
    let run = t.run(&["verify"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("run `larder verify --repair`"), "{run:#?}");
    assert!(run.stdout.contains("not in the index"), "{run:#?}");
    let out = t.run(&["verify", "--repair"]).ok();
    assert!(out.contains("repaired: 1 added back"), "{out}");
    assert_eq!(t.run(&["has", &good]).code, 0);
    t.run(&["get", &good, "-o", "-"]).ok();
}

#[test]
fn help_lists_the_commands_and_exit_codes() {
    let t = TestDir::new();
    insta::assert_snapshot!(t.run(&["--help"]).ok());
}

#[test]
fn help_puts_global_options_under_their_own_heading_and_capacity_where_it_applies() {
    let t = TestDir::new();
    insta::assert_snapshot!(t.run(&["get", "--help"]).ok());
    let config = t.run(&["config", "--help"]).ok();
    assert!(!config.contains("--capacity"), "{config}");
    assert!(config.contains("Global options:\n      --home <DIR>"), "{config}");
    let release = t.run(&["pool", "release", "--help"]).ok();
    assert!(release.contains("The instances, as acquire printed their names"), "{release}");
    let meta = t.run(&["dir", "meta", "--help"]).ok();
    assert!(meta.contains("The directory's name"), "{meta}");
    // --capacity before the command still works, as a setting of every command.
    let out = t.run(&["--capacity", "3MB", "config"]).ok();
    assert!(out.contains("flag --capacity"), "{out}");
}

#[test]
fn completions_and_man_pages_come_from_the_same_definitions() {
    let t = TestDir::new();
    let bash = t.run(&["completions", "bash"]).ok();
    assert!(bash.contains("complete -F") && bash.contains("--from-remote"), "{bash}");
    let fish = t.run(&["completions", "fish"]).ok();
    assert!(fish.contains("complete -c larder"), "{fish}");
    let err = t.run(&["completions", "tcsh"]).code;
    assert_eq!(err, 2);
    let page = t.run(&["man"]).ok();
    assert!(page.starts_with(".ie") || page.contains(".TH larder 1"), "{page}");
    let dir = t.path().join("man");
    t.run(&["man", "--dir", dir.to_str().expect("utf-8")]).ok();
    for page in ["larder.1", "larder-put.1", "larder-pool-acquire.1"] {
        assert!(dir.join(page).exists(), "{page}");
    }
}

/// Regression: a killed `get -o FILE` left `.FILE.larder-get.PID-START.N`
/// beside the output for good.
#[test]
fn a_killed_gets_partial_output_is_removed_by_the_next_get() {
    let t = TestDir::new();
    let digest = t.put("a.bin", "alpha");
    let out = t.path().join("out.bin");
    let dead = crate::util::dead_owner();
    let leftover = t.path().join(format!(".out.bin.larder-get.{dead}.0"));
    std::fs::write(&leftover, "half").expect("write");
    let live = t.path().join(format!(".out.bin.larder-get.{}.9", crate::util::live_owner()));
    std::fs::write(&live, "writing").expect("write");
    t.run(&["get", &digest, "-o", out.to_str().expect("utf-8")]).ok();
    assert_eq!(std::fs::read(&out).expect("read"), b"alpha");
    assert!(!leftover.exists(), "a dead get's partial output is removed");
    assert!(live.exists(), "a live get's is not");
}

#[test]
fn verbose_get_and_has_say_what_they_did() {
    let t = TestDir::new();
    let digest = t.put("v", "verbose");
    let run = t.run(&["-v", "get", &digest, "-o", "out"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains(&format!("{digest}: copied to out")), "{}", run.stderr);
    let run = t.run(&["-v", "has", &digest]);
    assert!(run.stderr.contains(&format!("{digest}: in the local tier")), "{}", run.stderr);
    let run = t.run(&["-v", "has", "nothing"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("nothing: in no tier"), "{}", run.stderr);
    let run = t.run(&["-vv", "get", &digest, "-o", "-"]);
    assert!(run.stderr.contains("tiers to ask, in order: local"), "{}", run.stderr);
}
