"""The journal of one output file that a command writes through a temporary (import-weights' model file), so that a
run killed mid-write (kill -9, a power cut) leaves nothing that the next run of the same output does not know.

Beside the output stands, while it is written, `.NAME.defocuskit-journal.json`: made (exclusively) and locked (an
OS lock, which dies with its process) before anything else, it lists the temporary `.NAME.<token>.defocuskit-partial`
(`atomic.partial_path`) before that is made. The next run of the same output takes the journal a killed run left,
removes the temporary it lists (and only that, only where it is a plain file of that name), and writes its own;
a run that finishes removes its journal. A journal that another live run holds is a one-line error naming that run;
a file at the journal's name that no run wrote is never written over or removed (a one-line error naming it).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from defocuskit.io.atomic import NAME_MAX, name_within, new_token, partial_path, remove_partial
from defocuskit.io.locks import describe

JOURNAL_SUFFIX = ".defocuskit-journal.json"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a link at the journal's name is never followed (POSIX)
TRIES = 5  # journals taken over by other runs meanwhile before giving up (each one a run that came and went)


class OutputBusyError(ValueError):
    """Another live run writes the same output, or a file that no run wrote is in the journal's way."""


def journal_path(path: str | Path) -> Path:
    """The journal of the output `path`: `.NAME.defocuskit-journal.json` beside it."""
    path = Path(path)
    return path.with_name(f".{name_within(path.name, NAME_MAX - 1 - len(JOURNAL_SUFFIX))}{JOURNAL_SUFFIX}")


def _lock(fd: int) -> bool:
    """Take the OS lock on the open journal without waiting; False where a live run holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; one run at a time is the user's to keep
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _listed(data: bytes, journal: Path) -> dict[str, Any]:
    """A killed run's journal as written ({} where it was killed before writing it); OutputBusyError naming the file
    where it is not one."""
    if not data:
        return {}
    try:
        entry = json.loads(data)
        ok = isinstance(entry, dict) and isinstance(entry.get("partial"), str) and isinstance(entry.get("holder"), dict)
    except ValueError:
        ok = False
    if not ok:
        raise OutputBusyError(f"{journal}: in the way of the output's journal and not one a run wrote; it is left "
                              "as it is: move it")
    return entry


def _take(path: Path, journal: Path, what: str) -> int:
    """The open, locked journal of `path`, the temporary a killed run listed in it removed."""
    for _ in range(TRIES):
        try:
            fd, made = os.open(journal, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644), True
        except FileExistsError:
            if journal.is_symlink() or not journal.is_file():
                raise OutputBusyError(f"{journal}: in the way of the output's journal (not a regular file); it is "
                                      "left as it is: move it") from None
            try:
                fd, made = os.open(journal, os.O_RDWR | _NOFOLLOW), False
            except FileNotFoundError:  # a run that finished meanwhile removed it
                continue
            except OSError as exc:  # another user's, a read-only file: not this run's to take
                raise OutputBusyError(f"{journal}: in the way of the output's journal and cannot be opened "
                                      f"({exc.strerror}); it is left as it is: move it") from None
        try:
            if not _lock(fd):
                holder = _listed(_read(fd), journal).get("holder")
                raise OutputBusyError(f"{path}: another {what} is writing it ({describe(holder)}); wait for it to "
                                      "finish")
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(journal, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if not same:  # the run before removed it while this one waited: take the one there now
                os.close(fd)
                continue
            if not made:
                remove_partial(path, _listed(_read(fd), journal).get("partial"))
            return fd
        except BaseException:
            os.close(fd)
            raise
    raise OutputBusyError(f"{path}: other runs kept taking its journal {journal.name}; run the command again")


def _write(fd: int, entry: dict[str, Any]) -> None:
    data = json.dumps(entry).encode("utf-8")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


@contextmanager
def journalled_output(path: str | Path, what: str) -> Iterator[str]:
    """Hold the journal of the output `path` (what a killed run of it left cleared first) for the block, which
    writes `path` through `atomic.atomic_path(path, partial=token)` with the token it is given; the journal lists
    that temporary before the block starts and is removed when it ends. `what`: the command, for the message a
    second run gets (OutputBusyError, as for a file in the journal's way)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = journal_path(path)
    fd = _take(path, journal, what)
    token = new_token()
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        _write(fd, {"partial": partial_path(path, token).name, "holder": holder})
        yield token
    finally:  # not reached when killed: then the next run clears what the journal lists
        remove_partial(path, partial_path(path, token).name)  # atomic_path removed it already, unless interrupted
        journal.unlink(missing_ok=True)  # still this run's: no other run takes it while this one holds its lock
        os.close(fd)
