"""The samples a method that learns from sharp images alone reads: each distinct reference once per pass.

An aperture stack (VABD, EBB, `--raw-dir`, `ingest --render`, `--synthetic`) stores its scene's reference in every
one of its pairs and once more as the scene's sharp-only sample (a sample without blur.png): read sample by sample, a
stack of 5 apertures would show its scene 6 times per pass and a DPDD pair once. For a sharp-only method
(`Method.data` "sharp") the stream therefore keeps, within each shard folder (one ingest):
  * of a scene that has a sharp-only sample, that sample alone: its pairs are dropped. A scene is the metadata's
    (source, split, scene), and for a training patch (`--patch`) also its place (`patch_of`) and size, so that the
    patches of one image stay apart; samples whose metadata names no scene are their own;
  * of samples whose sharp.png bytes are the same (a stack written without a sharp-only sample, metadata without a
    scene), the first, a sharp-only one before a pair. Only sharp images of the same byte size are read and hashed.
Pairs whose references differ (DPDD, RealBlur's frames of one scene, different scenes) are all kept. Folders are
never compared with each other: a folder named twice in `data.train` is read twice a pass (how a recipe weights it),
and so are two folders holding the same photos. Remote shards (`pipe:`, `s3://`) are not read ahead: every sample
of theirs is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from defocuskit.data.tar_index import ShardEntry, is_local

SceneKey = tuple[str, ...]


@dataclass(frozen=True)
class References:
    """The samples kept per local shard (tar order), and how many of how many, over the distinct shards."""

    kept: dict[str, list[ShardEntry]]
    samples: int  # usable samples of the distinct local shards
    remote: int  # remote shards, every sample kept
    repeated: int = 0  # shards data.train names more than once (each listing read)

    @property
    def count(self) -> int:
        """The samples kept (each a distinct reference)."""
        return sum(len(v) for v in self.kept.values())

    def record(self) -> str:
        """"KEPT of SAMPLES", as a checkpoint's data position records it."""
        return f"{self.count} of {self.samples}"

    def line(self, method: str) -> str:
        """The train log's line: how many references were kept of how many samples."""
        remote = (f"; {self.remote} remote shard(s) not read ahead: every sample of theirs kept" if self.remote
                  else "")
        repeated = (f"; {self.repeated} shard(s) named more than once in data.train, read as often as named"
                    if self.repeated else "")
        return (f"{method} learns from sharp images alone: {self.count} distinct references kept of {self.samples} "
                f"samples (a stack's pairs share its scene's reference: each one once a pass){repeated}{remote}")


def scene_key(meta: Any) -> SceneKey | None:
    """(source, split, scene, where and how large a patch is) from a sample's metadata; None where it names none."""
    if not isinstance(meta, dict):
        return None
    named = [meta.get(k) for k in ("source", "split", "scene")]
    if not all(isinstance(v, str) and v for v in named):
        return None
    patch = meta.get("patch_of")
    place = [patch.get(k) for k in ("y", "x", "height", "width")] if isinstance(patch, dict) else None
    return (*named, json.dumps([place, meta.get("height"), meta.get("width")]))


def _member(f: Any, entry: ShardEntry, ext: str) -> bytes:
    offset, size = entry.members[ext]
    f.seek(offset)
    return f.read(size)


def _metadata(f: Any, entry: ShardEntry) -> Any:
    if "json" not in entry.members:
        return None
    try:
        return json.loads(_member(f, entry, "json"))
    except ValueError:  # unreadable metadata: the sample is judged by its bytes alone
        return None


def _folder_kept(urls: list[str], entries_of: Callable[[str], list[ShardEntry]]) -> dict[str, list[ShardEntry]]:
    """The samples of one folder's shards that are distinct references (see the module docstring)."""
    items: list[tuple[str, int, ShardEntry, SceneKey | None]] = []
    for url in urls:
        with open(url, "rb") as f:
            items += [(url, i, e, scene_key(_metadata(f, e))) for i, e in enumerate(entries_of(url))]
    has_reference = {scene for _, _, e, scene in items if scene is not None and "blur.png" not in e.members}
    left = [it for it in items if not (it[3] in has_reference and "blur.png" in it[2].members)]
    left.sort(key=lambda it: "blur.png" in it[2].members)  # stable: a sharp-only sample first, then tar order
    by_size: dict[int, list[tuple[str, int, ShardEntry, SceneKey | None]]] = defaultdict(list)
    kept: set[tuple[str, int]] = set()
    for it in left:
        if "sharp.png" in it[2].members:
            by_size[it[2].members["sharp.png"][1]].append(it)
        else:  # nothing to compare (a method whose members name no sharp.png): kept as it is
            kept.add((it[0], it[1]))
    for same in by_size.values():
        seen: set[bytes] = set()
        for url, i, entry, _ in same:
            if len(same) > 1:
                with open(url, "rb") as f:
                    digest = hashlib.sha256(_member(f, entry, "sharp.png")).digest()
                if digest in seen:
                    continue
                seen.add(digest)
            kept.add((url, i))
    return {url: [e for i, e in enumerate(entries_of(url)) if (url, i) in kept] for url in urls}


def distinct_references(urls: list[str], entries_of: Callable[[str], list[ShardEntry]]) -> References:
    """The distinct references among the usable samples (`entries_of(url)`, each with sharp.png) of `urls`, judged
    per shard folder; a shard listed more than once is judged once (each listing then reads what it keeps)."""
    distinct = list(dict.fromkeys(urls))
    folders: dict[str, list[str]] = defaultdict(list)
    for url in (u for u in distinct if is_local(u)):
        folders[os.path.dirname(os.path.abspath(url))].append(url)
    kept: dict[str, list[ShardEntry]] = {}
    for folder_urls in folders.values():
        kept.update(_folder_kept(folder_urls, entries_of))
    samples = sum(len(entries_of(u)) for u in kept)
    repeated = sum(1 for n in Counter(urls).values() if n > 1)
    return References(kept, samples, sum(1 for u in distinct if not is_local(u)), repeated)
