"""One training step of the loop (`loop`): an optimizer step of every phase in turn on the same micro-batches, the
global RNGs reseeded before each micro-batch from (seed, rank, step, micro), the losses gathered from every process."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from defocuskit.config.recipe import Recipe
from defocuskit.methods.base import Method
from defocuskit.train.checkpoints import list_checkpoints
from defocuskit.train.checks import TrainingError, phase_params


def reseed(seed: int, rank: int, step: int, micro: int) -> None:
    """Seed torch, numpy and random from (seed, rank, step, micro)."""
    s = int(np.random.SeedSequence([seed & 0xFFFFFFFF, rank, step, micro]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def train_step(accelerator: Any, model: nn.Module, optimizers: list[Any], schedulers: list[Any],
               micro_batches: list[dict[str, torch.Tensor]], recipe: Recipe, method: Method, step: int,
               timed_out: bool) -> tuple[torch.Tensor, bool]:
    """One optimizer step of every phase in turn on the same micro-batches; the gathered (world, phases + 1)
    losses and time-out flags, and whether any phase's optimizer stepped (fp16: the GradScaler skips a step whose
    gradients are not finite; that phase's schedule then stays). Stops (TrainingError) before stepping on a
    non-finite loss."""
    t, rank, device = recipe.train, accelerator.process_index, accelerator.device
    single = len(method.phases) == 1
    gathered, stepped = [], False
    for p, (phase, optimizer, scheduler) in enumerate(zip(method.phases, optimizers, schedulers)):
        micro_losses = []
        # Accelerate ends an accumulation (gradients all-reduced, its prepared optimizer steps) where its own
        # micro-batch counter reaches a multiple of grad_accum; a checkpoint restores that counter, so a resume with
        # another train.grad_accum (or a process without its random_states file) skipped every step: counted here
        accelerator.step = 0
        for micro, batch in enumerate(micro_batches):
            reseed(recipe.seed, rank, step, p * t.grad_accum + micro)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = method.loss(model, batch, recipe.objective, phase)
                accelerator.backward(loss)
            micro_losses.append(loss.detach().float())
        local = torch.stack([torch.stack(micro_losses).mean(), torch.tensor(float(timed_out), device=device)])
        stats = accelerator.gather(local).view(-1, 2)
        if not torch.isfinite(stats[:, 0]).all():
            good = list_checkpoints(recipe.output_dir)
            what = "loss" if single else f"{phase} loss"
            raise TrainingError(
                f"{what} is {stats[:, 0].tolist()} (not finite) at step {step + 1}; stopped without saving. "
                f"Last good checkpoint: {good[-1][1] if good else 'none'}"
            )
        if not accelerator.sync_gradients:  # the optimizer would skip the step while the schedule and EMA go on
            raise TrainingError(f"step {step + 1}: the accumulated gradients were not synchronised; no step taken")
        if recipe.optim.grad_clip is not None:
            accelerator.clip_grad_norm_(phase_params(method, model, phase), recipe.optim.grad_clip)
        optimizer.step()
        model.zero_grad(set_to_none=True)  # every parameter: a phase leaves gradients on the others' too
        if not getattr(optimizer, "step_was_skipped", False):  # Accelerate's optimizer_step_was_skipped, per phase
            scheduler.step()
            stepped = True
        gathered.append(stats[:, 0])
    return torch.stack(gathered + [stats[:, 1]], dim=1), stepped
