"""`defocuskit deblur`'s output folder: where each result goes, what an earlier run into it recorded
(deblur.json), and which files there a run may write over (its own, unchanged; never an input or a user's file)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from defocuskit.io.atomic import remove_partial, write_journalled
from defocuskit.io.formats import IMAGE_EXTENSIONS
from defocuskit.io.hub import changed_since

RUN_LOCK = ".defocuskit-deblur.lock"  # in --out, held for a whole run (io.locks)


def destination(out: Path, path: Path, defocus_map: bool) -> Path:
    """Where `deblur` writes the result of input `path`."""
    return out / (f"{path.stem}_coc.png" if defocus_map else f"{path.stem}.png")


def check_out_folder(out: str | Path) -> None:
    """Refuse (ValueError) an `out` that does not exist yet and is named as an image file (`sharp.png`, `x.json`): it
    was made a folder of that name (out/<stem>.png, deblur.json), exit 0. A name ending in a slash is a folder."""
    path = Path(out)
    slash = str(out).endswith(("/", "\\"))  # read before Path drops it: "shots.png/" names a folder
    if not slash and not (path.exists() or path.is_symlink()) and path.suffix.lower() in (*IMAGE_EXTENSIONS, ".json"):
        raise ValueError(f"--out {out}: names a file, but deblur writes a folder (<stem>.png for each input, "
                         f"deblur.json): give the folder's name (or {out}/ for a folder of that name)")


def write_output(dest: Path, data: bytes, listed: Callable[[str], None]) -> None:
    """Write one output's encoded bytes through a fresh temporary, which `listed(its name)` journals before the
    data goes in (`io.atomic.write_journalled`); where nothing is at `dest`, never over a file put there meanwhile."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_journalled(dest, data, listed, exclusive=not os.path.lexists(dest))


def file_signature(path: Path) -> tuple[int, ...] | None:
    """What `path` is now (inode, size, modification time), None where nothing is there: a file put or changed
    since is told by it without reading it again."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def previous_records(out: Path) -> list[dict[str, Any]]:
    """The per-image records of an earlier `deblur` into `out` (its deblur.json); [] when there is none.

    Raises ValueError when out/deblur.json exists but is not one of ours (it is never overwritten)."""
    path = out / "deblur.json"
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["images"]
        if not isinstance(records, list) or any(isinstance(r, dict) and not isinstance(r.get("output", ""), str)
                                                 for r in records):
            raise TypeError("not a list of records, each output a path")
        return [r for r in records if isinstance(r, dict) and "output" in r]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise ValueError(f"{path}: exists and is not a deblur.json written by defocuskit; it is left as it is: "
                         "give another --out") from None


def check_destinations(inputs: list[Path], out: Path, defocus_map: bool, locked: bool = True) -> list[dict[str, Any]]:
    """Refuse (ValueError naming the file) a run that would write over one of its inputs or over a file
    that no earlier `deblur` into `out` wrote; returns the earlier records (see `previous_records`). `locked` (the run
    holds the folder's lock): also refuse an earlier output changed since (its SHA-256) and remove the temporaries
    (`io.atomic.partial_path`) of images a killed run listed as begun."""
    records = previous_records(out)
    for r in records if locked else ():  # a temporary a killed run made and listed: its own, so ours to remove
        if r.get("pending") and isinstance(r.get("partial"), str):
            remove_partial(out / Path(r["output"]).name, r["partial"])
    # outputs lie in `out` itself: known by name, wherever deblur ran from; with the SHA-256 it wrote them with
    ours = {Path(r["output"]).name: r.get("sha256") for r in records}
    begun = {Path(r["output"]).name for r in records if r.get("pending")}
    sources = {p.resolve(): p for p in inputs}
    for p in inputs:
        dest = destination(out, p, defocus_map)
        if dest.resolve() in sources:
            raise ValueError(f"{sources[dest.resolve()]}: the output {dest} would replace this input photo; "
                             "give another --out")
        if not (dest.exists() or dest.is_symlink()):
            continue
        if dest.name not in ours:
            raise ValueError(f"{dest}: exists and was not written by an earlier deblur into {out} (deblur.json "
                             "does not list it); it is left as it is: give another --out")
        if locked and ours[dest.name] and changed_since(dest, ours[dest.name]):
            if dest.name in begun:
                raise ValueError(f"{dest}: not the image a killed deblur began to write there (not the SHA-256 "
                                 "deblur.json records): put there since; it is left as it is: move it or give another "
                                 "--out")
            raise ValueError(f"{dest}: changed since deblur wrote it (not the SHA-256 deblur.json records); it is "
                             "left as it is: move it or give another --out")
    return records
