"""larder from Python beside plain Python, on this machine:

- ``CloudManager.upload`` of one file (1 GiB by default) to a folder remote,
  beside ``shutil.copyfile`` to the same kind of folder plus ``hashlib.sha256``
  of the file (the copy to "the cloud" and the hash cloud-manager needs);
  target: at most 0.8 times as long. larder also keeps a local copy and
  waits for it to reach the disk, which ``copyfile`` never does; the same
  copy with an ``fsync`` is printed beside it as the like-for-like reference.
- reading 10,000 small blobs with ``Store.get(d)`` (and
  ``Store.open(d).read()``), beside ``open(path).read()`` of the same files;
  target: at most 2 times as long. Then copying them to files with
  ``Store.get(d, path)`` beside ``shutil.copyfile``.

Each figure is the best of a few runs. ``--upload-size`` and ``--blobs`` run
it small (the test suite does).

On a virtual machine, the host backs each page of the guest's memory the
first time the guest touches it, and that fault costs more than the copy
into the page. ``CloudManager.upload`` fills twice the pages ``copyfile``
does (its local copy and the cloud's), so while the guest still has memory
it never used, the upload pays twice that toll. ``--warm-memory 16GiB``
touches that much memory first, as a machine that has been running a while
already has.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def best(runs: int, prepare, measure) -> float:
    times = []
    for _ in range(runs):
        prepare()
        start = time.perf_counter()
        measure()
        times.append(time.perf_counter() - start)
    return min(times)


def write_random(path: Path, size: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


def bench_upload(root: Path, size: int, runs: int) -> tuple:
    import larder

    src = root / "upload.bin"
    write_random(src, size)
    cloud = root / "cloud"
    plain = root / "plain-cloud"
    conf = root / "config" / "larder" / "config.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f'[[remote]]\nname = "cloud"\nurl = "file://{cloud}"\n')
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    storage = root / "storage"

    def fresh():
        for folder in (cloud, plain, storage):
            shutil.rmtree(folder, ignore_errors=True)
        cloud.mkdir()
        plain.mkdir()
        # Neither side pays for writing back what the run before it wrote.
        os.sync()

    def sha256():
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    def python():
        shutil.copyfile(src, plain / "upload.bin")
        sha256()

    def python_durable():
        # As larder keeps its copy: on disk before it counts as stored.
        with open(src, "rb") as fin, open(plain / "upload.bin", "wb") as fout:
            shutil.copyfileobj(fin, fout)
            fout.flush()
            os.fsync(fout.fileno())
        sha256()

    state = {}

    def prepare_larder():
        fresh()
        state["cm"] = larder.CloudManager(None, storage, 2 * size + (1 << 30))

    def upload():
        assert state["cm"].upload(src), "upload failed"

    # Turn about, so that a slower spell of the machine hits every side.
    base, durable, ours = float("inf"), float("inf"), float("inf")
    for _ in range(runs):
        base = min(base, best(1, fresh, python))
        durable = min(durable, best(1, fresh, python_durable))
        ours = min(ours, best(1, prepare_larder, upload))
        state["cm"].close()
    return base, durable, ours


def bench_reads(root: Path, count: int, runs: int) -> tuple:
    import larder

    files = root / "files"
    files.mkdir()
    paths = []
    for i in range(count):
        p = files / f"{i:05}"
        p.write_bytes(os.urandom(4096))
        paths.append(p)
    store = larder.Store(home=root / "home")
    digests = store.put_many(paths)
    out = root / "out"
    out.mkdir()

    def python():
        for p in paths:
            with open(p, "rb") as f:
                f.read()

    def ours_open():
        for d in digests:
            with store.open(d) as f:
                f.read()

    def ours_read():
        for d in digests:
            store.get(d)

    def ours_get():
        for i, d in enumerate(digests):
            store.get(d, out / f"{i:05}")

    def python_copy():
        for i, p in enumerate(paths):
            shutil.copyfile(p, out / f"{i:05}")

    nothing = lambda: None  # noqa: E731
    base = best(runs, nothing, python)
    read = best(runs, nothing, ours_read)
    opened = best(runs, nothing, ours_open)
    copied = best(runs, nothing, python_copy)
    got = best(runs, nothing, ours_get)
    store.close()
    return base, read, opened, copied, got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-size", default="1GiB")
    parser.add_argument("--blobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", help="where to work (default: a temporary folder)")
    parser.add_argument("--warm-memory", default="0",
                        help="touch this much memory first (see above), e.g. 16GiB")
    args = parser.parse_args()
    import larder

    warm = larder.parse_size(args.warm_memory)
    if warm:
        import mmap

        with mmap.mmap(-1, warm) as memory:
            for offset in range(0, warm, mmap.PAGESIZE):
                memory[offset] = 1

    size = larder.parse_size(args.upload_size)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        os.environ["LARDER_HOME"] = str(root / "home")
        (root / "up").mkdir()
        base, durable, ours = bench_upload(root / "up", size, args.runs)
        print(f"upload {larder.format_size(size)}: copyfile+sha256 {base:.3f}s, "
              f"CloudManager.upload {ours:.3f}s, ratio {ours / base:.2f} (target <= 0.8)")
        print(f"upload {larder.format_size(size)}: copy+fsync+sha256 {durable:.3f}s, "
              f"CloudManager.upload {ours:.3f}s, ratio {ours / durable:.2f} "
              "(larder's local copy is on disk before upload returns)")
        (root / "rd").mkdir()
        base, read, opened, copied, got = bench_reads(root / "rd", args.blobs, args.runs)
        print(f"read {args.blobs} blobs of 4 KiB: open().read() {base:.3f}s, "
              f"Store.get(d) {read:.3f}s, ratio {read / base:.2f} (target <= 2)")
        print(f"read {args.blobs} blobs of 4 KiB: open().read() {base:.3f}s, "
              f"Store.open(d).read() {opened:.3f}s, ratio {opened / base:.2f}")
        print(f"copy {args.blobs} blobs of 4 KiB to files: shutil.copyfile {copied:.3f}s, "
              f"Store.get(d, path) {got:.3f}s, ratio {got / copied:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
