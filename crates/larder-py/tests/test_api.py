"""Remote tiers, repositories, scratch directories and pools."""

from __future__ import annotations

import tarfile

import pytest

import larder
from conftest import sha256


def test_larder_sends_writes_and_fetches_from_the_remote(env, tmp_path):
    remote = env.remote()
    with larder.Larder() as first:
        assert first.remotes == ["cloud"]
        digest = first.put_bytes(b"shared through the cloud")
        assert first.where(digest) == ["local", "cloud"]
    assert any(p.is_file() for p in remote.rglob("*"))

    other = larder.Larder(home=tmp_path / "other-home")
    assert other.has(digest) and not other.has(digest, local=True)
    with other.open(digest) as f:  # falls through to the remote, fills the local tier
        assert f.read() == b"shared through the cloud"
    assert other.has(digest, local=True)
    out = tmp_path / "out"
    assert other.get(digest, out) == digest and out.read_bytes() == b"shared through the cloud"
    other.close()


def test_use_builds_from_a_recipe_given_as_list_or_string(env):
    src = env.file("src/hello.txt", b"hello\n")
    archive = env.root / "hello.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="hello.txt")
    checksum = "sha256:" + sha256(archive.read_bytes())
    with larder.use([f"file:{archive}", checksum, "tar"], name="hello") as repo:
        assert (repo / "hello.txt").read_text() == "hello\n"
        with larder.use(f"file:{archive} {checksum} tar", name="hello") as same:
            assert same == repo
        assert repo.exists(), "still held by the outer block"
    assert not repo.exists()

    with pytest.raises(larder.CorruptData):
        with larder.use([f"file:{archive}", "sha256:" + "0" * 64, "tar"], name="bad"):
            pass
    with pytest.raises(larder.InvalidInput):
        with larder.use(["tar"], name="no-loader"):
            pass
    with pytest.raises(larder.InvalidInput, match="malformed size"):
        with larder.use([f"file:{archive}"], size="big"):
            pass


def test_scratch_directories_have_meta_and_a_lock(env):
    with larder.scratch(dirs=[env.root / "scratch"]) as tmp:
        assert tmp.path.parent == env.root / "scratch"
        assert set(tmp.meta) == {"id", "created_at"} and tmp.meta["id"] == tmp.name
        tmp.insert_meta("model", "resnet")
        tmp.insert_meta("epochs", 3)
        assert tmp.meta["model"] == "resnet" and tmp.meta["epochs"] == "3"
        (tmp.path / "w.bin").write_bytes(b"w")
        tmp.lock()
        assert tmp.locked
    assert tmp.path.exists() and not tmp.held, "locked: kept after its last holder"
    names = [d["name"] for d in larder.directories()]
    assert tmp.name in names
    again = larder.scratch(tmp.name)
    again.unlock()
    again.release()
    assert not tmp.path.exists()


def test_pool_acquire_runs_and_releases(env):
    machines = env.root / "machines"
    machines.mkdir()
    conf = env.config / "larder" / "sources" / "vm" / "source.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "[DEFAULT]\ntype=command\n"
        f'provision=mkdir "{machines}/$INSTANCE"\n'
        f'run=cd "{machines}/$INSTANCE" && "$@"\n'
        f'discard=rm -rf "{machines}/$INSTANCE"\n'
        "maximum=2\nreserve=2\nconcurrency=3\n"
    )
    with larder.pool.acquire("vm", n=2) as instances:
        assert [i.concurrency for i in instances] == [3, 3]
        a, b = instances
        out = a.run("pwd; echo $LARDER_INSTANCE", capture_output=True, text=True, check=True)
        assert out.stdout.split() == [str(machines / a.name), a.name]
        assert b.run(["sh", "-c", "exit 3"]).returncode == 3
        with pytest.raises(larder.NoRoom):
            with larder.pool.acquire("vm"):
                pass
    with larder.pool.acquire("vm") as [again]:
        assert not again.new, "released instances are cached up to the reserve"
    with pytest.raises(larder.NotFound, match="nope"):
        with larder.pool.acquire("nope"):
            pass


def test_cache_managers_in_one_process_each_hold(env):
    from monolithcaching import CacheManager

    first = CacheManager(local_cache_path=env.root / "caches")
    path = first.create_cache()
    second = CacheManager(local_cache_path=env.root / "caches")
    assert second.create_cache(existing_cache=path) == path
    first.close()
    assert (env.root / "caches").joinpath(first.cache_id or second.cache_id).exists()
    second.close()
    assert list((env.root / "caches").iterdir()) == []
    with pytest.raises(larder.InvalidInput, match="create_cache"):
        second.meta


def test_cache_manager_wipe_and_context(env):
    from monolithcaching import CacheManager

    with CacheManager(local_cache_path=env.root / "caches") as m:
        path = m.cache_path
        m.lock_cache()
        m.wipe_cache()
        assert m.cache_path is None
    import os

    assert not os.path.exists(path)
    with pytest.raises(larder.NotFound):
        CacheManager(local_cache_path=env.root / "caches").create_cache(existing_cache=env.root / "nope")
    with pytest.raises(larder.InvalidInput, match="is a URL"):
        CacheManager(s3_cache_path="s3://bucket/caches", s3=True)
    # Without a remote to send caches to, s3=True is refused at once, not
    # found out when a cache that was never sent is asked for again.
    with pytest.raises(larder.ConfigError, match=r"s3=True sends caches to larder's remotes, but no remote takes writes: add a \[\[remote\]\]"):
        CacheManager(local_cache_path=env.root / "caches", s3=True)
