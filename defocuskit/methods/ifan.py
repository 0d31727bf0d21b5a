"""IFAN (Lee et al., "Iterative Filter Adaptive Network for Single Image Defocus Deblurring", CVPR 2021; released
code codeslake/IFAN) on aligned pairs, as the release trains it (models/trainers/trainer.py, mode 'IFAN'): the MSE
of the restored image against the sharp one plus the MSE of the reblurring network's output (the sharp image
reblurred at 1/8 resolution with filters predicted from the deblurring filters) against the blurred input
area-downsampled to 1/8, plus the release's third term where the shards carry DPDD's dual-pixel views (`ingest
--dpdd D --dual-pixel`): the MSE between the right view warped by the disparity map estimator's map of it and the
left view, both area-downsampled to 1/8 (trainer.py errs['dme'], weight 1: objective.dual_pixel_weight), over
the samples of a batch that have views. Without views (0, the default) the estimator learns through the
deblurring loss alone. One forward pass at test time; the release's checkpoint (IFAN.pytorch) readable by
`import-weights`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.io.release import ReleaseError, find_state_dict, rename_keys
from defocuskit.methods.base import Batch, Method, Protocol, Release, RestoreContext, Sampler, unwrap
from defocuskit.models.ifan import IFAN, disparity_warp


@dataclass
class ModelConfig:
    """Defaults: configs/config_IFAN.py (the network of IFAN.pytorch, Table 2 of the paper)."""

    channels: int = 3  # must equal data.channels (IFAN.py: 3-channel input and output)
    width: int = 32  # config.ch (ch1; ch2 = 2 ch, ch3 = ch4 = 4 ch)
    res_blocks: int = 2  # config.res_num: units of the residual blocks of DME, filter predictor, fusion, RBN
    iterations: int = 17  # config.N: IAC iterations (paper Table 4: N = 8, 17, 26, 35, 44)
    filter_size: int = 3  # config.Fs: size of the IAC's 1-D kernels
    # True: the IAC's separable filter uses its second kernel horizontally (paper Eq. 2; the release's README:
    # "If you are to train the code from scratch, please update the IAC layer to use kernel1 and kernel2");
    # False: models/IAC.py as released, the first kernel in both directions (what the published checkpoints use)
    second_kernel: bool = True
    reblur: bool = True  # the training-only reblurring network (RBN.py), built by trainer.py for mode 'IFAN'
    reblur_iterations: int = 17  # config.RBF_num
    reblur_filter_size: int = 3  # config.RBFs


@dataclass
class ObjectiveConfig:
    loss: str = "mse"  # trainer.py: errs['image'] = MSE(result, GT); "l1" as an alternative
    reblur_weight: float = 1.0  # trainer.py: errs['total'] + errs['reblur'] (weight 1); 0: no reblurring loss
    # trainer.py: errs['total'] + errs['dme'] (weight 1), the DME's dual-pixel loss; needs shards with left.png /
    # right.png (`ingest --dpdd D --dual-pixel`); 0 (the default): the DME learns through the deblurring loss only
    dual_pixel_weight: float = 0.0


@dataclass
class SamplerConfig(Sampler):
    """IFAN runs one forward pass: nothing to choose."""


_LOSSES = ("mse", "l1")


def build(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, for_training: bool = True) -> nn.Module:
    """The IFAN network (with its reblurring network where model.reblur)."""
    if objective_cfg.loss not in _LOSSES:
        raise ValueError(f"objective.loss: '{objective_cfg.loss}' is not one of {', '.join(_LOSSES)}")
    m = model_cfg
    if objective_cfg.reblur_weight > 0 and not m.reblur:
        raise ValueError("objective.reblur_weight > 0 needs the reblurring network (model.reblur: true)")
    for key, value in (("filter_size", m.filter_size), ("reblur_filter_size", m.reblur_filter_size)):
        if value < 1 or value % 2 == 0:
            raise ValueError(f"model.{key}: must be odd and positive, got {value}")
    return IFAN(m.channels, m.width, m.res_blocks, m.iterations, m.filter_size, m.second_kernel, m.reblur,
                m.reblur_iterations, m.reblur_filter_size)


def _distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    return F.mse_loss(a, b) if kind == "mse" else (a - b).abs().mean()


def loss(model: nn.Module, batch: Batch, objective_cfg: ObjectiveConfig, phase: str = "main") -> torch.Tensor:
    """MSE of the (unclipped) restored image against the sharp one, + reblur_weight x MSE of the sharp image
    reblurred by the RBN against the blurred one, both at 1/8 resolution (area-downsampled, as trainer.py)."""
    # one forward through `model` (DistributedDataParallel under several processes: it averages the gradients of a
    # backward through its forward only); the RBN runs wherever the network has it (with reblur_weight 0 its
    # gradients are zeros), so that every parameter is used in every step, as DDP expects
    views = objective_cfg.dual_pixel_weight > 0 and "has_views" in batch
    out = model(batch["blur"], batch["sharp"], batch["right"] if views else None)
    total = _distance(out["output"], batch["sharp"], objective_cfg.loss)
    if out["reblurred"] is not None:
        target = F.interpolate(batch["blur"], scale_factor=1 / 8, mode="area")
        total = total + objective_cfg.reblur_weight * F.mse_loss(out["reblurred"], target)
    if views:
        total = total + objective_cfg.dual_pixel_weight * dual_pixel_loss(
            unwrap(model), batch["left"], batch["right"], batch["has_views"], out["disparity"])
    return total


def dual_pixel_loss(net: nn.Module, left: torch.Tensor, right: torch.Tensor, has_views: torch.Tensor,
                    disparity: torch.Tensor | None = None) -> torch.Tensor:
    """trainer.py errs['dme'] = MSE(DPD(area(R, 1/8), DME(R)), area(L, 1/8)), averaged over the samples that have
    views (0 with a graph through the DME where none has: every parameter keeps a gradient); `disparity`: DME(R)
    where the caller has it (computed in the training forward), else net.disparity(right)."""
    right_small = F.interpolate(right, scale_factor=1 / 8, mode="area")
    left_small = F.interpolate(left, scale_factor=1 / 8, mode="area")
    disparity = net.disparity(right) if disparity is None else disparity
    warped = disparity_warp(right_small, disparity)  # IFAN.py: f_R_w = DPD(area(R), DM)
    per_sample = (warped - left_small).pow(2).flatten(1).mean(1)
    weights = has_views.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


@torch.no_grad()
def restore(model: nn.Module, blur: torch.Tensor, ctx: RestoreContext) -> torch.Tensor:
    """One forward pass, clipped to [0, 1] (IFAN.py: torch.clip(out, 0, 1.0) when not training)."""
    out = model(blur).clamp(0, 1)
    ctx.step(0, 1)
    return out


# --------------------------------------------------------- the released checkpoint (codeslake/IFAN, IFAN.pytorch)

# IFAN.py Network -> models/ifan.py IFAN (the trainer's DeblurNet holds it as `Network`, the RBN as `reblurNet`)
_NAMES = [
    (r"conv([1-4])_([1-3])\.0\.(weight|bias)", lambda m: f"encoder.{int(m[1]) - 1}.{int(m[2]) - 1}.0.{m[3]}"),
    (r"kconv([1-4])_([1-3])\.0\.(weight|bias)", lambda m: f"filter_encoder.{int(m[1]) - 1}.{int(m[2]) - 1}.0.{m[3]}"),
    (r"DME\.(.+)", r"dme.\1"),
    (r"conv_DME\.(.+)", r"dm_embed.\1"),
    (r"conv4_4\.(.+)", r"fuse.\1"),
    (r"F\.(.+)", r"filter_predictor.\1"),
    (r"conv_res\.(.+)", r"reconstructor.\1"),
    (r"upconv([1-3])_u\.(.+)", lambda m: f"ups.{3 - int(m[1])}.{m[2]}"),
    (r"upconv([1-3])_([12])\.(.+)", lambda m: f"decoders.{3 - int(m[1])}.{int(m[2]) - 1}.{m[3]}"),
    (r"out_res\.(.+)", r"out.\1"),
    (r"reblurNet\.RBF\.(.+)", r"reblur.body.\1"),
]


def convert_release(checkpoint: Any) -> dict[str, torch.Tensor]:
    """A checkpoint saved by the release's ckpt_manager.py (the state dict of the trainer's DeblurNet, usually
    under DataParallel's "module."; `Network.` and, as trained, `reblurNet.` names), in this port's names."""
    state = find_state_dict(checkpoint)
    state = {k.removeprefix("Network."): v for k, v in state.items()}
    first = state.get("kconv1_1.0.weight")
    if first is None:
        raise ReleaseError("not IFAN's network (models/archs/IFAN.py, IFAN.pytorch): no 'kconv1_1' filter encoder")
    if first.shape[1] == 6:
        raise ReleaseError("a dual-pixel IFAN (IFAN_dual.pytorch, 6 input channels: the two dual-pixel views); "
                           "defocuskit ports the single-image one (IFAN.pytorch)")
    return rename_keys(state, _NAMES)


def _iterations(weight: torch.Tensor | None, channels: int, k: int) -> int | None:
    """N of a filter head's last conv (N x channels x (2k + 1) outputs: IAC.py's layout); None where it is not one."""
    if weight is None or weight.dim() != 4:
        return None
    n, rest = divmod(weight.shape[0], channels * (2 * k + 1))
    return n if not rest and n > 0 else None


def fits_recipe(tensors: dict[str, torch.Tensor], recipe: Any) -> None:
    """ReleaseError where the checkpoint's IAC iterations (config.N: IFAN_8 ... IFAN_44.pytorch, paper Table 4) or
    its RBN's (config.RBF_num: 8 for IFAN_8, 9 for IFAN_26) are not the recipe's, naming the overrides that fit."""
    m = recipe.model
    filters = tensors.get("filter_predictor.3.weight")
    n = _iterations(filters, filters.shape[1], m.filter_size) if filters is not None and filters.dim() == 4 else None
    rbf = _iterations(tensors.get("reblur.body.3.weight"), m.channels, m.reblur_filter_size)
    fit = [f"model.{key}={v}" for key, v, built in (("iterations", n, m.iterations),
                                                      ("reblur_iterations", rbf, m.reblur_iterations))
           if v is not None and v != built]
    if fit:
        listed = ", ".join(f"'{f}'" for f in fit)
        has = f"N = {n} IAC iterations" if n is not None else "an IAC"
        builds = f"N = {m.iterations}"
        if rbf is not None:
            has, builds = f"{has} and {rbf} in its reblurring network", f"{builds} and {m.reblur_iterations}"
        raise ReleaseError(f"an IFAN with {has} ({f'IFAN_{n}.pytorch, ' if n is not None else ''}paper Table 4); "
                           f"this import builds {builds}. Import it from Python with "
                           f"defocuskit.inference.release.import_release('ifan', PATH, OUT, overrides=[{listed}])")


RELEASE = Release(
    code="codeslake/IFAN@66bf136",
    checkpoints=("IFAN.pytorch in checkpoints.zip, the pretrained weights the README links: "
                 "https://www.dropbox.com/s/qohhmr9p81u0syi/checkpoints.zip?dl=1 (or its OneDrive mirror)"),
    convert=convert_release,
    recipe="ifan",
    # the published checkpoints were trained with models/IAC.py as released (README); data.train: the set it was
    # trained on, as the model card names it
    overrides=("model.second_kernel=false", "data.train=DPDD"),
    optional=("reblur.",),  # the RBN trains only; checkpoints saved while training carry it
    fits=fits_recipe,
    # eval.py: data_loader/utils.py read_frame (cv2.imread, BGR -> RGB) / 255, refine_image crops to a multiple of
    # refine_val = 8 (configs/config_IFAN.py); the network runs on the crop as it is
    protocol=Protocol(script="eval.py (run.py --mode IFAN --network IFAN --config config_IFAN --data DPDD)",
                      bit_depth=8, channel_order="rgb", padding="none", pad_multiple=8, crop_multiple=8),
)


METHOD = Method(
    name="ifan",
    description=(  # one line for the model card
        'the Iterative Filter Adaptive Network trained on aligned pairs with its reblurring loss (Lee et al., '
        '"Iterative Filter Adaptive Network for Single Image Defocus Deblurring", CVPR 2021)'
    ),
    data="paired",
    ModelConfig=ModelConfig,
    ObjectiveConfig=ObjectiveConfig,
    SamplerConfig=SamplerConfig,
    build=build,
    loss=loss,
    restore=restore,
    whole_image=True,  # convolutions and per-pixel filters: any size, as the release tests whole DPDD images
    pad_multiple=lambda model: unwrap(model).multiple,  # three stride-2 levels
    release=RELEASE,
    views=True,  # the dual-pixel loss reads left.png / right.png where a sample has them
    terms=(("objective.dual_pixel_weight", "left.png"),),
)
