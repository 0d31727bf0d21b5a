"""eval's --work-side: each checkpoint's images deblurred at a smaller long side and scored at the shards' size
(inference.scale.work_side_restore), with the sample as the model sees it there."""

from __future__ import annotations

from typing import Any

import numpy as np

from defocuskit.data.postprocess import resize_area, size_ratio

WORK_SIDE_DESCRIPTION = ("deblurred at work_px on its long side (INTER_AREA; auto: per image, where its blur reads as "
                         "wide as the model's training inputs' train_blur_px, inference.scale.blur_matched_side) and "
                         "scored at its own size: the input plus the model's change upsampled (bicubic), "
                         "inference.scale.work_side_restore")


def work_sample(sample: dict[str, Any], shape: tuple[int, ...], size: tuple[int, int]) -> dict[str, Any]:
    """`sample`, whose input has `shape` (H, W, ...), as the model sees it at `size` (width, height): its CoC map
    (coc.png, in pixels) shrunk with the image and a training patch's photo (`patch_of`) with it, so every CoC source
    reads the smaller image's pixels."""
    height, width = shape[:2]
    ratio = size_ratio(height, width, size)  # as ingest's --max-side scales coc.png
    small = dict(sample)
    if sample.get("coc") is not None:
        small["coc"] = resize_area(np.asarray(sample["coc"], np.float32), size) * np.float32(ratio)
    if sample.get("coc_sign") is not None:
        small["coc_sign"] = np.sign(resize_area(np.asarray(sample["coc_sign"], np.float32), size))
    meta = sample.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("patch_of"), dict):
        patch_of = dict(meta["patch_of"])
        for key in ("height", "width"):
            if isinstance(patch_of.get(key), int):
                patch_of[key] = max(1, round(patch_of[key] * ratio))
        small["meta"] = {**meta, "patch_of": patch_of}
    return small
