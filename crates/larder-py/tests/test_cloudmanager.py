"""cloud-manager's API beyond the seed's examples: hash forms, failures
returned as False with the reason logged, bad input raised."""

from __future__ import annotations

import logging

import pytest

import cloudmanager
import larder
from conftest import sha256


def test_hashes_come_back_bare_and_are_taken_in_both_forms(env):
    env.remote()
    cm = cloudmanager.CloudManager(env.root / "db.sqlite3", env.root / "storage", "1GiB")
    file = env.file("f", b"contents")
    h = cm.upload(file)
    assert h == sha256(b"contents") and len(h) == 64
    assert cm.on_cache(h) and cm.on_cache("sha256:" + h) and cm.exists(h.upper())
    assert not (env.root / "db.sqlite3").exists(), "the database path is not used"
    assert (env.root / "storage" / "store-v1" / "index.sqlite").exists()
    cm.close()
    cm.close()
    with pytest.raises(larder.Error, match="closed"):
        cm.exists(h)


def test_failures_are_false_with_the_reason_logged(env, caplog):
    cm = larder.CloudManager(None, env.root / "storage", 2**30)
    caplog.set_level(logging.ERROR, logger="larder.cloudmanager")
    assert cm.upload(env.file("f", b"x")) is False, "no remote takes writes"
    assert "no remote takes writes" in caplog.text
    env.remote()
    cm = larder.CloudManager(None, env.root / "storage", 2**30)
    caplog.clear()
    assert cm.upload(env.root / "missing.bin") is False
    assert "missing.bin" in caplog.text
    caplog.clear()
    assert cm.warm_up("0" * 64) is False and "0" * 64 in caplog.text
    assert cm.exists("0" * 64) is False and cm.on_cache("0" * 64) is False
    cm.close()


@pytest.mark.parametrize("bad", ["6f7bed7...121b2", "sha256:abc", "g" * 64, "datasets/mnist"])
def test_a_malformed_hash_is_invalid_input(env, bad):
    cm = larder.CloudManager(None, env.root / "storage", 2**30)
    for call in (cm.warm_up, cm.download, cm.exists, cm.on_cache):
        with pytest.raises(larder.InvalidInput, match="is not a SHA-256 digest"):
            call(bad)


def test_a_bad_storage_size_is_invalid_input(env):
    with pytest.raises(larder.InvalidInput, match="malformed size `20 gigs`"):
        larder.CloudManager(None, env.root / "storage", "20 gigs")
