"""larder from Python: the content store, its remote tiers, shared
directories and compute pools, over the same library as the ``larder``
command (and sharing its homes, configuration and locks).

- :class:`Store`: the local content store (put, get, open, has, pin, …);
  :class:`Larder`: the store with the configured remotes behind it.
- :func:`use`: a repository built from a recipe, for a ``with`` block
  (shared-cache); :func:`scratch`: a scratch directory with metadata and a
  lock.
- :func:`larder.pool.acquire <larder.pool.acquire>`: instances of a compute
  pool for a ``with`` block (crcache).
- :class:`CloudManager` (cloud-manager's API) and :class:`CacheManager`
  (Monolith's), also importable as ``cloudmanager.CloudManager`` and
  ``monolithcaching.CacheManager``.

Errors are :class:`Error` and its subclasses (see ``larder._errors``).
"""

from __future__ import annotations

from ._errors import (
    Busy,
    ConfigError,
    Conflict,
    CorruptData,
    Error,
    InvalidInput,
    NoRoom,
    NotFound,
    PermissionDenied,
)
from . import _larder
from ._dirs import ScratchDir, directories, scratch, use
from ._store import BlobReader, Entry, GcReport, Larder, Removed, Stats, Store, VerifyReport
from . import pool
from .caching import CacheManager
from .cloudmanager import CloudManager

#: The version of larder this package is built from.
__version__: str = _larder.VERSION


def parse_size(text: str) -> int:
    """Bytes in a size written for people: ``"20GiB"``, ``"10GB"``,
    ``"512M"`` (bare K/M/G/T are powers of 1024, KB/MB/GB/TB of 1000),
    ``"4096"``. Raises :class:`InvalidInput` for anything else."""
    return _larder.parse_size(text)


def format_size(n: int) -> str:
    """A byte count for people: ``"1.5 GiB"``."""
    return _larder.format_size(n)


__all__ = [
    "BlobReader",
    "Busy",
    "CacheManager",
    "CloudManager",
    "ConfigError",
    "Conflict",
    "CorruptData",
    "Entry",
    "Error",
    "GcReport",
    "InvalidInput",
    "Larder",
    "NoRoom",
    "NotFound",
    "PermissionDenied",
    "Removed",
    "ScratchDir",
    "Stats",
    "Store",
    "VerifyReport",
    "directories",
    "format_size",
    "parse_size",
    "pool",
    "scratch",
    "use",
]
