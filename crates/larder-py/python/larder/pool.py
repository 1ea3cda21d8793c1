"""Compute pools from Python (crcache's sources): instances of a source held
by this process for a ``with`` block::

    with larder.pool.acquire("vm", n=2) as (a, b):
        a.run(["make", "test"], check=True)
        b.run("make docs")              # a string runs through sh -c

Sources are read as the ``larder pool`` command reads them
(``sources/<name>/source.conf`` along larder's search path). Instances come
back (cached up to the reserve, else thrown away) when the block ends, or when
this process dies, SIGKILL included: whoever looks next releases them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Sequence, Union

from . import _larder, _util
from ._util import PathArg

__all__ = ["Instance", "acquire"]


@dataclass(frozen=True)
class Instance:
    """An instance handed out by a pool."""

    #: Its name (``larder pool run NAME``).
    name: str
    #: The source that made it.
    source: str
    #: How many jobs it runs at once.
    concurrency: int
    #: Whether it was made for this acquire (else it was cached).
    new: bool
    _pools: Any = field(repr=False, compare=False, default=None)

    def command(self, cmd: Union[str, Sequence[str]] = ()) -> List[str]:
        """The argument list that runs ``cmd`` on the instance (a shell if
        empty; a string runs through ``sh -c``)."""
        return self._command(cmd)[0]

    def _command(self, cmd: Union[str, Sequence[str]]):
        if isinstance(cmd, str):
            argv = ["sh", "-c", cmd]
        else:
            argv = [_util.path(a) if not isinstance(a, str) else a for a in cmd]
        out = self._pools.command(self.name, argv)
        return [out["program"], *out["args"]], out["env"]

    def run(self, cmd: Union[str, Sequence[str]], **kwargs: Any) -> "subprocess.CompletedProcess":
        """Runs ``cmd`` on the instance, as :func:`subprocess.run` does (its
        keyword arguments too: ``check``, ``capture_output``, ``text``,
        ``timeout``, ``input``…). A string runs through ``sh -c``."""
        argv, env = self._command(cmd)
        base = kwargs.pop("env", None)
        merged = dict(os.environ if base is None else base)
        merged.update(env)
        return subprocess.run(argv, env=merged, **kwargs)


@contextlib.contextmanager
def acquire(
    source: str,
    n: int = 1,
    *,
    wait: Optional[float] = None,
    discard: bool = False,
    home: Optional[PathArg] = None,
) -> Iterator[List[Instance]]:
    """Acquires ``n`` instances of ``source``, all or none, for the ``with``
    block, and yields them as a list. Cached instances come first, then new
    ones are provisioned. ``wait`` (seconds) waits for room when the source is
    at its maximum (default: fail at once with :class:`larder.NoRoom`, as the
    command line exits 4).
    ``discard`` throws them away at the end instead of caching them."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TypeError(f"n is a number of instances, 1 or more, not {n!r}")
    pools = _larder.Pools(_util.optional_path(home))
    got = pools.acquire(source, n, wait)
    instances = [Instance(g["name"], g["source"], g["concurrency"], g["new"], pools) for g in got]
    pid = os.getpid()
    try:
        yield instances
    finally:
        # A forked child leaves the parent's instances alone.
        if os.getpid() == pid:
            pools.release([i.name for i in instances], discard)
