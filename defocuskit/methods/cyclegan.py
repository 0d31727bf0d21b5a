"""CycleGAN (Zhu et al., ICCV 2017) as the HIDD paper's unpaired baseline: blur <-> sharp, two optimizers.

Trained with two phases per step (the `Method.phases` interface): the generators (adversarial + cycle +
identity loss), then the discriminators, each with its own Adam and LR schedule, as the released code
alternates them (`optimize_parameters`: G step, then D step). Deblurring runs G_blur2sharp.

Differences from the released code, named: the generators are global residuals by default
(`model.global_residual`; false is the released generator); the image pool of 50 earlier fakes (`--pool_size 50`) is
not kept (`--pool_size 0`): its contents would be training state outside the weights and break exact
resume; the discriminators see fakes of the generators just updated (the released code reuses the
fakes of the same iteration, made before the G step). Pairs come from paired shards; with
`objective.unpaired` (default) each blurred image is matched with another sample's sharp image (the
batch's sharp images rolled by one). No loss term couples a blur with the sharp image of its index and each is a
mean over the batch, so the roll changes no loss or gradient (to rounding): a step's sharp images are those of
its own blurs either way, where the release draws them at random (`--serial_batches` off).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from defocuskit.methods.base import Batch, Method, RestoreContext, Sampler, unwrap
from defocuskit.models.cyclegan import CycleGAN

PHASES = ("generator", "discriminator")


@dataclass
class ModelConfig:
    """Defaults: the released `resnet_9blocks` generator and 70x70 PatchGAN (paper appendix 7.2)."""

    channels: int = 3  # must equal data.channels
    ngf: int = 64  # generator filters in the first layer (--ngf)
    ndf: int = 64  # discriminator filters in the first layer (--ndf)
    n_blocks: int = 9  # residual blocks (9 for 256 px training images, paper 7.2)
    n_down: int = 2  # stride-2 downsamplings (d128, d256)
    d_layers: int = 3  # PatchGAN depth (--n_layers_D 3: 70x70 receptive field)
    # True (sound default): each generator returns its input plus a correction, starting as the identity;
    # False: the released generator that synthesises the image from scratch, which a short run leaves
    # ~14 dB below its input (measured, docs/benchmarks.md)
    global_residual: bool = True


@dataclass
class ObjectiveConfig:
    lambda_cycle: float = 10.0  # lambda in eq. (3) (released --lambda_A / --lambda_B 10)
    lambda_identity: float = 0.5  # identity loss weight relative to lambda (released --lambda_identity 0.5)
    unpaired: bool = True  # roll the batch's sharp images by one (changes no loss: see the module docstring)


@dataclass
class SamplerConfig(Sampler):
    """One generator pass: nothing to choose."""


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """Both generators and both discriminators (the exported file carries all four)."""
    return CycleGAN(model_cfg.channels, model_cfg.ngf, model_cfg.ndf, model_cfg.n_blocks, model_cfg.n_down,
                    model_cfg.d_layers, objective_cfg.lambda_cycle, objective_cfg.lambda_identity,
                    model_cfg.global_residual)


def phase_parameters(model: nn.Module, phase: str) -> list[nn.Parameter]:
    """The generators' parameters for "generator", the discriminators' for "discriminator"."""
    net = unwrap(model)
    if phase == "generator":
        return net.generators()
    if phase == "discriminator":
        return net.discriminators()
    raise ValueError(f"cyclegan: unknown phase {phase!r} ({', '.join(PHASES)})")


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str) -> torch.Tensor:
    """The phase's loss, computed in the model's forward (so that DDP synchronises its gradients)."""
    blur, sharp = batch["blur"], batch["sharp"]
    if objective_cfg.unpaired and sharp.shape[0] > 1:
        sharp = sharp.roll(1, dims=0)
    return model(blur, sharp, phase)


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """G_blur2sharp, one pass, any size, clamped to [0, 1]."""
    out = unwrap(model).deblur(blur)
    ctx.step(0, 1)
    return out


METHOD = Method(
    name="cyclegan",
    description=(  # one line for the model card
        "an unpaired blurred-to-sharp CycleGAN generator (Zhu et al. 2017)"
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    phases=PHASES,
    phase_parameters=phase_parameters,
    # a ResNet generator of convolutions; its instance norm takes the statistics of the whole input, as the
    # released test.py does on full frames (--preprocess none)
    whole_image=True,
    pad_multiple=lambda model: unwrap(model).g_blur2sharp.multiple,  # 2**n_down stride-2 convolutions
)
