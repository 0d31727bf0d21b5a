"""RDDM (Feng et al., AAAI 2025): frozen defocus-map estimator, pre-deblur NAFNet, residual DDIM denoiser.

Training is joint for the pre-deblur and the denoiser:
loss = pre_weight * PSNRLoss(pre, sharp) + PSNRLoss(r0_hat, sharp - pre), the pre-deblurred image
detached inside the residual term. The map estimator is trained first by recipes/defocus-map.yaml
and loaded frozen from its .safetensors file (`model.map_checkpoint`); its architecture is copied
into `model.map_model`, so the exported RDDM file (which holds the estimator's weights too) is
self-contained.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from defocuskit.diffusion.ddim_residual import (
    ResidualSchedule, make_scheduler, sample_residual_ddim, sample_timesteps,
)
from defocuskit.methods import defocus_map
from defocuskit.methods.base import Batch, Conditions, Method, unwrap
from defocuskit.models.nafnet import psnr_loss
from defocuskit.models.rddm import RDDM, GuidanceNet, PreDeblur, ResidualDenoiser
from defocuskit.train.recipe import RecipeError, build_dataclass

MAX_STEPS = 4


@dataclass
class ModelConfig:
    """Defaults: the paper's sizes (pre-deblur NAFNet width 32 at 1/8; denoiser NAFNet width 64, [1,1,1,14])."""

    map_checkpoint: str | None = None  # defocus-map .safetensors, loaded frozen for training
    map_model: defocus_map.ModelConfig | None = None  # the estimator's architecture (copied from map_checkpoint)
    image_channels: int = 3  # RGB only (ResNet guidance)
    pre_width: int = 32
    pre_enc_blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    pre_middle_blocks: int = 1
    pre_dec_blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    pre_scale: int = 8  # the pre-deblur works at 1/pre_scale resolution (pixel-unshuffle)
    pre_deform_levels: int = 1  # outer encoder/decoder levels with deformable convs
    width: int = 64
    enc_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 14])
    middle_blocks: int = 1
    dec_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    guidance_channels: int = 64
    resnet_hidden_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024])  # ResNet-50 stages 1-3
    resnet_depths: list[int] = field(default_factory=lambda: [3, 4, 6])
    resnet_embedding_size: int = 64
    resnet_pretrained: str | None = None  # local folder or cached hub name (e.g. microsoft/resnet-50)
    resnet_trainable: bool = True


@dataclass
class ObjectiveConfig:
    num_train_timesteps: int = 1300
    beta_start: float = 1e-4
    beta_end: float = 0.02
    pre_weight: float = 1.0  # weight of the pre-deblur's own PSNR loss


@dataclass
class SamplerConfig:
    steps: int = 2  # DDIM steps, 1-4
    eta: float = 0.0
    timestep_spacing: str = "trailing"  # "trailing" starts from t = T - 1, where r_T is pure noise

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"sampler.steps: RDDM samples in 1 to {MAX_STEPS} steps, got {self.steps}")


def schedule_of(objective_cfg: ObjectiveConfig, sampler_cfg: SamplerConfig | None = None) -> ResidualSchedule:
    """The residual diffusion's schedule from the recipe sections."""
    spacing = sampler_cfg.timestep_spacing if sampler_cfg is not None else "trailing"
    return ResidualSchedule(
        num_train_timesteps=objective_cfg.num_train_timesteps,
        beta_start=objective_cfg.beta_start,
        beta_end=objective_cfg.beta_end,
        timestep_spacing=spacing,
    )


def timesteps(sampler_cfg: SamplerConfig, objective_cfg: ObjectiveConfig) -> list[int]:
    """The DDIM timesteps the sampler visits for `sampler_cfg.steps` (diffusers' DDIMScheduler.set_timesteps)."""
    scheduler = make_scheduler(schedule_of(objective_cfg, sampler_cfg))
    scheduler.set_timesteps(sampler_cfg.steps)
    return [int(t) for t in scheduler.timesteps]


def _map_config_of(cfg: defocus_map.ModelConfig) -> defocus_map.ModelConfig:
    return dataclasses.replace(cfg, pretrained=None)


def load_map_estimator(path: str) -> tuple[nn.Module, defocus_map.ModelConfig]:
    """The frozen map estimator and its ModelConfig from a defocus-map .safetensors file."""
    from defocuskit.train.export import read_model_file

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
        cfg = _map_config_of(build_dataclass(defocus_map.ModelConfig, recipe.get("model"), "model"))
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
    if model_cfg.image_channels != 3:
        raise ValueError(f"model.image_channels: RDDM works on RGB (3), got {model_cfg.image_channels}")
    if for_training:
        if not model_cfg.map_checkpoint:
            raise ValueError("model.map_checkpoint: RDDM needs a trained defocus-map estimator (.safetensors)")
        estimator, map_cfg = load_map_estimator(model_cfg.map_checkpoint)
        if model_cfg.map_model is None:
            model_cfg.map_model = map_cfg
        elif _map_config_of(model_cfg.map_model) != map_cfg:
            raise ValueError(
                f"model.map_model does not match the estimator in {model_cfg.map_checkpoint}: "
                f"{_map_config_of(model_cfg.map_model)} vs {map_cfg} (remove model.map_model to take the file's)"
            )
    else:
        if model_cfg.map_model is None:
            raise ValueError("model.map_model: missing, so the map estimator's architecture is unknown")
        estimator = defocus_map.build(_map_config_of(model_cfg.map_model), defocus_map.ObjectiveConfig(), False)
    pre = PreDeblur(
        model_cfg.image_channels,
        model_cfg.pre_width,
        model_cfg.pre_enc_blocks,
        model_cfg.pre_middle_blocks,
        model_cfg.pre_dec_blocks,
        model_cfg.pre_scale,
        model_cfg.pre_deform_levels,
    )
    guidance = GuidanceNet(
        model_cfg.guidance_channels,
        model_cfg.resnet_hidden_sizes,
        model_cfg.resnet_depths,
        model_cfg.resnet_embedding_size,
        model_cfg.resnet_pretrained if for_training else None,
        model_cfg.resnet_trainable,
    )
    denoiser = ResidualDenoiser(
        model_cfg.image_channels,
        model_cfg.width,
        model_cfg.enc_blocks,
        model_cfg.middle_blocks,
        model_cfg.dec_blocks,
        model_cfg.guidance_channels,
    )
    return RDDM(estimator, pre, guidance, denoiser, schedule_of(objective_cfg))


def _check_rgb(blur: torch.Tensor) -> None:
    if blur.shape[1] != 3:
        raise ValueError(f"rddm: images have {blur.shape[1]} channels; RDDM needs RGB (data.channels: 3)")


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig) -> torch.Tensor:
    """pre_weight * PSNRLoss(pre, sharp) + PSNRLoss(predicted residual, true residual)."""
    blur, sharp = batch["blur"], batch["sharp"]
    _check_rgb(blur)
    t = sample_timesteps(sharp.shape[0], schedule_of(objective_cfg), sharp.device)
    noise = torch.randn_like(sharp)
    pre, r0_hat, r0 = model(blur, sharp, t, noise)
    return objective_cfg.pre_weight * psnr_loss(pre, sharp) + psnr_loss(r0_hat, r0)


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
    """Map -> pre-deblur -> DDIM residual in sampler_cfg.steps steps -> pre + residual, clamped to [0, 1]."""
    if not 1 <= sampler_cfg.steps <= MAX_STEPS:
        raise ValueError(f"sampler.steps: RDDM samples in 1 to {MAX_STEPS} steps, got {sampler_cfg.steps}")
    _check_rgb(blur)
    rddm: RDDM = unwrap(model)
    pre, cond = rddm.condition(blur)
    guidance = rddm.guidance_map(cond)  # does not depend on the step: computed once

    def denoiser(r_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return rddm.denoiser(r_t, t, c, guidance=guidance)

    schedule = schedule_of(objective_cfg, sampler_cfg)
    residual = sample_residual_ddim(
        denoiser, cond, tuple(pre.shape), sampler_cfg.steps, sampler_cfg.eta, generator, callback, schedule
    )
    return (pre + residual).clamp(0, 1)


METHOD = Method(
    name="rddm",
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    nfe=lambda cfg: int(cfg.steps),  # one denoiser evaluation per DDIM step (plus the one-pass pre-deblur)
    timesteps=timesteps,
)
