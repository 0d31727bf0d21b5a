"""Fine-tuning: a run's weights taken from an exported model (`train.init_from`), checked against the recipe.

Weights only: the optimizer, LR schedule, EMA counters and data stream start fresh. The model must be of the
recipe's method and every tensor must fit the recipe's network (same keys, same shapes); the exported model
records where its starting weights came from (`init_from`, `init_from_sha256` in its metadata).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from defocuskit.io import hub
from defocuskit.io.modelfile import dtype_misfit, read_model_file
from defocuskit.train.checks import TrainingError


def init_provenance(source: str) -> tuple[Any, dict[str, str]]:
    """(model file, provenance metadata) of `train.init_from`; TrainingError when it cannot be found or read."""
    try:
        model_file, _ = hub.resolve_model(source)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingError(f"train.init_from: {exc}") from None
    return model_file, {"init_from": str(source), "init_from_sha256": hub.file_sha256(model_file)}


def load_initial_weights(net: nn.Module, model_file: Any, method: str, source: str) -> None:
    """Load the weights of `model_file` into `net` (strict), after checking its method and every shape and dtype."""
    try:
        tensors, meta = read_model_file(model_file)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingError(f"train.init_from: {exc}") from None
    if meta["method"] != method:
        raise TrainingError(f"train.init_from {source}: a '{meta['method']}' model, but this recipe trains "
                            f"'{method}'")
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise TrainingError(f"train.init_from {source}: its weights do not fit this recipe's network: "
                            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                            f"(e.g. {unexpected[:2]}); give the model section of the recipe it was trained with")
    for key, value in own.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise TrainingError(f"train.init_from {source}: tensor '{key}' is {tuple(tensors[key].shape)} there "
                                f"but {tuple(value.shape)} in this recipe's network; give the model section of the "
                                "recipe it was trained with")
        if (problem := dtype_misfit(key, tensors[key], value.dtype)) is not None:
            raise TrainingError(f"train.init_from {source}: {problem}")
    net.load_state_dict(tensors, strict=True)
