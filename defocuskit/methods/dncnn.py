"""DnCNN (Zhang et al., "Beyond a Gaussian Denoiser", TIP 2017) as a supervised deblurring baseline on aligned pairs.

One of the HIDD paper's comparison methods. The network predicts the residual blur - sharp and returns
blur - residual (the paper's residual learning, with the "noise" here being the defocus blur); it is
trained with the mean squared error and runs in one pass on any image size, BatchNorm in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.methods.base import Batch, Conditions, Method, unwrap
from defocuskit.models.dncnn import DnCNN


@dataclass
class ModelConfig:
    """Defaults: the paper's DnCNN of depth 17 with 64 features (0.56 M parameters), on colour images."""

    channels: int = 3  # must equal data.channels; 3 as CDnCNN, 1 as the grayscale DnCNN-S
    depth: int = 17  # Sec. III-A: depth 17 (35x35 receptive field) for a known level; 20 for the blind models
    features: int = 64  # Sec. III-B: 64 filters of 3x3 per layer
    # True (sound default): the last conv starts at zero, so the untrained net returns its input (R = 0) and
    # training can only move it from there; False: He init of every layer as the paper (Sec. IV-A), whose
    # random initial residual costs a short run several dB below the input (measured, docs/benchmarks.md)
    identity_init: bool = True

    def __post_init__(self) -> None:
        for key in ("channels", "features"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}: must be at least 1, got {getattr(self, key)}")
        if self.depth < 2:
            raise ValueError(f"model.depth: must be at least 2 (first and last layer), got {self.depth}")


@dataclass
class ObjectiveConfig:
    """The residual MSE of the paper (Eq. 1): nothing to choose.

    The paper's loss is 1/(2N) sum_i ||R(y_i) - (y_i - x_i)||^2 over N patches; this port takes the mean
    over all elements, i.e. that loss divided by the constant C*H*W/2 (Adam is invariant to it, up to eps).
    """


@dataclass
class SamplerConfig:
    """DnCNN runs one forward pass: nothing to choose."""


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The DnCNN network (no frozen parts: `for_training` changes nothing)."""
    return DnCNN(model_cfg.channels, model_cfg.depth, model_cfg.features, model_cfg.identity_init)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (BatchNorm uses its running statistics), its previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def per_channel(blur: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    """`blur` as the network's input: unchanged, or each colour channel as its own item for a 1-channel model."""
    b, c, h, w = blur.shape
    if c == channels:
        return blur
    if channels == 1:
        return blur.reshape(b * c, 1, h, w)
    raise ValueError(f"{name}: a {channels}-channel model cannot restore {c}-channel images "
                     f"(model.channels must equal data.channels)")


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig) -> torch.Tensor:
    """MSE between the restored and the sharp image, equal to the MSE of R(blur) against blur - sharp."""
    net = unwrap(model)
    if batch["blur"].shape[1] != net.channels:
        raise ValueError(f"dncnn: images have {batch['blur'].shape[1]} channels but model.channels is "
                         f"{net.channels} (set it equal to data.channels)")
    # ||(y - R(y)) - x||^2 = ||R(y) - (y - x)||^2: the paper's residual loss (Eq. 1), as a mean (see ObjectiveConfig)
    return F.mse_loss(model(batch["blur"]), batch["sharp"])


@torch.no_grad()
def restore(
    model: nn.Module,
    blur: torch.Tensor,
    sampler_cfg: SamplerConfig,
    objective_cfg: ObjectiveConfig,
    generator: torch.Generator | None = None,
    callback: Callable[[int, int], None] | None = None,
    conditions: Conditions | None = None,
) -> torch.Tensor:
    """One forward pass, BatchNorm in eval mode, clamped to [0, 1]; any size, same shape and dtype back.

    A 1-channel model restores each colour channel of a colour image as its own image.
    """
    if blur.dim() != 4:
        raise ValueError(f"dncnn restore: expected (B, C, H, W), got shape {tuple(blur.shape)}")
    net = unwrap(model)
    x = per_channel(blur, net.channels, "dncnn")
    param = next(net.parameters())
    with eval_mode(net):  # BN with its running statistics (the exported file carries them as buffers)
        out = net(x.to(device=param.device, dtype=param.dtype)).clamp(0.0, 1.0)
    if callback is not None:
        callback(0, 1)
    return out.reshape(blur.shape).to(device=blur.device, dtype=blur.dtype)


METHOD = Method(
    name="dncnn",
    description=(  # one line for the model card
        "the DnCNN residual CNN (Zhang et al. 2017), trained on defocus pairs"
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    whole_image=True,  # a plain stack of 3x3 convolutions (35x35 receptive field): any size, same result as tiles
    channels_last=True,  # CPU: 1.6-1.7x (tiny) / 1.3-1.4x (paper size) faster, tools/bench_channels_last.py
)
