"""What the training loop refuses before it starts (recipe values it cannot use, phases without parameters),
the error it stops with, and the parameter counts it prints."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings

import torch
from torch import nn

from defocuskit.config.recipe import OptimConfig, Recipe, empty_value
from defocuskit.config.typed import RecipeError, did_you_mean
from defocuskit.io.images import MAX_PIXELS_ENV, max_pixels
from defocuskit.methods.base import Method
from defocuskit.train.augment import HFLIP
from defocuskit.train.optim import decay_step

SCHEDULES = ("constant", "cosine", "linear_decay")  # optim.schedule (train/optim.py lr_factor)

MAX_GRAD_ACCUM = 4096  # micro-batches an optimizer step: an effective batch of 4096 x data.batch_size (10^9 never
# finished its first step)


class TrainingError(RuntimeError):
    """Training stopped (non-finite loss or weights); the message names the step and the last good checkpoint."""


def check_tracker(name: str | None) -> None:
    """RecipeError where `train.log_with` names no Accelerate tracker, or one whose package is not installed (the run
    would log nothing, with a warning lost among its output)."""
    if name is None:
        return
    import accelerate.utils
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    known = list(LOGGER_TYPE_TO_CLASS)
    if name not in known:
        raise RecipeError(f"train.log_with: {name!r} is no Accelerate tracker (known: {', '.join(known)})"
                          f"{did_you_mean(name, known)}")
    available = getattr(accelerate.utils, f"is_{name}_available", None)
    if available is not None and not available():
        raise RecipeError(f"train.log_with: {name} is not installed (pip install {name.replace('_', '-')}), so the "
                          "run would log nothing to it; install it or set train.log_with=null")


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
    if (empty := empty_value(recipe)) is not None:  # `output_dir=`, `data.train=`: the working folder, without a word
        raise RecipeError(empty)
    if (negative := next(iter(negative_numbers(recipe.model).items()), None)) is not None:  # enc_blocks=[1,-1,1]
        key, value = negative  # built 0 blocks there, without a word
        said = "holds a negative number" if isinstance(value, (list, tuple)) else "is negative"
        raise RecipeError(f"{key}: {value} {said}; no model key takes a negative number (counts and sizes are 0 or "
                          "more)")
    positive = {
        "data.image_size": d.image_size, "data.batch_size": d.batch_size, "train.max_steps": t.max_steps,
        "train.grad_accum": t.grad_accum, "train.checkpoint_every": t.checkpoint_every,
        "train.keep_checkpoints": t.keep_checkpoints, "train.log_every": t.log_every,
    }
    for key, v in positive.items():
        if v < 1:
            raise RecipeError(f"{key}: must be at least 1, got {v}")
    if t.grad_accum > MAX_GRAD_ACCUM:
        raise RecipeError(f"train.grad_accum: 1 to {MAX_GRAD_ACCUM} micro-batches an optimizer step, "
                          f"got {t.grad_accum}")
    choices = {
        "optim.name": (o.name, ("adam", "adamw", "radam")), "optim.schedule": (o.schedule, SCHEDULES),
        "train.mixed_precision": (t.mixed_precision, ("auto", "no", "fp16", "bf16")), "data.channels": (d.channels, (1, 3)),
    }
    for key, (v, allowed) in choices.items():
        if v not in allowed:
            raise RecipeError(f"{key}: must be one of {', '.join(map(str, allowed))}, got {v!r}")
    if d.augment not in (True, False, HFLIP):
        raise RecipeError(f"data.augment: true (the 8 flips and 90-degree rotations), false or {HFLIP} (left-right "
                          f"mirrors only, as RDDM's and CycleGAN's releases), got {d.augment!r}")
    if d.num_workers < 0 or d.shuffle_buffer < 0 or o.warmup_steps < 0:
        raise RecipeError("data.num_workers, data.shuffle_buffer and optim.warmup_steps must not be negative")
    if not 0 < o.lr < math.inf or (o.grad_clip is not None and not o.grad_clip > 0):  # NaN fails too
        raise RecipeError(f"optim.lr and optim.grad_clip must be positive (got {o.lr}, {o.grad_clip})")
    check_numbers(recipe)
    check_decay_start(o, t.max_steps)
    check_tracker(t.log_with)
    if recipe.inference.coc_bound is not None and method.output != "defocus_map":
        raise RecipeError(f"inference.coc_bound bounds a defocus-map model's CoC map; '{method.name}' models "
                          f"give {method.output}s (set it to null)")
    channels = getattr(recipe.model, "channels", None)  # the one channel check: losses see data.channels images
    if channels is not None and channels != d.channels:
        raise RecipeError(f"model.channels ({channels}) differs from data.channels ({d.channels}) for '{method.name}'")


def check_decay_start(optim: OptimConfig, max_steps: int) -> None:
    """RecipeError naming optim.decay_start: missing under linear_decay, given under another schedule (nothing would
    read it), or not a step of the run after the warm-up."""
    start, what = optim.decay_start, ("a fraction of train.max_steps in [0, 1) (a float, e.g. 0.5) or a step below "
                                      f"train.max_steps {max_steps} (an integer)")
    if optim.schedule != "linear_decay":
        if start is not None:
            raise RecipeError(f"optim.decay_start: only optim.schedule linear_decay reads it (the schedule is "
                              f"{optim.schedule!r}); remove it or set optim.schedule=linear_decay")
        return
    if start is None:
        raise RecipeError(f"optim.decay_start: optim.schedule linear_decay needs the step its decay starts at: {what}")
    if not (0.0 <= start < 1.0 if isinstance(start, float) else 0 <= start < max_steps):  # NaN fails too
        raise RecipeError(f"optim.decay_start: {what}, got {start!r}")
    if decay_step(optim, max_steps) < optim.warmup_steps:
        raise RecipeError(f"optim.decay_start: the decay would start at step {decay_step(optim, max_steps)}, inside "
                          f"the warm-up (optim.warmup_steps {optim.warmup_steps}); start it at or after the warm-up")


def check_numbers(recipe: Recipe) -> None:
    """RecipeError naming the key: a float the optimizer, the EMA or the time budget cannot use (NaN, infinite or out
    of its range: the run would fail at its first step, or train a step and exit 0), and a batch whose pixels
    (data.batch_size x data.image_size^2) are above the image pixel limit (a typo's terabytes)."""
    d, o, t = recipe.data, recipe.optim, recipe.train
    beta = next((b for b in o.betas if not 0.0 <= b < 1.0), o.betas[0])  # the first out of range, if any
    ranges = {  # key: (value, lowest, whether the lowest is allowed, highest (never allowed), the range in words)
        "optim.eps": (o.eps, 0.0, False, 1.0, "a small positive number, e.g. 1e-8"),
        "optim.weight_decay": (o.weight_decay, 0.0, True, math.inf, "a finite number >= 0"),
        "optim.betas": (beta, 0.0, True, 1.0, "two numbers in [0, 1)"),
        "train.ema_decay": (t.ema_decay, 0.0, True, 1.0, "in [0, 1)"),
    }
    if t.max_minutes is not None:
        ranges["train.max_minutes"] = (t.max_minutes, 0.0, False, math.inf, "a positive number of minutes (null: none)")
    for key, (v, low, closed, high, words) in ranges.items():
        if not ((low <= v) if closed else (low < v)) or not v < high:  # NaN fails too
            raise RecipeError(f"{key}: {words}, got {v}")
    pixels, limit = d.batch_size * d.image_size ** 2, max_pixels()
    if limit and pixels > limit:
        raise RecipeError(f"data.batch_size x data.image_size^2 = {d.batch_size} x {d.image_size}^2 is "
                          f"{pixels / 1e6:.0f} MP a batch, above the limit of {limit / 1e6:.0f} MP "
                          f"(${MAX_PIXELS_ENV}); lower data.image_size or data.batch_size")


def build_network(method: Method, recipe: Recipe, training: bool) -> nn.Module:
    """The method's network from the recipe's model section; RecipeError naming the section where it cannot be
    built (a negative or zero width was a torch traceback) or whose weights alone exceed this machine's memory (10^8
    wrote 10 GB of its first layer, then asked for 80 PB)."""
    try:
        with warnings.catch_warnings():  # a zero width: torch's "Initializing zero-element tensors" before the error
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors", category=UserWarning)
            check_fits(method, recipe, physical_memory())  # 10^8 wrote 10 GB of its first layer before it failed
            return method.build(recipe.model, recipe.objective, training)
    except (RuntimeError, ValueError, TypeError, MemoryError, OverflowError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        key = next(iter(not_positive(recipe.model)), None)
        said = f"{key}: {not_positive(recipe.model)[key]} is no positive size; the model section" if key else \
            "model: this section"
        raise RecipeError(f"{said} does not build a {method.name} network ({clip_middle(reason)})") from None


def clip_middle(text: str, limit: int = 400) -> str:
    """`text` within `limit` characters, its middle cut out where it is longer: a method's reason ends with what to
    do (model.pretrained: null, remove model.map_model), which cutting the end lost."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def check_fits(method: Method, recipe: Recipe, memory: int | None) -> None:
    """MemoryError where the weights of the recipe's network alone exceed `memory` bytes, from the network built for
    inference on the meta device (nothing allocated, no pretrained weights read); where that build fails, the real one
    says why."""
    try:
        with torch.device("meta"):
            network = method.build(recipe.model, recipe.objective, False)
    except Exception:  # noqa: BLE001 - said by the build that follows
        return
    size = sum(t.numel() * t.element_size() for t in (*network.parameters(), *network.buffers()))
    if memory and size > memory:
        raise MemoryError(f"its {sum(p.numel() for p in network.parameters()):.3g} parameters take {size / 2**30:.3g} "
                          f"GiB, more than this machine's {memory / 2**30:.3g} GiB of memory")


def physical_memory() -> int | None:
    """This machine's memory in bytes, None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def not_positive(section: object) -> dict[str, object]:
    """The keys of a dataclass section whose integer value (or one of a list's) is below 1 (`model.width`: 0)."""
    found: dict[str, object] = {}
    for f in dataclasses.fields(section) if dataclasses.is_dataclass(section) else ():
        value = getattr(section, f.name)
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in items):
            found[f"model.{f.name}"] = value
    return found


def negative_numbers(section: object, prefix: str = "model") -> dict[str, object]:
    """The keys of a dataclass section (and of the sections inside it) whose number, or one of a list's, is below
    0: every model key is a count, a size, a rate or a scale (`model.enc_blocks`: [1, -1, 1])."""
    found: dict[str, object] = {}
    for f in dataclasses.fields(section) if dataclasses.is_dataclass(section) else ():
        value, key = getattr(section, f.name), f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            found.update(negative_numbers(value, key))
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0 for v in items):
            found[key] = value
    return found


def phase_params(method: Method, model: nn.Module, phase: str) -> list[nn.Parameter]:
    """The trainable parameters that `phase`'s optimizer updates (RecipeError when there are none)."""
    params = [p for p in method.phase_parameters(model, phase) if p.requires_grad]
    if not params:
        raise RecipeError(f"{method.name}: phase '{phase}' has no trainable parameters")
    return params
