"""Shared loading for the sources: blur/sharp pairs (size check, gain, registration), sharp-only samples,
split assignment for sources without official splits, and deterministic file listing."""

from __future__ import annotations

import hashlib
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from defocuskit.data.metadata import empty_meta
from defocuskit.data.refine import refine
from defocuskit.data.register import RegistrationError, align, match_gain
from defocuskit.data.sample import IngestOptions, Rejected, RejectError, Sample, Task
from defocuskit.imaging.optics import sensor_width_across
from defocuskit.io.formats import ImageError
from defocuskit.io.images import as_rgb, bit_depth, from_float, is_monochrome, read_image, read_image_channels, to_float

RESIZE_TOLERANCE = 0.02  # registered pairs may differ in size by less than this (focus breathing, crops)
NO_ALIGN: dict[str, Any] = {"method": "none", "score": None, "matrix": None}
AS_SHOT = "none"  # task.options["register"] of `--register none`: no warp and no gain, the pair as shot
REGISTER_CHOICES = ("ecc", "homography", AS_SHOT)  # the values of IngestOptions.register (--register)


def split_for(source: str, scene: str, opts: IngestOptions) -> str:
    """Split of a scene for sources without official splits, from opts.split_by.

    "scene": a seeded SHA-256 hash of the scene name puts it in "test" with probability
    opts.test_fraction, else "train" (stable across runs and machines); "train"/"test": everything there.
    """
    if opts.split_by in ("train", "test"):
        return opts.split_by
    if opts.split_by != "scene":
        raise ValueError(f"split_by must be 'scene', 'train' or 'test', got {opts.split_by!r}")
    digest = hashlib.sha256(f"{opts.seed}:{source}:{scene}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if u < opts.test_fraction else "train"


KEY_HASH_CHARS = 6  # hex digits of the name's hash appended to a key component that had to be changed


def key_part(text: str) -> str:
    """A webdataset-safe key component, distinct for distinct names: `text` itself when it is safe, else its
    safe form, '-' and a short hash of the name. Safe: no dots (webdataset splits member names at the first
    dot), no white space, nothing that is not text (the undecodable bytes of a non-UTF-8 file name, control
    characters); so `a b`, `a_b` and `a.b` stay three keys, and every key is valid UTF-8."""
    name = unicodedata.normalize("NFC", text)
    safe = "".join("_" if unicodedata.category(c) in ("Cs", "Cc", "Cf", "Co", "Cn") else c for c in name)
    safe = re.sub(r"[.\s]+", "_", safe).strip("_") or "_"
    if safe == text:
        return safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:KEY_HASH_CHARS]
    return f"{safe}-{digest}"


def list_images(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Files in `folder` (not recursive) with one of the extensions (case-insensitive), sorted by name."""
    exts = {e.lower() for e in extensions}
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


_DIGITS = re.compile(r"(\d+)")


def name_order(path: Path) -> tuple[list[str | int], str]:
    """Sort key of a file by its name with runs of digits compared as numbers (`IMG_9` before `IMG_10`, `2_gt.png`
    before `10_gt.png`), then by the name itself: the order in which two folders of differently named files are
    paired, n-th with n-th (by plain name `1.png, 10.png, 2.png` lines up with `10_gt.png, 1_gt.png, 2_gt.png`)."""
    parts = _DIGITS.split(path.name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], path.name


HIDDEN_FILE = "hidden file (name starts with '.'): not used"  # the reject reason of an image file named `.*`


def images_by_stem(folder: Path, extensions: Iterable[str], source: str) -> tuple[dict[str, Path], list[Rejected]]:
    """`list_images` keyed by file stem (for layouts that pair files by name across folders), and a reject line of
    `source` for every other file of a stem already taken (`2978.png` beside `2978.jpg`: the first by name is used)
    and for every hidden file (`._2978.jpg`, macOS AppleDouble: no image, whose twin in the other folder made a pair
    that failed to load, named as a damaged image)."""
    found: dict[str, Path] = {}
    twins = []
    for p in list_images(folder, extensions):
        if p.name.startswith("."):
            twins.append(Rejected(source, str(p), HIDDEN_FILE))
        elif p.stem in found:
            twins.append(Rejected(source, str(p), f"another file of the same name is used: {found[p.stem].name}"))
        else:
            found[p.stem] = p
    return found, twins


def inside_root(path: str | Path, root: str | Path) -> str | None:
    """`path` relative to `root` by its names, with forward slashes ('..' taken away by name), or None where it lies
    outside: a link inside `root` (the dataset folder in a parent given, a file of a git-annex copy) is not followed,
    so a linked dataset gives the paths of a plain copy, never the machine's path of what the link points to."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return None


def relpath(path: str | Path, root: Path) -> str:
    """`path` relative to the source root, with forward slashes (`inside_root`; as the links resolve where it
    lies outside by name, else `path` itself)."""
    rel = inside_root(path, root)
    if rel is not None:
        return rel
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _read(path: str) -> np.ndarray:
    try:
        return read_image(path)
    except ImageError as exc:
        raise RejectError(exc.path, exc.reason) from exc


def _read_pair(blur_path: str, sharp_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Both shots of a pair as RGB; RejectError where one carries colour and the other none (a gray shot beside a
    colour one would teach a model to drop or invent colour)."""
    try:
        blur, sharp = read_image_channels(blur_path), read_image_channels(sharp_path)
    except ImageError as exc:
        raise RejectError(exc.path, exc.reason) from exc
    gray = [name for name, arr in (("blur", blur), ("sharp", sharp)) if is_monochrome(arr)]
    if len(gray) == 1:
        other = "sharp" if gray[0] == "blur" else "blur"
        raise RejectError(blur_path, f"{gray[0]} is gray and {other} is colour: blur {blur_path} vs sharp "
                                     f"{sharp_path}; a pair must share its colours")
    return as_rgb(blur), as_rgb(sharp)


def _meta(task: Task, image: np.ndarray) -> dict[str, Any]:
    """The sample's metadata from the task's, for the stored `image`: its size, and the camera's sensor width
    (the task's: its long side) as the width in mm the image's width covers (optics.sensor_width_across)."""
    meta = empty_meta(source=task.source, split=task.split, scene=task.scene)
    meta.update({k: v for k, v in task.meta.items() if k in meta and v is not None})
    height, width = image.shape[:2]
    meta.update(height=height, width=width,
                sensor_width_mm=sensor_width_across(meta["sensor_width_mm"], height, width))
    return meta


def _resize_to(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    shrink = img.shape[0] * img.shape[1] > h * w
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _register(blur: np.ndarray, sharp: np.ndarray, task: Task, opts: IngestOptions) -> tuple[np.ndarray, dict]:
    """Try the task's method, then its fallback; keep the best-scoring registration.

    The score is `align`'s blur-aware registration quality (not the raw ECC correlation, which falls with
    the defocus blur itself); a pair scoring below opts.min_align_score is rejected. With opts.refine_warp the
    accepted fit is refined by a smooth residual warp (`data.refine`), kept where the shared detail agrees better.
    """
    methods = [task.options["register"]]
    fallback = task.options.get("fallback")
    if fallback and fallback not in methods:
        methods.append(fallback)
    motion = task.options.get("motion", "affine")
    best: tuple[np.ndarray, dict] | None = None
    errors = []
    for method in methods:
        try:
            warped, record = align(blur, sharp, method=method, motion=motion)
        except RegistrationError as exc:
            errors.append(f"{method}: {exc.reason}")
            continue
        if best is None or record["score"] > best[1]["score"]:
            best = (warped, record)
        if record["score"] >= opts.min_align_score:
            break
    if best is None:
        raise RejectError(task.files["blur"], "registration failed (" + "; ".join(errors) + ")")
    if best[1]["score"] < opts.min_align_score:
        raise RejectError(task.files["blur"], _reject_reason(best[1], opts.min_align_score))
    if opts.refine_warp > 0:
        warped, extra = refine(blur, sharp, best[0], best[1]["matrix"], opts.refine_warp)
        best = (warped, {**best[1], **extra})
    return best


def _reject_reason(record: dict, threshold: float) -> str:
    """E.g. "registration score 0.52 < 0.8 (raw correlation 0.41, 7% of the textured area displaced); if the two
    show the same view (look at them), --min-align-score 0.52 keeps it": the score was fitted on a few stacks, so
    a right pair it refuses (a wide aperture's bokeh) is the user's to keep, the value that keeps it named."""
    details = [f"raw correlation {record['raw_score']:.2f}"] if record.get("raw_score") is not None else []
    if record.get("displaced"):
        details.append(f"{100 * record['displaced']:.0f}% of the textured area displaced")
    keeps = math.floor(float(record["score"]) * 100) / 100  # at most the score: a value that keeps this pair
    return (f"registration score {record['score']:.2f} < {threshold}" + (f" ({', '.join(details)})" if details else "")
            + f"; if the two show the same view (look at them), --min-align-score {keeps:.2f} keeps it")


def load_pair(task: Task, opts: IngestOptions) -> Sample:
    """Decode a blur/sharp pair; check sizes, match gain and register the blurred shot as the task asks.

    task.options: "register" ("ecc" / "homography" / None / "none"), "motion" (ECC motion model, default
    affine), "fallback" (a second method tried when the first fails or scores low), "gain" (bool).
    "none" (`--register none`) keeps the pair as shot: no warp, no fallback and no gain either, so the
    stored blur is the input blur (align {"method": "none", "score": null, "matrix": null}, gain null).
    Raises RejectError naming the file and the reason.
    """
    blur_path, sharp_path = task.files["blur"], task.files["sharp"]
    blur, sharp = _read_pair(blur_path, sharp_path)
    depth = max(bit_depth(blur), bit_depth(sharp))
    method = task.options.get("register") or None
    as_shot = method == AS_SHOT
    if method in (AS_SHOT, False):
        method = None
    align_record: dict[str, Any] = dict(NO_ALIGN)
    resized_from = None
    blur_f = sharp_f = None
    if blur.shape != sharp.shape:
        (bh, bw), (sh, sw) = blur.shape[:2], sharp.shape[:2]
        close = abs(bh - sh) < RESIZE_TOLERANCE * sh and abs(bw - sw) < RESIZE_TOLERANCE * sw
        if method is None or not close:
            kept = " (--register none keeps pairs as shot: no resize)" if as_shot and close else ""
            raise RejectError(blur_path, f"size mismatch: blur {bw}x{bh} ({blur_path}) vs sharp {sw}x{sh} "
                                         f"({sharp_path}){kept}")
        blur_f, resized_from = _resize_to(to_float(blur), sharp.shape), [bw, bh]
    if method is not None:
        blur_f = to_float(blur) if blur_f is None else blur_f
        sharp_f = to_float(sharp)
        blur_f, align_record = _register(blur_f, sharp_f, task, opts)
        if resized_from is not None:
            align_record["resized_from"] = resized_from
    gain = None
    if task.options.get("gain") and not as_shot:
        blur_f = to_float(blur) if blur_f is None else blur_f
        sharp_f = to_float(sharp) if sharp_f is None else sharp_f
        blur_f, gain = match_gain(blur_f, sharp_f, sigma=opts.local_gain * max(sharp_f.shape[:2]))
        gain = round(gain, 6)
    blur_out = from_float(blur_f, depth) if blur_f is not None else as_depth(blur, depth)
    sharp_out = as_depth(sharp, depth)
    meta = _meta(task, sharp)
    meta.update(bit_depth=depth, align=align_record, gain=gain)
    return Sample(key=task.key, sharp=sharp_out, blur=blur_out, meta=meta)


def load_sharp(task: Task, opts: IngestOptions) -> Sample:
    """Decode a sharp-only sample (the reference shot; no blur.png)."""
    sharp = _read(task.files["sharp"])
    meta = _meta(task, sharp)
    meta.update(bit_depth=bit_depth(sharp), align=dict(NO_ALIGN))
    return Sample(key=task.key, sharp=sharp, blur=None, meta=meta)


def load_task(task: Task, opts: IngestOptions) -> list[Sample]:
    """A source's `load`: a pair when the task has a blurred file, else a sharp-only sample. A task's
    `sensor_width_mm` is its camera's sensor width (the long side: EXIF, the camera's specification), which spans
    the photo's long side; the sample's is the width in mm its stored image's width covers, so a portrait's (a
    camera held upright, turned by EXIF orientation or in its pixels) is the sensor's short side
    (optics.sensor_width_across)."""
    return [load_pair(task, opts) if "blur" in task.files else load_sharp(task, opts)]


def as_depth(img: np.ndarray, depth: int) -> np.ndarray:
    """`img` at `depth` bits (8 or 16), unchanged where it is already."""
    if bit_depth(img) == depth:
        return img
    return from_float(to_float(img), depth)


def bracket_motion(opts: IngestOptions) -> str:
    """`align`'s motion for an aperture bracket on a tripod (VABD, RAW): "bracket" (a shift and a rotation fitted on
    the subject in focus) with `--bracket-fit subject`, else the whole-frame "affine"."""
    return "bracket" if opts.bracket_fit == "subject" else "affine"
