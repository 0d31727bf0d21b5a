"""NAFNet (Chen et al. 2022) as the plain supervised baseline on aligned pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from defocuskit.methods.base import Batch, Method, RestoreContext, Sampler, rename_key, unwrap
from defocuskit.models.lowpass import with_lowpass_of
from defocuskit.models.nafnet import NAFNet, psnr_loss


@dataclass
class ModelConfig:
    """Defaults: NAFNet-width64 of the paper's GoPro model (67.9 M parameters)."""

    channels: int = 3  # must equal data.channels
    width: int = 64
    enc_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 28])
    middle_blocks: int = 1
    dec_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])


@dataclass
class ObjectiveConfig:
    loss: str = "psnr"  # NAFNet's PSNR loss; "l1" as the alternative
    # px: the target's low-pass (a Gaussian of this sigma) replaced by the input's, so the loss counts the detail
    # only and the model keeps the shot's light (exposure, tone, glare); 0: the sharp target as it is (the paper's)
    target_lowpass: float = 0.0


@dataclass
class SamplerConfig(Sampler):
    """NAFNet runs one forward pass: nothing to choose."""


_LOSSES = ("psnr", "l1")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The NAFNet U-Net with a global residual (restores blur -> sharp)."""
    if objective_cfg.loss not in _LOSSES:
        raise ValueError(f"objective.loss: '{objective_cfg.loss}' is not one of {', '.join(_LOSSES)}")
    if not 0 <= objective_cfg.target_lowpass < float("inf"):
        raise ValueError(f"objective.target_lowpass: a Gaussian sigma in px >= 0, got {objective_cfg.target_lowpass}")
    c = model_cfg.channels
    return NAFNet(c, c, model_cfg.width, model_cfg.enc_blocks, model_cfg.middle_blocks, model_cfg.dec_blocks)


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """PSNR loss (or L1) of the restored image against the sharp one (with `target_lowpass`, the sharp one's detail
    on the blurred input's low-pass)."""
    pred, sharp = model(batch["blur"]), batch["sharp"]
    if objective_cfg.target_lowpass > 0:
        sharp = with_lowpass_of(sharp, batch["blur"], objective_cfg.target_lowpass)
    if objective_cfg.loss == "l1":
        return (pred - sharp).abs().mean()
    return psnr_loss(pred, sharp)


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One forward pass, clamped to [0, 1]."""
    out = model(blur).clamp(0, 1)
    ctx.step(0, 1)
    return out


def pad_multiple(model: nn.Module) -> int:
    """2**levels: the U-Net halves the resolution once per encoder level."""
    return 2 ** unwrap(model).levels


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A recipe of defocuskit 0.1 (model.image_channels) in today's keys (model.channels)."""
    return rename_key(raw, "model", "image_channels", "channels")


METHOD = Method(
    name="nafnet",
    description=(  # one line for the model card
        'the supervised NAFNet restoration baseline (Chen et al., "Simple Baselines for Image '
        'Restoration", 2022)'
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    # convolutions only (the channel attention pools globally, as in the paper's full-frame testing): any size
    whole_image=True,
    channels_last=True,  # CPU: 2.1-3.0x (tiny) / 1.7-1.9x (paper size) faster, tools/bench_channels_last.py
    pad_multiple=pad_multiple,
    upgrade_recipe=upgrade_recipe,
)
