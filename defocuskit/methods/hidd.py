"""HIDD (Li et al., "Real-world defocus deblurring via score-based diffusion models", Sci. Rep. 2025).

A VE-SDE score network (NCSN++) learns sharp images only; deblurring runs the predictor-corrector
sampler with data-consistency steps towards the defocused input.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from defocuskit.config.typed import did_you_mean
from defocuskit.diffusion.consistency import DataConsistency, identity_consistency, physics_consistency
from defocuskit.diffusion.cuda_graph import graphed
from defocuskit.diffusion.fast_sampler import fast_sigmas, sample_fast
from defocuskit.diffusion.pc_sampler import nfe_per_step, randn_like, sample_pc, sample_released
from defocuskit.diffusion.vesde import dsm_loss, reverse_sigmas
from defocuskit.imaging.lens_blur import DefocusOperator
from defocuskit.methods.base import Batch, Method, RestoreContext, Sampler
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
    sigma_max: float = 300.0  # the paper's text; HIDD-DM's config notes "train 378" (the values there are for testing)
    reduce_mean: bool = False  # False: 0.5 * per-image sum, as score_sde's reduce_mean=False in HIDD-DM


SAMPLERS = ("released", "pc", "fast")
# paper: 1000 steps; fast: 10 NFE (issue 22: tools/bench_hidd_speed.py, with sigma_start 0.05 and zeta 1 it beat the
# former 40 steps on the train and test splits, docs/benchmarks.md; steps=40 gives the former sampler)
DEFAULT_STEPS = {"released": 1000, "pc": 1000, "fast": 10}
MAX_STEPS = 100_000  # 100 x the paper's: more would only cost time, and 10^9 asked 8 GB for the noise levels alone
# the other counts a sampler runs, each from its least to 100 x its default (12, 10, 3), as steps is bounded (10^9 ran
# out of memory or never ended): key: (least, most, what is counted)
COUNTS = {"blur_levels": (1, 1200, "CoC layers"), "cg_steps": (0, 1000, "conjugate-gradient steps a data step"),
          "corrector_chains": (0, 300, "corrector chains")}
# Noise levels above every recipe's sigma_max (300; 378 as released) on images in [0, 1], and a corrector snr 5,000
# x HIDD's 0.021: beyond them the float32 steps overflowed into a black image, exit 0 (sigma_start or dc_sigma 1e30,
# snr 1e308), or into a traceback (dc_sigma 1e300).
MOST = {"sigma_start": 1000.0, "dc_sigma": 1000.0, "snr": 100.0}
FORMER_FAST = (40, 0.1, 0.3)  # issue 8's fast sampler: steps, sigma_start, zeta


@dataclass
class SamplerConfig(Sampler):
    """The deblurring sampler: `name` picks one of SAMPLERS; the other keys configure it (unused ones are ignored)."""

    name: str = "pc"  # released (HIDD-DM as published; reproduction only) | pc | fast
    steps: int | None = None  # None: the sampler's default (released / pc 1000 as the paper, fast 10)
    # released / pc (Li et al. 2025; HIDD-DM)
    snr: float = 0.021
    predictor: bool = True
    corrector: bool = True
    corrector_chains: int = 3  # HIDD-DM averages three chains' scores: 4 network evaluations a step
    carry_mean: bool = True  # carry the noise-free mean between updates, as the released loop
    weights: tuple[float, float] = (0.08, 0.15)  # consistency after the predictor, after the corrector
    # fast (CCDF warm start + DiffPIR-style steps)
    # fast: 10 steps from sigma_start 0.05 with zeta 1 (issue 22, docs/benchmarks.md); issue 8's: 40, 0.1, 0.3
    sigma_start: float = 0.05  # the blurred input is noised to this level to start
    dc_sigma: float = 0.008  # noise level at which data and prior weigh equally: rho_i = (dc_sigma / sigma_i)^2
    zeta: float = 1.0  # share of fresh noise when re-noising (DiffPIR zeta)
    # data consistency (released: identity only)
    consistency: str = "identity"  # identity: pull towards the blurred image | physics: thin-lens blur K_c
    blur_model: str = "over"  # physics: over | scatter | gather (lens_blur.MODELS)
    blur_levels: int = 12  # physics: CoC layers
    psf: str = "disc"  # physics: each layer's kernel, the thin-lens disc or the Gaussian of its second moment
    # (optics.PSF_SHAPES; gaussian: no spectral zeros to invert with the wrong sign where the map is an estimate)
    cg_steps: int = 10  # physics: conjugate-gradient steps per data step (warm-started from the step's x0)
    linear_light: bool = True  # physics: solve in linear light (sRGB in and out)

    def __post_init__(self) -> None:
        from defocuskit.diffusion.consistency import KINDS
        from defocuskit.imaging.lens_blur import MODELS
        from defocuskit.imaging.optics import PSF_SHAPES

        if self.name not in SAMPLERS:
            raise ValueError(f"sampler.name: unknown sampler '{self.name}' (known: {', '.join(SAMPLERS)})"
                             f"{did_you_mean(self.name, SAMPLERS)}")
        if self.consistency not in KINDS:
            raise ValueError(f"sampler.consistency: '{self.consistency}' is not one of {', '.join(KINDS)}")
        if self.name == "released" and self.consistency != "identity":
            raise ValueError("sampler.consistency: the released sampler pulls towards the blurred image (identity); "
                             "use sampler.name=pc or fast for physics")
        if self.blur_model not in MODELS:
            raise ValueError(f"sampler.blur_model: '{self.blur_model}' is not one of {', '.join(MODELS)}")
        if self.psf not in PSF_SHAPES:
            raise ValueError(f"sampler.psf: '{self.psf}' is not one of {', '.join(PSF_SHAPES)}")
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"sampler.steps: HIDD samples in 1 to {MAX_STEPS} steps, got {self.steps}")
        for key, (least, most, what) in COUNTS.items():
            if not least <= getattr(self, key) <= most:
                raise ValueError(f"sampler.{key}: {least} to {most} {what}, got {getattr(self, key)}")
        finite = math.isfinite
        for key, most in MOST.items():
            if finite(getattr(self, key)) and getattr(self, key) > most:
                raise ValueError(f"sampler.{key}: above 0, at most {most:g}, got {getattr(self, key)!r}")
        checks = {"sigma_start": self.sigma_start > 0 and finite(self.sigma_start),
                  "dc_sigma": self.dc_sigma > 0 and finite(self.dc_sigma), "zeta": 0 <= self.zeta <= 1,
                  "weights": len(self.weights) == 2 and all(0 <= w <= 1 for w in self.weights),
                  "snr": self.snr > 0 and finite(self.snr)}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"sampler.{key}: out of range ({getattr(self, key)!r})")

    def resolved(self) -> SamplerConfig:
        """The config with `steps` filled in from the named sampler's default."""
        return self if self.steps is not None else dataclasses.replace(self, steps=DEFAULT_STEPS[self.name])

    def nfe(self) -> int:
        """Network evaluations per sample path (per tile and channel): steps x evaluations per step."""
        cfg = self.resolved()
        if cfg.name == "fast":
            return int(cfg.steps)
        return int(cfg.steps) * nfe_per_step(cfg.predictor, cfg.corrector, cfg.corrector_chains)

    def check(self, objective: ObjectiveConfig) -> None:
        """The fast sampler's steps run from sigma_start down to the model's objective.sigma_min: none below it."""
        if self.name == "fast" and self.sigma_start < objective.sigma_min:
            raise ValueError(f"sampler.sigma_start: {self.sigma_start:g} is below this model's objective.sigma_min "
                             f"{objective.sigma_min:g}, where the fast sampler's steps end (the least noise the "
                             f"network learnt); give at least {objective.sigma_min:g}")

    def needs(self) -> frozenset[str]:
        """Per-sample conditions the sampler needs: a CoC map for physics consistency."""
        return frozenset({"coc"}) if self.consistency == "physics" else frozenset()


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A recipe from a model file of defocuskit 0.1 (consistency weights as a list, normalize_each_step) in today's keys;
    a file with the former fast sampler (issue 8) keeps its 40 steps."""
    sampler = dict(raw.get("sampler") or {})
    if isinstance(sampler.get("consistency"), (list, tuple)) or "normalize_each_step" in sampler:
        if isinstance(sampler.get("consistency"), (list, tuple)):
            sampler["weights"] = sampler.pop("consistency")
        sampler.setdefault("consistency", "identity")
        # normalize_each_step defaulted to true, the released loop
        sampler.setdefault("name", "released" if sampler.pop("normalize_each_step", True) else "pc")
    # issue 22 made the fast default 10 steps (with sigma_start 0.05, zeta 1): a file with issue 8's fast settings
    # and steps left to the default ran 40, and keeps them (its result); --steps 10 and the new values opt in
    if (sampler.get("name") == "fast" and sampler.get("steps") is None
            and (sampler.get("sigma_start"), sampler.get("zeta")) == FORMER_FAST[1:]):
        sampler["steps"] = FORMER_FAST[0]
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


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """Denoising score matching on the sharp images."""
    if "sharp" not in batch:
        raise KeyError("hidd loss: the batch has no 'sharp' images")
    return dsm_loss(
        model, batch["sharp"], objective_cfg.sigma_min, objective_cfg.sigma_max, reduce_mean=objective_cfg.reduce_mean
    )


def _consistency(cfg: SamplerConfig, blurred: torch.Tensor, coc: torch.Tensor | None) -> DataConsistency:
    if cfg.consistency == "identity":
        return identity_consistency(blurred)
    if coc is None:
        raise ValueError("sampler.consistency=physics needs a CoC map (--coc map|oracle|fnumber)")
    operator = DefocusOperator(coc, cfg.blur_model, cfg.blur_levels, psf=cfg.psf)
    return physics_consistency(blurred, operator, cfg.cg_steps, cfg.linear_light)


def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """Deblur (B, C, H, W) images in [0, 1] with the named sampler; returns the same shape, clamped to [0, 1].
    `ctx.conditions["coc"]` (B, 1, H, W), pixels, feeds physics consistency."""
    cfg = ctx.sampler.resolved()
    cfg.check(ctx.objective)
    X, coc = blur, ctx.conditions.get("coc")
    score = graphed(model)  # on a GPU: the network's calls replayed from CUDA graphs (diffusion.cuda_graph)
    common = dict(generator=ctx.generator, callback=ctx.callback)
    if cfg.name == "fast":
        sigmas = fast_sigmas(cfg.steps, cfg.sigma_start, ctx.objective.sigma_min, device=X.device)
        start = X + cfg.sigma_start * randn_like(X, ctx.generator)  # CCDF / SDEdit warm start
        out = sample_fast(score, start, sigmas, consistency=_consistency(cfg, X, coc), dc_sigma=cfg.dc_sigma,
                          zeta=cfg.zeta, **common)
    else:
        sigmas = reverse_sigmas(cfg.steps, ctx.objective.sigma_min, ctx.objective.sigma_max, device=X.device)
        start = sigmas[0] * randn_like(X, ctx.generator)  # HIDD-DM: sde.prior_sampling, pure noise
        pc = dict(weights=cfg.weights, snr=cfg.snr, predictor=cfg.predictor, corrector=cfg.corrector,
                  corrector_chains=cfg.corrector_chains, carry_mean=cfg.carry_mean, **common)
        if cfg.name == "released":
            out = sample_released(score, start, sigmas, blurred=X, **pc)
        else:
            out = sample_pc(score, start, sigmas, consistency=_consistency(cfg, X, coc), **pc)
    return out.clamp(0.0, 1.0)


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
    upgrade_recipe=upgrade_recipe,
    # NCSN++ has self-attention at a fixed level: on a larger input it attends over more than it was trained
    # on, at a quadratic cost; the paper samples 256x256 images: tiles of the training size
    whole_image=False,
)
