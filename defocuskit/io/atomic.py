"""Atomic file writes: the data goes to a temporary file beside the target, which is renamed onto it only when
complete, so a reader (or a crash) never meets half a file and a failed write leaves the old file as it was.

Temporary names are `.NAME.<random>.tmp` in the target's folder (the shard folder's clean-up knows them)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path to write the whole file to; renamed onto `path` when the block ends without error,
    removed otherwise. The file gets `mode`, else the usual permissions (0666 less the umask)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes, *, mode: int | None = None, fsync: bool = False) -> None:
    """Write text (UTF-8) or bytes to `path` atomically; `fsync` flushes it to disk before the rename."""
    with atomic_path(path, mode) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
