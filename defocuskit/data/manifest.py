"""The shard folder's records: one small JSON record per completed shard (in `.records/`: its sample counts,
rejects, the tar's size and hash), and `manifest.json` and `rejects.jsonl` always regenerated from them, so the
parts of a `--part I/N` ingest merge by construction and a resumed run never counts a shard twice.

Writers take the folder lock (`folder_lock`) to publish a shard with its record, to write a record and
to regenerate or prune, so a run that holds the lock sees no half-published shard of another part:
`prune` can then remove every shard that no record of the current plan backs. The shards themselves are
written by `shards`, read by `reader`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import defocuskit
from defocuskit.data import shards
from defocuskit.data.folder import (
    LEDGER,
    RECORD_TEMPORARY,
    REJECTS,
    TEMPORARIES,
    claim,
    dataset_identity,
    folder_lock,
    owned,
    release,
    remove_temporaries,
    write_listed,
)
from defocuskit.data.reader import MANIFEST
from defocuskit.io.atomic import atomic_write

RECORDS = ".records"  # also data.folder.RECORDS
LISTING_RECORD = "_listing"  # pseudo-shard holding the rejects found while listing the sources
SHARD_FILE = re.compile(r"^([A-Za-z0-9_]+-\d+)\.tar$")  # split-NNNNNN.tar


def json_text(obj: Any, *, lines: bool = False) -> str:
    """JSON (indented), or JSON lines from a list."""
    if lines:
        return "".join(shards.dumps(item) + "\n" for item in obj)
    return json.dumps(obj, indent=1, default=shards.json_default)


def write_json_atomic(path: Path, obj: Any, *, lines: bool = False) -> None:
    """Write JSON (or JSON lines from a list) to a temporary file in the same folder, then rename."""
    atomic_write(path, json_text(obj, lines=lines), fsync=True)


def record_path(folder: str | Path, name: str) -> Path:
    return Path(folder) / RECORDS / f"{name}.json"


def write_record(folder: str | Path, record: Mapping[str, Any]) -> None:
    """Store a completed shard's record (after its tar has been renamed), under the folder lock."""
    path = record_path(folder, record["name"])
    with folder_lock(folder):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, dict(record))


def read_record(folder: str | Path, name: str) -> dict[str, Any] | None:
    """A shard's record, or None when absent or unreadable."""
    path = record_path(folder, name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_manifest(records: list[Mapping[str, Any]], options: Mapping[str, Any], expected_shards: int,
                   error: str | None = None) -> dict:
    """The manifest from shard records (listing record included): counts by split, source and
    f-number, options, sources, rejects.

    "complete" is true when every planned shard is done and they hold at least one sample;
    `error`, when given, says why the folder is not usable (e.g. every input was rejected)."""
    listed, table, rejects, dropped, blurred = [], Counter(), 0, 0, 0
    for rec in records:
        rejects += len(rec.get("rejects", ()))
        if rec["name"] == LISTING_RECORD:
            continue
        dropped += rec.get("dropped", 0)
        blurred = None if blurred is None or rec.get("blurred") is None else blurred + rec["blurred"]
        for row in rec.get("table", ()):
            table[(rec["split"], row["source"], row["f_number"])] += row["samples"]
        if rec["samples"] > 0:
            entry = {k: rec[k] for k in ("name", "split", "samples", "by_source", "by_f_number")}
            listed.append(entry | ({"bytes": rec["tar_bytes"]} if "tar_bytes" in rec else {}))  # the readers check it
    by_split, by_source, by_f = Counter(), Counter(), Counter()
    for (split, source, f), n in table.items():
        by_split[split] += n
        by_source[source] += n
        by_f[f] += n
    done = sum(1 for r in records if r["name"] != LISTING_RECORD)
    manifest = {
        "tool": "defocuskit",
        "version": defocuskit.__version__,
        "format": shards.FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": dict(options),
        "dataset": dataset_identity(options),
        "complete": done >= expected_shards and sum(table.values()) > 0 and error is None,
        "expected_shards": expected_shards,
        "done_shards": done,
        "shards": [dict(s, name=s["name"] + ".tar") for s in listed],
        "counts": {
            "samples": sum(table.values()),
            "blurred": blurred,  # samples with blur.png (None: a record from before this count)
            "by_split": dict(sorted(by_split.items())),
            "by_source": dict(sorted(by_source.items())),
            "by_f_number": dict(sorted(by_f.items(), key=lambda kv: shards.f_sort_key(kv[0]))),
            "table": [{"split": s, "source": src, "f_number": f, "samples": n}
                      for (s, src, f), n in sorted(table.items(), key=_table_order)],
        },
        "rejects": rejects,
        "dropped_flat": dropped,
    }
    if error is not None:
        manifest["error"] = error
    return manifest


def _table_order(item: tuple[tuple[str, str, str], int]) -> tuple[str, str, float]:
    (split, source, f), _ = item
    return split, source, shards.f_sort_key(f)


def _plan_records(folder: Path, plan: Mapping[str, str]) -> list[dict[str, Any]]:
    """The records present whose fingerprint is the plan's, in plan order."""
    records = []
    for name, fingerprint in plan.items():
        rec = read_record(folder, name)
        if rec is not None and rec.get("fingerprint") == fingerprint:
            records.append(rec)
    return records


def regenerate(folder: str | Path, plan: Mapping[str, str], options: Mapping[str, Any],
               error: str | None = None, final: bool = True) -> dict:
    """Rewrite manifest.json and rejects.jsonl from the records of the planned shards.

    `plan` maps every shard of the plan (all parts) and the listing record to its fingerprint; the
    records present whose fingerprint matches are merged, under a folder lock, so the last part to
    finish writes the full manifest and records left by an earlier, different command are ignored.
    `error` is written into the manifest (see `build_manifest`). `final` False (a listing while shards are still
    written, or before an earlier plan's are pruned): "complete" stays false.
    """
    folder = Path(folder)
    with folder_lock(folder):
        records = _plan_records(folder, plan)
        manifest = build_manifest(records, options, expected_shards=sum(n != LISTING_RECORD for n in plan),
                                  error=error)
        manifest["complete"] = manifest["complete"] and final
        rejects = [dict(rej, shard=rec["name"]) for rec in records for rej in rec.get("rejects", ())]
        write_listed(folder, folder / REJECTS, json_text(rejects, lines=True))
        write_listed(folder, folder / MANIFEST, json_text(manifest))
    return manifest


def prune(folder: str | Path, plan: Mapping[str, str], mine: Collection[str]) -> tuple[list[Path], list[Path]]:
    """Remove, under the folder lock, what this tool wrote that the plan does not hold; returns (the
    paths removed, the foreign `split-NNNNNN.tar` files kept).

    Removed: every tar this tool wrote here (`folder.owned`: ledger, records, manifest) that no record of
    `plan` with samples backs (the shards of an earlier plan: another --shard-size, other options or
    inputs), every record not of `plan`, the `.tmp` files of interrupted record writes (in `.records/`), and
    the temporaries killed runs listed (`remove_temporaries`): of manifest and rejects writes, and the
    `.partial` / `.spool` of the shards in `mine` or in no plan (those of another part's shards are kept: that
    part may be writing them). A tar that looks like a shard but that this tool did not write is the user's:
    kept, and returned. A temporary's name that no run listed is left.
    Call it after the manifest of a successful run.
    """
    folder = Path(folder)
    removed, foreign = [], []
    with folder_lock(folder):
        backed = {r["name"] for r in _plan_records(folder, plan) if r.get("samples", 0) > 0}
        ours = owned(folder)
        dropped = []
        for path in sorted(folder.iterdir()):
            match = SHARD_FILE.match(path.name)
            if not match or match.group(1) in backed:
                continue
            if match.group(1) not in ours:
                foreign.append(path)
            elif path.is_file() and not path.is_symlink():
                dropped.append(match.group(1))
                removed.append(path)
        records = folder / RECORDS
        for path in sorted(records.iterdir()) if records.is_dir() else ():
            if RECORD_TEMPORARY.fullmatch(path.name):
                removed.append(path)
            elif path.suffix == ".json" and path.stem not in (LEDGER, TEMPORARIES):
                rec = read_record(folder, path.stem)
                if path.stem not in plan or rec is None or rec.get("fingerprint") != plan[path.stem]:
                    removed.append(path)
        for path in removed:
            path.unlink(missing_ok=True)
        removed += remove_temporaries(folder, lambda shard: shard == "" or shard not in plan or shard in mine)
        release(folder, dropped)
    return removed, foreign


def publish_with_record(folder: str | Path, writer: shards.AtomicShard | None, record: Mapping[str, Any]) -> None:
    """Publish a sealed shard and write its record together under the folder lock (so that a part pruning
    the folder never sees a published shard without its record); the shard's name enters the ownership
    ledger first, so a kill between the two steps leaves a tar the next run knows as its own."""
    with folder_lock(folder):
        if writer:
            claim(folder, [record["name"]])
            writer.publish()
        write_record(folder, record)
