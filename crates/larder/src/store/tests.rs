use proptest::prelude::*;

use super::*;

fn open(capacity: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("home"), capacity).expect("open");
    (dir, store)
}

fn blob(id: u8, size: usize) -> Vec<u8> {
    let mut bytes = vec![id; size];
    if let Some(first) = bytes.first_mut() {
        *first = id.wrapping_add(1);
    }
    bytes
}

#[test]
fn put_then_get_round_trips() {
    let (_dir, store) = open(1 << 20);
    let digest = store.put_bytes(b"hello", &PutOptions::default()).expect("put");
    assert_eq!(digest, Digest::of(b"hello"));
    assert_eq!(store.read(&digest.into()).expect("read"), b"hello");
    let stats = store.stats().expect("stats");
    assert_eq!((stats.entries, stats.bytes, stats.hits), (1, 5, 1));
}

#[test]
fn keys_share_blobs_and_rebind() {
    let (_dir, store) = open(1 << 20);
    let opts = |k: &str| PutOptions { key: Some(k.into()), pin: false, ..Default::default() };
    let a = store.put_bytes(b"same", &opts("one")).expect("put");
    let b = store.put_bytes(b"same", &opts("two")).expect("put");
    assert_eq!(a, b);
    assert_eq!(store.stats().expect("stats").entries, 1);
    assert_eq!(store.list().expect("list")[0].keys, vec!["one", "two"]);
    let c = store.put_bytes(b"other", &opts("one")).expect("put");
    assert_eq!(store.resolve(&Target::Key("one".into())).expect("resolve"), c);
    // Removing a key keeps a blob that another key still names.
    let removed = store.remove(&Target::Key("two".into()), false).expect("rm");
    assert_eq!(removed, Removed::Key { key: "two".into(), digest: a, blob_removed: true });
    assert!(!store.contains(a).expect("contains"));
}

#[test]
fn a_flipped_byte_is_never_served_and_is_quarantined() {
    let (_dir, store) = open(1 << 20);
    let digest = store.put_bytes(&blob(1, 100_000), &PutOptions::default()).expect("put");
    let path = store.layout.blob(&digest);
    let mut bytes = fs::read(&path).expect("read");
    bytes[4242] ^= 0x01;
    let mut perms = fs::metadata(&path).expect("meta").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).expect("chmod");
    fs::write(&path, &bytes).expect("write");
    let err = store.read(&digest.into()).expect_err("corrupt read");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("is corrupt"), "{err}");
    assert!(!store.contains(digest).expect("contains"));
    assert_eq!(fs::read_dir(store.layout.quarantine()).expect("ls").count(), 1);
    // Putting the original again restores it.
    store.put_bytes(&blob(1, 100_000), &PutOptions::default()).expect("put");
    assert_eq!(store.read(&digest.into()).expect("read"), blob(1, 100_000));
}

fn dead_process() -> ProcessId {
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let id = ProcessId::of_pid(child.id()).unwrap_or(ProcessId { pid: child.id(), start: 1 });
    child.wait().expect("wait");
    id
}

#[test]
fn sweep_undoes_what_a_dead_writer_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let store = Store::open(&home, 1 << 20).expect("open");
    let kept = store.put_bytes(b"kept", &PutOptions::default()).expect("put");
    let layout = store.layout.clone();
    drop(store);
    let ghost = dead_process();

    // A write that died mid-stream.
    fs::write(layout.partial(ghost), b"half").expect("write");
    // A write that died after linking into content/ but before its commit.
    let lost = Digest::of(b"lost");
    let temp = layout.put_temp(ghost, &lost);
    fs::write(&temp, b"lost").expect("write");
    link_into_place(&temp, &layout.blob(&lost)).expect("link");
    // An eviction that died before its commit: the row is still there.
    let moved = layout.evict_temp(ghost, &kept);
    fs::rename(layout.blob(&kept), &moved).expect("rename");

    let store = Store::open(&home, 1 << 20).expect("reopen");
    assert_eq!(fs::read_dir(layout.tmp()).expect("ls").count(), 0);
    assert!(!layout.blob(&lost).exists(), "an unrecorded blob stays behind");
    assert_eq!(store.read(&kept.into()).expect("read"), b"kept");
    let report = store.verify(false, &NoProgress).expect("verify");
    assert!(report.clean, "{report:?}");
}

#[test]
fn a_lost_index_is_rebuilt_from_the_content_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let store = Store::open(&home, 1 << 20).expect("open");
    let digests: Vec<Digest> = (0..5)
        .map(|i| store.put_bytes(&blob(i, 1000), &PutOptions::default()).expect("put"))
        .collect();
    let layout = store.layout.clone();
    store.close().expect("close");
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{suffix}", layout.index().display()));
    }
    let store = Store::open(&home, 1 << 20).expect("reopen");
    assert_eq!(store.stats().expect("stats").entries, 0);
    let report = store.verify(true, &NoProgress).expect("verify");
    assert_eq!(report.adopted, 5);
    assert!(report.clean);
    for d in digests {
        assert!(store.contains(d).expect("contains"));
    }
    assert_eq!(store.stats().expect("stats").bytes, 5000);
}

/// Operations of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Put { id: u8, size: usize, pin: bool },
    Get { id: u8 },
    Pin { id: u8, pinned: bool },
    Remove { id: u8 },
    Gc { to: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 0usize..400, prop::bool::weighted(0.15)).prop_map(|(id, size, pin)| Op::Put { id, size, pin }),
        3 => (0u8..12).prop_map(|id| Op::Get { id }),
        1 => (0u8..12, any::<bool>()).prop_map(|(id, pinned)| Op::Pin { id, pinned }),
        1 => (0u8..12).prop_map(|id| Op::Remove { id }),
        1 => (0u64..1200).prop_map(|to| Op::Gc { to }),
    ]
}

/// The reference: entries in LRU order, least recent first.
#[derive(Debug, Default)]
struct Model {
    entries: Vec<(Digest, u64, bool)>,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.1).sum()
    }
    fn find(&self, d: &Digest) -> Option<usize> {
        self.entries.iter().position(|e| e.0 == *d)
    }
    fn touch(&mut self, i: usize) {
        let e = self.entries.remove(i);
        self.entries.push(e);
    }
    /// Evicts LRU unpinned entries (not `keep`) so `need` more bytes fit; false
    /// (and no change) if they cannot.
    fn make_room(&mut self, need: u64, limit: u64, keep: Option<Digest>) -> bool {
        let excess = (self.bytes() + need).saturating_sub(limit);
        if excess == 0 {
            return true;
        }
        if need > limit {
            return false;
        }
        let mut freed = 0;
        let mut victims = Vec::new();
        for e in &self.entries {
            if freed >= excess {
                break;
            }
            if !e.2 && Some(e.0) != keep {
                victims.push(e.0);
                freed += e.1;
            }
        }
        if freed < excess {
            return false;
        }
        self.entries.retain(|e| !victims.contains(&e.0));
        true
    }
}

const CAPACITY: u64 = 1000;

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (_dir, store) = open(CAPACITY);
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Put { id, size, pin } => {
                let bytes = blob(id, size);
                let d = Digest::of(&bytes);
                let got =
                    store.put_bytes(&bytes, &PutOptions { key: None, pin, ..Default::default() });
                match model.find(&d) {
                    Some(i) => {
                        prop_assert!(got.is_ok(), "{got:?}");
                        model.touch(i);
                        let last = model.entries.len() - 1;
                        model.entries[last].2 |= pin;
                    }
                    None => {
                        if model.make_room(size as u64, CAPACITY, Some(d)) {
                            prop_assert!(got.is_ok(), "{got:?}");
                            model.entries.push((d, size as u64, pin));
                        } else {
                            let kind = got.as_ref().map_err(Error::kind).err();
                            prop_assert_eq!(kind, Some(ErrorKind::StoreFull));
                        }
                    }
                }
            }
            Op::Get { id } => {
                if !model.entries.is_empty() && id % 3 != 0 {
                    let i = usize::from(id) % model.entries.len();
                    let (digest, size, _) = model.entries[i];
                    let got = store
                        .read(&digest.into())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(got.len() as u64, size);
                    model.touch(i);
                } else {
                    let missing = Digest::of(format!("missing-{id}").as_bytes());
                    let got = store.read(&missing.into()).map_err(|e| e.kind()).err();
                    prop_assert_eq!(got, Some(ErrorKind::NotFound));
                }
            }
            Op::Pin { id, pinned } => {
                if let Some(i) =
                    (!model.entries.is_empty()).then(|| usize::from(id) % model.entries.len())
                {
                    let d = model.entries[i].0;
                    store
                        .set_pinned(&d.into(), pinned)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model.entries[i].2 = pinned;
                }
            }
            Op::Remove { id } => {
                if let Some(i) =
                    (!model.entries.is_empty()).then(|| usize::from(id) % model.entries.len())
                {
                    let (d, _, pinned) = model.entries[i];
                    let got = store.remove(&d.into(), false);
                    if pinned {
                        prop_assert_eq!(got.map_err(|e| e.kind()).err(), Some(ErrorKind::Conflict));
                    } else {
                        prop_assert!(got.is_ok());
                        model.entries.remove(i);
                    }
                }
            }
            Op::Gc { to } => {
                store.gc(Some(to)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let excess = model.bytes().saturating_sub(to);
                let mut freed = 0;
                let mut victims = Vec::new();
                for e in &model.entries {
                    if freed >= excess {
                        break;
                    }
                    if !e.2 {
                        victims.push(e.0);
                        freed += e.1;
                    }
                }
                model.entries.retain(|e| !victims.contains(&e.0));
            }
        }
        let stats = store.stats().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(stats.bytes <= CAPACITY, "capacity exceeded: {stats:?}");
        prop_assert_eq!(stats.bytes, model.bytes());
        prop_assert_eq!(stats.entries, model.entries.len() as u64);
        let order = store.recency_order().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected: Vec<Digest> = model.entries.iter().map(|e| e.0).collect();
        prop_assert_eq!(order, expected, "LRU order differs");
        for (d, _, pinned) in &model.entries {
            prop_assert!(store.layout.blob(d).exists(), "{d} lost its file");
            if *pinned {
                prop_assert!(store.contains(*d).unwrap_or(false), "pinned {d} was evicted");
            }
        }
    }
    let report =
        store.verify(false, &NoProgress).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.clean, "{report:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn index_and_eviction_match_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run_ops(ops)?;
    }
}
