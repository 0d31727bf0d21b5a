"""HIDD (Li et al., "Real-world defocus deblurring via score-based diffusion models", Sci. Rep. 2025).

A VE-SDE score network (NCSN++) learns sharp images only; deblurring runs the predictor-corrector
sampler with data-consistency steps towards the defocused input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.diffusion.consistency import DataConsistency, identity_consistency, physics_consistency
from defocuskit.diffusion.fast_sampler import fast_sigmas, sample_fast
from defocuskit.diffusion.pc_sampler import nfe_per_step, randn_like, sample_pc, sample_released
from defocuskit.diffusion.vesde import dsm_loss, reverse_sigmas
from defocuskit.imaging.lens_blur import DefocusOperator
from defocuskit.methods.base import Batch, Conditions, Method, unwrap
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


SAMPLERS = ("released", "pc", "fast")
DEFAULT_STEPS = {"released": 1000, "pc": 1000, "fast": 40}  # paper: 1000 steps; fast: 40 NFE, 1/100 of released


@dataclass
class SamplerConfig:
    """The deblurring sampler: `name` picks one of SAMPLERS; the other keys configure it (unused ones are ignored)."""

    name: str = "pc"  # released (HIDD-DM as published; reproduction only) | pc | fast
    steps: int | None = None  # None: the sampler's default (released / pc 1000 as the paper, fast 40)
    # released / pc (Li et al. 2025; HIDD-DM)
    snr: float = 0.021
    predictor: bool = True
    corrector: bool = True
    corrector_chains: int = 3  # HIDD-DM averages three chains' scores: 4 network evaluations a step
    carry_mean: bool = True  # carry the noise-free mean between updates, as the released loop
    weights: tuple[float, float] = (0.08, 0.15)  # consistency after the predictor, after the corrector
    # fast (CCDF warm start + DiffPIR-style steps)
    sigma_start: float = 0.1  # the blurred input is noised to this level to start
    dc_sigma: float = 0.008  # noise level at which data and prior weigh equally: rho_i = (dc_sigma / sigma_i)^2
    zeta: float = 0.3  # share of fresh noise when re-noising (DiffPIR zeta)
    # data consistency (released: identity only)
    consistency: str = "identity"  # identity: pull towards the blurred image | physics: thin-lens blur K_c
    blur_model: str = "over"  # physics: over | scatter | gather (lens_blur.MODELS)
    blur_levels: int = 12  # physics: CoC layers
    cg_steps: int = 10  # physics: conjugate-gradient steps per data step (warm-started from the step's x0)
    linear_light: bool = True  # physics: solve in linear light (sRGB in and out)

    def __post_init__(self) -> None:
        from defocuskit.diffusion.consistency import KINDS
        from defocuskit.imaging.lens_blur import MODELS

        if self.name not in SAMPLERS:
            raise ValueError(f"sampler.name: unknown sampler '{self.name}' (known: {', '.join(SAMPLERS)})")
        if self.consistency not in KINDS:
            raise ValueError(f"sampler.consistency: '{self.consistency}' is not one of {', '.join(KINDS)}")
        if self.name == "released" and self.consistency != "identity":
            raise ValueError("sampler.consistency: the released sampler pulls towards the blurred image (identity); "
                             "use sampler.name=pc or fast for physics")
        if self.blur_model not in MODELS:
            raise ValueError(f"sampler.blur_model: '{self.blur_model}' is not one of {', '.join(MODELS)}")
        checks = {"steps": self.steps is None or self.steps >= 1, "sigma_start": self.sigma_start > 0,
                  "dc_sigma": self.dc_sigma > 0, "zeta": 0 <= self.zeta <= 1, "blur_levels": self.blur_levels >= 1,
                  "cg_steps": self.cg_steps >= 0, "corrector_chains": self.corrector_chains >= 0,
                  "weights": len(self.weights) == 2 and all(0 <= w <= 1 for w in self.weights),
                  "snr": self.snr > 0}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"sampler.{key}: out of range ({getattr(self, key)!r})")


def resolve_sampler(cfg: SamplerConfig) -> SamplerConfig:
    """The config with `steps` filled in from the named sampler's default."""
    return cfg if cfg.steps is not None else dataclasses.replace(cfg, steps=DEFAULT_STEPS[cfg.name])


def nfe(cfg: SamplerConfig) -> int:
    """Network evaluations per sample path (per tile and channel): steps x evaluations per step."""
    cfg = resolve_sampler(cfg)
    if cfg.name == "fast":
        return int(cfg.steps)
    return int(cfg.steps) * nfe_per_step(cfg.predictor, cfg.corrector, cfg.corrector_chains)


def needs(cfg: SamplerConfig) -> frozenset[str]:
    """Per-sample conditions the sampler needs: a CoC map for physics consistency."""
    return frozenset({"coc"}) if cfg.consistency == "physics" else frozenset()


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A recipe from a model file of defocuskit 0.1 (consistency weights as a list, normalize_each_step) in today's keys."""
    sampler = dict(raw.get("sampler") or {})
    if isinstance(sampler.get("consistency"), (list, tuple)) or "normalize_each_step" in sampler:
        if isinstance(sampler.get("consistency"), (list, tuple)):
            sampler["weights"] = sampler.pop("consistency")
        sampler.setdefault("consistency", "identity")
        # normalize_each_step defaulted to true, the released loop
        sampler.setdefault("name", "released" if sampler.pop("normalize_each_step", True) else "pc")
    return {**raw, "sampler": sampler}


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


def _consistency(cfg: SamplerConfig, blurred: torch.Tensor, coc: torch.Tensor | None) -> DataConsistency:
    if cfg.consistency == "identity":
        return identity_consistency(blurred)
    if coc is None:
        raise ValueError("sampler.consistency=physics needs a CoC map (--coc map|oracle|fnumber)")
    operator = DefocusOperator(coc, cfg.blur_model, cfg.blur_levels)
    return physics_consistency(blurred, operator, cfg.cg_steps, cfg.linear_light)


def restore(
    model: nn.Module,
    blur: torch.Tensor,
    sampler_cfg: SamplerConfig,
    objective_cfg: ObjectiveConfig,
    generator: torch.Generator | None = None,
    callback: Callable[[int, int], None] | None = None,
    conditions: Conditions | None = None,
) -> torch.Tensor:
    """Deblur (B, C, H, W) images in [0, 1] with the named sampler; returns the same shape, clamped to [0, 1].

    A one-channel model deblurs each colour channel as its own batch item (with the same CoC map).
    Sizes that are not a multiple of the network's 2 ** (levels - 1) are reflect-padded on the
    bottom/right and cropped back afterwards. `conditions["coc"]` (B, 1, H, W), pixels, feeds
    physics consistency.
    """
    if blur.dim() != 4:
        raise ValueError(f"hidd restore: expected (B, C, H, W), got shape {tuple(blur.shape)}")
    cfg = resolve_sampler(sampler_cfg)
    net = unwrap(model)
    channels = getattr(net, "channels", blur.shape[1])
    b, c, _, _ = blur.shape
    coc = (conditions or {}).get("coc")
    if c == channels:
        x = blur
    elif channels == 1:
        x = blur.reshape(b * c, 1, *blur.shape[-2:])  # channel by channel
        coc = coc.repeat_interleave(c, dim=0) if coc is not None else None
    else:
        raise ValueError(f"hidd restore: a {channels}-channel model cannot deblur {c}-channel images")
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    multiple = getattr(net, "multiple", 1)
    X, h, w = _pad_to_multiple(x, multiple)
    if coc is not None:
        coc = _pad_to_multiple(coc.to(device=X.device, dtype=torch.float32), multiple)[0]
    common = dict(generator=generator, callback=callback)
    if cfg.name == "fast":
        sigmas = fast_sigmas(cfg.steps, cfg.sigma_start, objective_cfg.sigma_min, device=X.device)
        start = X + cfg.sigma_start * randn_like(X, generator)  # CCDF / SDEdit warm start
        out = sample_fast(model, start, sigmas, consistency=_consistency(cfg, X, coc), dc_sigma=cfg.dc_sigma,
                          zeta=cfg.zeta, **common)
    else:
        sigmas = reverse_sigmas(cfg.steps, objective_cfg.sigma_min, objective_cfg.sigma_max, device=X.device)
        start = sigmas[0] * randn_like(X, generator)  # HIDD-DM: sde.prior_sampling, pure noise
        pc = dict(weights=cfg.weights, snr=cfg.snr, predictor=cfg.predictor, corrector=cfg.corrector,
                  corrector_chains=cfg.corrector_chains, carry_mean=cfg.carry_mean, **common)
        if cfg.name == "released":
            out = sample_released(model, start, sigmas, blurred=X, **pc)
        else:
            out = sample_pc(model, start, sigmas, consistency=_consistency(cfg, X, coc), **pc)
    out = out[..., :h, :w].clamp(0.0, 1.0)
    return out.reshape(b, c, h, w).to(device=blur.device, dtype=blur.dtype)


METHOD = Method(
    name="hidd",
    description=(  # one line for the model card
        "a score-based diffusion prior of sharp images (VE-SDE, NCSN++) that deblurs by sampling with "
        'data consistency to the blurred input (Li et al., "Real-world defocus deblurring via '
        'score-based diffusion models", Sci. Rep. 2025)'
    ),
    data="sharp",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    resolve_sampler=resolve_sampler,
    nfe=nfe,
    needs=needs,
    upgrade_recipe=upgrade_recipe,
    # NCSN++ has self-attention at a fixed level: on a larger input it attends over more than it was trained
    # on, at a quadratic cost; the paper samples 256x256 images: tiles of the training size
    whole_image=False,
)
