"""JDRL (Li et al., reblurring-guided defocus deblurring with misaligned pairs; released code liyucs/JDRL).

Training, as solver/solver.py schedules it (Charbonnier loss, eps 1e-3, utils/losses.py):

- stage 1 (the first `reblur_start_step` calls of `loss`; the released code: epochs 0-14 of 100):
  L = Charb(output, W(sharp -> blurry grid))
- stage 2: L = Charb(M * output, M * W(sharp -> output grid)) + Charb(M' * sharp, M' * W(output -> sharp grid))
           + reblur_weight * Charb(reblur(output, blurry), blurry) + map_weight * |map - reblur map| / r_max

W warps by OpenCV DIS flow (defocuskit.imaging.flow; the released code uses PWC-Net), the identity for a
pixel-aligned (rendered) pair unless objective.warp is "always" (the release's every-pair warp), M and M' are
validity masks (in frame, forward-backward consistent; the released code keeps pixels whose flow colour is
within 35 % of the image mean instead). With objective.reblur_trains_deblur false the reblurring module reblurs
a detached output (the reblur loss trains the module alone). The last term is the paper's pseudo supervision
("pairs into triplets"): the deblurring net's own blur map learns the reblurring module's map (detached), in
units of the largest kernel radius r_max; the released code has no such term, so `map_weight` is this port's choice.

The schedule depends on the training step, but `loss` gets no step: the model keeps a step counter as a
registered buffer (`JDRL.step`), incremented by every call of `loss`. It travels with the weights, so a
resumed run (Accelerate `save_state` holds buffers), the EMA copy and the exported file all know it.
It counts micro-batches: with train.grad_accum = k the reblur stage starts after reblur_start_step / k
optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.imaging.flow import PRESETS
from defocuskit.io.release import STATE_KEYS, ReleaseError, find_state_dict, rename_keys
from defocuskit.methods.base import Batch, Method, Protocol, Release, RestoreContext, Sampler, rename_key, unwrap
from defocuskit.models.jdrl import JDRL, KERNEL_NORMS, DeblurNet, ReblurModule


@dataclass
class ModelConfig:
    """Defaults: the released sizes (model_deblur.py, kpn.py); the map estimator and fusion are this port's."""

    channels: int = 3  # must equal data.channels
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])  # VGG_Deblur encoder
    dropout: float = 0.4  # drop4, drop5 of VGG_Deblur
    dropout_levels: int = 2
    map_channels: int = 64  # blur-map estimator trunk (as KERNEL_MAP: nf 64, 3 residual blocks)
    map_blocks: int = 3
    fusion_channels: int = 64  # hidden width of the map -> (gamma, beta) fusion convs
    reblur_channels: int = 64  # KPN / KERNEL_MAP nf
    reblur_blocks: int = 3  # residual blocks per branch
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 5, 7, 9, 11, 13, 15])
    kernel_norm: str = "softmax"  # "softmax" over the K x K entries (released) or "sum"
    # True (sound default): the output is the blurred input plus a correction that starts at zero; False: the
    # released sigmoid image output, which a short run leaves ~3 dB below its input (measured, docs/benchmarks.md)
    global_residual: bool = True
    # True: the deblurring net predicts its own blur map and is modulated by it (this port's reading of the paper);
    # False: the released VGG_Deblur without one (what imported checkpoints build)
    blur_map: bool = True


@dataclass
class ObjectiveConfig:
    reblur_start_step: int = 60000  # calls of `loss` before stage 2 (released: epoch 15 of 100)
    reblur_weight: float = 0.5  # solver.py: char_loss + reblur_loss * 0.5
    map_weight: float = 0.1  # pseudo-supervised blur map (not in the released code)
    charbonnier_eps: float = 1e-3  # utils/losses.py CharbonnierLoss
    flow_preset: str = "medium"  # OpenCV DIS preset: ultrafast | fast | medium
    mask: str = "fb"  # stage-2 validity: "fb" (in frame + forward-backward consistent) | "frame" | "none"
    # "auto" (sound default): pixel-aligned pairs (rendered: batch["aligned"]) are compared unwarped, every other
    # pair through the flow; "always": every pair warped, as the released solver.py does (its pairs are all real).
    # Warping an aligned pair only resamples its target: DIS flow between a sharp and a blurred 96 px crop is
    # noisy, and the warped target keeps 70 % of the reference's fine detail at f/1.8 (docs/benchmarks.md).
    warp: str = "auto"
    # True (the release: solver.py reblurs the output itself): the reblurring loss also trains the deblurring net,
    # the paper's supervision aligned with the input for misaligned pairs; it pulls the output towards what the
    # module can blur into the input, the input itself while the module is young: on jdrl-cpu's 1,500-step run it
    # undid two thirds of stage 1's gain (docs/benchmarks.md). False: the module learns from a detached output,
    # the deblurring net from the targets and the blur-map term (recipes/jdrl-cpu.yaml).
    reblur_trains_deblur: bool = True


@dataclass
class SamplerConfig(Sampler):
    """JDRL deblurs in one forward pass of the deblurring network: nothing to choose."""


_MASKS = ("fb", "frame", "none")
_WARPS = ("auto", "always")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The deblurring network with its blur-map estimator, and the reblurring module."""
    o = objective_cfg
    if o.mask not in _MASKS:
        raise ValueError(f"objective.mask: '{o.mask}' is not one of {', '.join(_MASKS)}")
    if o.warp not in _WARPS:
        raise ValueError(f"objective.warp: '{o.warp}' is not one of {', '.join(_WARPS)}")
    if o.flow_preset not in PRESETS:
        raise ValueError(f"objective.flow_preset: '{o.flow_preset}' is not one of {', '.join(PRESETS)}")
    if o.reblur_start_step < 0 or o.reblur_weight < 0 or o.map_weight < 0 or o.charbonnier_eps <= 0:
        raise ValueError("objective: reblur_start_step, reblur_weight and map_weight must be >= 0, "
                         "charbonnier_eps > 0")
    m = model_cfg
    if m.kernel_norm not in KERNEL_NORMS:
        raise ValueError(f"model.kernel_norm: '{m.kernel_norm}' is not one of {', '.join(KERNEL_NORMS)}")
    if not m.blur_map and o.map_weight > 0:
        raise ValueError("objective.map_weight > 0 needs the blur-map estimator (model.blur_map: true); set it to 0")
    deblur = DeblurNet(m.channels, m.widths, m.dropout, m.dropout_levels, m.map_channels, m.map_blocks,
                       m.fusion_channels, m.global_residual, m.blur_map)
    reblur = ReblurModule(m.channels, m.reblur_channels, m.reblur_blocks, m.kernel_sizes, m.kernel_norm)
    return JDRL(deblur, reblur)


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean sqrt((x - y)^2 + eps^2) (utils/losses.py CharbonnierLoss)."""
    return torch.sqrt((x - y).pow(2) + eps * eps).mean()


def in_reblur_stage(model: nn.Module, objective_cfg: ObjectiveConfig) -> bool:
    """Whether the next call of `loss` trains stage 2 (masked flow loss + reblur loss)."""
    return int(unwrap(model).step) >= objective_cfg.reblur_start_step


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """Stage 1: Charbonnier against the flow-warped sharp image; stage 2: masked two-way flow loss
    + reblur_weight x reblur loss + map_weight x blur-map loss (see the module docstring)."""
    net = unwrap(model)
    blur, sharp = batch["blur"], batch["sharp"]
    o = objective_cfg
    stage2 = in_reblur_stage(net, o)
    aligned = batch.get("aligned") if o.warp == "auto" else None
    out = model(blur, sharp, stage2, o.flow_preset, o.mask == "fb", aligned, not o.reblur_trains_deblur)
    with torch.no_grad():
        net.step += 1
    if not stage2:
        return charbonnier(out["output"], out["target"], o.charbonnier_eps) + out["ghost"]
    mask, mask_back = (out["mask"], out["mask_back"]) if o.mask != "none" else (1.0, 1.0)
    flow_loss = (charbonnier(mask * out["output"], mask * out["target"], o.charbonnier_eps)
                 + charbonnier(mask_back * sharp, mask_back * out["output_on_sharp"], o.charbonnier_eps))
    reblur_loss = charbonnier(out["reblurred"], blur, o.charbonnier_eps)  # reblurred output vs blurry input
    total = flow_loss + o.reblur_weight * reblur_loss
    if out["map"] is None:  # the released network: no blur map of its own
        return total
    r_max = net.reblur.radii[-1]
    return total + o.map_weight * F.l1_loss(out["map"], out["reblur_map"].detach()) / r_max


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One pass of the deblurring network (any size: padded and cropped back), clamped to [0, 1]."""
    net = unwrap(model)
    out = net.deblur(blur)[0].clamp(0, 1)
    ctx.step(0, 1)
    return out


def upgrade_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A recipe of defocuskit 0.1 (model.image_channels) in today's keys (model.channels)."""
    return rename_key(raw, "model", "image_channels", "channels")


# ------------------------------------------------------- the released checkpoint (liyucs/JDRL, unet-jdrl-sdd.pth)

# models/model_deblur.py VGG_Deblur -> DeblurNet (blur_map false): encoder.blockN, upN (Upsample, Conv2d), blockN, out
_DEBLUR_NAMES = [
    (r"encoder\.block([1-5])\.([02])\.(weight|bias)", lambda m: f"encoders.{int(m[1]) - 1}.{m[2]}.{m[3]}"),
    (r"up([6-9])\.1\.(weight|bias)", lambda m: f"ups.{int(m[1]) - 6}.conv.{m[2]}"),
    (r"block([6-9])\.([02])\.(weight|bias)", lambda m: f"decoders.{int(m[1]) - 6}.{m[2]}.{m[3]}"),
    (r"out\.0\.(weight|bias)", r"out.\1"),
]
# models/kpn.py Reblur_Model -> ReblurModule: kpn (KPN) and kernel_map_gene (KERNEL_MAP), each conv_first, block1-3, out
_BRANCHES = {"kpn": "kernel", "kernel_map_gene": "weights"}
_REBLUR_NAMES = [
    (r"(kpn|kernel_map_gene)\.conv_first\.(weight|bias)", lambda m: f"{_BRANCHES[m[1]]}.0.{m[2]}"),
    (r"(kpn|kernel_map_gene)\.block([1-3])\.(conv[12])\.(weight|bias)",
     lambda m: f"{_BRANCHES[m[1]]}.{m[2]}.{m[3]}.{m[4]}"),
    (r"(kpn|kernel_map_gene)\.out\.(weight|bias)", lambda m: f"{_BRANCHES[m[1]]}.4.{m[2]}"),
]


def _to_rgb(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released networks read and write BGR (cv2.imread without conversion, dataset.py and test_model.py):
    the input channels of the first convolutions and the output channels of the last one reordered to RGB, so
    that the imported network takes and gives RGB with the same values."""
    bgr = {"deblur.encoders.0.0.weight": (1, [2, 1, 0]), "deblur.out.weight": (0, [2, 1, 0]),
           "deblur.out.bias": (0, [2, 1, 0]), "reblur.kernel.0.weight": (1, [2, 1, 0, 5, 4, 3]),
           "reblur.weights.0.weight": (1, [2, 1, 0, 5, 4, 3])}
    out = dict(state)
    for key, (dim, order) in bgr.items():
        if key in out and out[key].dim() > dim and out[key].shape[dim] == len(order):  # else the shape check says
            out[key] = out[key].index_select(dim, torch.tensor(order))
    return out


def convert_release(checkpoint: Any) -> dict[str, torch.Tensor]:
    """A checkpoint saved by the released solver.py ({'G_state_dict', 'Reblur_state_dict', ...}, DataParallel
    names), or a bare VGG_Deblur state dict, in this port's names and RGB order; the step counter is not in it."""
    deblur = find_state_dict(checkpoint, ("G_state_dict", *STATE_KEYS))  # test.py: 'G_state_dict' (UNet)
    if not any(k.startswith("encoder.block1.") for k in deblur):
        raise ReleaseError("not JDRL's U-Net (models/model_deblur.py VGG_Deblur, unet-jdrl-sdd.pth): no "
                           "'encoder.block1' weights; the release's MPRNet and IFAN checkpoints are other networks, "
                           "not ported")
    state = rename_keys(deblur, _DEBLUR_NAMES, "deblur.")
    if isinstance(checkpoint, dict) and "Reblur_state_dict" in checkpoint:
        state.update(rename_keys(find_state_dict(checkpoint["Reblur_state_dict"]), _REBLUR_NAMES, "reblur."))
    return _to_rgb(state)


RELEASE = Release(
    code="liyucs/JDRL@c9c420e",
    checkpoints=("unet-jdrl-sdd.pth (UNet* trained on SDD; the README's link "
                 "https://drive.google.com/file/d/1o7tI2nj6uLEgCPmx7nh2AvziqIaFTM78/view)"),
    convert=convert_release,
    recipe="jdrl",
    # the released network; data.train: the set it was trained on, as the model card names it
    overrides=("model.blur_map=false", "model.global_residual=false", "objective.map_weight=0", "data.train=SDD"),
    # the reblurring module trains only; checkpoints saved by solver.py carry it. The step counter is the port's.
    optional=("reblur.", "step"),
    protocol=Protocol(script="test_model/test_model.py (--model UNet)", bit_depth=8, channel_order="bgr",
                      padding="none", pad_multiple=16, crop_multiple=16),
)


METHOD = Method(
    name="jdrl",
    description=(  # one line for the model card
        "a deblurring network trained on misaligned pairs through a reblurring module with per-pixel "
        'isotropic kernels (Li et al., "Reblurring-Guided Single Image Defocus Deblurring")'
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    upgrade_recipe=upgrade_recipe,
    whole_image=True,  # a convolutional U-Net with a convolutional map estimator: any size
    channels_last=True,  # CPU: 1.3-1.6x (tiny) / 1.2-1.3x (paper size) faster, tools/bench_channels_last.py
    pad_multiple=lambda model: unwrap(model).deblur.multiple,  # 2**(levels - 1) max-poolings
    release=RELEASE,
)
