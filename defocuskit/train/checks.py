"""What the training loop refuses before it starts (recipe values it cannot use, phases without parameters),
the error it stops with, and the parameter counts it prints."""

from __future__ import annotations

from torch import nn

from defocuskit.config.recipe import Recipe
from defocuskit.config.typed import RecipeError
from defocuskit.methods.base import Method


class TrainingError(RuntimeError):
    """Training stopped (non-finite loss or weights); the message names the step and the last good checkpoint."""


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameter count in total and per top-level child module."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for name, child in model.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    return counts


def format_counts(counts: dict[str, int]) -> str:
    """One line per entry: '  name  1,234,567'."""
    return "\n".join(f"  {k:<24}{v:>14,}" for k, v in counts.items())


def check_recipe(recipe: Recipe, method: Method) -> None:
    """Values the loop cannot use, named by key (RecipeError)."""
    d, o, t = recipe.data, recipe.optim, recipe.train
    if not str(recipe.output_dir).strip():  # `output_dir=` would train into the working folder without a word
        raise RecipeError("output_dir: empty; give the run folder (e.g. output_dir=runs/NAME)")
    positive = {
        "data.image_size": d.image_size, "data.batch_size": d.batch_size, "train.max_steps": t.max_steps,
        "train.grad_accum": t.grad_accum, "train.checkpoint_every": t.checkpoint_every,
        "train.keep_checkpoints": t.keep_checkpoints, "train.log_every": t.log_every,
    }
    for key, v in positive.items():
        if v < 1:
            raise RecipeError(f"{key}: must be at least 1, got {v}")
    choices = {
        "optim.name": (o.name, ("adam", "adamw", "radam")), "optim.schedule": (o.schedule, ("constant", "cosine")),
        "train.mixed_precision": (t.mixed_precision, ("auto", "no", "fp16", "bf16")), "data.channels": (d.channels, (1, 3)),
    }
    for key, (v, allowed) in choices.items():
        if v not in allowed:
            raise RecipeError(f"{key}: must be one of {', '.join(map(str, allowed))}, got {v!r}")
    if d.num_workers < 0 or d.shuffle_buffer < 0 or o.warmup_steps < 0:
        raise RecipeError("data.num_workers, data.shuffle_buffer and optim.warmup_steps must not be negative")
    if o.lr <= 0 or (o.grad_clip is not None and o.grad_clip <= 0):
        raise RecipeError(f"optim.lr and optim.grad_clip must be positive (got {o.lr}, {o.grad_clip})")
    if recipe.inference.coc_bound is not None and method.output != "defocus_map":
        raise RecipeError(f"inference.coc_bound bounds a defocus-map model's CoC map; '{method.name}' models "
                          f"give {method.output}s (set it to null)")
    channels = getattr(recipe.model, "channels", None)  # the one channel check: losses see data.channels images
    if channels is not None and channels != d.channels:
        raise RecipeError(f"model.channels ({channels}) differs from data.channels ({d.channels}) for '{method.name}'")


def phase_params(method: Method, model: nn.Module, phase: str) -> list[nn.Parameter]:
    """The trainable parameters that `phase`'s optimizer updates (RecipeError when there are none)."""
    params = [p for p in method.phase_parameters(model, phase) if p.requires_grad]
    if not params:
        raise RecipeError(f"{method.name}: phase '{phase}' has no trainable parameters")
    return params
