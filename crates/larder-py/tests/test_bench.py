"""The benchmark script runs (small) and prints its figures."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench" / "bench.py"


def test_benchmark_runs_small(env):
    run = subprocess.run(
        [sys.executable, str(BENCH), "--upload-size", "4MiB", "--blobs", "200", "--dir", str(env.root)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "upload" in run.stdout and "open" in run.stdout and "ratio" in run.stdout, run.stdout
