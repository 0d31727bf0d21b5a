"""Built-in synthetic aperture stacks: thin-lens rendering of the photographs shipped inside scikit-image.

Scenes. The sharp colour photographs that scikit-image installs with itself (no download):
astronaut, chelsea, coffee, rocket, camera (greyscale, replicated to RGB) and the Middlebury 2014
motorcycle stereo pair (left and right views). Depth:

- motorcycle: metric depth from its real ground-truth disparity with the Middlebury calibration
  that scikit-image documents for the shipped 4x-downsampled images (Z = f * B / (d + doffs)).
  Pixels without ground truth (occlusions) take the farther of their nearest valid neighbours on
  the same scanline (occluded pixels belong to the background). The right view's disparity is the
  left one forward-warped with a z-buffer.
- the others: generated layered depth. SLIC superpixels snap three fronto-parallel structures to
  the image: a ground plane (inverse depth linear in the row below a seeded horizon, a far wall
  above it), a seeded central "subject" ellipse and a smaller off-centre "object" ellipse in
  between. Every superpixel takes the depth of the structure its centroid falls in; the edges between
  superpixels are then feathered.

Variants. Seven photographs are too few to train on, so every photograph also gives
`N_VARIANTS - 1` seeded variants (`<name>_v1`, ...): a random crop (55-85 % of each side), a
random horizontal flip, a new depth layout and a new focus choice (subject, object or background
for layered scenes; a random depth percentile for the motorcycle). With 7 photographs and
N_VARIANTS = 4 the set has 28 scenes.

Camera. An APS-C sensor (23.5 mm wide) imaged onto the rendered width, i.e. the pixel pitch grows
as the image shrinks, so the CoC in pixels is that of the full photograph scaled to the image:
50 mm lens focused at about 1 m for the layered scenes, 85 mm for the motorcycle (its depth spans
only 2-5 m). At 256 px the background CoC at f/1.4 is about 10-20 px and falls as 1/N.

Rendering (`render_photo.render_coc`). Occlusion-aware layered compositing in linear light: the scene
is split into depth layers by signed CoC (at most 1 px apart, soft assignment between neighbouring
layers), each layer is extended behind its occluders (push-pull inpainting of the hidden background),
its premultiplied colour and alpha are blurred by the disc PSF of that layer's CoC, and the layers are
composited back to front with the "over" operator (in the manner of Hasinoff & Kutulakos; Kraus &
Strengert 2007; Wadhwa et al. 2018). The layered depth's superpixel edges are feathered (a Gaussian of
EDGE_SOFTNESS px at 256 px on inverse depth) so that focus edges are not pixel staircases. Diffraction
is ignored. Sensor noise is Poisson-Gaussian at a fixed exposure level for every aperture (exposure
compensated by shutter time).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from defocuskit.data.render_photo import MAX_LAYERS, SensorNoise, add_noise, render_coc
from defocuskit.imaging.optics import pixel_pitch_um, signed_coc_diameter_mm
from defocuskit.io.images import srgb_to_linear

SENSOR_WIDTH_MM = 23.5  # APS-C
FOCAL_LENGTH_MM = 50.0  # layered scenes
MOTORCYCLE_FOCAL_LENGTH_MM = 85.0
# Middlebury 2014 "Motorcycle", calibration of the 4x-downsampled images shipped with scikit-image.
MIDDLEBURY_FOCAL_PX = 994.978
MIDDLEBURY_BASELINE_MM = 193.001
MIDDLEBURY_DOFFS_PX = 31.086

PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "camera", "motorcycle_left", "motorcycle_right")
EDGE_SOFTNESS = 1.5  # px at 256 px: Gaussian feathering of the layered depth's superpixel edges
N_VARIANTS = 4  # the photograph itself plus 3 seeded variants


@dataclass(frozen=True)
class Scene:
    """A sharp scene with metric depth and the camera it is rendered with."""

    name: str
    rgb: np.ndarray  # float32 linear RGB in [0, 1], (H, W, 3)
    depth_m: np.ndarray  # float32 (H, W), metres
    focus_distance_m: float
    focal_length_mm: float
    origin: str  # where the photograph comes from, e.g. "skimage.data.astronaut"
    depth_source: str  # "disparity" or "layered"


def stable_hash(text: str) -> int:
    """A process-independent 63-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def builtin_scene_names() -> list[str]:
    """The names of every built-in scene, in a fixed order (independent of size and seed)."""
    return [photo if k == 0 else f"{photo}_v{k}" for photo in PHOTOS for k in range(N_VARIANTS)]


def photo_of(scene_name: str) -> str:
    """The photograph a built-in scene is made from (variants share it)."""
    base = scene_name.rsplit("_v", 1)[0] if "_v" in scene_name else scene_name
    if base not in PHOTOS:
        raise ValueError(f"unknown built-in scene {scene_name!r}; known photographs: {', '.join(PHOTOS)}")
    return base


def _fill_disparity(disp: np.ndarray) -> np.ndarray:
    """Fill non-finite / non-positive disparity with the smaller (farther) of the nearest valid values on its row."""
    valid = np.isfinite(disp) & (disp > 0)
    if not valid.any():
        raise ValueError("motorcycle disparity has no valid pixel")
    h, w = disp.shape
    cols = np.broadcast_to(np.arange(w), (h, w))
    left_idx = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    safe = np.where(valid, disp, np.inf)
    left = np.where(left_idx >= 0, safe[rows, np.clip(left_idx, 0, w - 1)], np.inf)
    right = np.where(right_idx < w, safe[rows, np.clip(right_idx, 0, w - 1)], np.inf)
    filled = np.where(valid, disp, np.minimum(left, right))
    if not np.isfinite(filled).all():  # rows without any valid pixel: take the farthest valid disparity
        filled = np.where(np.isfinite(filled), filled, disp[valid].min())
    return filled.astype(np.float32)


def _right_disparity(disp_left: np.ndarray) -> np.ndarray:
    """Forward-warp the left disparity to the right view (x_r = x_l - d), nearest surface wins."""
    h, w = disp_left.shape
    out = np.full(h * w, -np.inf)
    ys, xs = np.nonzero(np.isfinite(disp_left))
    d = disp_left[ys, xs]
    xr = np.rint(xs - d).astype(np.int64)
    keep = (xr >= 0) & (xr < w)
    np.maximum.at(out, ys[keep] * w + xr[keep], d[keep])
    out = out.reshape(h, w)
    return np.where(np.isfinite(out), out, np.nan).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _photo(photo: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The shipped photograph (uint8 sRGB, H x W x 3) and its metric depth in metres (motorcycle only)."""
    import skimage.data

    if photo.startswith("motorcycle"):
        left, right, disp = skimage.data.stereo_motorcycle()
        if photo == "motorcycle_right":
            rgb, disp = right, _right_disparity(disp)
        else:
            rgb = left
        disp = _fill_disparity(disp)
        # Middlebury: Z = f * B / (d + doffs)
        depth = (MIDDLEBURY_FOCAL_PX * MIDDLEBURY_BASELINE_MM / (disp + MIDDLEBURY_DOFFS_PX) / 1000.0).astype(np.float32)
        rgb = np.ascontiguousarray(rgb)
        rgb.flags.writeable = depth.flags.writeable = False  # cached: shared by every caller
        return rgb, depth
    rgb = getattr(skimage.data, photo)()
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    rgb = np.ascontiguousarray(rgb[:, :, :3])
    rgb.flags.writeable = False  # cached: shared by every caller
    return rgb, None


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(arr, new, interpolation=interp)


def _ellipse_segments(cy: np.ndarray, cx: np.ndarray, centre: tuple[float, float], radii: tuple[float, float],
                      segments: np.ndarray) -> np.ndarray:
    """Superpixels whose centroid lies in the ellipse (normalised coordinates), at least the one at its centre."""
    inside = ((cy - centre[0]) / radii[0]) ** 2 + ((cx - centre[1]) / radii[1]) ** 2 <= 1.0
    h, w = segments.shape
    y = int(np.clip(centre[0] * (h - 1), 0, h - 1))
    x = int(np.clip(centre[1] * (w - 1), 0, w - 1))
    inside[segments[y, x]] = True
    return inside


def layered_depth(srgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Generated layered depth (metres) for a photograph: ground plane + far wall, object and subject layers.

    Returns the depth map and the depths of its layers {"subject", "object", "far"}.
    """
    from skimage.segmentation import slic

    h, w = srgb.shape[:2]
    segments = slic(srgb, n_segments=120, compactness=10, start_label=0, channel_axis=-1)
    n = int(segments.max()) + 1
    flat = segments.ravel()
    counts = np.maximum(np.bincount(flat, minlength=n), 1)
    yy, xx = np.mgrid[0:h, 0:w]
    cy = np.bincount(flat, weights=yy.ravel(), minlength=n) / counts / max(h - 1, 1)
    cx = np.bincount(flat, weights=xx.ravel(), minlength=n) / counts / max(w - 1, 1)

    far = rng.uniform(6.0, 20.0)
    near = rng.uniform(1.8, 3.0)
    horizon = rng.uniform(0.25, 0.6)
    t = np.clip((cy - horizon) / (1.0 - horizon), 0.0, 1.0)
    seg_depth = 1.0 / (1.0 / far + t * (1.0 / near - 1.0 / far))  # a plane: inverse depth linear in the row

    subject = rng.uniform(0.9, 1.4)
    obj = rng.uniform(1.6, 3.5)
    side = rng.choice([rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.9)])
    obj_mask = _ellipse_segments(cy, cx, (rng.uniform(0.45, 0.8), side),
                                 (rng.uniform(0.1, 0.2), rng.uniform(0.08, 0.16)), segments)
    subj_mask = _ellipse_segments(cy, cx, (0.5 + rng.normal(0, 0.07), 0.5 + rng.normal(0, 0.07)),
                                  (rng.uniform(0.22, 0.4), rng.uniform(0.18, 0.32)), segments)
    seg_depth = np.where(obj_mask, np.minimum(obj, seg_depth), seg_depth)
    seg_depth = np.where(subj_mask, subject, seg_depth)
    # Superpixel edges are pixel staircases: feather them (smooth inverse depth, a fraction of a CoC wide)
    # so that the render's focus edges are anti-aliased ramps, not stair-steps.
    inv = cv2.GaussianBlur((1.0 / seg_depth[segments]).astype(np.float32), (0, 0), EDGE_SOFTNESS * max(h, w) / 256)
    depth = (1.0 / inv).astype(np.float32)
    return depth, {"subject": float(subject), "object": float(obj), "far": float(far)}


def _crop_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """A variant's crop of an h x w photograph, (y0, x0, height, width): 55-85 % of each side, placed at random."""
    frac = rng.uniform(0.55, 0.85)
    ch, cw = int(h * frac), int(w * frac)
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


def native_side(name: str, seed: int) -> int:
    """The long side, in the photograph's own pixels, of what built-in scene `name` shows (its crop for a variant)."""
    photo = photo_of(name)
    h, w = _photo(photo)[0].shape[:2]
    if name == photo:
        return max(h, w)
    _, _, ch, cw = _crop_box(np.random.default_rng([seed, stable_hash(name)]), h, w)
    return max(ch, cw)


def builtin_scene(name: str, size: int, seed: int) -> Scene:
    """One built-in scene, longer side `size`, deterministic for (name, size, seed)."""
    if size < 16:
        raise ValueError(f"synthetic size must be at least 16 px, got {size}")
    photo = photo_of(name)
    if name != photo and name not in builtin_scene_names():
        raise ValueError(f"unknown built-in scene {name!r}")
    variant = name != photo
    rng = np.random.default_rng([seed, stable_hash(name)])
    srgb, depth = _photo(photo)
    if variant:
        y0, x0, ch, cw = _crop_box(rng, *srgb.shape[:2])
        srgb = srgb[y0:y0 + ch, x0:x0 + cw]
        depth = None if depth is None else depth[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            srgb = srgb[:, ::-1]
            depth = None if depth is None else depth[:, ::-1]
    linear = srgb_to_linear(srgb.astype(np.float32) / 255.0)  # resize in linear light
    rgb = np.clip(_resize(np.ascontiguousarray(linear), size), 0.0, 1.0).astype(np.float32)
    if depth is not None:
        inv = _resize(np.ascontiguousarray(1.0 / depth), size)  # average inverse depth (disparity-like)
        depth_m = (1.0 / inv).astype(np.float32)
        percentile = rng.uniform(5.0, 95.0) if variant else 10.0
        focus = float(np.percentile(depth_m, percentile))
        return Scene(name, rgb, depth_m, focus, MOTORCYCLE_FOCAL_LENGTH_MM,
                     "skimage.data.stereo_motorcycle", "disparity")
    small = _resize(np.ascontiguousarray(srgb), size)
    depth_m, layers = layered_depth(small, rng)
    choice = rng.choice(["subject", "subject", "subject", "object", "far"]) if variant else "subject"
    return Scene(name, rgb, depth_m, layers[str(choice)], FOCAL_LENGTH_MM, f"skimage.data.{photo}", "layered")


def render_defocus(
    rgb_linear: np.ndarray,
    depth_m: np.ndarray,
    f_number: float,
    focal_length_mm: float,
    focus_distance_m: float,
    pixel_pitch_um: float,
    rng: np.random.Generator,
    n_layers: int = MAX_LAYERS,
    noise: SensorNoise | None = SensorNoise(),
    compositing: str = "extend",
) -> tuple[np.ndarray, np.ndarray]:
    """Render a defocused shot in linear light; returns (blurred RGB float32 [0, 1], signed CoC diameter map in px:
    negative in front of the focal plane, positive behind it). `n_layers`: the most depth layers;
    `compositing`: see `render_photo.render_coc` ("normalise" is the former scheme, which
    `imaging.lens_blur.DefocusOperator` reproduces)."""
    if rgb_linear.ndim != 3 or rgb_linear.shape[2] != 3:
        raise ValueError(f"render_defocus: rgb must be (H, W, 3), got {rgb_linear.shape}")
    if depth_m.shape != rgb_linear.shape[:2]:
        raise ValueError(f"render_defocus: depth {depth_m.shape} does not match image {rgb_linear.shape[:2]}")
    if not np.all(np.isfinite(depth_m)) or np.any(depth_m <= 0):
        raise ValueError("render_defocus: depth must be finite and positive everywhere")
    if n_layers < 1:
        raise ValueError(f"render_defocus: n_layers must be >= 1, got {n_layers}")
    coc = signed_coc_diameter_mm(f_number, focal_length_mm, focus_distance_m, depth_m) * 1000.0 / pixel_pitch_um
    out = add_noise(render_coc(rgb_linear, coc.astype(np.float32), n_layers, compositing=compositing), rng, noise)
    return out, coc.astype(np.float32)


def scene_camera(scene: Scene, focal_length_mm: float | None = None, focus_distance_m: float | None = None,
                 pixel_pitch: float | None = None) -> dict[str, float]:
    """The camera a scene is rendered with (the scene's own unless overridden)."""
    return {
        "focal_length_mm": float(focal_length_mm or scene.focal_length_mm),
        "focus_distance_m": float(focus_distance_m or scene.focus_distance_m),
        "pixel_pitch_um": float(pixel_pitch or pixel_pitch_um(SENSOR_WIDTH_MM, scene.rgb.shape[1])),
        "sensor_width_mm": SENSOR_WIDTH_MM,
    }


def render_shot(
    scene: Scene,
    f_number: float,
    camera: dict,
    seed: int = 0,
    n_layers: int = MAX_LAYERS,
    noise: SensorNoise | None = SensorNoise(),
    compositing: str = "extend",
) -> tuple[np.ndarray, np.ndarray]:
    """One shot of a scene at `f_number` with `camera` (scene_camera); its noise stream depends only on
    (seed, scene, f-number), so a shot is the same whichever others are rendered, in whichever process."""
    rng = np.random.default_rng([seed, stable_hash(scene.name), int(round(float(f_number) * 100))])
    return render_defocus(scene.rgb, scene.depth_m, float(f_number), camera["focal_length_mm"],
                          camera["focus_distance_m"], camera["pixel_pitch_um"], rng, n_layers, noise, compositing)


def render_stack(
    scene: Scene,
    f_numbers: tuple[float, ...] | list[float],
    ref_f_number: float = 22.0,
    focal_length_mm: float | None = None,
    focus_distance_m: float | None = None,
    pixel_pitch_um: float | None = None,
    seed: int = 0,
    n_layers: int = MAX_LAYERS,
    noise: SensorNoise | None = SensorNoise(),
    compositing: str = "extend",
) -> dict:
    """Render a scene's aperture stack, deterministic for (scene, f-number, seed).

    Returns {"sharp": the reference shot at `ref_f_number` (through the same model, with noise),
    "sharp_coc": its CoC map, "shots": {f_number: (blurred, coc_px)}, "camera": parameters used}.
    """
    camera = scene_camera(scene, focal_length_mm, focus_distance_m, pixel_pitch_um)
    sharp, sharp_coc = render_shot(scene, ref_f_number, camera, seed, n_layers, noise, compositing)
    return {
        "sharp": sharp,
        "sharp_coc": sharp_coc,
        "shots": {float(n): render_shot(scene, n, camera, seed, n_layers, noise, compositing) for n in f_numbers},
        "camera": {**camera, "ref_f_number": float(ref_f_number)},
    }
