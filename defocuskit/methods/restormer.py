"""Restormer (Zamir et al., CVPR 2022; released code swz30/Restormer) on aligned pairs, as the release trains it for
single-image defocus deblurring (Defocus_Deblurring/Options/DefocusDeblur_Single_8bit_Restormer.yml): L1 loss
against the sharp image, one forward pass at test time, the release's checkpoints readable by `import-weights`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from defocuskit.io.release import ReleaseError, find_state_dict, rename_keys
from defocuskit.methods.base import Batch, Method, Protocol, Release, RestoreContext, Sampler, unwrap
from defocuskit.models.nafnet import psnr_loss
from defocuskit.models.restormer import NORMS, Restormer


@dataclass
class ModelConfig:
    """Defaults: network_g of DefocusDeblur_Single_8bit_Restormer.yml (26.1 M parameters)."""

    channels: int = 3  # must equal data.channels (inp_channels = out_channels = 3)
    dim: int = 48
    blocks: list[int] = field(default_factory=lambda: [4, 6, 6, 8])  # num_blocks
    refinement_blocks: int = 4  # num_refinement_blocks
    heads: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    ffn_expansion: float = 2.66  # ffn_expansion_factor
    bias: bool = False
    norm: str = "WithBias"  # LayerNorm_type: WithBias | BiasFree


@dataclass
class ObjectiveConfig:
    loss: str = "l1"  # pixel_opt: L1Loss, weight 1, mean (the option file); "psnr": NAFNet's PSNR loss


@dataclass
class SamplerConfig(Sampler):
    """Restormer runs one forward pass: nothing to choose."""


_LOSSES = ("l1", "psnr")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The Restormer U-Net with its global residual (restores blur -> sharp)."""
    if objective_cfg.loss not in _LOSSES:
        raise ValueError(f"objective.loss: '{objective_cfg.loss}' is not one of {', '.join(_LOSSES)}")
    m = model_cfg
    if m.norm not in NORMS:
        raise ValueError(f"model.norm: '{m.norm}' is not one of {', '.join(NORMS)}")
    return Restormer(m.channels, m.dim, m.blocks, m.refinement_blocks, m.heads, m.ffn_expansion, m.bias, m.norm)


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """Mean L1 (or the PSNR loss) of the restored image against the sharp one."""
    pred = model(batch["blur"])
    if objective_cfg.loss == "psnr":
        return psnr_loss(pred, batch["sharp"])
    return (pred - batch["sharp"]).abs().mean()


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One forward pass, clamped to [0, 1] (test_single_image_defocus_deblur.py: torch.clamp(restored, 0, 1))."""
    out = model(blur).clamp(0, 1)
    ctx.step(0, 1)
    return out


# ------------------------------------------------ the released checkpoints (swz30/Restormer, basicsr/models/archs)

# restormer_arch.py Restormer -> models/restormer.py: LayerNorm's inner `body` dropped, level modules as lists
_NORM = [(r"(.+\.norm[12])\.body\.(weight|bias)", r"\1.\2")]
_NAMES = [
    (r"patch_embed\.proj\.(weight|bias)", r"embed.\1"),
    (r"encoder_level([1-3])\.(.+)", lambda m: f"encoders.{int(m[1]) - 1}.{m[2]}"),
    (r"down([1-3])_[2-4]\.body\.0\.(.+)", lambda m: f"downs.{int(m[1]) - 1}.0.{m[2]}"),
    (r"up([2-4])_[1-3]\.body\.0\.(.+)", lambda m: f"ups.{4 - int(m[1])}.0.{m[2]}"),
    (r"reduce_chan_level([23])\.(.+)", lambda m: f"reduces.{3 - int(m[1])}.{m[2]}"),
    (r"decoder_level([1-3])\.(.+)", lambda m: f"decoders.{3 - int(m[1])}.{m[2]}"),
]  # latent, refinement and output keep their names


def convert_release(checkpoint: Any) -> dict[str, torch.Tensor]:
    """A checkpoint of the release ({'params': state dict}, as BasicSR saves it and the test scripts read it) in
    this port's names."""
    state = find_state_dict(checkpoint)
    if "img_d8_feature.0.0.weight" in state:
        raise ReleaseError("this is DRBNet's single_image_defocus_deblurring.pth (lingyanruan/DRBNet), which shares "
                           "the file name: import it with --method drbnet")
    if "skip_conv.weight" in state:
        raise ReleaseError("a dual-pixel Restormer (dual_pixel_task: True, 6 input channels: "
                           "dual_pixel_defocus_deblurring.pth); defocuskit ports the single-image one "
                           "(single_image_defocus_deblurring.pth)")
    return rename_keys(rename_keys(state, _NORM), _NAMES)


RELEASE = Release(
    code="swz30/Restormer@df766d5",
    checkpoints=("single_image_defocus_deblurring.pth in the Defocus Deblurring folder the README links: "
                 "https://drive.google.com/drive/folders/1bRBG8DG_72AGA6-eRePvChlT5ZO4cwJ4"),
    convert=convert_release,
    recipe="restormer",
    overrides=("data.train=DPDD",),  # the set it was trained on, as the model card names it
    # test_single_image_defocus_deblur.py: utils.load_img (cv2.imread, BGR -> RGB) / 255, whole DPDD images
    # (1680x1120, multiples of 8) unpadded; demo.py and the other test scripts reflect-pad to a multiple of 8
    protocol=Protocol(script="Defocus_Deblurring/test_single_image_defocus_deblur.py", bit_depth=8,
                      channel_order="rgb", padding="reflect", pad_multiple=8),
)


METHOD = Method(
    name="restormer",
    description=(  # one line for the model card
        'the Restormer transformer U-Net trained on aligned pairs (Zamir et al., "Restormer: Efficient '
        'Transformer for High-Resolution Image Restoration", CVPR 2022)'
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    # attention across channels, not pixels: cost linear in the pixels, and the release tests whole images
    whole_image=True,
    pad_multiple=lambda model: unwrap(model).multiple,  # 2**(levels - 1) pixel-unshuffles
    release=RELEASE,
)
