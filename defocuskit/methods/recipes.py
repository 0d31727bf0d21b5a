"""Recipes resolved against their method: the method's own config sections (model, objective, sampler) typed
from a recipe file or a plain dict, and undotted overrides given their section."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from defocuskit.config.recipe import DataConfig, InferenceConfig, OptimConfig, Recipe, TrainConfig, find_recipe
from defocuskit.config.source import RecipeSource
from defocuskit.config.typed import (
    RecipeError,
    apply_overrides,
    build_dataclass,
    nearest,
    parse_value,
    read_yaml,
    repeated_override,
    yaml_problem,
)
from defocuskit.methods import get_method


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe YAML (a file, or a packaged recipe by name: `find_recipe`), apply overrides, and resolve
    it against the method's config classes; a RecipeError names the file, or the override, that set the value."""
    return load_recipe_source(path, overrides)[0]


def load_recipe_source(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, RecipeSource]:
    """`load_recipe`, and where the recipe's values came from: to name in the errors of later checks
    (`RecipeSource.locate`)."""
    given = Path(path)
    path = find_recipe(path)
    try:
        raw = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it "
                          "as UTF-8") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections")
    expanded = expand_short_keys(raw, list(overrides))
    twice = repeated_override(expanded, list(overrides))
    if twice is not None:
        raise RecipeError(twice)
    source = RecipeSource(str(given) if given.is_file() else f"packaged recipe {path.stem}",
                          tuple((item.partition("=")[0].strip(), str(original))
                                for item, original in zip(expanded, overrides)))
    try:
        return resolve_recipe(apply_overrides(raw, expanded)), source
    except RecipeError as exc:
        raise source.locate(exc) from None


def expand_short_keys(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Give undotted keys that are not top-level recipe keys their section: `max_steps=9` -> `train.max_steps=9`.

    A key found in no section is left as it is (and reported as unknown), unless it is a misspelling of one
    ("did you mean"); one found in several is an error.
    """
    top = {f.name for f in dataclasses.fields(Recipe)}
    name = raw.get("method")
    for item in overrides:
        if item.split("=", 1)[0].strip() == "method":
            name = parse_value(item.split("=", 1)[1], "method")
    sections: dict[str, type] = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig,
                                 "inference": InferenceConfig}
    if isinstance(name, str):
        try:
            method = get_method(name)
        except ValueError:
            method = None
        if method is not None:
            sections.update(model=method.ModelConfig, objective=method.ObjectiveConfig, sampler=method.SamplerConfig)
    dotted = {f.name: f"{s}.{f.name}" for s, cls in reversed(sections.items()) for f in dataclasses.fields(cls)}
    dotted.update({k: k for k in top})  # bare name -> the key to write
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
            elif (near := nearest(key, dotted)) is not None:
                raise RecipeError(f"unknown recipe key '{key}' (override '{item}'); did you mean '{dotted[near]}'?")
        out.append(item)
    return out


def resolve_recipe(raw: dict[str, Any]) -> Recipe:
    """Turn a plain dict into a typed Recipe with the method's own sections. (A model file's recipe of an older
    version: `Method.upgrade_recipe` first.)"""
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
