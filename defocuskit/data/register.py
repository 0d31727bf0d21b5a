"""Photometric gain and geometric registration of a defocused shot onto its reference (OpenCV).

Conventions: images are float32 RGB in [0, 1]. A returned matrix W maps reference pixel coordinates
to moving-image coordinates at full resolution (moving(W x) ~ reference(x)), i.e. the warp is applied
with cv2.WARP_INVERSE_MAP. Both methods report the same score: the ECC correlation coefficient
(Evangelidis & Psarakis 2008) between the pre-blurred grayscale reference and the warped moving image
at the working resolution, so one threshold (IngestOptions.min_align_score) serves both.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from defocuskit.images import linear_to_srgb, srgb_to_linear

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


def match_gain(moving: np.ndarray, reference: np.ndarray, linear: bool = True,
               low: float = 0.02, high: float = 0.95) -> tuple[np.ndarray, float]:
    """Scale `moving` so its exposure matches `reference`; returns (scaled and clipped image, gain).

    The gain is the ratio of mean intensities over pixels well exposed in both low-passed images
    (defocus preserves local means, clipping and noise floors are excluded). With `linear`, sRGB values
    are decoded first, so the gain is an exposure ratio in linear light.
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
    scaled = np.clip(mov * gain, 0.0, 1.0)
    out = linear_to_srgb(scaled) if linear else scaled.astype(np.float32)
    return out, gain


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


def _to_3x3(m: np.ndarray) -> np.ndarray:
    return m if m.shape == (3, 3) else np.vstack([m, [0, 0, 1]])


def _conjugate(m: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Express warp `m` in the coordinates x' = t x (both images rescaled alike)."""
    out = t @ _to_3x3(m.astype(np.float64)) @ np.linalg.inv(t)
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
    a = _to_3x3(m)[:2, :2]
    det = float(np.linalg.det(a))
    if not np.all(np.isfinite(m)) or not 0.5 < det < 2.0:
        raise RegistrationError(f"implausible warp (area scale {det:.3g})")


def _coverage(m: np.ndarray, ref_size: tuple[int, int], mov_size: tuple[int, int]) -> float:
    """Fraction of reference pixels whose source lies inside the moving image (the rest is reflected)."""
    ones = np.ones((mov_size[1], mov_size[0]), np.float32)
    valid = _warp(ones, m, ref_size, border=cv2.BORDER_CONSTANT)
    return float((valid > 0.999).mean())


def align(moving: np.ndarray, reference: np.ndarray, method: str = "ecc", motion: str = "affine",
          max_side: int = 1024, blur_sigma: float = 2.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Register `moving` (the defocused shot) onto `reference`; returns (warped moving, record).

    Estimated on grayscale images downscaled to `max_side` and Gaussian pre-blurred (`blur_sigma`
    working pixels, so the defocus difference matters less); warped at full resolution with reflected
    borders. record = {"method", "motion", "score", "matrix" (full-resolution, reference -> moving),
    "coverage", "border", and "inliers" for feature homographies}. Raises RegistrationError.
    """
    if method not in ("ecc", "homography"):
        raise ValueError(f"registration method must be 'ecc' or 'homography', got {method!r}")
    if method == "ecc" and motion not in _MOTIONS:
        raise ValueError(f"ECC motion must be one of {sorted(_MOTIONS)}, got {motion!r}")
    h, w = reference.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    ref_g = cv2.GaussianBlur(_resize(_gray(reference), scale), (0, 0), blur_sigma)
    mov_g = cv2.GaussianBlur(_resize(_gray(moving), scale), (0, 0), blur_sigma)
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
        score = float(cv2.computeECC(ref_g, warped_g, (valid > 0.999).astype(np.uint8)))
    except cv2.error as exc:
        raise RegistrationError(f"{method} did not converge ({str(exc).strip().splitlines()[-1]})") from exc
    full = _rescale(warp, scale)
    out = _warp(np.ascontiguousarray(moving, dtype=np.float32), full, (w, h))
    record.update({
        "score": round(score, 6),
        "matrix": [[float(v) for v in row] for row in full],
        "coverage": round(_coverage(full, (w, h), (moving.shape[1], moving.shape[0])), 6),
        "border": "reflect",
    })
    return np.clip(out, 0.0, 1.0), record
