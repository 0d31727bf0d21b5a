"""Exported models rebuilt: the method's network from a model file's recipe, with its weights."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from defocuskit.config.recipe import Recipe
from defocuskit.io.modelfile import dtype_misfit, read_model_file
from defocuskit.methods import get_method
from defocuskit.methods.base import Method
from defocuskit.methods.recipes import resolve_recipe


def load_model(
    path: str | Path, device: str | torch.device = "cpu", expect_method: str | None = None
) -> tuple[Method, Recipe, nn.Module]:
    """Rebuild the network of an exported model, load its weights (strict) and put it in eval mode."""
    tensors, meta = read_model_file(path)
    if expect_method is not None and meta["method"] != expect_method:
        raise ValueError(f"{path}: a '{meta['method']}' model, but a '{expect_method}' model is needed")
    raw = meta["recipe"]
    if raw.get("method") != meta["method"]:
        raise ValueError(f"{path}: the file says it holds a '{meta['method']}' model but its recipe is for "
                         f"'{raw.get('method')}'; the file was altered or mislabelled")
    try:
        method = get_method(str(raw.get("method")))
    except ValueError as exc:  # a method this version does not have (a newer file, or an altered one)
        raise ValueError(f"{path}: {exc}") from None
    try:
        recipe = resolve_recipe(method.upgrade_recipe(raw))  # files of older versions read in today's keys
    except ValueError as exc:  # a RecipeError names the key, not the file
        raise ValueError(f"{path}: the recipe in its metadata: {exc}") from None
    check_shapes(method, recipe, tensors, path)  # before the network is allocated
    model = method.build(recipe.model, recipe.objective, False)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the '{method.name}' network of its recipe: {e}") from None
    return method, recipe, model.to(device).eval()


def check_shapes(method: Method, recipe: Recipe, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise ValueError naming the first parameter whose shape or dtype the recipe's network does not share with the
    file (or a missing / unexpected key), from a network built on the meta device: nothing is allocated, so
    metadata that declares a huge network (`model.width: 20000`) is refused before it costs memory, and one of more
    modules than the file has tensors for (`model.middle_blocks: 20000`) is refused while it is being built."""
    try:
        with torch.device("meta"), _at_most(len(tensors)):
            skeleton = method.build(recipe.model, recipe.objective, False)
    except _Oversized as exc:
        raise ValueError(f"{path}: the recipe in its metadata describes a '{method.name}' network of more {exc} "
                         f"than a network of the file's {len(tensors)} tensors has; the recipe does not match the "
                         "weights") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a recipe's network is the file's, said in one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path}: the recipe in its metadata does not build a '{method.name}' network "
                         f"({type(exc).__name__}: {first})") from None
    expected = {k: (tuple(v.shape), v.dtype) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = (f"missing {len(missing)} (e.g. '{missing[0]}')" if missing else "") + (
            ("; " if missing else "") + f"unexpected {len(unexpected)} (e.g. '{unexpected[0]}')" if unexpected else "")
        raise ValueError(f"{path}: weights do not fit the '{method.name}' network of its recipe: {what}")
    for key, (shape, dtype) in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"{path}: tensor '{key}' is {tuple(tensors[key].shape)} in the file but "
                             f"{shape} in the '{method.name}' network its recipe describes; the recipe does not "
                             "match the weights")
        if (problem := dtype_misfit(key, tensors[key], dtype)) is not None:
            raise ValueError(f"{path}: {problem}")


class _Oversized(Exception):
    """A network under construction outgrew the model file (its message: what there is more of)."""


@contextlib.contextmanager
def _at_most(n_tensors: int) -> Iterator[None]:
    """Stop (_Oversized) a network being built in this thread once it registers more parameters than `n_tensors`
    (each parameter is a tensor of its state dict), or more modules and buffers than a network of that many tensors
    has (8 per tensor, and 256): a recipe's block counts cost Python objects even on the meta device."""
    thread, counts = threading.get_ident(), {"parameters": 0, "modules and buffers": 0}
    limits = {"parameters": n_tensors, "modules and buffers": 8 * n_tensors + 256}

    def count(what: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            if threading.get_ident() == thread:
                counts[what] += 1
                if counts[what] > limits[what]:
                    raise _Oversized(what)
        return hook

    handles = [register_module_parameter_registration_hook(count("parameters")),
               register_module_buffer_registration_hook(count("modules and buffers")),
               register_module_module_registration_hook(count("modules and buffers"))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
