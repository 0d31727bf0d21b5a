"""Who may write a shard folder, and what in it is ours to remove.

- `folder_lock`: a short exclusive lock taken to publish a shard with its record, merge records or prune.
- `run_lock`: held for a whole `ingest` / `pseudo-coc` run. Runs of one plan (the `--part I/N` of one
  command) share a folder; a run with another plan, or a second run of the same part, stops at once
  with a message naming the holder (pid, host, command, start time).
- Ownership: the tars this tool may replace or remove are those its own records, manifest or ownership
  ledger (`.records/_owned.json`, written before a shard is published) name, and the temporaries it may remove
  are those `.records/_temporaries.json` lists (each made exclusively first, then listed). Any other file is the
  user's: it is never written over, never removed, and named when it is in the way.
- `check_dataset`: a folder whose manifest belongs to another dataset (other inputs) is refused unless
  the caller passes `overwrite`; a `manifest.json` not written by defocuskit is refused always, and so is a
  `rejects.jsonl` with neither a manifest nor records beside it (the user's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from defocuskit.data.reader import MANIFEST
from defocuskit.io import locks
from defocuskit.io.atomic import atomic_write, write_journalled

RECORDS = ".records"
REJECTS = "rejects.jsonl"  # rewritten by every run (data.shards)
LEDGER = "_owned"  # .records/_owned.json: every shard name this tool has published into the folder
TEMPORARIES = "_temporaries"  # .records/_temporaries.json: the temporary files runs made here and have not removed
TEMP_SHARD_FILE = re.compile(r"\.([A-Za-z0-9_]+-\d+)\.[0-9a-f]{8}\.tar\.(?:partial|spool)")  # shards.AtomicShard's
TEMP_FOLDER_FILE = re.compile(r"\.(?:manifest\.json|rejects\.jsonl)\.[0-9a-f]{8}\.defocuskit-partial")  # write_listed's
RECORD_TEMPORARY = re.compile(r"\..+\.json\.[a-z0-9_]{8}\.tmp")  # atomic_write's temporary of a record (mkstemp)
RUN_LOCK = ".run-{part}.lock"  # one per --part I/N ("1of1" for a whole run)


class FolderError(Exception):
    """The output folder cannot be used as asked (busy, another dataset's, or a file of the user's in the way)."""


_HELD: dict[str, int] = {}  # folders whose lock this process holds, with the nesting depth


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """An exclusive advisory lock on the folder, so that parts finishing together merge correctly.

    Re-entrant within a process (a nested `with` on the same folder does not wait for itself)."""
    key = os.path.realpath(folder)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: parts run one after another there
        yield
        return
    lock = Path(folder) / ".lock"
    if lock.is_symlink():  # opened for the lock, a link's target (a user's file elsewhere) would be made or held
        raise FolderError(f"{lock}: a link where the folder's own lock file goes; remove it or give another --out")
    with open(lock, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------- run lock


@contextlib.contextmanager
def run_lock(folder: str | Path, what: str, plan_digest: str, part: tuple[int, int] = (0, 1)) -> Iterator[None]:
    """Hold the folder for one run of `what` (e.g. "ingest") with plan `plan_digest`, part (I-1, N).

    Raises FolderError naming the holder when the same part is being written, or when a live run of
    another plan holds the folder. The lock dies with its process (kill -9 included). A part's lock is taken and
    its holder described under the folder lock, so a part starting beside it never sees it held undescribed."""
    folder = Path(folder)
    lock = folder / RUN_LOCK.format(part=f"{part[0] + 1}of{part[1]}")
    folder.mkdir(parents=True, exist_ok=True)  # as the lock's own folder was made where it was missing
    try:
        with contextlib.ExitStack() as held:
            with folder_lock(folder):
                held.enter_context(locks.hold(lock, what, f"{folder}: another {what} is writing this folder",
                                              plan=plan_digest))
                for other in sorted(folder.glob(RUN_LOCK.format(part="*"))):
                    if other == lock or not locks.is_held(other):
                        continue
                    theirs = locks.read_holder(other)
                    if not theirs or theirs.get("plan") != plan_digest:
                        kind = theirs.get("what", "run") if theirs else "run"
                        raise FolderError(f"{folder}: another {kind} with different inputs or options is writing "
                                          f"this folder ({locks.describe(theirs)}); wait for it to finish or give "
                                          "another folder")
            yield
    except locks.LockedError as exc:
        raise FolderError(f"{exc}; wait for it to finish or give another folder") from None


def shard_folder_state(folder: str | Path) -> tuple[tuple[str, int, int], ...]:
    """What a reader of the shard folder `folder` can compare before and after reading it: (name, size, mtime_ns) of
    its manifest and tars. FolderError naming the run when an ingest or pseudo-coc is writing it now (a reader
    would mix the old plan's shards with the new one's)."""
    folder = Path(folder)
    for lock in sorted(folder.glob(RUN_LOCK.format(part="*"))):
        if locks.is_held(lock):
            holder = locks.read_holder(lock)
            raise FolderError(f"{folder}: {(holder or {}).get('what', 'a run')} is writing it now "
                              f"({locks.describe(holder)}); wait for it to finish")
    found = []
    for path in sorted(folder.glob("*.tar")) + [folder / MANIFEST]:
        try:
            st = path.stat()
        except OSError:
            continue
        found.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(found)


def plan_digest(plan: Mapping[str, str]) -> str:
    """One short digest of a plan (shard name -> fingerprint)."""
    import hashlib

    return hashlib.sha256(json.dumps(dict(sorted(plan.items()))).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ ownership


def owned(folder: str | Path) -> set[str]:
    """Shard names (without `.tar`) this tool wrote into `folder`: its ledger, records and manifest."""
    folder = Path(folder)
    names = _read_names(folder / RECORDS / f"{LEDGER}.json")
    records = folder / RECORDS
    if records.is_dir():
        names.update(p.stem for p in records.glob("*.json") if not p.stem.startswith("_"))
    manifest = _own_manifest(folder)
    if manifest:
        names.update(str(s.get("name", ""))[: -len(".tar")] for s in manifest.get("shards", ()))
    names.discard("")
    return names


def claim(folder: str | Path, names: Collection[str]) -> None:
    """Add shard names to the ledger (before their tars are published), under the folder lock."""
    _update_ledger(Path(folder), add=names)


def release(folder: str | Path, names: Collection[str]) -> None:
    """Drop shard names from the ledger (after their tars were removed), under the folder lock."""
    _update_ledger(Path(folder), drop=names)


def _read_names(path: Path) -> set[str]:
    """The names a ledger file lists (none where it is missing, unreadable or not a list of names)."""
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def listed_temporaries(folder: str | Path) -> set[str]:
    """The names of the temporary files runs made in `folder` and listed (`list_temporaries`), not yet removed."""
    return _read_names(Path(folder) / RECORDS / f"{TEMPORARIES}.json")


def list_temporaries(folder: str | Path, names: Collection[str]) -> None:
    """List temporary files (names in `folder`) this run has just made, under the folder lock."""
    _update_ledger(Path(folder), add=names, which=TEMPORARIES)


def unlist_temporaries(folder: str | Path, names: Collection[str]) -> None:
    """Drop temporary files from the list (after they were renamed or removed), under the folder lock."""
    _update_ledger(Path(folder), drop=names, which=TEMPORARIES)


def make_temporaries(folder: str | Path, paths: Collection[Path]) -> None:
    """Make empty temporary files in `folder`, each exclusively (FileExistsError: never one that was there), then
    list them; on any failure those made are removed again."""
    made = []
    try:
        for path in paths:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            made.append(path)
        list_temporaries(folder, [p.name for p in made])
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        raise


def temporary_owner(name: str) -> str | None:
    """The shard a listed temporary file name belongs to ("" for a manifest or rejects temporary); None for a
    name no run of this tool makes (never removed, whatever a list says)."""
    if match := TEMP_SHARD_FILE.fullmatch(name):
        return match.group(1)
    return "" if TEMP_FOLDER_FILE.fullmatch(name) else None


def remove_temporaries(folder: str | Path, which: Callable[[str], bool]) -> list[Path]:
    """Remove, under the folder lock, the temporaries runs made here and listed (killed before they finished)
    whose owner (`temporary_owner`: a shard name, or "") `which` selects; returns the paths removed. A file of
    such a name that no run listed (the user's, or an older version's) is left."""
    folder, removed, done = Path(folder), [], []
    with folder_lock(folder):
        for name in sorted(listed_temporaries(folder)):
            owner = temporary_owner(name)
            if owner is None or not which(owner):
                continue
            path = folder / name
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path)
            done.append(name)
        unlist_temporaries(folder, done)
    return removed


def write_listed(folder: str | Path, path: Path, data: str) -> None:
    """Write `path` (in `folder`) atomically through a temporary listed first, then made (`io.atomic.write_journalled`,
    listed here), so that only a killed write's own temporary is ever removed (`remove_temporaries`)."""
    names: list[str] = []

    def listed(name: str) -> None:
        list_temporaries(folder, [name])
        names.append(name)

    try:
        write_journalled(path, data.encode("utf-8"), listed, fsync=True)
    finally:
        unlist_temporaries(folder, names)


def _update_ledger(folder: Path, add: Collection[str] = (), drop: Collection[str] = (), which: str = LEDGER) -> None:
    with folder_lock(folder):
        path = folder / RECORDS / f"{which}.json"
        names = _read_names(path)
        new = (names | set(add)) - set(drop)
        if new != names or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(sorted(new)), fsync=True)


def check_collisions(folder: str | Path, names: Collection[str]) -> None:
    """Refuse (FolderError naming the file) when a shard of the plan would replace a tar this tool did not write."""
    folder = Path(folder)
    ours = owned(folder)
    for name in sorted(names):
        path = folder / f"{name}.tar"
        if name not in ours and (path.exists() or path.is_symlink()):
            raise FolderError(f"{path}: exists and was not written here by defocuskit (no record or manifest lists "
                              "it); it is left as it is: move it or give another output folder")


# ------------------------------------------------------------------------------------- datasets


def check_records(folder: str | Path) -> None:
    """Refuse (FolderError naming it) a `.records` that is not a folder, or a file in it that this tool did not
    write, judged by its content: a shard record names itself and its fingerprint, a ledger is a list of names, a
    temporary is an atomic write's. Such a file would be replaced, or would claim a tar of the user's as ours."""
    records = Path(folder) / RECORDS
    if records.is_symlink() or (records.exists() and not records.is_dir()):
        raise FolderError(f"{records}: is not the records folder defocuskit makes; it is left as it is: move it or "
                          "give another output folder")
    for path in sorted(records.iterdir()) if records.is_dir() else ():
        if not _written_here(path):
            raise FolderError(f"{path}: was not written here by defocuskit (not a shard record or ledger); it is "
                              "left as it is: move it or give another output folder")


def _written_here(path: Path) -> bool:
    """Whether a file of `.records/` is one this tool writes (see `check_records`)."""
    if path.is_symlink() or not path.is_file():
        return False
    if RECORD_TEMPORARY.fullmatch(path.name):
        return True
    if path.suffix != ".json":
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if path.stem in (LEDGER, TEMPORARIES):
        return isinstance(data, list) and all(isinstance(name, str) for name in data)
    return isinstance(data, dict) and data.get("name") == path.stem and isinstance(data.get("fingerprint"), str)


def _own_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("tool") == "defocuskit" else None


def check_dataset(folder: str | Path, dataset: Mapping[str, Any], overwrite: bool) -> None:
    """Refuse a folder whose manifest is not defocuskit's, or (unless `overwrite`) is another dataset's, and one
    whose `.records/` holds a file this tool did not write (`check_records`).

    `dataset` identifies what is being written (e.g. the sources and their resolved roots); a manifest
    written with another identity is another dataset."""
    folder = Path(folder)
    check_records(folder)
    path = folder / MANIFEST
    if not path.exists():
        rejects = folder / REJECTS
        if (rejects.exists() or rejects.is_symlink()) and not (folder / RECORDS).is_dir():
            raise FolderError(f"{rejects}: exists and was not written here by defocuskit (no manifest or records "
                              "beside it); it is left as it is: move it or give another output folder")
        return
    manifest = _own_manifest(folder)
    if manifest is None:
        raise FolderError(f"{path}: is not a defocuskit manifest; it is left as it is: give another output folder")
    theirs = manifest.get("dataset")
    if theirs is None or theirs == dict(dataset) or overwrite:
        return
    raise FolderError(f"{folder}: holds another dataset ({_summary(theirs)}); give another output folder, or "
                      "--overwrite to replace it (only the files its manifest and records list are removed)")


def dataset_identity(options: Mapping[str, Any]) -> dict[str, str]:
    """What a shard folder holds, from its manifest options: the inputs (a pseudo-coc folder's input
    shards, an ingest's sources with their roots resolved), never the content options."""
    def where(value: Any) -> str:
        return os.path.realpath(value) if isinstance(value, str) and os.path.exists(value) else str(value)

    if "pseudo_coc" in options:
        return {"pseudo-coc": where(options["pseudo_coc"]["shards"])}
    return {f"ingest {name}": where(root) for name, root in sorted(options.get("sources", {}).items())}


def _summary(dataset: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(dataset.items()))
