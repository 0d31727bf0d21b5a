"""Fine-tuning: a run's weights taken from an exported model (`train.init_from`), checked against the recipe.

Weights only: the optimizer, LR schedule, EMA counters and data stream start fresh. The model must be of the
recipe's method, every tensor must fit the recipe's network (same keys, same shapes), and the model section of the
file's recipe must be the recipe's, but for the keys that only shape how training starts or regularises
(TRAINING_ONLY): same-shaped weights of another network (model.second_kernel, model.global_residual,
model.coc_scale, ...) compute something else. So must the objective keys that fix what the network's inputs and
outputs mean (`resume.MEANING_KEYS`, e.g. RDDM's noise schedule: the timestep input's noise level); the keys that
only weigh or choose the loss may change. The exported model records where its starting weights came from
(`init_from`, `init_from_sha256` in its metadata).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from defocuskit.config.recipe import Recipe, recipe_to_dict
from defocuskit.io import hub
from defocuskit.io.modelfile import dtype_misfit, read_model_file
from defocuskit.methods import get_method
from defocuskit.methods.recipes import resolve_recipe
from defocuskit.train.checks import TrainingError
from defocuskit.train.resume import MEANING_KEYS, flatten

# model keys (the last part of the name, at any depth) that change how a run starts or regularises, not what the
# trained weights compute: initialisation and the pretrained parts it loads, dropout, what is frozen or detached
TRAINING_ONLY = frozenset({"identity_init", "pretrained", "resnet_pretrained", "map_checkpoint", "dropout",
                           "dropout_levels", "drop_path_rate", "classifier_dropout_prob", "resnet_trainable",
                           "detach_pre"})


def init_provenance(source: str) -> tuple[Any, dict[str, str]]:
    """(model file, provenance metadata) of `train.init_from`; TrainingError when it cannot be found or read."""
    try:
        model_file, _ = hub.resolve_model(source)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingError(f"train.init_from: {exc}") from None
    return model_file, {"init_from": str(source), "init_from_sha256": hub.file_sha256(model_file)}


def model_mismatch(raw: dict[str, Any], recipe: Recipe) -> str | None:
    """The first key of the model section, then of the method's MEANING_KEYS, where a model file's recipe (`raw`,
    from its metadata) and `recipe` differ, with both values ("model.k: a in the file, b in this recipe"); None
    where they agree but for TRAINING_ONLY keys. ValueError where the file's recipe cannot be read."""
    method = get_method(recipe.method)
    theirs = _flat_sections(recipe_to_dict(resolve_recipe(method.upgrade_recipe(raw))))
    ours = _flat_sections(recipe_to_dict(recipe))
    model = [k for k in sorted(set(theirs) | set(ours)) if k.startswith("model.")
             and k.rsplit(".", 1)[-1] not in TRAINING_ONLY]
    for key in model + list(MEANING_KEYS.get(method.name, ())):
        if theirs.get(key) != ours.get(key):
            return f"{key}: {theirs.get(key)!r} in the file, {ours.get(key)!r} in this recipe"
    return None


def _flat_sections(recipe: dict[str, Any]) -> dict[str, Any]:
    """The model and objective sections of a recipe dict, flattened ("model.width": 8, "objective.beta_end": ...)."""
    return {**flatten(recipe.get("model") or {}, "model"), **flatten(recipe.get("objective") or {}, "objective")}


def load_initial_weights(net: nn.Module, model_file: Any, method: str, source: str,
                         recipe: Recipe | None = None, sha256: str | None = None) -> None:
    """Load the weights of `model_file` into `net` (strict), after checking its method, every shape and dtype, and
    (given the run's `recipe`) that the file's model section describes the same network; given `sha256` (what
    `init_provenance` recorded), that the file read is still that file."""
    try:
        tensors, meta = read_model_file(model_file)
        if sha256 is not None and hub.file_sha256(model_file) != sha256:
            raise ValueError(f"{model_file} changed since the run checked it (sha256 {sha256[:12]}...): start again")
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingError(f"train.init_from: {exc}") from None
    if meta["method"] != method:
        raise TrainingError(f"train.init_from {source}: a '{meta['method']}' model, but this recipe trains "
                            f"'{method}'")
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        parts = [f"{len(keys)} {what} (e.g. {keys[:2]})" for what, keys in (("missing", missing),
                                                                           ("unexpected", unexpected)) if keys]
        raise TrainingError(f"train.init_from {source}: its weights do not fit this recipe's network: "
                            f"{', '.join(parts)}; give the model section of the recipe it was trained with")
    for key, value in own.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise TrainingError(f"train.init_from {source}: tensor '{key}' is {tuple(tensors[key].shape)} there "
                                f"but {tuple(value.shape)} in this recipe's network; give the model section of the "
                                "recipe it was trained with")
        if (problem := dtype_misfit(key, tensors[key], value.dtype)) is not None:
            raise TrainingError(f"train.init_from {source}: {problem}")
    try:
        differs = model_mismatch(meta["recipe"], recipe) if recipe is not None else None
    except ValueError as exc:  # a RecipeError names the key, not the file
        raise TrainingError(f"train.init_from {source}: the recipe in its metadata: {exc}") from None
    if differs and differs.startswith("objective."):
        raise TrainingError(f"train.init_from {source}: its weights were trained where the network's inputs or "
                            f"outputs mean something else ({differs}); give the objective section of the recipe it "
                            "was trained with")
    if differs:
        raise TrainingError(f"train.init_from {source}: its weights were trained for another network ({differs}); "
                            "give the model section of the recipe it was trained with")
    net.load_state_dict(tensors, strict=True)
