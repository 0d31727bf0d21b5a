"""The run folder's checkpoints: Accelerate `save_state` folders written under a temporary name and renamed when
complete, the newest kept; resuming from one (with a clear error for a damaged or foreign one); the leftovers
of killed runs; metrics.jsonl cut back to the resumed step; a fresh start's removal of what earlier runs wrote (their
exported weights judged by `exports`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Collection

import torch
from torch import nn

from defocuskit.config.recipe import Recipe, recipe_to_dict
from defocuskit.io.atomic import atomic_write
from defocuskit.io.tagged_png import written_by
from defocuskit.train.checks import TrainingError
from defocuskit.train.exports import BEST_FILE, MODEL_FILE, best_written_by_train, written_here, written_into
from defocuskit.train.state import CheckpointError
from defocuskit.train.stream import ShardStream

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
WEIGHT_SUMS = re.compile(r"weights-rank\d+\.json")  # DEFOCUSKIT_LOG_KEYS: each process's checksums of its weights
VAL_FOLDER = "val"  # val/step-NNNNNNN.png: crops of input, output and reference per f-number
GRID_TAG = "defocuskit train"  # the grids' PNG text chunk: a file a later run may replace (io/tagged_png)
# what a checkpoint folder consists of: the loop's own files (train.state) and what Accelerate's save_state writes
CHECKPOINT_FILE = re.compile(
    r"recipe\.json|loop_state\.json|ema\.safetensors|rng-rank\d+\.safetensors|scaler\.pt"
    r"|(model|pytorch_model)(_\d+)?\.(safetensors|bin)|(optimizer|scheduler|sampler|dl_state_dict)(_\d+)?\.bin"
    r"|(random_states|custom_checkpoint)_\d+\.pkl"
)
LEFTOVER = re.compile(r"\.tmp-step-\d+|\.trash-step-\d+-\d+")  # save_checkpoint's temporary and trash folders
GRID_NAME = re.compile(r"step-(\d+)\.png")  # a validation grid's file name in VAL_FOLDER
TMP_STEP = re.compile(r"\.tmp-step-(\d+)")  # save_checkpoint's temporary folder of step N
WORDS = {"world_size": "processes", "num_workers": "DataLoader workers", "shuffle_block": "data.shuffle_buffer",
         "split": "split", "references": "distinct sharp references kept"}  # a data position's keys, as named


def _not_checkpoint_files(folder: Path) -> list[str]:
    """The names in a folder that are not files a checkpoint consists of (recipe.json or not)."""
    return sorted(p.name for p in folder.iterdir() if not (p.is_file() and CHECKPOINT_FILE.fullmatch(p.name)))


def foreign_files(folder: Path) -> list[str]:
    """The names in a checkpoints/step-N folder that no checkpoint consists of (all of them without recipe.json);
    ["(a link)"] for a link, which train never writes (another run's checkpoint linked in: its files are that run's)."""
    if folder.is_symlink():
        return ["(a link)"]
    if not (folder / "recipe.json").is_file():
        return sorted(p.name for p in folder.iterdir()) or ["(no recipe.json)"]
    return _not_checkpoint_files(folder)


def _kept_line(folder: Path, kept: list[str]) -> str:
    """What a run says of a checkpoint folder that kept files defocuskit did not write, or of a link to one."""
    if folder.is_symlink():
        return (f"kept {folder}: a link (to {os.readlink(folder)}), which defocuskit did not write; nothing was "
                "removed through it")
    return (f"kept {folder}: it holds files defocuskit did not write ({', '.join(kept[:3])}"
            f"{', ...' if len(kept) > 3 else ''}); its checkpoint files were removed")


def not_ours(folder: Path) -> str:
    """Why a checkpoints/step-N folder (or its temporary) is not one a run may replace: a link, or its files."""
    return "a link, which defocuskit did not write" if folder.is_symlink() else "holds files defocuskit did not write"


def blocking_step_folder(output_dir: str | Path, after: int, upto: int, every: int) -> Path | None:
    """A checkpoints/step-N folder holding files defocuskit did not write, or its temporary `.tmp-step-N` holding
    anything a checkpoint does not consist of, where a run from step `after` to `upto`, saving every `every` steps,
    would save its checkpoint N; None when there is none."""
    for step, p in _step_folders(output_dir):
        if after < step <= upto and (step % every == 0 or step == upto) and foreign_files(p):
            return p
    folder = Path(output_dir) / CHECKPOINTS
    for tmp in sorted(folder.glob(".tmp-step-*")) if folder.is_dir() else ():
        match = TMP_STEP.fullmatch(tmp.name)
        step = int(match.group(1)) if match else -1
        if after < step <= upto and (step % every == 0 or step == upto) and (
                tmp.is_symlink() or tmp.is_dir() and _not_checkpoint_files(tmp)):
            return tmp
    return None


def _step_folders(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Every checkpoints/step-N folder (step, folder), oldest first, complete or not."""
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted((int(p.name[5:]), p) for p in folder.iterdir()
                  if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit())


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, folder), oldest first; temporary and partial folders are ignored."""
    return [(step, p) for step, p in _step_folders(output_dir) if (p / "recipe.json").is_file()]


def _remove(folder: Path) -> None:
    """Remove a checkpoint that holds only its own files (moved aside first: a half-deleted folder must never look
    like a checkpoint)."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    os.replace(folder, trash)
    remove_checkpoint(trash)


def save_checkpoint(accelerator: Any, model: nn.Module, recipe: Recipe, step: int) -> Path:
    """Accelerate `save_state` into a temporary folder, renamed to checkpoints/step-NNNNNNN when complete."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingError(f"weights are not finite after step {step}; no checkpoint written")
    folder = Path(recipe.output_dir) / CHECKPOINTS
    final = folder / f"step-{step:07d}"
    tmp = folder / f".tmp-step-{step:07d}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        if tmp.is_dir():  # a killed save's (its checkpoint files only: blocking_step_folder checked before the run)
            remove_checkpoint(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "recipe.json").write_text(json.dumps(recipe_to_dict(recipe), indent=1))
        if (final.exists() or final.is_symlink()) and foreign_files(final):
            remove_checkpoint(tmp)
            raise TrainingError(f"{final}: {not_ours(final)}; checkpoint not saved: move it away")
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
        pruned = list_checkpoints(recipe.output_dir)[: -recipe.train.keep_checkpoints]
        for i, (_, old) in enumerate(pruned):
            if old.is_symlink():  # a link stays a checkpoint: said once, when it leaves the kept ones
                if i == len(pruned) - 1:
                    accelerator.print(_kept_line(old, []))
            elif foreign_files(old):  # someone put files into it: only the checkpoint's own go
                accelerator.print(_kept_line(old, remove_checkpoint(old)))
            else:
                _remove(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, checkpoint: Path) -> None:
    """Accelerate `load_state` (with the loop's hooks); any failure names the checkpoint and what to do."""
    import pickle

    advice = "Delete that folder to resume from an earlier checkpoint, or start over with --no-resume"
    try:
        accelerator.load_state(str(checkpoint))
    except CheckpointError as e:
        raise TrainingError(f"cannot resume: {e}") from None
    except pickle.UnpicklingError:
        culprit = _unsafe_pickle(checkpoint)
        raise TrainingError(
            f"cannot resume from {checkpoint}: {culprit or 'a pickled file in it'} holds objects other than tensors "
            f"and plain containers; refused (read with torch.load(weights_only=True), which runs no code). {advice}"
        ) from None
    except Exception as e:  # a damaged or altered checkpoint: refuse, naming it, whatever the library raised
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TrainingError(f"cannot resume from {checkpoint}: {type(e).__name__}: {reason}. {advice}") from None


def _unsafe_pickle(checkpoint: Path) -> str | None:
    """The name of the first pickled file in `checkpoint` that the restricted unpickler refuses, or None."""
    import pickle

    import torch

    for path in sorted(p for p in checkpoint.iterdir() if p.suffix in (".bin", ".pkl", ".pt", ".pth")):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            return path.name
        except Exception:  # damaged in another way: not what was refused
            continue
    return None


def check_data_position(accelerator: Any, saved: dict[str, Any] | None, stream: ShardStream, batch: int) -> None:
    """Warn when the data stream cannot continue where the checkpoint left it (other shards or layout), naming what
    changed with both values; the same shards read by another number of processes are not called other shards."""
    if saved is None or not accelerator.is_main_process:
        return
    now, saved = stream.position(batch), {"split": stream.former_split(), **saved}  # older records have no split
    said = [] if stream.same_shards(saved) else ["shards"]
    said += [f"{word} {saved.get(k)!r} -> {now.get(k)!r}" for k, word in WORDS.items()
             if saved.get(k) != now.get(k) and not (k == "references" and said)]  # other shards: other references
    if said:
        accelerator.print(
            f"warning: the training data differ from the checkpoint's ({', '.join(said)}): the run goes "
            f"on from batch {batch} of the new stream, not the exact continuation of the interrupted run"
        )


def grid_path(out: Path, step: int) -> Path:
    """The validation grid of `step` in the run folder `out`."""
    return out / VAL_FOLDER / f"step-{step:07d}.png"


def clean_run_folder(out: Path, fresh: bool, say: Callable[[str], Any] = print) -> None:
    """Remove temporary leftovers of killed runs; with `fresh`, also earlier checkpoints, metrics and exports (so a
    run stopped before its own export leaves no earlier run's model beside its checkpoints). Only what defocuskit
    wrote goes: complete checkpoints (as `list_checkpoints` finds them) and the temporary and trash folders of
    killed saves lose the files a checkpoint consists of, and a folder left holding anything else, or a link, is
    kept, said in one line through `say`; so is a model.safetensors or best.safetensors that train did not write
    into this folder (`written_here`)."""
    folder = out / CHECKPOINTS
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        if p.is_dir() and not p.is_symlink() and LEFTOVER.fullmatch(p.name) and (kept := remove_checkpoint(p)):
            say(_kept_line(p, kept))
    if not fresh:
        return
    for _, checkpoint in list_checkpoints(out):
        if kept := remove_checkpoint(checkpoint):
            say(_kept_line(checkpoint, kept))
    # what an earlier run wrote: its metrics, the grids its validation rows list, its best weights
    validated = validated_steps(out / METRICS)
    for grid in (grid_path(out, step) for step in validated):
        if grid_written_by_train(grid, validated):  # not a link or a folder of that name
            grid.unlink()
    (out / METRICS).unlink(missing_ok=True)
    best = out / BEST_FILE
    if written_here(best, out, BEST_FILE):
        best.unlink()
    elif best_written_by_train(best):  # another run folder's (copied in): not this run's best
        say(f"kept {best}: `defocuskit train` wrote it into another output_dir ({written_into(best)}), not this "
            "one; it is not this run's best, and a run with train.keep_best replaces it with its own")
    model = out / MODEL_FILE
    if written_here(model, out):
        model.unlink()
    elif model.exists() or model.is_symlink():
        say(f"kept {model}: `defocuskit train` did not export it into this folder (a link, or a model of another "
            "output_dir); it is not this run's model until the run exports, which replaces it")
    for sums in sorted(out.iterdir()):
        if WEIGHT_SUMS.fullmatch(sums.name) and sums_written_by_train(sums):
            sums.unlink()


def remove_checkpoint(checkpoint: Path) -> list[str]:
    """Delete the files a checkpoint consists of (recipe.json first, so a half-deleted folder never looks like a
    checkpoint), then the folder if nothing else is left; the names of what was left, sorted. Nothing is removed
    through a link (["(a link)"])."""
    if checkpoint.is_symlink():
        return ["(a link)"]
    (checkpoint / "recipe.json").unlink(missing_ok=True)
    for p in checkpoint.iterdir():
        if p.is_file() and not p.is_symlink() and CHECKPOINT_FILE.fullmatch(p.name):
            p.unlink()
    kept = sorted(p.name for p in checkpoint.iterdir())
    if not kept:
        checkpoint.rmdir()
    return kept


def validated_steps(metrics: Path) -> list[int]:
    """The steps of the validation rows ("val_psnr") of a metrics.jsonl."""
    steps = []
    for line in metrics.read_text().splitlines() if metrics.is_file() else []:
        try:
            row = json.loads(line)
            if isinstance(row, dict) and "val_psnr" in row:
                steps.append(int(row["step"]))
        except (ValueError, KeyError, TypeError):
            continue
    return steps


def sums_written_by_train(path: Path) -> bool:
    """True for a weights-rankR.json that a run wrote (DEFOCUSKIT_LOG_KEYS): its step and two checksums."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return not path.is_symlink() and path.is_file() and isinstance(data, dict) and set(data) == {
        "step", "weights", "ema"}


def grid_written_by_train(path: Path, validated: Collection[int]) -> bool:
    """True for a val/step-NNNNNNN.png a run wrote: tagged GRID_TAG, or (an older run's, untagged) the grid of a
    step in `validated`, the steps a run's metrics.jsonl records a validation for (`validated_steps`)."""
    if written_by(path, GRID_TAG):
        return True
    step = GRID_NAME.fullmatch(path.name)
    return step is not None and path.is_file() and not path.is_symlink() and int(step.group(1)) in validated


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows of `step`s after `step` from metrics.jsonl or a key log (written by a run that was stopped after
    its last checkpoint), and any row that is not one (cut short by a kill)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write(path, "".join(keep))
