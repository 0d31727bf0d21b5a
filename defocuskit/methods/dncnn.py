"""DnCNN (Zhang et al., "Beyond a Gaussian Denoiser", TIP 2017) as a supervised deblurring baseline on aligned pairs.

One of the HIDD paper's comparison methods. The network predicts the residual blur - sharp and returns
blur - residual (the paper's residual learning, with the "noise" here being the defocus blur); it is
trained with the mean squared error and runs in one pass on any image size, BatchNorm in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.methods.base import Batch, Method, RestoreContext, Sampler, unwrap
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
class SamplerConfig(Sampler):
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


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """MSE between the restored and the sharp image, equal to the MSE of R(blur) against blur - sharp."""
    # ||(y - R(y)) - x||^2 = ||R(y) - (y - x)||^2: the paper's residual loss (Eq. 1), as a mean (see ObjectiveConfig)
    return F.mse_loss(model(batch["blur"]), batch["sharp"])


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One forward pass, BatchNorm in eval mode, clamped to [0, 1]."""
    net = unwrap(model)
    with eval_mode(net):  # BN with its running statistics (the exported file carries them as buffers)
        out = net(blur).clamp(0.0, 1.0)
    ctx.step(0, 1)
    return out


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
