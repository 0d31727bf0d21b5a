"""The endless, deterministic training sample stream of one process, seekable to any batch in O(1).

How the stream is split among its readers (every DataLoader worker of every process; a process without workers is
one reader), so that they see disjoint samples and every usable sample is drawn equally often:
  * by shards (`split` "shards"): each process reads its own shards (`urls[rank::world_size]`, what
    `webdataset.split_by_node` does, with the rank given explicitly), and each of its workers its own of those
    (`webdataset.split_by_worker`). Used where that gives every reader the same number of usable samples per worker
    of its process (then every reader's epoch takes as long), and for remote shards (only ever streamed);
  * by samples (`split` "samples"), everywhere else: every reader reads all shards in the same order and keeps every
    `readers`-th usable sample of each epoch (by position). Readers' own shards of unequal sizes (a folder's short
    last shard) would make the samples of the smaller ones come round more often: two samples of a last shard on
    a worker of their own were half of every batch.
A process never starts more workers than it has shards, nor, by samples, than its share of the samples (a worker
without any would stall the DataLoader's round-robin). Samples without the members the method needs are skipped; a
method that learns from sharp images alone (kind "sharp") reads each distinct reference once (`train.references`:
a stack's pairs and its sharp-only sample share one), judged before the split.

A reader's *sequential* stream is a sequence of epochs. Epoch e visits the reader's shards in an order
drawn from an RNG seeded by (seed, rank, worker, e) (by samples: the same order for every reader): a permutation
(`data.resampled: false`) or len(shards) draws with replacement (`data.resampled: true`, webdataset's resampled
shards), and every usable sample of each shard in tar order (by samples: the reader's share of them).
Shuffling is a block shuffle: the n-th delivered sample is sequential sample B*(n // B) + pi_k(n mod B), with pi_k
a permutation seeded by (seed, rank, worker, k) and B = `data.shuffle_buffer` (the same memory as webdataset's
shuffle buffer, and the same locality).

Seeking: the sample counts of the shards come from their tar headers (`defocuskit.data.tar_index`),
so the position of delivered sample n -- (epoch, shard in the epoch's order, sample within the shard) --
is arithmetic, and the stream starts there by seeking, reading no earlier sample. A resumed run
therefore starts at once at any step and continues the exact stream of the uninterrupted run.
Batch b of a process comes from (logical) worker b % num_workers: the DataLoader's round-robin, with the
workers' roles rotated when a run starts at a batch that is not a multiple of num_workers.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from defocuskit.config.recipe import DataConfig
from defocuskit.data.reader import ShardError, decode_sample, where
from defocuskit.data.tar_index import ShardEntry, index_shard, is_local, read_samples
from defocuskit.methods.base import MEMBERS, DataKind, Requirement
from defocuskit.train.augment import to_tensors
from defocuskit.train.references import References, distinct_references

_MAX_EMPTY_EPOCHS = 10_000  # resampled epochs in a row that draw no usable sample before giving up


def has_members(entry: ShardEntry, needed: Requirement) -> bool:
    """Whether a sample has every member of `needed` (one of the alternatives where an entry is a tuple)."""
    return all(any(m in entry.members for m in alts) if isinstance(alts, tuple) else alts in entry.members
               for alts in needed)


def describe(needed: Requirement) -> str:
    """`needed` in words: "blur.png + (coc.png or blurmask.png)"."""
    return " + ".join(f"({' or '.join(m)})" if isinstance(m, tuple) else m for m in needed)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def _kept(start: int, stop: int, stride: int, offset: int) -> int:
    """How many positions p in [start, stop) have p % stride == offset."""
    def upto(n: int) -> int:  # count in [0, n)
        return 0 if n <= offset else (n - offset - 1) // stride + 1
    return upto(stop) - upto(start)


def even_shard_split(counts: list[int], world_size: int, num_workers: int) -> bool:
    """Whether splitting shards of `counts` usable samples by process, then by DataLoader worker, gives every
    reader the same epoch length in batches of its process (its samples times its process's workers)."""
    if len(counts) < world_size:
        return False
    lengths = set()
    for rank in range(world_size):
        mine = counts[rank::world_size]
        workers = max(1, min(num_workers, len(mine)))
        lengths.update(workers * sum(mine[w::workers]) for w in range(workers))
    return len(lengths) == 1


@dataclass(frozen=True)
class Share:
    """What one reader reads: its shards, and of their usable samples in epoch order the positions p with
    p % stride == offset; `order`: the (rank, worker) that seed its epochs' shard order."""

    urls: list[str]
    stride: int
    offset: int
    order: tuple[int, int]
    worker: int


class ShardStream(IterableDataset):
    """The sample stream of one process (see the module docstring), as the method's tensors."""

    def __init__(self, urls: list[str], cfg: DataConfig, kind: DataKind, seed: int, rank: int, world_size: int,
                 start_batch: int = 0, needed: Requirement | None = None, views: bool = False):
        super().__init__()
        if cfg.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {cfg.channels}")
        self.cfg, self.kind, self.seed, self.start_batch = cfg, kind, seed, start_batch
        self.needed = MEMBERS[kind] if needed is None else needed  # the method's required members
        self.views = views  # Method.views: hand on the dual-pixel views (zeros where a sample has none)
        self.rank, self.world_size = rank, world_size
        self.block = max(1, cfg.shuffle_buffer)
        self._usable: dict[str, list[ShardEntry]] = {}
        self._members: dict[str, list[ShardEntry]] = {}
        self._stamps: dict[str, tuple[int, int]] = {}  # (size, mtime) of each local shard when it was indexed
        self.all_urls = list(urls)
        self.references: References | None = None  # kind "sharp": the distinct references kept
        if kind == "sharp":
            self.references = distinct_references(self.all_urls, self._with_members)
            self._usable.update(self.references.kept)
        self.split = self._choose_split(list(urls))
        # by samples every process reads every shard, in the same order, and keeps its readers' share of samples
        self.urls = list(urls[rank::world_size]) if self.split == "shards" else list(urls)
        self.num_workers = max(0, min(cfg.num_workers, len(self.urls)))
        if self.split == "samples" and self.num_workers > 1 and all(is_local(u) for u in self.urls):
            samples = sum(len(self.usable(u)) for u in self.urls)  # no more readers than samples to share
            self.num_workers = max(1, min(self.num_workers, samples // world_size))

    def _choose_split(self, urls: list[str]) -> str:
        """"shards" or "samples" (see the module docstring); local shards are indexed to count their samples."""
        if len(urls) < self.world_size:
            return "samples"
        if not all(is_local(u) for u in urls):  # counting a remote shard's samples would stream all of it
            return "shards"
        counts = [len(self.usable(u)) for u in urls]
        return "shards" if even_shard_split(counts, self.world_size, self.cfg.num_workers) else "samples"

    def share(self, worker: int, nworkers: int) -> Share:
        """What worker `worker` of this process's `nworkers` reads (nworkers 1: the process itself)."""
        if self.split == "shards":
            return Share(self.urls[worker::nworkers], 1, 0, (self.rank, worker), worker)
        readers = self.world_size * nworkers
        return Share(self.urls, readers, self.rank * nworkers + worker, (-1, 0), worker)

    def former_split(self) -> str:
        """The split of these shards before checkpoints recorded it (what a data position without `split` used):
        by shards where there were at least as many as processes, else by samples (the same as today's with at most
        one worker; with more, each worker read its own of the shards)."""
        if self.split == "shards" or len(self.urls) >= self.world_size:
            return "shards"
        return "samples" if self.num_workers <= 1 else "samples, each worker its own shards"

    def same_shards(self, saved: dict[str, Any]) -> bool:
        """Whether the main process's position record `saved` was written for these shards, whatever the number of
        processes that read them then (its `shards` digests the main process's share, which that number sets)."""
        if "all_shards" in saved:
            return saved["all_shards"] == shard_digest(self.all_urls)
        world, split = saved.get("world_size"), saved.get("split")  # an older record: its main process's share
        share = self.all_urls[0::world] if split == "shards" and isinstance(world, int) and world >= 1 else None
        return saved.get("shards") in (shard_digest(self.urls), shard_digest(share if share else self.all_urls))

    # ----------------------------------------------------------------------------- sequential stream

    def usable(self, url: str) -> list[ShardEntry]:
        """The samples of shard `url` that the method reads: those with the members it needs (indexed once, cached),
        for kind "sharp" the distinct references among them."""
        if url not in self._usable:
            self._usable[url] = self._with_members(url)
        return self._usable[url]

    def _with_members(self, url: str) -> list[ShardEntry]:
        """The samples of shard `url` that have the members the method needs (indexed once, cached)."""
        if url not in self._members:
            stamp = _stamp(url) if is_local(url) else None
            self._members[url] = [e for e in index_shard(url) if has_members(e, self.needed)]
            if stamp is not None:
                self._stamps[url] = stamp
        return self._members[url]

    def _read(self, url: str, entries: list[ShardEntry]) -> Iterator[dict[str, Any]]:
        """`read_samples`, after checking that a local shard is still the one indexed: a ShardError naming it
        where it was removed or rewritten since (an ingest re-planning the folder while this run reads it)."""
        if url in self._stamps:
            try:
                changed = _stamp(url) != self._stamps[url]
            except FileNotFoundError:
                raise ShardError(_moved(url, "removed")) from None
            if changed:
                raise ShardError(_moved(url, "rewritten"))
        try:
            yield from read_samples(url, entries)
        except FileNotFoundError:
            raise ShardError(_moved(url, "removed")) from None

    def _order(self, share: Share, epoch: int) -> list[str]:
        rng = random.Random(_seed(self.seed, *share.order, epoch, 1))
        if self.cfg.resampled:
            return [rng.choice(share.urls) for _ in share.urls]
        order = list(share.urls)
        rng.shuffle(order)
        return order

    def _epoch_kept(self, share: Share, order: list[str]) -> int:
        return _kept(0, sum(len(self.usable(u)) for u in order), share.stride, share.offset)

    def _no_sample(self, share: Share) -> ValueError:
        urls, refs = share.urls, self.references
        deduped = (f"; {refs.record()} samples kept, one per distinct sharp reference, for {self.world_size} "
                   "process(es)" if refs is not None and refs.count < refs.samples else "")
        return ValueError(
            f"data.train: no sample with {describe(self.needed)} in shards {urls[:3]}"
            f"{' ...' if len(urls) > 3 else ''} (process {self.rank}, worker {share.worker}{deduped})"
        )

    def locate(self, share: Share, r: int) -> tuple[int, int, int, int]:
        """Sequential sample r of a reader -> (epoch, shard position in the epoch's order, sample index in
        the shard's usable samples, epoch position of that shard's first usable sample)."""
        if self._epoch_kept(share, sorted(set(share.urls))) == 0:
            raise self._no_sample(share)
        if not self.cfg.resampled:  # every epoch visits every shard once: the same count per epoch
            epoch, r = divmod(r, self._epoch_kept(share, share.urls))
        else:
            epoch, empty = 0, 0
            while r >= (kept := self._epoch_kept(share, self._order(share, epoch))):
                r -= kept
                epoch += 1
                empty = empty + 1 if kept == 0 else 0
                if empty > _MAX_EMPTY_EPOCHS:
                    raise self._no_sample(share)
        start = 0
        for i, url in enumerate(self._order(share, epoch)):
            n = len(self.usable(url))
            kept = _kept(start, start + n, share.stride, share.offset)
            if r < kept:
                first = start + (share.offset - start) % share.stride
                return epoch, i, first - start + r * share.stride, start
            r -= kept
            start += n
        raise AssertionError("unreachable: r lies within the epoch")

    def sequential(self, share: Share, r: int = 0) -> Iterator[dict[str, Any]]:
        """Raw samples of a reader's sequential stream from sample r on (seeking, not reading, to r)."""
        epoch, i, j, start = self.locate(share, r)
        while True:
            for url in self._order(share, epoch)[i:]:
                entries = self.usable(url)
                first = j + (share.offset - start - j) % share.stride
                yield from self._read(url, entries[first::share.stride])
                start += len(entries)
                j = 0
            epoch, i, start = epoch + 1, 0, 0

    # ----------------------------------------------------------------------------------- delivered

    def delivered_before(self, batch: int, worker: int, nworkers: int) -> int:
        """Samples worker `worker` delivered before the process's batch `batch` (round-robin batches)."""
        return max(0, -(-(batch - worker) // nworkers)) * self.cfg.batch_size

    def position(self, batch: int) -> dict[str, Any]:
        """Where each worker's stream stands before batch `batch`: a JSON-able record for checkpoints."""
        nworkers = max(1, self.num_workers)
        workers = []
        for w in range(nworkers):
            share = self.share(w, nworkers)
            n = self.delivered_before(batch, w, nworkers)
            epoch, i, j, _ = self.locate(share, self.block * (n // self.block))
            workers.append({"worker": w, "delivered": n, "epoch": epoch, "shard_index": i,
                            "shard": os.path.basename(self._order(share, epoch)[i]), "offset": j,
                            "in_block": n % self.block})
        return {"batch": batch, "rank": self.rank, "world_size": self.world_size, "num_workers": self.num_workers,
                "shuffle_block": self.block, "split": self.split, "shards": shard_digest(self.urls),
                "all_shards": shard_digest(self.all_urls),  # every process's: `shards` is this process's share
                "workers": workers, **({"references": self.references.record()} if self.references else {})}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        nworkers = 1 if info is None else info.num_workers
        # the DataLoader asks its worker 0 first: it serves batch start_batch, which worker
        # start_batch % nworkers served in the uninterrupted run
        worker = 0 if info is None else (info.id + self.start_batch) % nworkers
        n = self.delivered_before(self.start_batch, worker, nworkers)
        k, m = divmod(n, self.block)
        raw = self.sequential(self.share(worker, nworkers), k * self.block)
        while True:
            block = list(islice(raw, self.block))
            perm = list(range(self.block))
            random.Random(_seed(self.seed, self.rank, worker, k, 2)).shuffle(perm)
            for m in range(m, self.block):
                n = k * self.block + m
                rng = np.random.default_rng(_seed(self.seed, self.rank, worker, n, 3))
                raw_sample = block[perm[m]]
                try:
                    item = to_tensors(decode_sample(raw_sample), self.kind, self.cfg, rng, self.views)
                except ValueError as exc:  # members that do not fit together (sizes): name the shard and sample
                    raise ShardError(f"{where(raw_sample)}sample {raw_sample.get('__key__')}: {exc}") from None
                yield item
            k, m = k + 1, 0


def _stamp(url: str) -> tuple[int, int]:
    st = os.stat(url)
    return st.st_size, st.st_mtime_ns


def _moved(url: str, how: str) -> str:
    folder = os.path.dirname(url) or "."
    return (f"{url}: {how} while this run was reading it (a `defocuskit ingest` writing {folder}?); the checkpoints "
            "are kept: run the same command again once the shards are final")


def shard_digest(urls: list[str]) -> str:
    """A short digest of a shard list (names, sizes and modification times of local files)."""
    h = hashlib.sha256()
    for url in urls:
        h.update(url.encode())
        try:
            st = os.stat(url)
            h.update(f":{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            pass
        h.update(b"\n")
    return h.hexdigest()[:16]
