"""The one Accelerate training loop every method trains with (it sees only `Method.build` and `Method.loss`).

Run folder (`output_dir`): recipe.yaml (resolved, written before training), metrics.jsonl,
checkpoints/step-NNNNNNN/ (Accelerate `save_state` folders, written under a temporary name and renamed
when complete; the loop's own state in them is safetensors and JSON, see `defocuskit.train.state`),
model.safetensors (the EMA weights, exported at the end).

Reproducibility: before every micro-batch the global RNGs are reseeded from (seed, rank, step, micro),
and the data of batch b is a fixed function of (seed, rank, b) (see `defocuskit.train.stream`), so a
resumed run continues exactly the stream and the loss curve of the uninterrupted one, and starts at
once: the stream seeks to its position, whatever the step.
With DEFOCUSKIT_LOG_KEYS=1 each process also records the sample keys it trained on
(seen-keys-rank{R}.jsonl) and a checksum of its final weights (weights-rank{R}.json).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from defocuskit.methods import get_method
from defocuskit.methods.base import Method
from defocuskit.train.data import ShardStream, check_data
from defocuskit.train.ema import EMA
from defocuskit.train.export import save_model
from defocuskit.train.recipe import OptimConfig, Recipe, RecipeError, recipe_to_dict, recipe_to_yaml
from defocuskit.train.state import CheckpointError, LoopState, StepCounter

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
MODEL_FILE = "model.safetensors"
LOG_KEYS_ENV = "DEFOCUSKIT_LOG_KEYS"
# recipe keys a checkpoint must agree on to be resumed (they shape the saved state)
RESUME_KEYS = (("method",), ("model",), ("data", "channels"), ("optim", "name"))


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
    positive = {
        "data.image_size": d.image_size, "data.batch_size": d.batch_size, "train.max_steps": t.max_steps,
        "train.grad_accum": t.grad_accum, "train.checkpoint_every": t.checkpoint_every,
        "train.keep_checkpoints": t.keep_checkpoints, "train.log_every": t.log_every,
    }
    for key, v in positive.items():
        if v < 1:
            raise RecipeError(f"{key}: must be at least 1, got {v}")
    choices = {
        "optim.name": (o.name, ("adam", "adamw")), "optim.schedule": (o.schedule, ("constant", "cosine")),
        "train.mixed_precision": (t.mixed_precision, ("no", "fp16", "bf16")), "data.channels": (d.channels, (1, 3)),
    }
    for key, (v, allowed) in choices.items():
        if v not in allowed:
            raise RecipeError(f"{key}: must be one of {', '.join(map(str, allowed))}, got {v!r}")
    if d.num_workers < 0 or d.shuffle_buffer < 0 or o.warmup_steps < 0:
        raise RecipeError("data.num_workers, data.shuffle_buffer and optim.warmup_steps must not be negative")
    if o.lr <= 0 or (o.grad_clip is not None and o.grad_clip <= 0):
        raise RecipeError(f"optim.lr and optim.grad_clip must be positive (got {o.lr}, {o.grad_clip})")
    if dataclasses.is_dataclass(recipe.model) and hasattr(recipe.model, "channels"):
        if recipe.model.channels != d.channels:
            raise RecipeError(
                f"model.channels ({recipe.model.channels}) differs from data.channels ({d.channels})"
                f" for '{method.name}'"
            )


def lr_factor(optim: OptimConfig, max_steps: int) -> Callable[[int], float]:
    """LR multiplier after `step` optimizer steps: linear warm-up, then constant or cosine decay to 0 at max_steps."""

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "cosine":
            span = max(1, max_steps - optim.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - optim.warmup_steps) / span)))
        return 1.0

    return factor


def make_optimizer(params: list[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW from the recipe's `optim` section."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optim.name]
    return cls(params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)


def _apply_optim_recipe(optimizer: torch.optim.Optimizer, scheduler: Any, optim: OptimConfig) -> None:
    """After loading a checkpoint: the recipe's lr, betas, eps and weight decay win over the saved ones."""
    scheduler.base_lrs = [optim.lr for _ in optimizer.param_groups]
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in optimizer.param_groups:
        group.update(lr=optim.lr * factor, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)
        if "initial_lr" in group:
            group["initial_lr"] = optim.lr
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def reseed(seed: int, rank: int, step: int, micro: int) -> None:
    """Seed torch, numpy and random from (seed, rank, step, micro)."""
    s = int(np.random.SeedSequence([seed & 0xFFFFFFFF, rank, step, micro]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


# ------------------------------------------------------------------------------------------ checkpoints


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, folder), oldest first; temporary and partial folders are ignored."""
    folder = Path(output_dir) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit() and (p / "recipe.json").is_file():
                found.append((int(p.name[5:]), p))
    return sorted(found)


def check_resume(checkpoint: Path, recipe: Recipe) -> None:
    """A clear error when `checkpoint` was written by another method or an incompatible recipe."""
    try:
        saved = json.loads((checkpoint / "recipe.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{checkpoint}: not a readable defocuskit checkpoint ({e})") from None
    now = recipe_to_dict(recipe)
    for path in RESUME_KEYS:
        a, b = saved, now
        for p in path:
            a, b = (a or {}).get(p), (b or {}).get(p)
        if a != b:
            key = ".".join(path)
            raise ValueError(
                f"{checkpoint}: checkpoint has {key}={a!r} but the recipe has {key}={b!r}; "
                f"use another output_dir or --no-resume"
            )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove(folder: Path) -> None:
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    os.replace(folder, trash)  # a half-deleted folder must never look like a checkpoint
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(accelerator: Any, model: nn.Module, recipe: Recipe, step: int) -> Path:
    """Accelerate `save_state` into a temporary folder, renamed to checkpoints/step-NNNNNNN when complete."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingError(f"weights are not finite after step {step}; no checkpoint written")
    folder = Path(recipe.output_dir) / CHECKPOINTS
    final = folder / f"step-{step:07d}"
    tmp = folder / f".tmp-step-{step:07d}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "recipe.json").write_text(json.dumps(recipe_to_dict(recipe), indent=1))
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(recipe.output_dir)[: -recipe.train.keep_checkpoints]:
            _remove(old)
    accelerator.wait_for_everyone()
    return final


def _load_checkpoint(accelerator: Any, checkpoint: Path) -> None:
    """Accelerate `load_state` (with the loop's hooks); any failure names the checkpoint and what to do."""
    import pickle

    advice = "Delete that folder to resume from an earlier checkpoint, or start over with --no-resume"
    try:
        accelerator.load_state(str(checkpoint))
    except CheckpointError as e:
        raise TrainingError(f"cannot resume: {e}") from None
    except pickle.UnpicklingError:
        raise TrainingError(
            f"cannot resume from {checkpoint}: its optimizer.bin holds objects other than tensors and plain "
            f"containers; refused (read with torch.load(weights_only=True), which runs no code). {advice}"
        ) from None
    except Exception as e:  # a damaged or altered checkpoint: refuse, naming it, whatever the library raised
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TrainingError(f"cannot resume from {checkpoint}: {type(e).__name__}: {reason}. {advice}") from None


def _check_data_position(accelerator: Any, saved: dict[str, Any] | None, stream: ShardStream, batch: int) -> None:
    """Warn when the data stream cannot continue where the checkpoint left it (other shards or layout)."""
    if saved is None or not accelerator.is_main_process:
        return
    now = stream.position(batch)
    changed = [k for k in ("shards", "world_size", "num_workers", "shuffle_block") if saved.get(k) != now.get(k)]
    if changed:
        accelerator.print(
            f"warning: the training data differ from the checkpoint's ({', '.join(changed)} changed): the run goes "
            f"on from batch {batch} of the new stream, not the exact continuation of the interrupted run"
        )


def _clean_run_folder(out: Path, fresh: bool) -> None:
    """Remove temporary leftovers of killed runs; with `fresh`, also earlier checkpoints and metrics."""
    folder = out / CHECKPOINTS
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith((".tmp-", ".trash-")) or (fresh and p.name.startswith("step-")):
                shutil.rmtree(p, ignore_errors=True)
    if fresh:
        (out / METRICS).unlink(missing_ok=True)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines after `step` (written by a run that was stopped after its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    _write_atomic(path, "".join(keep))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- train


def train(recipe: Recipe, resume: bool = True) -> Path:
    """Train `recipe` (resuming from its newest checkpoint unless `resume` is False); the exported model's path."""
    from accelerate import Accelerator

    method = get_method(recipe.method)
    check_recipe(recipe, method)
    urls = check_data(recipe, method)
    out = Path(recipe.output_dir)
    checkpoints = list_checkpoints(out) if resume else []
    if checkpoints:
        check_resume(checkpoints[-1][1], recipe)

    t = recipe.train
    handlers = []
    if len(method.phases) > 1:  # a phase leaves the other phases' parameters without gradients
        from accelerate.utils import DistributedDataParallelKwargs

        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    accelerator = Accelerator(
        gradient_accumulation_steps=t.grad_accum, mixed_precision=t.mixed_precision,
        log_with=t.log_with, project_dir=str(out), kwargs_handlers=handlers,
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _clean_run_folder(out, fresh=not resume)
        header = "# resolved recipe; rerun with: defocuskit train recipe.yaml\n"
        _write_atomic(out / "recipe.yaml", header + recipe_to_yaml(recipe))
    accelerator.wait_for_everyone()

    torch.manual_seed(recipe.seed)  # the same initial weights on every process
    model = method.build(recipe.model, recipe.objective, True)
    accelerator.print(f"{method.name}: parameters\n{format_counts(parameter_counts(model))}")
    optimizers = [make_optimizer(_phase_params(method, model, phase), recipe.optim) for phase in method.phases]
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor(recipe.optim, t.max_steps)) for o in optimizers]
    model, *optimizers = accelerator.prepare(model, *optimizers)
    # the schedulers are not prepared: Accelerate would step them once per process; they count optimizer steps here
    net = accelerator.unwrap_model(model)
    ema = EMA(net, t.ema_decay)
    counter = StepCounter()
    stream = ShardStream(urls, recipe.data, method.data, recipe.seed, rank, world)
    state = LoopState(accelerator, dict(zip(method.phases, schedulers)), ema, counter,
                      lambda step: stream.position(step * t.grad_accum))
    state.register()  # scheduler, EMA, step, data position and RNG as safetensors/JSON: nothing is unpickled

    if checkpoints:
        _load_checkpoint(accelerator, checkpoints[-1][1])
        for optimizer, scheduler in zip(optimizers, schedulers):
            _apply_optim_recipe(optimizer, scheduler, recipe.optim)
        _check_data_position(accelerator, state.saved_data, stream, counter.step * t.grad_accum)
        accelerator.print(f"resumed from {checkpoints[-1][1]} (step {counter.step})")
    start = counter.step
    stream.start_batch = start * t.grad_accum
    if accelerator.is_main_process:
        _truncate_metrics(out / METRICS, start)
    if t.log_with:
        accelerator.init_trackers("defocuskit", config=_flat(recipe_to_dict(recipe)))

    log_keys = os.environ.get(LOG_KEYS_ENV) == "1"
    step = start
    if step < t.max_steps:
        step = _run(accelerator, model, net, optimizers, schedulers, ema, counter, recipe, method, stream, log_keys)
    last = list_checkpoints(out)
    if not last or last[-1][0] != step:
        save_checkpoint(accelerator, net, recipe, step)

    path = out / MODEL_FILE
    averaged = ema.averaged_state_dict(net)
    if accelerator.is_main_process:
        save_model(path, averaged, method.name, recipe_to_dict(recipe))
        accelerator.print(f"exported {path} (EMA weights, step {step})")
    if log_keys:
        sums = {"step": step, "weights": _checksum(net.state_dict()), "ema": _checksum(averaged)}
        (out / f"weights-rank{rank}.json").write_text(json.dumps(sums))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return path


def _phase_params(method: Method, model: nn.Module, phase: str) -> list[nn.Parameter]:
    params = [p for p in method.phase_parameters(model, phase) if p.requires_grad]
    if not params:
        raise RecipeError(f"{method.name}: phase '{phase}' has no trainable parameters")
    return params


def _step(accelerator: Any, model: nn.Module, optimizers: list[Any], schedulers: list[Any],
          micro_batches: list[dict[str, torch.Tensor]], recipe: Recipe, method: Method, step: int,
          timed_out: bool) -> torch.Tensor:
    """One optimizer step of every phase in turn on the same micro-batches; the gathered (world, phases + 1)
    losses and time-out flags. Stops (TrainingError) before stepping on a non-finite loss."""
    t, rank, device = recipe.train, accelerator.process_index, accelerator.device
    single = len(method.phases) == 1
    gathered = []
    for p, (phase, optimizer, scheduler) in enumerate(zip(method.phases, optimizers, schedulers)):
        micro_losses = []
        for micro, batch in enumerate(micro_batches):
            reseed(recipe.seed, rank, step, p * t.grad_accum + micro)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    args = (model, batch, recipe.objective) if single else (model, batch, recipe.objective, phase)
                    loss = method.loss(*args)
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
        if recipe.optim.grad_clip is not None:
            accelerator.clip_grad_norm_(_phase_params(method, model, phase), recipe.optim.grad_clip)
        optimizer.step()
        model.zero_grad(set_to_none=True)  # every parameter: a phase leaves gradients on the others' too
        scheduler.step()
        gathered.append(stats[:, 0])
    return torch.stack(gathered + [stats[:, 1]], dim=1)


BUDGET_BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {steps} [{elapsed}<{left} {ends}, {step_rate}{postfix}]"


def training_bar(max_steps: int, start: int, max_minutes: float | None, disable: bool = False, **kwargs: Any) -> Any:
    """The training progress bar: steps of max_steps with an ETA; under a time budget (train.max_minutes) the
    time left is the sooner of the budget's end and the steps' ETA, and says which ends the run."""
    from tqdm.auto import tqdm

    class BudgetBar(tqdm):  # tqdm.auto's class: a terminal or a notebook bar
        @property
        def format_dict(self) -> dict[str, Any]:
            d = super().format_dict
            elapsed, n, total = d["elapsed"], d["n"], d["total"]
            rate = (n - d.get("initial", 0)) / elapsed if elapsed > 0 and n > d.get("initial", 0) else None
            by_steps = (total - n) / rate if rate else math.inf
            by_budget = max(0.0, max_minutes * 60.0 - elapsed)
            left = min(by_steps, by_budget)
            d.update(steps=f"{n}/{total} steps", left=self.format_interval(left),
                     ends="budget" if by_budget <= by_steps else "max_steps",
                     step_rate=f"{rate:.2f} step/s" if rate else "? step/s",
                     # the bar and the percentage: the share of the run done, whichever of the two ends it
                     n=int(1000 * elapsed / (elapsed + left)) if elapsed + left > 0 else 1000, total=1000)
            return d

    options = dict(total=max_steps, initial=start, disable=disable, dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s, not per step
    options.update(kwargs)
    if max_minutes is None:
        return tqdm(**options)
    return BudgetBar(bar_format=BUDGET_BAR_FORMAT, **options)


def _run(accelerator: Any, model: nn.Module, net: nn.Module, optimizers: list[Any], schedulers: list[Any],
         ema: EMA, counter: StepCounter, recipe: Recipe, method: Method, stream: ShardStream, log_keys: bool) -> int:
    """The steps from `counter.step` to `train.max_steps` (or until `train.max_minutes`); the last step done."""
    from torch.utils.data import DataLoader

    t = recipe.train
    out = Path(recipe.output_dir)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    start = counter.step
    batches = iter(DataLoader(stream, batch_size=recipe.data.batch_size, num_workers=stream.num_workers))
    keys_file = open(out / f"seen-keys-rank{rank}.jsonl", "a") if log_keys else None  # noqa: SIM115
    metrics = open(out / METRICS, "a") if accelerator.is_main_process else None  # noqa: SIM115
    bar = training_bar(t.max_steps, start, t.max_minutes, disable=not accelerator.is_main_process)
    t_start = t_log = time.time()
    wait, losses, step = 0.0, [], start
    try:
        while step < t.max_steps:
            micro_batches = []
            for micro in range(t.grad_accum):
                t0 = time.perf_counter()
                batch = next(batches)
                wait += time.perf_counter() - t0
                keys = batch.pop("key")
                if keys_file is not None:
                    keys_file.write(json.dumps({"step": step + 1, "micro": micro, "keys": list(keys)}) + "\n")
                micro_batches.append({k: v.to(device, non_blocking=True) for k, v in batch.items()})
            timed_out = t.max_minutes is not None and (time.time() - t_start) / 60.0 >= t.max_minutes
            lr = optimizers[0].param_groups[0]["lr"]
            stats = _step(accelerator, model, optimizers, schedulers, micro_batches, recipe, method, step, timed_out)
            ema.update(net)
            step += 1
            counter.step = step
            bar.update(1)
            losses.append(stats[:, :-1].mean(0))
            stop = bool(stats[0, -1])
            if step % t.log_every == 0 or step == t.max_steps or stop:  # the last step is always logged
                now = time.time()
                images = len(losses) * t.grad_accum * recipe.data.batch_size * world
                mean = torch.stack(losses).mean(0).tolist()
                record = {"step": step, "loss": mean[0], "lr": lr,
                          "images_per_s": images / max(now - t_log, 1e-9), "data_wait_s": wait, "time": now}
                if len(method.phases) > 1:
                    record["losses"] = dict(zip(method.phases, mean))
                postfix = {"loss": f"{record['loss']:.4g}", "lr": f"{lr:.3g}", "img_s": f"{record['images_per_s']:.1f}"}
                bar.set_postfix(postfix, refresh=False)
                if metrics is not None:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                accelerator.log({k: record[k] for k in ("loss", "lr", "images_per_s", "data_wait_s")}, step=step)
                t_log, wait, losses = now, 0.0, []
            if step % t.checkpoint_every == 0 and step < t.max_steps:
                save_checkpoint(accelerator, net, recipe, step)
            if stop:
                accelerator.print(f"train.max_minutes ({t.max_minutes}) reached at step {step}: stopping")
                break
    finally:
        bar.close()
        for f in (keys_file, metrics):
            if f is not None:
                f.close()
    return step
