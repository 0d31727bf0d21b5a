"""Photometric gain and geometric registration of a defocused shot onto its reference (OpenCV).

Conventions: images are float32 RGB in [0, 1]. A returned matrix W maps reference pixel coordinates
to moving-image coordinates at full resolution (moving(W x) ~ reference(x)), i.e. the warp is applied
with cv2.WARP_INVERSE_MAP.

Registration quality. `record["raw_score"]` is the ECC correlation coefficient (Evangelidis &
Psarakis 2008) between the pre-blurred grayscale reference and the warped moving image at the working
resolution; the defocus blur itself lowers it, not only misregistration. `record["score"]`, which
IngestOptions.min_align_score applies to, is `registration_quality`: a blur-aware score in [0, 1] judged
on tiles of a coarse level (long side <= 256 px) after bringing both shots to comparable blur, tile by
tile. It is the lower of
  - consistency: the share of textured evidence whose blur-matched correlation, within a small local
    tolerance (~0.8 % of the long side), supports the fit (0.5 -> none, 0.8 and above -> full); flat
    tiles carry no evidence;
  - 1 - displaced / 0.05: `displaced` is the share of textured evidence whose content sits, coherently
    over neighbouring tiles, elsewhere in the reference (a moved subject, a pasted region); a twentieth
    of the textured frame found displaced drives the score to 0 (not searched when the consistency
    already fails).
Both methods (ecc, homography) report the same scores, so one threshold serves both.

Before any score, the warp must be one a tripod bracket can make (`tripod_motion`: scale within 4 %,
rotation 1.5 deg, anisotropy 5 %, shift 5 % of the long side, little perspective: `bracket`); beyond it the pair is
refused as a wrong match (another scene, a repeated texture) whatever its correlation.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from defocuskit.data.bracket import as_3x3, beyond_bracket
from defocuskit.io.images import linear_to_srgb, srgb_to_linear

_MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
_MIN_MATCHES = 12

# Blur-aware registration quality (see the module docstring); sizes are at a 256 px level and scale with it.
_Q_SIDE = 256  # the quality is judged at this long side (or the image's, if smaller)
_Q_TILES = 32  # tiles along the long side (8 px tiles at 256 px, ~48 px at 1536 px)
_Q_TOLERANCE = 128  # local shift tolerance: long side / this (2 px at 256 px, ~12 px at 1536 px)
_Q_SIGMAS = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # Gaussian blurs tried on either shot, at 256 px
_Q_MIN_STD = 0.01  # a tile with less contrast than this (after matching) is flat: no evidence
_Q_FULL_STD = 0.03  # contrast from which a tile counts fully
_Q_SUPPORT = (0.5, 0.8)  # blur-matched correlation giving no / full support
_Q_FAILING = 0.6  # tiles below this correlation are searched for displaced content
_Q_MOVED_CORR, _Q_MOVED_GAIN = 0.8, 0.25  # content found elsewhere: correlation there, and gain over in place
_Q_MAX_DISPLACED = 0.05  # share of textured evidence found displaced that drives the score to 0
_Q_SEARCH_LIMIT = 0.4  # above this share of failing tiles the consistency is low anyway: no search


class RegistrationError(RuntimeError):
    """Registration could not be estimated (no convergence, too few matches, implausible warp)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def match_gain(moving: np.ndarray, reference: np.ndarray, linear: bool = True,
               low: float = 0.02, high: float = 0.95, sigma: float = 0.0) -> tuple[np.ndarray, float]:
    """Scale `moving` so its exposure matches `reference`; returns (scaled and clipped image, gain).

    The gain is the ratio of mean intensities over pixels well exposed in both low-passed images
    (defocus preserves local means, clipping and noise floors are excluded). With `linear`, sRGB values
    are decoded first, so the gain is an exposure ratio in linear light. With `sigma` > 0 (pixels) the
    scaling is also local and per channel: the ratio of the two images' local means over those pixels
    (a Gaussian of `sigma`), so light and colour that changed between the shots are matched region by
    region; the returned gain is still the global one.
    """
    if moving.shape != reference.shape:
        raise ValueError(f"match_gain needs equal shapes, got {moving.shape} and {reference.shape}")
    mov = srgb_to_linear(np.clip(moving, 0, 1)) if linear else moving.astype(np.float32)
    ref = srgb_to_linear(np.clip(reference, 0, 1)) if linear else reference.astype(np.float32)
    mov_y = _smooth(mov.mean(axis=2), moving.shape)
    ref_y = _smooth(ref.mean(axis=2), moving.shape)
    lo, hi = (srgb_to_linear(np.float32(low)), srgb_to_linear(np.float32(high))) if linear else (low, high)
    mask = (mov_y > lo) & (mov_y < hi) & (ref_y > lo) & (ref_y < hi)
    if mask.mean() < 0.01:
        mask = (mov_y < hi) & (ref_y < hi)
    den = float(mov_y[mask].sum()) if mask.any() else 0.0
    gain = float(ref_y[mask].sum()) / den if den > 0 else 1.0
    if not np.isfinite(gain) or gain <= 0:
        gain = 1.0
    scale = _local_gain(mov, ref, mask, gain, sigma) if sigma > 0 and mov.ndim == 3 else gain
    scaled = np.clip(mov * scale, 0.0, 1.0)
    out = linear_to_srgb(scaled) if linear else scaled.astype(np.float32)
    return out, gain


def _local_gain(mov: np.ndarray, ref: np.ndarray, mask: np.ndarray, gain: float, sigma: float) -> np.ndarray:
    """(H, W, C) gain: per channel, Gaussian-weighted means of `ref` over those of `mov` on `mask`
    (normalised convolution); `gain` where the mask is too sparse nearby, within 1/4 ... 4 x `gain`."""
    w = mask.astype(np.float32)
    support = cv2.GaussianBlur(w, (0, 0), sigma)
    trust = np.clip(support / 0.1, 0.0, 1.0)  # under 10 % well-exposed pixels nearby: towards the global gain
    out = np.empty(mov.shape, np.float32)
    for c in range(mov.shape[2]):
        num = cv2.GaussianBlur(ref[..., c].astype(np.float32) * w, (0, 0), sigma)
        den = cv2.GaussianBlur(mov[..., c].astype(np.float32) * w, (0, 0), sigma)
        local = np.where(den > 1e-6, num / np.maximum(den, 1e-6), gain)
        out[..., c] = trust * np.clip(local, gain / 4, gain * 4) + (1 - trust) * gain
    return out


def _smooth(y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    sigma = max(1.0, 0.01 * max(shape[:2]))
    return cv2.GaussianBlur(y.astype(np.float32), (0, 0), sigma)


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.clip(img, 0, 1).astype(np.float32)
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def _resize(gray: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return gray
    h, w = gray.shape
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _scale_matrix(scale: float) -> np.ndarray:
    """Pixel-centre-preserving map from full to scaled coordinates: x_s = s (x + 0.5) - 0.5."""
    c = 0.5 * scale - 0.5
    return np.array([[scale, 0, c], [0, scale, c], [0, 0, 1]], dtype=np.float64)


def _conjugate(m: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Express warp `m` in the coordinates x' = t x (both images rescaled alike)."""
    out = t @ as_3x3(m.astype(np.float64)) @ np.linalg.inv(t)
    return out / out[2, 2] if m.shape == (3, 3) else out[:2]


def _rescale(m: np.ndarray, scale: float) -> np.ndarray:
    """A warp estimated on images downscaled by `scale`, in full-resolution coordinates."""
    return _conjugate(m, np.linalg.inv(_scale_matrix(scale)))


def _warp(img: np.ndarray, m: np.ndarray, size: tuple[int, int], border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    m = m.astype(np.float32)
    if m.shape == (3, 3):
        return cv2.warpPerspective(img, m, size, flags=flags, borderMode=border)
    return cv2.warpAffine(img, m, size, flags=flags, borderMode=border)


def _ecc(ref: np.ndarray, mov: np.ndarray, motion: str) -> np.ndarray:
    """Coarse-to-fine ECC (a pyramid down to ~128 px) so that shifts of tens of pixels converge."""
    levels = 0
    while max(ref.shape) / 2 ** (levels + 1) >= 128 and levels < 4:
        levels += 1
    warp = np.eye(3) if motion == "homography" else np.eye(3)[:2]
    for level in range(levels, -1, -1):
        scale = 0.5 ** level
        start = _conjugate(warp, _scale_matrix(scale)).astype(np.float32)
        _, found = cv2.findTransformECC(_resize(ref, scale), _resize(mov, scale), start,
                                        _MOTIONS[motion], _ECC_CRITERIA, None, 5)
        warp = _rescale(found, scale)
    return warp


def _features(ref: np.ndarray, mov: np.ndarray) -> tuple[np.ndarray, float]:
    """Feature homography: SIFT (ORB where SIFT is absent), Lowe ratio test, RANSAC."""
    a, b = (np.clip(x * 255.0, 0, 255).astype(np.uint8) for x in (ref, mov))
    if hasattr(cv2, "SIFT_create"):
        detector, norm = cv2.SIFT_create(nfeatures=4000), cv2.NORM_L2
    else:
        detector, norm = cv2.ORB_create(nfeatures=4000), cv2.NORM_HAMMING
    kp_a, des_a = detector.detectAndCompute(a, None)
    kp_b, des_b = detector.detectAndCompute(b, None)
    if des_a is None or des_b is None or len(kp_a) < _MIN_MATCHES or len(kp_b) < _MIN_MATCHES:
        raise RegistrationError(f"too few features ({0 if des_a is None else len(kp_a)} / "
                                f"{0 if des_b is None else len(kp_b)})")
    knn = cv2.BFMatcher(norm).knnMatch(des_a, des_b, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < _MIN_MATCHES:
        raise RegistrationError(f"too few feature matches: {len(good)} < {_MIN_MATCHES}")
    src = np.float32([kp_a[g.queryIdx].pt for g in good])
    dst = np.float32([kp_b[g.trainIdx].pt for g in good])
    h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    if h is None or inliers is None or int(inliers.sum()) < _MIN_MATCHES:
        raise RegistrationError(f"RANSAC found no homography with >= {_MIN_MATCHES} inliers")
    return h.astype(np.float64), float(inliers.mean())


def _check_plausible(m: np.ndarray) -> None:
    a = as_3x3(m)[:2, :2]
    det = float(np.linalg.det(a))
    if not np.all(np.isfinite(m)) or not 0.5 < det < 2.0:
        raise RegistrationError(f"implausible warp (area scale {det:.3g})")


def _coverage(m: np.ndarray, ref_size: tuple[int, int], mov_size: tuple[int, int]) -> float:
    """Fraction of reference pixels whose source lies inside the moving image (the rest is reflected)."""
    ones = np.ones((mov_size[1], mov_size[0]), np.float32)
    valid = _warp(ones, m, ref_size, border=cv2.BORDER_CONSTANT)
    return float((valid > 0.999).mean())


def _tile_mean(x: np.ndarray, t: int) -> np.ndarray:
    """Mean of every t x t tile (the sides of `x` are multiples of t; INTER_AREA averages whole blocks)."""
    return cv2.resize(x, (x.shape[1] // t, x.shape[0] // t), interpolation=cv2.INTER_AREA)


def _no_evidence() -> dict[str, Any]:
    return {"score": None, "consistency": None, "displaced": None, "tiles": 0, "matched_blur": None}


def registration_quality(reference: np.ndarray, warped: np.ndarray,
                         valid: np.ndarray | None = None) -> dict[str, Any]:
    """Blur-aware quality of a registration: how well `warped` (the moving shot already warped onto the
    reference grid) agrees with `reference` once both are brought to comparable blur, tile by tile.

    Inputs are same-shaped grayscale or RGB images in [0, 1]; `valid` (> 0.999) marks the pixels whose
    warped source lies inside the moving image (default: all). Returns {"score": the lower of
    "consistency" and max(0, 1 - "displaced" / 0.05), in [0, 1]; "consistency": share of textured
    evidence whose blur-matched correlation supports the fit; "displaced": share of textured evidence
    found coherently elsewhere in the reference (None when not searched because the consistency already
    fails); "tiles": textured tiles judged; "matched_blur": [median, 90th percentile] of the Gaussian
    sigma, in input pixels, that matched the sharper tile to the blurrier (positive where the reference
    was blurred)}. Without a textured tile there is no evidence: score and the rest are None.
    """
    ref, mov = _gray(reference), _gray(warped)
    if ref.shape != mov.shape:
        raise ValueError(f"registration_quality needs equal shapes, got {ref.shape} and {mov.shape}")
    mask = np.ones_like(ref) if valid is None else (np.asarray(valid) > 0.999).astype(np.float32)
    scale = min(1.0, _Q_SIDE / max(ref.shape))
    a0, b0, v0 = (_resize(x, scale) for x in (ref, mov, mask))
    side = max(a0.shape)
    t, r = max(4, round(side / _Q_TILES)), max(1, round(side / _Q_TOLERANCE))
    rows, cols = (a0.shape[0] - 2 * r) // t, (a0.shape[1] - 2 * r) // t
    if rows < 1 or cols < 1:
        return _no_evidence()

    def crop(x: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
        return x[r + dy:r + dy + rows * t, r + dx:r + dx + cols * t]

    sigmas = [0.0] + [s * side / _Q_SIDE for s in _Q_SIGMAS]
    # defocus PSF approximated by a Gaussian (Pentland 1987); the sharper shot is blurred to match the
    # blurrier, either side, one sigma per tile (defocus varies across the image)
    refs = {s: cv2.GaussianBlur(a0, (0, 0), s) if s else a0 for s in sigmas}
    movs = {s: cv2.GaussianBlur(b0, (0, 0), s) if s else b0 for s in sigmas}
    candidates = [(s, 0.0) for s in sigmas] + [(0.0, s) for s in sigmas[1:]]
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
    for k, (sa, sb) in enumerate(candidates):
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
    textured = (best > -2) & (_tile_mean(crop(v0), t) > 0.999)
    if not textured.any():
        return _no_evidence()
    weight = np.minimum(contrast / _Q_FULL_STD, 1.0) * textured
    total = float(weight.sum())
    lo, hi = _Q_SUPPORT
    consistency = float((weight * np.clip((best - lo) / (hi - lo), 0.0, 1.0)).sum()) / total

    failing = textured & (best < _Q_FAILING)
    displaced = None
    if failing.sum() <= _Q_SEARCH_LIMIT * textured.sum():
        moved = _displaced_tiles(failing, best, choice, candidates, refs, movs, t, r)
        displaced = float((weight * moved).sum()) / total
    score = consistency if displaced is None else min(consistency, max(0.0, 1.0 - displaced / _Q_MAX_DISPLACED))
    signed = np.array([sa - sb for sa, sb in candidates])[choice[textured]] / scale
    return {"score": score, "consistency": consistency, "displaced": displaced, "tiles": int(textured.sum()),
            "matched_blur": [float(np.median(signed)), float(np.percentile(signed, 90))]}


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


def align(moving: np.ndarray, reference: np.ndarray, method: str = "ecc", motion: str = "affine",
          max_side: int = 1024, blur_sigma: float = 2.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Register `moving` (the defocused shot) onto `reference`; returns (warped moving, record).

    Estimated on grayscale images downscaled to `max_side` and Gaussian pre-blurred (`blur_sigma`
    working pixels, so the defocus difference matters less); warped at full resolution with reflected
    borders. record = {"method", "motion", "score" (the blur-aware `registration_quality`, in [0, 1];
    the raw correlation where no tile is textured), "raw_score" (ECC correlation of the pre-blurred
    images), "consistency", "displaced", "quality_tiles", "matched_blur_px" ([median, 90th percentile]
    Gaussian sigma in full-resolution pixels that matched the sharper shot to the blurrier, positive
    where the reference was blurred), "matrix" (full-resolution, reference -> moving), "coverage",
    "border", and "inliers" for feature homographies}. Raises RegistrationError.
    """
    if method not in ("ecc", "homography"):
        raise ValueError(f"registration method must be 'ecc' or 'homography', got {method!r}")
    if method == "ecc" and motion not in _MOTIONS:
        raise ValueError(f"ECC motion must be one of {sorted(_MOTIONS)}, got {motion!r}")
    h, w = reference.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    ref_w, mov_w = _resize(_gray(reference), scale), _resize(_gray(moving), scale)
    ref_g = cv2.GaussianBlur(ref_w, (0, 0), blur_sigma)
    mov_g = cv2.GaussianBlur(mov_w, (0, 0), blur_sigma)
    record: dict[str, Any] = {"method": method, "motion": "homography" if method == "homography" else motion}
    try:
        if method == "ecc":
            warp = _ecc(ref_g, mov_g, motion)
        else:
            warp, record["inliers"] = _features(ref_g, mov_g)
        _check_plausible(warp)
        size = (ref_g.shape[1], ref_g.shape[0])
        warped_g = _warp(mov_g, warp, size)
        valid = _warp(np.ones_like(mov_g), warp, size, border=cv2.BORDER_CONSTANT)
        raw = float(cv2.computeECC(ref_g, warped_g, (valid > 0.999).astype(np.uint8)))
    except cv2.error as exc:
        raise RegistrationError(f"{method} did not converge ({str(exc).strip().splitlines()[-1]})") from exc
    quality = registration_quality(ref_w, _warp(mov_w, warp, size), valid)
    score = raw if quality["score"] is None else quality["score"]
    full = _rescale(warp, scale)
    beyond = beyond_bracket(full, (w, h))
    if beyond:
        raise RegistrationError(beyond)
    out = _warp(np.ascontiguousarray(moving, dtype=np.float32), full, (w, h))
    blur = quality["matched_blur"]
    record.update({
        "score": round(score, 6),
        "raw_score": round(raw, 6),
        "consistency": None if quality["consistency"] is None else round(quality["consistency"], 6),
        "displaced": None if quality["displaced"] is None else round(quality["displaced"], 6),
        "quality_tiles": quality["tiles"],
        "matched_blur_px": None if blur is None else [round(s / scale, 3) for s in blur],
        "matrix": [[float(v) for v in row] for row in full],
        "coverage": round(_coverage(full, (w, h), (moving.shape[1], moving.shape[0])), 6),
        "border": "reflect",
    })
    return np.clip(out, 0.0, 1.0), record
