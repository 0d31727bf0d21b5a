"""What every reader of a tar shard checks while it groups the members into samples (`reader.iter_raw`,
`tar_index.index_shard`): a sample written twice (its key in two separate runs of members), one member twice in a
sample (`k.json` twice, or `k.json` and `k.JSON`, which WebDataset both reads as the `json` member), and a shard
whose sample count differs from the one its folder's manifest.json lists for it; and, before any of its samples is
read (`size_wrong`), a shard whose size differs from the one the manifest lists ("bytes"): a tar cut short at a
member's header is a valid, shorter tar, whose last sample lacks members or whose last samples are gone.

Each check gives the one line to raise (a `reader.ShardError`), or None; a tar the manifest does not list (the
user's, beside the shards), a shard without a manifest beside it and a manifest entry without the number (written
before it was recorded, or by hand) are not checked.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from typing import Any

MANIFEST = "manifest.json"

_Listed = dict[str, dict[str, int]]  # {shard: {"samples": n, "bytes": n}}, the counts a manifest lists for it
_LISTED: dict[str, tuple[tuple[int, int, int], _Listed]] = {}  # manifest path -> (its stat, what it lists)


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
    return _listed(url).get("samples")


def listed_bytes(url: str) -> int | None:
    """The size in bytes the manifest.json beside local shard `url` lists for it (as the run that wrote it left it);
    None where there is no readable manifest, it does not list the shard, or gives it no size."""
    return _listed(url).get("bytes")


def size_wrong(url: str) -> str | None:
    """The line saying that local shard `url` is not of the size the manifest beside it lists (cut short, grown or
    replaced since it was written), else None (also where the manifest gives no size, or the shard is not there or
    not a regular file: reading it says so)."""
    listed = listed_bytes(url)
    if listed is None:
        return None
    try:
        st = os.stat(url)
    except OSError:
        return None
    if st.st_size == listed or not stat.S_ISREG(st.st_mode):
        return None
    what = "cut short or changed" if st.st_size < listed else "grown or replaced"
    manifest = os.path.join(os.path.dirname(url), MANIFEST)
    return (f"{url}: {st.st_size} bytes, but {manifest} records {listed} for it: the shard was {what} after it was "
            "written; run the command that wrote the folder again (it writes the shard anew)")


def damaged_shard(url: str, exc: BaseException) -> str:
    """One line for a shard that cannot be read as a tar: a damaged shard of an ingest's, or (a file no manifest
    beside it lists) not a shard."""
    if isinstance(exc, FileNotFoundError):
        return f"{url}: shard missing (listed, but not on disk)"
    size = os.path.getsize(url) if os.path.isfile(url) else None
    reason = " ".join(str(exc).split()).split(" - method")[0].rstrip(":")  # tarfile lists each method it tried
    what = "an empty file (0 bytes)" if size == 0 else f"not a complete tar file ({reason})"
    if size and not is_listed(url):  # a file the user named that no ingest wrote: rerunning one would not help
        what = what if _tar_header(url) else "not a tar file (it begins with no tar header)"
        return f"{url}: not a shard: {what}; shards are the tar files `defocuskit ingest` writes"
    return f"{url}: damaged shard: {what}; run the command that wrote the folder again (it writes the shard anew)"


def _tar_header(url: str) -> bool:
    """Whether the file at `url` begins with a tar header."""
    try:
        with open(url, "rb") as f:
            tarfile.TarInfo.frombuf(f.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
    except (OSError, tarfile.TarError):
        return False
    return True


def is_listed(url: str) -> bool:
    """Whether the manifest.json beside local shard `url` lists it (a shard an ingest wrote there)."""
    return os.path.basename(url) in _listing(url)


def _listed(url: str) -> dict[str, int]:
    """What the manifest.json beside local shard `url` lists for it ({} where nothing)."""
    return _listing(url).get(os.path.basename(url), {})


def _listing(url: str) -> _Listed:
    """What the manifest.json beside local shard `url` lists ({} where there is none it can read)."""
    if url.startswith("pipe:") or "://" in url:
        return {}
    path = os.path.join(os.path.dirname(url), MANIFEST)
    try:
        st = os.stat(path)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _LISTED.get(path)
        if cached is None or cached[0] != stamp:
            with open(path, encoding="utf-8") as f:
                cached = _LISTED[path] = (stamp, _counts(json.load(f)))
    except (OSError, ValueError):
        return {}
    return cached[1]


def _counts(manifest: Any) -> _Listed:
    """{shard name: {"samples": n, "bytes": n}} of the shards a parsed manifest lists (each number where it gives
    one)."""
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    counts: _Listed = {}
    for entry in shards if isinstance(shards, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"] not in counts:
            counts[entry["name"]] = {k: v for k in ("samples", "bytes") if is_count(v := entry.get(k))}
    return counts


def is_count(value: Any) -> bool:
    """Whether a manifest's count (samples, bytes) is a whole number of at least 0 (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
