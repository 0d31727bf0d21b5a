"""Thin-lens optics: f-number -> circle of confusion, and defocus point-spread functions.

Used by the synthetic renderer, the evaluator (full-stop grouping) and the Wiener baseline.
Units: focal length and CoC in millimetres, distances in metres, pixel pitch in micrometres.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import j1

# Standard full stops (powers of sqrt(2), marked values as engraved on lenses), from f/0.7 to f/64: every f-number a
# shard may record (data.metadata.F_NUMBER_RANGE), so that none is put in a stop one or two away (f/64 was f/32).
FULL_STOPS: tuple[float, ...] = (0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.0, 16.0, 22.0, 32.0, 45.0, 64.0)

_SUPERSAMPLE = 8  # sub-pixel grid per axis used to anti-alias the disc PSF
BAND_PAD = 3  # px kept beyond the disc of a band-limited disc's ringing (MTF within 0.045 of the disc's)
PSF_SAMPLINGS = ("area", "band")  # disc_psf(sampling=...): area-sampled pillbox, or band-limited to the pixel grid
# defocus_psf(shape=...): the thin-lens pillbox, or a Gaussian of the same second moment (a deblurring step's
# kernel where the CoC is an estimate: its spectrum has no zeros to invert with the wrong sign)
PSF_SHAPES = ("disc", "gaussian")


def _check_positive(name: str, value: float | np.ndarray) -> None:
    if np.any(np.asarray(value) <= 0):
        raise ValueError(f"{name} must be positive, got {value!r}")


def _focus_and_focal_mm(focus_distance_m: float, focal_length_mm: float) -> tuple[float, float]:
    """(focus distance, focal length) in mm; the lens must focus beyond its focal length."""
    s, f = float(focus_distance_m) * 1000.0, float(focal_length_mm)
    if s <= f:
        raise ValueError(f"focus_distance_m ({focus_distance_m} m) must exceed the focal length ({f} mm)")
    return s, f


def signed_coc_diameter_mm(
    f_number: float, focal_length_mm: float, focus_distance_m: float, depth_m: float | np.ndarray
) -> float | np.ndarray:
    """Signed blur-circle diameter on the sensor: negative in front of the focus plane, positive behind it. A focus
    or a depth at infinity (np.inf) gives the limit: focused at infinity, c = -A f / d; a depth at infinity,
    A f / (s - f) (coc_at_infinity_px)."""
    _check_positive("f_number", f_number)
    _check_positive("focal_length_mm", focal_length_mm)
    _check_positive("depth_m", depth_m)
    s, f = _focus_and_focal_mm(focus_distance_m, focal_length_mm)
    d = np.asarray(depth_m, dtype=np.float64) * 1000.0
    aperture = f / float(f_number)  # entrance-pupil diameter A = f / N
    # Thin lens (1/f = 1/s + 1/s'): blur circle c = A * (d - s) / d * f / (s - f); its limits at infinity:
    # c = -A f / d focused at infinity (s -> inf), c = A f / (s - f) for a depth at infinity (d -> inf)
    if np.isinf(s):
        c = -aperture * f / d
    else:
        with np.errstate(invalid="ignore"):
            c = np.where(np.isinf(d), aperture * f / (s - f), aperture * (d - s) / d * f / (s - f))
    return float(c) if c.ndim == 0 else c


def coc_diameter_mm(
    f_number: float, focal_length_mm: float, focus_distance_m: float, depth_m: float | np.ndarray
) -> float | np.ndarray:
    """Circle-of-confusion diameter (mm on the sensor) of a point at `depth_m`, lens focused at `focus_distance_m`."""
    c = signed_coc_diameter_mm(f_number, focal_length_mm, focus_distance_m, depth_m)
    return abs(c) if isinstance(c, float) else np.abs(c)


def coc_diameter_px(
    f_number: float,
    focal_length_mm: float,
    focus_distance_m: float,
    depth_m: float | np.ndarray,
    pixel_pitch_um: float,
) -> float | np.ndarray:
    """Circle-of-confusion diameter in pixels for a sensor of the given pixel pitch."""
    _check_positive("pixel_pitch_um", pixel_pitch_um)
    return coc_diameter_mm(f_number, focal_length_mm, focus_distance_m, depth_m) * 1000.0 / float(pixel_pitch_um)


def coc_at_infinity_px(
    f_number: float, focal_length_mm: float, focus_distance_m: float, pixel_pitch_um: float
) -> float:
    """CoC diameter in pixels of a background at infinity: the limit A * f / (s - f) of the thin-lens formula."""
    _check_positive("f_number", f_number)
    _check_positive("pixel_pitch_um", pixel_pitch_um)
    s, f = _focus_and_focal_mm(focus_distance_m, focal_length_mm)
    return (f / float(f_number)) * f / (s - f) * 1000.0 / float(pixel_pitch_um)


def bound_coc(coc: np.ndarray, f_number: float, bound: float, long_side: int) -> np.ndarray:
    """A CoC map (pixels) cut to at most `bound` x `long_side` / `f_number` pixels. The thin lens gives a point's
    blur circle c = A (d - s) / d f / (s - f) with A = f / N (signed_coc_diameter_mm), so a scene's CoC at f/N is its
    CoC at f/1 over N; `bound` is the largest CoC at f/1 a camera and its scenes give, as a fraction of the image's
    long side (a defocus-map model's `inference.coc_bound`: its training shards' largest CoC x f-number)."""
    _check_positive("f_number", f_number)
    _check_positive("bound", bound)
    return np.minimum(coc, np.float32(bound * long_side / float(f_number))).astype(np.float32)  # c(N) = c(1) / N


def pixel_pitch_um(sensor_width_mm: float, image_width_px: int) -> float:
    """Pixel pitch (micrometres) of a sensor of this width imaged onto `image_width_px` pixels."""
    _check_positive("sensor_width_mm", sensor_width_mm)
    _check_positive("image_width_px", image_width_px)
    return float(sensor_width_mm) * 1000.0 / float(image_width_px)


def sensor_width_across(camera_sensor_mm: float | None, height: int, width: int) -> float | None:
    """The width in mm that an image of `height` x `width` pixels covers, shot by a camera whose sensor width
    (`camera_sensor_mm`: its long side, as EXIF and camera specifications give it) spans the photo's long side:
    that width for a landscape or square image, that width x `width` / `height` for a portrait one (a camera held
    upright, turned by EXIF orientation or in its pixels). None stays None (unknown)."""
    if height <= width:
        return camera_sensor_mm
    return sensor_width_of_crop(camera_sensor_mm, width, height, digits=4)


def sensor_width_of_crop(sensor_width_mm: float | None, crop_width: int, width: int, digits: int = 6) -> float | None:
    """The width in mm that a crop `crop_width` pixels wide covers of an image `width` pixels wide covering
    `sensor_width_mm` (a training patch's: the pixel pitch stays the image's), rounded to `digits`. None stays None
    (unknown)."""
    if sensor_width_mm is None:
        return None
    _check_positive("width", width)
    return round(float(sensor_width_mm) * crop_width / width, digits)


# Assumptions where the metadata is silent (stated wherever they are used).
DEFAULT_FOCAL_LENGTH_MM = 50.0
DEFAULT_FOCUS_DISTANCE_M = 2.0
DEFAULT_SENSOR_WIDTH_MM = 36.0  # full-frame width: pixel pitch = 36 mm / image width where the sensor is unknown

COC_FROM_METADATA = (
    "the thin-lens CoC of a background at infinity, optics.coc_at_infinity_px(f_number, focal_length_mm, "
    f"focus_distance_m, pitch), with focal length {DEFAULT_FOCAL_LENGTH_MM:g} mm and focus distance "
    f"{DEFAULT_FOCUS_DISTANCE_M:g} m where the metadata has none, and pitch = sensor_width_mm / image width where it "
    "is the metadata's (the width the image covers), or a camera's sensor width (one given; "
    f"{DEFAULT_SENSOR_WIDTH_MM:g} mm, full frame, where the metadata has none) / the photo's long side (a training "
    "patch's: the image it was cut from)"
)


def source_long_side(meta: Mapping[str, Any], height: int, width: int) -> int:
    """The long side in pixels of the photo a `height` x `width` sample shows: for a training patch (ingest --patch)
    the image it was cut from, as its metadata's `patch_of` records it; else the sample's own."""
    source = meta.get("patch_of")
    if isinstance(source, Mapping):
        sides = [source.get("height"), source.get("width")]
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
            return max(sides)
    return max(int(height), int(width))


def sensor_span_px(meta: Mapping[str, Any], height: int, width: int, given: bool = False) -> int:
    """How many pixels of a `height` x `width` image the sensor width coc_from_metadata reads in `meta` spans: the
    width where it is the sample's own `sensor_width_mm` (the width in mm its image covers, as ingest stores it); the
    photo's long side where it is a camera's, whose long side spans a photo's long side, portrait or landscape: one
    `given` over the metadata (eval's --sensor-width, deblur's and the API's, EXIF's) or DEFAULT_SENSOR_WIDTH_MM where
    the metadata has none. A training patch's photo is the image it was cut from (`source_long_side`)."""
    camera = given or "sensor_width_mm" in camera_of(meta)[1]
    return source_long_side(meta, height, width) if camera else int(width)


def coc_from_metadata(meta: Mapping[str, Any], width: int) -> float:
    """One CoC diameter (pixels) for a whole shot from its f-number and optics (see COC_FROM_METADATA), `width`
    pixels spanning its sensor width (sensor_span_px): the camera's own sensor width where `meta["sensor_width_mm"]`
    knows it, else DEFAULT_SENSOR_WIDTH_MM (36 mm, full frame: an APS-C camera or a phone then gets a CoC too small
    by its crop factor)."""
    f_number = meta.get("f_number")
    if f_number is None:
        raise ValueError(f"sample '{meta.get('scene') or meta.get('key') or '?'}' has no f_number")
    used, _ = camera_of(meta)
    pitch = pixel_pitch_um(used["sensor_width_mm"], width)
    return float(coc_at_infinity_px(float(f_number), used["focal_length_mm"], used["focus_distance_m"], pitch))


def camera_of(meta: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """The sensor width, focal length and focus distance coc_from_metadata uses for `meta`, and the keys of those
    that are its defaults (36 mm, 50 mm, 2 m: the metadata has none, or a focus not beyond the focal length)."""
    defaults: list[str] = []
    sensor = meta.get("sensor_width_mm")
    known = isinstance(sensor, (int, float)) and not isinstance(sensor, bool) and bool(np.isfinite(sensor))
    if not (known and sensor > 0):
        sensor = DEFAULT_SENSOR_WIDTH_MM
        defaults.append("sensor_width_mm")
    focal = meta.get("focal_length_mm")
    if not focal:
        focal = DEFAULT_FOCAL_LENGTH_MM
        defaults.append("focal_length_mm")
    distance = meta.get("focus_distance_m")
    if not distance or float(distance) * 1000.0 <= float(focal):
        distance = DEFAULT_FOCUS_DISTANCE_M
        defaults.append("focus_distance_m")
    return {"sensor_width_mm": float(sensor), "focal_length_mm": float(focal),
            "focus_distance_m": float(distance)}, defaults


def full_stop(f_number: float) -> float:
    """The nearest standard full stop, measured in stops (log2 of N^2), e.g. 1.8 -> 2.0, 3.5 -> 4.0."""
    _check_positive("f_number", f_number)
    stops = np.log2(np.asarray(FULL_STOPS) ** 2)
    return FULL_STOPS[int(np.argmin(np.abs(stops - np.log2(float(f_number) ** 2))))]


def defocus_psf(diameter_px: float, shape: str = "disc") -> np.ndarray:
    """The PSF of a CoC of this diameter (pixels) in one of PSF_SHAPES: `disc_psf` (area-sampled), or `gaussian_psf`
    of the disc's second moment (sigma = diameter / 4: a disc of radius r has variance r^2 / 4 per axis). A diameter
    of at most 1 pixel gives a delta in both."""
    if shape not in PSF_SHAPES:
        raise ValueError(f"defocus_psf: shape must be one of {', '.join(PSF_SHAPES)}, got {shape!r}")
    if shape == "disc" or diameter_px <= 1.0:
        return disc_psf(diameter_px)
    return gaussian_psf(diameter_px / 4.0)


def psf_size(diameter_px: float) -> int:
    """The odd kernel size that holds a disc of this diameter (1 for a delta)."""
    if diameter_px <= 1.0:
        return 1
    return 2 * int(np.ceil(diameter_px / 2.0)) + 1


def disc_psf(diameter_px: float, size: int | None = None, sampling: str = "area") -> np.ndarray:
    """Uniform-disc (pillbox) PSF of the given diameter, summing to 1.

    sampling "area": the disc's area in each pixel (supersampled); a diameter of at most 1 pixel gives a delta.
    sampling "band": `_band_disc_psf`, the disc band-limited to the pixel grid. `size` (odd) pads or crops the
    kernel; by default it is the smallest odd size that holds the disc (for "band", BAND_PAD px more each side).
    """
    if not np.isfinite(diameter_px) or diameter_px < 0:
        raise ValueError(f"disc_psf: diameter must be finite and >= 0, got {diameter_px}")
    if sampling not in PSF_SAMPLINGS:
        raise ValueError(f"disc_psf: sampling must be one of {', '.join(PSF_SAMPLINGS)}, got {sampling!r}")
    if sampling == "band":
        return _band_disc_psf(diameter_px, size)
    size = psf_size(diameter_px) if size is None else int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"disc_psf: size must be odd and positive, got {size}")
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    if diameter_px <= 1.0:
        kernel[c, c] = 1.0
        return kernel
    r = diameter_px / 2.0
    # Pixel (i, j) covers [j - c - 1/2, j - c + 1/2]; sample it at S x S sub-pixel centres.
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    coords = (np.arange(size) - c)[:, None] + sub[None, :]  # (size, S)
    y = coords[:, None, :, None]
    x = coords[None, :, None, :]
    inside = (y**2 + x**2) <= r * r  # (size, size, S, S)
    kernel = inside.mean(axis=(2, 3)).astype(np.float32)
    total = kernel.sum()
    if total <= 0:  # disc smaller than the sub-pixel grid near the cropped centre
        kernel[:] = 0.0
        kernel[c, c] = 1.0
        return kernel
    return kernel / total


def disc_mtf(diameter_px: float, rho: np.ndarray) -> np.ndarray:
    """The uniform disc's MTF at radial frequencies `rho` (cycles per pixel): 2 J1(pi d rho) / (pi d rho)."""
    x = np.pi * float(diameter_px) * np.asarray(rho, np.float64)
    safe = np.where(x > 0, x, 1.0)
    return np.where(x > 0, 2.0 * j1(safe) / safe, 1.0)


def _band_disc_psf(diameter_px: float, size: int | None = None) -> np.ndarray:
    """The uniform disc band-limited to the pixel grid, summing to 1: the kernel whose frequency response is the
    disc's MTF (`disc_mtf`) up to the Nyquist frequency, the exact defocus of a band-limited image. The area-sampled
    disc leaves a disc of 1 px or less a delta (a 1 px disc keeps 0.72 of the contrast at Nyquist, not 1) and blurs
    1.5-2.5 px discs too much at mid frequencies; from about 3 px the two agree within a few per cent. Negative
    ringing of a few per cent lies just outside the disc. `size` (odd): default the disc's plus BAND_PAD each side."""
    size = psf_size(max(float(diameter_px), 1.0 + 1e-6)) + 2 * BAND_PAD if size is None else int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"disc_psf: size must be odd and positive, got {size}")
    n = max(64, 4 * size)
    freq = np.fft.fftfreq(n)
    spectrum = disc_mtf(diameter_px, np.hypot(freq[:, None], freq[None, :]))
    full = np.fft.fftshift(np.fft.ifft2(spectrum).real)
    c, h = n // 2, size // 2
    kernel = full[c - h:c + h + 1, c - h:c + h + 1]
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_psf(sigma_px: float, size: int | None = None) -> np.ndarray:
    """Isotropic Gaussian PSF (odd size, default 2 * ceil(3 sigma) + 1), summing to 1; sigma 0 gives a delta."""
    if not np.isfinite(sigma_px) or sigma_px < 0:
        raise ValueError(f"gaussian_psf: sigma must be finite and >= 0, got {sigma_px}")
    size = 2 * int(np.ceil(3.0 * sigma_px)) + 1 if size is None else int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_psf: size must be odd and positive, got {size}")
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    if sigma_px == 0:
        kernel[c, c] = 1.0
        return kernel
    ax = np.arange(size) - c
    g = np.exp(-(ax**2) / (2.0 * sigma_px**2))
    kernel = np.outer(g, g).astype(np.float32)
    return kernel / kernel.sum()


def layer_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """Signed CoC levels (px, ascending): `n` >= 2 evenly spaced from lo to hi, and CoC 0 as one more where the
    range lies across the focal plane (lo < 0 < hi) and has no level there, so that what lies in the focal plane is
    rendered sharp, not as a mix of a front and a back disc."""
    levels = np.linspace(lo, hi, n, dtype=np.float64)
    if lo < 0.0 < hi and np.abs(levels).min() > 1e-9 * (hi - lo):
        levels = np.sort(np.append(levels, 0.0))
    return levels


def layer_index(coc: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's lower level index i0 (0 .. L - 2) among ascending `levels` (L >= 2) and its weight on the next
    one, linear in CoC between the two."""
    i0 = np.searchsorted(levels[1:-1], coc, side="right")
    lower, upper = levels[i0], levels[i0 + 1]
    return i0.astype(np.int64), (coc - lower) / (upper - lower)
