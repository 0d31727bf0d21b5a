"""A set of files replaced together (eval's report.json, report.csv and plots): each written to a fresh hidden
staging folder `.defocuskit-staging.<token>` first, listed in the folder's `.defocuskit-staging.json` before it is
made (`staged_files`), then renamed into place; the next run clears only staging folders that journal lists, and
finishes the replacement of a run killed while it renamed (`staged_pending`)."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from defocuskit.io.atomic import atomic_write, disk_full_named, new_token
from defocuskit.io.hub import file_sha256

STAGING = ".defocuskit-staging"
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
                and file_sha256(folder / name) == commit["remove"][name]:
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
        remove = {name: file_sha256(folder / name) for name in names
                  if name not in files and _plain_file(folder / name)}
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
