"""Type stubs of the extension module (Rust, PyO3). The package's public API
wraps these; use ``larder.Store``, ``larder.use`` and friends instead."""

from os import PathLike
from typing import Dict, List, Optional, Tuple, TypedDict, Union

_Path = Union[str, PathLike[str]]

VERSION: str
COORDINATORS: List[str]

def parse_size(text: str) -> int: ...
def format_size(bytes: int) -> str: ...

class _Entry(TypedDict):
    digest: str
    size: int
    pinned: bool
    used_at: int
    created_at: int
    keys: List[str]

class _Stats(TypedDict):
    entries: int
    bytes: int
    pinned_bytes: int
    capacity: int
    usage_ratio: float
    hits: int
    misses: int

class _Gc(TypedDict):
    evicted: int
    freed: int
    swept: int
    bytes: int

class _Verify(TypedDict):
    clean: bool
    checked: int
    bytes: int
    corrupt: List[str]
    missing: List[str]
    orphans: List[str]
    adopted: int
    dropped: int

class _Removed(TypedDict):
    digest: str
    keys: List[str]
    blob_removed: bool

class _Record(TypedDict):
    name: str
    path: str
    state: str
    locked: bool
    recipe: Optional[str]
    size: int
    created_at: int
    meta: Dict[str, str]
    holders: List[str]

class _Instance(TypedDict):
    name: str
    source: str
    concurrency: int
    new: bool

class _Command(TypedDict):
    program: str
    args: List[str]
    env: Dict[str, str]

class Tiers:
    home: str
    capacity: int
    remotes: List[str]
    is_open: bool
    def __init__(
        self, home: Optional[_Path] = None, capacity: Optional[int] = None, remotes: bool = False
    ) -> None: ...
    def put(self, paths: List[_Path], key: Optional[str] = None, pin: bool = False) -> List[str]: ...
    def put_bytes(self, data: bytes, key: Optional[str] = None, pin: bool = False) -> str: ...
    def upload(self, path: _Path) -> str: ...
    def get(self, target: str, dest: _Path, link: bool = False) -> str: ...
    def open(self, target: str) -> Tuple[int, str, int]: ...
    def read(self, target: str) -> bytes: ...
    def require_writable_remote(self) -> None: ...
    def has(self, target: str, local: bool = False) -> bool: ...
    def warm_up(self, target: str) -> str: ...
    def where_is(self, target: str) -> List[str]: ...
    def set_pinned(self, target: str, pinned: bool) -> str: ...
    def remove(self, target: str, force: bool = False) -> _Removed: ...
    def ls(self) -> List[_Entry]: ...
    def stats(self) -> _Stats: ...
    def gc(self, to: Optional[int] = None) -> _Gc: ...
    def verify(self, repair: bool = False) -> _Verify: ...
    def usage_ratio(self) -> float: ...
    def close(self, send: bool = True) -> None: ...
    def flush(self) -> None: ...

class Hold:
    name: str
    path: str
    pid: int
    held: bool
    def release(self) -> bool: ...

class Dirs:
    def __init__(
        self,
        home: Optional[_Path] = None,
        places: Optional[List[_Path]] = None,
        coordinator: Optional[str] = None,
    ) -> None: ...
    def hold(
        self,
        name: Optional[str] = None,
        size: int = 0,
        recipe: List[str] = ...,
        refresh: bool = False,
    ) -> Hold: ...
    def hold_path(self, path: _Path) -> Hold: ...
    def name_of_path(self, path: _Path) -> str: ...
    def restore(self, tiers: Tiers, name: str, remote: Optional[str] = None) -> Tuple[Hold, bool]: ...
    def push(
        self, tiers: Tiers, name: str, remote: Optional[str] = None, keep: bool = False
    ) -> Optional[str]: ...
    def show(self, name: str) -> _Record: ...
    def list(self) -> List[_Record]: ...
    def insert_meta(self, name: str, entries: List[Tuple[str, str]]) -> _Record: ...
    def set_locked(self, name: str, locked: bool) -> None: ...
    def remove(self, name: str, force: bool = False) -> bool: ...

class Pools:
    def __init__(self, home: Optional[_Path] = None) -> None: ...
    def acquire(self, source: str, count: int = 1, wait: Optional[float] = None) -> List[_Instance]: ...
    def release(self, names: List[str], discard: bool = False) -> None: ...
    def command(self, name: str, argv: List[str]) -> _Command: ...
