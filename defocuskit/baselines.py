"""Reference points for the evaluator: the blurred input itself, and Wiener deconvolution with a disc PSF."""

from __future__ import annotations

from typing import Any

import numpy as np

from defocuskit import optics

BASELINES = ("input", "wiener")

# Assumptions where the shard metadata is silent (stated in every report that uses the Wiener baseline).
DEFAULT_FOCAL_LENGTH_MM = 50.0
DEFAULT_FOCUS_DISTANCE_M = 2.0
DEFAULT_SENSOR_WIDTH_MM = 36.0  # full-frame equivalent: pixel pitch = 36 mm / image width
DEFAULT_NSR = 0.01

WIENER_ASSUMPTIONS = (
    "Wiener deconvolution with a uniform disc PSF; diameter from the shard's coc.png where present, else the "
    "thin-lens CoC of a background at infinity, optics.coc_at_infinity_px(f_number, focal_length_mm, "
    f"focus_distance_m, pitch), with focal length {DEFAULT_FOCAL_LENGTH_MM:g} mm and focus distance "
    f"{DEFAULT_FOCUS_DISTANCE_M:g} m where the metadata has none, and pitch = {DEFAULT_SENSOR_WIDTH_MM:g} mm "
    f"(full-frame width) / image width; noise-to-signal ratio {DEFAULT_NSR:g}"
)


def input_baseline(blur: np.ndarray) -> np.ndarray:
    """The blurred input, unchanged: the score every method must beat."""
    return blur


def wiener_coc_px(meta: dict[str, Any], width: int, coc: np.ndarray | None = None) -> float | np.ndarray:
    """The disc diameter (pixels) for the Wiener baseline: the coc map if given, else from the f-number."""
    if coc is not None:
        return np.asarray(coc, np.float32)
    f_number = meta.get("f_number")
    if f_number is None:
        raise ValueError(f"sample '{meta.get('scene') or meta.get('key')}': the Wiener baseline needs coc.png or an f_number")
    focal = meta.get("focal_length_mm") or DEFAULT_FOCAL_LENGTH_MM
    distance = meta.get("focus_distance_m") or DEFAULT_FOCUS_DISTANCE_M
    if distance * 1000.0 <= focal:
        distance = DEFAULT_FOCUS_DISTANCE_M
    pitch = optics.pixel_pitch_um(DEFAULT_SENSOR_WIDTH_MM, width)
    return float(optics.coc_at_infinity_px(float(f_number), float(focal), float(distance), pitch))


def wiener_baseline(
    blur: np.ndarray, meta: dict[str, Any], coc: np.ndarray | None = None, nsr: float = DEFAULT_NSR
) -> np.ndarray:
    """Wiener-deconvolve a float (H, W, 3) image in [0, 1] with the disc PSF of `wiener_coc_px`; float in [0, 1]."""
    from defocuskit.deconv import wiener_deblur

    coc_px = wiener_coc_px(meta, blur.shape[1], coc)
    return np.clip(wiener_deblur(blur.astype(np.float32), coc_px, nsr), 0.0, 1.0)
