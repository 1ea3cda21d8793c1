"""cloud-manager's ``CloudManager`` over larder's store and remote tiers.

The store keeps a capacity-bounded local cache of the files uploaded; "the
cloud" is larder's configured remotes (``[[remote]]`` in
``~/.config/larder/config.toml`` or ``./.larder/config.toml``: S3, GCS, Azure,
WebDAV, a folder, or another ``larder serve``).
"""

from __future__ import annotations

import logging
from typing import Optional, Union

from . import _util
from ._errors import Error, InvalidInput
from ._store import Larder
from ._util import PathArg, Size

log = logging.getLogger("larder.cloudmanager")


class CloudManager:
    """A pool of files uploaded to the cloud, with a local cache
    (cloud-manager's API)::

        cm = CloudManager("/path/to/database.sqlite3", "/path/to/storage/", 20 * (2**30))
        file_hash = cm.upload("/path/to/file")   # the file's SHA-256 as 64 hex digits, or False
        cm.warm_up(file_hash)                     # into the local cache; download() is the same
        cm.exists(file_hash), cm.on_cache(file_hash)
        cm.usage_ratio()                          # 0.25 when a quarter of the capacity is used
        cm.close()

    ``storage_path`` is the larder home: the cached files and their index
    (``store-v1/index.sqlite``) live there, made on first use; nothing needs
    creating beforehand. ``storage_size`` is its capacity, in bytes or as
    text like ``"20GiB"``. ``database_path`` is accepted for compatibility and
    not used: larder keeps its index inside ``storage_path`` and needs no
    schema, so cloud-manager's ``sqlite3 db/production.sqlite3 <
    db/schema.sql`` step can be skipped (a database made by it is left
    alone).

    Hashes are SHA-256 digests. :meth:`upload` returns them as bare hex (as
    cloud-manager's example shows); every method takes bare hex or larder's
    ``sha256:<hex>`` form, and raises :class:`larder.InvalidInput` for
    anything else. :meth:`upload`, :meth:`warm_up` and :meth:`download`
    return ``False`` when they fail, with the reason logged on the
    ``larder.cloudmanager`` logger.
    """

    def __init__(self, database_path: Optional[PathArg], storage_path: PathArg, storage_size: Size):
        self.database_path = None if database_path is None else _util.path(database_path)
        self.storage_path = _util.path(storage_path)
        self.storage_size = _util.size(storage_size, "storage_size")
        self._larder: Optional[Larder] = Larder(home=self.storage_path, capacity=self.storage_size)

    def __repr__(self) -> str:
        return f"CloudManager({self.database_path!r}, {self.storage_path!r}, {self.storage_size})"

    def __enter__(self) -> "CloudManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self) -> Larder:
        if self._larder is None:
            raise Error("this CloudManager is closed; make a new one")
        return self._larder

    def upload(self, file_path: PathArg) -> Union[str, bool]:
        """Uploads a file to the cloud, keeping a copy in the local cache.
        Returns its hash (64 hex digits) once every remote that takes writes
        has it, or ``False`` if that failed (the reason is logged)."""
        larder = self._open()
        try:
            return _util.bare_hex(larder.upload(file_path))
        except Error as e:
            log.error("upload of %s failed: %s", _util.path(file_path), e)
            return False

    def warm_up(self, file_hash: str) -> bool:
        """Puts a previously uploaded file in the local cache, fetching it from
        the cloud if needed. Returns ``True``, or ``False`` if no tier has it
        or fetching failed (the reason is logged)."""
        digest = _util.file_hash(file_hash)
        larder = self._open()
        try:
            larder.warm_up(digest)
            return True
        except InvalidInput:
            raise
        except Error as e:
            log.error("warm_up of %s failed: %s", file_hash, e)
            return False

    def download(self, file_hash: str) -> bool:
        """The same as :meth:`warm_up`."""
        return self.warm_up(file_hash)

    def exists(self, file_hash: str) -> bool:
        """Whether the file was uploaded: the local cache or a remote has it."""
        return self._open().has(_util.file_hash(file_hash))

    def on_cache(self, file_hash: str) -> bool:
        """Whether the file is in the local cache now."""
        return self._open().has(_util.file_hash(file_hash), local=True)

    def usage_ratio(self) -> float:
        """How full the local cache is, from 0 to 1 (0.25: a quarter of
        ``storage_size`` is used)."""
        return self._open().usage_ratio()

    def close(self) -> None:
        """Releases everything: sends what write-back remotes are still owed
        and closes the store. Closing twice is fine; a failed send is logged
        and stays queued for the next larder command."""
        larder, self._larder = self._larder, None
        if larder is None:
            return
        try:
            larder.close()
        except Error as e:
            log.warning("closing %s: %s", self.storage_path, e)
