"""Where clipped highlights leave a defocused shot unexplained by its reference.

Defocus blur is a local weighted average of the scene's light (a PSF is non-negative and sums to one), so a pixel
of the blurred shot, in linear light and at the reference's exposure, cannot be brighter than the brightest
reference pixel within the blur's reach. The one exception is a clipped reference pixel: its true brightness is
unknown (a sun glint or a lamp can be a hundred times the clip level), and at a wide aperture it spreads into a
bright disc. Such discs carry no information both shots share: a registration fitted to them, or a quality score
that reads them as misplaced content, throws good wide-aperture shots away. `unexplained_highlights` marks them so
that registration and its score leave them out. `shared_detail` marks the other thing a wide aperture changes
least: the fine detail of the subject in focus, which both shots hold alike (data.register fits there when a fit of
the whole frame fails).
"""

from __future__ import annotations

import cv2
import numpy as np

from defocuskit.io.images import srgb_to_linear

CLIP = 0.96  # sRGB level from which a reference pixel counts as clipped (as render_photo.restore_highlights)
REACH = 0.04  # the widest blur radius looked at, as a share of the long side (a disc of ~120 px at 1536 px)
MARGIN = 1.15  # a shot pixel is unexplained above this factor of the reference's local maximum ...
FLOOR = 0.02  # ... plus this much linear light (noise, JPEG, tone-curve differences)
SIDE = 256  # judged at this long side (or the image's, if smaller)


def _block_max(x: np.ndarray, f: int) -> np.ndarray:
    """Maximum over f x f blocks (the image padded at the bottom and right edges by repetition)."""
    if f == 1:
        return x
    h, w = x.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    x = np.pad(x, ((0, hp - h), (0, wp - w)), mode="edge")
    return x.reshape(hp // f, f, wp // f, f).max(axis=(1, 3))


def _channels(img: np.ndarray) -> np.ndarray:
    img = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    return img if img.ndim == 3 else img[..., None]


def _exposure_ratio(ref: np.ndarray, mov: np.ndarray, away: np.ndarray) -> float:
    """Linear-light ratio reference / shot: the median ratio of local means (blur keeps them) over pixels well
    exposed in both, away from clipped highlights where enough are."""
    sigma = max(1.0, 0.01 * max(ref.shape))
    a, b = (cv2.GaussianBlur(x, (0, 0), sigma) for x in (ref, mov))
    ok = (a > 0.005) & (a < 0.8) & (b > 0.005) & (b < 0.8)
    if (ok & away).mean() >= 0.01:
        ok &= away
    if ok.mean() < 0.01:
        return 1.0
    ratio = float(np.median(a[ok] / b[ok]))
    return ratio if np.isfinite(ratio) and ratio > 0 else 1.0


def unexplained_highlights(reference: np.ndarray, moving: np.ndarray, reach: float = REACH) -> np.ndarray:
    """Boolean mask, at the inputs' shape, of the pixels of `moving` (the defocused shot, on or near the
    reference's grid) that are brighter than any unclipped pixel of `reference` within `reach` x the long side,
    near a clipped reference pixel: light spread from a clipped source, whose true brightness neither shot
    records. Inputs are sRGB in [0, 1], grayscale or RGB, of one shape."""
    if reference.shape[:2] != moving.shape[:2]:
        raise ValueError(f"unexplained_highlights needs equal shapes, got {reference.shape} and {moving.shape}")
    h, w = reference.shape[:2]
    f = max(1, int(np.ceil(max(h, w) / SIDE)))
    ref, mov = _channels(reference), _channels(moving)
    clipped = ref.max(axis=2) >= CLIP  # every channel of a clipped pixel is in doubt
    if not clipped.any() or ref.shape[2] != mov.shape[2]:
        return np.zeros((h, w), bool)
    ref_lin, mov_lin = srgb_to_linear(ref), srgb_to_linear(mov)
    shoulder = cv2.dilate(clipped.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # the clip's own shoulder
    radius = max(1, round(reach * max(h, w) / f))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    near = cv2.dilate(_block_max(clipped.astype(np.uint8), f), disc) > 0
    excess = np.zeros(near.shape, bool)
    for c in range(ref.shape[2]):  # each channel of a blur is a weighted average of that channel
        known = _block_max(np.where(shoulder, 0.0, ref_lin[..., c]).astype(np.float32), f)
        envelope = cv2.dilate(known, disc)  # the brightest unclipped reference light within the reach
        small = [cv2.resize(x[..., c], (known.shape[1], known.shape[0]), interpolation=cv2.INTER_AREA)
                 for x in (ref_lin, mov_lin)]
        gain = _exposure_ratio(*small, ~near)
        excess |= _block_max(mov_lin[..., c], f) * gain > envelope * MARGIN + FLOOR
    excess &= near
    excess = cv2.dilate(excess.astype(np.uint8), np.ones((3, 3), np.uint8))  # the discs' soft rims
    return cv2.resize(excess, (w, h), interpolation=cv2.INTER_NEAREST) > 0


def shared_detail(reference: np.ndarray, moving: np.ndarray, window: float = 0.015,
                  ratio: float = 2.0, min_share: float = 0.02) -> np.ndarray:
    """Boolean mask of where both shots (grayscale, one shape, on or near one grid) hold the same fine detail:
    the shot's local contrast (gradient over local mean, so exposure cancels, averaged over `window` x the long
    side) within a factor `ratio` of the reference's, where the reference has any. That is the in-focus part of
    a wide-aperture shot: its bokeh (less detail than the reference) and the rims of highlight discs (more)
    fall outside. Where under `min_share` of the frame qualifies, the whole frame is returned."""
    sigma = max(1.0, window * max(reference.shape[:2]))

    def contrast(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        gx, gy = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
        energy = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), sigma)
        return np.sqrt(energy) / (cv2.GaussianBlur(x, (0, 0), sigma) + 0.02)

    c_ref, c_mov = contrast(reference), contrast(moving)
    textured = c_ref > 0.1 * float(np.median(c_ref) + 1e-6) + 0.02
    same = textured & (c_mov * ratio >= c_ref) & (c_mov <= c_ref * ratio)
    return same if same.mean() >= min_share else np.ones(reference.shape[:2], bool)
