"""The one interface every method implements: the training loop, `deblur` and `eval` see only this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn

# What a method needs from the shards:
#   "sharp":  sharp images only (sharp-only and paired samples both give sharp.png)
#   "paired": samples with blur.png and sharp.png
#   "coc":    samples with blur.png and coc.png (the circle-of-confusion ground truth)
#   "map":    samples with blur.png and coc.png or blurmask.png (a binary blur map): the defocus-map estimator
DataKind = Literal["sharp", "paired", "coc", "map"]

# A training batch: float tensors, images in [0, 1], shape (B, C, H, W), C = recipe data.channels:
#   batch["sharp"], batch["blur"] (paired/coc), batch["coc"] (coc: (B, 1, H, W), pixels),
#   batch["f_number"] (B,) float, NaN where unknown.
Batch = dict[str, torch.Tensor]

# Per-sample conditions handed to `restore` beside the images (each optional):
#   conditions["coc"]: (B, 1, H, W) circle-of-confusion diameter in pixels (defocus map, coc.png or optics).
Conditions = dict[str, torch.Tensor]


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (.module) or torch.compile (._orig_mod) wrapper."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def _unchanged(cfg: Any) -> Any:
    return cfg


def _one_pass(cfg: Any) -> int:
    return 1


def _no_conditions(cfg: Any) -> frozenset[str]:
    return frozenset()


def _no_timesteps(sampler_cfg: Any, objective_cfg: Any) -> list[int] | None:
    return None


def _all_parameters(model: nn.Module, phase: str) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def model_multiple(model: nn.Module) -> int:
    """The `multiple` attribute of the network (1 where it has none): H and W it needs to be multiples of."""
    return int(getattr(unwrap(model), "multiple", 1))


@dataclass(frozen=True)
class Method:
    """A deblurring method: its config sections, how to build its network, train it and run it.

    build(model_cfg, objective_cfg, for_training) -> nn.Module
        the network(s); `for_training=False` skips loading frozen parts from other files
        (the exported .safetensors carries every weight).
    loss(model, batch, objective_cfg) -> scalar tensor
        the training objective; randomness from torch's global RNG (the loop reseeds it per step).
        A method with several `phases` takes the phase as a fourth argument: loss(model, batch, cfg, phase).
    phases: the optimizers, by name, each stepped once per training step in this order on the same
        micro-batches (one, "main", for most methods; "generator", "discriminator" for a GAN). Each has
        its own optimizer and LR schedule from the recipe's `optim` section, checkpointed and restored.
    phase_parameters(model, phase) -> list of parameters that phase's optimizer updates.
    restore(model, blur, sampler_cfg, objective_cfg, generator, callback, conditions) -> tensor
        deblurs a batch (B, C, H, W) in [0, 1]; returns the same shape, for the "deblur"
        output of the method (an image, or a defocus map for the map estimator).
        `callback(i, n)` reports progress over sampler steps; `conditions` are per-sample inputs
        beside the image (see Conditions), those named by `needs`.
    resolve_sampler(sampler_cfg) -> sampler_cfg
        the config as it will run (defaults that depend on other keys filled in).
    nfe(sampler_cfg) -> int
        network evaluations per sample path (per tile): steps x evaluations per step.
    needs(sampler_cfg) -> frozenset of condition names restore requires with this config.
    timesteps(sampler_cfg, objective_cfg) -> the training timesteps the sampler visits, in order, where a
        scheduler sets them (recorded in deblur.json / report.json), else None.
    upgrade_recipe(raw) -> raw
        a recipe dict read from an older model file, in today's keys.
    whole_image: how inference may run the network on a large input. True: in one pass over the whole
        (padded) image, as far as a memory budget allows (translation-equivariant convolutions, whose
        cost grows linearly with the pixels); False: in tiles of the training size (self-attention,
        whose cost and whose learnt context depend on the input size). Each method says why.
    pad_multiple(model) -> int
        the multiple that the network needs H and W to be (a U-Net with k downsamplings: 2**k);
        a whole-image pass reflect-pads the image to it and crops the output back.
    description: what the method is, in one line naming its paper (the Hub model card says it).
    channels_last: on a CPU, inference hands the network its input in channels-last memory format
        (oneDNN's convolutions run NHWC without reordering each layer's input; the same values to float
        rounding). True only where `tools/bench_channels_last.py` measured it faster (docs/benchmarks.md).
    """

    name: str
    data: DataKind
    ModelConfig: type
    ObjectiveConfig: type
    SamplerConfig: type
    build: Callable[[Any, Any, bool], nn.Module]
    loss: Callable[[nn.Module, Batch, Any], torch.Tensor]
    restore: Callable[..., torch.Tensor]
    output: Literal["image", "defocus_map"] = "image"
    description: str = ""
    resolve_sampler: Callable[[Any], Any] = _unchanged
    nfe: Callable[[Any], int] = _one_pass
    needs: Callable[[Any], frozenset[str]] = _no_conditions
    upgrade_recipe: Callable[[dict[str, Any]], dict[str, Any]] = _unchanged
    timesteps: Callable[[Any, Any], list[int] | None] = _no_timesteps
    phases: tuple[str, ...] = ("main",)
    phase_parameters: Callable[[nn.Module, str], list[nn.Parameter]] = _all_parameters
    whole_image: bool = False
    pad_multiple: Callable[[nn.Module], int] = model_multiple
    channels_last: bool = False
