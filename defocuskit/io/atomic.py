"""Atomic file writes: the data goes to a temporary file beside the target, which is renamed onto it only when
complete, so a reader (or a crash) never meets half a file and a failed write leaves the old file as it was.

Temporary names are `.NAME.<random>.tmp` in the target's folder (the shard folder's `.records/` clean-up knows them;
a NAME too long for a temporary beside it is cut, with a hash of it: `name_within`), or, for a writer that lists
each output in its own journal before writing it (deblur, eval --save-images), `.NAME.<token>.defocuskit-partial`
(`write_journalled`): its fresh random name (where nothing is) is listed in the writer's journal first, then the file
is made there (exclusively: never a file that stood there), filled and renamed, so that the writer's next run removes
exactly the temporaries killed runs listed (`remove_partial`), each one that run made, and a kill leaves none it
does not know (a shard folder's own temporaries are listed the same way: `data.folder.make_temporaries`). A journal
that is itself a JSON file names the temporary of its own next write inside (`write_naming_next`). A set of files
replaced together is staged in a folder of its own first (`io.staging.staged_files`)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left (or quota exceeded) while writing a file; the message names the path and its disk."""

    def __str__(self) -> str:
        return str(self.strerror)


def mount_of(path: str | Path) -> Path:
    """The mount point of the file system that holds `path` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def disk_full_message(path: str | Path) -> str:
    """`PATH: disk full (MOUNT: N MiB free)` (KiB or bytes under 1 MiB)."""
    mount = mount_of(path)
    try:
        free = f"{_size(shutil.disk_usage(mount).free)} free"
    except OSError:
        free = "free space unknown"
    return f"{path}: disk full ({mount}: {free}); free some space and run the command again"


@contextmanager
def disk_full_named(path: str | Path) -> Iterator[None]:
    """Turn a no-space OSError inside the block into DiskFullError naming `path` and its disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL and not isinstance(exc, DiskFullError):
            raise DiskFullError(exc.errno, disk_full_message(path)) from None
        raise


PARTIAL_SUFFIX = ".defocuskit-partial"
NAME_MAX = 255  # bytes of one file name (ext4, XFS, Btrfs, APFS, tmpfs)


def name_within(name: str, room: int) -> str:
    """`name` where its bytes fit in `room`, else its first characters and "~" with 8 hex digits of the whole
    name's SHA-256 (the part of a temporary's name that its target lends it: a target of up to NAME_MAX bytes still
    has a temporary beside it)."""
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    tag = "~" + hashlib.sha256(raw).hexdigest()[:8]
    kept = ""
    for ch in name:
        if len(os.fsencode(kept + ch)) > room - len(tag):
            break
        kept += ch
    return kept + tag


def new_token() -> str:
    """A fresh token for a journalled temporary (`partial_path`): 8 hex digits."""
    return secrets.token_hex(4)


def partial_path(path: str | Path, token: str) -> Path:
    """The temporary of `path` for writers that journal their outputs: `.NAME.<token>.defocuskit-partial`."""
    path = Path(path)
    room = NAME_MAX - len(f"..{token}{PARTIAL_SUFFIX}")
    return path.with_name(f".{name_within(path.name, room)}.{token}{PARTIAL_SUFFIX}")


def remove_partial(path: str | Path, name: str | None) -> None:
    """Remove the temporary `name` of `path` that a killed run listed in its journal, where it is a plain file and
    `name` is a `partial_path(path, token)` name (an older journal's untokenised name, or anything else, is left
    alone); several processes may clear the same one."""
    path = Path(path)
    token = re.search(rf"\.([0-9a-f]{{8}}){re.escape(PARTIAL_SUFFIX)}$", name or "")
    if not name or not token or name != partial_path(path, token.group(1)).name:
        return
    leftover = path.with_name(name)
    if leftover.is_file() and not leftover.is_symlink():
        leftover.unlink(missing_ok=True)


def _in_the_way(path: Path, name: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"{name}: in the way of the temporary copy of {path.name}; it is left as it "
                           "is: move it", str(name))


def _create_partial(path: Path, token: str) -> str:
    name = partial_path(path, token)
    try:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise _in_the_way(path, name) from None
    return str(name)


def _publish_new(name: str, path: Path) -> None:
    """Put the finished temporary `name` at `path` only where nothing is there (FileExistsError naming it): a hard
    link never replaces, unlike a rename; a file system without hard links gets a rename after a last look."""
    try:
        os.link(name, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path}: exists (it appeared while this command ran); it is left as it "
                              "is", str(path)) from None
    except OSError:
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, f"{path}: exists (it appeared while this command ran); it is left as "
                                  "it is", str(path)) from None
        os.replace(name, path)


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None, partial: str | None = None,
                exclusive: bool = False) -> Iterator[Path]:
    """A temporary path to write the whole file to; renamed onto `path` when the block ends without error,
    removed otherwise. The file gets `mode`, else the usual permissions (0666 less the umask). `partial` (a token
    the caller listed in its journal): the temporary is `partial_path(path, partial)` (FileExistsError naming it
    where anything is there), not a random name. `exclusive`: never over a file at `path`, even one that appeared
    while the caller wrote (FileExistsError naming it), for a command told not to replace one."""
    path = Path(path)
    name = None
    try:  # made inside the try: a Ctrl-C right after mkstemp still removes it
        if partial:
            name = _create_partial(path, partial)
        else:
            room = NAME_MAX - len("..") - 8 - len(".tmp")  # the dots, mkstemp's 8 random characters, the suffix
            fd, name = tempfile.mkstemp(prefix=f".{name_within(path.name, room)}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
        yield Path(name)
        os.chmod(name, 0o666 & ~_UMASK if mode is None else mode)  # mkstemp makes 0600
        if exclusive:
            _publish_new(name, path)
        else:
            os.replace(name, path)
    finally:
        if name is not None:
            Path(name).unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes, *, mode: int | None = None, fsync: bool = False,
                 exclusive: bool = False) -> None:
    """Write text (UTF-8) or bytes to `path` atomically; `fsync` flushes it to disk before the rename; `exclusive`:
    never over a file at `path` (FileExistsError naming it, see `atomic_path`)."""
    with disk_full_named(path), atomic_path(path, mode, exclusive=exclusive) as tmp:
        _fill(tmp, data.encode("utf-8") if isinstance(data, str) else data, fsync)


def _size(n: int) -> str:
    """Bytes as "N MiB", or under 1 MiB "N KiB" or "N bytes" (a full disk is rarely a round number of MiB)."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


def _fill(tmp: Path, data: bytes, fsync: bool) -> None:
    """Write `data` to the temporary `tmp`, flushed to disk with `fsync`."""
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_journalled(path: str | Path, data: bytes, listed: Callable[[str], None], fsync: bool = False,
                     exclusive: bool = False) -> None:
    """Write `data` to `path` through a fresh temporary `partial_path(path, new_token())`: a name nothing holds,
    which `listed(name)` records in the caller's journal first; then the file is made there exclusively (never one
    that stood there), filled (flushed to disk with `fsync`) and renamed onto `path` (`exclusive`: never over a file
    there, see `atomic_path`). A kill at any point leaves at most that listed temporary: the caller's next run
    removes it (`remove_partial`; a temporary made before it was listed stayed behind, known to no run)."""
    path, token = Path(path), new_token()
    if os.path.lexists(partial_path(path, token)):  # not this run's: never listed, left as it is
        raise _in_the_way(path, partial_path(path, token))
    listed(partial_path(path, token).name)
    with disk_full_named(path), atomic_path(path, partial=token, exclusive=exclusive) as tmp:
        _fill(tmp, data, fsync)


NEXT_TEMPORARY = "next_temporary"  # the key of a self-journalling JSON file naming its next write's temporary


def write_naming_next(path: str | Path, data: dict[str, Any], token: str | None) -> str:
    """Write the JSON object `data` to `path` atomically through the temporary `partial_path(path, token)` (the
    token the file it replaces names; a fresh one where None), with a fresh token of its own under NEXT_TEMPORARY:
    a run killed while it writes the next version leaves a temporary the file still there names, which the next run
    removes (`remove_named_next`). Returns the new token."""
    following = new_token()
    text = json.dumps({**data, NEXT_TEMPORARY: following}, indent=2) + "\n"
    with disk_full_named(path), atomic_path(path, partial=token or new_token()) as tmp:
        _fill(tmp, text.encode("utf-8"), False)
    return following


def named_next(data: Any) -> str | None:
    """The token under NEXT_TEMPORARY of a parsed self-journalling file (`write_naming_next`), else None."""
    token = data.get(NEXT_TEMPORARY) if isinstance(data, dict) else None
    return token if isinstance(token, str) and re.fullmatch(r"[0-9a-f]{8}", token) else None


def remove_named_next(path: str | Path, data: Any) -> str | None:
    """Remove the temporary of `path` that its parsed content `data` names (a killed write's, `write_naming_next`)
    and return its token, to write `path` through next; None where it names none."""
    token = named_next(data)
    if token is not None:
        remove_partial(path, partial_path(path, token).name)
    return token


_WRITE_FAILURES = ("no space left", "file write failed", "requested and", "write to closed file", "disk quota")


def disk_full_line(exc: BaseException, paths: list[str] | tuple[str, ...] = ()) -> str | None:
    """One line for an exception that a full disk caused, else None.

    A no-space OSError anywhere in the chain names its file (or the first of `paths`); a library's write
    failure that says no more (torch's "file write failed", safetensors' "N requested and M written") counts
    when one of `paths` (the command's arguments) or the working folder lies on a disk with under 16 MiB free."""
    seen: BaseException | None = exc
    text = []
    while seen is not None:
        if isinstance(seen, DiskFullError):
            return str(seen)
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return disk_full_message(seen.filename or (paths[0] if paths else os.getcwd()))
        text.append(str(seen).lower())
        seen = seen.__cause__ or seen.__context__
    if not any(w in t for t in text for w in _WRITE_FAILURES):
        return None
    for path in [*paths, os.getcwd()]:
        try:
            if shutil.disk_usage(mount_of(path)).free < 16 * 2**20:
                return disk_full_message(path)
        except OSError:
            continue
    return None
