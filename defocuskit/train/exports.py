"""The weights a run exports into its run folder (`output_dir`): model.safetensors at the end, best.safetensors with
train.keep_best; the run folder they record (`run_folder_metadata`), and whether a file is an export of this run
folder (`written_here`), of another one (`another_run_folder`), or none: what a fresh start may remove and what a
resume without a checkpoint must not start beside (`earlier_weights`)."""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

MODEL_FILE = "model.safetensors"  # the run's export: the EMA weights when the run ends
BEST_FILE = "best.safetensors"  # train.keep_best: EMA weights of the best validation PSNR (best_step in metadata)
RUN_FOLDER = "run_folder"  # an export's metadata: the absolute run folder it was exported into (written_here)


def best_written_by_train(path: Path) -> bool:
    """True for a best.safetensors that a run exported (its metadata names the best step), not a user's file."""
    if path.is_symlink() or not path.is_file():
        return False
    from defocuskit.io.modelfile import MODEL_FORMAT, read_metadata

    try:
        meta = read_metadata(path)
    except ValueError:  # not a safetensors file: not ours
        return False
    return meta.get("format") == MODEL_FORMAT and "best_step" in meta


def run_folder_metadata(out: Path) -> dict[str, str]:
    """The metadata entry an export into the run folder `out` records: the folder as an absolute, resolved path (the
    recipe's output_dir may be relative to the working folder of the run, which a later command need not share)."""
    return {RUN_FOLDER: str(Path(out).resolve())}


def written_here(path: Path, out: Path, kind: str = MODEL_FILE) -> bool:
    """True for a file that a run wrote into the run folder `out` as `kind`: MODEL_FILE, its export (a run's
    metadata: format, method, recipe; not an imported release), or BEST_FILE, train.keep_best's weights (the same,
    and best_step); a plain file whose recorded run folder is `out`, whatever the working folder
    now, or, for one that records none (written before they did), whose recipe's output_dir is `out`."""
    if path.is_symlink() or not path.is_file():
        return False
    from defocuskit.io.modelfile import MODEL_FORMAT, read_metadata

    try:
        meta = read_metadata(path)
        if meta.get("format") != MODEL_FORMAT or "method" not in meta or "release" in meta:
            return False
        if kind == BEST_FILE and "best_step" not in meta:
            return False
        folder = recorded_folder(meta)
        return folder is not None and os.path.samefile(folder, out)
    except (ValueError, RecursionError, OSError):  # not a run's export, or its folder is gone
        return False


def recorded_folder(meta: dict[str, str]) -> str | None:
    """The run folder a run's model file records in its metadata `meta`: its run_folder (absolute: a copy of the file
    into another folder names the folder it came from), else, for a file written before exports recorded it, its
    recipe's output_dir (as given: relative to the working folder of that run); None where it records neither."""
    if RUN_FOLDER in meta:
        return meta[RUN_FOLDER] if os.path.isabs(meta[RUN_FOLDER]) else None
    try:
        folder = json.loads(meta.get("recipe", "null")).get("output_dir")
    except (ValueError, RecursionError, AttributeError):
        return None
    return folder if isinstance(folder, str) and folder else None


def written_into(path: Path) -> str:
    """The run folder a run's model file records (recorded_folder), for a message."""
    from defocuskit.io.modelfile import read_metadata

    return recorded_folder(read_metadata(path)) or "no folder recorded"


def another_run_folder(path: Path, out: Path) -> str | None:
    """The run folder a plain model file records (its absolute run_folder) where that folder still exists, is not
    `out`, and no longer holds the same file under its name: a copy of another run's export or best weights that is
    now the only one, which a run in `out` would replace; else None (no such file, none recorded, a folder since
    moved or removed, as a renamed run folder's own export records, or a copied run folder whose original still
    holds the file byte for byte, so that replacing the copy loses nothing)."""
    if path.is_symlink() or not path.is_file():
        return None
    from defocuskit.io.modelfile import read_metadata

    try:
        meta = read_metadata(path)
        folder = recorded_folder(meta) if RUN_FOLDER in meta else None  # a recipe's output_dir may be relative
        if folder is None or not os.path.isdir(folder):
            return None
        original = Path(folder) / path.name
        if os.path.samefile(folder, out) or original.is_file() and filecmp.cmp(original, path, shallow=False):
            return None
        return folder
    except (ValueError, OSError):
        return None


def earlier_weights(out: Path) -> Path | None:
    """The model.safetensors or best.safetensors that a run exported into the run folder `out` (what a fresh start
    removes), or None."""
    return next((out / name for name in (MODEL_FILE, BEST_FILE) if written_here(out / name, out, name)), None)
