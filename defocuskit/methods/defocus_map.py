"""The defocus-map estimator as a method of its own: regresses the circle of confusion from coc.png and,
with `model.blur_head`, detects blur from binary blur maps (blurmask.png, e.g. CUHK) as RDDM's release does.

Data kind "map": samples with blur.png and coc.png and/or blurmask.png. The loss is
coc_weight * (L1, Charbonnier or a quantile's pinball loss on CoC / coc_norm, over the samples that have coc.png)
+ blur_weight * (sigmoid binary cross-entropy of the blur logit, over the samples that have blurmask.png),
each term a mean over its own samples; a term without samples in the batch is 0 (still in the graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.methods.base import Batch, Method, RestoreContext, Sampler
from defocuskit.models.defocus_map import DefocusMapEstimator
from defocuskit.models.dilated_map import DilatedMapEstimator

ARCHS = ("segformer", "dilated")


@dataclass
class ModelConfig:
    """`arch`: "segformer" (the defaults are MiT-b0, SegFormer paper, Table 6; RDDM's release configures MiT-b1's
    widths, recipes/defocus-map.yaml) or "dilated"
    (models/dilated_map.py: `features` averaged down by `downsample`, `width` channels, one 3x3 block per entry of
    `dilations`, residual with GroupNorm unless `residual: false`); the CoC channel only unless `blur_head`."""

    arch: str = "segformer"
    width: int = 24  # dilated only
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 1])  # dilated only
    features: str = "bands"  # dilated only: "bands" (log band energies) or "contrast" (image minus its 7x7 mean)
    downsample: int = 4  # dilated only: the network works at 1/downsample of the input size
    residual: bool = True  # dilated only: residual blocks with GroupNorm (false: the former plain stack)
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 160, 256])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_attention_heads: list[int] = field(default_factory=lambda: [1, 2, 5, 8])
    sr_ratios: list[int] = field(default_factory=lambda: [8, 4, 2, 1])
    decoder_hidden_size: int = 256
    drop_path_rate: float = 0.1
    classifier_dropout_prob: float = 0.0  # dropout before the decode head's 1x1 classifier
    coc_scale: float = 4.0  # pixels per unit of softplus output
    blur_head: bool = False  # a second output channel: the blur-detection logit
    # encoder weights: a hub id ("nvidia/mit-b1"), a save_pretrained folder or a .safetensors state dict;
    # null: random init. Loaded for training only (an exported model carries every weight).
    pretrained: str | None = None


@dataclass
class ObjectiveConfig:
    # "l1", "charbonnier" or "quantile" (pinball loss of `quantile`, times 2: at 0.5 it is L1), on coc / coc_norm
    loss: str = "l1"
    coc_norm: float = 4.0  # pixels; the loss compares maps divided by this
    charbonnier_eps: float = 1e-3
    quantile: float = 0.5  # loss "quantile": the quantile of the CoC estimated (0.5 the median, as L1; lower reads less blur)
    coc_weight: float = 1.0  # weight of the CoC regression term (samples with coc.png)
    blur_weight: float = 0.0  # weight of the blur-detection BCE term (samples with blurmask.png); needs blur_head

    def __post_init__(self) -> None:
        if self.coc_weight < 0 or self.blur_weight < 0:
            raise ValueError(f"objective.coc_weight and objective.blur_weight must not be negative "
                             f"(got {self.coc_weight}, {self.blur_weight})")
        if self.coc_weight == 0 and self.blur_weight == 0:
            raise ValueError("objective.coc_weight and objective.blur_weight are both 0: nothing to train")
        if not 0 < self.quantile < 1:
            raise ValueError(f"objective.quantile must be in (0, 1), got {self.quantile}")


@dataclass
class SamplerConfig(Sampler):
    """The estimator runs one forward pass: nothing to choose."""


_LOSSES = ("l1", "charbonnier", "quantile")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The estimator of `model.arch` (SegFormer: random init unless `pretrained` names encoder weights, for
    training only)."""
    if objective_cfg.loss not in _LOSSES:
        raise ValueError(f"objective.loss: '{objective_cfg.loss}' is not one of {', '.join(_LOSSES)}")
    if objective_cfg.coc_norm <= 0:
        raise ValueError(f"objective.coc_norm must be > 0, got {objective_cfg.coc_norm}")
    if objective_cfg.blur_weight > 0 and not model_cfg.blur_head:
        raise ValueError(f"objective.blur_weight is {objective_cfg.blur_weight} but model.blur_head is false: "
                         "the blur-detection term needs model.blur_head: true")
    if model_cfg.arch not in ARCHS:
        raise ValueError(f"model.arch: '{model_cfg.arch}' is not one of {', '.join(ARCHS)}")
    if model_cfg.arch == "dilated":
        if model_cfg.pretrained:
            raise ValueError("model.pretrained: encoder weights are for arch segformer, not dilated")
        return DilatedMapEstimator(model_cfg.width, model_cfg.dilations, model_cfg.coc_scale, model_cfg.blur_head,
                                   model_cfg.features, model_cfg.downsample, model_cfg.residual)
    return DefocusMapEstimator(
        hidden_sizes=model_cfg.hidden_sizes,
        depths=model_cfg.depths,
        num_attention_heads=model_cfg.num_attention_heads,
        sr_ratios=model_cfg.sr_ratios,
        decoder_hidden_size=model_cfg.decoder_hidden_size,
        drop_path_rate=model_cfg.drop_path_rate,
        coc_scale=model_cfg.coc_scale,
        pretrained=model_cfg.pretrained if for_training else None,
        blur_head=model_cfg.blur_head,
        classifier_dropout_prob=model_cfg.classifier_dropout_prob,
    )


# what a dilated estimator was before `features`, `downsample` and `residual` existed (issue 20)
FORMER_DILATED = {"features": "contrast", "downsample": 1, "residual": False}


def upgrade_model_section(model: dict[str, Any] | None) -> dict[str, Any] | None:
    """A model section of an older file in today's keys: a dilated estimator without `features` had the former
    layout (its dilations were always written, so only the new keys are filled in)."""
    if not isinstance(model, dict) or model.get("arch") != "dilated" or "features" in model:
        return model
    return {**FORMER_DILATED, **model}


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """Model files of older versions read in today's keys (`upgrade_model_section`)."""
    if "model" not in raw:
        return raw
    return {**raw, "model": upgrade_model_section(raw["model"])}


def _rgb(blur: torch.Tensor) -> torch.Tensor:
    return blur.expand(-1, 3, -1, -1) if blur.shape[1] == 1 else blur


def _which(batch: Batch, name: str) -> torch.Tensor:
    """Boolean (B,): the samples that carry `name` (every sample when the batch has `name` but no has_ flag)."""
    flag = batch.get(f"has_{name}")
    if flag is not None:
        return flag.to(device=batch["blur"].device, dtype=torch.bool).reshape(-1)
    return torch.full((batch["blur"].shape[0],), name in batch, dtype=torch.bool, device=batch["blur"].device)


def loss_terms(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig) -> dict[str, torch.Tensor]:
    """{"coc": CoC term, "blur": BCE term} (unweighted), each a mean over the samples that have its map;
    0 (times a sum of the predictions, so the graph reaches every output) when the batch has none."""
    use_coc, use_blur = objective_cfg.coc_weight > 0, objective_cfg.blur_weight > 0
    has_coc, has_mask = _which(batch, "coc") & use_coc, _which(batch, "blurmask") & use_blur
    if not ("coc" in batch or "blurmask" in batch):
        raise ValueError("defocus-map: the batch has neither 'coc' nor 'blurmask' "
                         "(the method trains on shards with coc.png or blurmask.png)")
    out = model(_rgb(batch["blur"]), output="maps" if use_blur else "coc")
    maps = out if isinstance(out, dict) else {"coc": out}
    terms = {}
    pred = maps["coc"]
    if has_coc.any():
        p = pred[has_coc] / objective_cfg.coc_norm
        t = batch["coc"][has_coc].to(p) / objective_cfg.coc_norm
        if objective_cfg.loss == "charbonnier":
            terms["coc"] = torch.sqrt((p - t).pow(2) + objective_cfg.charbonnier_eps**2).mean()
        elif objective_cfg.loss == "quantile":
            q, d = objective_cfg.quantile, t - p
            terms["coc"] = 2 * torch.maximum(q * d, (q - 1) * d).mean()
        else:
            terms["coc"] = F.l1_loss(p, t)
    else:
        terms["coc"] = 0.0 * pred.sum()
    if use_blur:
        logit = maps["blur_logit"]
        if has_mask.any():
            target = batch["blurmask"][has_mask].to(logit)
            terms["blur"] = F.binary_cross_entropy_with_logits(logit[has_mask], target)
        else:
            terms["blur"] = 0.0 * logit.sum()
    else:
        terms["blur"] = 0.0 * pred.sum()
    return terms


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """coc_weight * CoC L1/Charbonnier/quantile + blur_weight * blur BCE with logits (see `loss_terms`)."""
    terms = loss_terms(model, batch, objective_cfg)
    return objective_cfg.coc_weight * terms["coc"] + objective_cfg.blur_weight * terms["blur"]


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """The defocus map (B, 1, H, W) in pixels of circle-of-confusion diameter."""
    coc = model(_rgb(blur))
    ctx.step(0, 1)
    return coc


METHOD = Method(
    name="defocus-map",
    description=(  # one line for the model card
        "a defocus-map estimator (SegFormer or a dilated CNN): it predicts the per-pixel circle-of-confusion diameter in "
        "pixels, not a sharp image"
    ),
    data="map",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    output="defocus_map",
    upgrade_recipe=upgrade_recipe,
    # each loss term learns from the samples that have its member: the shards must feed every weighted term
    terms=(("objective.coc_weight", "coc.png"), ("objective.blur_weight", "blurmask.png")),
    # SegFormer's efficient attention: memory grows with (HW)^2 / R^2: tiles of the training size
    whole_image=False,
)
