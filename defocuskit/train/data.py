"""Training batches from WebDataset shards: the shard list, its checks, and the DataLoader of one process.

The stream itself (process/worker split, epochs, block shuffle, O(1) seeking to any batch) is
`defocuskit.train.stream.ShardStream`; crops, augmentation and tensors are `defocuskit.train.augment`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from defocuskit.config.recipe import DataConfig, Recipe
from defocuskit.data.coc_bound import coc_bound_of
from defocuskit.data.folder import FolderError, shard_folder_state
from defocuskit.data.reader import shard_urls
from defocuskit.data.tar_index import index_shard, is_local
from defocuskit.methods.base import Method
from defocuskit.train.stream import ShardStream, describe, has_members


def train_specs(cfg: DataConfig) -> list[tuple[str, str]]:
    """(name in errors, spec) of each entry of `data.train`: one string, or a list of them."""
    if isinstance(cfg.train, str):
        return [("data.train", cfg.train)]
    if not cfg.train:
        raise ValueError("data.train: an empty list names no shards")
    return [(f"data.train[{i}]", spec) for i, spec in enumerate(cfg.train)]


def _spec_urls(label: str, spec: str) -> list[str]:
    split = "train" if Path(spec).is_dir() else None  # a folder means its `train` split
    try:
        # an ingest writing a folder now: its shards would change under the run. Checked in the folder given, or the
        # one a pattern or file names (before it is expanded: a re-plan may have removed the shards), then in every
        # folder holding a shard it matched; the check only reads (a pattern is never taken for a folder to lock)
        if split is not None or (is_local(spec) and Path(spec).parent.is_dir()):
            shard_folder_state(spec if split is not None else Path(spec).parent)
        urls = shard_urls(spec, split)
        for folder in sorted({os.path.dirname(u) for u in urls if is_local(u)}):
            shard_folder_state(folder or ".")
        return urls
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{label}: {e}") from None
    except FolderError as e:
        raise FileNotFoundError(f"{label}: {e}") from None


def train_urls(cfg: DataConfig) -> list[str]:
    """The training shards `data.train` names, in order (a folder means its `train` split); an error if none."""
    return [u for label, spec in train_specs(cfg) for u in _spec_urls(label, spec)]


def check_data(recipe: Recipe, method: Method) -> list[str]:
    """The shard list, after checking that every spec of `data.train` exists and holds samples the method
    can use, and that the shards feed every loss term with a positive weight (before any work)."""
    needed = method.required_members
    urls: list[str] = []
    local_all: list[str] = []
    for label, spec in train_specs(recipe.data):
        spec_urls = _spec_urls(label, spec)
        local = [u for u in spec_urls if is_local(u)]
        missing = [u for u in local if not os.path.isfile(u)]
        if missing:
            raise FileNotFoundError(f"{label}: shard not found: {missing[0]}")
        if local and not any(has_members(e, needed) for u in local for e in index_shard(u)):
            raise ValueError(
                f"{label}: the shards of '{spec}' have no sample with {describe(needed)}, "
                f"which method '{method.name}' (data: {method.data}) needs"
            )
        urls += spec_urls
        local_all += local
    if local_all and len(local_all) == len(urls):  # remote shards cannot be checked before training
        for key, member in method.terms:
            weight = _value(recipe, key)
            term_needs = tuple(m for m in needed if not isinstance(m, tuple)) + (member,)
            if weight and weight > 0 and not any(has_members(e, term_needs) for u in local_all for e in index_shard(u)):
                specs = ", ".join(repr(spec) for _, spec in train_specs(recipe.data))
                raise ValueError(f"{key} is {weight} but the shards of {specs} have no sample with "
                                 f"{describe(term_needs)} (set {key}: 0, or add shards that have {member})")
    return urls


def resolve_coc_bound(recipe: Recipe, urls: list[str]) -> tuple[Recipe, str | None]:
    """The recipe with `inference.coc_bound: auto` replaced by its training shards' largest CoC x f-number (relative
    to the long side, `data.coc_bound`; null where no sample has coc.png and an f-number), and a line saying so (None
    when there was nothing to resolve)."""
    if recipe.inference.coc_bound != "auto":
        return recipe, None
    remote = [u for u in urls if not is_local(u)]
    found = None if remote else coc_bound_of(urls)
    if found is None or found.bound is None:  # not read before training, or no sample to bound by
        why = (f"{remote[0]} is not a local file, so its coc.png is not read" if remote else
               "no training sample has coc.png and an f-number")
        return _with_bound(recipe, None), (f"inference.coc_bound: auto -> null ({why}): the map is not bounded; give "
                                           "a number (a fraction of the long side) to bound it")
    bound = round(found.bound, 6)
    return _with_bound(recipe, bound), (
        f"inference.coc_bound: auto -> {bound} (the largest CoC x f-number / long side of {found.samples} training "
        f"samples, set by {found.key}): the map reads at most {bound} x the long side / N at f/N")


def _with_bound(recipe: Recipe, bound: float | None) -> Recipe:
    return dataclasses.replace(recipe, inference=dataclasses.replace(recipe.inference, coc_bound=bound))


def _value(recipe: Recipe, dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def make_loader(recipe: Recipe, method: Method, rank: int, world_size: int, start_batch: int = 0,
                urls: list[str] | None = None) -> DataLoader:
    """An endless DataLoader of this process's batches (its `dataset` is the process's ShardStream), starting at
    batch `start_batch`; `urls`: the shard list `check_data` returned, where the caller has it."""
    urls = check_data(recipe, method) if urls is None else urls
    stream = ShardStream(urls, recipe.data, method.data, recipe.seed, rank, world_size, start_batch,
                         method.required_members, method.views)
    return DataLoader(stream, batch_size=recipe.data.batch_size, num_workers=stream.num_workers)


_DEAD_WORKER = re.compile(r"DataLoader worker \(pids?\(?s?\)? ?[^)]*\) (?:is killed by signal: (?P<signal>[^.]+)|"
                          r"exited unexpectedly(?: with exit code (?P<code>-?\d+))?)")


def dead_loader_worker(exc: BaseException) -> str | None:
    """What PyTorch's error says where a DataLoader worker process died (the out-of-memory killer, a crash in a
    decoder), in words for one line; None for any other error."""
    found = _DEAD_WORKER.search(str(exc)) if isinstance(exc, RuntimeError) else None
    if found is None:
        return None
    how = (f"killed by signal {found['signal'].strip()}" if found["signal"] else
           f"exited with code {found['code']}" if found["code"] else "exited unexpectedly")
    return (f"a data-loading worker process died ({how}{': out of memory?' if 'Kill' in how else ''}); with "
            "data.num_workers=0 the shards are read in the training process")
