"""The one interface every method implements: the training loop, `deblur` and `eval` see only this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn

# What a method needs from the shards:
#   "sharp":  sharp images only (sharp-only and paired samples both give sharp.png)
#   "paired": samples with blur.png and sharp.png
#   "coc":    samples with blur.png and coc.png (the circle-of-confusion ground truth)
DataKind = Literal["sharp", "paired", "coc"]

# A training batch: float tensors, images in [0, 1], shape (B, C, H, W), C = recipe data.channels:
#   batch["sharp"], batch["blur"] (paired/coc), batch["coc"] (coc: (B, 1, H, W), pixels),
#   batch["f_number"] (B,) float, NaN where unknown.
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A deblurring method: its config sections, how to build its network, train it and run it.

    build(model_cfg, objective_cfg, for_training) -> nn.Module
        the network(s); `for_training=False` skips loading frozen parts from other files
        (the exported .safetensors carries every weight).
    loss(model, batch, objective_cfg) -> scalar tensor
        the training objective; randomness from torch's global RNG (the loop reseeds it per step).
    restore(model, blur, sampler_cfg, objective_cfg, generator, callback) -> tensor
        deblurs a batch (B, C, H, W) in [0, 1]; returns the same shape, for the "deblur"
        output of the method (an image, or a defocus map for the map estimator).
        `callback(i, n)` reports progress over sampler steps.
    """

    name: str
    data: DataKind
    ModelConfig: type
    ObjectiveConfig: type
    SamplerConfig: type
    build: Callable[[Any, Any, bool], nn.Module]
    loss: Callable[[nn.Module, Batch, Any], torch.Tensor]
    restore: Callable[..., torch.Tensor]
    output: Literal["image", "defocus_map"] = "image"
