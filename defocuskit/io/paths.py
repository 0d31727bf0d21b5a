"""Path arguments of Python calls, judged before use: another type is a TypeError naming the argument (it was
pathlib's 'expected str, bytes or os.PathLike object' from deep inside), and an empty name a ValueError (Path("")
is the working folder: `report=""` read ./report.json, `cache_dir=""` downloaded into the working folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def path_argument(name: str, value: Any, what: str = "a path") -> Path:
    """`value` (a str or an os.PathLike) as a Path ("~" expanded); TypeError naming `name=` for another type,
    ValueError for an empty or blank name. `what`: what the argument names, for the message."""
    if not isinstance(value, (str, os.PathLike)) or not isinstance(os.fspath(value), str):
        raise TypeError(f"{name}=: {what} (a str or a Path), got {type(value).__name__} {value!r}")
    if not os.fspath(value).strip():
        raise ValueError(f"{name}=: an empty name, which would stand for the working folder; give {what}")
    return Path(value).expanduser()


def nearest_existing(path: Path) -> Path | None:
    """`path` or its nearest parent that exists (a link to nothing counts: nothing can be made through it), None
    where none does; where it is no folder, nothing can be made at `path`."""
    return next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
