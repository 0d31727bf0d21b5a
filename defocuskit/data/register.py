"""Photometric gain and geometric registration of a defocused shot onto its reference (OpenCV).

Conventions: images are float32 RGB in [0, 1]. A returned matrix W maps reference pixel coordinates
to moving-image coordinates at full resolution (moving(W x) ~ reference(x)), i.e. the warp is applied
with cv2.WARP_INVERSE_MAP.

Registration quality. `record["raw_score"]` is the ECC correlation coefficient (Evangelidis &
Psarakis 2008) between the pre-blurred grayscale reference and the warped moving image at the working
resolution; the defocus blur itself lowers it, not only misregistration. `record["score"]`, which
IngestOptions.min_align_score applies to, is the blur-aware `reg_quality.registration_quality` (consistency
of blur-matched tiles, content found displaced). Both methods (ecc, homography) report the same scores, so one
threshold serves both.

What the fit and the scores leave out (`highlights`): light spread from highlights the reference clipped (bokeh
discs of glints and lamps, whose brightness neither shot records). Where the whole-frame ECC fit fails or lands
beyond a tripod bracket, it is made again on the detail both shots share (the subject in focus).

Before any score, the warp must be one a tripod bracket can make (`tripod_motion`: scale within 4 %,
rotation 1.5 deg, anisotropy 5 %, shift 5 % of the long side, little perspective: `bracket`); beyond it the pair is
refused as a wrong match (another scene, a repeated texture) whatever its correlation.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

from defocuskit.data.bracket import as_3x3, beyond_bracket
from defocuskit.data.highlights import shared_detail, unexplained_highlights
from defocuskit.data.reg_quality import _gray, _resize, registration_quality
from defocuskit.io.images import linear_to_srgb, srgb_to_linear

_MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
_MIN_MATCHES = 12

class RegistrationError(RuntimeError):
    """Registration could not be estimated (no convergence, too few matches, implausible warp)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class _IdentityAsGood(RegistrationError):
    """The fit correlates no better than the identity (`align(..., keep_identity=True)`)."""


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


def _ecc(ref: np.ndarray, mov: np.ndarray, motion: str, mask: np.ndarray | None = None,
         detail: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """Coarse-to-fine ECC (a pyramid down to ~128 px) so that shifts of tens of pixels converge; `mask` (uint8,
    the moving image's grid) marks the pixels it may use. Where that whole-frame fit fails or lands beyond a
    tripod bracket (bokeh everywhere: the discs of many glints pull it off) and `detail` is given (it returns a
    uint8 mask, likewise: the detail both shots share, the subject in focus; made only when needed), the detail
    alone is fitted from the identity.

    The whole-frame fit is kept where it holds, though it can miss the subject in focus by pixels: refining it on
    the detail aligns the subject better but the out-of-focus background worse (EBB pairs are not tripod
    brackets), and a model trained on such pairs gained less (docs/benchmarks.md, "Registration on strong bokeh")."""
    levels = _levels(ref.shape)
    identity = np.eye(3) if motion == "homography" else np.eye(3)[:2]
    try:
        warp = identity
        for level in range(levels, -1, -1):
            warp = _ecc_level(ref, mov, motion, warp, 0.5 ** level, mask)
        if detail is None or not beyond_bracket(warp, (ref.shape[1], ref.shape[0])):
            return warp
    except cv2.error:
        if detail is None:
            raise
        warp = None
    try:
        fitted, shared = identity, detail()
        for level in range(min(levels, 2), -1, -1):
            fitted = _ecc_level(ref, mov, motion, fitted, 0.5 ** level, shared)
    except cv2.error:
        if warp is None:
            raise
        return warp
    return fitted


def _levels(shape: tuple[int, ...]) -> int:
    """Pyramid levels below the working size, down to ~128 px (at most 4)."""
    levels = 0
    while max(shape) / 2 ** (levels + 1) >= 128 and levels < 4:
        levels += 1
    return levels


def _bracket(ref: np.ndarray, mov: np.ndarray, usable: np.ndarray | None,
             detail: Callable[[], np.ndarray] | None) -> tuple[np.ndarray, str]:
    """A tripod aperture bracket keeps its focus and focal length, so no scale and no shear: a shift, then a rotation
    (ECC euclidean), fitted on the detail both shots hold (the subject in focus). A whole-frame affine fit is pulled by
    the bokeh (on renders moved by a known warp, up to 14 px RMS off at 1536 px where this is mostly within 0.3-2.2:
    docs/benchmarks.md, "A tripod bracket fitted on its subject"). Where this fit fails or lands beyond a tripod
    bracket: the affine whole-frame one.
    Returns (warp, the motion used)."""
    if detail is not None:
        try:
            warp, shared = np.eye(3)[:2], detail()
            for level in range(min(_levels(ref.shape), 2), -1, -1):
                warp = _ecc_level(ref, mov, "translation", warp, 0.5 ** level, shared)
            for level in (1, 0):
                warp = _ecc_level(ref, mov, "euclidean", warp, 0.5 ** level, shared)
            if not beyond_bracket(warp, (ref.shape[1], ref.shape[0])):
                return warp, "bracket"
        except cv2.error:
            pass
    return _ecc(ref, mov, "affine", usable, detail), "affine"


def _ecc_level(ref: np.ndarray, mov: np.ndarray, motion: str, warp: np.ndarray, scale: float,
               mask: np.ndarray | None) -> np.ndarray:
    """One ECC fit at `scale` of the working images, from `warp` (working coordinates), on `mask` if given."""
    start = _conjugate(warp, _scale_matrix(scale)).astype(np.float32)
    level_mask = None if mask is None else (_resize(mask.astype(np.float32), scale) > 0.5).astype(np.uint8)
    _, found = cv2.findTransformECC(_resize(ref, scale), _resize(mov, scale), start,
                                    _MOTIONS[motion], _ECC_CRITERIA, level_mask, 5)
    return _rescale(found, scale)


def _features(ref: np.ndarray, mov: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Feature homography and its number of RANSAC inliers: SIFT (ORB where SIFT is absent), Lowe ratio test,
    RANSAC; keypoints only where `mask` (uint8, both grids alike) is set."""
    a, b = (np.clip(x * 255.0, 0, 255).astype(np.uint8) for x in (ref, mov))
    if hasattr(cv2, "SIFT_create"):
        detector, norm = cv2.SIFT_create(nfeatures=4000), cv2.NORM_L2
    else:
        detector, norm = cv2.ORB_create(nfeatures=4000), cv2.NORM_HAMMING
    kp_a, des_a = detector.detectAndCompute(a, mask)
    kp_b, des_b = detector.detectAndCompute(b, mask)
    if des_a is None or des_b is None or len(kp_a) < _MIN_MATCHES or len(kp_b) < _MIN_MATCHES:
        raise RegistrationError(f"too few features: {0 if des_a is None else len(kp_a)} in the reference, "
                                f"{0 if des_b is None else len(kp_b)} in the shot ({_MIN_MATCHES} needed in each)")
    knn = cv2.BFMatcher(norm).knnMatch(des_a, des_b, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < _MIN_MATCHES:
        raise RegistrationError(f"too few feature matches: {len(good)} < {_MIN_MATCHES}")
    src = np.float32([kp_a[g.queryIdx].pt for g in good])
    dst = np.float32([kp_b[g.trainIdx].pt for g in good])
    h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    if h is None or inliers is None or int(inliers.sum()) < _MIN_MATCHES:
        raise RegistrationError(f"RANSAC found no homography with >= {_MIN_MATCHES} inliers")
    return h.astype(np.float64), int(inliers.sum())  # a count, as align.inliers in the shard schema (the share
    # of matches returned before failed the metadata check of every pair registered by a homography)


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


def align(moving: np.ndarray, reference: np.ndarray, method: str = "ecc", motion: str = "affine",
          max_side: int = 1024, blur_sigma: float = 2.0,
          keep_identity: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Register `moving` (the defocused shot) onto `reference`; returns (warped moving, record).

    Estimated on grayscale images downscaled to `max_side` and Gaussian pre-blurred (`blur_sigma`
    working pixels, so the defocus difference matters less); warped at full resolution with reflected
    borders. Pixels lit by clipped highlights of the reference (`unexplained_highlights`: bokeh discs of glints
    and lamps, whose brightness neither shot records) take no part in the fit nor in its scores. `motion`
    "bracket" (a tripod aperture bracket) fits a shift and a rotation on the detail both shots hold (`_bracket`).
    record = {"method", "motion" (for "bracket": "affine" where its fit failed and the affine one was made),
    "score" (the blur-aware `registration_quality`, in [0, 1];
    the raw correlation where no tile is textured), "raw_score" (ECC correlation of the pre-blurred
    images), "consistency", "displaced", "quality_tiles", "matched_blur_px" ([median, 90th percentile]
    Gaussian sigma in full-resolution pixels that matched the sharper shot to the blurrier, positive
    where the reference was blurred), "matrix" (full-resolution, reference -> moving), "coverage",
    "border", and "inliers" for feature homographies}. Raises RegistrationError.

    `keep_identity` (for pairs registered already, such as an output scored against its reference): the identity is
    a candidate too, kept where its correlation (the fit's own objective, on the same pixels) is at least the fit's
    or where no fit is found, and `moving` is then returned as given, with record["identity"] the reason and
    record["fit_found"] False where there was no fit.
    """
    if method not in ("ecc", "homography"):
        raise ValueError(f"registration method must be 'ecc' or 'homography', got {method!r}")
    if method == "ecc" and motion not in (*_MOTIONS, "bracket"):
        raise ValueError(f"ECC motion must be one of {sorted(_MOTIONS) + ['bracket']}, got {motion!r}")
    h, w = reference.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    ref_c, mov_c = (_resize(np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0), scale) for x in (reference, moving))
    ref_w, mov_w = _gray(ref_c), _gray(mov_c)
    usable = detail = None
    if ref_c.shape == mov_c.shape:  # judged before the fit: a tripod bracket moves the frame by little
        lit = unexplained_highlights(ref_c, mov_c)
        usable = (~lit).astype(np.uint8)
        detail = lambda: (shared_detail(ref_w, mov_w) & ~lit).astype(np.uint8)  # noqa: E731
    ref_g = cv2.GaussianBlur(ref_w, (0, 0), blur_sigma)
    mov_g = cv2.GaussianBlur(mov_w, (0, 0), blur_sigma)
    record: dict[str, Any] = {"method": method, "motion": "homography" if method == "homography" else motion}
    try:
        try:
            if method == "ecc" and motion == "bracket":
                warp, record["motion"] = _bracket(ref_g, mov_g, usable, detail)
            elif method == "ecc":
                warp = _ecc(ref_g, mov_g, motion, usable, detail)
            else:
                warp, record["inliers"] = _features(ref_g, mov_g, usable)
            _check_plausible(warp)
            size = (ref_g.shape[1], ref_g.shape[0])
            warped_g = _warp(mov_g, warp, size)
            valid = _warp(np.ones_like(mov_g), warp, size, border=cv2.BORDER_CONSTANT)
            warped_c = _warp(mov_c, warp, size)
            lit_warped = unexplained_highlights(ref_c, warped_c)  # judged again on the registered grid
            raw = float(cv2.computeECC(ref_g, warped_g, ((valid > 0.999) & ~lit_warped).astype(np.uint8)))
        except cv2.error as exc:
            raise RegistrationError(f"{method} did not converge ({str(exc).strip().splitlines()[-1]})") from exc
        full = _rescale(warp, scale)
        beyond = beyond_bracket(full, (w, h))
        if beyond:
            raise RegistrationError(beyond)
        if keep_identity and ref_c.shape == mov_c.shape:  # both on the pixels either may use
            both = ((valid > 0.999) & ~lit_warped & ~unexplained_highlights(ref_c, mov_c)).astype(np.uint8)
            fitted, unmoved = (float(cv2.computeECC(ref_g, x, both)) for x in (warped_g, mov_g))
            if unmoved >= fitted:
                raise _IdentityAsGood(f"the identity correlates as well ({unmoved:.6f} >= {fitted:.6f})")
    except RegistrationError as exc:
        if not (keep_identity and reference.shape == moving.shape):
            raise
        return _unmoved(moving, record, exc.reason, fit_found=isinstance(exc, _IdentityAsGood))
    quality = registration_quality(ref_c, warped_c, valid, lit_warped)
    score = raw if quality["score"] is None else quality["score"]
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


def _unmoved(moving: np.ndarray, record: dict[str, Any], reason: str,
             fit_found: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """`moving` as given, recorded as the identity `align(..., keep_identity=True)` kept, with the reason and whether
    a fit was found at all."""
    record.update({"identity": reason, "fit_found": fit_found, "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                   "coverage": 1.0})
    return np.asarray(moving), record
