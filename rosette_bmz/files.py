"""Writing files so that nothing half-written is ever left under the final name."""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Hashable, Iterator, Mapping, TypeVar

__all__ = ["atomic_path", "atomic_paths", "temp_name", "sha256_of"]

K = TypeVar("K", bound=Hashable)


def temp_name(path: str | os.PathLike) -> Path:
    """A hidden, unique temporary name beside ``path`` (same folder, so a rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_paths(paths: Mapping[K, str | os.PathLike]) -> Iterator[dict[K, Path]]:
    """Yield a temporary path for each of ``paths``; write them inside the ``with`` block.

    When the block ends normally every temporary file is renamed onto its final path (each
    rename is atomic on one file system, and none happens before all files are complete);
    when it raises, the temporary files are deleted and the final paths are left as they were.
    """
    finals = {k: Path(p) for k, p in paths.items()}
    tmps = {k: temp_name(p) for k, p in finals.items()}
    try:
        yield tmps
        for k, final in finals.items():
            os.replace(tmps[k], final)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`atomic_paths` for one file: yield a temporary path, rename it onto ``path`` on success."""
    with atomic_paths({0: path}) as tmps:
        yield tmps[0]


#: SHA-256 of files already hashed by this process, by (path, size, modification time).
_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB chunks; cached while its size and mtime stay the same."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
