"""Exported models rebuilt: the method's network from a model file's recipe, with its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from defocuskit.config.recipe import Recipe
from defocuskit.io.modelfile import read_model_file
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
    method = get_method(str(raw.get("method")))
    recipe = resolve_recipe(method.upgrade_recipe(raw))  # files of older versions read in today's keys
    model = method.build(recipe.model, recipe.objective, False)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the '{method.name}' network of its recipe: {e}") from None
    return method, recipe, model.to(device).eval()
