"""Classical Wiener deconvolution with disc (defocus) PSFs: the `wiener` baseline.

The functions work on the image as given: pass linear light for a physically correct inverse of
a defocus blur rendered in linear light, or sRGB when that is what the evaluation compares.

The regulariser (`prior`): "flat", the textbook constant noise-to-signal ratio, X = conj(H) Y / (|H|^2 + nsr),
which also scales every frequency the blur keeps (the mean included) by 1 / (1 + nsr); or "gradient", a
noise-to-signal ratio that grows as the natural-image spectrum falls (1/f^2: nsr |D|^2, D the discrete gradient),
X = conj(H) Y / (|H|^2 + nsr |D|^2), which keeps the mean and the low frequencies exactly.
"""

from __future__ import annotations

import numpy as np

from defocuskit.imaging.optics import disc_psf


def _as_channels(image: np.ndarray) -> tuple[np.ndarray, bool]:
    if image.ndim == 2:
        return image[:, :, None], True
    if image.ndim == 3:
        return image, False
    raise ValueError(f"wiener: image must be (H, W) or (H, W, C), got shape {image.shape}")


def _spectrum(image: np.ndarray) -> np.ndarray:
    """FFT of the even-symmetric extension (2H x 2W): periodic and continuous, so no wrap-around seams."""
    h, w = image.shape[:2]
    ext = np.pad(image, ((0, h), (0, w), (0, 0)), mode="symmetric")
    return np.fft.rfft2(ext, axes=(0, 1))


def _otf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Optical transfer function of a centred odd-sized PSF on a grid of `shape`."""
    kh, kw = psf.shape
    if kh > shape[0] or kw > shape[1]:
        raise ValueError(f"wiener: PSF {psf.shape} is larger than the padded image {shape}")
    grid = np.zeros(shape, np.float64)
    grid[:kh, :kw] = psf
    grid = np.roll(grid, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return np.fft.rfft2(grid)


PRIORS = ("flat", "gradient")


def _gradient_power(shape: tuple[int, int]) -> np.ndarray:
    """|D(u, v)|^2 of the discrete forward-difference gradient on an rfft2 grid of `shape` (0 at DC, 8 at Nyquist)."""
    u = np.fft.fftfreq(shape[0])[:, None]
    v = np.fft.rfftfreq(shape[1])[None, :]
    return 4.0 * np.sin(np.pi * u) ** 2 + 4.0 * np.sin(np.pi * v) ** 2


def _apply(spectrum: np.ndarray, psf: np.ndarray, h: int, w: int, nsr: float, prior: str = "flat") -> np.ndarray:
    otf = _otf(psf, (2 * h, 2 * w))
    reg = nsr * _gradient_power((2 * h, 2 * w)) if prior == "gradient" else nsr
    # Wiener filter: X = conj(H) Y / (|H|^2 + NSR), NSR constant (flat) or nsr |D|^2 (gradient: a 1/f^2 spectrum)
    filt = np.conj(otf) / (np.abs(otf) ** 2 + reg)
    out = np.fft.irfft2(spectrum * filt[:, :, None], s=(2 * h, 2 * w), axes=(0, 1))
    return out[:h, :w]


def _check(blurred: np.ndarray, nsr: float, prior: str = "flat") -> None:
    if not np.issubdtype(blurred.dtype, np.floating):
        raise ValueError(f"wiener: expects a float image in [0, 1], got {blurred.dtype}")
    if not nsr > 0:
        raise ValueError(f"wiener: nsr must be positive, got {nsr}")
    if prior not in PRIORS:
        raise ValueError(f"wiener: prior must be one of {', '.join(PRIORS)}, got {prior!r}")


def _equalised(image: np.ndarray, nearest: np.ndarray, levels: np.ndarray, k: int) -> np.ndarray:
    """The image with regions sharper than level k blurred up to it (disc variances add: d_k^2 = d_j^2 + e^2).

    Deconvolving an under-blurred region with a larger PSF amplifies noise and rings across the whole
    image; blurring it up first keeps every level's deconvolution stable.
    """
    out = image.copy()
    for j in range(k):
        mask = nearest == j
        if not mask.any():
            continue
        extra = float(np.sqrt(max(levels[k] ** 2 - levels[j] ** 2, 0.0)))
        if extra <= 1.0:
            continue
        psf = disc_psf(extra)
        pad = psf.shape[0] // 2
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
        blurred = np.stack([_correlate(padded[:, :, c], psf) for c in range(image.shape[2])], axis=2)
        out[mask] = blurred[mask]
    return out


def _correlate(padded: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """'valid' 2-D filtering of a padded channel by a symmetric PSF, via FFT."""
    shape = padded.shape
    spectrum = np.fft.rfft2(padded) * np.fft.rfft2(psf, s=shape)
    full = np.fft.irfft2(spectrum, s=shape)
    kh, kw = psf.shape
    return full[kh - 1:, kw - 1:]


def wiener_deconvolve(blurred: np.ndarray, psf: np.ndarray, nsr: float = 1e-2, prior: str = "flat") -> np.ndarray:
    """Deconvolve every channel by `psf` (Wiener filter, noise-to-signal ratio `nsr`, regulariser `prior`); float
    [0, 1], same size."""
    _check(blurred, nsr, prior)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise ValueError(f"wiener: PSF must be 2-D with odd sides, got shape {psf.shape}")
    psf = np.asarray(psf, np.float64) / float(np.sum(psf))
    image, squeeze = _as_channels(np.asarray(blurred, np.float64))
    h, w = image.shape[:2]
    out = np.clip(_apply(_spectrum(image), psf, h, w, nsr, prior), 0.0, 1.0).astype(np.float32)
    return out[:, :, 0] if squeeze else out


def wiener_deblur(blurred: np.ndarray, coc_px: float | np.ndarray, nsr: float = 1e-2, n_levels: int = 8,
                  prior: str = "flat") -> np.ndarray:
    """Wiener deblurring with disc PSFs of the given CoC diameter (pixels): one value, or a per-pixel map.

    With a map, the image is deconvolved at `n_levels` CoC values spanning the map (before each,
    regions sharper than that level are blurred up to it) and every pixel takes the linear
    interpolation of the two results whose CoC brackets its own.
    """
    _check(blurred, nsr, prior)
    coc = np.asarray(coc_px, np.float64)
    if coc.ndim == 0:
        if not np.isfinite(coc) or coc < 0:
            raise ValueError(f"wiener_deblur: CoC must be finite and >= 0, got {coc_px}")
        return wiener_deconvolve(blurred, disc_psf(float(coc)), nsr, prior)
    if coc.shape != blurred.shape[:2]:
        raise ValueError(f"wiener_deblur: CoC map {coc.shape} does not match image {blurred.shape[:2]}")
    if not np.all(np.isfinite(coc)) or np.any(coc < 0):
        raise ValueError("wiener_deblur: CoC map must be finite and >= 0")
    if n_levels < 2:
        raise ValueError(f"wiener_deblur: n_levels must be >= 2, got {n_levels}")
    lo, hi = float(coc.min()), float(coc.max())
    if hi - lo < 1e-3:
        return wiener_deconvolve(blurred, disc_psf(0.5 * (lo + hi)), nsr, prior)
    image, squeeze = _as_channels(np.asarray(blurred, np.float64))
    h, w = image.shape[:2]
    levels = np.linspace(lo, hi, n_levels)
    pos = (coc - lo) / (hi - lo) * (n_levels - 1)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_levels - 2)
    frac = pos - i0
    nearest = np.rint(pos).astype(np.int64)
    out = np.zeros_like(image)
    for k, level in enumerate(levels):
        weight = np.where(i0 == k, 1.0 - frac, 0.0) + np.where(i0 + 1 == k, frac, 0.0)
        if not weight.any():
            continue
        out += weight[:, :, None] * _apply(_spectrum(_equalised(image, nearest, levels, k)),
                                           disc_psf(float(level)).astype(np.float64), h, w, nsr, prior)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return out[:, :, 0] if squeeze else out
