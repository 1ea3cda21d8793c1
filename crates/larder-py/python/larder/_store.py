"""The content store from Python: :class:`Store` (the local tier) and
:class:`Larder` (the store with the configured remotes behind it)."""

from __future__ import annotations

import atexit
import io
import pathlib
import weakref
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, overload

from . import _larder, _util
from ._util import PathArg, Size


@dataclass(frozen=True)
class Entry:
    """One blob of the store, as ``larder ls`` shows it."""

    digest: str
    size: int
    pinned: bool
    #: Last use, in seconds since the epoch.
    used_at: int
    #: When it was stored, in seconds since the epoch.
    created_at: int
    keys: Tuple[str, ...]


@dataclass(frozen=True)
class Stats:
    """The store's totals."""

    entries: int
    bytes: int
    pinned_bytes: int
    capacity: int
    #: ``bytes / capacity``, 0 to 1.
    usage_ratio: float
    hits: int
    misses: int


@dataclass(frozen=True)
class GcReport:
    """What :meth:`Store.gc` did."""

    evicted: int
    freed: int
    #: Leftovers of dead processes cleaned up.
    swept: int
    #: Bytes held afterwards.
    bytes: int


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Store.verify` found (and, with ``repair``, fixed)."""

    clean: bool
    checked: int
    bytes: int
    #: Digests whose bytes did not match (now quarantined).
    corrupt: Tuple[str, ...]
    #: Indexed digests whose file is gone.
    missing: Tuple[str, ...]
    #: Files in the content folder the index did not know.
    orphans: Tuple[str, ...]
    adopted: int
    dropped: int


@dataclass(frozen=True)
class Removed:
    """What :meth:`Store.remove` removed."""

    digest: str
    #: The keys that went (the key removed, or every key of a removed blob).
    keys: Tuple[str, ...]
    blob_removed: bool


class BlobReader(io.BufferedReader):
    """A stored blob open for reading: a read-only binary file whose bytes
    hashed right since the stored file last changed (or were hashed before it
    was handed out). Eviction cannot take the bytes from under it."""

    #: The blob's digest, ``sha256:<hex>``.
    digest: str
    #: Its size in bytes.
    size: int


# Stores whose reads (recorded in batches) are to be recorded at exit.
_open: "weakref.WeakSet[Store]" = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for store in list(_open):
        try:
            store._tiers.flush()
        except Exception:  # the program is ending; nothing can be reported
            pass


class Store:
    """The content store of a larder home: blobs by SHA-256 digest, keys bound
    to them, a capacity kept by evicting the least recently used unpinned
    blobs.

    ``home`` and ``capacity`` default to larder's configuration (files,
    ``LARDER_HOME``, ``LARDER_CAPACITY``), as the ``larder`` command reads it.
    ``capacity`` is a number of bytes or text like ``"20GiB"``.

    Digests are ``sha256:<hex>`` (64 bare hex digits are accepted too);
    anything else names a key. Every method releases the GIL while it works,
    a store may be shared by threads, and a forked child (``multiprocessing``)
    reopens it on first use. ``with Store() as s:`` closes it at the end.
    """

    _remotes = False

    def __init__(self, home: Optional[PathArg] = None, capacity: Optional[Size] = None):
        self._args = (home, capacity)
        self._tiers = _larder.Tiers(
            _util.optional_path(home), _util.optional_size(capacity, "capacity"), self._remotes
        )
        _open.add(self)

    def __reduce__(self):
        # A store sent to another process (multiprocessing's spawn) is opened
        # there again on the same home.
        return (type(self), (str(self.home), self.capacity))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(home={str(self.home)!r}, capacity={self.capacity})"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, target: str) -> bool:
        return self.has(target)

    @property
    def home(self) -> pathlib.Path:
        """The larder home the store lives in."""
        return pathlib.Path(self._tiers.home)

    @property
    def capacity(self) -> int:
        """The capacity in bytes."""
        return self._tiers.capacity

    def put(self, path: PathArg, *, key: Optional[str] = None, pin: bool = False) -> str:
        """Stores the file at ``path`` and returns its digest. ``key`` binds a
        name to it; ``pin`` keeps eviction away from it."""
        return self._tiers.put([_util.path(path)], key, pin)[0]

    def put_many(self, paths: Iterable[PathArg], *, pin: bool = False) -> List[str]:
        """Stores many files in batches (one flush and one transaction per
        batch) and returns their digests in order. Every file is tried; the
        first failure is raised after the others are stored."""
        return self._tiers.put([_util.path(p) for p in paths], None, pin)

    def put_bytes(self, data: bytes, *, key: Optional[str] = None, pin: bool = False) -> str:
        """Stores ``data`` (``bytes`` or ``bytearray``) and returns its digest."""
        return self._tiers.put_bytes(data, key, pin)

    @overload
    def get(self, target: str) -> bytes: ...

    @overload
    def get(self, target: str, dest: PathArg, *, link: bool = False) -> str: ...

    def get(self, target: str, dest: Optional[PathArg] = None, *, link: bool = False):
        """Without ``dest``, the bytes of the blob ``target`` names, verified.

        With ``dest`` (a file, or a folder to put it in), writes the blob
        there and returns its digest. The file appears only complete and
        verified. ``link`` hands out a reflink or read-only hardlink where the
        filesystem allows."""
        if dest is None:
            return self._tiers.read(_util.target(target))
        return self._tiers.get(_util.target(target), _util.path(dest), link)

    def open(self, target: str) -> BlobReader:
        """Opens the blob ``target`` names for reading, streaming from the
        stored file. Raises :class:`larder.NotFound` if it is not stored and
        :class:`larder.CorruptData` if its bytes no longer match."""
        fd, digest, size = self._tiers.open(_util.target(target))
        reader = BlobReader(io.FileIO(fd, "rb", closefd=True))
        reader.digest = digest
        reader.size = size
        return reader

    def read_bytes(self, target: str) -> bytes:
        """The whole blob ``target`` names, verified (``get(target)``)."""
        return self._tiers.read(_util.target(target))

    def has(self, target: str) -> bool:
        """Whether the store holds ``target``."""
        return self._tiers.has(_util.target(target), True)

    def pin(self, target: str) -> str:
        """Keeps eviction away from the blob; returns its digest."""
        return self._tiers.set_pinned(_util.target(target), True)

    def unpin(self, target: str) -> str:
        """Lets eviction take the blob again; returns its digest."""
        return self._tiers.set_pinned(_util.target(target), False)

    def remove(self, target: str, *, force: bool = False) -> Removed:
        """Removes a blob with its keys, or a key (and its blob if nothing else
        names it and it is not pinned). A pinned blob needs ``force``."""
        r = self._tiers.remove(_util.target(target), force)
        return Removed(r["digest"], tuple(r["keys"]), r["blob_removed"])

    def ls(self) -> List[Entry]:
        """Every entry, most recently used first."""
        return [
            Entry(e["digest"], e["size"], e["pinned"], e["used_at"], e["created_at"], tuple(e["keys"]))
            for e in self._tiers.ls()
        ]

    def stats(self) -> Stats:
        """Entries, bytes, capacity, usage, hits and misses."""
        return Stats(**self._tiers.stats())

    def usage_ratio(self) -> float:
        """Bytes held over capacity, 0 to 1."""
        return self._tiers.usage_ratio()

    def gc(self, to: Optional[Size] = None) -> GcReport:
        """Evicts least recently used unpinned blobs down to ``to`` (a size;
        the capacity by default), and cleans up after dead processes."""
        return GcReport(**self._tiers.gc(_util.optional_size(to, "gc target")))

    def verify(self, repair: bool = False) -> VerifyReport:
        """Re-hashes every blob, quarantining corrupt ones; with ``repair``,
        fixes the index (drops rows of missing files, adds back orphans)."""
        r = self._tiers.verify(repair)
        return VerifyReport(
            r["clean"],
            r["checked"],
            r["bytes"],
            tuple(r["corrupt"]),
            tuple(r["missing"]),
            tuple(str(p) for p in r["orphans"]),
            r["adopted"],
            r["dropped"],
        )

    def close(self) -> None:
        """Closes the store in this process; later calls raise. Closing twice
        is fine."""
        _open.discard(self)
        self._tiers.close(False)


class Larder(Store):
    """The store with the configured remote tiers behind it (``[[remote]]``
    in larder's configuration): reads fall through the remotes and fill the
    local tier, checking what a remote sends against its digest; writes go
    to the local tier, then to every write-through remote at once, and to
    write-back ones from a queue that :meth:`close` sends.
    """

    _remotes = True

    @property
    def remotes(self) -> List[str]:
        """The remotes' names, in the order reads try them."""
        return self._tiers.remotes

    def has(self, target: str, *, local: bool = False) -> bool:
        """Whether any tier holds ``target`` (only the local one with ``local``)."""
        return self._tiers.has(_util.target(target), local)

    def where(self, target: str) -> List[str]:
        """The tiers holding ``target``: ``"local"`` and remotes' names."""
        return self._tiers.where_is(_util.target(target))

    def upload(self, path: PathArg) -> str:
        """Stores a file and sends it to every remote that takes writes; the
        digest comes back only once they have it."""
        return self._tiers.upload(_util.path(path))

    def warm_up(self, target: str) -> str:
        """Makes sure the local tier holds ``target``, fetching it from the
        first remote that has it; returns its digest."""
        return self._tiers.warm_up(_util.target(target))

    def close(self) -> None:
        """Sends what write-back remotes are owed, then closes. Uploads that
        fail stay queued for the next larder command, and the error says so."""
        _open.discard(self)
        self._tiers.close(True)
