"""Images above a pixel budget restored one band of rows at a time, so that no float copy of the whole image is
made: each band is read with `halo` extra rows above and below, converted, restored, and only its own rows
kept, stored straight in the output's dtype. An image within the budget is one band: the whole image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from defocuskit.io.env import env_count

BAND_PIXELS_ENV = "DEFOCUSKIT_BAND_PIXELS"
DEFAULT_BAND_PIXELS = 32 * 2**20  # about 33.5 MP: a 24 MP camera frame is restored whole
BAND_HALO = 64  # rows of context read on each side of a band and cropped away after


def band_pixels() -> int:
    """The budget: $DEFOCUSKIT_BAND_PIXELS (0: always the whole image), else DEFAULT_BAND_PIXELS."""
    value = env_count(BAND_PIXELS_ENV, 0, "pixels")
    return DEFAULT_BAND_PIXELS if value is None else value


def plan_bands(height: int, width: int, budget: int, halo: int = BAND_HALO) -> list[tuple[int, int, int, int]]:
    """(read_top, read_bottom, keep_top, keep_bottom) rows of each band: the kept rows tile the image, each band
    reads at most `budget` pixels where the width allows (it keeps at least `halo` rows, so that no more than
    two thirds of what it reads is context)."""
    if budget <= 0 or height * width <= budget:
        return [(0, height, 0, height)]
    rows = max(halo, 1, budget // width - 2 * halo)
    bands = []
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        bands.append((max(0, top - halo), min(height, bottom + halo), top, bottom))
    return bands


def restore_in_bands(raw: np.ndarray, convert: Callable[[np.ndarray], np.ndarray],
                     run: Callable[[np.ndarray, int, int, int], np.ndarray], store: Callable[[np.ndarray], np.ndarray],
                     *, budget: int | None = None, halo: int = BAND_HALO) -> np.ndarray:
    """Restore an (H, W, C) image of any dtype band by band: `convert` turns a slice of rows into floats,
    `run(floats, band index, read_top, read_bottom)` restores them, `store` turns the kept rows into the
    output's dtype; returns (H, W, C_out) in that dtype."""
    height, width = raw.shape[:2]
    budget = band_pixels() if budget is None else budget
    out: np.ndarray | None = None
    for index, (r0, r1, k0, k1) in enumerate(plan_bands(height, width, budget, halo)):
        part = store(run(convert(raw[r0:r1]), index, r0, r1)[k0 - r0 : k1 - r0])
        if out is None:
            if k0 == 0 and k1 == height:
                return part
            out = np.empty((height, width, *part.shape[2:]), part.dtype)
        out[k0:k1] = part
    assert out is not None
    return out
