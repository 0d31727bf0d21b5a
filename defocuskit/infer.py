"""Full-resolution inference: any image size, in overlapping tiles of the model's training size, smoothly blended."""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from defocuskit.data.shards import encode_coc
from defocuskit.images import ImageError, bit_depth, from_float, read_image, to_float, write_image
from defocuskit.methods.base import Method
from defocuskit.train.recipe import Recipe



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


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) float32 blending weights: separable raised-cosine ramps over the overlap, strictly positive."""
    ramp = np.ones(tile, np.float64)
    n = min(overlap, tile // 2)
    if n > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1))  # in (0, 1)
        ramp[:n] = rise
        ramp[tile - n :] = rise[::-1]
    return np.outer(ramp, ramp).astype(np.float32)


def resolve_sampler(recipe: Recipe, steps: int | None) -> Any:
    """The recipe's sampler config, with `steps` replaced when given; an error if the sampler has no steps."""
    sampler = recipe.sampler
    if steps is None:
        return sampler
    if steps < 1:
        raise ValueError(f"--steps must be positive, got {steps}")
    if sampler is None or not dataclasses.is_dataclass(sampler) or not hasattr(sampler, "steps"):
        raise ValueError(f"--steps: the '{recipe.method}' sampler has no 'steps' setting")
    return dataclasses.replace(sampler, steps=steps)


def resolve_overlap(tile: int, overlap: int | None) -> int:
    """The tile overlap: `overlap` if given (checked to be in [0, tile)), else min(32, tile // 4)."""
    if overlap is None:
        return min(32, tile // 4)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    return int(overlap)


def tile_seed(seed: int, index: int) -> int:
    """A 63-bit seed for the tile batch starting at tile `index`, from (seed, index)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, index]).generate_state(2, np.uint64)[0] >> 1)


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


@torch.no_grad()
def restore_image(
    method: Method,
    recipe: Recipe,
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 4,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    sampler_cfg: Any = None,
) -> np.ndarray:
    """Run `method` on a float32 (H, W, C) image in [0, 1] tile by tile; returns float32 (H, W, C_out).

    Tiles of `tile` pixels (default: the recipe's training size) overlap by `overlap` (default
    min(32, tile // 4)) and are blended with
    raised-cosine weights; `batch` tiles go through the network at once, so memory is bounded by tile*batch.
    Each batch of tiles draws its noise from a generator seeded from (seed, index of its first tile):
    the result is reproducible for a given seed, tile, overlap and batch.
    """
    if image.ndim != 3:
        raise ValueError(f"restore_image needs an (H, W, C) image, got shape {image.shape}")
    tile = int(tile or recipe.data.image_size)
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    overlap = resolve_overlap(tile, overlap)
    sampler = sampler_cfg if sampler_cfg is not None else resolve_sampler(recipe, steps)
    height, width, _ = image.shape
    # Pad (reflect) an image smaller than a tile up to the tile; cropped back at the end.
    pad_h, pad_w = max(0, tile - height), max(0, tile - width)
    if pad_h or pad_w:
        mode = "reflect" if min(height, width) > 1 else "edge"
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    ph, pw = image.shape[:2]
    boxes = [(y, x) for y in tile_starts(ph, tile, overlap) for x in tile_starts(pw, tile, overlap)]
    window = blend_window(tile, overlap)
    weight = np.zeros((ph, pw), np.float32)
    acc: np.ndarray | None = None
    n_batches = math.ceil(len(boxes) / batch)
    with _progress(progress) as bar:
        tiles_task = bar.add_task("tiles", total=len(boxes)) if bar else None
        steps_task = bar.add_task("steps", total=None) if bar else None

        def on_step(i: int, n: int) -> None:
            if bar is not None:
                bar.update(steps_task, completed=i + 1, total=n)

        for b in range(n_batches):
            chunk = boxes[b * batch : (b + 1) * batch]
            tiles = np.stack([image[y : y + tile, x : x + tile] for y, x in chunk])
            blur = torch.from_numpy(np.ascontiguousarray(tiles.transpose(0, 3, 1, 2))).float().to(device)
            gen = torch.Generator(device=device).manual_seed(tile_seed(seed, b * batch))
            cb: Callable[[int, int], None] | None = on_step if bar is not None else None
            out = method.restore(model, blur, sampler, recipe.objective, generator=gen, callback=cb)
            out = out.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
            if out.shape[1:3] != (tile, tile):
                raise ValueError(f"method '{method.name}' returned tiles of {out.shape[1:3]}, expected {(tile, tile)}")
            if acc is None:
                acc = np.zeros((ph, pw, out.shape[3]), np.float32)
            for (y, x), t in zip(chunk, out):
                acc[y : y + tile, x : x + tile] += t * window[:, :, None]
                weight[y : y + tile, x : x + tile] += window
            if bar is not None:
                bar.update(tiles_task, advance=len(chunk))
    assert acc is not None
    result = acc / weight[:, :, None]
    return np.ascontiguousarray(result[:height, :width])


def deblur_files(
    inputs: list[Path],
    checkpoint: Path,
    out: Path,
    *,
    steps: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 4,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Deblur each input with the exported model; writes out/<stem>.png (input size and bit depth).

    A defocus-map model writes out/<stem>_coc.png instead: 16-bit, CoC diameter in pixels x 256.
    Every check (checkpoint, sampler steps, tiling, input files) runs before any image is processed.
    """
    from defocuskit.train.export import load_model

    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("no input images given")
    for p in inputs:
        if not p.is_file():
            raise ImageError(p, "no such file")
    stems: dict[str, Path] = {}
    for p in inputs:
        if p.stem in stems:
            raise ValueError(f"{p} and {stems[p.stem]} would both be written as {p.stem}.png; rename one")
        stems[p.stem] = p
    method, recipe, model = load_model(Path(checkpoint), device=device)
    sampler = resolve_sampler(recipe, steps)
    size = int(tile or recipe.data.image_size)
    overlap = resolve_overlap(size, overlap)
    if batch < 1:
        raise ValueError(f"--batch must be positive, got {batch}")
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p in inputs:
        arr = read_image(p)
        result = restore_image(
            method, recipe, model, to_float(arr),
            tile=size, overlap=overlap, batch=batch, seed=seed, device=device, progress=progress, sampler_cfg=sampler,
        )
        if method.output == "defocus_map":
            coc = encode_coc(result[:, :, 0])  # 16-bit PNG, pixels x 256, as coc.png in the shards
            dest = out / f"{p.stem}_coc.png"
            write_image(dest, coc)
        else:
            dest = out / f"{p.stem}.png"
            write_image(dest, from_float(np.clip(result, 0.0, 1.0), bit_depth(arr)))
        written.append(dest)
    return written
