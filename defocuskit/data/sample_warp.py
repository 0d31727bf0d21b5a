"""One warp per sample for scoring a misaligned pair (`eval --align`): fitted once, from the blurred input against its
reference, and applied alike to the input and to every method's output (the methods do not move pixels, so the
geometry between a sample's input and its reference is one warp, and a method's gain is not the difference of two).

Candidates: the identity, the tripod-bracket fit (`register.align` motion "bracket": a shift and a rotation fitted on
the detail both shots hold, the whole-frame affine where that fails or leaves a bracket) and the whole-frame affine
fit. A whole-frame fit of a wide-aperture shot is pulled by its bokeh (highlights become discs, occlusion edges move:
on the VABD fixtures at 256 px it found scales of 0.994-0.997 that a tripod does not make, growing with the aperture),
so the candidates are judged where the two shots can be compared without knowing the blur: their correlation (the
one ECC maximises, in float64, on the images not pre-blurred: the finest detail) over the detail both hold alike
(`highlights.shared_detail`, the subject in focus; clipped highlights' discs left out), on the pixels every candidate
maps inside the frame. The best is kept, the identity where none correlates better (a pair already on the
reference's grid is left as it is: a sub-pixel warp would only interpolate it). docs/benchmarks.md, "One warp per
sample, fitted from the input", has the measurements."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from defocuskit.data.highlights import shared_detail, unexplained_highlights
from defocuskit.data.reg_quality import _gray, _resize
from defocuskit.data.register import RegistrationError, _conjugate, _scale_matrix, _warp, align

IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
CANDIDATES = ("bracket", "affine")  # align's motions tried, after the identity


def apply_warp(image: np.ndarray, matrix: Any) -> np.ndarray:
    """`image` (H, W[, C], [0, 1]) resampled onto the reference's grid by a full-resolution `matrix` (reference ->
    image coordinates, as `register.align` records it): bilinear, reflected borders, clipped to [0, 1], float64; the
    image itself where `matrix` is the identity."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (2, 3) and np.array_equal(m, IDENTITY):
        return np.asarray(image, dtype=np.float64)
    h, w = image.shape[:2]
    moved = _warp(np.ascontiguousarray(image, dtype=np.float64), m, (w, h))
    return np.clip(moved, 0.0, 1.0)


def fit_sample_warp(moving: np.ndarray, reference: np.ndarray, max_side: int = 1024,
                    blur_sigma: float = 2.0) -> dict[str, Any]:
    """The warp of `moving` (a sample's blurred input, the reference's shape) onto `reference` that scoring applies
    to the input and to every output. Returns {"method": "ecc", "motion": "identity" | "bracket" | "affine" (the
    candidate kept), "matrix" (2x3, full resolution, reference -> moving), "detail_corr" ({candidate: correlation
    on the shared detail, rounded to 6 digits}), "fit_found" (False where no candidate but the identity was
    fitted), and "identity" (why the identity was kept) where it was}."""
    if moving.shape[:2] != reference.shape[:2]:
        raise ValueError(f"input is {moving.shape[1]}x{moving.shape[0]}, reference "
                         f"{reference.shape[1]}x{reference.shape[0]}")
    fits: dict[str, list] = {"identity": IDENTITY}
    failed: list[str] = []
    for motion in CANDIDATES:
        try:
            _, record = align(moving, reference, method="ecc", motion=motion, max_side=max_side,
                              blur_sigma=blur_sigma)
        except RegistrationError as exc:
            failed.append(f"{motion}: {exc.reason}")
            continue
        fits.setdefault(record["motion"], record["matrix"])  # "bracket" falls back to "affine" where it fails
    corr = _detail_correlations(moving, reference, fits, max_side)
    best = max(corr, key=lambda k: (corr[k], k == "identity"))  # the identity on ties
    out: dict[str, Any] = {"method": "ecc", "motion": best, "matrix": [list(map(float, r)) for r in fits[best][:2]],
                           "detail_corr": {k: round(v, 6) for k, v in corr.items()}, "fit_found": len(fits) > 1}
    if best == "identity":
        out["identity"] = ("no fit found (" + "; ".join(failed) + ")" if len(fits) == 1 else
                           "no fit correlates better on the shared detail than the identity")
    return out


def _detail_correlations(moving: np.ndarray, reference: np.ndarray, fits: dict[str, list],
                         max_side: int) -> dict[str, float]:
    """Each candidate's correlation with the reference at `align`'s working size, not pre-blurred, over the shared
    detail (clipped highlights left out) that every candidate maps inside the frame; -1 where no pixel is left."""
    h, w = reference.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    ref_c, mov_c = (_resize(np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0), scale) for x in (reference, moving))
    ref_w, mov_w = _gray(ref_c), _gray(mov_c)
    mask = shared_detail(ref_w, mov_w) & ~unexplained_highlights(ref_c, mov_c)
    ref_d, mov_d = ref_w.astype(np.float64), mov_w.astype(np.float64)
    size = (ref_d.shape[1], ref_d.shape[0])
    warped = {}
    for name, matrix in fits.items():
        m = _conjugate(np.asarray(matrix, dtype=np.float64), _scale_matrix(scale))
        warped[name] = _warp(mov_d, m, size)
        mask &= _warp(np.ones_like(mov_d), m, size, border=cv2.BORDER_CONSTANT) > 0.999
    if not mask.any():
        return {name: -1.0 for name in fits}
    return {name: _correlation(ref_d, x, mask) for name, x in warped.items()}


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """The correlation ECC maximises (zero-mean, normalised) of `a` and `b` on `mask`, in float64 (OpenCV's float32
    sum put the identity of two identical images below a fit 1e-5 px from it); -1 where a side is flat."""
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else -1.0
