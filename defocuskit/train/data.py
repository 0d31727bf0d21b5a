"""Training batches from WebDataset shards: deterministic per (seed, rank, worker), resumable at any step.

How the stream is split, so that processes see disjoint samples:
  * at least as many shards as processes: each process reads its own shards (`urls[rank::world_size]`,
    what `webdataset.split_by_node` does, with the rank given explicitly);
  * fewer shards than processes: every process reads all shards in the same order and keeps every
    `world_size`-th sample (by position), so the processes still see disjoint samples.
Within a process the shards are split among the DataLoader workers like `webdataset.split_by_worker`;
a process never starts more workers than it has shards (a worker without shards would stall the
DataLoader's round-robin). With `data.resampled` each worker draws its shards at random, with
replacement, from its own subset (an endless stream); otherwise it goes through its shards epoch by
epoch, reshuffling their order each epoch. The stream never ends either way.

Determinism: shard order and the shuffle buffer use RNGs seeded from (seed, rank, worker); the crop and
augmentation of the n-th sample of a worker use an RNG seeded from (seed, rank, worker, n). Batch b of a
process comes from worker b % num_workers (DataLoader round-robin), so a run resumed at batch b skips,
in each worker, the samples that worker had delivered -- before decoding them -- and continues the
exact stream of the uninterrupted run.

Crops: a random `image_size` crop at the same place in every member (sharp, blur, coc); images smaller
than the crop are first padded by reflection (numpy's "reflect") to the crop size, never dropped.
Augmentation: one of the 8 flips/90-degree rotations, the same for every member.
Values: uint8 / 255 and uint16 / 65535 to float32 in [0, 1]; `data.channels: 1` gives luminance with
the ITU-R BT.601 weights (0.299, 0.587, 0.114), what OpenCV's and PIL's grayscale conversions use.
"""

from __future__ import annotations

import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from defocuskit.data.shards import decode_sample, shard_urls
from defocuskit.images import to_float
from defocuskit.methods.base import DataKind, Method
from defocuskit.train.recipe import DataConfig, Recipe

BT601 = np.array([0.299, 0.587, 0.114], np.float32)
# members a sample needs for each kind of method
REQUIRED = {"sharp": ("sharp.png",), "paired": ("sharp.png", "blur.png"), "coc": ("sharp.png", "blur.png", "coc.png")}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def train_urls(cfg: DataConfig) -> list[str]:
    """The training shards `data.train` names (a folder means its `train` split); an error if none."""
    spec = cfg.train
    split = "train" if Path(spec).is_dir() else None
    try:
        return shard_urls(spec, split)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"data.train: {e}") from None


def _has_members(url: str, members: tuple[str, ...]) -> bool:
    """Whether any sample of a local tar shard has all of `members` (reads tar headers only)."""
    seen: dict[str, set[str]] = {}
    with tarfile.open(url, "r") as tar:
        for info in tar:
            base = os.path.basename(info.name)
            if "." not in base:
                continue
            stem, ext = base.split(".", 1)
            key = os.path.join(os.path.dirname(info.name), stem)
            exts = seen.setdefault(key, set())
            exts.add(ext)
            if all(m in exts for m in members):
                return True
    return False


def check_data(recipe: Recipe, method: Method) -> list[str]:
    """The shard list, after checking that it exists and holds what the method needs (before any work)."""
    urls = train_urls(recipe.data)
    needed = REQUIRED[method.data]
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"data.train: shard not found: {missing[0]}")
    if local and not any(_has_members(u, needed) for u in local):
        raise ValueError(
            f"data.train: the shards of '{recipe.data.train}' have no sample with {' + '.join(needed)}, "
            f"which method '{method.name}' (data: {method.data}) needs"
        )
    return urls


def _pad_to(arr: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - arr.shape[0]), max(0, size - arr.shape[1])
    if ph == 0 and pw == 0:
        return arr
    pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="reflect" if min(arr.shape[:2]) > 1 else "edge")


def crop_and_augment(
    images: dict[str, np.ndarray], size: int, augment: bool, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The same random `size` crop (reflect-padded if smaller) and dihedral transform for every member."""
    shapes = {v.shape[:2] for v in images.values()}
    if len(shapes) != 1:
        raise ValueError(f"members differ in size: {sorted(shapes)}")
    images = {k: _pad_to(v, size) for k, v in images.items()}
    h, w = next(iter(images.values())).shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    t = int(rng.integers(0, 8)) if augment else 0
    out = {}
    for k, v in images.items():
        v = v[y : y + size, x : x + size]
        if t & 4:
            v = v[:, ::-1]
        out[k] = np.ascontiguousarray(np.rot90(v, t & 3))
    return out


def to_tensors(sample: dict[str, Any], kind: DataKind, cfg: DataConfig, rng: np.random.Generator) -> dict[str, Any]:
    """A decoded shard sample -> the method's tensors (C, H, W) in [0, 1], coc (1, H, W) in pixels."""
    names = {"sharp": ["sharp"], "paired": ["sharp", "blur"], "coc": ["sharp", "blur", "coc"]}[kind]
    images = crop_and_augment({n: sample[n] for n in names}, cfg.image_size, cfg.augment, rng)
    out: dict[str, Any] = {"key": sample["key"]}
    for n in names:
        if n == "coc":
            out[n] = torch.from_numpy(images[n].astype(np.float32))[None]
            continue
        x = to_float(images[n])
        if cfg.channels == 1:
            x = (x @ BT601)[..., None]  # ITU-R BT.601 luma weights
        out[n] = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
    f = sample["meta"].get("f_number")
    out["f_number"] = torch.tensor(float("nan") if f is None else float(f), dtype=torch.float32)
    return out


class ShardStream(IterableDataset):
    """The endless, deterministic sample stream of one process (see the module docstring)."""

    def __init__(self, urls: list[str], cfg: DataConfig, kind: DataKind, seed: int, rank: int, world_size: int,
                 start_batch: int = 0):
        super().__init__()
        if cfg.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {cfg.channels}")
        self.cfg, self.kind, self.seed, self.start_batch = cfg, kind, seed, start_batch
        if len(urls) >= world_size:
            self.urls, self.sample_stride, self.sample_offset = list(urls[rank::world_size]), 1, 0
            self.order_rank = rank
        else:  # every process reads every shard, in the same order, and keeps its share of samples
            self.urls, self.sample_stride, self.sample_offset = list(urls), world_size, rank
            self.order_rank = -1
        self.rank = rank
        self.num_workers = max(0, min(cfg.num_workers, len(self.urls)))

    def _shard_urls(self, urls: list[str], worker: int) -> Iterator[str]:
        """Endless shard order of one worker: resampled draws, or reshuffled epochs."""
        epoch = 0
        while True:
            rng = random.Random(_seed(self.seed, self.order_rank, worker, epoch, 1))
            if self.cfg.resampled:
                yield from (rng.choice(urls) for _ in range(len(urls)))
            else:
                order = list(urls)
                rng.shuffle(order)
                yield from order
            epoch += 1

    def _raw_samples(self, urls: list[str], worker: int) -> Iterator[dict[str, Any]]:
        """Raw samples that have the members the method needs, this process's share of them."""
        needed = REQUIRED[self.kind]
        position = 0
        barren = 0  # shards read in a row without a usable sample
        for url in self._shard_urls(urls, worker):
            found = False
            for raw in wds.tarfile_to_samples(handler=wds.reraise_exception)([{"url": url}]):
                if not all(m in raw for m in needed):
                    continue
                found = True
                position += 1
                if (position - 1) % self.sample_stride == self.sample_offset:
                    yield raw
            barren = 0 if found else barren + 1
            if barren > 10 * len(urls):
                raise ValueError(
                    f"data.train: no sample with {' + '.join(needed)} in shards {urls[:3]}"
                    f"{' ...' if len(urls) > 3 else ''} (process {self.rank}, worker {worker})"
                )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, nworkers = (0, 1) if info is None else (info.id, info.num_workers)
        urls = self.urls[worker::nworkers]
        raw = self._raw_samples(urls, worker)
        shuffle_rng = random.Random(_seed(self.seed, self.rank, worker, 2))
        if self.cfg.shuffle_buffer > 1:
            raw = wds.shuffle(self.cfg.shuffle_buffer, initial=self.cfg.shuffle_buffer, rng=shuffle_rng)(raw)
        # batch b comes from worker b % nworkers: skip what this worker delivered before `start_batch`
        skip = max(0, -(-(self.start_batch - worker) // nworkers)) * self.cfg.batch_size
        for n, sample in enumerate(raw):
            if n < skip:
                continue
            rng = np.random.default_rng(_seed(self.seed, self.rank, worker, n, 3))
            yield to_tensors(decode_sample(sample), self.kind, self.cfg, rng)


def make_loader(recipe: Recipe, method: Method, rank: int, world_size: int, start_batch: int = 0) -> DataLoader:
    """An endless DataLoader of this process's batches, starting at batch `start_batch` of its stream."""
    urls = check_data(recipe, method)
    stream = ShardStream(urls, recipe.data, method.data, recipe.seed, rank, world_size, start_batch)
    return DataLoader(stream, batch_size=recipe.data.batch_size, num_workers=stream.num_workers)
