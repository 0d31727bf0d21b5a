"""Input-file stamps for content-true reruns: size, mtime_ns and a hash of the first and last MiB.

A shard group's fingerprint includes the stamps of its input files, so a changed, fixed or replaced
file is read again (a `touch` too), while an unchanged folder is not re-read. Hashing only the ends
keeps a rerun over thousands of camera files to seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from defocuskit.io.raw import io_reason as _io_reason

HASH_SPAN = 1 << 20  # bytes hashed at each end of an input file


def content_hash(path: str, size: int) -> str:
    """sha256 of the file size, its first and its last MiB (the whole file when smaller than 2 MiB)."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(HASH_SPAN))
        if size > HASH_SPAN:
            f.seek(max(HASH_SPAN, size - HASH_SPAN))
            h.update(f.read(HASH_SPAN))
    return h.hexdigest()


def file_stamp(path: str) -> list[Any]:
    """[size, mtime_ns, content hash] of an input file; raises OSError when it cannot be read."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, content_hash(path, st.st_size)]


@dataclass
class Stamps:
    """`file_stamp` of each input file, and the reason for each file that cannot be read."""

    of: dict[str, list[Any]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def _stamp_or_reason(path: str) -> tuple[list[Any], str | None]:
    try:
        return file_stamp(path), None
    except OSError as exc:
        reason = _io_reason(exc)
        try:  # size and mtime where stat works; once the file is readable its hash replaces the reason
            st = os.stat(path)
            seen = [st.st_size, st.st_mtime_ns]
        except OSError:
            seen = [None, None]
        return [*seen, f"unreadable: {reason}"], reason


def stamp_files(paths: Iterable[str], threads: int = 8) -> Stamps:
    """Stamps of the files (each read once; I/O in threads); an unreadable file is recorded, not raised."""
    unique = sorted(set(paths))
    stamps = Stamps()
    if not unique:
        return stamps
    with ThreadPoolExecutor(max_workers=min(threads, len(unique))) as pool:
        for path, (stamp, reason) in zip(unique, pool.map(_stamp_or_reason, unique)):
            stamps.of[path] = stamp
            if reason is not None:
                stamps.unreadable[path] = reason
    return stamps
