"""The shard writer: a sample's members encoded (`encode_members`) and atomic tar shards (`AtomicShard`).

A shard folder holds `{split}-{NNNNNN}.tar` WebDataset shards, `manifest.json`, `rejects.jsonl` and a
hidden `.records/` folder with one small JSON record per completed shard; the records, the manifest
regenerated from them and `prune` live in `manifest`, the reading side (`read_manifest`, `shard_urls`,
`decode_sample`, `iter_raw`, `iter_samples`) in `reader`.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from webdataset import TarWriter

from defocuskit.data import metadata
from defocuskit.data.folder import make_temporaries, unlist_temporaries
from defocuskit.data.reader import COC_SCALE
from defocuskit.io.atomic import new_token
from defocuskit.io.images import encode_png

FORMAT = metadata.FORMAT  # shard format written into manifest.json ("format"); see the module docstring
MEMBERS = ("blur.png", "sharp.png", "coc.png", "cocsign.png", "blurmask.png", "left.png", "right.png", "json")
BLURMASK_BLURRED = 255  # blurmask.png: 255 = blurred (out of focus), 0 = in focus


def shard_name(split: str, group: int) -> str:
    """`train`, 3 -> `train-000003` (the shard file is this name plus `.tar`)."""
    return f"{split}-{group:06d}"


def f_number_key(f_number: Any) -> str:
    """The manifest's f-number key: the group eval reports it in (`eval.report.GROUPING`: rounded to one decimal,
    "2.8", "16.0"; to two below f/1, "0.95", so f/0.95 is not counted as f/0.9), or "none" when unknown (None, the
    stored -1, anything not a positive number)."""
    try:
        value = float(f_number)
    except (TypeError, ValueError):
        return "none"
    if not value > 0 or value == float("inf"):
        return "none"
    group = round(value, 2 if value < 1.0 else 1)
    return f"{group:.1f}" if group == round(group, 1) else f"{group:.2f}"


def json_default(obj: Any) -> Any:
    """`json.dumps`'s `default`: numpy arrays and scalars as lists and numbers, paths as text."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    """JSON text for metadata and records (numpy arrays and scalars allowed)."""
    return json.dumps(obj, default=json_default, sort_keys=False)


COC_PNG_MAX_PX = 65535 / COC_SCALE  # the largest CoC (px) coc.png holds: 255.996; a larger one would be stored as it


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


def f_sort_key(key: str) -> float:
    """Numeric order of f-number keys, "none" last."""
    return float("inf") if key == "none" else float(key)
