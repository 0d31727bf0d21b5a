"""The datasets `ingest` understands (their layouts: README "Sources"): an explicit table, imported on demand.

Each source module defines `SOURCE = DatasetSource(...)`: its name, how it lists its tasks and loads one, and, for a
dataset with a fixed layout, its title, the expected layout in words and `layout_problem(root)` (what keeps `root` from
being that dataset, or None); a source that also takes the parent folder of its dataset (`layout.parent_problem`)
gives `root_of(root)`, the folder it reads. `ingest` checks every given source's layout (`layout.check_layout`) before
listing any.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task

# name -> module; the order is the order in which ingest lists the sources given. Ingest's worker processes get
# the module path, not the name, so a source that a program adds to this table loads in them too.
SOURCES: dict[str, str] = {
    "raw": "defocuskit.data.sources.raw",
    "dpdd": "defocuskit.data.sources.dpdd",
    "realblur": "defocuskit.data.sources.realblur",
    "ded": "defocuskit.data.sources.ded",
    "realdof": "defocuskit.data.sources.realdof",
    "vabd": "defocuskit.data.sources.vabd",
    "ebb": "defocuskit.data.sources.ebb",
    "sdd": "defocuskit.data.sources.sdd",
    "pairs": "defocuskit.data.sources.pairs",
    "synthetic": "defocuskit.data.sources.synthetic",
    "cuhk-blur": "defocuskit.data.sources.cuhk_blur",
    "render": "defocuskit.data.sources.render",
}
# name -> the command-line option that gives its folder, for messages
OPTIONS: dict[str, str] = {
    "raw": "--raw-dir", "dpdd": "--dpdd", "realblur": "--realblur", "ded": "--ded", "realdof": "--realdof",
    "vabd": "--vabd", "ebb": "--ebb", "sdd": "--sdd", "pairs": "--pairs", "synthetic": "--synthetic",
    "cuhk-blur": "--cuhk-blur", "render": "--render",
}


@dataclass(frozen=True)
class DatasetSource:
    """One dataset `ingest` reads."""

    name: str
    list_tasks: Callable[[Path, IngestOptions], Iterator[Task | Rejected]]  # cheap, deterministic order
    load: Callable[[Task, IngestOptions], list[Sample]]  # raises RejectError to skip a task
    title: str = ""  # "VABD", for messages
    expected: str = ""  # the layout it expects, in words, for LayoutError
    layout_problem: Callable[[Path], str | None] | None = None  # None: any folder (no fixed layout)
    # the dataset folder that a given folder names: itself, or the one dataset folder in a parent (layout.dataset_root)
    root_of: Callable[[Path], Path] | None = None
    manifest_options: Callable[[list[Task]], dict[str, Any]] | None = None  # what listing decided, for manifest.json


def module_of(name: str) -> str:
    """The module path of source `name`; KeyError naming the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from None


def source_in(module: str) -> DatasetSource:
    """The DatasetSource that `module` defines (imported on first use)."""
    return importlib.import_module(module).SOURCE


def get_source(name: str) -> DatasetSource:
    """The source called `name`; KeyError naming the known ones."""
    return source_in(module_of(name))


def option_of(name: str) -> str:
    """The command-line option of source `name` (the name itself where it has none)."""
    return OPTIONS.get(name, name)
