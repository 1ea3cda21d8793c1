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
``CorruptData``        stored bytes no longer match their digest
``NoRoom``             the capacity, the disk or a pool is full
``PermissionDenied``   the system refused access                        ``PermissionError``
``Conflict``           the state forbids it (removing a pinned blob)
``Busy``               another process held it longer than we waited    ``TimeoutError``
``Error``              any other input/output failure
=====================  ===============================================  ==============

``NotFound`` is both a ``KeyError`` (a store is a mapping from digests and keys
to bytes) and a ``FileNotFoundError`` (a missing input file is one); unlike a
plain ``KeyError``, ``str()`` of it is the message, not its repr.
"""

from __future__ import annotations


class Error(Exception):
    """Any larder error. ``str(err)`` is the library's one-line message."""

    #: What went wrong, as the library's ``ErrorKind`` names it.
    kind: str = "io"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFound(Error, KeyError, FileNotFoundError):
    """The digest, key, file or directory asked for does not exist."""

    kind = "not_found"


class InvalidInput(Error, ValueError):
    """Input that can never succeed: a malformed digest, size, key or name."""

    kind = "invalid_input"


class ConfigError(InvalidInput):
    """A configuration file or ``LARDER_*`` variable is wrong."""

    kind = "config"


class CorruptData(Error):
    """Stored bytes do not match their digest (they were quarantined)."""

    kind = "corrupt"


class NoRoom(Error):
    """The store cannot make room (pinned entries, or an item larger than the
    capacity), or the disk is full."""

    kind = "no_room"


class PermissionDenied(Error, PermissionError):
    """The operating system refused access, or the home is someone else's."""

    kind = "permission_denied"


class Conflict(Error):
    """The request conflicts with the current state (removing a pinned blob,
    deleting a locked directory)."""

    kind = "conflict"


class Busy(Error, TimeoutError):
    """Another process held what was needed longer than larder waited."""

    kind = "busy"


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
