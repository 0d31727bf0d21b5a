"""`--render DIR`: aperture stacks rendered from your own all-in-focus photos with depth maps.

Layout: `DIR/image/<stem>.*` (the photos; `input/` is read where there is no `image/`, so that a VABD or EBB
split folder, VABD/train, renders as shipped, from its f/16 references), `DIR/depth/<stem>.*` (their depth maps,
paired by stem) and optionally `DIR/focal/<stem>.*` (focal-plane masks, white = in focus), as VABD and EBB ship them.
A photo without a depth map, a depth map without a photo, an unreadable file, a hidden one (`._x.jpg`) and one in
a format no source reads (HEIC, AVIF, GIF, ...) or --render does not (a camera's RAW file) are reject lines naming
the file, as are subfolders of image/, depth/, focal/ holding images (`focal/focal/`); so are a depth map or mask
of another aspect ratio than its photo (a smaller copy is resized; another shape would be stretched) and a depth
map of one value where the focus is (no blur to render); a folder without `image/` or `depth/` is one layout error.

Depth (`opts.render_depth_kind`): "relative" (larger = farther, up to an affine map: what most monocular networks and
the fixtures' Spectral false-colour maps give), "inverse" (disparity: larger = nearer) or "metric" (metres = decoded
value x `render_metric_scale`; None: by the map's sample type, `metric_scale`; a metric map that no camera
photographs, as one in other units than read, is a reject line: `render_units`). Grey 8/16-bit images decode to value /
(2^bits - 1), false-colour maps (`render_depth_colormap`, "auto" = detected) to 0-1 (`imaging.depth.decode_depth`);
float TIFFs and `.npy` arrays are read as their values (`io.depth_files`).

Focus (`opts.render_focus`): "mask" (median depth under the focal mask), "sample" (a depth percentile drawn uniformly
in 5-95 per scene from (seed, stem)), a number (a depth value in the map's units; metres for metric depth, whatever
`render_metric_scale`; a reject line where far outside the map's depth: `render_units.check_metric_focus`, or for
relative and inverse depth its values: `check_relative_focus`), or "auto" (the mask where `focal/` has one, else
sampled).

Camera. Relative / inverse depth fixes the CoC only up to one scale: CoC_px(N) = k / N * c with c the signed relative
CoC (`imaging.depth.signed_relative_coc`) and k (`render_coc_scale`, pixels at f/1 at the rendered size) the scale; by
default k = DEFAULT_K_FRACTION x the longer side, the value fitted on the real VABD/EBB stacks
(`tools/calibrate_renderer.py`, docs/benchmarks.md). Metric depth uses the thin lens with `render_focal_length_mm` and
the camera's sensor `render_sensor_width_mm` wide across the photo's long side.

The photo is taken to be shot at `render_ref_f_number`: its own residual blur is already in it, so it is rendered with
the CoC that adds to it in quadrature, sign(c) * sqrt(CoC(N)^2 - CoC(ref)^2); `coc.png` / `cocsign.png` record the
shot's full signed CoC(N). Rendering (`render_photo`): sRGB -> linear, clipped highlights restored
(`render_highlights`), occlusion-aware layered defocus, veiling glare (`render_veil`: a share V / N^2 of the light
spread evenly, less the reference's own; `render_veil_spread`: V drawn per photo), clip, sensor noise
(`render_noise`), sRGB tone curve, optional JPEG (`render_jpeg_quality`). `sharp.png` is the photo through the same
tone pipeline (no added noise, no restored highlights: light that only the blur spreads, `spread_highlights`).
`--max-side` reduces photo and depth first (the CoC scale is per rendered pixel).

Per photo: one sample per f-number (`render_f_numbers`) plus one sharp-only sample; splits by a hash of the scene
(`opts.split_by`, as the other sources without official splits).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from defocuskit.data.metadata import empty_meta
from defocuskit.data.pairs import images_by_stem, key_part, list_images, relpath, split_for
from defocuskit.data.render import stable_hash
from defocuskit.data.render_photo import (
    SensorNoise,
    add_noise,
    add_veil,
    added_veil,
    encode,
    render_shot,
    restore_highlights,
)
from defocuskit.data.sample import RENDER_FOCUS_BY_MAP, IngestOptions, Rejected, RejectError, Sample, Task
from defocuskit.data.shards import COC_PNG_MAX_PX
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.raw import UNSUPPORTED_EXTENSIONS
from defocuskit.data.sources.render_units import (
    check_metric_depth,
    check_metric_focus,
    check_relative_focus,
    check_units,
    metric_scale,
    metric_unit_coc,
)
from defocuskit.imaging.depth import (
    DepthError,
    decode_depth,
    focus_value,
    signed_relative_coc,
)
from defocuskit.imaging.optics import sensor_width_across
from defocuskit.io.depth_files import ARRAY_EXTENSIONS, read_depth_file
from defocuskit.io.formats import RASTER_EXTENSIONS, ImageError
from defocuskit.io.images import as_rgb, from_float, is_monochrome, read_image, srgb_to_linear, to_float

NAME = "render"
TITLE = "photos with depth"
EXPECTED = "{image (or input),depth}/ (+ optional focal/), files paired by stem"
USES = "image/ (or input/), depth/, focal/"
CAMERA = "defocuskit thin-lens renderer"
# k / longer side: the CoC scale (px at f/1 per unit of relative CoC), the median of the 9 real stacks
# (VABD, EBB; 0.011-0.10 between them: a monocular depth map's units differ per scene)
DEFAULT_K_FRACTION = 0.043
FOCUS_PERCENTILES = (5.0, 95.0)
DEPTH_ARRAYS = (".npz", ".exr", ".pfm", ".h5", ".hdf5", ".mat")  # depth formats of other tools, not read
ASPECT_SLACK = 0.03  # a map's aspect ratio off its photo's (sides rounded to 14 or 32 px); more: another framing


def photo_folder(root: Path) -> str:
    """The photos' folder name: `image`, or VABD's and EBB's `input` (their f/16 references) without one."""
    return "input" if not (Path(root) / "image").is_dir() and (Path(root) / "input").is_dir() else "image"


def layout_problem(root: Path) -> str | None:
    """What keeps `root` from being a --render folder, or None; naming the subfolders that are one (VABD/ and EBB/
    hold train/ and test/), so the error says which folder to give."""
    root = Path(root)
    missing = _missing(root)
    if not missing:
        return None
    problem = f"no {' or '.join(m + '/' for m in missing)} folder"
    inside = layout.roots_inside(root, lambda d: "missing" if _missing(d) else None)
    if inside:
        problem += (f"; {', '.join(d.name + '/' for d in inside)} {'has' if len(inside) == 1 else 'each have'} "
                    f"that layout: give --render {inside[0]}")
    return problem


def _missing(root: Path) -> list[str]:
    return [name for name in (photo_folder(root), "depth") if not (root / name).is_dir()]


def f_number_tag(f_number: float) -> str:
    """Key-safe f-number: 2.8 -> "f2_8" (no dots in WebDataset keys)."""
    return "f" + f"{float(f_number):g}".replace(".", "_")


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """Per photo with a depth map: one task per f-number and a sharp-only task."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    f_numbers = tuple(float(n) for n in opts.render_f_numbers)
    if not f_numbers or any(not np.isfinite(n) or n <= 0 for n in (*f_numbers, opts.render_ref_f_number)):
        raise ValueError(f"render f-numbers must be positive, got {f_numbers} (reference {opts.render_ref_f_number})")
    photos = photo_folder(root)
    yield from layout.unused_images(NAME, root, (photos, "depth", "focal"), USES)
    images, twins = images_by_stem(root / photos, RASTER_EXTENSIONS, NAME)
    depths, depth_twins = images_by_stem(root / "depth", {*RASTER_EXTENSIONS, *ARRAY_EXTENSIONS}, NAME)
    focals, focal_twins = images_by_stem(root / "focal", RASTER_EXTENSIONS, NAME)
    yield from twins + depth_twins + focal_twins
    for sub, read in ((photos, RASTER_EXTENSIONS), ("depth", {*RASTER_EXTENSIONS, *ARRAY_EXTENSIONS}),
                      ("focal", RASTER_EXTENSIONS)):
        yield from layout.unread_images(NAME, root / sub, read, USES)
    for path in (p for sub in (photos, "depth", "focal") for p in list_images(root / sub, UNSUPPORTED_EXTENSIONS)):
        yield Rejected(NAME, str(path), f"unsupported image format ({path.suffix.lower()}): convert it to TIFF, PNG "
                                        "or JPEG")
    for path in list_images(root / "depth", DEPTH_ARRAYS):
        yield Rejected(NAME, str(path), f"a depth array ({path.suffix.lower()}) is not read: save it as a 16-bit PNG, "
                                        "a float TIFF or a .npy array (numpy.save)")
    for stem in sorted(set(depths) - set(images)):
        yield Rejected(NAME, str(depths[stem]), f"no photo {photos}/{stem}.* for this depth map")
    for stem, image in images.items():
        if stem not in depths:
            yield Rejected(NAME, str(image), f"no depth map depth/{stem}.* for this photo")
            continue
        scene = key_part(stem)
        files = {"image": str(image), "depth": str(depths[stem])}
        if stem in focals:
            files["focal"] = str(focals[stem])
        origin = [relpath(p, root) for p in files.values()]
        base = {"ref_f_number": float(opts.render_ref_f_number), "camera": CAMERA, "blur_type": "defocus",
                "origin": origin}
        split = split_for(NAME, scene, opts)
        for f_number in (*f_numbers, None):
            tag = "sharp" if f_number is None else f_number_tag(f_number)
            yield Task(NAME, split, scene, f"{NAME}/{scene}/{tag}", files, {**base, "f_number": f_number},
                       {"stem": stem, "f_number": f_number})


def _read(path: str) -> np.ndarray:
    try:
        return read_image(path)
    except ImageError as exc:
        raise RejectError(exc.path, exc.reason) from exc


def _shrink(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if a.shape[:2] == shape:
        return a
    smaller = shape[0] * shape[1] < a.shape[0] * a.shape[1]
    return cv2.resize(a, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)


def working_shape(shape: tuple[int, ...], max_side: int | None) -> tuple[int, int]:
    """(h, w) after reducing the longer side to `max_side` (unchanged if already smaller)."""
    h, w = shape[:2]
    if not max_side or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def check_aspect(path: str, what: str, size: tuple[int, ...], photo: tuple[int, ...] | None) -> None:
    """RejectError naming `path` when its (h, w) `size` is not the `photo`'s shape: another aspect ratio than
    resizing (up to ASPECT_SLACK and a pixel of rounding) explains would stretch the map over the photo."""
    if photo is None:
        return
    (h, w), (ph, pw) = size[:2], photo[:2]
    slack = np.log1p(ASPECT_SLACK + 1.0 / min(h, w))
    if abs(np.log((w / h) / (pw / ph))) <= slack:
        return
    turned = abs(np.log((w / h) / (ph / pw))) <= slack
    hint = (" (turned 90 degrees from it: an EXIF-rotated photo whose map was made from its stored pixels?)"
            if turned else "")
    raise RejectError(path, f"{what} {w}x{h} is not the shape of its photo {pw}x{ph}{hint}: it would be stretched "
                            "over the photo; give the map at the photo's size or aspect ratio")


def read_depth(path: str, shape: tuple[int, int] | None, colormap: str = "auto",
               photo: tuple[int, ...] | None = None, metric: bool = False) -> tuple[np.ndarray, bool]:
    """A depth map decoded to values (imaging.depth.decode_depth) at `shape` (None: its own), and whether they are
    the file's own values (a float TIFF, a .npy array) rather than an 8/16-bit image's 0-1; RejectError if unreadable,
    NaN or inf, (given the `photo`'s shape) of another aspect ratio, or `metric` with a distance of 0 or less (a
    depth camera's "no data": it would render as 1 mm from the lens, or be averaged into its neighbours)."""
    try:
        samples = read_depth_file(path)
    except ImageError as exc:
        raise RejectError(exc.path, exc.reason) from exc
    as_values = samples.dtype == np.float32 and is_monochrome(samples)  # a float colour map decodes to 0-1
    try:
        values = decode_depth(samples[:, :, 0] if samples.shape[2] == 1 else as_rgb(samples), colormap,
                              name=Path(path).name)
    except DepthError as exc:
        raise RejectError(path, str(exc)) from exc
    check_aspect(path, "depth map", values.shape, photo)
    if metric and (bad := int((values <= 0).sum())):
        raise RejectError(path, f"metric depth of 0 or less at {bad} of {values.size} pixels (no data?): every "
                                "distance must be positive; fill those pixels (e.g. from their neighbours), or "
                                "declare a relative map (0 = nearest) --render-depth relative")
    values = values.astype(np.float32)
    return (values if shape is None else _shrink(values, shape)), as_values


def read_mask(path: str, shape: tuple[int, int], photo: tuple[int, ...] | None = None) -> np.ndarray:
    """A focal-plane mask (white = in focus), boolean at `shape`; RejectError as `read_depth`."""
    m = to_float(_read(path)).mean(axis=2)
    check_aspect(path, "focal mask", m.shape, photo)
    if not (m > 0.5).any():  # a 0/1 mask reads as black
        raise RejectError(path, f"focal mask with no pixel marked in focus (brightest {m.max() * 255:.0f} of 255): "
                                "white (above half) marks what is in focus")
    return cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0.5


def choose_focus(values: np.ndarray, how: str, mask: np.ndarray | None, seed: int, stem: str,
                 mask_path: str | None = None) -> float:
    """The focal plane's depth value: under the mask, a seeded percentile, or a given number."""
    if how in ("auto", "mask") and mask is not None:
        try:
            return focus_value(values, mask)
        except DepthError as exc:
            raise RejectError(mask_path or stem, str(exc)) from exc
    if how == "mask":
        raise RejectError(stem, "render focus 'mask' but no focal/ mask for this photo")
    if how in ("auto", "sample"):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(f"render-focus/{stem}") & 0xFFFFFFFF])
        return float(np.percentile(values, rng.uniform(*FOCUS_PERCENTILES)))
    try:
        return float(how)
    except ValueError:
        raise ValueError(f"render focus must be auto, mask, sample or a depth value, got {how!r}") from None


def coc_scale(opts: IngestOptions, shape: tuple[int, int]) -> float:
    """k: CoC px at f/1 per unit of relative CoC, at the rendered size."""
    if opts.render_coc_scale is not None:
        return float(opts.render_coc_scale)
    return DEFAULT_K_FRACTION * max(shape)


def unit_coc(values: np.ndarray, focus: float, opts: IngestOptions, scale: float | None = None) -> np.ndarray:
    """The signed CoC in px at f/1 (CoC(N) = this / N); metric depth in metres = value x `scale` (None: that of
    an 8/16-bit image, `metric_scale`)."""
    kind = opts.render_depth_kind
    if kind == "metric":
        scale = metric_scale(opts) if scale is None else float(scale)
        # a focus at or before the focal length has no real image: metric_unit_coc's ValueError, a reject line
        return metric_unit_coc(values * scale, focus * scale, opts)
    try:
        c = signed_relative_coc(values, kind, focus)
    except DepthError as exc:
        raise ValueError(str(exc)) from None
    return (coc_scale(opts, values.shape) * c).astype(np.float32)


def added_coc(unit: np.ndarray, f_number: float, ref_f_number: float) -> np.ndarray:
    """The CoC to add to a photo shot at `ref_f_number` to make it f/N: in quadrature, with the sign."""
    factor = np.sqrt(max(0.0, 1.0 / float(f_number) ** 2 - 1.0 / float(ref_f_number) ** 2))
    return (unit * factor).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _scene(files: tuple[tuple[str, str], ...], stem: str,
           opts: IngestOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(linear RGB, the same with highlights restored, signed CoC px at f/1, focus value, metres per depth unit
    (metric depth: `metric_scale`)) of a photo, once per process."""
    paths = dict(files)
    photo = _read(paths["image"])
    shape = working_shape(photo.shape, opts.max_side)
    linear = _shrink(srgb_to_linear(to_float(photo)), shape)
    depth, as_values = read_depth(paths["depth"], None, opts.render_depth_colormap, photo.shape,
                                  opts.render_depth_kind == "metric")
    values = _shrink(depth, shape)
    scale = metric_scale(opts, as_values)
    check_units(paths["depth"], values, as_values, opts)
    used = "focal" in paths and opts.render_focus in ("auto", "mask")  # a sampled or given focus reads no mask
    mask = read_mask(paths["focal"], shape, photo.shape) if used else None
    focus = choose_focus(values, opts.render_focus, mask, int(opts.seed), stem, paths.get("focal"))
    if opts.render_depth_kind == "metric" and opts.render_focus not in RENDER_FOCUS_BY_MAP:
        focus /= scale  # a metric focus is given in metres: in the map's units
    # metric depth in other units than metres (mm read as m) is named (render_units), after a blank map's line
    metric = opts.render_depth_kind == "metric"
    check_metric = functools.partial(check_metric_depth, paths["depth"], depth, shape, focus, scale, as_values, opts)
    try:
        unit = unit_coc(values, focus, opts, scale)
    except ValueError as exc:  # metric: a focus at or before the focal length (the map's own: in other units?)
        if metric:
            check_metric()
        raise RejectError(paths["depth"], f"focus {focus:.4g}: {exc}") from None
    if not np.abs(unit).max() >= 1e-3:  # under a thousandth of a pixel at f/1 everywhere: no blur to render
        raise RejectError(paths["depth"], f"one depth value ({focus:.4g}) everywhere, where the focus is: every "
                                          "aperture would render the photo unchanged (a blank depth map?)")
    if metric:
        check_metric()  # a map in other units first: a focus then reads outside it too
        if opts.render_focus not in RENDER_FOCUS_BY_MAP:  # a given focus; the map's own lies within it
            check_metric_focus(paths["depth"], depth * scale, focus * scale, opts.render_focus, opts)
    elif opts.render_focus not in RENDER_FOCUS_BY_MAP:  # relative or inverse: far outside the map's values
        check_relative_focus(paths["depth"], depth, focus, opts.render_focus, as_values, opts)
    return linear, restore_highlights(linear, gain=float(opts.render_highlights)), unit, focus, scale


def scene_veil(opts: IngestOptions, stem: str) -> float:
    """The photo's veiling glare V: `render_veil`, or with a spread S drawn uniformly in V (1 - S ... 1 + S) from
    (seed, stem), the same for every aperture of the photo (glare depends on the scene's light as well as the lens)."""
    veil, spread = float(opts.render_veil), float(opts.render_veil_spread)
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"render_veil_spread must be in [0, 1], got {spread}")
    if not veil or not spread:
        return veil
    rng = np.random.default_rng([int(opts.seed) & 0xFFFFFFFF, stable_hash(f"render-veil/{stem}") & 0xFFFFFFFF])
    return float(rng.uniform(veil * (1.0 - spread), veil * (1.0 + spread)))


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Render the task's shot of its photo (or, for the sharp-only task, the photo through the tone pipeline)."""
    stem, f_number = task.options["stem"], task.options.get("f_number")
    linear, restored, unit, focus, scale = _scene(tuple(sorted(task.files.items())), stem, opts)
    bits = 8 if str(opts.bit_depth) == "8" else 16
    jpeg = opts.render_jpeg_quality
    sharp = encode(linear, jpeg)  # the photo: its restored highlights are light for the blur to spread
    blur, coc, metric = None, None, opts.render_depth_kind == "metric"
    if f_number is not None:
        rng = np.random.default_rng([int(opts.seed) & 0xFFFFFFFF, stable_hash(task.key) & 0xFFFFFFFF])
        coc = (unit / float(f_number)).astype(np.float32)
        widest = float(np.abs(coc).max())  # above 2x the long side: render_coc's reject line (no camera gives it)
        if COC_PNG_MAX_PX < widest <= 2 * max(coc.shape):  # coc.png would hold 255.996 where it is larger
            raise RejectError(task.files["image"], f"at f/{f_number:g}: a CoC of up to {widest:.0f} px, more than the "
                              f"{COC_PNG_MAX_PX:.3f} px coc.png holds (16-bit, pixels x 256): give a smaller "
                              "--max-side or " + ("check the depth units and the lens" if metric else
                                                  "--render-coc-scale"))
        try:
            added = added_coc(unit, f_number, opts.render_ref_f_number)
            shot = render_shot(linear, restored, added)
        except ValueError as exc:  # a CoC no camera gives (metric depth with an odd lens): this photo's reject line
            units = ("" if opts.render_depth_kind == "metric" else f" ({opts.render_depth_kind} depth: the CoC is "
                     "--render-coc-scale px at f/1 per unit of the depth values; a map of values beyond 0-1 needs a "
                     "smaller one)")
            raise RejectError(task.files["image"], f"at f/{f_number:g}: {exc}{units}") from None
        shot = add_veil(shot, added_veil(scene_veil(opts, stem), f_number, opts.render_ref_f_number))
        noise = SensorNoise(photons_at_white=float(opts.render_noise_photons)) if opts.render_noise else None
        blur = from_float(encode(add_noise(shot, rng, noise), jpeg), bits)
    meta = empty_meta(
        source=NAME, split=task.split, scene=task.scene, f_number=f_number,
        ref_f_number=float(opts.render_ref_f_number),
        focal_length_mm=float(opts.render_focal_length_mm) if metric else None,
        sensor_width_mm=sensor_width_across(float(opts.render_sensor_width_mm), *sharp.shape[:2]) if metric else None,
        focus_distance_m=round(focus * scale, 4) if metric else None,
        camera=CAMERA, blur_type="defocus", bit_depth=bits, height=int(sharp.shape[0]), width=int(sharp.shape[1]),
        align={"method": "none", "score": 1.0, "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]},
        gain=1.0, origin=list(task.meta.get("origin", [])),
    )
    return [Sample(key=task.key, sharp=from_float(sharp, bits), blur=blur, meta=meta, coc=coc,
                   coc_signed=coc is not None)]


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem)
