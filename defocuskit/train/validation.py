"""What the training loop does with a validation (the scoring itself is `eval.validation`, handed to the loop as a
`Validate` callable): the metrics.jsonl row, the trackers' scalars and image, the grid file and best.safetensors."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from defocuskit.config.recipe import Recipe, recipe_to_dict
from defocuskit.data.names import trained_on
from defocuskit.io.modelfile import datasets_entry, read_metadata, save_model
from defocuskit.io.tagged_png import write_tagged_png
from defocuskit.methods.base import Method
from defocuskit.train.checkpoints import GRID_TAG, METRICS, grid_path
from defocuskit.train.ema import EMA
from defocuskit.train.exports import BEST_FILE, best_written_by_train, run_folder_metadata

# (EMA state dict, step, accelerator) -> (metrics record with "val_psnr", grid image uint8 (H, W, 3) or None);
# called on every process (the scores are gathered), the record and grid matter on the main process
Validate = Callable[[dict[str, torch.Tensor], int, Any], tuple[dict[str, Any], "np.ndarray | None"]]


def tracker_values(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of a validation record for Accelerate's trackers: "val/psnr", "val/psnr_gain", ...,
    "val/f1.8/psnr_gain" (finite numbers only)."""
    out = {f"val/{k[4:]}": v for k, v in record.items() if k.startswith("val_") and not isinstance(v, dict)}
    for f, scores in record.get("val_by_f_number", {}).items():
        out.update({f"val/f{f}/{k}": v for k, v in scores.items() if k != "n"})
    return {k: float(v) for k, v in out.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def best_row(out: Path, step: int) -> tuple[float, int | None]:
    """The best "val_psnr" that metrics.jsonl records up to `step` (a resumed run continues from it), and the step of
    that row; (-inf, None) if none."""
    best, at = -math.inf, None
    path = out / METRICS
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("step", math.inf) <= step and row.get("val_psnr") is not None:
                if float(row["val_psnr"]) > best:
                    best, at = float(row["val_psnr"]), int(row["step"])
    return best, at


def best_so_far(out: Path, step: int) -> float:
    """The best "val_psnr" that metrics.jsonl records up to `step` (a resumed run continues from it); -inf if none."""
    return best_row(out, step)[0]


def resumed_best(out: Path, step: int, keep_best: bool) -> tuple[float, str | None, bool]:
    """The validation PSNR a run resumed at `step` must beat to replace best.safetensors, the line to say where
    the best of the earlier validations is not kept, and whether to write best.safetensors now from the resumed
    weights: with `keep_best`, its best.safetensors (of a step up to `step`) counts even without metrics.jsonl; a run
    whose best.safetensors is missing (removed, or keep_best was off) keeps the best of the validations from here on,
    said in one line, instead of never writing one. A best.safetensors of a step after `step` (a run stopped after it,
    resumed from an earlier checkpoint: its steps are redone, or changed by the recipe given now) is not this run's:
    the resumed weights replace it where the validation at `step` is the best up to it (they are its weights), else
    the validations from here on do, said in one line."""
    best, at = best_row(out, step)
    path = out / BEST_FILE
    if not keep_best:
        return best, None, False
    if not best_written_by_train(path):
        if best == -math.inf:
            return best, None, False
        return -math.inf, (f"note: {path} is missing (removed, or train.keep_best was off) while metrics.jsonl records "
                           f"validations up to step {step} (best PSNR {best:.2f} dB): it keeps the best of the "
                           "validations from here on"), False
    meta = read_metadata(path)
    try:
        saved_step, saved_psnr = int(meta["best_step"]), float(meta["val_psnr"])
    except (KeyError, ValueError):
        return best, None, False
    if saved_step <= step:
        return max(best, saved_psnr), None, False
    if at == step:
        return best, (f"note: {path} was of step {saved_step}, after step {step} this run resumes from: replaced by "
                      f"the step-{step} weights, the best validation up to it ({best:.2f} dB)"), True
    return -math.inf, (f"note: {path} is of step {saved_step}, after step {step} this run resumes from, and the best "
                       "validation up to it is not of the resumed weights: the validations from here on replace "
                       "it"), False


def log_images(accelerator: Any, name: str, image: np.ndarray, step: int) -> None:
    """Hand `image` (uint8 (H, W, 3)) to every tracker that takes images, in the form each expects."""
    for tracker in accelerator.trackers:
        if not hasattr(tracker, "log_images"):
            continue
        if getattr(tracker, "name", "") == "tensorboard":
            tracker.log_images({name: image[None]}, step=step, dataformats="NHWC")
        else:
            tracker.log_images({name: [image]}, step=step)


class ValidationHook:
    """Called by the loop at the validation steps; returns the seconds it took (not counted as training time)."""

    def __init__(self, validate: Validate, accelerator: Any, recipe: Recipe, method: Method, ema: EMA,
                 net: nn.Module, start: int, init: dict[str, str] | None = None) -> None:
        self.validate, self.accelerator, self.recipe, self.method, self.ema, self.net = (
            validate, accelerator, recipe, method, ema, net)
        # train.init_from's provenance and the training images' scale: best.safetensors carries them as the export
        self.init = dict(init or {})
        self.out = Path(recipe.output_dir)
        self.best = -math.inf
        if accelerator.is_main_process:
            for line in getattr(validate, "notes", []):  # e.g. validation shards that are training shards too
                accelerator.print(line)
            self.best, note, now = resumed_best(self.out, start, recipe.train.keep_best)
            if now:  # the main process's EMA weights: the ones it validated at `start` and exports
                self.save_best(self.ema.averaged_state_dict(net), start, self.best)
            if note:
                accelerator.print(note)

    def save_best(self, state: dict[str, torch.Tensor], step: int, psnr: float) -> None:
        """Write best.safetensors: `state`, with the step and validation PSNR in its metadata."""
        save_model(self.out / BEST_FILE, state, self.method.name, recipe_to_dict(self.recipe),
                   extra={**self.init, "best_step": str(step), "val_psnr": f"{psnr:.4f}",
                          **run_folder_metadata(self.out), **datasets_entry(trained_on(self.recipe.data.train))})

    def __call__(self, step: int, metrics: Any) -> float:
        t0 = time.time()
        state = self.ema.averaged_state_dict(self.net)
        if self.accelerator.num_processes > 1:  # the same on every process (BatchNorm's running statistics are
            from accelerate.utils import broadcast  # averaged every step): all score the bits the main one exports

            state = broadcast({k: v.clone() for k, v in state.items()}, from_process=0)
        record, grid = self.validate(state, step, self.accelerator)
        if self.accelerator.is_main_process:
            record = {**record, "time": time.time()}
            if metrics is not None:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            self.accelerator.log(tracker_values(record), step=step)
            summary = f"validation at step {step}: PSNR {record['val_psnr']:.2f} dB"
            if record.get("val_psnr_gain") is not None:
                summary += f" ({record['val_psnr_gain']:+.2f} over the input, {record['val_n']} pairs)"
            if record.get("val_skipped"):  # pairs eval would skip too (its notes): not in the scores
                summary += f"; {record['val_skipped']} pair(s) not scored (first: {record['val_skipped_first']})"
            if grid is not None:
                write_tagged_png(grid_path(self.out, step), grid, GRID_TAG)
                log_images(self.accelerator, "val/crops", grid, step)
            psnr = record.get("val_psnr")
            if self.recipe.train.keep_best and psnr is not None and psnr > self.best:
                self.best = float(psnr)
                self.save_best(state, step, self.best)
                summary += f"; best so far: {BEST_FILE}"
            self.accelerator.print(summary)
        return time.time() - t0
