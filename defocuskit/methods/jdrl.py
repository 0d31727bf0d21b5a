"""JDRL (Li et al., reblurring-guided defocus deblurring with misaligned pairs; released code liyucs/JDRL).

Training, as solver/solver.py schedules it (Charbonnier loss, eps 1e-3, utils/losses.py):

- stage 1 (the first `reblur_start_step` calls of `loss`; the released code: epochs 0-14 of 100):
  L = Charb(output, W(sharp -> blurry grid))
- stage 2: L = Charb(M * output, M * W(sharp -> output grid)) + Charb(M' * sharp, M' * W(output -> sharp grid))
           + reblur_weight * Charb(reblur(output, blurry), blurry) + map_weight * |map - reblur map| / r_max

W warps by OpenCV DIS flow (defocuskit.imaging.flow; the released code uses PWC-Net), M and M' are validity masks
(in frame, forward-backward consistent; the released code keeps pixels whose flow colour is within 35 % of
the image mean instead). The last term is the paper's pseudo supervision ("pairs into triplets"): the
deblurring net's own blur map learns the reblurring module's map (detached), in units of the largest
kernel radius r_max; the released code has no such term, so `map_weight` is this port's choice.

The schedule depends on the training step, but `loss` gets no step: the model keeps a step counter as a
registered buffer (`JDRL.step`), incremented by every call of `loss`. It travels with the weights, so a
resumed run (Accelerate `save_state` holds buffers), the EMA copy and the exported file all know it.
It counts micro-batches: with train.grad_accum = k the reblur stage starts after reblur_start_step / k
optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.imaging.flow import PRESETS
from defocuskit.methods.base import Batch, Method, RestoreContext, Sampler, rename_key, unwrap
from defocuskit.models.jdrl import JDRL, KERNEL_NORMS, DeblurNet, ReblurModule


@dataclass
class ModelConfig:
    """Defaults: the released sizes (model_deblur.py, kpn.py); the map estimator and fusion are this port's."""

    channels: int = 3  # must equal data.channels
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])  # VGG_Deblur encoder
    dropout: float = 0.4  # drop4, drop5 of VGG_Deblur
    dropout_levels: int = 2
    map_channels: int = 64  # blur-map estimator trunk (as KERNEL_MAP: nf 64, 3 residual blocks)
    map_blocks: int = 3
    fusion_channels: int = 64  # hidden width of the map -> (gamma, beta) fusion convs
    reblur_channels: int = 64  # KPN / KERNEL_MAP nf
    reblur_blocks: int = 3  # residual blocks per branch
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 5, 7, 9, 11, 13, 15])
    kernel_norm: str = "softmax"  # "softmax" over the K x K entries (released) or "sum"
    # True (sound default): the output is the blurred input plus a correction that starts at zero; False: the
    # released sigmoid image output, which a short run leaves ~3 dB below its input (measured, docs/benchmarks.md)
    global_residual: bool = True


@dataclass
class ObjectiveConfig:
    reblur_start_step: int = 60000  # calls of `loss` before stage 2 (released: epoch 15 of 100)
    reblur_weight: float = 0.5  # solver.py: char_loss + reblur_loss * 0.5
    map_weight: float = 0.1  # pseudo-supervised blur map (not in the released code)
    charbonnier_eps: float = 1e-3  # utils/losses.py CharbonnierLoss
    flow_preset: str = "medium"  # OpenCV DIS preset: ultrafast | fast | medium
    mask: str = "fb"  # stage-2 validity: "fb" (in frame + forward-backward consistent) | "frame" | "none"


@dataclass
class SamplerConfig(Sampler):
    """JDRL deblurs in one forward pass of the deblurring network: nothing to choose."""


_MASKS = ("fb", "frame", "none")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The deblurring network with its blur-map estimator, and the reblurring module."""
    o = objective_cfg
    if o.mask not in _MASKS:
        raise ValueError(f"objective.mask: '{o.mask}' is not one of {', '.join(_MASKS)}")
    if o.flow_preset not in PRESETS:
        raise ValueError(f"objective.flow_preset: '{o.flow_preset}' is not one of {', '.join(PRESETS)}")
    if o.reblur_start_step < 0 or o.reblur_weight < 0 or o.map_weight < 0 or o.charbonnier_eps <= 0:
        raise ValueError("objective: reblur_start_step, reblur_weight and map_weight must be >= 0, "
                         "charbonnier_eps > 0")
    m = model_cfg
    if m.kernel_norm not in KERNEL_NORMS:
        raise ValueError(f"model.kernel_norm: '{m.kernel_norm}' is not one of {', '.join(KERNEL_NORMS)}")
    deblur = DeblurNet(m.channels, m.widths, m.dropout, m.dropout_levels, m.map_channels, m.map_blocks,
                       m.fusion_channels, m.global_residual)
    reblur = ReblurModule(m.channels, m.reblur_channels, m.reblur_blocks, m.kernel_sizes, m.kernel_norm)
    return JDRL(deblur, reblur)


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean sqrt((x - y)^2 + eps^2) (utils/losses.py CharbonnierLoss)."""
    return torch.sqrt((x - y).pow(2) + eps * eps).mean()


def in_reblur_stage(model: nn.Module, objective_cfg: ObjectiveConfig) -> bool:
    """Whether the next call of `loss` trains stage 2 (masked flow loss + reblur loss)."""
    return int(unwrap(model).step) >= objective_cfg.reblur_start_step


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """Stage 1: Charbonnier against the flow-warped sharp image; stage 2: masked two-way flow loss
    + reblur_weight x reblur loss + map_weight x blur-map loss (see the module docstring)."""
    net = unwrap(model)
    blur, sharp = batch["blur"], batch["sharp"]
    o = objective_cfg
    stage2 = in_reblur_stage(net, o)
    out = model(blur, sharp, stage2, o.flow_preset, o.mask == "fb")
    with torch.no_grad():
        net.step += 1
    if not stage2:
        return charbonnier(out["output"], out["target"], o.charbonnier_eps) + out["ghost"]
    mask, mask_back = (out["mask"], out["mask_back"]) if o.mask != "none" else (1.0, 1.0)
    flow_loss = (charbonnier(mask * out["output"], mask * out["target"], o.charbonnier_eps)
                 + charbonnier(mask_back * sharp, mask_back * out["output_on_sharp"], o.charbonnier_eps))
    reblur_loss = charbonnier(out["reblurred"], blur, o.charbonnier_eps)  # reblurred output vs blurry input
    r_max = net.reblur.radii[-1]
    map_loss = F.l1_loss(out["map"], out["reblur_map"].detach()) / r_max
    return flow_loss + o.reblur_weight * reblur_loss + o.map_weight * map_loss


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One pass of the deblurring network (any size: padded and cropped back), clamped to [0, 1]."""
    net = unwrap(model)
    out = net.deblur(blur)[0].clamp(0, 1)
    ctx.step(0, 1)
    return out


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A recipe of defocuskit 0.1 (model.image_channels) in today's keys (model.channels)."""
    return rename_key(raw, "model", "image_channels", "channels")


METHOD = Method(
    name="jdrl",
    description=(  # one line for the model card
        "a deblurring network trained on misaligned pairs through a reblurring module with per-pixel "
        'isotropic kernels (Li et al., "Reblurring-Guided Single Image Defocus Deblurring")'
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    upgrade_recipe=upgrade_recipe,
    whole_image=True,  # a convolutional U-Net with a convolutional map estimator: any size
    channels_last=True,  # CPU: 1.3-1.6x (tiny) / 1.2-1.3x (paper size) faster, tools/bench_channels_last.py
    pad_multiple=lambda model: unwrap(model).deblur.multiple,  # 2**(levels - 1) max-poolings
)
