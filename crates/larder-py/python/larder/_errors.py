"""The exceptions larder raises.

Every error of the library is a :class:`larder.Error` carrying the library's
one-line message, which names the thing and the fix. Its class says what went
wrong, and where a built-in exception means the same it is one too, so code
written against the built-ins keeps working:

=====================  ===============================================  ==============
class                  when                                             also a
=====================  ===============================================  ==============
``NotFound``           a digest, key, file or directory does not exist  ``KeyError``,
                                                                        ``FileNotFoundError``
``InvalidInput``       a malformed digest, size, key, recipe or name    ``ValueError``
``ConfigError``        the configuration is wrong                       ``InvalidInput``
``CorruptData``        stored bytes no longer match their digest        ``OSError`` (EIO)
``NoRoom``             the capacity, the disk or a pool is full         ``OSError`` (ENOSPC)
``PermissionDenied``   the system refused access                        ``PermissionError``
``Conflict``           the state forbids it (removing a pinned blob)
``Busy``               another process held it longer than we waited    ``TimeoutError``
``Error``              any other input/output failure
=====================  ===============================================  ==============

``NotFound`` is both a ``KeyError`` (a store is a mapping from digests and keys
to bytes) and a ``FileNotFoundError`` (a missing input file is one); unlike a
plain ``KeyError``, ``str()`` of it is the message, not its repr. The classes
that are ``OSError`` s carry the matching ``errno`` (``ENOENT``, ``EACCES``,
``ETIMEDOUT``, ``EIO``, ``ENOSPC``) and the message as ``strerror``.
"""

from __future__ import annotations

import errno
from typing import Optional


class Error(Exception):
    """Any larder error. ``str(err)`` is the library's one-line message."""

    #: What went wrong, as the library's ``ErrorKind`` names it.
    kind: str = "io"
    #: The ``errno`` of the classes that are ``OSError`` s too.
    _errno: Optional[int] = None

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        if isinstance(self, OSError) and self._errno is not None:
            self.errno = self._errno
            self.strerror = str(self)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFound(Error, KeyError, FileNotFoundError):
    """The digest, key, file or directory asked for does not exist."""

    kind = "not_found"
    _errno = errno.ENOENT


class InvalidInput(Error, ValueError):
    """Input that can never succeed: a malformed digest, size, key or name."""

    kind = "invalid_input"


class ConfigError(InvalidInput):
    """A configuration file or ``LARDER_*`` variable is wrong."""

    kind = "config"


class CorruptData(Error, OSError):
    """Stored bytes do not match their digest (they were quarantined)."""

    kind = "corrupt"
    _errno = errno.EIO


class NoRoom(Error, OSError):
    """The store cannot make room (pinned entries, or an item larger than the
    capacity), or the disk is full."""

    kind = "no_room"
    _errno = errno.ENOSPC


class PermissionDenied(Error, PermissionError):
    """The operating system refused access, or the home is someone else's."""

    kind = "permission_denied"
    _errno = errno.EACCES


class Conflict(Error):
    """The request conflicts with the current state (removing a pinned blob,
    deleting a locked directory)."""

    kind = "conflict"


class Busy(Error, TimeoutError):
    """Another process held what was needed longer than larder waited."""

    kind = "busy"
    _errno = errno.ETIMEDOUT


for _class in (Error, NotFound, InvalidInput, ConfigError, CorruptData, NoRoom, PermissionDenied,
               Conflict, Busy):
    # Shown, and pickled, as larder.NotFound rather than larder._errors.NotFound.
    _class.__module__ = "larder"
del _class

__all__ = [
    "Busy",
    "ConfigError",
    "Conflict",
    "CorruptData",
    "Error",
    "InvalidInput",
    "NoRoom",
    "NotFound",
    "PermissionDenied",
]
