"""The scale of a set of shards' images: the median long side in pixels of the whole photos their samples show (a
training patch's: the image it was cut from, `optics.source_long_side`). Defocus blur is measured in pixels, so a
model has seen the blur of that scale: an export records it (io.modelfile.long_side_entry), and deblur, eval and the
API say where an input is far larger (inference.scale). It also records how wide the blur of its training inputs reads
(`median_blur_px`): the blur a photo is deblurred at by `--work-side auto` (inference.scale.blur_matched_side)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from defocuskit.data.reader import ShardError
from defocuskit.data.tar_index import index_shard, is_local
from defocuskit.imaging import optics

SAMPLES = 256  # the samples read, spread over the shards: their json members alone


def sample_long_sides(urls: Sequence[str], limit: int = SAMPLES) -> list[int]:
    """The photo long sides (pixels) of up to `limit` samples of these local tar shards, about as many from each
    shard, read from their json metadata's height and width (a patch's `patch_of`); samples without them are
    passed over. Empty where any shard is remote (not read before training) or a shard cannot be read."""
    if not urls or not all(is_local(u) for u in urls):
        return []
    quota = max(1, math.ceil(limit / len(urls)))
    sides: list[int] = []
    try:
        for url in urls:
            if len(sides) >= limit:
                break
            entries = [e for e in index_shard(url) if "json" in e.members][:quota]
            with open(url, "rb") as f:
                for entry in entries[:limit - len(sides)]:
                    offset, size = entry.members["json"]
                    f.seek(offset)
                    side = _long_side(f.read(size))
                    if side is not None:
                        sides.append(side)
    except (ShardError, OSError):
        return []
    return sides


def _long_side(data: bytes) -> int | None:
    """The photo long side a sample's json member records, or None where it has no usable height and width."""
    try:
        meta = json.loads(data)
        h, w = meta["height"], meta["width"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
            return None
        return optics.source_long_side(meta, h, w)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def median_long_side(urls: Sequence[str], limit: int = SAMPLES) -> int | None:
    """The median photo long side in pixels of up to `limit` samples of the shards (`sample_long_sides`), or None
    where none could be read (remote shards, no sample with a height and width)."""
    sides = sample_long_sides(urls, limit)
    return int(round(float(np.median(sides)))) if sides else None


BLUR_SAMPLES = 32  # the blurred inputs whose blur is read (decoded), spread over the shards
BLUR_PERCENTILE = 90.0  # the width of an image's blur: this percentile of its edge-estimated CoC map (px)


READ_SIDE = 768  # the long side the blur is read at first (estimate_coc's own working size)
READABLE = 0.5  # a width is read where it is at most this share of the widest the estimator reads at that size
MIN_READ_SIDE = 96  # the smallest long side the blur is re-read at


def blur_px(image: np.ndarray) -> float:
    """How wide an image's blur reads, in its own pixels: the BLUR_PERCENTILE-th percentile of the training-free
    edge estimate of its CoC map (imaging.blur_estimate.estimate_coc), the wider blur of a photo (its background).
    Read at READ_SIDE at most, and again at half that size while the width there is over READABLE of the widest
    the estimator can read (`widest_reading`): the spread of the edges' widths about it would be cut off, and the
    width read too narrow (a disc of 48 px on a 768 px photo reads 19 px there, 45 at 192 px)."""
    from defocuskit.imaging.blur_estimate import estimate_coc, widest_reading

    long_side = max(image.shape[:2])
    side = min(long_side, READ_SIDE)
    while True:
        width = float(np.percentile(estimate_coc(image, work_side=side), BLUR_PERCENTILE))
        if width * side / long_side <= READABLE * widest_reading() or side // 2 < MIN_READ_SIDE:
            return width
        side //= 2


def median_blur_px(urls: Sequence[str], limit: int = BLUR_SAMPLES) -> float | None:
    """The median `blur_px` of up to `limit` blurred inputs (blur.png) of these local tar shards, about as many from
    each; None where none could be read (remote shards, no blur.png: a sharp-only method's data)."""
    from defocuskit.io.formats import ImageError
    from defocuskit.io.images import decode_image, to_float

    if not urls or not all(is_local(u) for u in urls):
        return None
    quota = max(1, math.ceil(limit / len(urls)))
    widths: list[float] = []
    try:
        for url in urls:
            blurred = [e for e in index_shard(url) if "blur.png" in e.members]
            entries = blurred[::max(1, len(blurred) // quota)][:quota]  # spread over the shard, not its first
            with open(url, "rb") as f:
                for entry in entries[:limit - len(widths)]:
                    offset, size = entry.members["blur.png"]
                    f.seek(offset)
                    image = to_float(decode_image(f.read(size), f"{url}:{entry.key}.blur.png"))
                    if min(image.shape[:2]) >= 8:
                        widths.append(blur_px(image))
            if len(widths) >= limit:
                break
    except (ShardError, OSError, ImageError):
        return None
    return float(np.median(widths)) if widths else None
