"""Model files: one `.safetensors` file with the EMA weights, the method name and the resolved recipe in its
metadata. Reading and writing them needs nothing above this module (methods read estimator files with it)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import defocuskit
from defocuskit.io.atomic import atomic_path
from defocuskit.io.release import describe_head

MODEL_FORMAT = "defocuskit-model-1"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")  # torch.save files: imported, never read as model files
MODEL_FILE_MODE = stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH  # 0644


def save_model(path: str | Path, state_dict: dict[str, torch.Tensor], method: str, recipe: dict[str, Any],
               extra: dict[str, str] | None = None, exclusive: bool = False, partial: str | None = None) -> None:
    """Write `state_dict` as safetensors with the method and recipe in the metadata (temp file, then rename);
    `extra` adds text entries (e.g. the provenance of fine-tuned weights: init_from, init_from_sha256); `exclusive`:
    never over a file at `path` (FileExistsError naming it, even for one that appeared meanwhile); `partial`: the
    token of the temporary that the caller's journal lists (`atomic.atomic_path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (tied weights): give every entry its own copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    metadata = {
        "method": method,
        "recipe": json.dumps(recipe),
        "format": MODEL_FORMAT,
        "defocuskit_version": defocuskit.__version__,
        **{k: str(v) for k, v in (extra or {}).items()},
    }
    # readable by collaborators on shared storage, whatever the umask
    with atomic_path(path, MODEL_FILE_MODE, partial=partial, exclusive=exclusive) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the metadata ("method", "recipe" parsed, "format", "defocuskit_version") of a model file."""
    path = _model_path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(path, e) from None
    meta = _model_metadata(meta, path)
    check_finite(tensors, path)
    return tensors, meta


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file as `read_model_file` gives it, without reading its tensors; the same errors
    (a folder, a missing file, a file that is not an exported model)."""
    path = _model_path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(path, e) from None
    return _model_metadata(meta, path)


def _model_path(path: str | Path) -> Path:
    """`path` as a Path; FileNotFoundError for a missing file, and for a folder naming the model file inside it."""
    path = Path(path)
    if path.is_dir():
        inside = path / "model.safetensors"
        hint = f"{inside}, the model the run exported" if inside.is_file() else "the .safetensors model file"
        raise FileNotFoundError(f"model file not found: {path} is a folder; give {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


def _model_metadata(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """A model file's metadata with its recipe parsed; ValueError where it is not an exported model's."""
    if meta.get("format") != MODEL_FORMAT or "method" not in meta or "recipe" not in meta:
        raise ValueError(f"{path}: no defocuskit metadata (not a model exported by `defocuskit train`)")
    try:
        recipe = json.loads(meta["recipe"])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the recipe in the metadata is not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: the recipe in the metadata is nested too deeply") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: the recipe in the metadata is not a mapping of sections (JSON "
                         f"{_JSON_KINDS.get(type(recipe), 'value')}); the file was altered")
    return {**meta, "recipe": recipe}


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _unreadable(path: Path, e: Exception) -> ValueError:
    """The one-line error for a model file that safetensors cannot read: what the file is where its first bytes
    show it is no safetensors file (a text file, an empty one, a checkpoint), and what was expected."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        head = b"\x00" * 8 + b"{"  # unreadable now: said in safetensors' own words below
    checkpoint = path.suffix in CHECKPOINT_SUFFIXES or head.startswith((b"PK\x03\x04", b"\x80"))
    hint = (": a PyTorch checkpoint? A published one of a ported method is imported by `defocuskit import-weights "
            "--method M` or defocuskit.load(path, method=M)") if checkpoint else ""
    if len(head) > 8 and head[8:9] == b"{":  # safetensors' header length, then its JSON header: a damaged one
        return ValueError(f"{path}: not a readable safetensors file ({e}){hint}")
    if head.startswith((b"PK\x03\x04", b"\x80")):
        what = "a zip archive or a pickle, as torch.save writes"
    else:
        what = describe_head(head) or f"binary data (it begins {head[:8].hex(' ')})"
    return ValueError(f"{path}: not a safetensors file: {what}; expected a .safetensors model file (`defocuskit "
                      f"train` exports model.safetensors){hint}")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The text metadata of a safetensors file, without reading its tensors; ValueError for an unreadable file."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(Path(path), e) from None


def weights_origin(meta: dict[str, str]) -> dict[str, Any]:
    """Where a model file's weights come from, from its metadata (read_metadata): a published release
    (`import-weights`: code, checkpoint, sha256) or a defocuskit training run (and the model it was fine-tuned from)."""
    if "release" in meta:
        release = json.loads(meta["release"])
        return {"kind": "release", "code": release.get("code"), "checkpoint": release.get("checkpoint"),
                "sha256": release.get("sha256")}
    origin = {"kind": "trained with defocuskit", "defocuskit_version": meta.get("defocuskit_version")}
    if meta.get("init_from"):
        origin.update(init_from=meta["init_from"], init_from_sha256=meta.get("init_from_sha256"))
    return origin


def trained_steps(meta: dict[str, str]) -> int | None:
    """The training steps a model file's weights are from, from its metadata (read_metadata): the export's "steps",
    train.keep_best's "best_step"; None where the file does not record them (an older export, an imported release)."""
    for key in ("steps", "best_step"):
        try:
            return int(meta[key])
        except (KeyError, ValueError):
            continue
    return None


def datasets_entry(names: list[str]) -> dict[str, str]:
    """The metadata entry of the datasets a run trained on (data.names.trained_on, read from the shard manifests when
    it exports): a model card names them from the file, not from whatever the folders hold when the card is made."""
    return {"datasets": json.dumps(list(names))}


def recorded_datasets(meta: dict[str, str]) -> list[str] | None:
    """The dataset names a model file's metadata records (`datasets_entry`), or None (an older export, a release)."""
    try:
        names = json.loads(meta["datasets"])
    except (KeyError, ValueError, TypeError):
        return None
    return names if isinstance(names, list) and names and all(isinstance(n, str) for n in names) else None


TRAIN_LONG_SIDE = "train_long_side_px"  # the training images' median long side in pixels (data.image_scale)


def long_side_entry(long_side: int | None) -> dict[str, str]:
    """The metadata entry of the training images' scale, the median long side in pixels of the photos its samples
    show (data.image_scale.median_long_side); empty where it is unknown (remote shards)."""
    return {TRAIN_LONG_SIDE: str(int(long_side))} if long_side else {}


def recorded_long_side(meta: dict[str, str]) -> int | None:
    """The training images' long side in pixels a model file's metadata records (`long_side_entry`), or None (an
    older export, an imported release, remote training shards)."""
    try:
        value = int(meta[TRAIN_LONG_SIDE])
    except (KeyError, ValueError, TypeError):
        return None
    return value if value > 0 else None


TRAIN_BLUR = "train_blur_px"  # how wide its training inputs' blur reads, px (data.image_scale.median_blur_px)


def blur_entry(blur_px: float | None) -> dict[str, str]:
    """The metadata entry of how wide the training inputs' blur reads in their own pixels
    (data.image_scale.median_blur_px); empty where it is unknown (remote shards, no blurred inputs)."""
    return {TRAIN_BLUR: f"{float(blur_px):.4g}"} if blur_px and blur_px > 0 else {}


def recorded_blur(meta: dict[str, str]) -> float | None:
    """How wide the training inputs' blur reads (`blur_entry`), in pixels, or None where not recorded."""
    try:
        value = float(meta[TRAIN_BLUR])
    except (KeyError, ValueError, TypeError):
        return None
    return value if value > 0 and value < float("inf") else None


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise ValueError naming the first tensor that holds NaN or inf (and how many others do) in `path`."""
    broken: list[tuple[str, int, int]] = []
    for name, t in tensors.items():
        if not (t.is_floating_point() or t.is_complex()):
            continue
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            broken.append((name, bad, t.numel()))
    if not broken:
        return
    name, bad, total = broken[0]
    others = f" (and {len(broken) - 1} more tensor{'s' if len(broken) > 2 else ''})" if len(broken) > 1 else ""
    raise ValueError(f"{path}: tensor '{name}' holds {bad} NaN/inf value{'s' if bad != 1 else ''} of {total}{others}; "
                     "the model is broken (was training diverging?)")


def dtype_misfit(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> str | None:
    """What is wrong with tensor `name` of a model file for a network that holds it as `dtype`, or None where it
    loads unchanged: integers or booleans for floating-point weights (or the reverse), and values `dtype` does not
    hold exactly (float16 and bfloat16 load into float32 as they are; float64 only where every value is a float32)."""
    if tensor.dtype == dtype:
        return None
    if tensor.is_floating_point() != dtype.is_floating_point or tensor.is_complex() != dtype.is_complex:
        return (f"tensor '{name}' is {_dtype_name(tensor.dtype)} in the file but {_dtype_name(dtype)} in the "
                "network; the file was altered (a model file holds the network's own dtypes)")
    if not torch.equal(tensor.to(dtype).to(tensor.dtype), tensor):
        return (f"tensor '{name}' is {_dtype_name(tensor.dtype)} in the file with values {_dtype_name(dtype)}, the "
                "network's dtype, does not hold: loading would change the model; convert the weights to "
                f"{_dtype_name(dtype)} yourself if that is meant")
    return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
