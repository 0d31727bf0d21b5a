"""Full-resolution inference at the size the model can take: a convolutional model runs the whole (padded) image
in one pass while it fits a memory budget; larger images and attention models run in overlapping tiles, blended."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from defocuskit.data.shards import encode_coc
from defocuskit.images import ImageError, bit_depth, check_image, from_float, read_image, to_float, write_image
from defocuskit.methods.base import Method
from defocuskit.tiling import (
    check_tiling, plan_tiling, ramp, tile_seed, tile_starts,
)
from defocuskit.train.recipe import Recipe, RecipeError, apply_overrides, build_dataclass, recipe_to_dict


def _override_key(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{option} '{item}' is not of the form sampler.KEY=VALUE")
    if key.startswith("sampler."):
        key = key[len("sampler."):]
    elif "." in key:
        raise ValueError(f"{option} '{item}': only sampler settings can be changed at inference (sampler.KEY=VALUE)")
    return key, value


def resolve_sampler(recipe: Recipe, steps: int | None = None, *, name: str | None = None,
                    sets: list[str] | tuple[str, ...] = ()) -> Any:
    """The recipe's sampler config with `--sampler NAME`, `--set sampler.KEY=VALUE` and `--steps` applied.

    Values are parsed as YAML and checked like recipe keys; an unknown key or a wrong value is an
    error naming it. A `name` other than the recipe's resets `steps` to that sampler's default (the
    recipe's steps were meant for its own sampler) unless steps are given too.
    """
    sampler = recipe.sampler
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be positive, got {steps}")
    items = [*([f"name={name}"] if name is not None else []), *sets, *([f"steps={steps}"] if steps is not None else [])]
    if not items:
        return sampler
    known = {f.name for f in dataclasses.fields(sampler)} if dataclasses.is_dataclass(sampler) else set()
    raw = dict(recipe_to_dict(recipe).get("sampler") or {})
    updates = []
    for item in items:
        key, value = _override_key(item, "--set")
        if key not in known:
            if item.startswith("steps=") and steps is not None:
                raise ValueError(f"--steps: the '{recipe.method}' sampler has no 'steps' setting")
            if item.startswith("name=") and name is not None:
                raise ValueError(f"--sampler: the '{recipe.method}' method has no named samplers")
            raise ValueError(f"--set sampler.{key}: the '{recipe.method}' sampler has no such key "
                             f"(known: {', '.join(sorted(known)) or 'none'})")
        updates.append(f"{key}={value}")
    steps_given = any(u.split("=", 1)[0].strip() == "steps" for u in updates)
    if name is not None and name != raw.get("name") and "steps" in known and not steps_given:
        updates.append("steps=null")
    try:
        return build_dataclass(type(sampler), apply_overrides(raw, updates), "sampler")
    except RecipeError as exc:
        raise ValueError(f"sampler settings for the '{recipe.method}' model: {exc}") from None


def sampler_settings(method: Method, sampler: Any, objective: Any = None) -> dict[str, Any]:
    """The full sampler settings as they run, with the NFE per tile and, where a scheduler sets them (and the
    recipe's `objective` is given), the timesteps visited: what deblur.json and report.json record."""
    resolved = method.resolve_sampler(sampler)
    settings = {f.name: _plain(getattr(resolved, f.name)) for f in dataclasses.fields(resolved)} \
        if dataclasses.is_dataclass(resolved) else {}
    info = {"settings": settings, "nfe": int(method.nfe(resolved)), "needs": sorted(method.needs(resolved))}
    timesteps = method.timesteps(resolved, objective) if objective is not None else None
    if timesteps is not None:
        info["timesteps"] = [int(t) for t in timesteps]
    return info


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@contextmanager
def _progress(progress: Any) -> Iterator[Any]:
    """A rich Progress to add the tiles and steps tasks to: None (no bar), restore_image's own, or the caller's."""
    if progress is False or progress is None:
        yield None
        return
    if hasattr(progress, "add_task"):  # the caller's bar (eval's): tasks are added under its own
        yield progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        yield bar


@torch.no_grad()
def restore_image(
    method: Method,
    recipe: Recipe,
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    max_tile_pixels: int | None = None,
    batch: int = 4,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: Any = True,
    sampler_cfg: Any = None,
    coc: np.ndarray | None = None,
    channels_last: bool | None = None,
) -> np.ndarray:
    """Run `method` on a float32 (H, W, C) image in [0, 1]; returns float32 (H, W, C_out).

    `plan_tiling` decides how: a convolutional method (`Method.whole_image`) runs the whole image,
    reflect-padded to the network's multiple, in one pass while it has at most `max_tile_pixels`
    pixels, else in the largest tiles within that budget; an attention method runs tiles of the
    recipe's training size; an explicit `tile` runs tiles of that size. Tiles overlap by `overlap`
    (default min(32, tile // 4)) and are blended with raised-cosine weights; `batch` tiles go through
    the network at once, so memory is bounded by tile * batch. Padding is cropped back.

    `coc` (H, W), the circle-of-confusion map in pixels, is cut into the same tiles and handed to
    the method as `conditions["coc"]`; a sampler that needs it (physics consistency) fails without it.
    Each batch of tiles draws its noise from a generator seeded from (seed, index of its first tile):
    the result is reproducible for a given seed, tiling and batch.

    `channels_last`: hand the network its input in channels-last memory format; None (default): where the
    method says it is faster (`Method.channels_last`) and the device is a CPU.

    `progress`: True shows a bar of the tiles and of the sampler's steps inside each; a rich Progress
    (eval's) gets those two tasks added, and removed when the image is done; False shows nothing.
    """
    if image.ndim != 3:
        raise ValueError(f"restore_image needs an (H, W, C) image, got shape {image.shape}")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    sampler = method.resolve_sampler(sampler_cfg if sampler_cfg is not None else resolve_sampler(recipe, steps))
    height, width, _ = image.shape
    if "coc" in method.needs(sampler) and coc is None:
        raise ValueError(f"'{method.name}' with these settings needs a CoC map (conditions['coc']): "
                         "--coc map --coc-model FILE | --coc oracle | --coc fnumber")
    if coc is not None and coc.shape != (height, width):
        raise ValueError(f"CoC map {coc.shape[1]}x{coc.shape[0]} does not match the image {width}x{height}")
    plan = plan_tiling(method, recipe, model, height, width, tile=tile, overlap=overlap,
                       max_tile_pixels=max_tile_pixels)
    if channels_last is None:
        channels_last = method.channels_last and torch.device(device).type == "cpu"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    (th, tw), overlap, (ph, pw) = plan.tile, plan.overlap, plan.padded
    # Pad (reflect) up to the tile (or the network's multiple for a whole-image pass); cropped back at the end.
    if (ph, pw) != (height, width):
        mode = "reflect" if min(height, width) > 1 else "edge"
        image = np.pad(image, ((0, ph - height), (0, pw - width), (0, 0)), mode=mode)
        if coc is not None:
            coc = np.pad(coc, ((0, ph - height), (0, pw - width)), mode=mode)
    ys, xs = tile_starts(ph, th, overlap), tile_starts(pw, tw, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    # raised-cosine ramps along an axis with several tiles; an axis in one tile keeps weight 1 (output exact)
    window = np.outer(ramp(th, overlap if len(ys) > 1 else 0), ramp(tw, overlap if len(xs) > 1 else 0))
    window = window.astype(np.float32)
    weight = np.zeros((ph, pw), np.float32)
    acc: np.ndarray | None = None
    n_batches = math.ceil(len(boxes) / batch)
    with _progress(progress) as bar:
        tiles_task = bar.add_task(f"  {plan.describe()}", total=len(boxes)) if bar else None
        steps_task = bar.add_task("  steps", total=None) if bar else None

        def on_step(i: int, n: int) -> None:
            if bar is not None:
                bar.update(steps_task, completed=i + 1, total=n)

        try:
            for b in range(n_batches):
                chunk = boxes[b * batch : (b + 1) * batch]
                tiles = np.stack([image[y : y + th, x : x + tw] for y, x in chunk])
                nhwc = torch.from_numpy(tiles).float().to(device)
                blur = nhwc.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)  # (B, C, H, W)
                conditions = None
                if coc is not None:
                    maps = np.stack([coc[y : y + th, x : x + tw] for y, x in chunk])[:, None]
                    conditions = {"coc": torch.from_numpy(np.ascontiguousarray(maps, np.float32)).to(device)}
                gen = torch.Generator(device=device).manual_seed(tile_seed(seed, b * batch))
                cb: Callable[[int, int], None] | None = on_step if bar is not None else None
                out = method.restore(model, blur, sampler, recipe.objective, generator=gen, callback=cb,
                                     conditions=conditions)
                out = out.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
                if out.shape[1:3] != (th, tw):
                    raise ValueError(f"method '{method.name}' returned tiles of {out.shape[1:3]}, expected {(th, tw)}")
                if acc is None:
                    acc = np.zeros((ph, pw, out.shape[3]), np.float32)
                for (y, x), t in zip(chunk, out):
                    acc[y : y + th, x : x + tw] += t * window[:, :, None]
                    weight[y : y + th, x : x + tw] += window
                if bar is not None:
                    bar.update(tiles_task, advance=len(chunk))
        finally:
            if bar is not None and bar is progress:  # the caller's bar keeps only its own tasks
                bar.remove_task(tiles_task)
                bar.remove_task(steps_task)
    assert acc is not None
    result = acc / weight[:, :, None]
    return np.ascontiguousarray(result[:height, :width])


def _f_number_meta(path: Path, f_number: float | None) -> dict[str, Any]:
    """The optics that `--coc fnumber` reads: --f-number where given, else the file's EXIF."""
    from defocuskit.data.raw import read_exif

    try:
        exif = read_exif(path)
    except ImageError:
        exif = {}
    meta = {k: exif.get(k) for k in ("f_number", "focal_length_mm", "focus_distance_m")}
    if f_number is not None:
        meta["f_number"] = float(f_number)
    return meta


def _check_inputs(inputs: list[Path]) -> None:
    """Raise ImageError (one bad file) or ValueError (several, each named with its fault) unless every input reads."""
    errors: list[ImageError] = []
    for p in inputs:
        try:
            check_image(p)
        except ImageError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ValueError(f"{len(errors)} of {len(inputs)} input images cannot be read; nothing was deblurred:\n"
                         + "\n".join(f"  {e}" for e in errors))


def expand_inputs(items: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """The image files that `deblur` arguments name: a file as given; a folder -> its image files (not
    recursive, sorted); a glob pattern (quoted, so that the shell left it) -> its image files, sorted.

    Raises ImageError (one bad item) or ValueError (several, each named) for an item that is neither an
    existing file, a folder with images, nor a pattern with image matches.
    """
    import glob
    import re

    from defocuskit.images import IMAGE_EXTENSIONS

    def images(paths: list[Path]) -> list[Path]:
        return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                      and not p.name.startswith("."))

    found: list[Path] = []
    errors: list[ImageError] = []
    kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
    for item in items:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = images(list(path.iterdir()))
            found += inside
            if not inside:
                errors.append(ImageError(path, f"a folder without image files (looked for {kinds})"))
        elif re.search(r"[*?[]", str(item)):
            matched = images([Path(m) for m in glob.glob(str(item), recursive=True)])
            found += matched
            if not matched:
                errors.append(ImageError(item, "no such file, and no image file matches it as a pattern"))
        else:
            errors.append(ImageError(path, "no such file or folder"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ValueError(f"{len(errors)} of {len(items)} inputs name no image; nothing was deblurred:\n"
                         + "\n".join(f"  {e}" for e in errors))
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)  # a file named twice (itself and by its folder) is deblurred once
    return list(unique.values())


def deblur_files(
    inputs: list[Path],
    checkpoint: Path,
    out: Path,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
    coc: str | None = None,
    coc_model: Path | None = None,
    f_number: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    max_tile_pixels: int | None = None,
    batch: int = 4,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Deblur each input with the exported model; writes out/<stem>.png (input size and bit depth) and out/deblur.json.

    `inputs`: image files, folders of images or glob patterns (`expand_inputs`).

    A defocus-map model writes out/<stem>_coc.png instead: 16-bit, CoC diameter in pixels x 256.
    `sampler`/`sets`/`steps` change the sampler (checked like recipe keys); `coc` names where the CoC
    map of physics consistency comes from (coc_source.COC_SOURCES). deblur.json records, per input,
    the output, method, checkpoint, resolved sampler settings, NFE per tile, CoC source, how the
    network ran (`Tiling.record`: whole image or tiles of a size, under `max_tile_pixels`) and seconds.
    Every check (checkpoint, sampler, CoC source, tiling, input files) runs before any image is processed:
    an input that is missing, empty, unreadable or corrupt stops the run with every bad file named.
    """
    import time

    from defocuskit.coc_source import CocSource
    from defocuskit.devices import resolve_device
    from defocuskit.train.export import load_model

    device = resolve_device(device)
    inputs = expand_inputs(inputs)
    if not inputs:
        raise ValueError("no input images given")
    stems: dict[str, Path] = {}
    for p in inputs:
        if p.stem in stems:
            raise ValueError(f"{p} and {stems[p.stem]} would both be written as {p.stem}.png; rename one")
        stems[p.stem] = p
    method, recipe, model = load_model(Path(checkpoint), device=device)
    sampler_cfg = method.resolve_sampler(resolve_sampler(recipe, steps, name=sampler, sets=sets))
    info = sampler_settings(method, sampler_cfg, recipe.objective)
    if coc == "oracle":
        raise ValueError("--coc oracle reads the true CoC of synthetic shards (coc.png): use it with "
                         "`defocuskit eval`; for photographs use --coc map or --coc fnumber")
    source = CocSource.create(coc, coc_model, device)
    if "coc" in info["needs"] and source is None:
        raise ValueError(f"{checkpoint}: this model (its sampler or network) needs a CoC map: --coc map --coc-model FILE "
                         "or --coc fnumber [--f-number N]")
    _check_inputs(inputs)
    optics_of: dict[Path, dict[str, Any]] = {}
    if source is not None and source.kind == "fnumber" and "coc" in info["needs"]:
        optics_of = {p: _f_number_meta(p, f_number) for p in inputs}
        missing = [str(p) for p, meta in optics_of.items() if meta["f_number"] is None]
        if missing:
            raise ValueError(f"--coc fnumber: no f-number in the EXIF of {', '.join(missing)}; give --f-number N")
    check_tiling(method, recipe, model, tile, overlap, max_tile_pixels)
    if batch < 1:
        raise ValueError(f"--batch must be positive, got {batch}")
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, records = [], []
    for p in inputs:
        started = time.perf_counter()
        arr = read_image(p)
        image = to_float(arr)
        coc_map = None
        if source is not None and "coc" in info["needs"]:
            coc_map = source(image, optics_of.get(p), name=str(p))
        tiling = plan_tiling(method, recipe, model, *image.shape[:2], tile=tile, overlap=overlap,
                             max_tile_pixels=max_tile_pixels)
        result = restore_image(
            method, recipe, model, image, tile=tile, overlap=overlap, max_tile_pixels=max_tile_pixels, batch=batch,
            seed=seed, device=device, progress=progress, sampler_cfg=sampler_cfg, coc=coc_map,
        )
        if method.output == "defocus_map":
            dest = out / f"{p.stem}_coc.png"
            write_image(dest, encode_coc(result[:, :, 0]))  # 16-bit PNG, pixels x 256, as coc.png in the shards
        else:
            dest = out / f"{p.stem}.png"
            write_image(dest, from_float(np.clip(result, 0.0, 1.0), bit_depth(arr)))
        written.append(dest)
        records.append({
            "input": str(p), "output": str(dest), "method": method.name, "checkpoint": str(checkpoint),
            "sampler": info["settings"], "nfe": info["nfe"], "timesteps": info.get("timesteps"), "seed": seed,
            **tiling.record(),
            "coc": source.describe() if source is not None and "coc" in info["needs"] else None,
            "seconds": round(time.perf_counter() - started, 3),
        })
        _write_json(out / "deblur.json", {"images": records})
    return written


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary name, then rename: a reader never sees half a file."""
    import json
    import os

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
