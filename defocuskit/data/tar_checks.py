"""What every reader of a tar shard checks while it groups the members into samples (`reader.iter_raw`,
`tar_index.index_shard`): a sample written twice (its key in two separate runs of members), one member twice in a
sample (`k.json` twice, or `k.json` and `k.JSON`, which WebDataset both reads as the `json` member), and a shard
whose sample count differs from the one its folder's manifest.json lists for it.

Each check gives the one line to raise (a `reader.ShardError`), or None; a tar the manifest does not list (the
user's, beside the shards) and a shard without a manifest beside it are not counted.
"""

from __future__ import annotations

import json
import os
from typing import Any

MANIFEST = "manifest.json"

_LISTED: dict[str, tuple[tuple[int, int, int], dict[str, int]]] = {}  # manifest path -> (stat, {shard: samples})


class SampleRuns:
    """The samples of one shard as its members arrive in tar order: each member is `add`ed, then `end` the tar."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples = 0
        self._key: str | None = None
        self._members: dict[str, str] = {}  # this sample's members: extension (lower case) -> member name
        self._done: set[str] = set()  # the keys of the earlier samples

    def add(self, name: str, key: str, ext: str) -> str | None:
        """Member `name` of sample `key` (its extension `ext`: "blur.png") is next in the tar: the line saying what
        is wrong (the sample was written before, or already has such a member), else None."""
        if key != self._key:
            if self._key is not None:
                self._done.add(self._key)
            if key in self._done:
                return (f"{self.url}: sample {key}: written twice (a second run of its members starts at member "
                        f"{name!r}); a shard holds each sample once, its members together")
            self._key, self._members = key, {}
            self.samples += 1
        low = ext.lower()
        if low in self._members:
            what = "json members (its metadata)" if low == "json" else f"{low} members"
            return (f"{self.url}: sample {key}: two {what}, {self._members[low]!r} and {name!r}; a sample holds "
                    "each member once")
        self._members[low] = name
        return None

    def end(self) -> str | None:
        """The tar is read: the line saying that the manifest beside it lists another sample count for it, else
        None."""
        listed = listed_samples(self.url)
        if listed is None or listed == self.samples:
            return None
        manifest = os.path.join(os.path.dirname(self.url), MANIFEST)
        return (f"{manifest}: lists {os.path.basename(self.url)} with {listed} samples, but {self.url} holds "
                f"{self.samples}: the shard or the manifest changed after they were written; remove the shard and "
                "run the command that wrote the folder again")


def listed_samples(url: str) -> int | None:
    """The sample count the manifest.json beside local shard `url` lists for it; None where there is no readable
    manifest, it does not list the shard, or gives it no count."""
    if url.startswith("pipe:") or "://" in url:
        return None
    path = os.path.join(os.path.dirname(url), MANIFEST)
    try:
        st = os.stat(path)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _LISTED.get(path)
        if cached is None or cached[0] != stamp:
            with open(path, encoding="utf-8") as f:
                cached = _LISTED[path] = (stamp, _counts(json.load(f)))
    except (OSError, ValueError):
        return None
    return cached[1].get(os.path.basename(url))


def _counts(manifest: Any) -> dict[str, int]:
    """{shard name: samples} of the shards a parsed manifest lists with a count."""
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    counts: dict[str, int] = {}
    for entry in shards if isinstance(shards, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            samples = entry.get("samples")
            if isinstance(samples, int) and not isinstance(samples, bool) and samples >= 0:
                counts.setdefault(entry["name"], samples)
    return counts
