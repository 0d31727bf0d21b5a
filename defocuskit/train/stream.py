"""The endless, deterministic training sample stream of one process, seekable to any batch in O(1).

How the stream is split, so that processes see disjoint samples:
  * at least as many shards as processes: each process reads its own shards (`urls[rank::world_size]`,
    what `webdataset.split_by_node` does, with the rank given explicitly);
  * fewer shards than processes: every process reads all shards in the same order and keeps every
    `world_size`-th usable sample of each epoch (by position), so the processes still see disjoint samples.
Within a process the shards are split among the DataLoader workers like `webdataset.split_by_worker`;
a process never starts more workers than it has shards (a worker without shards would stall the
DataLoader's round-robin). Samples without the members the method needs are skipped.

A worker's *sequential* stream is a sequence of epochs. Epoch e visits the worker's shards in an order
drawn from an RNG seeded by (seed, rank, worker, e): a permutation (`data.resampled: false`) or
len(shards) draws with replacement (`data.resampled: true`, webdataset's resampled shards), and every
usable sample of each shard in tar order. Shuffling is a block shuffle: the n-th delivered sample is
sequential sample B*(n // B) + pi_k(n mod B), with pi_k a permutation seeded by (seed, rank, worker, k)
and B = `data.shuffle_buffer` (the same memory as webdataset's shuffle buffer, and the same locality).

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
        if len(urls) >= world_size:
            self.urls, self.sample_stride, self.sample_offset = list(urls[rank::world_size]), 1, 0
            self.order_rank = rank
        else:  # every process reads every shard, in the same order, and keeps its share of samples
            self.urls, self.sample_stride, self.sample_offset = list(urls), world_size, rank
            self.order_rank = -1
        self.rank, self.world_size = rank, world_size
        self.num_workers = max(0, min(cfg.num_workers, len(self.urls)))
        self.block = max(1, cfg.shuffle_buffer)
        self._usable: dict[str, list[ShardEntry]] = {}
        self._stamps: dict[str, tuple[int, int]] = {}  # (size, mtime) of each local shard when it was indexed

    # ----------------------------------------------------------------------------- sequential stream

    def usable(self, url: str) -> list[ShardEntry]:
        """The samples of shard `url` that have the members the method needs (indexed once, cached)."""
        if url not in self._usable:
            stamp = _stamp(url) if is_local(url) else None
            self._usable[url] = [e for e in index_shard(url) if has_members(e, self.needed)]
            if stamp is not None:
                self._stamps[url] = stamp
        return self._usable[url]

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

    def _order(self, urls: list[str], worker: int, epoch: int) -> list[str]:
        rng = random.Random(_seed(self.seed, self.order_rank, worker, epoch, 1))
        if self.cfg.resampled:
            return [rng.choice(urls) for _ in urls]
        order = list(urls)
        rng.shuffle(order)
        return order

    def _epoch_kept(self, order: list[str]) -> int:
        return _kept(0, sum(len(self.usable(u)) for u in order), self.sample_stride, self.sample_offset)

    def _no_sample(self, urls: list[str], worker: int) -> ValueError:
        return ValueError(
            f"data.train: no sample with {describe(self.needed)} in shards {urls[:3]}"
            f"{' ...' if len(urls) > 3 else ''} (process {self.rank}, worker {worker})"
        )

    def locate(self, urls: list[str], worker: int, r: int) -> tuple[int, int, int, int]:
        """Sequential sample r of a worker -> (epoch, shard position in the epoch's order, sample index in
        the shard's usable samples, epoch position of that shard's first usable sample)."""
        if self._epoch_kept(sorted(set(urls))) == 0:
            raise self._no_sample(urls, worker)
        if not self.cfg.resampled:  # every epoch visits every shard once: the same count per epoch
            epoch, r = divmod(r, self._epoch_kept(urls))
        else:
            epoch, empty = 0, 0
            while r >= (kept := self._epoch_kept(self._order(urls, worker, epoch))):
                r -= kept
                epoch += 1
                empty = empty + 1 if kept == 0 else 0
                if empty > _MAX_EMPTY_EPOCHS:
                    raise self._no_sample(urls, worker)
        start = 0
        for i, url in enumerate(self._order(urls, worker, epoch)):
            n = len(self.usable(url))
            kept = _kept(start, start + n, self.sample_stride, self.sample_offset)
            if r < kept:
                first = start + (self.sample_offset - start) % self.sample_stride
                return epoch, i, first - start + r * self.sample_stride, start
            r -= kept
            start += n
        raise AssertionError("unreachable: r lies within the epoch")

    def sequential(self, urls: list[str], worker: int, r: int = 0) -> Iterator[dict[str, Any]]:
        """Raw samples of a worker's sequential stream from sample r on (seeking, not reading, to r)."""
        epoch, i, j, start = self.locate(urls, worker, r)
        while True:
            for url in self._order(urls, worker, epoch)[i:]:
                entries = self.usable(url)
                first = j + (self.sample_offset - start - j) % self.sample_stride
                yield from self._read(url, entries[first::self.sample_stride])
                start += len(entries)
                j = 0
            epoch, i, start = epoch + 1, 0, 0

    # ----------------------------------------------------------------------------------- delivered

    def _worker_urls(self, worker: int, nworkers: int) -> list[str]:
        return self.urls[worker::nworkers]

    def delivered_before(self, batch: int, worker: int, nworkers: int) -> int:
        """Samples worker `worker` delivered before the process's batch `batch` (round-robin batches)."""
        return max(0, -(-(batch - worker) // nworkers)) * self.cfg.batch_size

    def position(self, batch: int) -> dict[str, Any]:
        """Where each worker's stream stands before batch `batch`: a JSON-able record for checkpoints."""
        nworkers = max(1, self.num_workers)
        workers = []
        for w in range(nworkers):
            urls = self._worker_urls(w, nworkers)
            n = self.delivered_before(batch, w, nworkers)
            epoch, i, j, _ = self.locate(urls, w, self.block * (n // self.block))
            workers.append({"worker": w, "delivered": n, "epoch": epoch, "shard_index": i,
                            "shard": os.path.basename(self._order(urls, w, epoch)[i]), "offset": j,
                            "in_block": n % self.block})
        return {"batch": batch, "rank": self.rank, "world_size": self.world_size, "num_workers": self.num_workers,
                "shuffle_block": self.block, "shards": shard_digest(self.urls), "workers": workers}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        nworkers = 1 if info is None else info.num_workers
        # the DataLoader asks its worker 0 first: it serves batch start_batch, which worker
        # start_batch % nworkers served in the uninterrupted run
        worker = 0 if info is None else (info.id + self.start_batch) % nworkers
        urls = self._worker_urls(worker, nworkers)
        n = self.delivered_before(self.start_batch, worker, nworkers)
        k, m = divmod(n, self.block)
        raw = self.sequential(urls, worker, k * self.block)
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
