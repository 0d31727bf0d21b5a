"""Run locks: a file lock held for a whole command, with a description of its holder for the next comer.

The lock (`filelock`, an OS lock on the file) dies with its process, kill -9 included; the holder's
description (pid, host, start time, command) sits beside it in `<lock>.holder` and is removed on release.
A file at either name that no run made (a lock file is empty; a holder is a run's description) is never written
over or removed: the command stops, naming it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
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


GRACE_S = 1.0  # how long a run waits for a lock before it names the holder: a reader's probe holds it for microseconds


def is_held(lock: Path) -> bool:
    """Whether a live process holds `lock` (tried without waiting). On POSIX the probe takes a shared lock, so two
    readers probing at once never see each other as the holder."""
    try:
        import fcntl
    except ImportError:  # not POSIX: an exclusive probe
        from filelock import FileLock, Timeout

        probe = FileLock(lock)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


def _not_ours(path: Path, why: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"{path}: in the way of a run lock ({why}); it is left as it is: move it",
                           str(path))


def _check_lock_file(lock: Path) -> None:
    """FileExistsError naming `lock` where a file stands there that a lock never is: a lock file is an empty
    regular file (some filelock versions truncate it when they take it)."""
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):
        raise _not_ours(lock, "not a regular file")
    if lock.exists() and lock.stat().st_size > 0:
        raise _not_ours(lock, "a lock file is empty, this one is not")


def _check_holder_file(lock: Path) -> None:
    """FileExistsError naming the holder file where one stands that is not a run's description (a killed run's
    is: it is replaced)."""
    path = holder_path(lock)
    if not (path.exists() or path.is_symlink()):
        return
    holder = None if path.is_symlink() or not path.is_file() else read_holder(lock)
    if not (isinstance(holder, dict) and {"pid", "host", "what"} <= holder.keys()):
        raise _not_ours(path, "not the description of a run")


def _removed(mine: Any, lock: Path) -> bool:
    """Whether the file `mine` locked is no longer the one at `lock`: its last holder removed it while this process
    waited (`hold(remove_on_error=True)`); a lock on it would exclude nobody."""
    try:
        here = os.stat(lock)
    except FileNotFoundError:
        return True
    fd = getattr(getattr(mine, "_context", None), "lock_file_fd", None)  # filelock's own descriptor, where it shows it
    try:
        return isinstance(fd, int) and not os.path.samestat(here, os.fstat(fd))
    except OSError:
        return False


def _acquire(lock: Path, busy: str) -> Any:
    """`lock` held (a FileLock), or LockedError naming its holder once GRACE_S has passed."""
    from filelock import FileLock, Timeout

    deadline = time.monotonic() + GRACE_S  # not 0: a reader's probe (`is_held`) is not a holder
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        mine = FileLock(lock)
        try:
            mine.acquire(timeout=max(0.0, deadline - time.monotonic()))
        except Timeout:
            raise LockedError(f"{busy} ({describe(read_holder(lock))})") from None
        except FileNotFoundError:  # its folder was removed with the file by the last holder: made again
            if time.monotonic() > deadline:
                raise
            continue
        if not _removed(mine, lock):
            return mine
        mine.release()  # the file its last holder removed: the one at the name now


@contextlib.contextmanager
def hold(lock: str | Path, what: str, busy: str, *, remove_on_error: bool = False,
         **extra: Any) -> Iterator[dict[str, Any]]:
    """Hold `lock` for the duration of the block, or raise LockedError (within GRACE_S):
    "{busy} ({holder}); wait for it to finish or ...". `extra` goes into the holder's description.
    `remove_on_error`: where the block raises, the lock file is removed as well (still held, so that no other run
    holds it): for a lock in a folder this run made, which a failed run leaves as it found it."""
    lock = Path(lock)
    _check_lock_file(lock)
    mine = _acquire(lock, busy)
    try:
        _check_holder_file(lock)
    except FileExistsError:
        mine.release()
        raise
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv), **extra}
    try:
        atomic_write(holder_path(lock), json.dumps(holder))
        yield holder
    except BaseException:
        if remove_on_error:
            with contextlib.suppress(OSError):  # a system that keeps a held file (Windows): its release removes it
                lock.unlink(missing_ok=True)
        raise
    finally:
        holder_path(lock).unlink(missing_ok=True)
        mine.release()


def folders_to_make(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, innermost first: the folders a run writing there makes."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    return missing


def unmake_on_error(made: list[Path]) -> Callable[..., bool]:
    """An ExitStack exit callback: where the block failed, the folders in `made` (innermost first) removed again,
    each only while empty (a file anyone wrote in it keeps it and the folders above)."""

    def remove(kind: type[BaseException] | None, *_: Any) -> bool:
        for folder in made if kind is not None else []:
            try:
                folder.rmdir()
            except OSError:
                break
        return False

    return remove
