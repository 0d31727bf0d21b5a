"""Random access into tar shards: each sample's member byte ranges, read from the tar headers alone.

A sample is what WebDataset groups: consecutive members whose names share the part before the first
dot of the base name (`a/b/key.sharp.png` and `a/b/key.json` are sample `a/b/key`). For a local,
uncompressed tar the index is built by seeking from header to header (no image bytes are read), and a
sample is then read with one seek per member: a training stream can start at any sample of any shard
in constant time. Remote shards (`pipe:`, `s3://`, ...) cannot seek: they are streamed, and starting
inside one costs reading that one shard up to the start.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from defocuskit.data.tar_checks import SampleRuns, size_wrong


@dataclass(frozen=True)
class ShardEntry:
    """One sample of a shard: its key and, per member extension, (byte offset of the data, size)."""

    key: str
    members: dict[str, tuple[int, int]]

    def has(self, needed: tuple[str, ...]) -> bool:
        """Whether the sample has every member in `needed` (e.g. ("sharp.png", "blur.png"))."""
        return all(m in self.members for m in needed)


def is_local(url: str) -> bool:
    """A path on this machine (seekable), as opposed to a `pipe:` or `scheme://` shard URL."""
    return not (url.startswith("pipe:") or "://" in url)


def _split_name(name: str) -> tuple[str, str] | None:
    base = os.path.basename(name)
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return os.path.join(os.path.dirname(name), stem), ext


def _group(infos: Iterator[tarfile.TarInfo], url: str = "") -> Iterator[ShardEntry]:
    from defocuskit.data.reader import ShardError, not_a_file_member

    key, members = None, {}
    runs = SampleRuns(url)  # a sample written twice, a member twice in one, a count the manifest does not list
    for info in infos:
        if (wrong := not_a_file_member(info)) is not None:
            raise ShardError(f"{url}: {wrong}")
        if not info.isfile() or (split := _split_name(info.name)) is None:
            continue
        if (wrong := runs.add(info.name, *split)) is not None:
            raise ShardError(wrong)
        if key is not None and split[0] != key:
            yield ShardEntry(key, members)
            members = {}
        key = split[0]
        members[split[1]] = (info.offset_data, info.size)
    if key is not None:
        yield ShardEntry(key, members)
    if (wrong := runs.end()) is not None:
        raise ShardError(wrong)


def index_shard(url: str) -> list[ShardEntry]:
    """Every sample of a tar shard, in tar order, with its members' byte ranges (ShardError naming a
    local shard that is not a complete tar, and what `tar_checks` refuses: a sample written twice or holding a
    member twice, a sample count or a local shard's size that is not the one the manifest lists)."""
    if is_local(url):
        from defocuskit.data.reader import ShardError, check_regular
        from defocuskit.data.tar_checks import damaged_shard

        try:
            check_regular(url)
            if (wrong := size_wrong(url)) is not None:
                raise ShardError(wrong)
            with tarfile.open(url, "r:") as tar:  # plain tar: TarFile.next() seeks past each member's data
                return list(_group(iter(tar), url))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ShardError(damaged_shard(url, exc)) from None
    import webdataset as wds

    stream = wds.gopen(url, "rb")
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return list(_group(iter(tar), url))
    finally:
        stream.close()


def read_samples(url: str, entries: list[ShardEntry]) -> Iterator[dict[str, Any]]:
    """The raw samples (`__key__`, `__url__`, member bytes) of `entries`, a subsequence of the shard's index.

    Local shards seek to each member; remote shards are streamed and the other samples skipped.
    """
    if not entries:
        return
    if is_local(url):
        with open(url, "rb") as f:
            for entry in entries:
                sample: dict[str, Any] = {"__key__": entry.key, "__url__": url}
                for ext, (offset, size) in entry.members.items():
                    f.seek(offset)
                    sample[ext] = f.read(size)
                yield sample
        return
    import webdataset as wds

    wanted = {e.key for e in entries}
    remaining = len(wanted)
    for raw in wds.tarfile_to_samples(handler=wds.reraise_exception)([{"url": url}]):
        if raw["__key__"] in wanted:
            yield raw
            remaining -= 1
            if remaining == 0:
                return
