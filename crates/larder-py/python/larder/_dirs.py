"""Shared directories from Python: repositories built from a recipe
(:func:`use`, shared-cache's ``sc --use``) and scratch directories with
metadata and a lock (:func:`scratch`, Monolith's caches).

A directory is held by this Python process. It goes when its last holder
lets go, unless it is locked: when the hold is released (the ``with`` block
ends, :meth:`ScratchDir.release`, the object is collected, the program
exits), or when the process dies in any way, SIGKILL included, because a
holder is a process (pid and start time) and whoever looks next releases the
holders that are gone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import shlex
import threading
import weakref
from typing import Dict, Iterator, List, Optional, Sequence, Union

from . import _larder, _util
from ._util import PathArg, Size

#: A recipe: shared-cache's steps as a list (``["https://…/a.tar.gz",
#: "md5:…", "tar"]``) or as one string split like a shell would.
Recipe = Union[str, Sequence[str]]

# Holds to release when the program ends normally; a crash leaves them to
# whoever looks next.
_live: "weakref.WeakSet[ScratchDir]" = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    for held in list(_live):
        try:
            held.release()
        except Exception:  # the program is ending; nothing can be reported
            pass


def _places(dirs: Optional[Sequence[PathArg]]) -> Optional[List[str]]:
    if dirs is None:
        return None
    if isinstance(dirs, (str, bytes, os.PathLike)):
        return [p for p in _util.path(dirs).split(":") if p]
    return [_util.path(d) for d in dirs]


def _recipe(recipe: Recipe) -> List[str]:
    if isinstance(recipe, str):
        return shlex.split(recipe)
    steps = list(recipe)
    for step in steps:
        if not isinstance(step, str):
            raise TypeError(f"recipe steps are str, not {type(step).__name__}")
    return steps


def _dirs_handle(
    home: Optional[PathArg], dirs: Optional[Sequence[PathArg]], coordinator: Optional[str] = None
) -> "_larder.Dirs":
    return _larder.Dirs(_util.optional_path(home), _places(dirs), coordinator)


@contextlib.contextmanager
def use(
    recipe: Recipe,
    name: Optional[str] = None,
    size: Optional[Size] = None,
    dirs: Optional[Sequence[PathArg]] = None,
    *,
    home: Optional[PathArg] = None,
    refresh: bool = False,
) -> Iterator[pathlib.Path]:
    """Holds the repository a recipe builds, for the ``with`` block, and
    yields its path (shared-cache's ``sc --use``/``sc --unuse``)::

        with larder.use("https://example.org/a.tar.gz md5:7b9d… tar", name="a", size="10GB") as repo:
            ...

    The first user builds it (downloading through the store, checking the
    checksums, unpacking) into a staging folder and renames it into place;
    the others wait and share it. ``name`` defaults to one made from the
    recipe; ``size`` (bytes or ``"10GB"``) is the space it needs; ``dirs``
    lists the folders to create it in (the first with ``size`` free; by
    default the configured ``dirs``). The last holder to leave deletes it.
    With ``refresh``, a build here downloads again what the store kept from
    earlier downloads.
    """
    handle = _dirs_handle(home, dirs)
    hold = handle.hold(
        name, _util.size(size) if size is not None else 0, _recipe(recipe), refresh
    )
    try:
        yield pathlib.Path(hold.path)
    finally:
        hold.release()


class ScratchDir:
    """A shared directory held by this process: a folder with metadata (``id``
    and ``created_at`` set by larder) and a lock flag. Unlocked, it is deleted
    when its last holder lets go; locked, it stays.

    Made by :func:`scratch`. As a context manager it releases at the end of
    the block. A forked child that uses it holds the directory too, from its
    first use (its own hold, released when the child exits or dies).
    """

    def __init__(self, handle: "_larder.Dirs", hold: "_larder.Hold"):
        self._dirs = handle
        self._hold = hold
        self._released = False
        self._mutex = threading.Lock()
        _live.add(self)

    def __reduce__(self):
        # Sent to another process (multiprocessing's spawn): held there too.
        return (_attach, (str(self.path),))

    def __repr__(self) -> str:
        return f"<ScratchDir {self.name} at {self.path}>"

    def __enter__(self) -> "ScratchDir":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _current(self) -> "_larder.Hold":
        """This process's hold: a forked child takes its own on first use."""
        hold = self._hold
        if hold.pid == os.getpid() or self._released:
            return hold
        with self._mutex:
            if self._hold.pid != os.getpid():
                self._hold = self._dirs.hold(self._hold.name)
                _live.add(self)
            return self._hold

    @property
    def name(self) -> str:
        """Its name (a fresh 16-hex-digit id unless one was given)."""
        return self._hold.name

    @property
    def path(self) -> pathlib.Path:
        """Where it is."""
        return pathlib.Path(self._current().path)

    @property
    def meta(self) -> Dict[str, str]:
        """Its metadata as it is now: ``id``, ``created_at`` (RFC 3339, UTC)
        and whatever was inserted."""
        return dict(self._dirs.show(self._current().name)["meta"])

    def insert_meta(self, key: str, value: object) -> None:
        """Adds or replaces one metadata entry; values are kept as text."""
        if not isinstance(key, str):
            raise TypeError(f"metadata keys are str, not {type(key).__name__}")
        text = value if isinstance(value, str) else str(value)
        self._dirs.insert_meta(self._current().name, [(key, text)])

    @property
    def locked(self) -> bool:
        """Whether it stays after its last holder."""
        return bool(self._dirs.show(self._current().name)["locked"])

    def lock(self) -> None:
        """Keeps it after its last holder, even after a crash."""
        self._dirs.set_locked(self._current().name, True)

    def unlock(self) -> None:
        """Lets it go with its last holder (at once if nobody holds it)."""
        self._dirs.set_locked(self._current().name, False)

    @property
    def held(self) -> bool:
        """Whether this process still holds it through this object."""
        return not self._released and self._hold.held

    def release(self) -> None:
        """Lets go of it; deleted if that was its last holder and it is not
        locked. Releasing twice is fine."""
        with self._mutex:
            if self._released:
                return
            self._released = True
            hold = self._hold
        _live.discard(self)
        hold.release()


def _attach(path: str) -> ScratchDir:
    handle = _larder.Dirs(None, None, None)
    return ScratchDir(handle, handle.hold_path(path))


def scratch(
    name: Optional[str] = None,
    size: Optional[Size] = None,
    dirs: Optional[Sequence[PathArg]] = None,
    *,
    home: Optional[PathArg] = None,
) -> ScratchDir:
    """Holds the scratch directory ``name`` (a new one with a fresh id if
    ``None``) for this process, creating it in the first of ``dirs`` (default:
    the configured ``dirs``) with ``size`` free::

        with larder.scratch() as tmp:
            tmp.insert_meta("model", "resnet")
            (tmp.path / "weights.bin").write_bytes(b"...")
    """
    handle = _dirs_handle(home, dirs)
    return ScratchDir(handle, handle.hold(name, _util.size(size) if size is not None else 0, []))


def directories(*, home: Optional[PathArg] = None) -> List[dict]:
    """Every shared directory of the home (``larder dir ls``), after deleting
    those whose holders are all gone."""
    return _larder.Dirs(_util.optional_path(home), None, None).list()
