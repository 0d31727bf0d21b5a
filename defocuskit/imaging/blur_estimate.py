"""A training-free defocus map from one blurred image: edge blur by re-blurring, spread edge-aware to every pixel.

Zhuo & Sim, "Defocus map estimation from a single image", Pattern Recognition 44 (2011). An edge of amplitude A
blurred by a Gaussian of std sigma has, at its centre, the gradient magnitude A / sqrt(2 pi sigma^2) (Eq. 3);
re-blurred by a known sigma0 it has A / sqrt(2 pi (sigma^2 + sigma0^2)), so the ratio R of the two gives
sigma = sigma0 / sqrt(R^2 - 1) (Eq. 5). Here the "original" gradient is itself taken at a small scale s1 (the
noise of a real sensor needs it) and the re-blurred one at s2, so R^2 = (sigma^2 + s2^2) / (sigma^2 + s1^2)
and sigma^2 = (s2^2 - R^2 s1^2) / (R^2 - 1) (Eq. 5 with the pre-smoothing, s1 = 0 giving it back). Several
(s1, s2) pairs cover small and large blur; each pixel on an edge takes the finest pair that sees the edge
above the noise and whose answer lies in its well-conditioned range.

A defocused edge is blurred by a disc, not a Gaussian: a disc of diameter c has the per-axis second moment
c^2 / 16 (sigma = c / 4), but the gradient ratio at the edge centre sees the disc's line-spread peak, 2 / (pi r),
which a Gaussian matches at sigma = sqrt(pi / 8) r = 0.313 c (the tables give 0.31-0.35 c for c >= 4 px), so the
mapping sigma -> c is calibrated numerically per pair, by running the same estimator on step edges blurred by
`optics.disc_psf` of known diameters (`calibration`), and `DEFAULT_GAIN` is one residual factor fitted on the
synthetic training split only.

The sparse edge map is spread to every pixel (flat regions take the propagated value) by normalised
convolution with the domain-transform recursive filter (Gastal & Oliveira 2011), guided by the image, in place
of the paper's matting-Laplacian solve (the same edge-aware interpolation in linear time: about a second for
512 x 768 on one core, the first call 1 s more for the calibration tables).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from defocuskit.imaging.optics import disc_psf
from defocuskit.io.images import linear_to_srgb, srgb_to_linear

# (s1, s2) scale pairs in pixels of the working image, finest first (s2 = 2 s1: R in a well-conditioned range).
SCALES: tuple[tuple[float, float], ...] = ((0.7, 1.4), (1.4, 2.8))
_CAL_DIAMETERS = np.concatenate([np.linspace(0.0, 4.0, 17), np.linspace(4.5, 16.0, 24), np.linspace(17.0, 32.0, 16)])
# Constants below were chosen on the synthetic TRAIN split (and the real train scenes) only.
LINEAR = False  # measure edges in sRGB codes: better than linear light on the train data (the gamma evens out
# shot noise, which grows with the signal); the calibration edges are encoded the same way
DEFAULT_GAIN = 1.2  # residual factor on the calibrated disc diameter
DEFAULT_QUANTILE = 0.5  # keep edge centres above this quantile of step height (per pair)
DEFAULT_EDGE_SNR = 2.0  # an edge counts where its gradient is this many noise stds (at that scale)
DEFAULT_REACH = 2.0  # a pair answers for Gaussian sigma up to this many s2
DEFAULT_LOW = 0.6  # a coarser pair answers only for Gaussian sigma above this many s1
DEFAULT_INTRINSIC = 1.5  # px: disc diameter of the blur of in-focus edges, taken off in quadrature
DEFAULT_SIGMA_R = 2.0  # propagation: range std of the domain transform (sRGB units, summed over channels)
DEFAULT_REACH_FRACTION = 0.2  # propagation: spatial std as a fraction of the longer side


def luminance(image: np.ndarray, linear: bool = LINEAR) -> np.ndarray:
    """float32 (H, W) luminance of a float RGB (H, W, 3) or grey (H, W) image in [0, 1], in linear light or (the
    default, see LINEAR) in the image's sRGB codes."""
    a = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if linear:
        a = srgb_to_linear(a)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


IMMERKAER_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)  # Immerkaer 1996: blind to planes


def noise_sigma(gray: np.ndarray) -> float:
    """Std of white noise in a grey image (Immerkaer 1996: the MAD of a Laplacian-difference filter)."""
    r = cv2.filter2D(gray, cv2.CV_32F, IMMERKAER_MASK, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(np.median(np.abs(r)) * 1.4826 / 6.0)  # the filter's gain on white noise is sqrt(36) = 6


def gradient(gray: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(magnitude, gx, gy) of the gradient of the image smoothed by a Gaussian of std `scale` (central differences)."""
    g = cv2.GaussianBlur(gray, (0, 0), scale, borderType=cv2.BORDER_REFLECT) if scale > 0 else gray
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(gx * gx + gy * gy), gx, gy


def gradient_noise(noise: float, scale: float) -> float:
    """Std of one component of the central-difference gradient of white noise (std `noise`) after a Gaussian of
    std `scale` (>= 0.5): its variance is noise^2 / (16 pi s^4), that of the derivative of the smoothed field."""
    s = max(scale, 0.5)
    return noise * float(np.sqrt(1.0 / (16.0 * np.pi * s**4)))


def edge_centres(mag: np.ndarray, gx: np.ndarray, gy: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of edge centres: local maxima of `mag` across the edge (non-maximum suppression along the
    gradient direction, four directions, as in Canny) above `threshold`."""
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    p = np.pad(mag, 1, mode="edge")
    h, w = mag.shape
    neighbours = {0: ((0, 1), (0, -1)), 45: ((1, 1), (-1, -1)), 90: ((1, 0), (-1, 0)), 135: ((1, -1), (-1, 1))}
    keep = np.zeros(mag.shape, bool)
    for centre, ((dy1, dx1), (dy2, dx2)) in neighbours.items():
        sel = np.abs(((angle - centre + 90.0) % 180.0) - 90.0) <= 22.5
        a = p[1 + dy1:1 + dy1 + h, 1 + dx1:1 + dx1 + w]
        b = p[1 + dy2:1 + dy2 + h, 1 + dx2:1 + dx2 + w]
        keep |= sel & (mag >= a) & (mag > b)
    return keep & (mag > threshold)


def raw_sigma(gray: np.ndarray, s1: float, s2: float, noise: float,
              edge_snr: float = DEFAULT_EDGE_SNR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian edge blur by the gradient ratio at the edge centres of one (s1, s2) pair.

    Returns (sigma (H, W) float32, meaningful at edge centres; edge mask; the edge's step height A, from Eq. 3:
    A = |grad| sqrt(2 pi (sigma^2 + s1^2)), which unlike the gradient does not fall as the blur grows)."""
    m1, gx, gy = gradient(gray, s1)
    m2, _, _ = gradient(gray, s2)
    noise_g = max(gradient_noise(noise, s1), 1e-5)
    edges = edge_centres(m1, gx, gy, edge_snr * noise_g)
    r2 = (m1 / np.maximum(m2, 1e-12)) ** 2  # R^2, Eq. 5
    sigma2 = (s2 * s2 - r2 * s1 * s1) / np.maximum(r2 - 1.0, 1e-6)  # sigma^2 = (s2^2 - R^2 s1^2) / (R^2 - 1)
    sigma = np.sqrt(np.clip(sigma2, 0.0, None))
    sigma[(r2 <= 1.0) | (sigma2 > 1e4)] = 1e2  # no drop in gradient after re-blurring: far beyond this pair
    amplitude = m1 * np.sqrt(2.0 * np.pi * (np.minimum(sigma, 4.0 * s2) ** 2 + s1 * s1))  # Eq. 3
    return sigma.astype(np.float32), edges, amplitude.astype(np.float32)


def _step_edge(diameter: float, size: int = 160, angle_deg: float = 0.0) -> np.ndarray:
    """A step edge (0.2 to 0.8 in linear light) through the centre of a (size, size) image, blurred by a disc of
    `diameter`, in the coding that `luminance` measures in."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2.0
    t = np.deg2rad(angle_deg)
    img = ((xx * np.cos(t) + yy * np.sin(t)) > 0).astype(np.float32) * 0.6 + 0.2
    if diameter > 1.0:
        img = cv2.filter2D(img, -1, disc_psf(diameter), borderType=cv2.BORDER_REPLICATE)
    return img if LINEAR else linear_to_srgb(img)


@functools.cache
def calibration(s1: float, s2: float) -> tuple[np.ndarray, np.ndarray]:
    """(raw sigma, disc diameter) tables of one pair: the median raw sigma at the centre of noise-free step edges
    (0 and 30 degrees) blurred by discs of known diameter; monotone, for np.interp."""
    sig = []
    for c in _CAL_DIAMETERS:
        vals = []
        for angle in (0.0, 30.0):
            img = _step_edge(float(c), size=int(max(96, 4 * c + 12 * s2)), angle_deg=angle)
            s, edges, _ = raw_sigma(img, s1, s2, noise=0.0, edge_snr=0.0)
            h, w = img.shape
            inner = np.zeros_like(edges)
            inner[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
            v = s[edges & inner]
            vals.append(float(np.median(v)) if v.size else np.nan)
        sig.append(float(np.nanmean(vals)))
    sig_arr = np.maximum.accumulate(np.nan_to_num(np.array(sig), nan=0.0))
    return sig_arr, _CAL_DIAMETERS.astype(np.float64)


def sparse_coc(gray: np.ndarray, noise: float | None = None, edge_snr: float = DEFAULT_EDGE_SNR,
               scales: tuple[tuple[float, float], ...] = SCALES, quantile: float = DEFAULT_QUANTILE,
               reach: float = DEFAULT_REACH, intrinsic: float = DEFAULT_INTRINSIC,
               low: float = DEFAULT_LOW) -> tuple[np.ndarray, np.ndarray]:
    """Disc diameter (px) at edge centres, NaN elsewhere, and a confidence weight per pixel (0 off edges).

    Edges are kept above `quantile` of the step heights of each pair (weak texture and shading do not follow the
    step-edge model); each pixel takes the finest pair whose answer is in that pair's well-conditioned range,
    Gaussian sigma up to `reach` s2 (beyond it R^2 - 1 is too small for the noise). The blur every edge of a
    photograph has before defocus (optics, demosaicking, resampling: a disc of `intrinsic` px) is taken off in
    quadrature (second moments add under convolution: c^2 = c_edge^2 - c_intrinsic^2)."""
    noise = noise_sigma(gray) if noise is None else noise
    out = np.full(gray.shape, np.nan, np.float32)
    weight = np.zeros(gray.shape, np.float32)
    for k, (s1, s2) in enumerate(scales):
        sigma, edges, amplitude = raw_sigma(gray, s1, s2, noise, edge_snr)
        if quantile > 0 and edges.sum() > 16:
            edges &= amplitude >= np.quantile(amplitude[edges], quantile)
        table_s, table_c = calibration(s1, s2)
        coc = np.interp(sigma, table_s, table_c)
        coc = np.sqrt(np.clip(coc * coc - intrinsic * intrinsic, 0.0, None)).astype(np.float32)
        ok = edges & np.isnan(out) & (sigma <= reach * s2)
        if k > 0:  # a coarse pair cannot resolve blur well below its own pre-smoothing
            ok &= sigma >= low * s1
        out[ok] = coc[ok]
        weight[ok] = amplitude[ok]  # stronger steps are less disturbed by noise and neighbours
    return out, weight


def widest_reading(gain: float = DEFAULT_GAIN, scales: tuple[tuple[float, float], ...] = SCALES,
                   reach: float = DEFAULT_REACH, intrinsic: float = DEFAULT_INTRINSIC) -> float:
    """The widest disc diameter (px of the working image) `sparse_coc` can answer for an edge: its coarsest pair's
    reach (Gaussian sigma `reach` x s2) through that pair's calibration, less the intrinsic blur, times the gain.
    Edges blurred wider are left unread, so a map whose blur nears this width reads too narrow."""
    s1, s2 = scales[-1]
    table_s, table_c = calibration(s1, s2)
    c = float(np.interp(reach * s2, table_s, table_c))
    return gain * float(np.sqrt(max(c * c - intrinsic * intrinsic, 0.0)))


def _recursive_pass(data: np.ndarray, a_pow: np.ndarray) -> np.ndarray:
    """One horizontal pass (left-right then right-left) of the domain-transform recursive filter; a_pow (H, W)
    is the feedback a^d between column j-1 and j (Gastal & Oliveira 2011, Eq. 21)."""
    out = data.copy()
    for j in range(1, out.shape[1]):
        w = a_pow[:, j, None]
        out[:, j] += w * (out[:, j - 1] - out[:, j])
    for j in range(out.shape[1] - 2, -1, -1):
        w = a_pow[:, j + 1, None]
        out[:, j] += w * (out[:, j + 1] - out[:, j])
    return out


def domain_transform(data: np.ndarray, guide: np.ndarray, sigma_s: float, sigma_r: float,
                     iterations: int = 3) -> np.ndarray:
    """Edge-aware smoothing of data (H, W, C) guided by `guide` (H, W) or (H, W, K): the recursive filter of the
    domain transform (Gastal & Oliveira 2011), spatial std sigma_s px, range std sigma_r in guide units."""
    g = guide if guide.ndim == 3 else guide[..., None]
    dx = 1.0 + sigma_s / sigma_r * np.abs(np.diff(g, axis=1)).sum(-1)  # Eq. 11: ct'(u) = 1 + s_s/s_r |I'(u)|
    dy = 1.0 + sigma_s / sigma_r * np.abs(np.diff(g, axis=0)).sum(-1)
    dx = np.pad(dx, ((0, 0), (1, 0)), constant_values=1.0)
    dy = np.pad(dy, ((1, 0), (0, 0)), constant_values=1.0)
    out = data.astype(np.float32).copy()
    for i in range(iterations):
        sigma_h = sigma_s * np.sqrt(3.0) * 2 ** (iterations - i - 1) / np.sqrt(4**iterations - 1)  # Eq. 14
        a = np.exp(-np.sqrt(2.0) / sigma_h)
        out = _recursive_pass(out, (a**dx).astype(np.float32))
        out = _recursive_pass(out.transpose(1, 0, 2), (a**dy).T.astype(np.float32)).transpose(1, 0, 2)
    return out


def propagate(sparse: np.ndarray, weight: np.ndarray, guide: np.ndarray, sigma_s: float, sigma_r: float,
              levels: int = 3) -> np.ndarray:
    """Every pixel from the sparse values (NaN = none) by edge-aware normalised convolution, DT(w d) / DT(w),
    at `levels` reaches sigma_s, 4 sigma_s, ...: a pixel takes the shortest reach whose accumulated weight is
    enough, blended into the longer ones (a coarse-to-fine fill of flat regions); where nothing reaches at all,
    the weighted median of the edge values."""
    w = np.where(np.isnan(sparse), 0.0, weight).astype(np.float32)
    d = np.nan_to_num(sparse, nan=0.0).astype(np.float32)
    if w.sum() <= 0:
        return np.zeros(sparse.shape, np.float32)
    order = np.argsort(d[w > 0])
    cum = np.cumsum(w[w > 0][order])
    out = np.full(sparse.shape, float(d[w > 0][order][np.searchsorted(cum, cum[-1] / 2.0)]), np.float32)
    density = float(w.mean())  # the accumulated weight of an evenly covered region
    stacked = np.stack([w * d, w], axis=-1)
    h, w_ = sparse.shape
    for k in reversed(range(levels)):  # level k runs at 1 / 2^k of the size (its reach is 4^k sigma_s)
        f = 0.5**k
        size = (max(4, round(w_ * f)), max(4, round(h * f)))
        small = cv2.resize(stacked, size, interpolation=cv2.INTER_AREA) if k else stacked
        small_guide = cv2.resize(guide, size, interpolation=cv2.INTER_AREA) if k else guide
        smooth = domain_transform(small, small_guide.reshape(size[1], size[0], -1), sigma_s * 4.0**k * f, sigma_r)
        if k:
            smooth = cv2.resize(smooth, (w_, h), interpolation=cv2.INTER_LINEAR)
        value = smooth[..., 0] / np.maximum(smooth[..., 1], 1e-12)
        alpha = np.clip(smooth[..., 1] / (0.25 * density), 0.0, 1.0)
        out = np.where(smooth[..., 1] > 1e-12, alpha * value + (1.0 - alpha) * out, out).astype(np.float32)
    return out


def estimate_coc(image: np.ndarray, work_side: int | None = 768, edge_snr: float = DEFAULT_EDGE_SNR,
                 gain: float = DEFAULT_GAIN, sigma_s: float | None = None, sigma_r: float = DEFAULT_SIGMA_R,
                 noise: float | None = None, quantile: float = DEFAULT_QUANTILE,
                 scales: tuple[tuple[float, float], ...] = SCALES, reach: float = DEFAULT_REACH,
                 intrinsic: float = DEFAULT_INTRINSIC, low: float = DEFAULT_LOW) -> np.ndarray:
    """The CoC (uniform-disc diameter, pixels of the input image) at every pixel, from the blurred image alone.

    image: float (H, W, 3) sRGB in [0, 1] (or (H, W) grey). work_side: images with a longer side above it are
    estimated at that size and the map scaled back (values in input pixels). sigma_s: spatial reach of the
    propagation in working pixels (default: DEFAULT_REACH_FRACTION of the longer side); sigma_r: its range std
    in sRGB units. The other options are those of `sparse_coc`; gain multiplies the result.
    Returns float32 (H, W), >= 0.
    """
    a = np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[2] != 3:  # grey with a channel axis, or RGBA
        a = a[..., :3] if a.shape[2] > 3 else a.mean(axis=2)
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 8:
        raise ValueError(f"estimate_coc: expected an (H, W, 3) or (H, W) image of at least 8 x 8, got {a.shape}")
    h, w = a.shape[:2]
    factor = 1.0
    if work_side is not None and max(h, w) > work_side:
        factor = work_side / max(h, w)
        a = cv2.resize(a, (max(8, round(w * factor)), max(8, round(h * factor))), interpolation=cv2.INTER_AREA)
    gray = luminance(a)
    sparse, weight = sparse_coc(gray, noise, edge_snr, tuple(map(tuple, scales)), quantile, reach, intrinsic, low)
    guide = np.clip(a, 0.0, 1.0) if a.ndim == 3 else np.clip(a, 0.0, 1.0)[..., None]
    spatial = DEFAULT_REACH_FRACTION * max(a.shape[:2]) if sigma_s is None else sigma_s
    dense = propagate(sparse, weight, guide, spatial, sigma_r)
    coc = np.clip(dense * (gain / factor), 0.0, None)
    if factor != 1.0:
        coc = cv2.resize(coc, (w, h), interpolation=cv2.INTER_LINEAR)
    return coc.astype(np.float32)
