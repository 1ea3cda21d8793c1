"""Argument conversions shared by the package's classes."""

from __future__ import annotations

import os
import re
from typing import Optional, Union

from . import _larder
from ._errors import InvalidInput

#: A size: a number of bytes, or text such as ``"20GiB"``, ``"10GB"``, ``"512M"``.
Size = Union[int, str]
#: A path: ``str``, ``bytes`` or any ``os.PathLike``.
PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_HEX = re.compile(r"[0-9a-fA-F]{64}")


def size(value: Size, what: str = "size") -> int:
    """A size in bytes from an int or from text like ``"20GiB"``."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number of bytes or text like '20GiB', not a bool")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(f"{what} {value} is negative; give a number of bytes, like 20GiB")
        return value
    if isinstance(value, str):
        return _larder.parse_size(value)
    raise TypeError(
        f"{what} must be a number of bytes or text like '20GiB', not {type(value).__name__}"
    )


def optional_size(value: Optional[Size], what: str = "size") -> Optional[int]:
    return None if value is None else size(value, what)


def path(value: PathArg) -> str:
    """A path as text, from ``str``, ``bytes`` or ``os.PathLike``."""
    return os.fsdecode(os.fspath(value))


def optional_path(value: Optional[PathArg]) -> Optional[str]:
    return None if value is None else path(value)


def target(value: str) -> str:
    """A digest (``sha256:<hex>`` or 64 bare hex digits) or a key."""
    if not isinstance(value, str):
        raise TypeError(f"expected a digest or key as str, not {type(value).__name__}")
    return value


def file_hash(value: str) -> str:
    """A SHA-256 digest in either form, as ``sha256:<hex>``; anything else is
    an :class:`InvalidInput`."""
    if not isinstance(value, str):
        raise TypeError(f"a file hash is a str of 64 hex digits, not {type(value).__name__}")
    hex_part = value[len("sha256:") :] if value.startswith("sha256:") else value
    if not _HEX.fullmatch(hex_part):
        raise InvalidInput(
            f"file hash `{value}` is not a SHA-256 digest; give the 64 hex digits upload returned"
        )
    return "sha256:" + hex_part.lower()


def bare_hex(digest: str) -> str:
    """``sha256:<hex>`` as the bare hex cloud-manager's users know."""
    return digest[len("sha256:") :] if digest.startswith("sha256:") else digest
