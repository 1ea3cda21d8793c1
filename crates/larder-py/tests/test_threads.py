"""One store, many threads; the GIL released while larder works or waits."""

from __future__ import annotations

import os
import threading

import larder
from conftest import sha256


def test_eight_threads_on_one_store(env):
    store = larder.Store()
    errors = []
    digests = {}

    def work(t):
        try:
            mine = {}
            for i in range(100):
                data = f"thread {t} blob {i}".encode() * 50
                mine[store.put_bytes(data)] = data
            shared = store.put_bytes(b"the same bytes from every thread")
            for digest, data in mine.items():
                with store.open(digest) as f:
                    assert f.read() == data
                assert store.has(digest)
            assert store.read_bytes(shared) == b"the same bytes from every thread"
            store.stats()
            digests[t] = mine
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.stats().entries == 8 * 100 + 1
    for mine in digests.values():
        for digest, data in mine.items():
            assert digest == "sha256:" + sha256(data)
    assert store.verify().clean


def test_the_gil_is_released_while_a_get_waits(env):
    # A get into a fifo blocks until someone reads it. The reader is this
    # process's main thread, which can only run if the get let go of the GIL;
    # if it did not, the child hangs and the timeout fails the test.
    env.python(
        """
        import os, threading, larder
        store = larder.Store()
        digest = store.put_bytes(b"through a pipe")
        os.mkfifo("pipe")
        t = threading.Thread(target=store.get, args=(digest, "pipe"))
        t.start()
        with open("pipe", "rb") as f:
            assert f.read() == b"through a pipe"
        t.join()
        """,
        timeout=60,
    )


def test_threads_share_one_scratch_directory_and_one_build(env):
    payload = env.file("pkg/data.txt", b"payload\n")
    import tarfile

    archive = env.root / "pkg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="data.txt")
    recipe = [f"file:{archive}", "sha256:" + sha256(archive.read_bytes()), "tar"]
    paths = []

    def use():
        with larder.use(recipe, name="repo", size="1MiB") as repo:
            paths.append(repo)
            assert (repo / "data.txt").read_bytes() == b"payload\n"

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 8 and len(set(paths)) == 1
    assert not paths[0].exists(), "the last holder deleted it"
    assert os.listdir(env.home / "dirs") == []
