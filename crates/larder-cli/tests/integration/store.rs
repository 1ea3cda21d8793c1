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
fn gc_evicts_down_to_a_size() {
    let t = TestDir::new();
    for i in 0..5 {
        t.put(&format!("g{i}"), bytes(i, 1000));
    }
    let out = t.run(&["gc", "--to", "2500"]).ok();
    assert_eq!(out, "evicted 3 entries (2.9 KiB); 2.0 KiB in use, target 2.4 KiB\n");
    assert_eq!(t.json(&["stats", "--json"])["entries"], 2);
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
