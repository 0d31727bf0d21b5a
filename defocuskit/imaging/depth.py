"""Depth maps as datasets ship them, and the circle of confusion they imply up to one scale.

Depth images come as metric depth, as relative depth (larger = farther, affine-free) or as inverse
depth / disparity (larger = nearer, what monocular networks such as MiDaS predict), stored as grey
8/16-bit PNGs or false-coloured with a matplotlib colormap (VABD and EBB ship theirs coloured with
`Spectral`, near = red = 0). `decode_depth` turns any of them into one float value per pixel;
`signed_relative_coc` turns that value and the focus into the thin-lens CoC up to one scale factor:
c = A f / (s - f) * (1 - s / d) is proportional to 1/s - 1/d (thin lens), i.e. to the difference
of inverse depths, negative in front of the focal plane and positive behind it.
"""

from __future__ import annotations

import functools

import numpy as np

DEPTH_KINDS = ("metric", "relative", "inverse")
COLORMAPS = ("Spectral", "magma", "inferno", "plasma", "viridis", "turbo", "jet")
_LUT_TOLERANCE = 4.0  # max RGB distance (0-255) of a pixel from its colormap entry to call the map that colormap
_LUT_BLOCK = 1 << 13  # colours compared with a colormap at once (8192 x 256 x 3 float32: 24 MiB)


class DepthError(ValueError):
    """A depth image that cannot be read as asked; the message says why."""


@functools.lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) float32 RGB in 0-255 of a matplotlib colormap, entry i for the value i / 255."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise DepthError(f"unknown colormap {name!r} (e.g. {', '.join(COLORMAPS)})") from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.float32)


def _invert_lut(rgb: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-pixel value in [0, 1] of the nearest LUT entry, and the largest distance to it."""
    q = np.clip(np.rint(rgb.reshape(-1, 3)), 0, 255).astype(np.int32)
    codes, inverse = np.unique((q[:, 0] << 16) | (q[:, 1] << 8) | q[:, 2], return_inverse=True)
    colours = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1).astype(np.float32)
    nearest, worst = np.empty(len(colours), np.int64), 0.0
    for i in range(0, len(colours), _LUT_BLOCK):  # a photo holds millions of colours: distances a block at a time
        dist = ((colours[i:i + _LUT_BLOCK, None, :] - lut[None]) ** 2).sum(-1)
        nearest[i:i + _LUT_BLOCK] = best = dist.argmin(1)
        worst = max(worst, float(dist[np.arange(len(best)), best].max()))
    return (nearest[inverse.ravel()] / 255.0).reshape(rgb.shape[:2]).astype(np.float32), float(np.sqrt(worst))


def detect_colormap(rgb: np.ndarray) -> str | None:
    """The colormap of COLORMAPS that explains a false-colour depth image (RGB in 0-255), or None. A map and its
    reverse ("_r") hold the same colours: the direction is the plain map's (value 0 at its first colour)."""
    best, best_err = None, _LUT_TOLERANCE
    sample = rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)]
    for name in COLORMAPS:
        _, err = _invert_lut(sample, colormap_lut(name))
        if err < best_err:
            best, best_err = name, err
    return best


def decode_depth(image: np.ndarray, colormap: str | None = "auto", name: str = "depth") -> np.ndarray:
    """A depth image (H, W) or (H, W, 3) RGB -> float32 (H, W) values.

    Grey 8/16-bit images give value / (2^bits - 1); grey float images (a float TIFF's or an array's values, any
    range) are kept; colour images (8/16-bit, or float in 0-1) are inverted through `colormap` ("auto": detected
    among COLORMAPS) to [0, 1]. `name` is used in errors.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[2] == 3 and (np.ptp(a.astype(np.float32), axis=2) == 0).all():
        a = a[..., 0]  # grey stored as RGB
    if a.ndim == 2:
        if a.dtype == np.uint8:
            return a.astype(np.float32) / 255.0
        if a.dtype == np.uint16:
            return a.astype(np.float32) / 65535.0
        return a.astype(np.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise DepthError(f"{name}: expected a grey or RGB depth image, got shape {a.shape}")
    if a.dtype.kind == "f":  # a float false-colour image: its colours in 0-1
        lo, hi = float(a.min()), float(a.max())
        if not (-1e-3 <= lo and hi <= 1.0 + 1e-3):
            raise DepthError(f"{name}: a float colour depth image with samples from {lo:.6g} to {hi:.6g}: a "
                             "false-colour map's colours are 0 to 1 (a depth of values is one grey channel)")
        rgb = np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0
    else:
        rgb = a.astype(np.float32) * (255.0 / 65535.0 if a.dtype == np.uint16 else 1.0)
    cmap = detect_colormap(rgb) if colormap == "auto" else colormap  # in 0-255 (a 16-bit map's were clipped)
    if cmap is None:
        raise DepthError(f"{name}: a colour depth image in no known colormap ({', '.join(COLORMAPS)}); "
                         "name its colormap (ingest --render-colormap NAME)")
    lut = colormap_lut(cmap)
    err = _invert_lut(rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)], lut)[1]
    if err <= 3 * _LUT_TOLERANCE:  # judged on a sample first: an image in no colormap is refused before its pixels
        values, err = _invert_lut(rgb, lut)
    if err > 3 * _LUT_TOLERANCE:
        raise DepthError(f"{name}: colours up to {err:.0f}/255 away from colormap {cmap!r}")
    return values


def inverse_depth(value: np.ndarray, kind: str) -> np.ndarray:
    """A quantity that grows as 1/depth (up to scale and, for relative depth, approximately)."""
    if kind not in DEPTH_KINDS:
        raise DepthError(f"unknown depth kind {kind!r} (known: {', '.join(DEPTH_KINDS)})")
    v = np.asarray(value, np.float64)
    if kind == "metric":
        if (v <= 0).any():
            raise DepthError("metric depth must be positive everywhere")
        return 1.0 / v
    if kind == "inverse":
        return v
    return -v  # relative depth: affine in depth; its negative orders points as inverse depth does


def focus_value(value: np.ndarray, focal_mask: np.ndarray) -> float:
    """The depth value of the focal plane: the median over the mask (True / > 127 = in focus)."""
    mask = np.asarray(focal_mask)
    mask = mask > 127 if mask.dtype == np.uint8 else mask.astype(bool)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != value.shape or not mask.any():
        raise DepthError(f"focal mask {mask.shape} is empty or does not match the depth map {value.shape}")
    return float(np.median(value[mask]))


def signed_relative_coc(value: np.ndarray, kind: str, focus: float) -> np.ndarray:
    """The signed CoC up to one positive scale: inverse depth of the focus minus that of each pixel
    (thin lens: c proportional to 1/s - 1/d), negative in front of the focal plane, positive behind."""
    g = inverse_depth(value, kind)
    g_focus = float(inverse_depth(np.array([focus]), kind)[0])
    return (g_focus - g).astype(np.float32)
