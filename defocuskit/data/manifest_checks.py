"""What a reader makes of a shard folder's parsed manifest.json: what makes it unusable (`manifest_wrong`: the one
line a `reader.ShardError` says, or None), and the one warning for a folder whose ingest failed or has not finished
(`warn_incomplete`)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from defocuskit.data import metadata
from defocuskit.data.tar_checks import is_count

_SHARD_NAME = re.compile(r"[^./\\][^/\\]*-[0-9]+\.tar")


def manifest_wrong(manifest: Any) -> str | None:
    """What makes a parsed manifest unusable (a field of the wrong type, a format this reader does not know, a shard
    listed twice, a shard name that is not a file of the folder named SPLIT-NNNNNN.tar, a split that is not its
    name's prefix), else None."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but a {type(manifest).__name__}"
    fmt = manifest.get("format", 1)
    if fmt not in (1, metadata.FORMAT) or isinstance(fmt, bool):
        return f"format {fmt!r}: this defocuskit reads shard formats 1 and {metadata.FORMAT}"
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return f"'shards' is {shards!r}, not a list of shards"
    seen: set[str] = set()
    for i, entry in enumerate(shards):
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name):
            return f"shards[{i}] names {name!r}, not a shard file of this folder (SPLIT-NNNNNN.tar)"
        if name in seen:
            return f"shards[{i}]: {name} is listed twice"
        seen.add(name)
        if "split" in entry and entry["split"] != split_of(name):
            return f"shards[{i}]: {name} is listed as split {entry['split']!r}, not {split_of(name)!r}"
        if "samples" in entry and not is_count(entry["samples"]):
            return f"shards[{i}]: {name} holds {entry['samples']!r} samples, not a count"
        if "bytes" in entry and not is_count(entry["bytes"]):
            return f"shards[{i}]: {name} is listed as {entry['bytes']!r} bytes, not a size"
    counts = manifest.get("counts", {})
    by_split = counts.get("by_split", {}) if isinstance(counts, dict) else None
    table = counts.get("table", []) if isinstance(counts, dict) else None
    if (not isinstance(counts, dict) or not is_count(counts.get("samples", 0)) or not isinstance(by_split, dict)
            or not all(is_count(v) for v in by_split.values()) or not isinstance(table, list)
            or not all(isinstance(r, dict) and {"split", "source", "f_number"} <= set(r) and is_count(r.get("samples"))
                       for r in table)):
        return "'counts' is not {samples, by_split: {split: count}, table: [{split, source, f_number, samples}]}"
    if "complete" in manifest and not isinstance(manifest["complete"], bool):
        return f"'complete' is {manifest['complete']!r}, not true or false"
    return None


_WARNED: set[str] = set()  # folders warned about in this process


def warn_incomplete(folder: Path, manifest: Mapping[str, Any]) -> None:
    """One line on stderr (once per folder and process): the ingest (or pseudo-coc) that wrote `folder` failed or has
    not finished."""
    key = os.path.realpath(folder)
    if key in _WARNED:
        return
    _WARNED.add(key)
    options = manifest.get("options")
    writer = "pseudo-coc" if isinstance(options, Mapping) and "pseudo_coc" in options else "ingest"
    if manifest.get("error"):
        print(f"warning: {folder}: its {writer} failed: {manifest['error']}", file=sys.stderr, flush=True)
        return
    listed, planned = len(manifest.get("shards", [])), manifest.get("expected_shards", "?")
    parts = ", or parts of a --part I/N ingest are missing" if writer == "ingest" else ""
    print(f"warning: {folder}: its {writer} has not finished (manifest.json: complete false: a run was interrupted"
          f"{parts}); only the {listed} of {planned} planned shards its manifest lists are read: run the same "
          f"{writer} command again to finish it", file=sys.stderr, flush=True)


def split_of(url: str) -> str:
    """The split of a shard (SPLIT-NNNNNN.tar: SPLIT)."""
    return os.path.basename(url).rsplit("-", 1)[0]
