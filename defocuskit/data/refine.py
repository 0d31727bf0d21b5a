"""A smooth residual warp after the rigid registration of a real pair (`ingest --refine-warp`).

A tripod bracket is registered by one affine (or homography) fit of the whole frame (`data.register.align`). What is
left is local and sub-pixel to a few pixels: the wide-open shot's bokeh pulls the fit off the subject in focus, and
pairs shot off a tripod (EBB) or with a lens that breathes leave a residual that no single affine holds. That residual
costs a real pair its detail: a target displaced by a third of a pixel teaches a deblurring model to leave edges soft,
and scores a sharp output as wrong (docs/benchmarks.md, "A smooth residual warp for real pairs").

The refinement is judged only where both shots carry the same information, the detail they share: dense flow (OpenCV
DIS) between the two images, each pre-blurred as `align` pre-blurs them and its local mean and contrast taken out
(their exposure and tone curve differ), is averaged with weights min(E_ref, E_shot) where the shot is about as sharp
as the reference (`highlights.shared_detail`; E: local gradient energy; bokeh and the discs of clipped highlights,
`highlights.unexplained_highlights`, weigh nothing) over a
Gaussian of `smooth` x the long side, a normalised convolution that falls back to the rigid fit (zero) where no detail
is near; its length is bounded by `max_shift` x the long side. The field is kept only if it raises the correlation of
the two images' shared detail; the shot is then resampled once, the rigid warp and the field composed.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from defocuskit.data.highlights import shared_detail, unexplained_highlights
from defocuskit.data.reg_quality import _gray, _resize

MAX_SHIFT = 0.01  # the field's length is bounded by this x the long side (15 px at 1536 px)
MAX_SIDE = 1024  # the flow is estimated at this long side at most (as align's fit)
PRE_BLUR = 2.0  # working px of Gaussian on both images first (as align's blur_sigma)
ENERGY_SIGMA = 3.0  # working px over which the gradient energy is averaged
SUPPORT = 0.1  # the field shrinks to the rigid fit where the local detail weight is below this x its frame mean
DETAIL_SIGMA = 4.0  # working px: the detail whose correlation judges the field (image minus this Gaussian)
NORM_SIGMA = 8.0  # working px: the local mean and contrast taken out of both images before the flow
NORM_FLOOR = 0.01  # added to the local standard deviation (flat regions stay flat, not amplified noise)
DIS_MIN_SIDE = 12  # OpenCV's DIS needs a side of at least this; smaller images keep the rigid fit


def _energy(gray: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    return cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), ENERGY_SIGMA)


def _normalised_u8(gray: np.ndarray) -> np.ndarray:
    """Local contrast normalisation (minus the local mean, over the local standard deviation, a Gaussian of NORM_SIGMA)
    to uint8 for DIS: the shots' exposure and tone curve differ, and flow assumes constant brightness."""
    detail = gray - cv2.GaussianBlur(gray, (0, 0), NORM_SIGMA)
    spread = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), NORM_SIGMA)) + NORM_FLOOR
    return np.clip(detail / spread * 40.0 + 128.0, 0, 255).astype(np.uint8)


def _detail_corr(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> float:
    """Weighted correlation of the two images' detail (each minus its Gaussian of DETAIL_SIGMA)."""
    da = a - cv2.GaussianBlur(a, (0, 0), DETAIL_SIGMA)
    db = b - cv2.GaussianBlur(b, (0, 0), DETAIL_SIGMA)
    w = weight / max(float(weight.sum()), 1e-12)
    num = float((w * da * db).sum())
    den = float(np.sqrt((w * da * da).sum() * (w * db * db).sum()))
    return num / den if den > 0 else 0.0


def _grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x (1, W) and y (H, 1) coordinates, float32, broadcasting to the image's grid."""
    return np.arange(shape[1], dtype=np.float32)[None, :], np.arange(shape[0], dtype=np.float32)[:, None]


def _remap(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def residual_field(reference: np.ndarray, registered: np.ndarray, smooth: float, max_shift: float = MAX_SHIFT,
                   ) -> tuple[np.ndarray, float, float]:
    """The smooth residual field (H, W, 2) at the inputs' size, px, with registered(x + f(x)) ~ reference(x), and
    the detail correlation of the pair before and after it (at the working size). Both images float RGB in [0, 1]
    (or grey), on the reference's grid."""
    if reference.shape != registered.shape:
        raise ValueError(f"refine: shapes differ: {reference.shape} vs {registered.shape}")
    if not (0 < smooth <= 0.5 and 0 < max_shift <= 0.1):
        raise ValueError(f"refine: smooth in (0, 0.5] and max_shift in (0, 0.1] of the long side, got {smooth}, "
                         f"{max_shift}")
    h, w = reference.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    ref_c, mov_c = (_resize(np.clip(np.asarray(x, np.float32), 0.0, 1.0), scale) for x in (reference, registered))
    ref_g, mov_g = (cv2.GaussianBlur(_gray(x), (0, 0), PRE_BLUR) for x in (ref_c, mov_c))
    if max(ref_g.shape) < DIS_MIN_SIDE:
        flow = np.zeros((*ref_g.shape, 2), np.float32)
    else:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(_normalised_u8(ref_g), _normalised_u8(mov_g), None)  # ref(x) ~ mov(x + flow)
    # the flow is trusted only on detail both shots hold: in a wide aperture's bokeh the blurred shapes' flow against
    # the sharp reference is biased (on renders with a known warp it moved the out-of-focus parts by 5-10 px)
    weight = np.minimum(_energy(ref_g), _energy(mov_g)) * shared_detail(_gray(ref_c), _gray(mov_c), min_share=0.0)
    if ref_c.ndim == 3:
        weight[unexplained_highlights(ref_c, mov_c)] = 0.0
    sigma = smooth * max(ref_g.shape)
    support = cv2.GaussianBlur(weight, (0, 0), sigma) + SUPPORT * max(float(weight.mean()), 1e-12)
    field = np.stack([cv2.GaussianBlur(flow[..., i] * weight, (0, 0), sigma) for i in range(2)], axis=2)
    field /= support[..., None]
    bound = max_shift * max(ref_g.shape)
    length = np.hypot(field[..., 0], field[..., 1])
    field *= np.minimum(1.0, bound / np.maximum(length, 1e-12))[..., None]
    gx, gy = _grid(ref_g.shape)
    moved = _remap(mov_g, gx + field[..., 0], gy + field[..., 1])
    before, after = _detail_corr(ref_g, mov_g, weight), _detail_corr(ref_g, moved, weight)
    full = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR) / scale
    return full.astype(np.float32), before, after


def refine(moving: np.ndarray, reference: np.ndarray, registered: np.ndarray, matrix: Any, smooth: float,
           max_shift: float = MAX_SHIFT) -> tuple[np.ndarray, dict[str, Any]]:
    """`moving` (the shot as read) resampled once by the rigid `matrix` (reference -> moving coordinates, as
    `align` records it) composed with the residual field, when the field raises the shared detail's correlation;
    else `registered` (align's output) as it is. Returns (image, record): record = {"refined_px": [median, 90th
    percentile] length of the field applied, px ([0, 0] where none was), "refine_corr": [before, after]}."""
    field, before, after = residual_field(reference, registered, smooth, max_shift)
    record: dict[str, Any] = {"refined_px": [0.0, 0.0], "refine_corr": [round(before, 6), round(after, 6)]}
    if not after > before:
        return registered, record
    gx, gy = _grid(reference.shape)
    px, py = gx + field[..., 0], gy + field[..., 1]
    m = np.asarray(matrix, np.float64)
    m = np.vstack([m, [0.0, 0.0, 1.0]]) if m.shape == (2, 3) else m
    den = m[2, 0] * px + m[2, 1] * py + m[2, 2]
    map_x = ((m[0, 0] * px + m[0, 1] * py + m[0, 2]) / den).astype(np.float32)
    map_y = ((m[1, 0] * px + m[1, 1] * py + m[1, 2]) / den).astype(np.float32)
    out = _remap(np.ascontiguousarray(moving, np.float32), map_x, map_y)
    length = np.hypot(field[..., 0], field[..., 1])
    record["refined_px"] = [round(float(np.median(length)), 3), round(float(np.percentile(length, 90)), 3)]
    return np.clip(out, 0.0, 1.0), record
