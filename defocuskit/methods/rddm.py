"""RDDM (Feng et al., AAAI 2025) as released (eldestin/DiffDeblur): frozen defocus-map estimator, pre-deblur,
semantic encoder and residual DDIM denoiser.

Training as the release's `main.py`: one PSNR loss between the predicted and the true residual
gt - pre; the pre-deblur, the semantic encoder and the denoiser all learn from it (the gradient
reaches the pre-deblur through the residual target, the condition and the guidance).
`objective.pre_weight` adds a PSNR loss on the pre-deblur itself and `model.detach_pre` cuts its
graph (this port's earlier routing; both off by default, as released; recipes/rddm-tiny.yaml sets
`pre_weight: 1`, which keeps the pre-deblur's light from drifting). The map estimator is trained first by
recipes/defocus-map.yaml and loaded frozen from its .safetensors file (`model.map_checkpoint`);
its architecture is copied into `model.map_model`, so the exported RDDM file (which holds the
estimator's weights too) is self-contained.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from defocuskit.config.typed import RecipeError, build_dataclass
from defocuskit.diffusion.ddim_residual import (
    ResidualSchedule,
    make_scheduler,
    sample_residual_ddim,
    sample_timesteps,
)
from defocuskit.io.modelfile import read_model_file
from defocuskit.methods import defocus_map
from defocuskit.methods.base import Batch, Companion, Method, RestoreContext, Sampler, rename_key, unwrap
from defocuskit.models.nafnet import psnr_loss
from defocuskit.models.rddm import RDDM, PreDeblur, ResidualDenoiser, SemanticEncoder, build_resnet

MAX_STEPS = 4


@dataclass
class ModelConfig:
    """Defaults: the released model (option/NAFNetAlign_guidance.yaml, Predelur_network.py, DenoisingNetwork.py),
    except map_head, map_normalize and pre_global_residual (this port's, each with the release's as a value)."""

    map_checkpoint: str | None = None  # defocus-map .safetensors, loaded frozen for training
    map_model: defocus_map.ModelConfig | None = None  # the estimator's architecture (copied from map_checkpoint)
    map_head: str = "coc"  # "coc" (CoC regression) or "blur" (blur-detection logit; the release's map)
    map_normalize: str = "scale"  # "scale", "minmax_image" or "minmax_batch" (released max_min_normalize)
    channels: int = 3  # RGB only (ResNet guidance)
    pre_width: int = 32
    pre_enc_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 6])
    pre_middle_blocks: int = 1
    pre_dec_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    pre_enc_dw: list[str] = field(default_factory=lambda: ["dcn_norm", "dcn", "dcn", "conv"])
    pre_dec_dw: list[str] = field(default_factory=lambda: ["conv", "dcn", "dcn", "dcn_norm"])
    pre_scale: int = 1  # 1: full resolution, as released; 8: pixel-unshuffled 1/8 (an earlier reading of the paper)
    pre_global_residual: bool = True  # pre = blur + net; the release (False) lost to its input at small budgets
    detach_pre: bool = False  # True: the residual loss does not reach the pre-deblur; pre_weight's loss alone trains it
    width: int = 64
    enc_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 14])
    middle_blocks: int = 1
    dec_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    enc_dw: list[str] = field(default_factory=lambda: ["dcn", "dcn_norm", "dcn_norm", "conv"])
    dec_dw: list[str] = field(default_factory=lambda: ["conv", "dcn", "dcn", "dcn_norm"])
    resnet_hidden_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024])  # ResNet-50 stages 1-3
    resnet_depths: list[int] = field(default_factory=lambda: [3, 4, 6])
    resnet_embedding_size: int = 64
    resnet_pretrained: str | None = "microsoft/resnet-50"  # hub id, local folder or .safetensors; null: random init
    resnet_trainable: bool = True


@dataclass
class ObjectiveConfig:
    num_train_timesteps: int = 1300
    beta_start: float = 1e-4
    beta_end: float = 0.02
    pre_weight: float = 0.0  # weight of a PSNR loss on the pre-deblur itself (0 as released)


@dataclass
class SamplerConfig(Sampler):
    steps: int = 2  # DDIM steps, 1-4
    eta: float = 0.0
    timestep_spacing: str = "leading"  # diffusers' default, as released: [650, 0] for 2 steps
    clip_sample: bool = True  # as released (diffusers' default): predicted r_0 clipped to [-1, 1]

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"sampler.steps: RDDM samples in 1 to {MAX_STEPS} steps, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:  # DDIM's: 0 deterministic, 1 DDPM; beyond, the steps gave NaN images, exit 0
            raise ValueError(f"sampler.eta: DDIM's eta, 0 (deterministic) to 1 (DDPM's noise), got {self.eta!r}")
        if self.timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"sampler.timestep_spacing: '{self.timestep_spacing}' is not leading, trailing or linspace")

    def nfe(self) -> int:
        """One denoiser evaluation per DDIM step (plus the one-pass pre-deblur)."""
        return int(self.steps)

    def timesteps(self, objective: ObjectiveConfig) -> list[int]:
        """The DDIM timesteps the sampler visits for `steps` (diffusers' DDIMScheduler.set_timesteps)."""
        scheduler = make_scheduler(schedule_of(objective, self))
        scheduler.set_timesteps(self.steps)
        return [int(t) for t in scheduler.timesteps]


def schedule_of(objective_cfg: ObjectiveConfig, sampler_cfg: SamplerConfig | None = None) -> ResidualSchedule:
    """The residual diffusion's schedule from the recipe sections."""
    sampler_cfg = sampler_cfg if sampler_cfg is not None else SamplerConfig()
    return ResidualSchedule(
        num_train_timesteps=objective_cfg.num_train_timesteps,
        beta_start=objective_cfg.beta_start,
        beta_end=objective_cfg.beta_end,
        timestep_spacing=sampler_cfg.timestep_spacing,
        clip_sample=sampler_cfg.clip_sample,
    )


def _map_config_of(cfg: defocus_map.ModelConfig) -> defocus_map.ModelConfig:
    return dataclasses.replace(cfg, pretrained=None)


def map_config_difference(recipe: defocus_map.ModelConfig, file: defocus_map.ModelConfig) -> str:
    """"model.map_model.arch: 'segformer' here, 'dilated' in the file; ..." for the keys that differ (the two whole
    configs, printed side by side, were cut before the keys that differ or what to do)."""
    keys = [f.name for f in dataclasses.fields(recipe) if getattr(recipe, f.name) != getattr(file, f.name)]
    said = "; ".join(f"model.map_model.{k}: {getattr(recipe, k)!r} here, {getattr(file, k)!r} in the file"
                     for k in keys[:3])
    return said + (f"; and {len(keys) - 3} more key(s)" if len(keys) > 3 else "")


def load_map_estimator(path: str) -> tuple[nn.Module, defocus_map.ModelConfig]:
    """The frozen map estimator and its ModelConfig from a defocus-map .safetensors file."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"model.map_checkpoint: defocus-map file not found: {file} (train recipes/defocus-map.yaml first)")
    try:
        state, meta = read_model_file(str(file))
    except Exception as e:
        raise ValueError(f"model.map_checkpoint: cannot read {file}: {e}") from None
    if meta.get("method") != "defocus-map":
        raise ValueError(
            f"model.map_checkpoint: {file} holds a '{meta.get('method')}' model, not a 'defocus-map' estimator"
        )
    recipe = meta.get("recipe")
    if isinstance(recipe, str):
        recipe = json.loads(recipe)
    if not isinstance(recipe, dict):
        raise ValueError(f"model.map_checkpoint: {file} has no recipe in its metadata")
    try:
        section = defocus_map.upgrade_model_section(recipe.get("model"))  # a file of an older version: today's keys
        cfg = _map_config_of(build_dataclass(defocus_map.ModelConfig, section, "model"))
    except RecipeError as e:
        raise ValueError(f"model.map_checkpoint: {file}: its recipe does not describe an estimator: {e}") from None
    estimator = defocus_map.build(cfg, defocus_map.ObjectiveConfig(), for_training=False)
    try:
        estimator.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"model.map_checkpoint: {file}: weights do not fit its recipe: {e}") from None
    return estimator, cfg


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The RDDM networks. For training, the map estimator is loaded frozen from `map_checkpoint` and its
    architecture recorded in `model_cfg.map_model` (the one side effect, so the run's recipe carries it);
    otherwise it is built from `map_model` and its weights come with the RDDM file."""
    if model_cfg.channels != 3:
        raise ValueError(f"model.channels: RDDM works on RGB (3), got {model_cfg.channels}")
    if for_training:
        if model_cfg.detach_pre and not objective_cfg.pre_weight:
            raise ValueError("model.detach_pre: true cuts the residual loss from the pre-deblur, so with "
                             "objective.pre_weight 0 nothing trains it; set objective.pre_weight (e.g. 1.0)")
        if not model_cfg.map_checkpoint:
            raise ValueError("model.map_checkpoint: RDDM needs a trained defocus-map estimator (.safetensors)")
        estimator, map_cfg = load_map_estimator(model_cfg.map_checkpoint)
        if model_cfg.map_model is None:
            model_cfg.map_model = map_cfg
        elif _map_config_of(model_cfg.map_model) != map_cfg:
            raise ValueError(
                f"model.map_model does not match the estimator in {model_cfg.map_checkpoint}: "
                f"{map_config_difference(_map_config_of(model_cfg.map_model), map_cfg)} (remove model.map_model "
                "to take the file's)"
            )
    else:
        if model_cfg.map_model is None:
            raise ValueError("model.map_model: missing, so the map estimator's architecture is unknown")
        estimator = defocus_map.build(_map_config_of(model_cfg.map_model), defocus_map.ObjectiveConfig(), False)
    pre = PreDeblur(
        model_cfg.channels,
        model_cfg.pre_width,
        model_cfg.pre_enc_blocks,
        model_cfg.pre_middle_blocks,
        model_cfg.pre_dec_blocks,
        model_cfg.pre_enc_dw,
        model_cfg.pre_dec_dw,
        model_cfg.pre_scale,
        model_cfg.pre_global_residual,
    )
    resnet = build_resnet(
        model_cfg.resnet_hidden_sizes,
        model_cfg.resnet_depths,
        model_cfg.resnet_embedding_size,
        model_cfg.resnet_pretrained if for_training else None,  # a model file brings its own weights
    )
    semantic = SemanticEncoder(resnet, model_cfg.resnet_trainable)
    denoiser = ResidualDenoiser(
        model_cfg.channels,
        model_cfg.width,
        model_cfg.enc_blocks,
        model_cfg.middle_blocks,
        model_cfg.dec_blocks,
        semantic.channels,
        model_cfg.enc_dw,
        model_cfg.dec_dw,
    )
    return RDDM(
        estimator, pre, semantic, denoiser, schedule_of(objective_cfg),
        model_cfg.map_head, model_cfg.map_normalize, model_cfg.detach_pre,
    )


_EARLIER_KEYS = ("pre_deform_levels", "guidance_channels")  # the port's layout before it followed the release


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """Model files of the earlier RDDM layout cannot be read into today's networks: say so; older keys renamed
    (model.image_channels) and the map estimator's section upgraded as defocus-map files are."""
    model = raw.get("model") or {}
    old = [k for k in _EARLIER_KEYS if k in model]
    if old:
        raise ValueError(
            f"this RDDM model has defocuskit's earlier RDDM layout (model.{old[0]}), from before the port "
            "followed the released code; retrain it with recipes/rddm.yaml"
        )
    raw = rename_key(raw, "model", "image_channels", "channels")  # defocuskit 0.1: model.image_channels
    if isinstance(model.get("map_model"), dict):  # the estimator's section, as the defocus-map file it came from
        raw = {**raw, "model": {**raw["model"], "map_model": defocus_map.upgrade_model_section(model["map_model"])}}
    return raw


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """PSNRLoss(predicted residual, sharp - pre) (+ pre_weight * PSNRLoss(pre, sharp))."""
    blur, sharp = batch["blur"], batch["sharp"]
    t = sample_timesteps(sharp.shape[0], schedule_of(objective_cfg), sharp.device)
    noise = torch.randn_like(sharp)
    pre, r0_hat, r0 = model(blur, sharp, t, noise)
    total = psnr_loss(r0_hat, r0)  # released main.py: loss_F(residual_gt, sample_pred)
    if objective_cfg.pre_weight:
        total = total + objective_cfg.pre_weight * psnr_loss(pre, sharp)
    return total


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """Map -> pre-deblur -> map of the pre-deblurred image -> DDIM residual in ctx.sampler.steps steps
    -> pre + residual, clamped to [0, 1]."""
    if not 1 <= ctx.sampler.steps <= MAX_STEPS:
        raise ValueError(f"sampler.steps: RDDM samples in 1 to {MAX_STEPS} steps, got {ctx.sampler.steps}")
    rddm: RDDM = unwrap(model)
    pre, cond = rddm.condition(blur)
    features = rddm.semantic(pre)  # does not depend on the step: computed once

    def denoiser(r_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return rddm.denoiser(r_t, t, c, features)

    schedule = schedule_of(ctx.objective, ctx.sampler)
    residual = sample_residual_ddim(
        denoiser, cond, tuple(pre.shape), ctx.sampler.steps, ctx.sampler.eta, ctx.generator, ctx.callback, schedule
    )
    return (pre + residual).clamp(0, 1)


def pad_multiple(model: nn.Module) -> int:
    """The least common multiple of what the estimator, the pre-deblur, the ResNet (1/16) and the denoiser need."""
    rddm: RDDM = unwrap(model)
    return math.lcm(rddm.map_estimator.multiple, rddm.pre_deblur.multiple, 16, rddm.denoiser.multiple)


METHOD = Method(
    name="rddm",
    description=(  # one line for the model card
        "a residual diffusion deblurring model: a pre-deblur NAFNet guided by a defocus map, then a "
        'residual DDIM denoiser in a few steps (Feng et al., "Residual Diffusion Deblurring Model for '
        'Single Image Defocus Deblurring", AAAI 2025)'
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    companions=(Companion("model.map_checkpoint", "defocus-map"),),  # the frozen estimator it trains with
    upgrade_recipe=upgrade_recipe,
    # the release tests whole DPDD frames; its map normalisation (minmax_*) and channel attention pool over the
    # whole input, so tiles change the result. The estimator's efficient attention bounds the size (--max-tile-pixels)
    whole_image=True,
    channels_last=True,  # CPU: 1.06-1.14x faster (tiny), tools/bench_channels_last.py
    pad_multiple=pad_multiple,
)
