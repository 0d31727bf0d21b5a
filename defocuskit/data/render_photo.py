"""The thin-lens renderer's core: a sharp linear-light image and a signed CoC map in, a defocused shot out.

`render_coc` is what `render.render_defocus` (metric depth + camera) and the `--render` source (real
photographs with relative depth: CoC_px = k / N * signed_relative_coc, k the CoC scale in pixels at f/1)
both call.

Layers. The signed CoC range is cut into layers at most `layer_step_px` apart (at most `max_layers`);
every pixel is shared between its two neighbouring layers (linear weights), so the blur changes
smoothly with depth instead of in steps. Layers are blurred by the disc PSF of their CoC and composited
back to front with the premultiplied "over" operator (Porter & Duff), smaller signed CoC = nearer. A
layer's alpha at a pixel is its share of what is left of that pixel's content at and behind it
(w_k / sum_{j >= k} w_j), so that unblurred layers composite back to the image exactly.

Occlusion. A layer has holes where all of a pixel's content is nearer. Blurring a layer with holes thins
it at the occluder's edge; normalising by the accumulated alpha (the former scheme) then let nearer,
partly transparent layers take over there (a dark notch beside an in-focus edge) and kept a blurred
foreground opaque up to its own edge. So every layer is first extended into its holes (push-pull
inpainting, Gortler et al. 1996; as Kraus & Strengert 2007 disocclude their sub-images) with its
colour and its share: the hidden background continues under the occluder, which is what a lens sees
round an in-focus edge (the rays to a pixel beside it pass the focal plane beside the occluder) and
what shows through the semi-transparent rim of a blurred foreground. The farthest layer so becomes
opaque everywhere. Known residual: a pixel shared between two layers counts fully in the farther one,
so a blurred edge whose depth falls halfway between two layers spreads more opaquely than its disc (a 6.5 px
foreground edge over an in-focus background: up to 0.11 of the colour step off; exact on a layer level).

Photometry. `restore_highlights` undoes the clipping of a tone-mapped photograph before blurring
(small near-white areas boosted in linear light, so that a clipped specular point spreads into a
bright bokeh disc instead of a dim grey one; `spread_highlights` keeps that light to what the CoC spreads,
so what stays sharp is the photo's); `add_veil` is the lens's veiling glare, stray light spread over
the frame that grows as the aperture opens (off by default); `add_noise` is Poisson-Gaussian sensor noise;
`encode` is the camera's output: sRGB tone curve, optionally a JPEG round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from defocuskit.imaging.optics import PSF_SAMPLINGS, disc_psf, layer_grid, layer_index
from defocuskit.io.images import linear_to_srgb, srgb_to_linear

MAX_LAYERS = 48
LAYER_STEP_PX = 1.0  # largest CoC difference between neighbouring layers
COMPOSITING = ("extend", "normalise")
HIGHLIGHT_EXTENT = 0.02  # neighbourhood (share of the longer side) in which a clipped area counts as large


@dataclass(frozen=True)
class SensorNoise:
    """Poisson-Gaussian sensor noise: photon count at full scale, and read-noise std (linear units)."""

    photons_at_white: float = 4000.0
    read_sigma: float = 0.002


def layer_levels(coc: np.ndarray, max_layers: int = MAX_LAYERS,
                 step_px: float = LAYER_STEP_PX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer CoCs (ascending signed, i.e. near to far), each pixel's lower layer index and its weight on the next."""
    if max_layers < 1:
        raise ValueError(f"max_layers must be >= 1, got {max_layers}")
    lo, hi = float(coc.min()), float(coc.max())
    if hi - lo < 1e-3 or max_layers == 1:
        return np.array([0.5 * (lo + hi)]), np.zeros(coc.shape, np.int64), np.zeros(coc.shape, np.float32)
    n = max(2, int(max_layers if step_px <= 0 else min(max_layers, np.ceil((hi - lo) / step_px) + 1)))
    levels = layer_grid(lo, hi, n)  # the focal plane (CoC 0) a layer of its own where the map spans it
    i0, frac = layer_index(coc.astype(np.float64), levels)
    return levels, i0, np.clip(frac, 0.0, 1.0).astype(np.float32)


def _push_pull(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Fill: `c` (H, W, C) premultiplied by coverage `a` (H, W) in [0, 1] -> c + (1 - a) * (coarse estimate)."""
    h, w = a.shape
    if min(h, w) <= 4:
        total = float(a.sum())
        mean = c.reshape(-1, c.shape[2]).sum(0) / total if total > 1e-8 else np.zeros(c.shape[2], np.float32)
        return c + (1.0 - a)[..., None] * mean.astype(np.float32)
    c2 = cv2.pyrDown(c)
    a2 = cv2.pyrDown(a)
    if c2.ndim == 2:
        c2 = c2[..., None]
    boosted = np.minimum(1.0, 4.0 * a2)  # a coarse pixel with some data counts as known (push-pull)
    c2 = c2 * (boosted / np.maximum(a2, 1e-8))[..., None]
    up = cv2.pyrUp(_push_pull(c2.astype(np.float32), boosted.astype(np.float32)), dstsize=(w, h))
    if up.ndim == 2:
        up = up[..., None]
    return c + (1.0 - a)[..., None] * up


def render_coc(rgb_linear: np.ndarray, coc_px: np.ndarray, max_layers: int = MAX_LAYERS,
               layer_step_px: float = LAYER_STEP_PX, compositing: str = "extend", psf: str = "area") -> np.ndarray:
    """Defocus a linear RGB image (values may exceed 1) by a signed CoC map in pixels (negative = in front of
    the focal plane); returns float32 linear RGB, not clipped, without noise.

    `compositing`: "extend" (layers extended behind their occluders, module docstring) or "normalise", the
    former scheme (`max_layers` levels at least 0.25 px apart, plain "over", divided by the accumulated alpha),
    which `imaging.lens_blur.DefocusOperator(model="over")` reproduces exactly. `psf`: the disc's sampling on the
    pixel grid (`optics.disc_psf`: "area", or "band" limited, which blurs discs of 1 px and less too)."""
    if rgb_linear.ndim != 3 or rgb_linear.shape[2] != 3:
        raise ValueError(f"render: rgb must be (H, W, 3), got {rgb_linear.shape}")
    if coc_px.shape != rgb_linear.shape[:2]:
        raise ValueError(f"render: CoC/depth map {coc_px.shape} does not match image {rgb_linear.shape[:2]}")
    if not np.all(np.isfinite(coc_px)):
        raise ValueError("render: CoC map must be finite everywhere")
    widest, side = float(np.abs(coc_px).max(initial=0.0)), max(coc_px.shape)
    if widest > 2 * side:  # its disc's kernel alone would take (widest px)^2 floats
        raise ValueError(f"render: a CoC of {widest:.0f} px, more than twice the image's long side ({side} px): no "
                         "camera blurs that much; check the depth units and the lens settings")
    if compositing not in COMPOSITING:
        raise ValueError(f"render: compositing must be one of {', '.join(COMPOSITING)}, got {compositing!r}")
    if psf not in PSF_SAMPLINGS:
        raise ValueError(f"render: psf must be one of {', '.join(PSF_SAMPLINGS)}, got {psf!r}")
    rgb = rgb_linear.astype(np.float32)
    if compositing == "normalise":
        span = float(coc_px.max() - coc_px.min())
        max_layers, layer_step_px = int(min(max_layers, np.ceil(span / 0.25) + 1)), 0.0
    levels, i0, frac = layer_levels(coc_px, max_layers, layer_step_px)
    n = len(levels)
    if n == 1:
        return _blur(rgb, abs(float(levels[0])), psf)
    colour = np.zeros_like(rgb)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    behind = np.zeros(rgb.shape[:2], np.float32)  # weight of each pixel's content at or behind the current layer
    for k in range(n - 1, -1, -1):  # back to front
        weight = (np.where(i0 == k, 1.0 - frac, 0.0) + np.where(i0 + 1 == k, frac, 0.0)).astype(np.float32)
        behind += weight
        if not weight.any():
            continue
        if compositing == "normalise":
            layer = np.concatenate([rgb * weight[..., None], weight[..., None]], axis=2)
        else:
            known = behind > 1e-6  # elsewhere all of the pixel's content is nearer: a hole of this layer
            a = np.where(known, weight / np.maximum(behind, 1e-6), 0.0).astype(np.float32)  # share of what is left
            own = np.concatenate([rgb * a[..., None], a[..., None]], axis=2)
            layer = own if known.all() else _push_pull(own, known.astype(np.float32))  # extend behind occluders
        layer = _blur(layer, abs(float(levels[k])), psf)
        a = np.clip(layer[..., 3], 0.0, 1.0)
        colour = layer[..., :3] + (1.0 - a)[..., None] * colour  # Porter & Duff "over", premultiplied
        alpha = a + (1.0 - a) * alpha
    return (colour / np.maximum(alpha, 1e-6)[..., None]).astype(np.float32)


def _blur(x: np.ndarray, diameter: float, psf: str = "area") -> np.ndarray:
    if diameter <= (1.0 if psf == "area" else 0.0):
        return x
    return cv2.filter2D(x, -1, disc_psf(diameter, sampling=psf), borderType=cv2.BORDER_REFLECT)


def restore_highlights(rgb_linear: np.ndarray, threshold: float = 0.96, gain: float = 8.0,
                       extent: float = HIGHLIGHT_EXTENT) -> np.ndarray:
    """Expand clipped highlights of a tone-mapped photo in linear light: a pixel whose brightest sRGB channel
    is above `threshold` is scaled up smoothly, by up to `gain` where it is fully clipped (inverse tone mapping
    of the shoulder that the camera's curve and the 8-bit clip flattened), so that a clipped point light
    spreads into a bright bokeh disc. Only small highlights are expanded: the boost fades out where such
    pixels fill more than half of a Gaussian neighbourhood `extent` x the longer side wide (an overcast sky or
    a white wall clips because it is a little too bright, not 8x too bright; boosting it spreads false glow:
    on the real stacks a threshold of 0.9 or no such fade cost up to 4 dB, docs/benchmarks.md)."""
    if gain <= 1.0:
        return rgb_linear.astype(np.float32)
    peak = linear_to_srgb(np.clip(rgb_linear, 0.0, 1.0)).max(axis=2)
    t = np.clip((peak - threshold) / max(1e-6, 1.0 - threshold), 0.0, 1.0)
    clipped = (peak >= threshold).astype(np.float32)
    if clipped.any():
        density = cv2.GaussianBlur(clipped, (0, 0), max(1.0, extent * max(rgb_linear.shape[:2])))
        t = t * np.clip(1.0 - 2.0 * density, 0.0, 1.0)
    return (rgb_linear * (1.0 + (gain - 1.0) * t * t)[..., None]).astype(np.float32)


def spread_highlights(linear: np.ndarray, restored: np.ndarray, coc_px: np.ndarray) -> np.ndarray:
    """The image to defocus by the signed `coc_px`: the photo (`linear`) plus its restored highlights' extra light
    (`restored` - `linear`) where the CoC spreads it (none at |CoC| <= 1 px, a delta, all from 2 px). Where a pixel
    stays sharp, the sensor's clip gives the restored value back as the photo's only where every channel was white:
    a near-white highlight in focus (250, 140, 140) would come out (255, 153, 153), not as the reference shows it."""
    share = np.clip(np.abs(coc_px) - 1.0, 0.0, 1.0)[..., None]
    return (linear + (restored - linear) * share).astype(np.float32)


def render_shot(linear: np.ndarray, restored: np.ndarray, coc_px: np.ndarray, **options: Any) -> np.ndarray:
    """`render_coc` (its keyword `options`) of the photo `linear` by the signed `coc_px`, with the light of its
    restored highlights (`restored`, `restore_highlights`) where the CoC spreads it (`spread_highlights`)."""
    return render_coc(spread_highlights(linear, restored, coc_px), coc_px, **options)


def veil_fraction(veil_at_f1: float, f_number: float) -> float:
    """Share of the light a lens scatters as veiling glare at f/N: `veil_at_f1` / N^2 (stray light from the
    aperture's rim and aberrations grows with the aperture's area), at most one half."""
    return float(min(0.5, max(0.0, veil_at_f1) / float(f_number) ** 2))


def added_veil(veil_at_f1: float, f_number: float, ref_f_number: float) -> float:
    """The glare share to add to a photo shot at `ref_f_number` to make it f/N: its own share is already in it."""
    return max(0.0, veil_fraction(veil_at_f1, f_number) - veil_fraction(veil_at_f1, ref_f_number))


def add_veil(rgb_linear: np.ndarray, fraction: float) -> np.ndarray:
    """Veiling glare in linear light: that share of each channel's light spread evenly over the frame,
    (1 - v) x + v mean(x) (uniform stray light, the model of ISO 9358's veiling glare index); lifts the shadows,
    keeps every channel's mean."""
    if fraction <= 0.0:
        return rgb_linear.astype(np.float32)
    mean = rgb_linear.reshape(-1, rgb_linear.shape[-1]).mean(axis=0) if rgb_linear.ndim == 3 else rgb_linear.mean()
    return ((1.0 - fraction) * rgb_linear + fraction * mean).astype(np.float32)


def add_noise(x: np.ndarray, rng: np.random.Generator, noise: SensorNoise | None) -> np.ndarray:
    """Clip to the sensor's range and add Poisson (shot) and Gaussian (read) noise, in linear light."""
    out = np.clip(x, 0.0, 1.0)
    if noise is not None:
        photons = rng.poisson(out * noise.photons_at_white) / noise.photons_at_white
        out = np.clip(photons + rng.normal(0.0, noise.read_sigma, out.shape), 0.0, 1.0)
    return out.astype(np.float32)


def encode(rgb_linear: np.ndarray, jpeg_quality: int | None = None) -> np.ndarray:
    """The camera's output: sRGB tone curve, float32 in [0, 1]; with `jpeg_quality` an 8-bit JPEG round trip."""
    srgb = linear_to_srgb(np.clip(rgb_linear, 0.0, 1.0))
    if jpeg_quality is None:
        return srgb
    bgr = cv2.cvtColor(np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def render_photo(srgb: np.ndarray, coc_px: np.ndarray, rng: np.random.Generator | None = None,
                 noise: SensorNoise | None = None, highlights: float = 8.0, jpeg_quality: int | None = None,
                 max_layers: int = MAX_LAYERS) -> np.ndarray:
    """A tone-mapped photo (sRGB float in [0, 1]) defocused by a signed CoC map: decode to linear light,
    restore highlights (gain `highlights`, 1 = off), render, clip, add noise, encode (sRGB float [0, 1])."""
    linear = srgb_to_linear(np.clip(srgb, 0.0, 1.0))
    out = render_shot(linear, restore_highlights(linear, gain=highlights), coc_px, max_layers=max_layers)
    if noise is not None and rng is None:
        raise ValueError("render_photo: noise needs an rng")
    return encode(add_noise(out, rng, noise), jpeg_quality)
