"""Functions run in other processes by test_processes (importable by
multiprocessing's spawn, unlike the test module's own)."""

from __future__ import annotations

import os


def use_cache(manager, index: int, barrier) -> None:
    """Writes into the cache a parent's manager holds, as a holder of its own."""
    path = manager.cache_path
    with open(os.path.join(path, f"from-{index}"), "w") as f:
        f.write(str(os.getpid()))
    manager.insert_meta(f"worker-{index}", str(os.getpid()))
    barrier.wait(60)  # every process holds it now
    barrier.wait(60)  # the parent has looked


def use_store(store, digest: str, queue) -> None:
    """Reads and writes a store a parent opened."""
    fresh = not store._tiers.is_open
    data = store.read_bytes(digest)
    child = store.put_bytes(b"from the child " + str(os.getpid()).encode())
    queue.put((fresh, store._tiers.is_open, data, child))
