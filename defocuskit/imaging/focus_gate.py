"""The focus gate: a restoration kept where the defocus map reads blur, the shot kept where it reads focus.

A model trained on renders also changes what is already sharp: on nearly sharp real shots (f/8) it sharpens and
smooths where nothing needs to change, and loses to its input (docs/benchmarks.md, "Why f/8 loses"). The gate
weighs the model's change per pixel by how much blur the CoC map reads there,

    gated = blur + w * (restored - blur),   w = min(1, |coc| / full_px),

so pixels the map reads as in focus (CoC 0) are returned as shot and pixels at `full_px` or more get the model's
output. The map is the `--coc` source's (a defocus-map model, the training-free edge estimate, ...): pure numpy,
no model here.
"""

from __future__ import annotations

import numpy as np


def check_full_px(full_px: float) -> float:
    """`full_px` as a float; a ValueError unless it is a positive, finite number of pixels."""
    if not full_px > 0 or not np.isfinite(full_px):
        raise ValueError(f"focus gate: full_px must be a positive number of pixels, got {full_px}")
    return float(full_px)


def gate_weight(coc: np.ndarray, full_px: float) -> np.ndarray:
    """The (H, W) float32 weight min(1, |coc| / full_px) of the model's change; `coc` in pixels, signed or not."""
    check_full_px(full_px)
    coc = np.asarray(coc, np.float32)
    if coc.ndim != 2:
        raise ValueError(f"focus gate: the CoC map must be (H, W), got shape {coc.shape}")
    if not np.isfinite(coc).all():
        raise ValueError("focus gate: the CoC map has non-finite values")
    return np.minimum(np.abs(coc) / np.float32(full_px), np.float32(1.0))


def focus_gate(blur: np.ndarray, restored: np.ndarray, coc: np.ndarray, full_px: float) -> np.ndarray:
    """`restored` (H, W, C) where the CoC map reads at least `full_px` of blur, `blur` where it reads 0, and a
    linear mix between; float32, the restored image's shape."""
    if blur.shape != restored.shape:
        raise ValueError(f"focus gate: input {blur.shape} and restored {restored.shape} differ in shape")
    if coc.shape != blur.shape[:2]:
        raise ValueError(f"focus gate: CoC map {coc.shape[1]}x{coc.shape[0]} does not match the image "
                         f"{blur.shape[1]}x{blur.shape[0]}")
    w = gate_weight(coc, full_px)[:, :, None]
    blur = np.asarray(blur, np.float32)
    return (blur + w * (np.asarray(restored, np.float32) - blur)).astype(np.float32)
