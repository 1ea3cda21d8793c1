"""Every Python example of cloud-manager's README (seed 001) and Monolith
caching's (seed 003), run as written in a new Python process: only the
paths, the port and the example hash are replaced. Each case checks what
the example's calls returned and what it left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import larder
from conftest import sha256

RUNNER = Path(__file__).with_name("seed_runner.py")

# --- cloud-manager (seed 001) ------------------------------------------------

CM_USAGE = '''\
import cloudmanager

cm = cloudmanager.CloudManager(
  "/path/to/database.sqlite3",   # Database of the stored files' information
  "/path/to/storage/",           # Cached files will be stored here
  20 * (2**30))                  # 20 GiB capacity

cm.upload("/path/to/file")       # returns hash of the uploaded file, or False

cm.warm_up("6f7bed7...121b2")    # Puts the corresponding file in cache
cm.download("6f7bed7...121b2")   # Same as warm_up

cm.exists("6f7bed7...121b2")     # returns true if the file exists on the database
cm.on_cache("6f7bed7...121b2")   # returns true if the file is on cache

cm.usage_ratio()                 # Returns the storage usage percentage

cm.close()                       # cleans up everything.
'''

# The documentation section, call by call. Its constructor lacks a comma
# after `storage_path` (a syntax error as printed); that comma is added.
CM_DOCS = '''\
cm = cloudmanager.CloudManager(
    database_path,
    storage_path,
    storage_size)
cm.upload(file_path)
cm.warm_up(file_hash)
cm.download(file_hash)
cm.exists(file_hash)
cm.on_cache(file_hash)
cm.usage_ratio()
cm.close()
'''
CM_DOCS_PREAMBLE = '''\
import cloudmanager
database_path = "/path/to/database.sqlite3"
storage_path = "/path/to/storage/"
storage_size = 20 * (2**30)
file_path = "/path/to/file"
file_hash = "6f7bed7...121b2"
'''

# --- Monolith caching (seed 003) --------------------------------------------

MC_CREATE = '''\
from monolithcaching import CacheManager

manager = CacheManager(local_cache_path="/path/to/local/directory/for/all/caches")
manager.create_cache()
'''
MC_EXISTING = '''\
manager.create_cache(existing_cache="/path/to/existing/cache")

cache_path = manager.cache_path
'''
MC_S3 = '''\
manager = CacheManager(s3_cache_path="/path/to/local/directory/for/all/caches", s3=True)
'''
MC_REDIS = '''\
manager = CacheManager(local_cache_path="/path/to/local/directory/for/all/caches", port=6379,
                       host="localhost")
'''
MC_LOCK = '''\
manager.lock_cache()
manager.unlock_cache()
'''
MC_META = '''\
meta = manager.meta
'''
MC_INSERT = '''\
manager.insert_meta(key="some key", value="some value")
'''


class Seed:
    """Paths of one test's world, and a way to run a snippet in it."""

    def __init__(self, env):
        self.env = env
        self.data = b"a file for the cloud\n" * 1000
        self.file = env.file("file", self.data)
        self.hash = sha256(self.data)
        self.caches = env.root / "caches"
        self.replace = {
            "/path/to/database.sqlite3": str(env.root / "database.sqlite3"),
            "/path/to/storage/": str(env.root / "storage") + "/",
            "/path/to/file": str(self.file),
            "6f7bed7...121b2": self.hash,
            "/path/to/local/directory/for/all/caches": str(self.caches),
        }

    def run(self, snippet: str, preamble: str = "", epilogue: str = "", home=None, **replace: str) -> dict:
        code = preamble + snippet + textwrap.dedent(epilogue)
        replacements = {**self.replace, **replace}
        for old, new in replacements.items():
            code = code.replace(old, new)
        env = dict(os.environ)
        if home is not None:
            env["LARDER_HOME"] = str(home)
        run = subprocess.run(
            [sys.executable, str(RUNNER)], input=code, capture_output=True, text=True,
            cwd=self.env.cwd, timeout=120, env=env,
        )
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"

        def as_written(src: str) -> str:
            # Keyed by the call as the seed writes it, comments dropped.
            for old, new in sorted(replacements.items(), key=lambda r: -len(r[1])):
                src = src.replace(new, old)
            return src.split("#")[0].strip()

        return {as_written(src): value for src, value in json.loads(run.stdout)}

    def holder(self, code: str) -> subprocess.Popen:
        """A process that runs `code`, prints a line, and sleeps until killed."""
        for old, new in self.replace.items():
            code = code.replace(old, new)
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code) + "\nprint('ready', flush=True)\nimport time\ntime.sleep(600)\n"],
            stdout=subprocess.PIPE, text=True, cwd=self.env.cwd,
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            if line.strip() == "ready":
                break
            lines.append(line.strip())
        proc.lines = lines
        return proc

    def caches_left(self):
        return sorted(p.name for p in self.caches.iterdir()) if self.caches.exists() else []


def cm_usage(seed: Seed):
    remote = seed.env.remote()
    values = seed.run(CM_USAGE)
    assert values['cm.upload("/path/to/file")'] == repr(seed.hash)
    for call in ("warm_up", "download", "exists", "on_cache"):
        assert values[f'cm.{call}("6f7bed7...121b2")'] == "True"
    ratio = float(values["cm.usage_ratio()"])
    assert ratio == len(seed.data) / (20 * 2**30)
    assert values["cm.close()"] == "None"
    assert any(p.name == seed.hash for p in remote.rglob("*")), "uploaded to the cloud"


def cm_docs(seed: Seed):
    seed.env.remote()
    values = seed.run(CM_DOCS, CM_DOCS_PREAMBLE)
    assert values["cm.upload(file_path)"] == repr(seed.hash)
    assert [values[f"cm.{c}(file_hash)"] for c in ("warm_up", "download", "exists", "on_cache")] == ["True"] * 4
    assert values["cm.close()"] == "None"


def cm_warm_up_from_the_cloud(seed: Seed):
    # Uploaded through one storage folder, found and fetched through another.
    seed.env.remote()
    seed.run(CM_USAGE)
    values = seed.run(
        CM_DOCS.replace("cm.upload(file_path)\n", "cm.on_cache(file_hash)\n", 1),
        CM_DOCS_PREAMBLE,
        **{"/path/to/storage/": str(seed.env.root / "another-storage") + "/"},
    )
    assert values["cm.on_cache(file_hash)"] == "True", "after warm_up"
    assert values["cm.exists(file_hash)"] == "True"
    assert values["cm.warm_up(file_hash)"] == "True"


def cm_upload_without_a_cloud_is_false(seed: Seed):
    values = seed.run(CM_USAGE.split("cm.warm_up")[0] + "cm.close()\n")
    assert values['cm.upload("/path/to/file")'] == "False"


def mc_create(seed: Seed):
    values = seed.run(MC_CREATE, epilogue="""
        import os
        manager.cache_path
        open(manager.cache_path + "work.txt", "w").write("x")
        sorted(os.listdir(manager.cache_path))
    """)
    path = eval(values["manager.cache_path"])
    assert path.startswith(str(seed.caches) + "/") and path.endswith("/")
    assert values["sorted(os.listdir(manager.cache_path))"] == "['work.txt']"
    assert seed.caches_left() == [], "wiped when the program finished"


def mc_existing(seed: Seed):
    holder = seed.holder(MC_CREATE + "print(manager.cache_path)\n")
    existing = holder.lines[0].rstrip("/")
    values = seed.run(MC_CREATE + MC_EXISTING, epilogue="cache_path\n",
                      **{"/path/to/existing/cache": existing})
    assert values["cache_path"] == repr(existing + "/")
    assert Path(existing).is_dir(), "the first holder still holds it"
    holder.kill()
    holder.wait()
    seed.run(MC_CREATE)  # the next look releases the killed holder
    assert seed.caches_left() == []


def mc_s3(seed: Seed):
    seed.env.remote()
    head = "from monolithcaching import CacheManager\n"
    values = seed.run(head + MC_S3, epilogue="""
        manager.create_cache()
        open(manager.cache_path + "model.bin", "wb").write(b"weights")
        manager.insert_meta(key="epoch", value="7")
        manager.cache_id
    """)
    cache_id = eval(values["manager.cache_id"])
    assert seed.caches_left() == [], "wiped here when the program finished, after it was sent"
    # Another host (another larder home) restores it from the remote by its id.
    values = seed.run(head + MC_S3, home=seed.env.root / "another-home", epilogue=f"""
        manager.create_cache(existing_cache="{cache_id}")
        open(manager.cache_path + "model.bin", "rb").read()
        manager.meta["epoch"]
    """)
    assert values['open(manager.cache_path + "model.bin", "rb").read()'] == repr(b"weights")
    assert values['manager.meta["epoch"]'] == "'7'"


def mc_lock(seed: Seed):
    seed.run(MC_CREATE + MC_LOCK)
    assert seed.caches_left() == [], "unlocked again: wiped at the end"
    seed.run(MC_CREATE + MC_LOCK.splitlines()[0] + "\n")
    assert len(seed.caches_left()) == 1, "locked: kept after the program finished"


def mc_meta(seed: Seed):
    before = time.time()
    values = seed.run(MC_CREATE + MC_META, epilogue="meta\nmanager.cache_path\n")
    meta = eval(values["meta"])
    assert set(meta) == {"id", "created_at"}
    assert eval(values["manager.cache_path"]).rstrip("/").endswith(meta["id"])
    import datetime

    created = datetime.datetime.fromisoformat(meta["created_at"].replace("Z", "+00:00"))
    assert before - 2 <= created.timestamp() <= time.time() + 2


def mc_insert(seed: Seed):
    values = seed.run(MC_CREATE + MC_INSERT + MC_META, epilogue="meta['some key']\n")
    assert values["meta['some key']"] == "'some value'"


def mc_redis(seed: Seed, port: int):
    head = "from monolithcaching import CacheManager\n"
    values = seed.run(head + MC_REDIS, epilogue="manager.create_cache()\nmanager.meta['id']\n",
                      **{"port=6379": f"port={port}"})
    assert values["manager.meta['id']"]
    assert seed.caches_left() == []


CASES = {
    "001-usage-example": cm_usage,
    "001-documentation": cm_docs,
    "001-warm-up-from-the-cloud": cm_warm_up_from_the_cloud,
    "001-upload-without-a-cloud": cm_upload_without_a_cloud_is_false,
    "003-create-cache": mc_create,
    "003-existing-cache": mc_existing,
    "003-s3": mc_s3,
    "003-lock-unlock": mc_lock,
    "003-meta": mc_meta,
    "003-insert-meta": mc_insert,
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_seed_examples_run_as_written(env, case):
    case(Seed(env))


@pytest.mark.xfail(
    "redis" not in larder._larder.COORDINATORS,
    reason="the Redis coordinator is not wired into larder yet: CacheManager(host=, port=) is refused",
    raises=AssertionError,
    strict=True,
)
def test_seed_example_with_redis_runs_as_written(env, redis_port):
    mc_redis(Seed(env), redis_port)
