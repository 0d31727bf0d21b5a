"""Run locks: a file lock held for a whole command, with a description of its holder for the next comer.

The lock (`filelock`, an OS lock on the file) dies with its process, kill -9 included; the holder's
description (pid, host, start time, command) sits beside it in `<lock>.holder` and is removed on release.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from defocuskit.io.atomic import atomic_write


class LockedError(Exception):
    """Another live process holds the lock."""


def holder_path(lock: Path) -> Path:
    return Path(lock).with_suffix(".holder")


def read_holder(lock: Path) -> dict[str, Any] | None:
    """The holder description written beside `lock`, or None."""
    try:
        return json.loads(holder_path(lock).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def describe(holder: dict[str, Any] | None) -> str:
    """`pid N on HOST, started T: COMMAND` for an error message."""
    if not holder:
        return "a process that left no description"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command', '?')}")


def is_held(lock: Path) -> bool:
    """Whether a live process holds `lock` (tried without waiting)."""
    from filelock import FileLock, Timeout

    probe = FileLock(lock)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


@contextlib.contextmanager
def hold(lock: str | Path, what: str, busy: str, **extra: Any) -> Iterator[dict[str, Any]]:
    """Hold `lock` for the duration of the block, or raise LockedError at once:
    "{busy} ({holder}); wait for it to finish or ...". `extra` goes into the holder's description."""
    from filelock import FileLock, Timeout

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = FileLock(lock)
    try:
        mine.acquire(timeout=0)
    except Timeout:
        raise LockedError(f"{busy} ({describe(read_holder(lock))})") from None
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv), **extra}
    try:
        atomic_write(holder_path(lock), json.dumps(holder))
        yield holder
    finally:
        holder_path(lock).unlink(missing_ok=True)
        mine.release()
