"""How an image is covered by network passes: the whole (padded) image while it fits a pixel budget, else
overlapping tiles with raised-cosine blending weights; pure functions of sizes and the method's properties."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from defocuskit.config.recipe import Recipe
    from defocuskit.methods.base import Method


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length): stride tile - overlap, the last tile flush with the edge."""
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def ramp(length: int, overlap: int) -> np.ndarray:
    """(length,) blending weights: 1 inside, raised-cosine ramps over `overlap` at both ends, strictly positive."""
    weights = np.ones(length, np.float64)
    n = min(overlap, length // 2)
    if n > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1))  # in (0, 1)
        weights[:n] = rise
        weights[length - n :] = rise[::-1]
    return weights


def blend_window(tile: int | tuple[int, int], overlap: int | tuple[int, int]) -> np.ndarray:
    """(tile, tile) (or (height, width)) float32 blending weights: separable raised-cosine ramps over the
    overlap (one for both axes, or (along H, along W)), strictly positive."""
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    oy, ox = (overlap, overlap) if isinstance(overlap, int) else overlap
    return np.outer(ramp(th, oy), ramp(tw, ox)).astype(np.float32)


# 2048 x 2048: whole frames of DPDD (1680x1120), EBB! and VABD (1536x1024) and RealDOF (2320x1536) go through in
# one pass; the paper-size NAFNet (width 64) added 2.8 GiB of CPU memory per Mpx in a whole 1024x1024 pass
# (docs/benchmarks.md); --max-tile-pixels lowers the budget for smaller devices
DEFAULT_MAX_TILE_PIXELS = 2048 * 2048


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How `restore_image` covers an image: one pass over the whole (padded) image, or overlapping tiles."""

    whole: bool
    tile: tuple[int, int]  # (height, width) of one network pass; the padded image when whole
    overlap: int
    padded: tuple[int, int]  # (height, width) of the image after padding
    tiles: int  # network passes (tiles) per image
    max_tile_pixels: int | None  # the budget that decided (None: the method always tiles, or --tile was given)

    def describe(self) -> str:
        """'whole 1536x1024' or 'tiles 32x32 overlap 8' (width x height): what ran, for the reports."""
        if self.whole:
            return f"whole {self.tile[1]}x{self.tile[0]}"
        return f"tiles {self.tile[1]}x{self.tile[0]} overlap {self.overlap}"

    def record(self) -> dict[str, Any]:
        """What deblur.json records of the run: mode, tile [height, width], overlap, tiles, budget."""
        return {"inference": "whole" if self.whole else "tiles", "tile": list(self.tile), "overlap": self.overlap,
                "tiles": self.tiles, "max_tile_pixels": self.max_tile_pixels}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class TilingOptions:
    """How inference may cut an image into network passes (`--tile`, `--overlap`, `--max-tile-pixels`, `--batch`):
    None leaves it to the method (the whole image within the pixel budget, or tiles of its training size)."""

    tile: int | None = None  # tiles of this size, whatever the method
    overlap: int | None = None  # tile overlap; None: min(32, tile side // 4)
    max_tile_pixels: int | None = None  # a whole-image pass's budget; None: DEFAULT_MAX_TILE_PIXELS
    batch: int = 4  # tiles through the network at once


def check_tiling(method: Method, recipe: Recipe, model: nn.Module, tiling: TilingOptions = TilingOptions()) -> None:
    """Raise ValueError, naming the option, for a tile, overlap, budget or batch that no image could run with."""
    tile, overlap, max_tile_pixels = tiling.tile, tiling.overlap, tiling.max_tile_pixels
    if tiling.batch < 1:
        raise ValueError(f"--batch must be positive, got {tiling.batch}")
    if tile is not None and tile < 1:
        raise ValueError(f"--tile must be positive, got {tile}")
    if max_tile_pixels is not None and max_tile_pixels < 1:
        raise ValueError(f"--max-tile-pixels must be positive, got {max_tile_pixels}")
    if tile is not None or not method.whole_image:
        resolve_overlap(int(tile or recipe.data.image_size), overlap)
        return
    m = int(method.pad_multiple(model))
    budget = DEFAULT_MAX_TILE_PIXELS if max_tile_pixels is None else int(max_tile_pixels)
    if budget < m * m:
        raise ValueError(f"--max-tile-pixels {budget} is less than one {m}x{m} block, the smallest input "
                         f"a '{method.name}' model takes")
    if overlap is not None and overlap < 0:
        raise ValueError(f"--overlap must not be negative, got {overlap}")


def plan_tiling(method: Method, recipe: Recipe, model: nn.Module, height: int, width: int,
                tiling: TilingOptions = TilingOptions()) -> Tiling:
    """How an image of (height, width) is run. An explicit `tiling.tile`: tiles of that size (on an axis the image
    is shorter than the tile, the image's side rounded up to the network's multiple, or a tiling method's training
    size if larger: never a frame padded up to a tile far beyond the image). A method that tiles
    (`Method.whole_image` False): tiles of the recipe's training size. Otherwise the whole image, padded to
    the network's multiple, in one pass while it has at most `tiling.max_tile_pixels` (default
    DEFAULT_MAX_TILE_PIXELS) pixels; beyond that, tiles of the largest size (multiples of that multiple)
    within the budget, a short side taken whole. Tile overlap: `tiling.overlap`, else min(32, tile side // 4)."""
    check_tiling(method, recipe, model, tiling)
    tile, overlap, max_tile_pixels = tiling.tile, tiling.overlap, tiling.max_tile_pixels

    def tiles(th: int, tw: int, budget: int | None) -> Tiling:
        ov = resolve_overlap(min(th, tw), overlap)
        ph, pw = max(th, height), max(tw, width)
        n = len(tile_starts(ph, th, ov)) * len(tile_starts(pw, tw, ov))
        return Tiling(False, (th, tw), ov, (ph, pw), n, budget)

    m = int(method.pad_multiple(model))
    if tile is not None or not method.whole_image:
        t = int(tile or recipe.data.image_size)
        if tile is not None:  # a tile beyond the image: as large as the image needs, not a padded frame of that size
            least = 1 if method.whole_image else int(recipe.data.image_size)
            return tiles(min(t, max(_round_up(height, m), least)), min(t, max(_round_up(width, m), least)), None)
        return tiles(t, t, None)
    budget = DEFAULT_MAX_TILE_PIXELS if max_tile_pixels is None else int(max_tile_pixels)
    ph, pw = _round_up(height, m), _round_up(width, m)
    if ph * pw <= budget:
        return Tiling(True, (ph, pw), 0, (ph, pw), 1, budget)
    side = math.isqrt(budget) // m * m
    th, tw = min(side, ph), min(side, pw)
    if th < side:  # the short side fits in one tile: spend the rest of the budget along the long side
        tw = min(pw, budget // th // m * m)
    elif tw < side:
        th = min(ph, budget // tw // m * m)
    return tiles(th, tw, budget)


def resolve_overlap(tile: int, overlap: int | None) -> int:
    """The tile overlap: `overlap` if given (checked to be in [0, tile)), else min(32, tile // 4)."""
    if overlap is None:
        return min(32, tile // 4)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    return int(overlap)


class TileBlend:
    """Overlapping tiles' outputs summed into one image under raised-cosine weights (`blend_window`; an axis held in
    one tile keeps weight 1, so its output is exact): the tiles at `boxes` (their top-left corners, `tile_starts`
    along each axis) of size `tile` in an image of `size` (H, W)."""

    def __init__(self, size: tuple[int, int], tile: tuple[int, int], overlap: int) -> None:
        (self.height, self.width), (self.th, self.tw) = size, tile
        ys, xs = tile_starts(self.height, self.th, overlap), tile_starts(self.width, self.tw, overlap)
        self.boxes = [(y, x) for y in ys for x in xs]
        self.window = blend_window(tile, (overlap if len(ys) > 1 else 0, overlap if len(xs) > 1 else 0))
        self.weight = np.zeros(size, np.float32)
        self.acc: np.ndarray | None = None

    def add(self, boxes: list[tuple[int, int]], out: np.ndarray) -> None:
        """Add the (B, h, w, K) outputs of the tiles at `boxes`."""
        if self.acc is None:
            self.acc = np.zeros((self.height, self.width, out.shape[3]), np.float32)
        for (y, x), t in zip(boxes, out):
            self.acc[y : y + self.th, x : x + self.tw] += t * self.window[:, :, None]
            self.weight[y : y + self.th, x : x + self.tw] += self.window

    def result(self) -> np.ndarray:
        """The blended (H, W, K) float32 image of every tile added."""
        assert self.acc is not None
        return self.acc / self.weight[:, :, None]


def run_in_tiles(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, tile: int | None,
                 overlap: int | None = None, batch: int = 4) -> np.ndarray:
    """`fn` (a (B, h, w, C) float32 batch of tiles -> (B, h, w, K)) over a float32 (H, W, C) image in overlapping
    tiles of `tile` px (on an axis the image is shorter, the image's side; None: the whole image in one call),
    blended with raised-cosine weights as `restore_image` blends its tiles (TileBlend); (H, W, K) float32. `batch`
    tiles per call: the memory `fn` takes is bounded by tile x tile x batch, whatever the image's size. An image
    within one tile is `fn`'s output as it is."""
    height, width = image.shape[:2]
    th, tw = (height, width) if tile is None else (min(tile, height), min(tile, width))
    blend = TileBlend((height, width), (th, tw), resolve_overlap(min(th, tw), overlap) if min(th, tw) > 1 else 0)
    for b in range(0, len(blend.boxes), max(1, batch)):
        chunk = blend.boxes[b : b + max(1, batch)]
        blend.add(chunk, np.asarray(fn(np.stack([image[y : y + th, x : x + tw] for y, x in chunk])), np.float32))
    return blend.result()


def tile_seed(seed: int, index: int) -> int:
    """A 63-bit seed for the tile batch starting at tile `index`, from (seed, index)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, index]).generate_state(2, np.uint64)[0] >> 1)


def default_inference(method: Method, recipe: Recipe, model: nn.Module) -> dict[str, Any]:
    """How inference runs this model without tiling options (what the model card and config.json say):
    "mode" whole or tiles, the pad multiple and pixel budget of a whole-image pass, or the tile size and
    overlap, and a "description" in words."""
    if method.whole_image:
        m, budget = int(method.pad_multiple(model)), DEFAULT_MAX_TILE_PIXELS
        side = math.isqrt(budget)
        return {"mode": "whole", "pad_multiple": m, "max_tile_pixels": budget,
                "description": (f"the whole image in one pass, reflect-padded to a multiple of {m} px, up to {budget} "
                                f"pixels ({side}x{side}); larger images in the largest tiles within that budget")}
    size = int(recipe.data.image_size)
    overlap = resolve_overlap(size, None)
    return {"mode": "tiles", "tile": size, "overlap": overlap,
            "description": (f"overlapping tiles of {size}x{size} px, the training size (what its context was learnt "
                            f"on), {overlap} px overlap, blended")}
