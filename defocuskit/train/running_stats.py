"""Normalization running statistics (BatchNorm's running_mean and running_var) kept the same on every process.

Each process updates them from its own share of the batches (DDP averages gradients, not buffers); after every
optimizer step the loop replaces them by their mean over the processes. Their update is linear in the batch
statistics, so that mean is what one process would hold had it averaged the batch means and variances of all
processes at every step. The weights exported (model.safetensors, best.safetensors, the EMA's copies), checkpointed
and validated thus carry the statistics of all the data, every process holds the same ones (a resumed run, which
loads the main process's, continues them exactly), and num_batches_tracked, counted alike on every process, stays
as it is. A network without running statistics costs nothing: no collective is made.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import torch
from torch import nn


def running_stats(net: nn.Module) -> list[torch.Tensor]:
    """The running mean and variance buffers of every layer that tracks them (BatchNorm, InstanceNorm with
    track_running_stats), in module order; empty for a network without any."""
    out: list[torch.Tensor] = []
    for m in net.modules():
        if getattr(m, "track_running_stats", False):
            out += [b for b in (getattr(m, "running_mean", None), getattr(m, "running_var", None))
                    if isinstance(b, torch.Tensor)]
    return out


@torch.no_grad()
def average_running_stats(accelerator: Any, stats: list[torch.Tensor]) -> None:
    """Replace every tensor of `stats` (`running_stats(net)`) in place by its mean over the processes: one gather,
    the mean taken alike on every process from the same values (the same bits everywhere); nothing with one
    process or no statistics. Called by every process at the same point."""
    if not stats or accelerator.num_processes == 1:
        return
    dtype = reduce(torch.promote_types, (s.dtype for s in stats))
    flat = torch.cat([s.detach().reshape(-1).to(dtype) for s in stats])
    mean = accelerator.gather(flat).view(accelerator.num_processes, -1).mean(dim=0)
    offset = 0
    for s in stats:
        s.copy_(mean[offset:offset + s.numel()].view_as(s))
        offset += s.numel()
