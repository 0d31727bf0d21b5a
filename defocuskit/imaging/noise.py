"""Sensor noise seen from one image: its Poisson-Gaussian level function estimated from the image alone, noise of that
level synthesised, and a change to the image kept only where it exceeds what that noise alone would cause.

A data step without a prior (the prox baseline) amplifies every frequency the blur attenuates, noise included; where a
region holds no detail above the noise (a dark, out-of-focus sky) its whole change is amplified noise. The shrinkage
here measures that: it runs the same step on the image plus synthetic noise of the estimated level, and keeps the
step's change in proportion to how far its local energy exceeds the noise-driven part (a local Wiener gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SMOOTH_SHARE = 0.2  # share of pixels (the least gradient) the level is read from: least structure in the residual
LEVEL_BINS = 16  # intensity bins of the level function
SHRINK_SIGMA_PX = 3.0  # Gaussian window (std, px) of the local energies the shrinkage compares
NOISE_SEED = 0  # the synthetic noise is seeded: a baseline scores the same on every run and process

# Immerkaer (1996), "Fast noise variance estimation": the difference of two Laplacians, zero on planes; white noise of
# std s gives std 6 s through it.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32) / 6.0


@dataclass(frozen=True)
class NoiseLevel:
    """Poisson-Gaussian noise in linear light: variance a x + b at intensity x (Foi et al. 2008, eq. 4)."""

    a: float
    b: float

    def std(self, linear: np.ndarray) -> np.ndarray:
        """The noise std at each pixel's intensity."""
        return np.sqrt(np.maximum(self.a * np.asarray(linear, np.float32) + self.b, 0.0))


def estimate_noise_level(linear: np.ndarray, smooth_share: float = SMOOTH_SHARE,
                         bins: int = LEVEL_BINS) -> NoiseLevel:
    """The noise level function of a float linear-light image (H, W) or (H, W, C), from the image alone: the
    Immerkaer residual's robust std (MAD) over the `smooth_share` of pixels with the least gradient, per intensity bin,
    fitted by least squares to a x + b (both >= 0)."""
    import cv2

    image = np.asarray(linear, np.float32)
    channels = image[..., None] if image.ndim == 2 else image
    if channels.ndim != 3 or min(channels.shape[:2]) < 8:
        raise ValueError(f"estimate_noise_level: need an image of at least 8x8 pixels, got shape {image.shape}")
    residuals, means = [], []
    for c in range(channels.shape[2]):
        ch = np.ascontiguousarray(channels[..., c])
        residual = cv2.filter2D(ch, -1, _IMMERKAER, borderType=cv2.BORDER_REFLECT)
        smooth = cv2.GaussianBlur(ch, (0, 0), 1.5)
        gradient = (np.abs(cv2.Sobel(smooth, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(smooth, cv2.CV_32F, 0, 1)))
        flat = gradient <= np.quantile(gradient, smooth_share)
        residuals.append(residual[flat])
        means.append(cv2.blur(ch, (7, 7), borderType=cv2.BORDER_REFLECT)[flat])
    residual, mean = np.concatenate(residuals), np.concatenate(means)
    edges = np.unique(np.quantile(mean, np.linspace(0.0, 1.0, bins + 1)))
    level_x, level_var = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (mean >= lo) & (mean <= hi)
        if inside.sum() < 64:
            continue
        r = residual[inside]
        mad = 1.4826 * np.median(np.abs(r - np.median(r)))  # the std of a Gaussian, robust to the structure left
        level_x.append(float(mean[inside].mean()))
        level_var.append(float(mad) ** 2)
    if not level_x:
        return NoiseLevel(0.0, 0.0)
    if len(level_x) == 1:
        return NoiseLevel(0.0, level_var[0])
    design = np.stack([np.asarray(level_x), np.ones(len(level_x))], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(level_var), rcond=None)
    if a < 0:  # no signal dependence to be seen: a flat level
        a, b = 0.0, float(np.mean(level_var))
    if b < 0:
        a, b = float(np.sum(design[:, 0] * level_var) / np.sum(design[:, 0] ** 2)), 0.0
    return NoiseLevel(float(a), float(b))


def synthetic_noise(linear: np.ndarray, level: NoiseLevel, seed: int = NOISE_SEED) -> np.ndarray:
    """White Gaussian noise with the std `level` gives at each pixel of `linear` (its shape, float32)."""
    rng = np.random.default_rng(seed)
    return (level.std(linear) * rng.standard_normal(np.shape(linear))).astype(np.float32)


def signal_weight(change: np.ndarray, noise_change: np.ndarray, sigma_px: float = SHRINK_SIGMA_PX) -> np.ndarray:
    """max(0, 1 - E_noise / E_change) per pixel: the local Wiener gain of a change (H, W, C) whose noise-driven part
    is modelled by `noise_change`; local energies summed over channels in a Gaussian window of std `sigma_px`.
    Returns (H, W, 1) in [0, 1]."""
    import cv2

    def energy(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float32)
        total = (v * v).sum(axis=2) if v.ndim == 3 else v * v
        return cv2.GaussianBlur(np.ascontiguousarray(total), (0, 0), sigma_px)

    e_change, e_noise = energy(change), energy(noise_change)
    weight = 1.0 - e_noise / np.maximum(e_change, 1e-12)
    return np.clip(weight, 0.0, 1.0)[..., None]


def shrink_to_signal(blur: np.ndarray, step: Callable[[np.ndarray], np.ndarray], linear: np.ndarray,
                     level: NoiseLevel | None = None, sigma_px: float = SHRINK_SIGMA_PX,
                     seed: int = NOISE_SEED) -> np.ndarray:
    """`step` (an image (H, W, C) in the space of `blur` -> its restoration, same space) applied to `blur`, its change
    weighted by `signal_weight` against the change the same noise added once more causes; `linear` is `blur` in linear
    light (where the noise is Poisson-Gaussian), `level` its noise level (estimated from `linear` if None; an image
    under 8 x 8 pixels, too small to read it from, is returned as `step` makes it)."""
    from defocuskit.io.images import linear_to_srgb

    out = step(blur)
    if level is None and min(np.shape(linear)[:2]) < 8:
        return out
    level = estimate_noise_level(linear) if level is None else level
    if level.a == 0.0 and level.b == 0.0:
        return out
    noisy_blur = np.clip(linear_to_srgb(np.clip(linear + synthetic_noise(linear, level, seed), 0.0, None)), 0.0, 1.0)
    noise_change = (step(noisy_blur) - out) - (noisy_blur - blur)  # what the noise alone adds to the change
    return blur + signal_weight(out - blur, noise_change, sigma_px) * (out - blur)
