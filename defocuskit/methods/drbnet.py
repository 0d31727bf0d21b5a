"""DRBNet (Ruan et al., "Learning to Deblur using Light Field Generated and Real Defocus Images", CVPR 2022; released
code lingyanruan/DRBNet) on aligned pairs. The release publishes the network and its test script only (run.py), no
training code: the loss here supervises each of the network's four estimates (1/8, 1/4, 1/2 and full resolution)
against the sharp image area-downsampled to that scale, as the network downsamples its own input, weighted by
`objective.scale_weights` (this port's reading of the paper's coarse-to-fine dynamic residual blocks). The paper
trains on LFDOF (light-field generated pairs) and then fine-tunes on DPDD with a feature (perceptual) loss; that
loss needs VGG weights and is not offered. One forward pass at test time on images mapped to [-1, 1], the last
estimate clipped as released; the release's checkpoint readable by `import-weights`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.io.release import ReleaseError, find_state_dict, rename_keys
from defocuskit.methods.base import Batch, Method, Protocol, Release, RestoreContext, Sampler, unwrap
from defocuskit.models.drbnet import DRBNet


@dataclass
class ModelConfig:
    """Defaults: models/DRBNet.py DRBNet_single (the network of the released checkpoint)."""

    channels: int = 3  # must equal data.channels (conv1_1: 3 input channels)
    width: int = 32  # ch1 (ch2 = 2 ch1, ch3 = 4 ch1, ch4 = 8 ch1)
    kernel_size: int = 7  # kernel_width: the DRBs' per-pixel k x k filters


@dataclass
class ObjectiveConfig:
    # ours (no released training code): MSE, as IFAN's trainer on which the release's code builds (its README)
    loss: str = "mse"  # "mse" | "l1", on images in [0, 1]
    # ours: the weights of the estimates at 1/8, 1/4, 1/2 and full resolution (0: a scale unsupervised)
    scale_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])


@dataclass
class SamplerConfig(Sampler):
    """DRBNet runs one forward pass: nothing to choose."""


_LOSSES = ("mse", "l1")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The DRBNet network."""
    o = objective_cfg
    if o.loss not in _LOSSES:
        raise ValueError(f"objective.loss: '{o.loss}' is not one of {', '.join(_LOSSES)}")
    if len(o.scale_weights) != 4 or min(o.scale_weights) < 0 or not any(o.scale_weights):
        raise ValueError(f"objective.scale_weights: four non-negative weights (1/8, 1/4, 1/2, full resolution), "
                         f"not all 0; got {o.scale_weights}")
    if model_cfg.kernel_size < 1 or model_cfg.kernel_size % 2 == 0:
        raise ValueError(f"model.kernel_size: must be odd and positive, got {model_cfg.kernel_size}")
    return DRBNet(model_cfg.channels, model_cfg.width, model_cfg.kernel_size)


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """sum over scales of weight x MSE (or L1) between the estimate (mapped back to [0, 1], unclipped) and the
    sharp image area-downsampled to its size."""
    estimates = model(batch["blur"] * 2 - 1)
    sharp = batch["sharp"]
    total = sharp.new_zeros(())
    for weight, estimate in zip(objective_cfg.scale_weights, estimates):
        if weight:
            target = F.adaptive_avg_pool2d(sharp, estimate.shape[-2:]) if estimate.shape != sharp.shape else sharp
            diff = (estimate + 1) / 2 - target
            total = total + weight * (diff.square().mean() if objective_cfg.loss == "mse" else diff.abs().mean())
    return total


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One forward pass on blur * 2 - 1; the last estimate clipped to [-1, 1] (DRBNet.py torch.clip) and mapped
    back to [0, 1] (run.py: (output + 1) / 2)."""
    out = (model(blur * 2 - 1)[-1].clamp(-1, 1) + 1) / 2
    ctx.step(0, 1)
    return out


# -------------------------------------- the released checkpoint (lingyanruan/DRBNet, single_image_defocus_deblurring)

_SCALE = {"8": 0, "4": 1, "2": 2, "1": 3}  # img_d8_feature ... img_d1_feature
# DRBNet.py DRBNet_single -> models/drbnet.py DRBNet
_NAMES = [
    (r"conv([1-4])_([1-3])\.0\.(weight|bias)", lambda m: f"encoder.{int(m[1]) - 1}.{int(m[2]) - 1}.0.{m[3]}"),
    (r"conv4_4\.(.+)", r"bottleneck.\1"),
    (r"upconv([1-3])_u\.(.+)", lambda m: f"ups.{3 - int(m[1])}.{m[2]}"),
    (r"upconv([1-3])_([12])\.(.+)", lambda m: f"decoders.{3 - int(m[1])}.{int(m[2]) - 1}.{m[3]}"),
    (r"img_d([8421])_feature\.(.+)", lambda m: f"drbs.{_SCALE[m[1]]}.features.{m[2]}"),
    (r"upconv([0-3])_kernel\.(.+)", lambda m: f"drbs.{3 - int(m[1])}.kernel.{m[2]}"),
    (r"upconv([0-3])_res\.(.+)", lambda m: f"drbs.{3 - int(m[1])}.residual.{m[2]}"),
]


def convert_release(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The released checkpoint (a plain state dict of DRBNet_single, as run.py loads it strictly) in this port's
    names."""
    state = find_state_dict(checkpoint)
    if "patch_embed.proj.weight" in state:
        raise ReleaseError("this is Restormer's single_image_defocus_deblurring.pth (swz30/Restormer), which shares "
                           "the file name: import it with --method restormer")
    first = state.get("conv1_1.0.weight")
    if first is None or "img_d8_feature.0.0.weight" not in state:
        raise ReleaseError("not DRBNet's network (models/DRBNet.py DRBNet_single): no 'conv1_1' / 'img_d8_feature' "
                           "weights")
    if first.dim() == 4 and first.shape[1] == 6:
        raise ReleaseError("a dual-pixel DRBNet (DeblurNet_dual, dual_images_defocus_deblurring.pth: 6 input "
                           "channels); defocuskit ports the single-image one (single_image_defocus_deblurring.pth)")
    return rename_keys(state, _NAMES)


RELEASE = Release(
    code="lingyanruan/DRBNet@0fa89a5",
    checkpoints=("ckpts/single/single_image_defocus_deblurring.pth in the ckpts.zip that download_ckpts.py fetches "
                 "(Google Drive id 1vGImev9LdagttXE_nN1gZGVstVTRVQHt): "
                 "https://drive.google.com/file/d/1vGImev9LdagttXE_nN1gZGVstVTRVQHt/view"),
    convert=convert_release,
    recipe="drbnet",
    # the paper: trained on LFDOF, fine-tuned on DPDD; data.train names the set as the model card does
    overrides=("data.train=[LFDOF, DPDD]",),
    # run.py: util.read_image (cv2.imread, BGR -> RGB) / 255, crop_image to a multiple of 16, x * 2 - 1; the
    # output (clipped to [-1, 1]) mapped by (x + 1) / 2 and scored unrounded
    protocol=Protocol(script="run.py --net_mode single --eval_data DPDD", bit_depth=8, channel_order="rgb",
                      padding="none", pad_multiple=8, crop_multiple=16),
)


METHOD = Method(
    name="drbnet",
    description=(  # one line for the model card
        "an encoder-decoder with a dynamic residual block (per-pixel filter + residual) at each of four scales "
        '(Ruan et al., "Learning to Deblur using Light Field Generated and Real Defocus Images", CVPR 2022)'
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    whole_image=True,  # convolutions and per-pixel filters: any size, as the release tests whole images
    pad_multiple=lambda model: unwrap(model).multiple,  # three stride-2 levels
    release=RELEASE,
)
