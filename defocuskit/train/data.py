"""Training batches from WebDataset shards: the shard list, its checks, and the DataLoader of one process.

The stream itself (process/worker split, epochs, block shuffle, O(1) seeking to any batch) is
`defocuskit.train.stream.ShardStream`; crops, augmentation and tensors are `defocuskit.train.augment`.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import DataLoader

from defocuskit.data.shards import shard_urls
from defocuskit.data.tar_index import index_shard, is_local
from defocuskit.methods.base import Method
from defocuskit.train.augment import BT601, crop_and_augment, to_tensors
from defocuskit.train.recipe import DataConfig, Recipe
from defocuskit.train.stream import REQUIRED, ShardStream

__all__ = ["BT601", "REQUIRED", "ShardStream", "check_data", "crop_and_augment", "make_loader", "make_stream",
           "to_tensors", "train_urls"]


def train_urls(cfg: DataConfig) -> list[str]:
    """The training shards `data.train` names (a folder means its `train` split); an error if none."""
    spec = cfg.train
    split = "train" if Path(spec).is_dir() else None
    try:
        return shard_urls(spec, split)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"data.train: {e}") from None


def check_data(recipe: Recipe, method: Method) -> list[str]:
    """The shard list, after checking that it exists and holds what the method needs (before any work)."""
    urls = train_urls(recipe.data)
    needed = REQUIRED[method.data]
    local = [u for u in urls if is_local(u)]
    missing = [u for u in local if not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"data.train: shard not found: {missing[0]}")
    if local and not any(e.has(needed) for u in local for e in index_shard(u)):
        raise ValueError(
            f"data.train: the shards of '{recipe.data.train}' have no sample with {' + '.join(needed)}, "
            f"which method '{method.name}' (data: {method.data}) needs"
        )
    return urls


def make_stream(recipe: Recipe, method: Method, rank: int, world_size: int, start_batch: int = 0) -> ShardStream:
    """This process's sample stream, starting at batch `start_batch`."""
    urls = check_data(recipe, method)
    return ShardStream(urls, recipe.data, method.data, recipe.seed, rank, world_size, start_batch)


def make_loader(recipe: Recipe, method: Method, rank: int, world_size: int, start_batch: int = 0) -> DataLoader:
    """An endless DataLoader of this process's batches, starting at batch `start_batch` of its stream."""
    stream = make_stream(recipe, method, rank, world_size, start_batch)
    return DataLoader(stream, batch_size=recipe.data.batch_size, num_workers=stream.num_workers)
