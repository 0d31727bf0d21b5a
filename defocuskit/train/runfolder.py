"""Whose files a run folder (`output_dir`) holds: before a run writes anything, the folder must be one it may
write into, and every file it would replace (model.safetensors, recipe.yaml, metrics.jsonl, and where the run
validates best.safetensors and the grids val/step-NNNNNNN.png) must be one an earlier `defocuskit train` wrote,
judged by the file's own content; anything else is refused, naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from defocuskit.config import recipe as recipes
from defocuskit.data.reader import ShardError, read_manifest
from defocuskit.data.tar_checks import MANIFEST
from defocuskit.io.modelfile import MODEL_FORMAT, read_metadata
from defocuskit.train.checkpoints import GRID_NAME, METRICS, VAL_FOLDER, grid_written_by_train, validated_steps
from defocuskit.train.checks import TrainingError
from defocuskit.train.exports import BEST_FILE, MODEL_FILE, another_run_folder, best_written_by_train

RECIPE_FILE = "recipe.yaml"
RECIPE_HEADER = "# resolved recipe; rerun with: defocuskit train recipe.yaml"
METRIC_KEYS = ("loss", "val_psnr")  # a metrics.jsonl row has its step and one of these


def model_written_by_train(path: Path) -> bool:
    """Whether `path` is a model file a training run exported (defocuskit metadata, not imported weights)."""
    try:
        meta = read_metadata(path)
    except ValueError:
        return False
    return meta.get("format") == MODEL_FORMAT and "recipe" in meta and "method" in meta and "release" not in meta


def recipe_written_by_train(path: Path) -> bool:
    """Whether `path` is the resolved recipe a run wrote: its header line, then a mapping with a method."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (text.splitlines()[:1] == [RECIPE_HEADER] and isinstance(data, dict)
            and isinstance(data.get("method"), str) and isinstance(data.get("train"), dict))


def metrics_written_by_train(path: Path) -> bool:
    """Whether every line of `path` is a defocuskit metrics row (the last may be cut short by a kill)."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and i > 0:  # a row half-written when the run was killed
                continue
            return False
        if not (isinstance(row, dict) and isinstance(row.get("step"), int) and any(k in row for k in METRIC_KEYS)):
            return False
    return True


OWNED = {"model.safetensors": model_written_by_train, RECIPE_FILE: recipe_written_by_train,
         "metrics.jsonl": metrics_written_by_train}


def check_run_folder(output_dir: str | Path, validates: bool = True) -> None:
    """TrainingError (one line, naming the path) when a run may not write into `output_dir`: a file where the
    folder (or one above it) should be, a folder it cannot write to, a shard folder or the packaged recipes (no run
    folder, `_not_a_run_folder`), or a file there that training would replace
    and an earlier defocuskit run did not write (with `validates`, a run that validates or keeps its best weights,
    also best.safetensors and the grids in val/)."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"output_dir {out}: exists and is not a folder; give a folder")
    if (why := _not_a_run_folder(out)) is not None:
        raise TrainingError(f"output_dir {out}: {why}, so nothing was written: give another output_dir")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TrainingError(f"output_dir {out}: {existing} is a file, not a folder; give another output_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrainingError(f"output_dir {out}: {existing} is not writable (permission denied); "
                            "give another output_dir")
    if existing != out:
        return
    for path in [out / METRICS, *out.glob("seen-keys-rank*.jsonl")]:  # appended to: never through a link
        if path.is_symlink():
            raise TrainingError(f"{path}: a link; the run appends its own rows there and never writes through a "
                                "link, so nothing was written: move it away or give another output_dir")
    for name, owned in OWNED.items():
        path = out / name
        if path.exists() and not (path.is_file() and owned(path)):
            raise TrainingError(f"{path}: not written by an earlier `defocuskit train` run; training would replace "
                                "it, so nothing was written: move it away or give another output_dir")
    for name in (MODEL_FILE, BEST_FILE) if validates else (MODEL_FILE,):
        if other := another_run_folder(out / name, out):  # a copy: the run would replace the user's file
            raise TrainingError(f"{out / name}: `defocuskit train` wrote it into another run folder, {other}, which "
                                "no longer holds it; this run would replace the only copy, so nothing was written: "
                                "move it away or give another output_dir")
    if validates:
        _check_validation_files(out)


def _not_a_run_folder(out: Path) -> str | None:
    """Why `out` may hold no run, where it may not: the packaged recipes folder (or one in it: every YAML file there,
    the run's recipe.yaml too, is listed as a recipe) or a shard folder `defocuskit ingest` wrote (its dataset) that
    holds no run yet."""
    package = recipes.PACKAGED_RECIPES.resolve()
    real = out.resolve()
    if real == package or package in real.parents:
        return f"inside defocuskit's packaged recipes ({package}), the package's own folder (its YAML files are " \
            "listed as recipes: the run's recipe.yaml would be one)"
    if not (out / MANIFEST).is_file() or recipe_written_by_train(out / RECIPE_FILE):  # a run's, shards put in since
        return None
    try:
        read_manifest(out)
    except (FileNotFoundError, ShardError):
        return None  # a manifest.json of the user's, which a run leaves alone
    return "a shard folder (its manifest.json is ingest's): the run's files would be mixed into its dataset"


def _check_validation_files(out: Path) -> None:
    """TrainingError naming the first of best.safetensors, val/ or a val/step-NNNNNNN.png that a run would write
    over and an earlier run did not write."""
    _refuse = "not written by an earlier `defocuskit train` run; training would replace it, so nothing was written"
    best = out / BEST_FILE
    if (best.exists() or best.is_symlink()) and not best_written_by_train(best):
        raise TrainingError(f"{best}: {_refuse}: move it away or give another output_dir")
    val = out / VAL_FOLDER
    if (val.exists() or val.is_symlink()) and (val.is_symlink() or not val.is_dir()):
        raise TrainingError(f"{val}: not a folder; the run writes its validation grids there: move it away or give "
                            "another output_dir")
    validated = set(validated_steps(out / METRICS))  # read once, not per grid
    for grid in sorted(val.iterdir()) if val.is_dir() else ():
        if GRID_NAME.fullmatch(grid.name) and not grid_written_by_train(grid, validated):
            raise TrainingError(f"{grid}: {_refuse}: move it away or give another output_dir")
