//! Many processes sharing one home at once.

use std::collections::HashMap;

use crate::util::{TestDir, bytes, digest_of};

/// Checks that the index, the totals and the content folder agree.
pub fn check_consistent(t: &TestDir, capacity: Option<u64>) {
    let report = t.verify();
    assert_eq!(report["clean"], true, "{report:#}");
    let stats = t.json(&["stats", "--json"]);
    let ls = t.json(&["ls", "--json"]);
    let rows = ls.as_array().expect("array");
    let listed: u64 = rows.iter().map(|r| r["size"].as_u64().expect("size")).sum();
    assert_eq!(stats["bytes"].as_u64(), Some(listed), "bytes counted once each");
    assert_eq!(stats["entries"].as_u64(), Some(rows.len() as u64));
    let mut on_disk = 0;
    for shard in std::fs::read_dir(t.home.join("store-v1/content/sha256")).expect("ls").flatten() {
        for file in std::fs::read_dir(shard.path()).expect("ls").flatten() {
            on_disk += file.metadata().expect("meta").len();
        }
    }
    assert_eq!(on_disk, listed, "content folder and index agree");
    if let Some(cap) = capacity {
        assert!(listed <= cap, "{listed} > capacity {cap}");
    }
    let leftovers = std::fs::read_dir(t.home.join("store-v1/tmp")).expect("ls").count();
    assert_eq!(leftovers, 0, "tmp/ is swept");
}

#[test]
fn eight_processes_put_and_get_overlapping_files() {
    let t = TestDir::new();
    let capacity = 400_000u64;
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| {
            let data = bytes(i, 10_000 + (i as usize * 1_337) % 30_000);
            let path = t.file(&format!("shared/{i}"), &data);
            (path.to_str().expect("utf-8").to_string(), data)
        })
        .collect();
    let digests: HashMap<String, Vec<u8>> =
        files.iter().map(|(_, d)| (digest_of(d), d.clone())).collect();
    let digest_list: Vec<String> = digests.keys().cloned().collect();

    std::thread::scope(|s| {
        for worker in 0..8u64 {
            let (t, files, digests, digest_list) = (&t, &files, &digests, &digest_list);
            s.spawn(move || {
                let mut x = worker * 7 + 3;
                let mut next = |n: usize| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (x >> 33) as usize % n
                };
                for round in 0..12 {
                    let picks: Vec<&str> =
                        (0..3).map(|_| files[next(files.len())].0.as_str()).collect();
                    let mut args = vec!["put", "--capacity", "400000"];
                    args.extend(picks);
                    let run = t.run(&args);
                    assert!(
                        run.code == 0 || run.code == 4,
                        "worker {worker} round {round}: {run:#?}"
                    );
                    let want = &digest_list[next(digest_list.len())];
                    let out = t
                        .command()
                        .args(["get", want, "-o", "-", "--capacity", "400000"])
                        .output()
                        .expect("get");
                    match out.status.code() {
                        Some(0) => assert!(out.stdout == digests[want], "wrong bytes for {want}"),
                        Some(1) => {} // evicted or never stored: a miss
                        other => {
                            panic!("get exited {other:?}: {}", String::from_utf8_lossy(&out.stderr))
                        }
                    }
                    if round % 5 == 4 {
                        t.run(&["gc", "--capacity", "400000"]).ok();
                    }
                }
            });
        }
    });
    check_consistent(&t, Some(capacity));
}
