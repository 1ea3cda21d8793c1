"""The store from Python: every method, paths and sizes, bad input."""

from __future__ import annotations

import os
import pathlib
import pickle

import pytest

import larder
from conftest import sha256


def test_put_get_open_has_and_stats(env):
    store = larder.Store()
    src = env.file("a.bin", b"alpha" * 1000)
    digest = store.put(src)  # an os.PathLike
    assert digest == "sha256:" + sha256(b"alpha" * 1000)
    assert store.put(str(src)) == digest and store.put(os.fsencode(src)) == digest
    assert store.has(digest) and digest in store
    assert store.has(digest[len("sha256:") :]), "bare hex names the same blob"

    out = env.root / "out.bin"
    assert store.get(digest, out) == digest
    assert out.read_bytes() == b"alpha" * 1000

    with store.open(digest) as f:
        assert isinstance(f, larder.BlobReader)
        assert (f.digest, f.size) == (digest, 5000)
        assert f.read(5) == b"alpha"
        f.seek(0)
        assert f.read() == b"alpha" * 1000
    assert store.read_bytes(digest) == b"alpha" * 1000
    assert store.get(digest) == b"alpha" * 1000, "without a destination, get returns the bytes"
    assert larder.__version__ and larder.__version__[0].isdigit()

    stats = store.stats()
    assert (stats.entries, stats.bytes) == (1, 5000)
    assert stats.hits >= 3, "reads are recorded, in batches, before stats"
    assert 0 < store.usage_ratio() == stats.usage_ratio < 1


def test_keys_pins_remove_ls_gc(env):
    store = larder.Store(capacity="10KiB")
    assert store.capacity == 10240
    a = store.put_bytes(b"a" * 4000, key="data/a", pin=True)
    b = store.put_bytes(bytearray(b"b" * 4000), key="data/b")
    assert store.read_bytes("data/a") == b"a" * 4000
    entries = {e.digest: e for e in store.ls()}
    assert entries[a].pinned and entries[a].keys == ("data/a",) and not entries[b].pinned

    store.put_bytes(b"c" * 4000)  # over capacity: the unpinned, least recently used goes
    assert store.has(a) and not store.has(b)

    with pytest.raises(larder.Conflict, match="pinned"):
        store.remove(a)
    assert store.unpin("data/a") == a
    assert store.pin(a) == a
    removed = store.remove("data/a", force=True)
    assert (removed.digest, removed.keys, removed.blob_removed) == (a, ("data/a",), True)

    report = store.gc(to="1KiB")
    assert report.evicted == 1 and report.bytes == 0 and store.ls() == []


def test_put_many_and_verify(env):
    store = larder.Store()
    files = [env.file(f"f{i}", f"file {i}".encode()) for i in range(20)]
    digests = store.put_many(files)
    assert digests == ["sha256:" + sha256(f"file {i}".encode()) for i in range(20)]
    report = store.verify()
    assert report.clean and report.checked == 20


def test_a_flipped_byte_is_never_served(env):
    store = larder.Store()
    digest = store.put_bytes(b"precious bytes")
    hexd = digest.split(":")[1]
    stored = env.home / "store-v1" / "content" / "sha256" / hexd[:2] / hexd
    os.chmod(stored, 0o644)
    stored.write_bytes(b"precious bytez")
    with pytest.raises(larder.CorruptData, match=hexd[:12]) as err:
        store.open(digest)
    assert "\n" not in str(err.value)
    assert not store.has(digest), "quarantined"


def test_a_store_can_be_pickled_and_closed(env):
    store = larder.Store(capacity="1GiB")
    again = pickle.loads(pickle.dumps(store))
    assert (again.home, again.capacity) == (store.home, store.capacity)
    with larder.Store() as s:
        s.put_bytes(b"x")
    with pytest.raises(larder.Error, match="closed"):
        s.put_bytes(b"y")
    s.close()  # twice is fine


@pytest.mark.parametrize(
    "call, error, builtin, message",
    [
        (lambda s, e: s.get("sha256:" + "z" * 64, e.root / "o"), larder.InvalidInput, ValueError, "sha256:zzz"),
        (lambda s, e: s.get("sha256:" + "0" * 64, e.root / "o"), larder.NotFound, KeyError, "is not in the store"),
        (lambda s, e: s.get("sha256:" + "0" * 64), larder.NotFound, KeyError, "is not in the store"),
        (lambda s, e: s.open("sha256:" + "1" * 64), larder.NotFound, FileNotFoundError, "is not in the store"),
        (lambda s, e: s.put(e.root / "missing.txt"), larder.NotFound, FileNotFoundError, "missing.txt"),
        (lambda s, e: s.put(e.root), larder.InvalidInput, ValueError, "is a folder"),
        (lambda s, e: s.remove("no/such/key"), larder.NotFound, KeyError, "no/such/key"),
        (lambda s, e: s.put_bytes(b"x", key="larder/mine"), larder.InvalidInput, ValueError, "larder keeps for itself"),
        (lambda s, e: larder.Store(capacity="20Gibbon"), larder.InvalidInput, ValueError, "malformed size `20Gibbon`"),
        (lambda s, e: s.gc(to="lots"), larder.InvalidInput, ValueError, "malformed size `lots`"),
        (lambda s, e: larder.Store(capacity=-1), larder.InvalidInput, ValueError, "negative"),
        (lambda s, e: s.put_bytes(b"x" * 2048, pin=True) and s.put_bytes(b"y" * 4096), larder.NoRoom, OSError, "capacity"),
        (lambda s, e: s.put_bytes(b"z" * 8192), larder.NoRoom, OSError, "the blob (over 4.0 KiB) is larger than the store's whole capacity (4.0 KiB); raise the capacity (LARDER_CAPACITY or capacity=)"),
    ],
    ids=["malformed-digest", "unknown-digest", "get-unknown-bytes", "open-unknown", "missing-file", "folder", "unknown-key",
         "internal-key", "bad-size", "bad-gc-size", "negative-size", "no-room", "larger-than-capacity"],
)
def test_bad_input_raises_the_right_class_with_one_line(env, call, error, builtin, message):
    store = larder.Store(capacity="4KiB")
    with pytest.raises(error) as err:
        call(store, env)
    assert isinstance(err.value, builtin) and isinstance(err.value, larder.Error)
    text = str(err.value)
    assert message in text and "\n" not in text, text
    if isinstance(err.value, OSError):
        assert err.value.errno is not None and err.value.strerror == text, "an OSError carries its errno"


def test_wrong_types_are_type_errors(env):
    store = larder.Store()
    with pytest.raises(TypeError):
        store.get(b"sha256:00", env.root / "o")
    with pytest.raises(TypeError):
        larder.Store(capacity=1.5)
    with pytest.raises(TypeError):
        larder.Store(capacity=True)


def test_sizes_are_parsed_and_formatted():
    assert larder.parse_size("20GiB") == 20 * 2**30
    assert larder.parse_size("10GB") == 10**10
    assert larder.format_size(3 * 2**29) == "1.5 GiB"


def test_objects_share_no_state(env, tmp_path):
    a = larder.Store(home=tmp_path / "a", capacity="1MiB")
    b = larder.Store(home=tmp_path / "b")
    d = a.put_bytes(b"only in a")
    assert a.has(d) and not b.has(d)
    assert a.capacity == 2**20 and b.capacity == 20 * 2**30
    assert pathlib.Path(a.home) != pathlib.Path(b.home)
