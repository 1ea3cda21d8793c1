"""Monolith's ``CacheManager`` over larder's scratch directories.

Each cache is a larder scratch directory held by this Python process: it is
wiped when the program finishes or crashes (SIGKILL included: the holder is
the process, and whoever looks next releases a holder that is gone), unless
it is locked. Every process that points a manager at a cache holds it, so a
cache shared by threads, processes or (with the Redis coordinator) servers
goes only when the last of them is gone.

What differs from Monolith's own module, on purpose:

- Holds are counted crash-safely on this host by larder's home (SQLite), or
  across servers by the Redis coordinator (``host``/``port``), instead of a
  Redis counter that leaked when a process crashed.
- ``s3=True`` keeps the cache on this host and sends it to larder's
  configured remotes (an S3 bucket is a ``[[remote]]`` with ``url =
  "s3://bucket/prefix"``): see :class:`CacheManager`.
- Metadata values are text; ``meta`` always has ``id`` and ``created_at``.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Dict, Optional

from . import _dirs, _larder, _util
from ._errors import ConfigError, InvalidInput, NotFound
from ._store import Larder
from ._util import PathArg

_live: "weakref.WeakSet[CacheManager]" = weakref.WeakSet()


def _close_all() -> None:
    for manager in list(_live):
        try:
            manager.close()
        except Exception:  # the program is ending; nothing can be reported
            pass


# Registered after _dirs' handler (imported above), so it runs first: a
# manager sends its cache (s3=True) before the holds go.
atexit.register(_close_all)


def coordinator_url(host: Optional[str], port: Optional[int]) -> Optional[str]:
    """The Redis coordinator ``host`` and ``port`` name (``None``: this host's
    own). One given alone takes the other's default (localhost, 6379)."""
    if host is None and port is None:
        return None
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    return f"redis://{host or 'localhost'}:{port or 6379}/0"


class CacheManager:
    """Temporary cache directories with metadata (Monolith's ``CacheManager``)::

        manager = CacheManager(local_cache_path="/path/to/all/caches")
        manager.create_cache()
        path = manager.cache_path            # ends in "/", as Monolith's did
        manager.insert_meta(key="model", value="resnet")
        manager.lock_cache()                 # keep it after the program ends

    ``local_cache_path``: the folder new caches go in (default: larder's
    configured ``dirs``). ``host``/``port``: the Redis coordinator that
    counts holders across servers (default: this host's own, in the larder
    home). ``home``: the larder home (default: the configured one).

    ``s3=True``: the cache is also sent to every remote of larder's
    configuration that takes writes (``larder dir push``), by
    :meth:`push_cache` and whenever this manager lets go of it (``close``,
    the end of a ``with`` block, the end of the program; not a crash), and
    ``create_cache(existing_cache=ID)`` restores a cache this host lacks from
    the first remote that has it. ``s3_cache_path`` is then where caches go
    on this host (as the seed's example writes it: a local folder); the
    bucket itself is a ``[[remote]]``, so an ``s3://`` URL here is refused.
    """

    def __init__(
        self,
        local_cache_path: Optional[PathArg] = None,
        s3_cache_path: Optional[PathArg] = None,
        s3: bool = False,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        home: Optional[PathArg] = None,
    ):
        if s3_cache_path is not None and "://" in _util.path(s3_cache_path):
            raise InvalidInput(
                f"s3_cache_path {_util.path(s3_cache_path)} is a URL; it is the folder for caches on "
                f'this host: put the bucket in larder\'s configuration as a [[remote]] with url = '
                f'"{_util.path(s3_cache_path)}"'
            )
        folder = local_cache_path if local_cache_path is not None else s3_cache_path
        self.local_cache_path = _util.optional_path(local_cache_path)
        self.s3_cache_path = _util.optional_path(s3_cache_path)
        self.s3 = bool(s3)
        self.host = host
        self.port = port
        self._home = _util.optional_path(home)
        self._places = None if folder is None else [_util.path(folder)]
        if self._places:
            os.makedirs(self._places[0], exist_ok=True)
        self._coordinator = coordinator_url(host, port)
        self._dirs = _larder.Dirs(self._home, self._places, self._coordinator)
        self._larder: Optional[Larder] = None
        self._cache: Optional[_dirs.ScratchDir] = None
        self._mutex = threading.RLock()
        if self.s3:
            # Said now, not found out when a cache that was never sent is
            # asked for again.
            try:
                self._remotes()._tiers.require_writable_remote()
            except ConfigError as e:
                raise ConfigError(f"s3=True sends caches to larder's remotes, but {e}") from None
        _live.add(self)

    def __reduce__(self):
        # Sent to another process (multiprocessing's spawn): a manager there
        # attached to the same cache.
        path = self._cache.path if self._cache is not None and self._cache.held else None
        return (
            _rebuild,
            (self.local_cache_path, self.s3_cache_path, self.s3, self.host, self.port, self._home,
             None if path is None else str(path)),
        )

    def __repr__(self) -> str:
        return f"<CacheManager cache_path={self.cache_path!r}>"

    def __enter__(self) -> "CacheManager":
        if self._cache is None:
            self.create_cache()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _remotes(self) -> Larder:
        if self._larder is None:
            self._larder = Larder(home=self._home)
        return self._larder

    def create_cache(self, existing_cache: Optional[PathArg] = None) -> str:
        """Makes a new cache (a fresh id) and holds it, or, with
        ``existing_cache`` (a cache's path, or with ``s3=True`` also its id),
        holds that one: another holder of the same cache. A cache this manager
        held before is let go. Returns :attr:`cache_path`.

        Caches whose holders all died are wiped first: this is the "next look"
        that cleans up after crashed programs.
        """
        with self._mutex:
            if self._cache is not None:
                self._let_go()
            self._dirs.list()
            if existing_cache is None:
                hold = self._dirs.hold(None, 0, [])
            else:
                hold = self._attach(_util.path(existing_cache))
            self._cache = _dirs.ScratchDir(self._dirs, hold)
            path = self.cache_path
            assert path is not None
            return path

    def _attach(self, existing: str) -> "_larder.Hold":
        try:
            return self._dirs.hold_path(existing)
        except NotFound:
            if not self.s3:
                raise
        # Not on this host: restore it from a remote, by its id.
        name = os.path.basename(existing.rstrip("/"))
        hold, _ = self._dirs.restore(self._remotes()._tiers, name, None)
        return hold

    @property
    def cache_path(self) -> Optional[str]:
        """The cache's folder, ending in ``/`` (``None`` before
        :meth:`create_cache`)."""
        cache = self._cache
        if cache is None or cache._released:
            return None
        return str(cache.path) + "/"

    @property
    def cache_id(self) -> Optional[str]:
        """The cache's id (its name in ``larder dir ls``)."""
        return None if self._cache is None else self._cache.name

    def _need(self) -> _dirs.ScratchDir:
        cache = self._cache
        if cache is None or cache._released:
            raise InvalidInput("this CacheManager has no cache; call create_cache() first")
        return cache

    @property
    def meta(self) -> Dict[str, str]:
        """The cache's metadata: ``id``, ``created_at`` (when it was made, RFC
        3339 in UTC) and what :meth:`insert_meta` added."""
        return self._need().meta

    def insert_meta(self, key: str, value: object) -> None:
        """Adds or replaces one metadata entry (kept as text), seen by every
        holder at once."""
        self._need().insert_meta(key, value)

    def lock_cache(self) -> None:
        """Keeps the cache after the program finishes or crashes."""
        self._need().lock()

    def unlock_cache(self) -> None:
        """Lets the cache be wiped with its last holder again."""
        self._need().unlock()

    @property
    def locked(self) -> bool:
        """Whether the cache is locked."""
        return self._need().locked

    def push_cache(self) -> Optional[str]:
        """Sends the cache to larder's remotes now (with ``s3=True`` this also
        happens when the manager lets go of it); returns the manifest's
        digest."""
        cache = self._need()
        return self._dirs.push(self._remotes()._tiers, cache._current().name, None, True)

    def wipe_cache(self) -> None:
        """Deletes the cache now, whoever else holds it and even if locked."""
        with self._mutex:
            cache = self._need()
            name = cache.name
            cache.release()
            self._cache = None
            try:
                self._dirs.remove(name, True)
            except NotFound:
                pass

    def _let_go(self) -> None:
        cache = self._cache
        self._cache = None
        if cache is None or cache._released:
            return
        try:
            if self.s3 and cache._hold.pid == os.getpid():
                self._dirs.push(self._remotes()._tiers, cache.name, None, True)
        finally:
            cache.release()

    def close(self) -> None:
        """Lets go of the cache (wiped if this was its last holder and it is
        not locked; sent to the remotes first with ``s3=True``)."""
        with self._mutex:
            _live.discard(self)
            try:
                self._let_go()
            finally:
                if self._larder is not None:
                    self._larder.close()
                    self._larder = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _rebuild(local_cache_path, s3_cache_path, s3, host, port, home, path) -> CacheManager:
    manager = CacheManager(local_cache_path, s3_cache_path, s3, host, port, home=home)
    if path is not None:
        manager.create_cache(existing_cache=path)
    return manager
