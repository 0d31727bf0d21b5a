"""The shard folder: atomic tar shards, per-shard records, manifest, rejects.

A shard folder holds `{split}-{NNNNNN}.tar` WebDataset shards, `manifest.json`, `rejects.jsonl` and a
hidden `.records/` folder with one small JSON record per completed shard (its sample counts and rejects).
`manifest.json` and `rejects.jsonl` are always regenerated from the records, so the parts of a
`--part I/N` ingest merge by construction and a resumed run never counts a shard twice.

Writers take the folder lock (`folder_lock`) to publish a shard with its record, to write a record and
to regenerate or prune, so a run that holds the lock sees no half-published shard of another part:
`prune` can then remove every shard that no record of the current plan backs. The reading side
(`read_manifest`, `shard_urls`, `decode_sample`, `iter_raw`, `iter_samples`) lives in `reader`.

Shard format 2 (manifest "format": 2; a manifest without "format" is format 1). A sample's `json`
holds the fixed schema of `defocuskit.data.metadata`: every key always present with one type, the
groups `align` and `blurmask` with all their sub-keys, and no null. Unknown is -1 (-1.0 for a float
key) for numbers that are never negative, "" for text, [] for `origin`; the two signed registration
diagnostics hold 0 and their group says whether they are known (see `metadata`). -1, not NaN, because
NaN is not strict JSON. `decode_sample` gives the Python view: None where unknown, for samples of
both formats, so readers test `is None` as before.

Which PNG members a sample has depends on its kind: pairs hold blur.png + sharp.png (+ coc.png where
the CoC is known; + left.png and right.png, the blurred shot's dual-pixel views, where ingested with
`--dual-pixel`), sharp-only samples sharp.png, blur-map samples blur.png + blurmask.png; a reader
that lines members up in columns (`datasets`) gets None for the members a sample lacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from webdataset import TarWriter

import defocuskit
from defocuskit.data import metadata
from defocuskit.data.folder import (
    LEDGER,
    RECORD_TEMPORARY,
    REJECTS,
    TEMPORARIES,
    claim,
    dataset_identity,
    folder_lock,
    make_temporaries,
    owned,
    release,
    remove_temporaries,
    unlist_temporaries,
    write_listed,
)
from defocuskit.data.reader import COC_SCALE, MANIFEST
from defocuskit.io.atomic import atomic_write, new_token
from defocuskit.io.images import encode_png

FORMAT = metadata.FORMAT  # shard format written into manifest.json ("format"); see the module docstring
RECORDS = ".records"  # also data.folder.RECORDS
LISTING_RECORD = "_listing"  # pseudo-shard holding the rejects found while listing the sources
MEMBERS = ("blur.png", "sharp.png", "coc.png", "cocsign.png", "blurmask.png", "left.png", "right.png", "json")
BLURMASK_BLURRED = 255  # blurmask.png: 255 = blurred (out of focus), 0 = in focus
SHARD_FILE = re.compile(r"^([A-Za-z0-9_]+-\d+)\.tar$")  # split-NNNNNN.tar


def shard_name(split: str, group: int) -> str:
    """`train`, 3 -> `train-000003` (the shard file is this name plus `.tar`)."""
    return f"{split}-{group:06d}"


def f_number_key(f_number: Any) -> str:
    """The manifest's f-number key: rounded to one decimal ("2.8", "16.0"), or "none" when unknown
    (None, the stored -1, anything not a positive number)."""
    try:
        value = float(f_number)
    except (TypeError, ValueError):
        return "none"
    if not value > 0 or value == float("inf"):
        return "none"
    return f"{round(value, 1):.1f}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    """JSON text for metadata and records (numpy arrays and scalars allowed)."""
    return json.dumps(obj, default=_json_default, sort_keys=False)


def encode_coc(coc: np.ndarray) -> np.ndarray:
    """Circle-of-confusion diameters (pixels, float) -> uint16 pixels x 256, clipped to the 16-bit range."""
    return np.clip(np.rint(np.asarray(coc, np.float64) * COC_SCALE), 0, 65535).astype(np.uint16)


def encode_members(sharp: np.ndarray | None, blur: np.ndarray | None, coc: np.ndarray | None,
                   meta: Mapping[str, Any], blurmask: np.ndarray | None = None,
                   coc_signed: bool = False, views: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, bytes]:
    """The tar members of one sample: sharp.png (absent in blur-map samples), blur.png (unless sharp-only),
    coc.png (if known: |coc|), cocsign.png (if `coc_signed`: uint8, 255 behind the focal plane, 0 in front),
    blurmask.png (blur-map samples: uint8 (H, W), 255 = blurred), left.png + right.png (`views`: the blurred
    shot's dual-pixel views, as blur.png), json.

    `meta` (Python view, None where unknown) is stored in the fixed schema (`metadata.to_stored`);
    metadata.MetadataError names a key outside the schema or a value of the wrong type."""
    if sharp is None and (blur is None or blurmask is None):
        raise ValueError("a sample without sharp.png must be a blur-map sample (blur and blurmask)")
    members = {} if sharp is None else {"sharp.png": encode_png(sharp)}
    members["json"] = dumps(metadata.to_stored(meta)).encode("utf-8")
    if blur is not None:
        members["blur.png"] = encode_png(blur)
    if coc is not None:
        members["coc.png"] = encode_png(encode_coc(np.abs(coc)))
        if coc_signed:
            members["cocsign.png"] = encode_png(np.where(np.asarray(coc) < 0, 0, 255).astype(np.uint8))
    if blurmask is not None:
        if blurmask.dtype != np.uint8 or blurmask.ndim != 2:
            raise ValueError(f"blurmask must be uint8 (H, W), got {blurmask.dtype} {blurmask.shape}")
        members["blurmask.png"] = encode_png(blurmask)
    if views is not None:
        members["left.png"], members["right.png"] = encode_png(views[0]), encode_png(views[1])
    return members


def richness(members: Mapping[str, bytes]) -> tuple[int, int]:
    """(members present, known metadata values): samples with more come first in their shard."""
    try:
        meta = json.loads(members.get("json", b"{}"))
    except ValueError:
        meta = {}
    return len(members), metadata.known_count(meta) if isinstance(meta, Mapping) else 0


class AtomicShard:
    """One shard, spooled while its samples arrive and written under a temporary name at commit.

    webdataset's `ShardWriter` writes straight to the final name and would leave a
    half-written shard after a crash. One `TarWriter` per shard on `.{name}.{token}.tar.partial` (made and listed
    with its spool at the start), fsynced and renamed by `commit`, gives atomic shards (a `.tar` either is
    complete or does not exist). At commit the samples are ordered richest first (see `richness`; stable
    otherwise), because `datasets.load_dataset("webdataset")` infers its columns and types from the first five
    samples: pairs with coc.png and full metadata must precede sharp-only samples and sparser metadata.
    """

    def __init__(self, folder: Path, name: str):
        self.folder = Path(folder)
        self.final = self.folder / f"{name}.tar"
        token = new_token()
        self.partial = partial_path(folder, name, token)
        self.spool_path = spool_path(folder, name, token)
        self.samples = 0
        make_temporaries(folder, [self.spool_path, self.partial])
        self._spool = open(self.spool_path, "r+b")  # noqa: SIM115 (closed by commit/abort)
        self._index: list[tuple[tuple[int, int], int, str, list[tuple[str, int, int]]]] = []

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Append one sample (its members as bytes)."""
        entries = []
        for member, data in members.items():
            entries.append((member, self._spool.tell(), len(data)))
            self._spool.write(data)
        self._index.append((richness(members), len(self._index), key, entries))
        self.samples += 1

    def commit(self) -> Path:
        """Write the tar (richest samples first), flush it to disk and give it its final name."""
        self.seal()
        return self.publish()

    def seal(self) -> None:
        """Write the tar under its temporary name (richest samples first) and flush it to disk."""
        order = sorted(self._index, key=lambda r: (-r[0][0], -r[0][1], r[1]))
        self._spool.flush()
        with open(self.partial, "wb") as stream:
            # PAX headers: RAW keys may exceed USTAR's 100 characters; one mtime (2000-01-01): one plan, one tar's bytes
            tar = TarWriter(stream, encoder=False, format="PAX_FORMAT", mtime=946684800)
            for _, _, key, entries in order:
                sample = {"__key__": key}
                for member, offset, size in entries:
                    self._spool.seek(offset)
                    sample[member] = self._spool.read(size)
                tar.write(sample)
            tar.close()
            stream.flush()
            os.fsync(stream.fileno())
        self._spool.close()
        self.spool_path.unlink(missing_ok=True)

    def publish(self) -> Path:
        """Give the sealed tar its final name (atomically, replacing an older shard of that name)."""
        os.replace(self.partial, self.final)
        unlist_temporaries(self.folder, [self.partial.name, self.spool_path.name])
        return self.final

    def abort(self) -> None:
        """Drop the partial shard and its spool."""
        with contextlib.suppress(Exception):
            self._spool.close()
        self.spool_path.unlink(missing_ok=True)
        self.partial.unlink(missing_ok=True)
        unlist_temporaries(self.folder, [self.partial.name, self.spool_path.name])


def spool_path(folder: str | Path, name: str, token: str) -> Path:
    """Where shard `name` keeps its samples until it is complete (`token`: `io.atomic.new_token`)."""
    return Path(folder) / f".{name}.{token}.tar.spool"


def partial_path(folder: str | Path, name: str, token: str) -> Path:
    """Where shard `name` is written before it is complete (`token`: `io.atomic.new_token`)."""
    return Path(folder) / f".{name}.{token}.tar.partial"


def json_text(obj: Any, *, lines: bool = False) -> str:
    """JSON (indented), or JSON lines from a list."""
    return "".join(dumps(item) + "\n" for item in obj) if lines else json.dumps(obj, indent=1, default=_json_default)


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
    shards, table, rejects, dropped, blurred = [], Counter(), 0, 0, 0
    for rec in records:
        rejects += len(rec.get("rejects", ()))
        if rec["name"] == LISTING_RECORD:
            continue
        dropped += rec.get("dropped", 0)
        blurred = None if blurred is None or rec.get("blurred") is None else blurred + rec["blurred"]
        for row in rec.get("table", ()):
            table[(rec["split"], row["source"], row["f_number"])] += row["samples"]
        if rec["samples"] > 0:
            shards.append({k: rec[k] for k in ("name", "split", "samples", "by_source", "by_f_number")})
    by_split, by_source, by_f = Counter(), Counter(), Counter()
    for (split, source, f), n in table.items():
        by_split[split] += n
        by_source[source] += n
        by_f[f] += n
    done = sum(1 for r in records if r["name"] != LISTING_RECORD)
    manifest = {
        "tool": "defocuskit",
        "version": defocuskit.__version__,
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": dict(options),
        "dataset": dataset_identity(options),
        "complete": done >= expected_shards and sum(table.values()) > 0 and error is None,
        "expected_shards": expected_shards,
        "done_shards": done,
        "shards": [dict(s, name=s["name"] + ".tar") for s in shards],
        "counts": {
            "samples": sum(table.values()),
            "blurred": blurred,  # samples with blur.png (None: a record from before this count)
            "by_split": dict(sorted(by_split.items())),
            "by_source": dict(sorted(by_source.items())),
            "by_f_number": dict(sorted(by_f.items(), key=lambda kv: f_sort_key(kv[0]))),
            "table": [{"split": s, "source": src, "f_number": f, "samples": n}
                      for (s, src, f), n in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1], f_sort_key(kv[0][2])))],
        },
        "rejects": rejects,
        "dropped_flat": dropped,
    }
    if error is not None:
        manifest["error"] = error
    return manifest


def f_sort_key(key: str) -> float:
    """Numeric order of f-number keys, "none" last."""
    return float("inf") if key == "none" else float(key)


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


def publish_with_record(folder: str | Path, writer: AtomicShard | None, record: Mapping[str, Any]) -> None:
    """Publish a sealed shard and write its record together under the folder lock (so that a part pruning
    the folder never sees a published shard without its record); the shard's name enters the ownership
    ledger first, so a kill between the two steps leaves a tar the next run knows as its own."""
    with folder_lock(folder):
        if writer:
            claim(folder, [record["name"]])
            writer.publish()
        write_record(folder, record)
