"""How one output is scored against its reference (the evaluation protocol's choices): rounded to the reference's
bit depth as it would be written, optionally aligned (the sample's one warp onto the reference, fitted from its input
by ECC, or the reference warped onto the output by flow), then PSNR, SSIM, MAE and LPIPS where its weights are
given."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from defocuskit.eval import metrics
from defocuskit.io.images import from_float

PSNR_CAP_DB = 100.0  # per-image PSNR of identical images (inf) is reported as this, so means stay finite


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How outputs are scored (the evaluation protocol's choices)."""

    ssim_variant: str = "uniform7"
    align: str | bool | None = None  # None, "ecc" (True: the sample's one warp onto the GT), "flow" (GT onto outputs)
    lpips_model: Any = None  # an eval.lpips.LPIPSAlex, or None: LPIPS unavailable
    quantize: bool = True  # outputs rounded to the reference's bit depth (False: clipped floats, --protocol dpdd8)
    detail_band: float | None = None  # px: output's and input's low-pass replaced by the reference's

    def sample_warp(self, inp: np.ndarray, ref: np.ndarray, depth: int,
                    unregistered: Callable[[str], None] | None = None) -> dict[str, Any] | None:
        """The sample's one warp under this scoring (module function `sample_warp`), for `prepare_pair`."""
        return sample_warp(inp, ref, depth, self.align, self.quantize, unregistered)


def score_pair(out: np.ndarray, ref: np.ndarray, scoring: Scoring) -> dict[str, float | None]:
    lp = None
    if scoring.lpips_model is not None:
        from defocuskit.eval.lpips import lpips_distance

        lp = lpips_distance(scoring.lpips_model, out, ref)
    return {
        "psnr": metrics.psnr(out, ref, max_db=PSNR_CAP_DB),
        "ssim": metrics.ssim(out, ref, scoring.ssim_variant),
        "mae": metrics.mae(out, ref),
        "lpips": lp,
    }


ALIGN_MODES = {
    "ecc": "one warp per sample, fitted once from the blurred input against the sharp reference and applied alike "
           "to the input and to every method's output before scoring (defocuskit.data.sample_warp: of the identity, "
           "ECC's tripod-bracket fit and its whole-frame affine fit, the one that correlates best on the detail both "
           "shots hold; bilinear, reflected borders); the identity where no fit correlates better or none is found",
    "flow": "JDRL's protocol on misaligned test pairs (Li et al.; liyucs/JDRL test_model.py): the sharp reference "
            "warped onto each output, and onto the blurred input, by dense optical flow (defocuskit.imaging.flow, OpenCV "
            "DIS on luminance, bilinear; where the flow leaves the frame the reference is kept as is) before scoring",
}


def describe_band(sigma: float | None) -> dict[str, Any]:
    """The report's protocol entries for `Scoring.detail_band`: what was scored, and sigma in px (None: all bands)."""
    text = "none: every band scored" if sigma is None else metrics.DETAIL_BAND_DESCRIPTION.format(sigma=sigma)
    return {"detail_band": text, "detail_band_px": sigma}


def sample_warp(inp: np.ndarray, ref: np.ndarray, depth: int, align: str | bool | None, quantize: bool = True,
                unregistered: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The sample's one warp for align "ecc" (`data.sample_warp.fit_sample_warp` of the input as scored, rounded
    where `quantize`, against the reference), given to `prepare_pair` for the input and every output; where no fit
    is found `unregistered` gets the reason. None for the other alignments (flow warps the reference per output)."""
    if not (align is True or align == "ecc"):
        return None
    from defocuskit.data.sample_warp import fit_sample_warp

    record = fit_sample_warp(_as_scored(inp, ref, depth, quantize), ref)
    if not record["fit_found"] and unregistered is not None:
        unregistered(record["identity"])
    return record


def prepare_pair(out: np.ndarray, ref: np.ndarray, depth: int, align: str | bool | None,
                 quantize: bool = True, detail_band: float | None = None,
                 unregistered: Callable[[str], None] | None = None,
                 warp: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(output, reference) as scored: the output clipped to [0, 1] and, where `quantize`, rounded to the reference's
    bit depth (as written); with align "ecc" the output moved onto the reference by the sample's `warp` (`sample_warp`;
    where None, fitted from `out` itself, the input), with "flow" the reference warped onto the output; with
    `detail_band` (px) the output's low-pass then replaced by the reference's."""
    unit = _as_scored(out, ref, depth, quantize)
    if align is True or align == "ecc":
        from defocuskit.data.sample_warp import apply_warp

        warp = sample_warp(unit, ref, depth, align, False, unregistered) if warp is None else warp
        unit = apply_warp(unit, warp["matrix"])
    elif align == "flow":
        ref = flow_aligned_reference(unit, ref)
    return (unit, ref) if detail_band is None else (metrics.detail_band(unit, ref, detail_band), ref)


def _as_scored(out: np.ndarray, ref: np.ndarray, depth: int, quantize: bool) -> np.ndarray:
    """`out` checked against `ref` (its size, finite values), clipped to [0, 1], rounded to `depth` bits where
    `quantize`, float64."""
    if out.shape[:2] != ref.shape[:2]:
        raise ValueError(f"output is {out.shape[1]}x{out.shape[0]}, reference {ref.shape[1]}x{ref.shape[0]}")
    if not np.isfinite(out).all():
        raise ValueError("output has non-finite values (NaN or inf)")
    clipped = np.clip(out, 0.0, 1.0)
    return metrics.to_unit(from_float(clipped, depth)) if quantize else clipped.astype(np.float64)


def flow_aligned_reference(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`ref` (H, W, C) warped onto `out`'s grid by dense optical flow; pixels whose flow leaves the frame keep `ref`."""
    import torch

    from defocuskit.imaging.flow import in_frame_mask, warp_onto

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32).transpose(2, 0, 1))[None]

    warped, flow = warp_onto(tensor(out), tensor(ref))
    inside = in_frame_mask(flow)
    moved = (warped * inside)[0].numpy().transpose(1, 2, 0).astype(np.float64)
    keep = 1.0 - inside[0, 0].numpy()[..., None].astype(np.float64)
    return moved + keep * ref
