//! Remote tiers of every kind behind the local store: each passes the
//! conformance suite (`larder remote check`) against the real thing (Garage
//! for S3, Azurite for Azure Blob, `larder serve` for WebDAV and larder
//! servers), and a put on one home is a get on a cold one.

use crate::azurite::Azurite;
use crate::garage::Garage;
use crate::serve::Served;
use crate::util::{TestDir, bytes};

/// Writes `t`'s user configuration with these `[[remote]]` tables.
fn remotes(t: &TestDir, tables: &[&str]) {
    let text: String = tables.iter().map(|r| format!("[[remote]]\n{r}\n")).collect();
    t.file("user/.config/larder/config.toml", text);
}

#[test]
fn an_azure_blob_remote_fills_a_cold_home_and_a_missing_container_is_named() {
    let t = TestDir::new();
    let azurite = Azurite::start(t.path());
    let table = |container: &str| {
        format!(
            "name = \"azure\"\nurl = \"azblob://{container}/team\"\nendpoint = \"{}\"",
            azurite.endpoint
        )
    };
    remotes(&t, &[&table(&azurite.container)]);
    let run = |home: &str, args: &[&str]| in_home(&t, home, &azurite.env(), args);
    let data = bytes(31, 5_000_000);
    let f = t.file("model.bin", &data);
    let digest = run("a", &["put", "--upload", f.to_str().expect("utf-8"), "--key", "m/v1"]).ok();
    assert_eq!(run("b", &["has", "--where", "m/v1"]).ok(), "azure\n");
    let out = t.path().join("out.bin");
    run("b", &["get", "m/v1", "-o", out.to_str().expect("utf-8")]).ok();
    assert!(std::fs::read(&out).expect("out") == data);
    assert_eq!(run("b", &["has", "--where", digest.trim()]).ok(), "local\nazure\n");
    // A container that does not exist, and a wrong key: clear errors.
    remotes(&t, &[&table("nope")]);
    let err = run("c", &["put", "--upload", f.to_str().expect("utf-8")]).fails(2);
    assert!(err.contains("remote azure") && err.contains("does not exist"), "{err}");
    remotes(&t, &[&table(&azurite.container)]);
    let mut wrong = t.command();
    wrong.env("AZURE_STORAGE_ACCOUNT", &azurite.account).env("AZURE_STORAGE_KEY", "d3Jvbmc=");
    let err = t.run_with(wrong.args(["get", "m/v1", "-o", "-"])).fails(5);
    assert!(err.contains("remote azure") && err.contains("credentials"), "{err}");
}

/// `larder` in `t` with the home `t/<home>` (another host's, say) and
/// these variables in its environment.
fn in_home(t: &TestDir, home: &str, env: &[(&str, String)], args: &[&str]) -> crate::util::Run {
    let mut cmd = t.command();
    cmd.env("LARDER_HOME", t.path().join(home));
    for (k, v) in env {
        cmd.env(k, v);
    }
    t.run_with(cmd.args(args))
}

/// `larder` in `t` with Garage's credentials in its environment.
fn with_garage(t: &TestDir, g: &Garage, args: &[&str]) -> crate::util::Run {
    let mut cmd = t.command();
    for (k, v) in g.env() {
        cmd.env(k, v);
    }
    t.run_with(cmd.args(args))
}

#[test]
fn every_kind_of_remote_passes_the_conformance_suite() {
    let t = TestDir::new();
    let server = TestDir::new();
    let s = Served::start(&server, &[]);
    let garage = Garage::start(t.path());
    let azurite = Azurite::start(t.path());
    let folder = t.path().join("shared-folder");
    remotes(
        &t,
        &[
            &format!("name = \"server\"\nurl = \"{}\"", s.url),
            &format!(
                "name = \"azure\"\nurl = \"azblob://{}/a/prefix\"\nendpoint = \"{}\"",
                azurite.container, azurite.endpoint
            ),
            &format!("name = \"dav\"\nurl = \"webdav://{}/dav/root\"", s.addr),
            &format!(
                "name = \"s3\"\nurl = \"s3://{}/some/prefix\"\nendpoint = \"{}\"\nregion = \"garage\"",
                garage.bucket, garage.endpoint
            ),
            &format!("name = \"folder\"\nurl = \"file://{}\"", folder.display()),
        ],
    );
    let mut check = t.command();
    for (k, v) in garage.env().into_iter().chain(azurite.env()) {
        check.env(k, v);
    }
    let out = t.run_with(check.args(["remote", "check", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    for row in rows.as_array().expect("rows") {
        assert_eq!(row["ok"], true, "{row}");
    }
    assert_eq!(rows.as_array().map(Vec::len), Some(5), "{rows}");
    assert_eq!(out.code, 0, "{out:#?}");
    let listed = t.run(&["remote", "ls"]).ok();
    assert!(
        listed.contains("s3://larder/some/prefix") && listed.contains("write-through"),
        "{listed}"
    );
}

#[test]
fn an_s3_remote_fills_a_cold_home_and_a_corrupt_copy_is_never_served() {
    let t = TestDir::new();
    let garage = Garage::start(t.path());
    let table = format!(
        "name = \"s3\"\nurl = \"s3://{}/team\"\nendpoint = \"{}\"\nregion = \"garage\"",
        garage.bucket, garage.endpoint
    );
    remotes(&t, &[&table]);
    let data = bytes(11, 3_000_000);
    let f = t.file("model.bin", &data);
    let digest = with_garage(
        &t,
        &garage,
        &["put", "--upload", f.to_str().expect("utf-8"), "--key", "models/v3"],
    )
    .ok();
    let digest = digest.trim().to_string();
    // A cold home gets it by key and by digest, and keeps it.
    let cold = |args: &[&str]| in_home(&t, "cold", &garage.env(), args);
    assert_eq!(cold(&["has", "--where", "models/v3"]).ok(), "s3\n");
    let out = t.path().join("out.bin");
    cold(&["get", "models/v3", "-o", out.to_str().expect("utf-8")]).ok();
    assert!(std::fs::read(&out).expect("out") == data);
    assert_eq!(cold(&["has", "--where", &digest]).ok(), "local\ns3\n");

    // Bytes changed in the bucket: refused and not kept.
    let other = bytes(12, 1000);
    let g = t.file("g.bin", &other);
    let d2 = with_garage(&t, &garage, &["put", "--upload", g.to_str().expect("utf-8")]).ok();
    let d2 = d2.trim().to_string();
    let hex = d2.trim_start_matches("sha256:");
    let path = format!("team/cas/sha256/{}/{hex}", &hex[..2]);
    overwrite_object(&garage, &path, b"not what the digest says");
    let err = cold(&["get", &d2, "-o", "-"]).fails(3);
    assert!(err.contains("remote s3") && err.contains("corrupt"), "{err}");
    assert_eq!(cold(&["has", "--local", &d2]).code, 1);
}

/// Writes `bytes` at `path` in Garage's bucket behind larder's back, with
/// the AWS command line.
fn overwrite_object(garage: &Garage, path: &str, bytes: &[u8]) {
    let t = TestDir::new();
    let f = t.file("x", bytes);
    let binary = std::env::var_os("TEST_TOOL_AWS")
        .expect("TEST_TOOL_AWS names the aws command; run the tests with scripts/test");
    let mut aws = std::process::Command::new(binary);
    aws.args(["--endpoint-url", &garage.endpoint, "s3", "cp"])
        .arg(&f)
        .arg(format!("s3://{}/{path}", garage.bucket));
    for (k, v) in garage.env() {
        aws.env(k, v);
    }
    crate::pyproject::run_ok(aws);
}

#[test]
fn s3_faults_are_clear_errors_and_the_local_tier_keeps_working() {
    let t = TestDir::new();
    let mut garage = Garage::start(t.path());
    let table = |bucket: &str| {
        format!(
            "name = \"s3\"\nurl = \"s3://{bucket}/p\"\nendpoint = \"{}\"\nregion = \"garage\"",
            garage.endpoint
        )
    };
    let f = t.file("a.bin", "some bytes");
    let f = f.to_str().expect("utf-8");
    // A missing bucket.
    remotes(&t, &[&table("no-such-bucket")]);
    let err = with_garage(&t, &garage, &["put", "--upload", f]).fails(2);
    assert!(
        err.contains("remote s3") && err.contains("bucket") && err.contains("does not exist"),
        "{err}"
    );
    // Wrong credentials.
    remotes(&t, &[&table(&garage.bucket)]);
    let mut cmd = t.command();
    cmd.env("AWS_ACCESS_KEY_ID", "GKnotakey").env("AWS_SECRET_ACCESS_KEY", "nope");
    let err = t.run_with(cmd.args(["put", "--upload", f])).fails(5);
    assert!(err.contains("remote s3") && err.contains("credentials"), "{err}");
    // No credentials at all: the same kind of answer.
    let err = t.run(&["get", "never/there", "-o", "-"]).fails(5);
    assert!(err.contains("remote s3") && err.contains("credentials"), "{err}");
    // Up: works. Down: a clear error, and local hits still work.
    with_garage(&t, &garage, &["put", "--upload", f, "--key", "k"]).ok();
    garage.stop();
    let err = with_garage(&t, &garage, &["get", "elsewhere", "-o", "-"]);
    assert_eq!(err.code, 6, "{err:#?}");
    assert!(err.stderr.contains("remote s3"), "{err:#?}");
    assert_eq!(with_garage(&t, &garage, &["get", "k", "-o", "-"]).ok(), "some bytes");
}

/// The `queued` figure of `larder stats --json` for the remote `s3`.
fn owed(t: &TestDir, garage: &Garage) -> serde_json::Value {
    let out = with_garage(t, garage, &["stats", "--json"]).ok();
    let stats: serde_json::Value = serde_json::from_str(&out).expect("json");
    stats["tiers"]
        .as_array()
        .expect("tiers")
        .iter()
        .find(|r| r["tier"] == "s3")
        .expect("s3")
        .clone()
}

#[test]
fn a_write_back_remote_gets_puts_in_the_background() {
    let t = TestDir::new();
    let garage = Garage::start(t.path());
    let table = format!(
        "name = \"s3\"\nurl = \"s3://{}/wb\"\nendpoint = \"{}\"\nmode = \"write-back\"",
        garage.bucket, garage.endpoint
    );
    remotes(&t, &[&table]);
    let data = bytes(21, 2_000_000);
    let f = t.file("data.bin", &data);
    with_garage(&t, &garage, &["put", f.to_str().expect("utf-8"), "--key", "data/x"]).ok();
    // The put returned at once; an uploader started by it empties the queue.
    crate::util::wait_for("the queue to drain", || owed(&t, &garage)["queued"] == 0);
    let out = t.path().join("out.bin");
    let got =
        in_home(&t, "cold", &garage.env(), &["get", "data/x", "-o", out.to_str().expect("utf-8")]);
    assert_eq!(got.code, 0, "{got:#?}");
    assert!(std::fs::read(&out).expect("out") == data);
    // put --upload sends it before returning (while the local copy is
    // flushed), so nothing is owed afterwards.
    let more = t.file("more.bin", bytes(23, 3_000_000));
    with_garage(
        &t,
        &garage,
        &["put", "--upload", more.to_str().expect("utf-8"), "--key", "data/y"],
    )
    .ok();
    assert_eq!(owed(&t, &garage)["queued"], 0);
    assert_eq!(with_garage(&t, &garage, &["has", "--where", "data/y"]).ok(), "local\ns3\n");
}

#[test]
fn what_a_write_back_remote_is_owed_survives_an_outage_and_is_never_evicted() {
    let t = TestDir::new();
    let mut garage = Garage::start(t.path());
    let table = format!(
        "name = \"s3\"\nurl = \"s3://{}/wb\"\nendpoint = \"{}\"\nmode = \"write-back\"",
        garage.bucket, garage.endpoint
    );
    remotes(&t, &[&table]);
    garage.stop();
    let f = t.file("data.bin", bytes(22, 100_000));
    let digest = with_garage(&t, &garage, &["put", f.to_str().expect("utf-8"), "--key", "k"]).ok();
    let digest = digest.trim().to_string();
    // An upload asked for now fails, but the file is stored and stays owed.
    let g = t.file("now.bin", bytes(24, 50_000));
    let err = with_garage(&t, &garage, &["put", "--upload", g.to_str().expect("utf-8")]).fails(6);
    assert!(err.contains("is stored locally, but") && err.contains("remote s3"), "{err}");
    // Stored locally, owed to the remote; the background tries fail and say why.
    let row = owed(&t, &garage);
    assert_eq!((row["queued"].as_u64(), row["queued_bytes"].as_u64()), (Some(2), Some(150_000)));
    crate::util::wait_for("a failed try", || owed(&t, &garage)["failing"].as_u64() >= Some(1));
    let row = owed(&t, &garage);
    assert!(row["last_upload_error"].as_str().is_some_and(|e| e.contains("remote s3")), "{row}");
    let table = with_garage(&t, &garage, &["stats"]).ok();
    assert!(table.contains("s3 is owed 2 uploads") && table.contains("failing"), "{table}");
    // Eviction leaves it alone, and push says what is still owed.
    with_garage(&t, &garage, &["gc", "--to", "0"]).ok();
    assert_eq!(with_garage(&t, &garage, &["has", "--local", &digest]).code, 0);
    let err = with_garage(&t, &garage, &["push", "--queued"]).fails(6);
    assert!(err.contains("2 uploads still owed") && err.contains("remote s3"), "{err}");
    // The remote comes back: the queue drains, and nothing was lost.
    garage.restart();
    let out = with_garage(&t, &garage, &["push", "--queued", "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["left"], 0, "{report}");
    assert_eq!(owed(&t, &garage)["queued"], 0);
    assert_eq!(with_garage(&t, &garage, &["has", "--where", "k"]).ok(), "local\ns3\n");
    // Now it may be evicted like anything else.
    with_garage(&t, &garage, &["gc", "--to", "0"]).ok();
    assert_eq!(with_garage(&t, &garage, &["has", "--local", &digest]).code, 1);
}

/// The pids of background uploaders working for the home `home`.
fn uploaders(home: &std::path::Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let home_var = format!("LARDER_HOME={}", home.display()).into_bytes();
        if String::from_utf8_lossy(&cmdline).contains("push\0--queued\0--background")
            && environ.split(|b| *b == 0).any(|v| v == home_var.as_slice())
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn an_uploader_killed_mid_upload_loses_nothing() {
    let t = TestDir::new();
    let garage = Garage::start(t.path());
    let table = format!(
        "name = \"s3\"\nurl = \"s3://{}/kill\"\nendpoint = \"{}\"\nmode = \"write-back\"",
        garage.bucket, garage.endpoint
    );
    remotes(&t, &[&table]);
    let data = bytes(23, 60_000_000);
    let f = t.file("big.bin", &data);
    let home = t.path().join("home");
    with_garage(&t, &garage, &["put", f.to_str().expect("utf-8"), "--key", "big"]).ok();
    // Kill the uploader wherever it is: before, during or after the upload.
    let mut killed = 0;
    for _ in 0..200 {
        let pids = uploaders(&home);
        if !pids.is_empty() {
            for pid in pids {
                // SAFETY: a pid we just read, and a valid signal.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed += 1;
            }
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(killed > 0, "no uploader was seen");
    // Whatever it had done, a push finishes the job and the remote has it whole.
    with_garage(&t, &garage, &["push", "--queued"]).ok();
    assert_eq!(owed(&t, &garage)["queued"], 0);
    let out = t.path().join("out.bin");
    let got =
        in_home(&t, "cold", &garage.env(), &["get", "big", "-o", out.to_str().expect("utf-8")]);
    assert_eq!(got.code, 0, "{got:#?}");
    assert!(std::fs::read(&out).expect("out") == data);
}

#[test]
fn a_recipe_loads_from_s3_with_the_endpoint_of_a_remote_in_the_bucket() {
    let t = TestDir::new();
    let garage = Garage::start(t.path());
    // A remote in the same bucket lends its endpoint and region.
    let table = format!(
        "name = \"s3\"\nurl = \"s3://{}/cache\"\nendpoint = \"{}\"\nregion = \"garage\"\nmode = \"read-only\"",
        garage.bucket, garage.endpoint
    );
    remotes(&t, &[&table]);
    let data = bytes(31, 300_000);
    let f = t.file("upload/table.csv", &data);
    let binary = std::env::var_os("TEST_TOOL_AWS").expect("TEST_TOOL_AWS");
    let mut aws = std::process::Command::new(binary);
    aws.args(["--endpoint-url", &garage.endpoint, "s3", "cp", "--only-show-errors"])
        .arg(&f)
        .arg(format!("s3://{}/data/table.csv", garage.bucket));
    for (k, v) in garage.env() {
        aws.env(k, v);
    }
    crate::pyproject::run_ok(aws);
    let url = format!("s3://{}/data/table.csv", garage.bucket);
    let sha = format!("sha256:{}", crate::archives::sha256_hex(&data));
    let dir = with_garage(&t, &garage, &["use", "--name", "tables", &url, &sha]).ok();
    let got = std::fs::read(t.real(&dir).join("table.csv")).expect("table.csv");
    assert!(got == data);
    // A wrong checksum keeps nothing; a missing object is a clear error.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = with_garage(&t, &garage, &["use", "--name", "bad", &url, &wrong]);
    assert_ne!(err.code, 0, "{err:#?}");
    let missing = format!("s3://{}/data/nope.csv", garage.bucket);
    let err = with_garage(&t, &garage, &["use", "--name", "gone", &missing]).fails(1);
    assert!(err.contains("s3://larder/data/nope.csv does not exist"), "{err}");
}

#[test]
fn a_scratch_directory_pushed_to_s3_is_restored_in_a_cold_home() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let garage = Garage::start(t.path());
    let table = format!(
        "name = \"s3\"\nurl = \"s3://{}/dirs\"\nendpoint = \"{}\"\nregion = \"garage\"",
        garage.bucket, garage.endpoint
    );
    remotes(&t, &[&table]);
    let dir = t.real(&with_garage(&t, &garage, &["use", "--name", "scratch"]).ok());
    std::fs::create_dir_all(dir.join("a/deep")).expect("mkdir");
    std::fs::create_dir_all(dir.join("empty")).expect("mkdir");
    std::fs::write(dir.join("a/b.txt"), "hello\n").expect("write");
    std::fs::write(dir.join("a/deep/same.txt"), "hello\n").expect("write");
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(dir.join("big.bin"), bytes(41, 3_000_000)).expect("write");
    std::os::unix::fs::symlink("a/b.txt", dir.join("link")).expect("symlink");
    with_garage(&t, &garage, &["dir", "meta", "scratch", "owner=alice"]).ok();
    let out =
        with_garage(&t, &garage, &["dir", "push", "scratch", "--remote", "s3", "--json"]).ok();
    let pushed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((pushed["files"].as_u64(), pushed["sent"].as_u64()), (Some(4), Some(3)), "{pushed}");
    // Again: nothing new to send.
    let again = with_garage(&t, &garage, &["dir", "push", "scratch"]).ok();
    assert!(again.contains("4 files") && again.contains("0 blobs sent"), "{again}");

    // Another host: a cold home restores it whole.
    let cold = |args: &[&str]| in_home(&t, "cold", &garage.env(), args);
    let restored = t.real(&cold(&["use", "--name", "scratch", "--from-remote", "s3"]).ok());
    assert_ne!(restored, dir);
    assert_eq!(std::fs::read_to_string(restored.join("a/b.txt")).expect("b"), "hello\n");
    assert_eq!(std::fs::read_to_string(restored.join("a/deep/same.txt")).expect("same"), "hello\n");
    assert!(std::fs::read(restored.join("big.bin")).expect("big") == bytes(41, 3_000_000));
    let mode = std::fs::metadata(restored.join("run.sh")).expect("run.sh").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(restored.join("link")).expect("link"),
        std::path::Path::new("a/b.txt")
    );
    assert!(restored.join("empty").is_dir());
    let shown: serde_json::Value =
        serde_json::from_str(&cold(&["dir", "show", "scratch", "--json"]).ok()).expect("json");
    assert_eq!(shown["meta"]["owner"], "alice", "{shown}");
    // Used again, it is the local one; a name the remote lacks is a clear miss.
    assert_eq!(t.real(&cold(&["use", "--name", "scratch", "--from-remote", "s3"]).ok()), restored);
    let err = cold(&["use", "--name", "nothere", "--from-remote", "s3"]).fails(1);
    assert!(err.contains("remote s3 has no directory nothere"), "{err}");
}

#[test]
fn a_manifest_that_leads_outside_its_directory_is_refused() {
    let t = TestDir::new();
    let folder = t.path().join("shared");
    remotes(&t, &[&format!("name = \"folder\"\nurl = \"file://{}\"", folder.display())]);
    // A manifest written behind larder's back, with a path that climbs out.
    let manifest = serde_json::json!({
        "format": "larder-dir-v1", "name": "evil", "meta": {},
        "entries": [{"type": "symlink", "path": "x", "target": "../../../etc"}]
    })
    .to_string();
    let digest = crate::util::digest_of(manifest.as_bytes());
    let hex = digest.trim_start_matches("sha256:");
    t.file(&format!("shared/cas/sha256/{}/{hex}", &hex[..2]), &manifest);
    t.file("shared/keys/dirs.d/evil.k", format!("{digest}\n"));
    let err = t.run(&["use", "--name", "evil", "--from-remote", "folder"]).fails(2);
    assert!(err.contains("links outside the directory"), "{err}");
    assert!(t.run(&["dir", "show", "evil"]).code != 0, "nothing was made");
}

#[test]
fn a_directory_whose_remote_blob_is_corrupt_is_not_restored() {
    let t = TestDir::new();
    let folder = t.path().join("shared");
    remotes(&t, &[&format!("name = \"folder\"\nurl = \"file://{}\"", folder.display())]);
    let dir = t.real(&t.run(&["use", "--name", "data"]).ok());
    let good = bytes(5, 200_000);
    std::fs::write(dir.join("good.bin"), &good).expect("write");
    std::fs::write(dir.join("bad.bin"), bytes(6, 5_000)).expect("write");
    t.run(&["dir", "push", "data"]).ok();
    // The remote's copy of one file is damaged behind larder's back.
    let hex = crate::util::digest_of(&bytes(6, 5_000)).trim_start_matches("sha256:").to_string();
    crate::util::flip_byte(&folder.join(format!("cas/sha256/{}/{hex}", &hex[..2])), 10);
    let err =
        in_home(&t, "cold", &[], &["use", "--name", "data", "--from-remote", "folder"]).fails(3);
    assert!(err.contains(&format!("remote folder's copy of sha256:{hex} hashes to")), "{err}");
    assert!(err.contains("corrupt and was not kept"), "{err}");
    let listed = in_home(&t, "cold", &[], &["ls", "--json"]).ok();
    assert!(!listed.contains(&hex), "the bad copy was not kept: {listed}");
    assert!(in_home(&t, "cold", &[], &["dir", "show", "data"]).code != 0, "no directory was made");
}

#[test]
fn a_cold_get_to_a_file_writes_only_bytes_that_hashed_right() {
    let t = TestDir::new();
    let (bad, good) = (t.path().join("bad"), t.path().join("good"));
    remotes(
        &t,
        &[
            &format!("name = \"bad\"\nurl = \"file://{}\"", bad.display()),
            &format!("name = \"good\"\nurl = \"file://{}\"", good.display()),
        ],
    );
    // Both remotes get the blob; then the first one's copy is damaged.
    let data = bytes(41, 3_000_000);
    let f = t.file("data.bin", &data);
    let digest = t.run(&["put", "--upload", f.to_str().expect("utf-8"), "--key", "d"]).ok();
    let hex = digest.trim().trim_start_matches("sha256:").to_string();
    crate::util::flip_byte(&bad.join(format!("cas/sha256/{}/{hex}", &hex[..2])), 2_999_000);
    let cold = |args: &[&str]| in_home(&t, "cold", &[], args);
    // The damaged copy is refused part way through; the good one is written
    // from the start, and only it.
    let out = t.work().join("out.bin");
    let run = cold(&["get", "d", "-o", out.to_str().expect("utf-8")]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("remote bad") && run.stderr.contains("corrupt"), "{run:#?}");
    assert!(std::fs::read(&out).expect("out") == data);
    assert_eq!(cold(&["has", "--where", "d"]).ok(), "local\nbad\ngood\n");
    // With only the damaged copy: an error, and no file at all.
    remotes(&t, &[&format!("name = \"bad\"\nurl = \"file://{}\"", bad.display())]);
    let out2 = t.work().join("out2.bin");
    let err =
        in_home(&t, "other", &[], &["get", "d", "-o", out2.to_str().expect("utf-8")]).fails(3);
    assert!(err.contains("corrupt and was not kept"), "{err}");
    assert!(!out2.exists());
    let left: Vec<_> = std::fs::read_dir(t.work())
        .expect("work")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("larder-get"))
        .collect();
    assert!(left.is_empty(), "no temporary files left: {left:?}");
}

#[test]
fn stats_counts_reads_a_remote_served_and_zero_sets_them_back() {
    let t = TestDir::new();
    let folder = t.path().join("shared");
    remotes(&t, &[&format!("name = \"folder\"\nurl = \"file://{}\"", folder.display())]);
    let f = t.file("a.bin", bytes(9, 1000));
    let digest = in_home(&t, "a", &[], &["put", "--upload", f.to_str().expect("utf-8")]).ok();
    let got = in_home(&t, "b", &[], &["-v", "get", digest.trim(), "-o", "-"]);
    assert_eq!(got.code, 0, "{got:#?}");
    assert!(got.stderr.contains("served by remote folder"), "{}", got.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&in_home(&t, "b", &[], &["stats", "--json"]).ok()).expect("json");
    // A local miss served by the remote; the bytes then go out from the local copy.
    assert_eq!(json["misses"].as_u64(), Some(1), "{json}");
    assert_eq!(json["tiers"][1]["hits"], 1, "{json}");
    in_home(&t, "b", &[], &["get", digest.trim(), "-o", "-"]).ok();
    let table = in_home(&t, "b", &[], &["stats"]).ok();
    let table = table.replace(&t.path().display().to_string(), "$T");
    insta::assert_snapshot!(table, @r"
        TIER                    ENTRIES  USED    PINNED  CAPACITY  USAGE  HITS  MISSES  HIT RATIO
        local                   1        1000 B  0 B     20.0 GiB  0.0%   2     1       66.7%
        folder (write-through)  -        -       -       -         -      1     -       -
        ");
    let json: serde_json::Value =
        serde_json::from_str(&in_home(&t, "b", &[], &["stats", "--zero", "--json"]).ok())
            .expect("json");
    assert_eq!((json["hits"].as_u64(), json["misses"].as_u64()), (Some(0), Some(0)), "{json}");
    assert_eq!(json["tiers"][1]["hits"], 0, "{json}");
    assert_eq!(json["entries"], 1, "what the store holds stays");
}

#[test]
fn remote_ls_and_check_without_remotes_say_how_to_add_one() {
    let t = TestDir::new();
    let ls = t.run(&["remote", "ls"]).ok();
    insta::assert_snapshot!(ls, @r#"no remotes are configured; add one as a [[remote]] table (name = "team", url = "http://cache:8000") in ~/.config/larder/config.toml or ./.larder/config.toml (see the README's Remote tiers)"#);
    assert_eq!(t.run(&["remote", "check"]).ok(), ls);
    assert_eq!(t.run(&["remote", "ls", "--json"]).ok(), "[]\n");
    let err = t.run(&["remote", "check", "team"]).fails(1);
    assert!(err.contains("no remote is named team; the configured ones: none"), "{err}");
}
