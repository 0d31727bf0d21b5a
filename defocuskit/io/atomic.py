"""Atomic file writes: the data goes to a temporary file beside the target, which is renamed onto it only when
complete, so a reader (or a crash) never meets half a file and a failed write leaves the old file as it was.

Temporary names are `.NAME.<random>.tmp` in the target's folder (the shard folder's `.records/` clean-up knows them;
a NAME too long for a temporary beside it is cut, with a hash of it: `name_within`), or, for a writer that lists
each output in its own journal before writing it (deblur, eval --save-images), `.NAME.<token>.defocuskit-partial`
(`write_journalled`): the temporary is made first (exclusively: never a file that stood there), then listed in the
writer's journal, then filled and renamed, so that the writer's next run removes exactly the temporaries killed runs
listed (`remove_partial`), each one that run made (a shard folder's own temporaries are listed the same way:
`data.folder.make_temporaries`). A set of files is staged in a fresh hidden folder `.defocuskit-staging.<token>`,
listed in the folder's `.defocuskit-staging.json` before it is made (`staged_files`): the next run clears only
staging folders that journal lists."""

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
STAGING = ".defocuskit-staging"
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


def _create_partial(path: Path, token: str) -> str:
    name = partial_path(path, token)
    try:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{name}: in the way of the temporary copy of {path.name}; it is left "
                              "as it is: move it", str(name)) from None
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
            room = NAME_MAX - len("..XXXXXXXX.tmp")  # mkstemp's 8 random characters
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


def write_journalled(path: str | Path, data: bytes, listed: Callable[[str], None], fsync: bool = False) -> None:
    """Write `data` to `path` through a fresh temporary `partial_path(path, new_token())`: made exclusively first,
    then `listed(its name)` records it in the caller's journal, then it is filled (flushed to disk with `fsync`) and
    renamed onto `path`. A kill before `listed` returns leaves at most that empty, unlisted temporary, which blocks
    nothing."""
    with disk_full_named(path), atomic_path(path, partial=new_token()) as tmp:
        listed(tmp.name)
        _fill(tmp, data, fsync)


STAGING_JOURNAL = STAGING + ".json"


def _staging_journal(folder: Path) -> dict:
    """`folder`'s staging journal: {"staging": [the staging folders of runs killed before clearing theirs]} and, where
    a run was killed while replacing the files, "committing": {"stage", "files": the names it staged, "remove":
    {name: SHA-256 of the earlier file it removes}}; FileExistsError naming the journal where a file there is not
    one this module wrote."""
    journal = folder / STAGING_JOURNAL
    if not (journal.exists() or journal.is_symlink()):
        return {"staging": []}
    try:
        if journal.is_symlink() or not journal.is_file():
            raise ValueError
        data = json.loads(journal.read_text(encoding="utf-8"))
        listed, commit = data["staging"], data.get("committing")
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ValueError
        if commit is not None and not (isinstance(commit, dict) and commit.get("stage") in listed
                                       and isinstance(commit.get("files"), list)
                                       and all(isinstance(n, str) for n in commit["files"])
                                       and isinstance(commit.get("remove"), dict)
                                       and all(isinstance(v, str) for v in commit["remove"].values())):
            raise ValueError
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise FileExistsError(errno.EEXIST, f"{journal}: in the way of the staging journal and not one a run "
                              "wrote; it is left as it is: move it", str(journal)) from None
    return data


def _staging_listed(folder: Path) -> list[str]:
    """The staging folders that `folder`'s journal lists (runs that were killed before clearing theirs)."""
    return _staging_journal(folder)["staging"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def staged_pending(folder: str | Path, names: list[str]) -> dict[str, Path | None]:
    """What the run killed while replacing `folder`'s files with its staged ones leaves to finish (the next
    `staged_files` finishes it): name -> the staged file that will replace it, or None where the earlier file (still
    the one recorded) will be removed. Empty where no run was killed there. A checker sees the files as they will
    be, not a mix of two runs' files."""
    folder = Path(folder)
    commit = _staging_journal(folder).get("committing")
    if not commit or not _is_staging_name(commit["stage"]):
        return {}
    stage = folder / commit["stage"]
    pending: dict[str, Path | None] = {}
    for name in names:
        if name in commit["files"] and _plain_file(stage / name):
            pending[name] = stage / name
        elif name not in commit["files"] and name in commit["remove"] and _plain_file(folder / name) \
                and _sha256(folder / name) == commit["remove"][name]:
            pending[name] = None
    return pending


def _finish_commit(folder: Path, names: list[str]) -> None:
    """Finish replacing the files of a run killed while it did (`staged_pending`), so that they are its files
    together, never a mix with the run before it."""
    for name, staged in staged_pending(folder, names).items():
        if staged is None:
            (folder / name).unlink(missing_ok=True)
        else:
            os.replace(staged, folder / name)


def _list_staging(folder: Path, listed: list[str], commit: dict | None = None) -> None:
    """Write the journal of `folder`'s staging folders (flushed to disk), with the `commit` under way; removed when
    none is listed."""
    journal = folder / STAGING_JOURNAL
    if listed:
        atomic_write(journal, json.dumps({"staging": listed, **({"committing": commit} if commit else {})}), fsync=True)
    else:
        journal.unlink(missing_ok=True)


def _is_staging_name(name: str) -> bool:
    return re.fullmatch(rf"{re.escape(STAGING)}\.[0-9a-f]{{8}}", name) is not None


def _clear_stage(stage: Path, names: list[str]) -> None:
    """Remove a staging folder a killed run listed (empty, or holding only files of `names`); FileExistsError
    naming it where it holds anything else, which is left."""
    if not (stage.exists() or stage.is_symlink()):
        return
    contents = list(stage.iterdir()) if stage.is_dir() and not stage.is_symlink() else None
    if contents is None or any(p.name not in names or p.is_symlink() or not p.is_file() for p in contents):
        raise FileExistsError(errno.EEXIST, f"{stage}: a staging folder a killed run left, now holding other than "
                              f"{', '.join(names)}; it is left as it is: move it", str(stage))
    _remove_stage(stage, names)


def _remove_stage(stage: Path, names: list[str]) -> bool:
    """Remove this run's staging folder: the files of `names` in it, then the folder where nothing else is there
    (True)."""
    for name in names:
        p = stage / name
        if p.is_file() and not p.is_symlink():
            p.unlink()
    try:
        stage.rmdir()
    except OSError:
        return False
    return True


@contextmanager
def staged_files(folder: str | Path, names: list[str]) -> Iterator[Path]:
    """A fresh hidden staging folder inside `folder` to write a set of files to; when the block ends without
    error they replace their namesakes in `folder` in the order of `names` (a name not written this time
    removes the earlier file of that name, so no earlier run's file is left beside the new ones). On any
    error (a full disk: DiskFullError naming the folder) the earlier files are left exactly as they were.

    The staging folder (`.defocuskit-staging.<token>`) is listed in `folder`'s `.defocuskit-staging.json` before
    it is made, and unlisted once removed; the staging folders killed runs listed there are cleared first
    (`_clear_stage`). Before the files replace their namesakes the journal records which (`"committing"`), so that
    a run killed while they do is finished by the next one (`staged_pending`: what a checker sees meanwhile), never
    left as a mix of two runs' files. Nothing the journal does not list is removed (an older version's
    `.defocuskit-staging` included). One run at a time per folder: the caller holds the folder's lock (eval's
    `.eval.lock`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _finish_commit(folder, names)  # a run killed while replacing the files: its files first, together
    listed = _staging_listed(folder)
    for name in listed:
        if _is_staging_name(name):  # a tampered entry ("..", "report.json") is never acted on
            _clear_stage(folder / name, names)
    stage = folder / f"{STAGING}.{new_token()}"
    with disk_full_named(folder):
        _list_staging(folder, [stage.name])  # listed before it exists: a kill from here on leaves it listed
    stage.mkdir()
    committing = False
    try:
        with disk_full_named(folder):
            yield stage
        files = [name for name in names if (stage / name).exists()]
        remove = {name: _sha256(folder / name) for name in names if name not in files and _plain_file(folder / name)}
        with disk_full_named(folder):  # a kill from here on: the next run finishes these replacements
            _list_staging(folder, [stage.name], {"stage": stage.name, "files": files, "remove": remove})
        committing = True  # stopped from here on (Ctrl-C), the stage and its journal are kept for the next run
        for name in names:
            if (stage / name).exists():
                os.replace(stage / name, folder / name)
            else:
                (folder / name).unlink(missing_ok=True)
        committing = False
    finally:
        if not committing and _remove_stage(stage, names):
            _list_staging(folder, [])


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
