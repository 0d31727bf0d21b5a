"""An input far larger than the model's training images, said in one line, and deblur's --max-side. Defocus blur is
measured in pixels: a model trained on images of about 512 px on their long side has seen the blur of that scale,
and a camera's full frame holds the same defocus many times wider. An export records its training images' median
long side (io.modelfile.long_side_entry, data.image_scale); an input more than RATIO times larger is named, with the
--max-side that deblurs it at the training scale (OpenCV INTER_AREA, as ingest's --max-side), or the --work-side that
deblurs it there and gives the image back at its own size (`work_side_restore`). Scenes differ in how wide their blur
is for their size: `--work-side auto` deblurs each image where its blur reads as wide as the training inputs' did
(`blur_matched_side`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from defocuskit.data.postprocess import max_side_size, resize_area
from defocuskit.inference.keywords import whole
from defocuskit.io.modelfile import read_metadata, read_model_metadata, recorded_blur, recorded_long_side

RATIO = 2.0  # an input's long side above RATIO x the training images': said
MIN_MAX_SIDE = 8  # as ingest's --max-side (data.ingest_checks.MIN_SIDE_PX)


def trained_long_side(model_file: str | Path) -> int | None:
    """The long side in pixels of the images a model file was trained on, as its metadata records it; None where
    it does not (an older export, an imported release, remote shards) or the file's metadata cannot be read."""
    try:
        return recorded_long_side(read_metadata(model_file))
    except (ValueError, OSError):
        return None


CLI_REMEDY = ("`--work-side auto` deblurs it where its blur reads as wide as the training inputs' (`trained`: at "
              "{trained} px) and writes it at its own size (`--max-side {trained}`: at that size)")
API_REMEDY = ("work_side='auto' deblurs it where its blur reads as wide as the training inputs' ('trained': at "
              "{trained} px) and gives it back at its own size")


def scale_note(name: str, long_side: int, trained: int | None, remedy: str = CLI_REMEDY) -> str | None:
    """One line where an input of `long_side` px (its long side) is more than RATIO times the training images'
    `trained` px, with `remedy` (deblur's --max-side; the API's: downscale it); else None (the scale not recorded, or
    comparable)."""
    if not trained or long_side <= RATIO * trained:
        return None
    return (f"{name}: {long_side} px on its long side, the model trained on images of about {trained} px: its defocus "
            f"is about {long_side / trained:.1f}x wider in pixels than the model saw; "
            + remedy.format(trained=trained))


def eval_notes(checkpoints: dict[str, Path], urls: list[str]) -> list[str]:
    """eval's note per checkpoint whose training images are under half the long side of the shards' images (their
    median photo long side, data.image_scale): one line each, for report.json's notes."""
    from defocuskit.data.image_scale import median_long_side

    trained = {label: trained_long_side(path) for label, path in checkpoints.items()}
    side = median_long_side(urls) if any(trained.values()) else None
    return [f"{label}: the images scored are {side} px on their long side (median), the model trained on images of "
            f"about {t} px: their defocus is about {side / t:.1f}x wider in pixels than the model saw; shards ingested "
            f"with `--max-side {t}`, or `--work-side {label}:trained`, score it at the training scale"
            for label, t in trained.items() if side and t and side > RATIO * t]


def check_max_side(max_side: Any, option: str = "--max-side") -> int | None:
    """`max_side` as a whole number of at least MIN_MAX_SIDE pixels, or None; TypeError (not a whole number) or
    ValueError naming `option`."""
    value = whole(option.strip("-").replace("-", "_"), max_side)
    if value is not None and value < MIN_MAX_SIDE:
        raise ValueError(f"{option} {value}: at least {MIN_MAX_SIDE} pixels (an image that small holds no blur to "
                         "deblur)")
    return value


def downscaled(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """`pixels` (H, W, C) downscaled by INTER_AREA so that its long side is at most `max_side` (ingest's
    --max-side resize: the same size and pixels), in its own dtype and channels; as given where it already is."""
    size = max_side_size(*pixels.shape[:2], max_side)
    return pixels if size is None else resize_area(pixels, size)


def trained_blur(model_file: str | Path) -> float | None:
    """How wide the blur of a model's training inputs reads (px, data.image_scale.median_blur_px), as its metadata
    records it (train_blur_px); None where it does not or cannot be read."""
    try:
        return recorded_blur(read_metadata(model_file))
    except (ValueError, OSError):
        return None


def resolve_work_side(work_side: Any, trained: int | None, model: str, option: str = "--work-side",
                      blur: float | None = None) -> int | str | None:
    """`work_side` (a whole number of pixels, at least MIN_MAX_SIDE; "trained": the model file's training images'
    long side, `trained`; "auto": kept, each image's `blur_matched_side`, which needs the training inputs' `blur`;
    None) as pixels, "auto" or None; ValueError naming `option` (and `model` where it records neither)."""
    word = work_side.strip().lower() if isinstance(work_side, str) else None
    if word == "trained":
        if not trained:
            raise ValueError(f"{option} trained: {model} records no training image size (an older export, an imported "
                             "release, or trained on remote shards); give the long side in pixels")
        return int(trained)
    if word == "auto":
        if not blur:
            raise ValueError(f"{option} auto: {model} records no training blur (train_blur_px: an export before it was "
                             "recorded, an imported release, remote shards or sharp images alone); give the long side "
                             "in pixels or 'trained'")
        return "auto"
    if isinstance(work_side, str):
        try:
            work_side = int(work_side)
        except ValueError:
            raise ValueError(f"{option} {work_side}: expected a long side in pixels, 'trained', 'auto' or 0 (its own "
                             "size)") from None
    return check_max_side(work_side, option)


def recipe_work_side(model_file: str | Path) -> int | str | None:
    """A model file's own work side, its recipe's inference.work_side as the metadata states it ("auto", "trained",
    pixels); None where it states none or the metadata cannot be read (loading the model names what is wrong)."""
    try:
        recipe = read_model_metadata(model_file).get("recipe")
    except (ValueError, OSError):
        return None
    side = (recipe.get("inference") or {}).get("work_side") if isinstance(recipe, dict) else None
    return side if side in ("auto", "trained") or type(side) is int else None


def own_work_side(given: Any, own: int | str | None, trained: int | None, blur: float | None, model: str,
                  option: str = "--work-side") -> tuple[int | str | None, str | None]:
    """The work side in force and, where the model's own could not run, a note: `given` (as `resolve_work_side`;
    0: the image's own size) or, not given, the model's `own` (its recipe's inference.work_side), which falls back to
    the image's own size with a one-line note where the file records no `trained` size or `blur` it needs."""
    if given is not None:
        if not isinstance(given, bool) and (given == 0 or isinstance(given, str) and given.strip() == "0"):
            return None, None
        return resolve_work_side(given, trained, model, option, blur), None
    if own is None:
        return None, None
    try:
        return resolve_work_side(own, trained, model, option, blur), None
    except ValueError:
        needs = "train_blur_px" if own == "auto" else "train_long_side_px"
        return None, (f"{model}: its recipe deblurs at inference.work_side {own}, but the file records no {needs}; "
                      "images deblurred at their own size")


def blur_matched_side(image: np.ndarray, blur: float) -> int | None:
    """The long side at which `image`'s blur reads as wide as the model's training inputs' (`blur` px,
    data.image_scale.median_blur_px): W = L x blur / blur_px(image), as CoC in pixels scales with the size; None
    (its own size) where that is not smaller than L (a photo whose blur reads no wider than the training data's)
    or its blur reads 0."""
    from defocuskit.data.image_scale import blur_px

    width, long_side = blur_px(image), max(image.shape[:2])
    if not width > 0:
        return None
    side = max(MIN_MAX_SIDE, round(long_side * blur / width))
    return side if side < long_side else None


def side_for(work_side: int | str | None, image: np.ndarray, blur: float | None) -> int | None:
    """The long side `image` (float (H, W, C)) is deblurred at: `work_side` px, "auto": `blur_matched_side` of it
    for the training inputs' `blur`; None: its own."""
    if work_side == "auto":
        return blur_matched_side(image, blur) if blur else None
    return work_side if isinstance(work_side, int) else None


def work_side_restore(restore: Callable[[np.ndarray], np.ndarray], image: np.ndarray, work_side: int | None
                      ) -> np.ndarray:
    """`image` (H, W, C) float, deblurred by `restore` at `work_side` px on its long side and given back at its own
    size: x + U(restore(D x) - D x), D INTER_AREA (as --max-side), U bicubic. The model works at the scale of its
    training images, where the defocus has the width in pixels it learnt; what it changes there is added to the
    whole-size image, whose own detail stays. As given to `restore` where the image is no larger than `work_side`."""
    size = max_side_size(*image.shape[:2], work_side)
    if size is None:
        return restore(image)
    small = resize_area(image, size)
    change = restore(small) - small
    up = cv2.resize(change, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)
    return image + (up[:, :, None] if up.ndim == 2 else up)


def read_at_side(estimate: Callable[[np.ndarray], np.ndarray], image: np.ndarray, side: int | None) -> np.ndarray:
    """The (H, W) CoC map of `image` (H, W, C) float read by `estimate` at `side` px on its long side and given back
    at the image's own size, in its pixels: U(estimate(D x)) x L / l (a CoC in pixels scales with the size), D
    INTER_AREA, U bilinear; `estimate(image)` where the image is no larger than `side`. A defocus-map model reads
    blur as its training images showed it (`trained`: at their long side)."""
    size = max_side_size(*image.shape[:2], side)
    if size is None:
        return estimate(image)
    small = resize_area(image, size)
    coc = cv2.resize(estimate(small), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return (coc * np.float32(max(image.shape[:2]) / max(small.shape[:2]))).astype(np.float32)
