"""The datasets `ingest` understands (their layouts: README "Sources"): an explicit table, imported on demand.

Every source module exposes
    NAME: str
    list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]   # cheap, deterministic order
    load(task: Task, opts: IngestOptions) -> list[Sample]                      # raises RejectError to skip
and, for a dataset with a fixed layout (see `layout`),
    TITLE: str                                                                 # "VABD", for messages
    layout_problem(root: Path) -> str | None                                   # what does not match, or None
    check_layout(root: Path) -> None                                           # raises LayoutError (an IngestError)
`ingest` calls every given source's `check_layout` before listing any. Optionally
    manifest_options(tasks: list[Task]) -> dict                                # what listing decided, for manifest.json
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module; the order is the order in which ingest lists the sources given.
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
}

# The command-line option of each source, for error messages.
OPTION_OF = {
    "raw": "--raw-dir", "dpdd": "--dpdd", "realblur": "--realblur", "ded": "--ded",
    "realdof": "--realdof", "vabd": "--vabd", "ebb": "--ebb", "sdd": "--sdd", "pairs": "--pairs",
    "synthetic": "--synthetic", "cuhk-blur": "--cuhk-blur",
}


def source_module_name(name: str) -> str:
    """The module path of source `name`."""
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from None


def get_source(name: str) -> ModuleType:
    """Import and return the module of source `name`."""
    return importlib.import_module(source_module_name(name))
