"""Images above a pixel budget restored one band of rows at a time, so that no float copy of the whole image is
made: each band is read with `halo` extra rows above and below, converted, restored, and its own rows kept, stored
straight in the output's dtype; across each edge between two bands their results are cross-faded over up to
`halo` rows (a sampler's noise, an estimated map or a tile grid of its own in each band left a step there). An
image within the budget is one band: the whole image."""

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


def blend_widths(bands: list[tuple[int, int, int, int]], halo: int = BAND_HALO) -> list[int]:
    """Half the rows over which the results of bands i and i + 1 are cross-faded, for each edge between them:
    `halo` // 2, or less where a band keeps fewer than twice that (each band keeps some rows of its own)."""
    return [min(halo // 2, (a[3] - a[2]) // 2, (b[3] - b[2]) // 2) for a, b in zip(bands, bands[1:])]


def restore_in_bands(raw: np.ndarray, convert: Callable[[np.ndarray], np.ndarray],
                     run: Callable[[np.ndarray, int, int, int], np.ndarray], store: Callable[[np.ndarray], np.ndarray],
                     *, budget: int | None = None, halo: int = BAND_HALO) -> np.ndarray:
    """Restore an (H, W, C) image of any dtype band by band: `convert` turns a slice of rows into floats,
    `run(floats, band index, read_top, read_bottom)` restores them, `store` turns the kept rows into the
    output's dtype; returns (H, W, C_out) in that dtype. Rows within `blend_widths` of an edge between two bands
    are the two bands' results weighted linearly by the distance to it (each band reads `halo` rows beyond it)."""
    height, width = raw.shape[:2]
    budget = band_pixels() if budget is None else budget
    bands = plan_bands(height, width, budget, halo)
    if len(bands) == 1:
        return store(run(convert(raw), 0, 0, height))
    blends = blend_widths(bands, halo)
    out: np.ndarray | None = None
    carried: np.ndarray | None = None  # the previous band's float rows across the edge it shares with this one
    for index, (r0, r1, k0, k1) in enumerate(bands):
        result = run(convert(raw[r0:r1]), index, r0, r1)
        above = blends[index - 1] if index else 0
        below = blends[index] if index < len(blends) else 0
        parts = []
        if above:  # the edge at k0: the previous band's weight falls from 1 to 0 across 2 x `above` rows
            mine = result[k0 - above - r0 : k0 + above - r0]
            weight = ((np.arange(2 * above, dtype=np.float32) + 0.5) / (2 * above)).reshape(-1, *[1] * (mine.ndim - 1))
            parts.append((k0 - above, carried * (1 - weight) + mine * weight))
        parts.append((k0 + above, result[k0 + above - r0 : k1 - below - r0]))
        carried = result[k1 - below - r0 : k1 + below - r0].copy() if below else None
        for top, rows in parts:
            kept = store(rows)
            if out is None:
                out = np.empty((height, width, *kept.shape[2:]), kept.dtype)
            out[top : top + len(rows)] = kept
    assert out is not None
    return out
