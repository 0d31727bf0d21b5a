"""FFDNet (Zhang, Zuo and Zhang, TIP 2018) as a deblurring baseline with a blur-level map: one of the HIDD
paper's comparison methods.

What the level map is fed: FFDNet's noise-level map M becomes a BLUR-level map, the circle-of-confusion
diameter map in pixels divided by `model.coc_scale` (so a CoC of coc_scale pixels reads 1.0), averaged
over each 2x2 block onto the sub-image grid. Training reads it from the shards' coc.png (data kind "coc":
synthetic shards); at restore `conditions["coc"]` supplies it, which `deblur` and `eval` take from
`--coc map` (the defocus-map model), `--coc edge` (training-free), `--coc oracle` (coc.png) or `--coc fnumber`
(one CoC per image).

`model.level_map: none` trains and runs with a constant zero map instead (an ablation: FFDNet without its
map input). The method's data kind stays "coc" either way (the kind is fixed per method), so such a
model still trains on shards that carry coc.png; it simply ignores the map.

`SamplerConfig.needs()` sees only the sampler section, so the sampler carries `level_map` too: null (the
default) means "as the model was trained" and is filled in from `model.level_map` when a model file is
read (`upgrade_recipe`); `sampler.level_map: none` runs a CoC-trained model with a zero map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.methods.base import Batch, Method, RestoreContext, Sampler, unwrap
from defocuskit.methods.dncnn import eval_mode
from defocuskit.models.ffdnet import FFDNet

LEVEL_MAPS = ("coc", "none")
_COC_SOURCES = "--coc map --coc-model FILE | --coc edge | --coc oracle | --coc fnumber"


@dataclass
class ModelConfig:
    """Defaults: the paper's colour FFDNet, 12 layers of 96 features (grayscale: 15 layers of 64)."""

    channels: int = 3  # must equal data.channels
    depth: int = 12  # Sec. III-A: 12 conv layers for colour images, 15 for grayscale
    features: int = 96  # Sec. III-A: 96 feature channels for colour images, 64 for grayscale
    level_map: str = "coc"  # coc: CoC map / coc_scale | none: a constant zero map (ablation)
    coc_scale: float = 16.0  # pixels of CoC that read 1.0 in the map (synthetic 256 px scenes: CoC up to ~20 px)
    # True (sound default): blur - output, with the last conv starting at zero (identity_init), so the
    # untrained net returns its input; False, False: the paper (the net outputs the sharp sub-images from a
    # He-initialised start), which a short run leaves ~14 dB below its input (measured, docs/benchmarks.md)
    residual: bool = True
    identity_init: bool = True

    def __post_init__(self) -> None:
        if self.level_map not in LEVEL_MAPS:
            raise ValueError(f"model.level_map: '{self.level_map}' is not one of {', '.join(LEVEL_MAPS)}")
        if not self.coc_scale > 0:
            raise ValueError(f"model.coc_scale: must be positive, got {self.coc_scale}")
        for key in ("channels", "features"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}: must be at least 1, got {getattr(self, key)}")
        if self.depth < 2:
            raise ValueError(f"model.depth: must be at least 2 (first and last layer), got {self.depth}")


@dataclass
class ObjectiveConfig:
    """The paper's MSE loss 1/(2N) sum_i ||F(y_i, M_i) - x_i||^2, taken as a mean over all elements
    (that loss divided by the constant C*H*W/2; Adam is invariant to it, up to eps): nothing to choose."""


@dataclass
class SamplerConfig(Sampler):
    """One forward pass; `level_map` says what the map input is fed at restore."""

    level_map: str | None = None  # None: as the model was trained (model.level_map) | coc | none (zero map)

    def __post_init__(self) -> None:
        if self.level_map is not None and self.level_map not in LEVEL_MAPS:
            raise ValueError(f"sampler.level_map: '{self.level_map}' is not one of {', '.join(LEVEL_MAPS)} (or null)")

    def needs(self) -> frozenset[str]:
        """{"coc"} unless the level map is fed zeros (sampler.level_map none, filled from model.level_map)."""
        return frozenset() if self.level_map == "none" else frozenset({"coc"})


class CocFFDNet(FFDNet):
    """FFDNet whose level map is made from a CoC map in pixels (or is zero), per its ModelConfig."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.channels, cfg.depth, cfg.features, cfg.residual, cfg.identity_init)
        self.level_map = cfg.level_map
        self.coc_scale = float(cfg.coc_scale)

    def level(self, coc: torch.Tensor | None, like: torch.Tensor, feed: str | None = None) -> torch.Tensor:
        """The (B, 1, H, W) level map for images `like`: |coc| / coc_scale (the blur size; a signed map's sign
        is the depth order, which a level map does not use), or zeros when `feed` is "none"."""
        feed = feed or self.level_map
        if feed == "none":
            return like.new_zeros(like.shape[0], 1, *like.shape[-2:])
        if coc is None:
            raise ValueError("ffdnet: needs conditions['coc'], the (B, 1, H, W) circle-of-confusion map in pixels "
                             f"that feeds its level map ({_COC_SOURCES}; or sampler.level_map=none for a zero map)")
        if coc.dim() != 4 or coc.shape[0] != like.shape[0] or coc.shape[1] != 1 or coc.shape[-2:] != like.shape[-2:]:
            raise ValueError(f"ffdnet: CoC map of shape {tuple(coc.shape)} does not fit images of shape "
                             f"{tuple(like.shape)} (expected (B, 1, H, W))")
        return coc.to(device=like.device, dtype=like.dtype).abs() / self.coc_scale


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The FFDNet network (no frozen parts: `for_training` changes nothing)."""
    return CocFFDNet(model_cfg)


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A model file's recipe with sampler.level_map null filled from model.level_map (what restore will feed)."""
    sampler = dict(raw.get("sampler") or {})
    if sampler.get("level_map") is None:
        sampler["level_map"] = (raw.get("model") or {}).get("level_map", "coc")
    return {**raw, "sampler": sampler}


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """MSE of the restored image (given the blurred image and its level map) against the sharp image."""
    net = unwrap(model)
    blur = batch["blur"]
    if net.level_map == "coc" and "coc" not in batch:
        raise ValueError("ffdnet: the batch has no 'coc' (it trains on shards with coc.png: data kind 'coc')")
    level = net.level(batch.get("coc"), blur)
    return F.mse_loss(model(blur, level), batch["sharp"])  # FFDNet's loss (Sec. III-A), as a mean


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One forward pass, BatchNorm in eval mode, clamped to [0, 1]; any size, same shape and dtype back.

    `ctx.conditions["coc"]` (B, 1, H, W), pixels, feeds the level map unless it is fed zeros.
    """
    net = unwrap(model)
    feed = ctx.sampler.level_map or net.level_map
    if feed == "coc" and net.level_map == "none":
        raise ValueError("ffdnet: this model was trained without a level map (model.level_map=none); "
                         "sampler.level_map=coc cannot feed it a CoC map")
    coc = ctx.conditions.get("coc") if feed == "coc" else None
    level = net.level(coc, blur, feed)  # checks presence and shape against the images
    with eval_mode(net):  # BN with its running statistics (the exported file carries them as buffers)
        out = net(blur, level.to(blur))
    ctx.step(0, 1)
    return out.clamp(0.0, 1.0)


METHOD = Method(
    name="ffdnet",
    description=(  # one line for the model card
        "FFDNet (Zhang et al. 2018) with its level-map input fed a circle-of-confusion map"
    ),
    data="coc",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    upgrade_recipe=upgrade_recipe,
    whole_image=True,  # pixel unshuffle + 3x3 convolutions: any even size (odd sizes padded by one)
    pad_multiple=lambda model: 2,  # the 2x2 pixel unshuffle
)
