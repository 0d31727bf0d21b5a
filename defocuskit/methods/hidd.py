"""HIDD (Li et al., "Real-world defocus deblurring via score-based diffusion models", Sci. Rep. 2025).

A VE-SDE score network (NCSN++) learns sharp images only; deblurring runs the predictor-corrector
sampler with data-consistency steps towards the defocused input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.diffusion.pc_sampler import sample_pc_deblur
from defocuskit.diffusion.vesde import dsm_loss, reverse_sigmas
from defocuskit.methods.base import Batch, Method
from defocuskit.models.ncsnpp import NCSNpp


@dataclass
class ModelConfig:
    channels: int = 1  # must equal data.channels; the paper trains on grayscale
    image_size: int = 256  # decides where attention sits (attn_resolutions at this size)
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    fourier_scale: float = 16.0
    fir: bool = True  # FIR [1,3,3,1] resampling; False: nearest / average pooling


@dataclass
class ObjectiveConfig:
    sigma_min: float = 0.01
    sigma_max: float = 300.0  # the paper's text; the released HIDD-DM code uses 378
    reduce_mean: bool = False  # False: 0.5 * per-image sum, as score_sde's reduce_mean=False in HIDD-DM


@dataclass
class SamplerConfig:
    steps: int = 1000
    snr: float = 0.021
    predictor: bool = True
    corrector: bool = True
    corrector_chains: int = 3  # HIDD-DM averages three chains' scores: 4 network evaluations a step
    consistency: tuple[float, float] = (0.08, 0.15)  # after the predictor, after the corrector
    carry_mean: bool = True  # carry the noise-free mean between updates, as the released loop
    normalize_each_step: bool = True  # min-max rescale to [0, 1] after each step, as the released loop


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool) -> nn.Module:
    """The NCSN++ score network; `for_training` changes nothing (HIDD has no frozen parts)."""
    if not 0 < objective_cfg.sigma_min < objective_cfg.sigma_max:
        raise ValueError(
            f"objective: need 0 < sigma_min < sigma_max, got {objective_cfg.sigma_min}, {objective_cfg.sigma_max}"
        )
    return NCSNpp(
        channels=model_cfg.channels,
        image_size=model_cfg.image_size,
        nf=model_cfg.nf,
        ch_mult=model_cfg.ch_mult,
        num_res_blocks=model_cfg.num_res_blocks,
        attn_resolutions=model_cfg.attn_resolutions,
        dropout=model_cfg.dropout,
        fourier_scale=model_cfg.fourier_scale,
        fir=model_cfg.fir,
    )


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig) -> torch.Tensor:
    """Denoising score matching on the sharp images."""
    if "sharp" not in batch:
        raise KeyError("hidd loss: the batch has no 'sharp' images")
    return dsm_loss(
        model, batch["sharp"], objective_cfg.sigma_min, objective_cfg.sigma_max, reduce_mean=objective_cfg.reduce_mean
    )


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def restore(
    model: nn.Module,
    blur: torch.Tensor,
    sampler_cfg: SamplerConfig,
    objective_cfg: ObjectiveConfig,
    generator: torch.Generator | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Deblur (B, C, H, W) images in [0, 1]; returns the same shape, clamped to [0, 1].

    A one-channel model deblurs each colour channel as its own batch item. Sizes that are not a
    multiple of the network's 2 ** (levels - 1) are reflect-padded on the bottom/right and
    cropped back afterwards.
    """
    if blur.dim() != 4:
        raise ValueError(f"hidd restore: expected (B, C, H, W), got shape {tuple(blur.shape)}")
    net = getattr(model, "module", getattr(model, "_orig_mod", model))  # DDP- or compile-wrapped
    channels = getattr(net, "channels", blur.shape[1])
    b, c, _, _ = blur.shape
    if c == channels:
        x = blur
    elif channels == 1:
        x = blur.reshape(b * c, 1, *blur.shape[-2:])  # channel by channel
    else:
        raise ValueError(f"hidd restore: a {channels}-channel model cannot deblur {c}-channel images")
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    x, h, w = _pad_to_multiple(x, getattr(net, "multiple", 1))
    sigmas = reverse_sigmas(sampler_cfg.steps, objective_cfg.sigma_min, objective_cfg.sigma_max, device=x.device)
    out = sample_pc_deblur(
        model,
        x,
        sigmas,
        snr=sampler_cfg.snr,
        predictor=sampler_cfg.predictor,
        corrector=sampler_cfg.corrector,
        corrector_chains=sampler_cfg.corrector_chains,
        consistency=sampler_cfg.consistency,
        carry_mean=sampler_cfg.carry_mean,
        normalize_each_step=sampler_cfg.normalize_each_step,
        generator=generator,
        callback=callback,
    )
    out = out[..., :h, :w].clamp(0.0, 1.0)
    return out.reshape(b, c, h, w).to(device=blur.device, dtype=blur.dtype)


METHOD = Method(
    name="hidd",
    data="sharp",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
)
