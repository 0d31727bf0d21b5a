"""How well a registered wide-aperture shot agrees with its reference: the blur-aware registration quality.

`registration_quality` judges tiles of a coarse level (long side <= 256 px) after bringing both shots to
comparable blur, tile by tile (the reference as far as discs of ~13 % of the long side: a wide aperture focused
close). Its score is the lower of
  - consistency: the share of textured evidence whose blur-matched correlation, within a small local
    tolerance (~0.8 % of the long side), supports the fit (0.5 -> none, 0.8 and above -> full); flat
    tiles carry no evidence;
  - 1 - displaced / 0.05: `displaced` is the share of textured evidence whose content sits, coherently
    over neighbouring tiles, elsewhere in the reference (a moved subject, a pasted region); a twentieth
    of the textured frame found displaced drives the score to 0 (not searched when the consistency
    already fails).
Only what both shots record is judged: tiles reached by light spread from a clipped highlight of the reference
(`highlights.unexplained_highlights`: a sun glint's or a lamp's bokeh disc, whose brightness neither shot
records) carry no evidence either way.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from defocuskit.data.highlights import unexplained_highlights

# Blur-aware registration quality (see the module docstring); sizes are at a 256 px level and scale with it.
_Q_SIDE = 256  # the quality is judged at this long side (or the image's, if smaller)
_Q_TILES = 32  # tiles along the long side (8 px tiles at 256 px, ~48 px at 1536 px)
_Q_TOLERANCE = 128  # local shift tolerance: long side / this (2 px at 256 px, ~12 px at 1536 px)
_Q_SIGMAS = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # Gaussian blurs tried on either shot, at 256 px
# and on the reference only (the narrow aperture), on to a wide aperture's bokeh focused close: a Gaussian of
# sigma ~ d / 3 stands for a disc of diameter d, so discs up to ~13 % of the long side (the ladder above stops at
# ~5 %); displaced content is still judged on the ladder above, as a heavily blurred tile matches anywhere
_Q_BOKEH_SIGMAS = (5.6, 8.0, 11.3)
_Q_MIN_STD = 0.01  # a tile with less contrast than this (after matching) is flat: no evidence
_Q_FULL_STD = 0.03  # contrast from which a tile counts fully
_Q_SUPPORT = (0.5, 0.8)  # blur-matched correlation giving no / full support
_Q_FAILING = 0.6  # tiles below this correlation are searched for displaced content
_Q_MOVED_CORR, _Q_MOVED_GAIN = 0.8, 0.25  # content found elsewhere: correlation there, and gain over in place
_Q_MAX_DISPLACED = 0.05  # share of textured evidence found displaced that drives the score to 0
_Q_SEARCH_LIMIT = 0.4  # above this share of failing tiles the consistency is low anyway: no search


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.clip(img, 0, 1).astype(np.float32)
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    """`img` (grayscale or RGB) downscaled by `scale` (INTER_AREA; at least 8 px a side)."""
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _tile_mean(x: np.ndarray, t: int) -> np.ndarray:
    """Mean of every t x t tile (the sides of `x` are multiples of t; INTER_AREA averages whole blocks)."""
    return cv2.resize(x, (x.shape[1] // t, x.shape[0] // t), interpolation=cv2.INTER_AREA)


def _no_evidence(highlights: float) -> dict[str, Any]:
    return {"score": None, "consistency": None, "displaced": None, "tiles": 0, "matched_blur": None,
            "highlights": highlights}


def registration_quality(reference: np.ndarray, warped: np.ndarray, valid: np.ndarray | None = None,
                         lit: np.ndarray | None = None) -> dict[str, Any]:
    """Blur-aware quality of a registration: how well `warped` (the moving shot already warped onto the
    reference grid) agrees with `reference` once both are brought to comparable blur, tile by tile.

    Inputs are same-shaped grayscale or RGB images in [0, 1] (RGB tells clipped highlights best); `valid`
    (> 0.999) marks the pixels whose warped source lies inside the moving image (default: all); pixels lit by a
    clipped highlight (`unexplained_highlights`, or `lit` where the caller has it) are left out as well.
    Returns {"score": the lower of "consistency" and max(0, 1 - "displaced" / 0.05), in [0, 1];
    "consistency": share of textured evidence whose blur-matched correlation supports the fit;
    "displaced": share of textured evidence found coherently elsewhere in the reference (None when not
    searched because the consistency already fails); "tiles": textured tiles judged; "matched_blur":
    [median, 90th percentile] of the Gaussian sigma, in input pixels, that matched the sharper tile to the
    blurrier (positive where the reference was blurred); "highlights": share of the frame left out as lit by
    clipped highlights}. Without a textured tile there is no evidence: score and the rest are None.
    """
    ref, mov = _gray(reference), _gray(warped)
    if ref.shape != mov.shape:
        raise ValueError(f"registration_quality needs equal shapes, got {ref.shape} and {mov.shape}")
    mask = np.ones_like(ref) if valid is None else (np.asarray(valid) > 0.999).astype(np.float32)
    unexplained = unexplained_highlights(reference, warped) if lit is None else np.asarray(lit, bool)
    mask[unexplained] = 0.0
    scale = min(1.0, _Q_SIDE / max(ref.shape))
    a0, b0, v0 = (_resize(x, scale) for x in (ref, mov, mask))
    side = max(a0.shape)
    t, r = max(4, round(side / _Q_TILES)), max(1, round(side / _Q_TOLERANCE))
    rows, cols = (a0.shape[0] - 2 * r) // t, (a0.shape[1] - 2 * r) // t
    if rows < 1 or cols < 1:
        return _no_evidence(float(unexplained.mean()))

    def crop(x: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
        return x[r + dy:r + dy + rows * t, r + dx:r + dx + cols * t]

    sigmas = [0.0] + [s * side / _Q_SIDE for s in _Q_SIGMAS]
    bokeh = [s * side / _Q_SIDE for s in _Q_BOKEH_SIGMAS]
    # defocus PSF approximated by a Gaussian (Pentland 1987); the sharper shot is blurred to match the
    # blurrier, either side, one sigma per tile (defocus varies across the image); the reference (the narrow
    # aperture) also as far as a wide aperture's bokeh
    refs = {s: cv2.GaussianBlur(a0, (0, 0), s) if s else a0 for s in sigmas + bokeh}
    movs = {s: cv2.GaussianBlur(b0, (0, 0), s) if s else b0 for s in sigmas}
    candidates = [(s, 0.0) for s in sigmas] + [(0.0, s) for s in sigmas[1:]] + [(s, 0.0) for s in bokeh]
    first = 2 * len(sigmas) - 1  # the candidates before the bokeh ones: the displaced-content search's
    stats: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def tile_stats(key: tuple, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if key not in stats:
            m = _tile_mean(x, t)
            stats[key] = m, np.sqrt(np.maximum(_tile_mean(x * x, t) - m * m, 0.0))
        return stats[key]

    best = np.full((rows, cols), -2.0, np.float32)  # blur-matched correlation (ZNCC) per tile
    contrast = np.zeros((rows, cols), np.float32)
    choice = np.zeros((rows, cols), np.int32)
    ref_std = tile_stats(("ref", 0.0), crop(a0))[1]

    def match(start: int, stop: int) -> None:
        """Keep, per tile, the best of candidates[start:stop] in best / contrast / choice."""
        for k in range(start, stop):
            sa, sb = candidates[k]
            a = crop(refs[sa])
            ma, da = tile_stats(("ref", sa), a)
            for dy in range(-r, r + 1):  # local tolerance: the best of small shifts
                for dx in range(-r, r + 1):
                    b = crop(movs[sb], dy, dx)
                    mb, db = tile_stats(("mov", sb, dy, dx), b)
                    corr = (_tile_mean(a * b, t) - ma * mb) / np.maximum(da * db, 1e-12)
                    # blurring only leaks contrast in from outside a tile: count no more than either had
                    mov_std = tile_stats(("mov", 0.0, dy, dx), crop(b0, dy, dx))[1]
                    evidence = np.minimum(np.minimum(da, db), np.minimum(ref_std, mov_std))
                    better = (evidence >= _Q_MIN_STD) & (corr > best)
                    best[better], contrast[better], choice[better] = corr[better], evidence[better], k

    match(0, first)
    # a heavily blurred tile matches content anywhere: no evidence of where it moved, so the displaced-content
    # search works on the first ladder's match
    first_best, first_choice, first_contrast = best.copy(), choice.copy(), contrast.copy()
    match(first, len(candidates))
    textured = (best > -2) & (_tile_mean(crop(v0), t) > 0.999)
    if not textured.any():
        return _no_evidence(float(unexplained.mean()))
    weight = np.minimum(contrast / _Q_FULL_STD, 1.0) * textured
    total = float(weight.sum())
    lo, hi = _Q_SUPPORT
    consistency = float((weight * np.clip((best - lo) / (hi - lo), 0.0, 1.0)).sum()) / total

    failing = textured & (first_best < _Q_FAILING)
    displaced = None
    if failing.sum() <= _Q_SEARCH_LIMIT * textured.sum():
        moved = _displaced_tiles(failing, first_best, first_choice, candidates, refs, movs, t, r)
        first_weight = np.minimum(first_contrast / _Q_FULL_STD, 1.0) * textured  # as textured as with all of them
        displaced = float((first_weight * moved).sum()) / float(first_weight.sum())
    score = consistency if displaced is None else min(consistency, max(0.0, 1.0 - displaced / _Q_MAX_DISPLACED))
    signed = np.array([sa - sb for sa, sb in candidates])[choice[textured]] / scale
    return {"score": score, "consistency": consistency, "displaced": displaced, "tiles": int(textured.sum()),
            "matched_blur": [float(np.median(signed)), float(np.percentile(signed, 90))],
            "highlights": float(unexplained.mean())}


def _displaced_tiles(failing: np.ndarray, best: np.ndarray, choice: np.ndarray, candidates: list,
                     refs: dict, movs: dict, t: int, r: int) -> np.ndarray:
    """Failing tiles whose content matches well elsewhere in the reference, at the same offset as a
    neighbouring such tile (a moved subject or pasted region; chance matches do not agree)."""
    rows, cols = best.shape
    offset = np.zeros((rows, cols, 2), np.int32)
    found = np.full((rows, cols), -1.0, np.float32)
    flat_windows: dict[float, np.ndarray] = {}
    for i, j in zip(*np.nonzero(failing)):
        y0, x0 = r + i * t, r + j * t
        for k in {0, int(choice[i, j])}:  # unblurred, and the tile's matched blur
            sa, sb = candidates[k]
            template = movs[sb][y0:y0 + t, x0:x0 + t]
            if template.std() < _Q_MIN_STD:
                continue
            res = cv2.matchTemplate(refs[sa], template, cv2.TM_CCOEFF_NORMED)  # normalized cross-correlation
            if sa not in flat_windows:
                m = cv2.boxFilter(refs[sa], -1, (t, t), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
                m2 = cv2.boxFilter(refs[sa] ** 2, -1, (t, t), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
                flat_windows[sa] = (m2 - m * m)[:res.shape[0], :res.shape[1]] < _Q_MIN_STD ** 2
            res[flat_windows[sa]] = -1.0
            y, x = np.unravel_index(int(res.argmax()), res.shape)
            if res[y, x] > found[i, j]:
                found[i, j], offset[i, j] = res[y, x], (y - y0, x - x0)
    elsewhere = failing & (found >= _Q_MOVED_CORR) & (found >= best + _Q_MOVED_GAIN) & (np.abs(offset).max(-1) > r)
    coherent = np.zeros_like(elsewhere)
    for i, j in zip(*np.nonzero(elsewhere)):
        near = (slice(max(0, i - 1), i + 2), slice(max(0, j - 1), j + 2))
        agree = elsewhere[near] & (np.abs(offset[near] - offset[i, j]).max(-1) <= r)
        coherent[i, j] = agree.sum() >= 2  # itself and at least one neighbour
    return coherent
