use super::*;
use crate::progress::NoProgress;
use crate::remote::{FailingRemote, InMemoryRemote, Outage, RemoteConfig};

/// A larder in a fresh home with these tiers behind it.
struct Fixture {
    dir: tempfile::TempDir,
    larder: Larder,
}

impl Fixture {
    fn new(tiers: Vec<Tier>) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("home"), 1 << 30).expect("store");
        Fixture { dir, larder: Larder::new(store, tiers) }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }
}

fn memory(name: &str, mode: RemoteMode) -> (Tier, InMemoryRemote) {
    let remote = InMemoryRemote::new();
    (Tier::new(name, mode, Box::new(remote.clone())), remote)
}

fn failing(name: &str, mode: RemoteMode) -> (Tier, InMemoryRemote, Outage) {
    let remote = InMemoryRemote::new();
    let (failing, outage) = FailingRemote::wrapping(Box::new(remote.clone()));
    (Tier::new(name, mode, Box::new(failing)), remote, outage)
}

fn key(k: &str) -> Target {
    Target::Key(k.to_string())
}

#[test]
fn reads_fall_through_the_tiers_in_order_and_fill_the_local_one() {
    let (first, a) = memory("a", RemoteMode::ReadOnly);
    let (second, b) = memory("b", RemoteMode::ReadOnly);
    let digest = b.insert(b"in the second tier", Some("k"));
    let f = Fixture::new(vec![first, second]);
    assert_eq!(f.larder.where_is(&key("k")).expect("where"), ["b"]);
    assert_eq!(f.larder.fetch(&key("k"), &NoProgress).expect("fetch"), digest);
    assert_eq!((a.reads(), b.reads()), (1, 1), "the first tier is asked first");
    assert_eq!(f.larder.store().read(&key("k")).expect("read"), b"in the second tier");
    // Now the local tier answers, and the remotes are not asked again.
    assert_eq!(f.larder.fetch(&Target::Digest(digest), &NoProgress).expect("fetch"), digest);
    assert_eq!((a.reads(), b.reads()), (1, 1));
    assert_eq!(f.larder.where_is(&key("k")).expect("where"), ["local", "b"]);
}

#[test]
fn a_miss_everywhere_is_not_found() {
    let (tier, _) = memory("a", RemoteMode::ReadOnly);
    let f = Fixture::new(vec![tier]);
    let err = f.larder.fetch(&key("nowhere"), &NoProgress).expect_err("a miss");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!f.larder.contains(&key("nowhere")).expect("contains"));
}

#[test]
fn a_failing_tier_is_passed_over_for_the_next_that_has_it() {
    let (down, _, outage) = failing("down", RemoteMode::ReadOnly);
    outage.start();
    let (up, b) = memory("up", RemoteMode::ReadOnly);
    let digest = b.insert(b"still served", Some("k"));
    let f = Fixture::new(vec![down, up]);
    assert_eq!(f.larder.fetch(&key("k"), &NoProgress).expect("fetch"), digest);
    assert_eq!(outage.refused(), 1);
    // When no tier has it and one failed, the failure is what is reported:
    // a miss would hide that a tier could not be asked.
    let err = f.larder.fetch(&key("other"), &NoProgress).expect_err("down");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[test]
fn a_corrupt_copy_is_not_kept_and_the_next_tier_is_asked() {
    let (first, a) = memory("a", RemoteMode::ReadOnly);
    let (second, b) = memory("b", RemoteMode::ReadOnly);
    let digest = a.insert(b"the true bytes", Some("k"));
    b.insert(b"the true bytes", Some("k"));
    assert!(a.corrupt(&digest));
    let f = Fixture::new(vec![first, second]);
    assert_eq!(f.larder.fetch(&Target::Digest(digest), &NoProgress).expect("fetch"), digest);
    assert_eq!(f.larder.store().read(&Target::Digest(digest)).expect("read"), b"the true bytes");

    // With only the corrupt copy, nothing is kept.
    let (only, c) = memory("c", RemoteMode::ReadOnly);
    let digest = c.insert(b"spoiled", Some("k"));
    c.corrupt(&digest);
    let f = Fixture::new(vec![only]);
    for target in [Target::Digest(digest), key("k")] {
        let err = f.larder.fetch(&target, &NoProgress).expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("was not kept"), "{err}");
    }
    assert!(f.larder.store().list().expect("list").is_empty());
    // A cold `get -o` leaves no output behind either.
    let out = f.dir.path().join("out");
    let err = f.larder.fetch_to_path(&key("k"), &out, &NoProgress).expect_err("corrupt");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert_eq!(std::fs::read_dir(f.dir.path()).expect("dir").count(), 1, "only the home");
}

#[test]
fn many_blobs_are_fetched_from_whichever_tier_has_each() {
    let (first, a) = memory("a", RemoteMode::ReadOnly);
    let (second, b) = memory("b", RemoteMode::ReadOnly);
    let wanted: Vec<(Digest, u64)> = (0..40)
        .map(|i| {
            let bytes = format!("blob {i}").into_bytes();
            let remote = if i % 2 == 0 { &a } else { &b };
            (remote.insert(&bytes, None), bytes.len() as u64)
        })
        .collect();
    let f = Fixture::new(vec![first, second]);
    f.larder.fetch_all(&wanted).expect("fetch_all");
    for (digest, _) in &wanted {
        assert!(f.larder.store().contains(*digest).expect("contains"));
    }
}

#[test]
fn write_back_uploads_wait_in_the_queue_until_drained() {
    let (tier, remote) = memory("back", RemoteMode::WriteBack);
    let f = Fixture::new(vec![tier]);
    let opts = f.larder.put_options(Some("k".into()), false);
    let digest = f.larder.store().put_bytes(b"owed", &opts).expect("put");
    // Nothing sent yet: write-back remotes get it from the queue.
    f.larder.send(&digest, Some("k")).expect("send");
    assert_eq!(remote.blob_count(), 0);
    assert!(f.larder.uploader_needed().expect("needed"));
    let report = f.larder.drain(false, &NoProgress).expect("drain");
    assert_eq!(report, DrainReport { sent: 1, failed: 0, left: 0, last_error: None });
    assert_eq!(remote.key("k"), Some(digest));
    assert!(!f.larder.uploader_needed().expect("needed"));
}

#[test]
fn a_write_through_tier_gets_every_send_at_once() {
    let (through, t) = memory("through", RemoteMode::WriteThrough);
    let (back, b) = memory("back", RemoteMode::WriteBack);
    let (read_only, r) = memory("ro", RemoteMode::ReadOnly);
    let f = Fixture::new(vec![read_only, through, back]);
    let opts = f.larder.put_options(Some("k".into()), false);
    let digest = f.larder.store().put_bytes(b"sent", &opts).expect("put");
    f.larder.send(&digest, Some("k")).expect("send");
    assert_eq!(t.key("k"), Some(digest));
    assert_eq!((b.blob_count(), r.blob_count()), (0, 0));
    assert_eq!(f.larder.store().queued_uploads().expect("queue").len(), 1);
}

#[test]
fn failing_uploads_stay_queued_and_are_sent_once_the_remote_is_back() {
    let (tier, remote, outage) = failing("back", RemoteMode::WriteBack);
    let f = Fixture::new(vec![tier]);
    let opts = f.larder.put_options(None, false);
    let digest = f.larder.store().put_bytes(b"owed", &opts).expect("put");
    outage.start();
    let report = f.larder.drain(false, &NoProgress).expect("drain");
    assert_eq!((report.sent, report.failed, report.left), (0, 1, 1));
    assert!(report.last_error.as_deref().is_some_and(|e| e.contains("cannot connect")));
    let queued = f.larder.store().queued_uploads().expect("queue");
    assert_eq!(queued[0].attempts, 1);
    // Not due again yet: a drain of what is due tries nothing.
    let refused = outage.refused();
    let report = f.larder.drain(false, &NoProgress).expect("drain");
    assert_eq!((report.failed, report.left, outage.refused()), (0, 1, refused));
    // Nor is it evicted while owed.
    f.larder.store().gc(Some(0)).expect("gc");
    assert!(f.larder.store().contains(digest).expect("contains"));
    outage.end();
    let report = f.larder.drain(true, &NoProgress).expect("drain");
    assert_eq!((report.sent, report.left), (1, 0));
    assert_eq!(remote.get(&digest).as_deref(), Some(&b"owed"[..]));
}

#[test]
fn failing_uploads_back_off_doubling_up_to_ten_minutes() {
    let (tier, _) = memory("back", RemoteMode::WriteBack);
    let f = Fixture::new(vec![tier]);
    let opts = f.larder.put_options(None, false);
    f.larder.store().put_bytes(b"owed", &opts).expect("put");
    let mut waits = Vec::new();
    for _ in 0..10 {
        let queued = f.larder.store().queued_uploads().expect("queue").remove(0);
        let next = f.larder.store().upload_failed(&queued, "down", 1000).expect("failed");
        waits.push(next - 1000);
    }
    assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
}

#[test]
fn sending_now_takes_exactly_what_was_sent_off_the_queue() {
    let (tier, remote) = memory("back", RemoteMode::WriteBack);
    let f = Fixture::new(vec![tier]);
    let store = f.larder.store();
    let a = store.put_bytes(b"a", &f.larder.put_options(None, false)).expect("put");
    let b = store.put_bytes(b"b", &f.larder.put_options(None, false)).expect("put");
    store.put_bytes(b"a", &f.larder.put_options(Some("ka".into()), false)).expect("put");
    assert_eq!(store.queued_uploads().expect("queue").len(), 3);
    for result in f.larder.send_all(&[(a, None)], true) {
        result.expect("sent");
    }
    assert_eq!(remote.get(&a).as_deref(), Some(&b"a"[..]));
    let left: Vec<(Digest, Option<String>)> =
        store.queued_uploads().expect("queue").into_iter().map(|u| (u.digest, u.key)).collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&(b, None)) && left.contains(&(a, Some("ka".into()))), "{left:?}");
}

#[test]
fn an_upload_that_fails_keeps_the_local_copy_and_says_so() {
    let (tier, _, outage) = failing("through", RemoteMode::WriteThrough);
    outage.start();
    let f = Fixture::new(vec![tier]);
    let path = f.file("f", b"kept here");
    let err = f.larder.upload(&path).expect_err("the remote is down");
    assert!(err.to_string().contains("is stored locally, but"), "{err}");
    assert!(f.larder.store().contains(Digest::of(b"kept here")).expect("contains"));
}

#[test]
fn writes_need_a_tier_that_takes_them() {
    let (tier, _) = memory("ro", RemoteMode::ReadOnly);
    let f = Fixture::new(vec![tier]);
    let err = f.larder.upload(&f.file("f", b"x")).expect_err("read-only");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(f.larder.push(&NoProgress).is_err());
}

#[test]
fn cloud_managers_calls_on_a_write_back_remote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("cloud");
    let larder = |home: &str, mode| {
        let config = RemoteConfig {
            name: "folder".into(),
            url: format!("file://{}", folder.display()),
            mode,
            endpoint: None,
            region: None,
        };
        let tier = Tier::open(&config, &Default::default(), &Default::default()).expect("remote");
        Larder::new(Store::open(&dir.path().join(home), 1 << 30).expect("store"), vec![tier])
    };
    let file = dir.path().join("f");
    std::fs::write(&file, b"uploaded").expect("write");
    let first = larder("a", RemoteMode::WriteBack);
    // upload: the digest comes back once the remote has it.
    let digest = first.upload(&file).expect("upload");
    assert!(first.remotes()[0].remote().head(&Target::Digest(digest)).expect("head").is_some());
    // A put owes the write-back remote; close sends it.
    let opts = first.put_options(Some("later".into()), false);
    let later = first.store().put_bytes(b"queued", &opts).expect("put");
    assert_eq!(first.store().queued_uploads().expect("queue").len(), 1);
    assert!(first.usage_ratio().expect("ratio") > 0.0);
    first.close().expect("close flushes");
    // Another home: exists, not on cache, warm_up, then on cache.
    let second = larder("b", RemoteMode::ReadOnly);
    let key = Target::Key("later".into());
    assert!(second.exists(&key).expect("exists"));
    assert!(!second.on_cache(&key).expect("on_cache"));
    assert_eq!(second.warm_up(&key).expect("warm_up"), later);
    assert!(second.on_cache(&Target::Digest(later)).expect("on_cache"));
    assert_eq!(second.download(&Target::Digest(digest)).expect("download"), digest);
    second.close().expect("close");
}

/// A folder remote takes a large file's bytes as they are staged (before
/// they are hashed) and a small one's whole once hashed; either way it holds
/// exactly the blob, and nothing half-written is left beside it, not even
/// by an upload killed before.
#[test]
fn uploads_to_a_folder_are_copied_as_they_are_staged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("cloud");
    let config = RemoteConfig {
        name: "folder".into(),
        url: format!("file://{}", folder.display()),
        mode: RemoteMode::WriteThrough,
        endpoint: None,
        region: None,
    };
    let tier = Tier::open(&config, &Default::default(), &Default::default()).expect("remote");
    let larder =
        Larder::new(Store::open(&dir.path().join("home"), 1 << 30).expect("store"), vec![tier]);
    // What an upload killed mid-way left goes with the next upload.
    let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("spawn");
    let dead = crate::holder::ProcessId::of_pid(child.id()).expect("running");
    child.kill().expect("kill");
    child.wait().expect("wait");
    let leftover = folder.join(format!(".tmp/.blob.larder-upload.{dead}.x1y2z3"));
    std::fs::write(&leftover, "half a blob").expect("write");
    let large: Vec<u8> =
        (0..(17u32 << 20) + 3).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    for bytes in [&large[..], b"small"] {
        let file = dir.path().join("f");
        std::fs::write(&file, bytes).expect("write");
        let digest = larder.upload(&file).expect("upload");
        assert_eq!(digest, Digest::of(bytes));
        let mut blob = larder.remotes()[0]
            .remote()
            .open(&Target::Digest(digest))
            .expect("open")
            .expect("the remote has it");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut blob.reader, &mut back).expect("read");
        assert!(back == bytes, "the remote holds exactly the blob");
    }
    let tmp = folder.join(".tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left beside the folder: {left:?}");
}
