"""The ingest plan: every source's tasks listed and checked, cut into fingerprinted shard groups.

Sharding is deterministic: the tasks of all sources are listed (sources in `SOURCES` order, each in its
own deterministic order), grouped by split, and each split's list is cut into consecutive groups of
`shard_size` tasks; group g of split s is shard `{s}-{g:06d}.tar`. A group's fingerprint covers its
tasks (keys, listed metadata, and each input file's size, mtime_ns and a hash of its first and last
MiB) and the content options, so a changed, fixed or replaced file is read again (a `touch` too).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from defocuskit.data import shards
from defocuskit.data.manifest import LISTING_RECORD
from defocuskit.data.sample import IngestError, IngestOptions, Rejected, Task
from defocuskit.data.sources import OPTIONS, SOURCES, get_source, option_of
from defocuskit.data.sources.layout import check_layout
from defocuskit.data.stamps import Stamps

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")
OLD_METRIC_SCALE = 65.535  # IngestOptions.render_metric_scale's default before None (by the depth map's sample type)


def first_file(task: Task) -> str:
    """The file a reject of `task` names: its first input file, else its key."""
    return next(iter(task.files.values()), task.key)


@dataclass
class Group:
    """One planned shard: its name, split, global index and tasks, and the fingerprint of its content."""

    name: str
    split: str
    index: int  # global group counter over all splits, for --part
    tasks: list[Task]
    fingerprint: str = ""


def content_options(opts: IngestOptions) -> dict[str, Any]:
    """The options that change what a shard contains (not workers, part, strict, overwrite or the output folder)."""
    d = asdict(opts)
    for k in ("out", "workers", "part", "strict", "overwrite"):
        d.pop(k)
    for k in ("cuhk_white_is", "cuhk_test_fraction"):  # carried by the CUHK tasks (split, meta): only they change
        d.pop(k)
    for k in ("local_gain", "refine_warp", "render_veil", "render_veil_spread"):
        if not d[k]:  # off: folders ingested before the option keep their fingerprints
            d.pop(k)
    if d["bracket_fit"] == "frame":  # likewise
        d.pop("bracket_fit")
    if d["render_metric_scale"] is None and d["render_depth_kind"] != "metric":
        # not read without metric depth: fingerprinted as its old default, so folders ingested before keep their
        # fingerprints (metric depth's None renders again: a float map's 1 m per unit was 65.535 m before)
        d["render_metric_scale"] = OLD_METRIC_SCALE
    return d


def digest(obj: Any) -> str:
    """A short, stable hash of JSON-able `obj` (fingerprints)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def list_all(sources: Mapping[str, Path], opts: IngestOptions) -> tuple[list[Task], list[dict[str, Any]]]:
    """Every source's tasks in deterministic order, and the rejects found while listing."""
    tasks, rejects, seen = [], [], set()
    for name in (n for n in SOURCES if n in sources):
        for item in get_source(name).list_tasks(Path(sources[name]), opts):
            if isinstance(item, Rejected):
                if opts.strict:
                    raise IngestError(f"{item.file}: {item.reason}")
                rejects.append(item.to_json())
                continue
            if "." in item.key:
                raise IngestError(f"source {name}: task key {item.key!r} contains '.'")
            if not _SPLIT_RE.match(item.split):
                raise IngestError(f"source {name}: task {item.key!r} has an invalid split name {item.split!r}")
            if item.key in seen:
                rej = Rejected(name, first_file(item), "duplicate key (listed twice)", item.key)
                if opts.strict:
                    raise IngestError(f"{rej.file}: {rej.reason}")
                rejects.append(rej.to_json())
                continue
            seen.add(item.key)
            tasks.append(item)
    return tasks, rejects


def resolved_options(sources: Mapping[str, Path], tasks: list[Task]) -> dict[str, Any]:
    """What the sources decided while listing, for manifest.json's options: each given source module's
    `manifest_options(tasks)` (e.g. CUHK blur's mask polarity), merged."""
    resolved: dict[str, Any] = {}
    for name in (n for n in SOURCES if n in sources):
        hook = get_source(name).manifest_options
        if hook is not None:
            resolved.update(hook([t for t in tasks if t.source == name]))
    return resolved


def _task_identity(task: Task, stamps: Mapping[str, Any]) -> dict[str, Any]:
    """What a task's output depends on: key, files with their stamps, listed metadata and options."""
    return {"key": task.key, "files": task.files, "stamps": [stamps.get(p) for p in task.files.values()],
            "meta": task.meta, "options": task.options}


def plan_groups(tasks: list[Task], shard_size: int, opts: IngestOptions,
                stamps: Mapping[str, Any] | None = None) -> list[Group]:
    """Consecutive groups of `shard_size` tasks per split (splits in sorted order), fingerprinted by the
    tasks (with the `stamps` of their files: size, mtime_ns, content hash), the content options and the
    shard format (so a rerun rewrites the shards an older format wrote)."""
    if shard_size < 1:
        raise IngestError(f"--shard-size must be at least 1, got {shard_size}")
    by_split: dict[str, list[Task]] = {}
    for t in tasks:
        by_split.setdefault(t.split, []).append(t)
    groups, content = [], content_options(opts)
    for split in sorted(by_split):
        items = by_split[split]
        for g, start in enumerate(range(0, len(items), shard_size)):
            chunk = items[start:start + shard_size]
            fp = digest({"tasks": [_task_identity(t, stamps or {}) for t in chunk], "options": content,
                         "format": shards.FORMAT})
            groups.append(Group(shards.shard_name(split, g), split, len(groups), chunk, fp))
    return groups


def check_sources(sources: Mapping[str, Path]) -> None:
    """Names, folders and dataset layouts of every source, before any work; IngestError naming each problem."""
    if not sources:
        raise IngestError("no source given: pass at least one of " + ", ".join(OPTIONS.values()))
    problems: list[IngestError] = []
    for name, root in sources.items():
        source = get_source(name)  # unknown names fail here
        if name == "synthetic":
            if str(root) != "builtin":
                raise IngestError(f"--synthetic {root}: only 'builtin' is available")
        elif not Path(root).is_dir():
            what = "a file, not a folder" if Path(root).exists() else "no such directory"
            raise IngestError(f"{option_of(name)} {root}: {what}")
        else:
            try:
                check_layout(source, Path(root))
            except IngestError as exc:
                problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise IngestError("\n".join(str(p) for p in problems))


def listing_record(rejects: list[dict[str, Any]], sources: Mapping[str, str], stamps: Stamps) -> dict[str, Any]:
    """The pseudo-shard record of the listing's rejects, fingerprinted with the rejected files' stamps."""
    seen = [stamps.of.get(r["file"]) for r in rejects]
    fingerprint = digest({"rejects": rejects, "sources": sources, "stamps": seen})
    return {"name": LISTING_RECORD, "split": None, "samples": 0, "rejects": rejects, "fingerprint": fingerprint}
