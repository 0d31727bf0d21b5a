"""What ingest does to a decoded sample before it is encoded (pure functions): --max-side, --bit-depth,
--patch/--stride, --min-sharpness, the shape checks, and the metadata as written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from defocuskit.data.ingest_checks import MIN_SIDE_PX
from defocuskit.data.metadata import META_KEYS
from defocuskit.data.sample import IngestOptions, RejectError, Sample, Task
from defocuskit.imaging.optics import sensor_width_of_crop
from defocuskit.io.images import bit_depth, to_float


def sharpness(image: np.ndarray) -> float:
    """Edge measure of an RGB image: the mean gradient magnitude of its luminance.

    Luminance Y is the channel mean in [0, 1]; the gradient uses central differences (np.gradient),
    so the result is in [0, ~0.7]: about 0 for a flat patch, 0.01-0.05 for textured photo patches.
    DPDNet (Abuolaim & Brown 2020) likewise drops its flattest training patches by sharpness energy.
    """
    y = to_float(image).mean(axis=2)
    gy, gx = np.gradient(y)
    return float(np.mean(np.hypot(gx, gy)))


def max_side_size(height: int, width: int, max_side: int | None) -> tuple[int, int] | None:
    """The (width, height) a `height` x `width` image has once its longer side is at most `max_side` (--max-side:
    ingest's, deblur's), or None where it already is (or no `max_side` is given)."""
    if not max_side or max(height, width) <= max_side:
        return None
    scale = max_side / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def size_ratio(height: int, width: int, size: tuple[int, int]) -> float:
    """How much a `height` x `width` image shrinks resized to `size` (width, height): the mean of the two sides'
    ratios, by which its CoC diameters in pixels scale (--max-side's coc.png, --work-side's CoC maps)."""
    return 0.5 * (size[0] / width + size[1] / height)


def resize_area(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`a` (H, W) or (H, W, C) resized to `size` (width, height) by INTER_AREA, as --max-side downscales; a
    single channel keeps its axis."""
    out = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
    return out[:, :, None] if a.ndim == 3 and out.ndim == 2 else out


def resize_max_side(sample: Sample, max_side: int | None) -> Sample:
    """Downscale (INTER_AREA) so the longer side is at most `max_side`; coc diameters scale along, a
    blur map is averaged and thresholded again at 128 (it stays 0/255)."""
    h, w = sample.image.shape[:2]
    size = max_side_size(h, w, max_side)
    if size is None:
        return sample

    def shrink(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else resize_area(a, size)

    coc = shrink(sample.coc)
    if coc is not None:
        coc = coc.astype(np.float32) * np.float32(size_ratio(h, w, size))
    mask = shrink(sample.blurmask)
    if mask is not None:
        mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    return replace(sample, sharp=shrink(sample.sharp), blur=shrink(sample.blur), coc=coc, blurmask=mask,
                   left=shrink(sample.left), right=shrink(sample.right))


def convert_bit_depth(sample: Sample, depth: str) -> Sample:
    """"auto" keeps the arrays' sample type; "8" / "16" convert (x / 257 rounded, or x * 257)."""
    if depth == "auto":
        return sample
    if depth not in ("8", "16"):
        raise ValueError(f"bit depth must be auto, 8 or 16, got {depth!r}")

    def conv(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        if depth == "8" and a.dtype == np.uint16:
            return np.rint(a / 257.0).astype(np.uint8)
        if depth == "16" and a.dtype == np.uint8:
            return a.astype(np.uint16) * np.uint16(257)
        return a

    return replace(sample, sharp=conv(sample.sharp), blur=conv(sample.blur), left=conv(sample.left),
                   right=conv(sample.right))


def patch_meta(meta: Mapping[str, Any], y: int, x: int, patch: int, height: int, width: int) -> dict[str, Any]:
    """The metadata of the `patch` px patch at (y, x) of an image `height` x `width` px: the image's, but for what is
    measured across the image: `sensor_width_mm` is the width in mm the patch covers (optics.sensor_width_of_crop:
    the pixel pitch, sensor_width_mm / width, stays the image's, and so does a thin-lens CoC in pixels), and
    `align.matrix` maps the patch's pixel coordinates (`matrix_in_crop`); `patch_of` records the image's size and the
    patch's corner, so what is relative to a photo's long side (a camera's sensor width, the f-number bound K) reads
    the image's (optics.source_long_side). Pixel lengths (align's matched_blur_px, refined_px) are the same in a
    patch; the registration's scores describe the whole shot it was cut from."""
    out = dict(meta, patch_of={"height": int(height), "width": int(width), "y": int(y), "x": int(x)})
    if "sensor_width_mm" in meta:
        out["sensor_width_mm"] = sensor_width_of_crop(meta["sensor_width_mm"], patch, width)
    align = meta.get("align")
    if isinstance(align, Mapping) and align.get("matrix") is not None:
        out["align"] = {**align, "matrix": matrix_in_crop(align["matrix"], y, x)}
    return out


def matrix_in_crop(matrix: Any, y: int, x: int) -> list[list[float]]:
    """A 2 x 3 or 3 x 3 warp between two images' pixel coordinates as the warp between their crops with the corner
    (y, x): T(-x, -y) M T(x, y), the same rows (a point p of a crop is p + (x, y) of its image)."""
    m = np.asarray(matrix, np.float64)
    full = np.vstack([m, [0.0, 0.0, 1.0]]) if m.shape == (2, 3) else m
    shift = np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, -x], [0.0, 1.0, -y], [0.0, 0.0, 1.0]])
    return (back @ full @ shift)[:m.shape[0]].tolist()


def cut_patches(sample: Sample, patch: int, stride: int | None = None) -> list[Sample]:
    """Aligned `patch` x `patch` crops of blur/sharp/coc/blurmask/views every `stride` pixels; keys get
    `/p{y}_{x}`, metadata `patch_meta`."""
    stride = stride or patch
    h, w = sample.image.shape[:2]
    if h < patch or w < patch:
        raise RejectError(str(sample.meta.get("origin") or sample.key),
                          f"image {w}x{h} is smaller than the {patch}px patch")
    out = []
    for y in range(0, h - patch + 1, stride):
        for x in range(0, w - patch + 1, stride):
            win = (slice(y, y + patch), slice(x, x + patch))
            out.append(Sample(
                key=f"{sample.key}/p{y}_{x}", sharp=None if sample.sharp is None else sample.sharp[win],
                meta=patch_meta(sample.meta, y, x, patch, h, w), blur=None if sample.blur is None else sample.blur[win],
                coc=None if sample.coc is None else sample.coc[win], coc_signed=sample.coc_signed,
                blurmask=None if sample.blurmask is None else sample.blurmask[win],
                left=None if sample.left is None else sample.left[win],
                right=None if sample.right is None else sample.right[win],
            ))
    return out


def postprocess(sample: Sample, opts: IngestOptions, split: str | None = "train") -> tuple[list[Sample], int]:
    """--max-side, --bit-depth, --patch/--stride and --min-sharpness; returns (samples, flat ones dropped).

    Patches and the flat-patch filter are for training: a sample of another `split` (test, val) stays whole, as
    evaluation scores whole images. --min-sharpness judges the sharp reference; blur-map samples have none and are
    all kept."""
    sample = convert_bit_depth(resize_max_side(sample, opts.max_side), opts.bit_depth)
    if split != "train":
        return [sample], 0
    pieces = cut_patches(sample, opts.patch, opts.stride) if opts.patch else [sample]
    if opts.min_sharpness is None:
        return pieces, 0
    kept = [p for p in pieces if p.sharp is None or sharpness(p.sharp) >= opts.min_sharpness]
    return kept, len(pieces) - len(kept)


def check_side(samples: list[Sample], file: str, max_side: int | None = None) -> None:
    """RejectError naming `file` where a sample to write has a side under MIN_SIDE_PX, as read or after --max-side
    (a 1x1 photo, a 3x10000 strip): no blur to learn or score in it."""
    for s in samples:
        h, w = s.image.shape[:2]
        if min(h, w) < MIN_SIDE_PX:
            written = f" as written with --max-side {max_side}" if max_side and max(h, w) == max_side else ""
            raise RejectError(file, f"image {w}x{h} px{written}: a side under {MIN_SIDE_PX} px holds no blur to learn")


def finalize_meta(sample: Sample, task: Task) -> dict[str, Any]:
    """Every schema key, with source/split/scene from the task where the source left them out, origin
    from the task's files where the source gave none, and height/width/bit_depth from the arrays as
    written (the blurred photo in a blur-map sample)."""
    meta = {k: sample.meta.get(k) for k in META_KEYS}
    meta.update({k: v for k, v in sample.meta.items() if k not in meta})
    for k in ("source", "split", "scene"):
        if meta[k] is None:
            meta[k] = getattr(task, k)
    if not meta["origin"] and task.files:
        meta["origin"] = list(task.files.values())
    meta["height"], meta["width"] = int(sample.image.shape[0]), int(sample.image.shape[1])
    meta["bit_depth"] = bit_depth(sample.image)
    return meta


def check_sample(sample: Sample) -> None:
    """ValueError for a sample whose arrays or key the shard writer cannot take, saying what is wrong."""
    for role, a in (("sharp", sample.sharp), ("blur", sample.blur)):
        if a is None:
            continue
        if a.dtype not in (np.uint8, np.uint16) or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{role} must be RGB uint8/uint16, got {a.dtype} {a.shape}")
    if sample.sharp is None:
        if sample.blur is None or sample.blurmask is None:
            raise ValueError("a sample without a sharp reference must be a blur-map sample (blur and blurmask)")
    elif sample.blur is not None and (sample.blur.shape, sample.blur.dtype) != (sample.sharp.shape, sample.sharp.dtype):
        raise ValueError(f"blur {sample.blur.shape} {sample.blur.dtype} and sharp {sample.sharp.shape} "
                         f"{sample.sharp.dtype} differ")
    if sample.coc is not None and sample.coc.shape != sample.image.shape[:2]:
        raise ValueError(f"coc {sample.coc.shape} does not match the image {sample.image.shape[:2]}")
    if sample.coc is not None and not sample.coc_signed and (sample.coc < 0).any():
        raise ValueError("coc has negative values but is not marked signed (coc_signed)")
    if (sample.left is None) != (sample.right is None):
        raise ValueError("a dual-pixel sample needs both views (left and right)")
    for role, a in (("left", sample.left), ("right", sample.right)):
        if a is not None and (sample.blur is None or (a.shape, a.dtype) != (sample.blur.shape, sample.blur.dtype)):
            raise ValueError(f"dual-pixel view {role} {a.shape} {a.dtype} must match blur "
                             f"{None if sample.blur is None else (sample.blur.shape, sample.blur.dtype)}")
    mask = sample.blurmask
    if mask is not None and (mask.dtype != np.uint8 or mask.shape != sample.image.shape[:2]):
        raise ValueError(f"blurmask {sample.blurmask.dtype} {sample.blurmask.shape} must be uint8 of the image's "
                         f"size {sample.image.shape[:2]}")
    if "." in sample.key:
        raise ValueError(f"sample key {sample.key!r} contains '.'")
