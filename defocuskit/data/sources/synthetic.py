"""`--synthetic builtin`: aperture stacks rendered from the photographs shipped inside scikit-image.

Nothing is downloaded. Scenes, depth and camera are described in `defocuskit.data.render`: 7
photographs, each with 3 seeded variants (28 scenes), rendered at `opts.synthetic_f_numbers` with
the reference at `opts.synthetic_ref_f_number`, longer side `opts.synthetic_size`, noise seeded by
`opts.seed`. Each scene gives one sample per f-number plus one sharp-only sample.

Misalignment (`opts.synthetic_misalign_px` > 0): the sharp reference of every pair is moved by a random
affine map seeded by (seed, key): a shift of up to that many pixels along each axis and a scale of
1 +- 1 % about the image centre, what real tripod brackets show (EBB at full size: shifts up to about a
dozen pixels, ~1 % scale). The blurred shot and its CoC map stay put, as the shot the model sees; the
map M is recorded in `align` ({"method": "injected", "matrix": M}, sharp.png(x) = reference(M x)), so a misaligned
training set for JDRL and its perfectly aligned twin come from one renderer.

Splits: a photograph and all its variants go to the same split (no leakage of a view between
train and test). With `split_by="scene"` a photograph is held out for test when a stable hash of
its name falls below `test_fraction`, with the other view of a stereo pair (the motorcycle's left and right
views show one scene); at least one photograph is always held out and at least one kept for training. `split_by="train"` / `"test"` put everything in that split.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from defocuskit.data.metadata import empty_meta
from defocuskit.data.render import (
    PHOTOS,
    SENSOR_WIDTH_MM,
    Scene,
    builtin_scene,
    builtin_scene_names,
    photo_of,
    render_shot,
    scene_camera,
    stable_hash,
)
from defocuskit.data.sample import IngestOptions, Rejected, RejectError, Sample, Task
from defocuskit.data.sources import DatasetSource
from defocuskit.io.images import from_float, linear_to_srgb

MISALIGN_SCALE = 0.01  # relative scale jitter of an injected misalignment

NAME = "synthetic"
CAMERA = "defocuskit thin-lens renderer"


def f_number_tag(f_number: float) -> str:
    """Key-safe f-number: 2.8 -> "f2_8", 8.0 -> "f8" (no dots in WebDataset keys)."""
    return "f" + f"{float(f_number):g}".replace(".", "_")


def test_photos(opts: IngestOptions) -> set[str]:
    """The photographs held out for the test split under `opts.split_by` / `opts.test_fraction`."""
    if opts.split_by == "train":
        return set()
    if opts.split_by == "test":
        return set(PHOTOS)
    if opts.split_by != "scene":
        raise ValueError(f"split_by must be 'scene', 'train' or 'test', got {opts.split_by!r}")
    score = {p: (stable_hash(f"synthetic/{p}") % 1_000_000) / 1_000_000 for p in PHOTOS}
    held = {p for p, s in score.items() if s < opts.test_fraction}
    ranked = sorted(PHOTOS, key=lambda p: score[p])
    if not held:
        held = {ranked[0]}
    held = {p for p in PHOTOS if view_group(p) in {view_group(h) for h in held}}  # both views of a stereo pair
    if len(held) == len(PHOTOS):
        held -= {p for p in PHOTOS if view_group(p) == view_group(ranked[-1])}
    return held


def view_group(photo: str) -> str:
    """The scene a photograph shows: the two views of a stereo pair ("motorcycle_left", "motorcycle_right") are one."""
    return photo.rsplit("_", 1)[0] if photo.endswith(("_left", "_right")) else photo


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One task per (scene, f-number) and one sharp-only task per scene."""
    if Path(root) != Path("builtin"):
        raise ValueError(f"--synthetic accepts only 'builtin', got {str(root)!r}")
    if not opts.synthetic_f_numbers:
        raise ValueError("synthetic_f_numbers is empty: give at least one f-number to render")
    for n in (*opts.synthetic_f_numbers, opts.synthetic_ref_f_number):
        if not np.isfinite(n) or n <= 0:
            raise ValueError(f"synthetic f-numbers must be positive, got {n!r}")
    held = test_photos(opts)
    for scene in builtin_scene_names():
        split = "test" if photo_of(scene) in held else "train"
        rendered = builtin_scene(scene, int(opts.synthetic_size), int(opts.seed))  # ~0.05 s: depth layout, focus
        base = {"ref_f_number": float(opts.synthetic_ref_f_number), "camera": CAMERA, "blur_type": "defocus",
                "focal_length_mm": rendered.focal_length_mm, "sensor_width_mm": SENSOR_WIDTH_MM,
                "focus_distance_m": round(rendered.focus_distance_m, 4),
                "origin": [f"skimage.data/{photo_of(scene)}"]}
        for f_number in (*opts.synthetic_f_numbers, None):
            tag = "sharp" if f_number is None else f_number_tag(f_number)
            yield Task(
                source=NAME, split=split, scene=scene, key=f"{NAME}/{scene}/{tag}", files={},
                meta={**base, "f_number": None if f_number is None else float(f_number)},
                options={"scene": scene, "f_number": None if f_number is None else float(f_number)},
            )


@functools.lru_cache(maxsize=8)
def _scene(scene: str, size: int, seed: int) -> tuple[Scene, dict]:
    """A built-in scene and its camera, built once per process."""
    built = builtin_scene(scene, size, seed)
    return built, scene_camera(built)


@functools.lru_cache(maxsize=8)
def _reference(scene: str, size: int, seed: int, ref_f_number: float) -> np.ndarray:
    """The scene's reference shot, rendered once per process for all of its f-numbers."""
    built, camera = _scene(scene, size, seed)
    return render_shot(built, ref_f_number, camera, seed)[0]


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Render the task's shot and the reference; 16-bit sRGB (8-bit if opts.bit_depth == "8"), CoC in px.

    Only the task's own shot is rendered (plus the reference, cached): workers that receive the
    f-numbers of one scene split its rendering between them instead of each rendering the whole stack.
    """
    scene = task.options.get("scene")
    if scene not in builtin_scene_names():
        raise RejectError(task.key, f"unknown built-in scene {scene!r}")
    f_number = task.options.get("f_number")
    depth = 8 if str(opts.bit_depth) == "8" else 16
    size, seed, ref_f_number = int(opts.synthetic_size), int(opts.seed), float(opts.synthetic_ref_f_number)
    built, camera = _scene(scene, size, seed)
    sharp = from_float(linear_to_srgb(_reference(scene, size, seed, ref_f_number)), depth)
    blur, coc = None, None
    if f_number is not None:
        blurred, coc_px = render_shot(built, float(f_number), camera, seed)
        blur = from_float(linear_to_srgb(blurred), depth)
        coc = coc_px.astype(np.float32)  # signed: the renderer knows the depth order
    align = {"method": "none", "score": 1.0, "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}
    if blur is not None and opts.synthetic_misalign_px > 0:
        matrix = misalignment(task.key, sharp.shape[:2], float(opts.synthetic_misalign_px), seed)
        sharp = warp_reflect(sharp, matrix)
        align = {"method": "injected", "score": None, "matrix": matrix.tolist()}
    meta = empty_meta(
        source=NAME, split=task.split, scene=scene,
        f_number=None if f_number is None else float(f_number),
        ref_f_number=float(opts.synthetic_ref_f_number),
        focal_length_mm=camera["focal_length_mm"], sensor_width_mm=camera["sensor_width_mm"],
        focus_distance_m=round(camera["focus_distance_m"], 4),
        camera=CAMERA, lens=f"{camera['focal_length_mm']:g} mm thin lens", blur_type="defocus",
        bit_depth=depth, height=int(sharp.shape[0]), width=int(sharp.shape[1]),
        align=align,
        gain=1.0, origin=list(task.meta.get("origin", [])),
    )
    return [Sample(key=task.key, sharp=sharp, blur=blur, meta=meta, coc=coc, coc_signed=coc is not None)]


def misalignment(key: str, shape: tuple[int, int], max_shift_px: float, seed: int) -> np.ndarray:
    """A 3x3 affine map (moved image coordinates -> original): uniform shift up to `max_shift_px` per axis and
    a scale 1 +- MISALIGN_SCALE about the centre, seeded by (seed, key)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(f"misalign/{key}") & 0xFFFFFFFF])
    dx, dy = rng.uniform(-max_shift_px, max_shift_px, 2)
    s = 1.0 + rng.uniform(-MISALIGN_SCALE, MISALIGN_SCALE)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    return np.array([[s, 0.0, cx - s * cx + dx], [0.0, s, cy - s * cy + dy], [0.0, 0.0, 1.0]])


def warp_reflect(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """image(matrix x) at every pixel x (bilinear, reflected borders), in the image's own sample type."""
    h, w = image.shape[:2]
    out = cv2.warpAffine(image.astype(np.float32), matrix[:2].astype(np.float32), (w, h),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    info = np.iinfo(image.dtype)
    return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)


SOURCE = DatasetSource(NAME, list_tasks, load)
