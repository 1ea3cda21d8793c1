use super::*;

fn open(capacity: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("home"), capacity).expect("open");
    (dir, store)
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
