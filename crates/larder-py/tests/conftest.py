"""Fixtures: each test gets its own larder home, configuration folder and
working directory, and a clean environment (no LARDER_* of the caller)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Env:
    root: Path
    home: Path
    config: Path
    cwd: Path

    def remote(self, name: str = "cloud", mode: str = "write-through") -> Path:
        """Adds a folder as a remote tier (a `file://` remote) to the user's
        configuration; returns the folder."""
        folder = self.root / f"remote-{name}"
        folder.mkdir(exist_ok=True)
        conf = self.config / "larder" / "config.toml"
        conf.parent.mkdir(parents=True, exist_ok=True)
        with conf.open("a") as f:
            f.write(f'[[remote]]\nname = "{name}"\nurl = "file://{folder}"\nmode = "{mode}"\n')
        return folder

    def file(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def python(self, code: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Runs `code` in a new Python process with this environment."""
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.cwd,
        )
        if check and run.returncode != 0:
            raise AssertionError(f"python exited {run.returncode}:\n{run.stdout}\n{run.stderr}")
        return run


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    for name in list(os.environ):
        if name.startswith("LARDER_"):
            monkeypatch.delenv(name)
    e = Env(tmp_path, tmp_path / "home", tmp_path / "config", tmp_path / "cwd")
    for folder in (e.home, e.config, e.cwd):
        folder.mkdir()
    monkeypatch.setenv("LARDER_HOME", str(e.home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(e.config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(e.cwd)
    return e


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int) -> None:
    for _ in range(1000):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def redis_port():
    """A real redis-server on loopback, for the Redis coordinator."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        server.terminate()
        server.wait()
