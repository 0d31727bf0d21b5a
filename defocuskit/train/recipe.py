"""Recipes: YAML files with dotted key=value overrides, checked against typed dataclasses."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from defocuskit.config import RecipeError, parse_value, apply_overrides, build_dataclass


@dataclass
class DataConfig:
    # shard pattern (brace or glob) or shard folder, or a list of them (their shards together)
    train: str | list[str] = "shards/train-*.tar"
    image_size: int = 256  # training crop size
    channels: int = 3  # 1: luminance (the HIDD paper reads grayscale)
    batch_size: int = 8  # per process
    num_workers: int = 2
    shuffle_buffer: int = 256
    resampled: bool = True  # endless stream of shards (webdataset resampled shards)
    augment: bool = True  # flips and 90-degree rotations, applied alike to every member


@dataclass
class OptimConfig:
    name: str = "adam"  # "adam" or "adamw"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" or "cosine" (after warm-up)
    grad_clip: float | None = 1.0


@dataclass
class TrainConfig:
    max_steps: int = 1000
    grad_accum: int = 1
    mixed_precision: str = "no"  # "no", "fp16", "bf16"
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    log_with: str | None = None  # an Accelerate tracker name ("tensorboard", "wandb", ...)
    max_minutes: float | None = None  # stop (and export) after this wall time


@dataclass
class Recipe:
    method: str
    output_dir: str = "runs/default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: Any = None  # the method's ModelConfig
    objective: Any = None  # the method's ObjectiveConfig
    sampler: Any = None  # the method's SamplerConfig


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe YAML, apply overrides, and resolve it against the method's config classes."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections")
    raw = apply_overrides(raw, expand_short_keys(raw, list(overrides)))
    return resolve_recipe(raw)


def expand_short_keys(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Give undotted keys that are not top-level recipe keys their section: `max_steps=9` -> `train.max_steps=9`.

    A key found in no section is left as it is (and reported as unknown); one found in several is an error.
    """
    from defocuskit.methods import get_method

    top = {f.name for f in dataclasses.fields(Recipe)}
    name = raw.get("method")
    for item in overrides:
        if item.split("=", 1)[0].strip() == "method":
            name = parse_value(item.split("=", 1)[1])
    sections: dict[str, type] = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig}
    if isinstance(name, str):
        try:
            method = get_method(name)
        except ValueError:
            method = None
        if method is not None:
            sections.update(model=method.ModelConfig, objective=method.ObjectiveConfig, sampler=method.SamplerConfig)
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if sep and "." not in key and key not in top:
            owners = [s for s, cls in sections.items() if key in {f.name for f in dataclasses.fields(cls)}]
            if len(owners) > 1:
                choices = ", ".join(f"{o}.{key}" for o in owners)
                raise RecipeError(f"override '{key}' is ambiguous: write one of {choices}")
            if owners:
                item = f"{owners[0]}.{key}={value}"
        out.append(item)
    return out


def resolve_recipe(raw: dict[str, Any]) -> Recipe:
    """Turn a plain dict into a typed Recipe, with the method's own sections."""
    from defocuskit.methods import get_method

    if "method" not in raw:
        raise RecipeError("recipe key 'method' is missing")
    method = get_method(raw["method"])
    raw = dict(raw)
    sections = {
        "model": method.ModelConfig,
        "objective": method.ObjectiveConfig,
        "sampler": method.SamplerConfig,
    }
    typed = {k: build_dataclass(cls, raw.pop(k, None), k) for k, cls in sections.items()}
    recipe = build_dataclass(Recipe, raw)
    for k, v in typed.items():
        setattr(recipe, k, v)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (tuples as lists), ready for YAML/JSON."""

    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (what `--dry-run` prints and each run folder keeps)."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
