"""The optimizers of the loop and their learning-rate schedule: a pure factor of the optimizer steps taken, built
into a LambdaLR at the start and rebuilt at resume from the restored scheduler's position (the recipe's optim values
win).

The schedule counts the optimizer steps taken, as Accelerate's prepared scheduler does: a step the fp16 GradScaler
skips (non-finite gradients) does not move it (nor the EMA), while it counts toward train.max_steps, as in the
diffusers and transformers training loops (their global_step), since the data stream and the reseeding follow the
loop's step. A run with k skipped steps ends k steps short of its schedule's end (cosine, linear_decay: lr above 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from defocuskit.config.recipe import OptimConfig


def decay_step(optim: OptimConfig, max_steps: int) -> int:
    """The step where `linear_decay` starts: optim.decay_start as a step (an int) or a fraction of max_steps (a
    float, rounded down)."""
    start = optim.decay_start
    if isinstance(start, float):
        return math.floor(start * max_steps)
    return int(start or 0)


def lr_factor(optim: OptimConfig, max_steps: int) -> Callable[[int], float]:
    """LR multiplier after `step` optimizer steps: linear warm-up, then constant, cosine decay to 0 at max_steps, or
    (linear_decay) 1 until decay_step, then (max_steps - step) / (max_steps - decay_step), 0 at max_steps: past
    decay_step, diffusers' get_linear_schedule_with_warmup with that many warm-up steps."""
    start = decay_step(optim, max_steps) if optim.schedule == "linear_decay" else 0

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "cosine":
            span = max(1, max_steps - optim.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - optim.warmup_steps) / span)))
        if optim.schedule == "linear_decay" and step >= start:
            return max(0.0, (max_steps - step) / max(1, max_steps - start))
        return 1.0

    return factor


def make_optimizer(params: list[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or RAdam from the recipe's `optim` section (RAdam with decoupled weight decay, as the
    torch_optimizer RAdam that IFAN's release trains with)."""
    if optim.name == "radam":
        return torch.optim.RAdam(params, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                 weight_decay=optim.weight_decay, decoupled_weight_decay=True)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optim.name]
    return cls(params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int,
                   step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule of `optimizer` positioned after `step` optimizer steps: the recipe's lr, betas, eps and
    weight decay are set on every group first (at resume they win over the checkpoint's), then the LambdaLR
    sets lr = optim.lr * lr_factor(step)."""
    for group in optimizer.param_groups:
        group.update(lr=optim.lr, initial_lr=optim.lr, betas=optim.betas, eps=optim.eps,
                     weight_decay=optim.weight_decay)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim, max_steps), last_epoch=step - 1)
