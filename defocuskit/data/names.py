"""The names of the data a model saw, as a model card shows them: a public dataset by its title (DPDD), your
own photos by the name of the shard folder they were ingested into; never a path."""

from __future__ import annotations

import json
from pathlib import Path

from defocuskit.data.reader import MANIFEST
from defocuskit.data.sources import SOURCES, get_source

OWN_PHOTOS = ("raw", "pairs", "render")  # sources of one's own photos: named after their shard folder
SYNTHETIC = "defocuskit synthetic"  # --synthetic builtin: scikit-image photos through a thin lens


def source_name(source: str, folder: str) -> str:
    """The dataset name of shard source `source` (a manifest's or a sample's "source") in the shard folder
    whose base name is `folder`."""
    if source == "synthetic":
        return SYNTHETIC
    if source in SOURCES and source not in OWN_PHOTOS:
        title = get_source(source).title
        if title:
            return title
    return folder


def _path_of(spec: str) -> Path:
    """The path part of a shard spec (a `pipe:` command's last word, a URL without its scheme)."""
    text = str(spec)
    if text.startswith("pipe:"):
        text = (text[len("pipe:"):].split() or [""])[-1]
    return Path(text.split("://", 1)[-1])


def shard_folder(spec: str) -> Path:
    """The folder of a `data.train` entry: the folder itself, or the folder of a shard file, glob or brace
    pattern."""
    path = _path_of(spec)
    return path.parent if path.suffix or any(c in path.name for c in "*?[{") else path


def _base(folder: Path) -> str:
    return folder.name or folder.resolve().name or "shards"


def spec_name(spec: str) -> str:
    """A `data.train` entry without its path: the folder's base name, and a pattern's file name after it."""
    path, folder = _path_of(spec), shard_folder(spec)
    base = _base(folder)
    return base if path == folder else f"{base}/{path.name}"


def trained_on(train: str | list[str], split: str = "train") -> list[str]:
    """The dataset names of a recipe's `data.train`: per shard folder, the sources of its `split` in its
    manifest (every source where the manifest has none of that split), else the folder's base name. In
    order, without repeats."""
    names: list[str] = []
    for spec in train if isinstance(train, list) else [train]:
        folder = shard_folder(spec)
        base = _base(folder)
        try:
            counts = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["counts"]
            rows = counts.get("table") or []
            sources = [r["source"] for r in rows if r.get("split") == split] or list(counts.get("by_source") or {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            sources = []
        for name in [source_name(str(s), base) for s in sources] or [base]:
            if name not in names:
                names.append(name)
    return names
