"""Eval in several processes (`accelerate launch -m defocuskit eval ...`): who scores which sample, with which
seed, and how the per-image rows come back to the main process.

The split is fixed by the shards alone: the paired samples (blur.png and sharp.png) are numbered in shard
order, pair j goes to process j % world_size, and `--limit N` keeps pairs 0 .. N-1. The other samples
(sharp-only references, blur-map samples) are only counted, by process 0. A sampler's noise is seeded
from (seed, sample key), never from how many samples a process saw before, so every image comes out the
same whatever the number of processes, and the gathered rows, put back in shard order, make the same report.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from defocuskit.data import metadata
from defocuskit.data.reader import decode_sample, iter_raw
from defocuskit.data.tar_index import index_shard, is_local
from defocuskit.eval.config import EvalError
from defocuskit.io import wire
from defocuskit.io.lifeline import die_with_parent, launched_worker

_GATHERS = itertools.count()  # this process's gathers so far, all groups together: a fresh key for each


def _alone(obj: Any) -> list[Any]:
    return [obj]


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the eval processes and how to collect one object from each of them."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    gather: Callable[[Any], list[Any]] = _alone  # every process's object, in rank order, on every process

    @property
    def is_main(self) -> bool:
        """True on the process that writes the report."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """`device` for this process: plain "cuda" becomes this process's GPU (cuda:LOCAL_RANK) when several run."""
        return f"cuda:{self.local_rank}" if self.world > 1 and device == "cuda" else device


def process_group() -> ProcessGroup:
    """The group `accelerate launch` set up (WORLD_SIZE > 1: Accelerate's PartialState starts it), else one process.

    CPU processes (ACCELERATE_USE_CPU=1, or no CUDA) connect over gloo. Processes launched as several that
    Accelerate still cannot connect would each score every sample and write the same report: an error instead.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched <= 1:
        return ProcessGroup()
    if launched_worker():
        die_with_parent()  # a killed `accelerate launch` takes its workers with it: nothing written after the kill
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # CPU processes connect over gloo: with ACCELERATE_USE_CPU=1, or on a machine without CUDA
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    if state.num_processes != launched:
        raise EvalError(f"accelerate launched {launched} processes (WORLD_SIZE={launched}) but they are not connected "
                        f"(accelerate sees {state.num_processes}: {state.distributed_type}); on CPUs give "
                        "ACCELERATE_USE_CPU=1 (with --multi_gpu --num_processes N)")
    atexit.register(_leave_group)
    return ProcessGroup(state.process_index, state.num_processes, state.local_process_index,
                        store_gather(state.process_index, state.num_processes))


def store_gather(rank: int, world: int) -> Callable[[Any], list[Any]]:
    """A `ProcessGroup.gather` through the launch's key-value store (the store torch.distributed was started with),
    not a gloo or NCCL collective: the worker threads of a collective release its tensors after the call returns,
    and where that falls into interpreter shutdown the process aborts ("terminate called without an active
    exception", pytorch/pytorch#190489), which took a finished eval process down after its share was written.
    The objects travel as JSON (`io.wire`: plain data, arrays and the figure's rows), never as pickle."""
    from torch.distributed import distributed_c10d

    from defocuskit.eval.figure import FigureRow, Panel

    store = distributed_c10d._get_default_store()

    def gather(obj: Any) -> list[Any]:
        n = next(_GATHERS)  # every process gathers the same times in the same order
        store.set(f"defocuskit-gather/{n}/{rank}", wire.encode(obj))
        if n >= 2:  # every process has read this one's gather n - 2 before it could set its own n - 1
            store.delete_key(f"defocuskit-gather/{n - 2}/{rank}")
        return [wire.decode(store.get(f"defocuskit-gather/{n}/{r}"), (FigureRow, Panel)) for r in range(world)]

    return gather


def _leave_group() -> None:
    """Close the process group before the interpreter shuts down."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sample_seed(seed: int, key: str) -> int:
    """A 63-bit seed for the sample called `key`, from (seed, key): the same in any process, in any order."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _members(names: list[str]) -> str:
    """'pair', 'sharp-only', 'blur-map' or 'other' from the member names (extensions) of one sample."""
    if "blur.png" in names and "sharp.png" in names:
        return "pair"
    if "sharp.png" in names:
        return "sharp-only"
    return "blur-map" if "blur.png" in names else "other"


def count_pairs(urls: list[str]) -> int | None:
    """The paired samples in local tar shards, from the tar headers alone (no image is read); None for
    remote shards."""
    if not all(is_local(u) for u in urls):
        return None
    return sum(entry.has(("blur.png", "sharp.png")) for url in urls for entry in index_shard(url))


def pair_keys(urls: list[str]) -> list[str] | None:
    """The keys of the paired samples in local tar shards, in shard order, from the tar headers alone; None for
    remote shards."""
    if not all(is_local(u) for u in urls):
        return None
    return [entry.key for url in urls for entry in index_shard(url) if entry.has(("blur.png", "sharp.png"))]


def pairs_without_f_number(urls: list[str], limit: int | None = None) -> tuple[list[str], int] | None:
    """The keys of the paired samples (the first `limit`) of local tar shards whose metadata gives no f-number, and
    how many pairs there are, from the tar headers and the json members alone (metadata that does not read counts as
    giving one: scoring names it); None for remote shards."""
    if not all(is_local(u) for u in urls):
        return None
    missing, pairs = [], 0
    for url in urls:
        with open(url, "rb") as f:
            for entry in index_shard(url):
                if not entry.has(("blur.png", "sharp.png")):
                    continue
                if limit is not None and pairs >= limit:
                    return missing, pairs
                pairs += 1
                if "json" in entry.members and _no_f_number(f, *entry.members["json"]):
                    missing.append(entry.key)
    return missing, pairs


def _no_f_number(f: BinaryIO, offset: int, size: int) -> bool:
    """Whether the json member at `offset` reads as metadata with no f-number (False where it does not read)."""
    f.seek(offset)
    try:
        return metadata.to_python(json.loads(f.read(size))).get("f_number") is None
    except Exception:  # a damaged member: decode_sample names it when the sample is scored
        return False


def share_of(pairs: int, rank: int, world: int) -> int:
    """How many of `pairs` pairs (numbered 0 ..) process `rank` of `world` scores."""
    return len(range(rank, pairs, world))


def shard_share(urls: list[str], group: ProcessGroup, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The decoded samples of this process's share, in shard order, each with its "index" in the whole split:
    pair j (j < limit) when j % world == rank; every other kind of sample on process 0 only."""
    index = pair = 0
    for url in urls:
        for raw in iter_raw(url):
            kind = _members([k for k in raw if not k.startswith("__")])
            if kind == "pair":
                if limit is not None and pair >= limit:
                    return
                mine = pair % group.world == group.rank
                pair += 1
            else:
                mine = group.is_main
            if mine:
                yield {**decode_sample(raw), "index": index}
            index += 1
