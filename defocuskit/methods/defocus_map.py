"""The defocus-map estimator as a method of its own: regresses the circle of confusion from coc.png."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.methods.base import Batch, Conditions, Method
from defocuskit.models.defocus_map import DefocusMapEstimator


@dataclass
class ModelConfig:
    """SegFormer; the defaults are MiT-b0 (SegFormer paper, Table 6)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 160, 256])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_attention_heads: list[int] = field(default_factory=lambda: [1, 2, 5, 8])
    sr_ratios: list[int] = field(default_factory=lambda: [8, 4, 2, 1])
    decoder_hidden_size: int = 256
    drop_path_rate: float = 0.1
    coc_scale: float = 4.0  # pixels per unit of softplus output
    pretrained: str | None = None  # local folder or cached hub name for from_pretrained


@dataclass
class ObjectiveConfig:
    loss: str = "l1"  # "l1" or "charbonnier", on coc / coc_norm
    coc_norm: float = 4.0  # pixels; the loss compares maps divided by this
    charbonnier_eps: float = 1e-3


@dataclass
class SamplerConfig:
    """The estimator runs one forward pass: nothing to choose."""


_LOSSES = ("l1", "charbonnier")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The SegFormer CoC estimator (random init unless `pretrained` names weights)."""
    if objective_cfg.loss not in _LOSSES:
        raise ValueError(f"objective.loss: '{objective_cfg.loss}' is not one of {', '.join(_LOSSES)}")
    if objective_cfg.coc_norm <= 0:
        raise ValueError(f"objective.coc_norm must be > 0, got {objective_cfg.coc_norm}")
    return DefocusMapEstimator(
        hidden_sizes=model_cfg.hidden_sizes,
        depths=model_cfg.depths,
        num_attention_heads=model_cfg.num_attention_heads,
        sr_ratios=model_cfg.sr_ratios,
        decoder_hidden_size=model_cfg.decoder_hidden_size,
        drop_path_rate=model_cfg.drop_path_rate,
        coc_scale=model_cfg.coc_scale,
        pretrained=model_cfg.pretrained if for_training else None,
    )


def _rgb(blur: torch.Tensor) -> torch.Tensor:
    return blur.expand(-1, 3, -1, -1) if blur.shape[1] == 1 else blur


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig) -> torch.Tensor:
    """L1 (or Charbonnier) between predicted and ground-truth CoC maps, both divided by coc_norm."""
    if "coc" not in batch:
        raise ValueError("defocus-map: the batch has no 'coc' (the method trains on shards with coc.png)")
    pred = model(_rgb(batch["blur"])) / objective_cfg.coc_norm
    target = batch["coc"] / objective_cfg.coc_norm
    if objective_cfg.loss == "charbonnier":
        return torch.sqrt((pred - target).pow(2) + objective_cfg.charbonnier_eps**2).mean()
    return F.l1_loss(pred, target)


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
    """The defocus map (B, 1, H, W) in pixels of circle-of-confusion diameter."""
    coc = model(_rgb(blur))
    if callback is not None:
        callback(0, 1)
    return coc


METHOD = Method(
    name="defocus-map",
    data="coc",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    output="defocus_map",
)
