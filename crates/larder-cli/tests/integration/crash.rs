//! Processes killed with SIGKILL at awkward moments leave a store the next
//! open finds consistent.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::concurrency::check_consistent;
use crate::util::{TestDir, bytes};

#[test]
fn puts_killed_at_random_moments_leave_a_consistent_store() {
    let t = TestDir::new();
    let files: Vec<String> = (0..12)
        .map(|i| t.file(&format!("in/{i}"), bytes(i, 700_000)).to_str().expect("utf-8").to_string())
        .collect();
    let capacity = 5_000_000u64;
    let mut x = 0x5eed_u64;
    for round in 0..16u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((x >> 33) % 120_000);
        let mut cmd = t.command();
        cmd.args(["put", "--capacity", "5000000"]).stdout(Stdio::null()).stderr(Stdio::null());
        // Each round puts a different rotation so eviction happens too.
        for i in 0..files.len() {
            cmd.arg(&files[(i + round as usize) % files.len()]);
        }
        let mut child = cmd.spawn().expect("spawn");
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        check_consistent(&t, Some(capacity));
    }
}

#[test]
fn a_put_from_a_pipe_killed_mid_stream_leaves_nothing() {
    let t = TestDir::new();
    let kept = t.put("kept", "kept");
    let mut child = t
        .command()
        .args(["put", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&bytes(1, 3_000_000)).expect("feed");
    stdin.flush().expect("flush");
    // Wait until the partial write is visible, then kill.
    let tmp = t.home.join("store-v1/tmp");
    crate::util::wait_until(Duration::from_secs(2), || {
        std::fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_some())
    });
    child.kill().expect("kill");
    child.wait().expect("wait");
    drop(stdin);
    assert!(std::fs::read_dir(&tmp).expect("ls").count() > 0, "the partial write was visible");
    check_consistent(&t, None);
    assert_eq!(t.run(&["get", &kept]).ok(), "kept");
    assert_eq!(t.json(&["stats", "--json"])["entries"], 1);
}
