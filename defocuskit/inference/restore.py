"""Full-resolution inference at the size the model can take: a convolutional model runs the whole (padded) image
in one pass while it fits a memory budget; larger images and attention models run in overlapping tiles, blended.
The sampler settings a run uses (recipe's, with command-line changes) and what is recorded of them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.config.recipe import Recipe, recipe_to_dict
from defocuskit.config.typed import RecipeError, apply_overrides, build_dataclass
from defocuskit.inference.ensemble import check_ensemble, self_ensemble
from defocuskit.inference.tiling import TileBlend, TilingOptions, plan_tiling, tile_seed
from defocuskit.methods.base import Conditions, Method, RestoreContext


def _override_key(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{option} '{item}' is not of the form sampler.KEY=VALUE")
    if key.startswith("sampler."):
        key = key[len("sampler."):]
    elif ":" in key.split(".", 1)[0]:  # eval's LABEL:sampler.KEY=VALUE, given where one model runs
        raise ValueError(f"{option} '{item}': a label (LABEL:sampler.KEY=VALUE) picks one of eval's checkpoints; "
                         "here one model runs: sampler.KEY=VALUE")
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
    said_of: dict[str, tuple[str, str]] = {}
    for item in sets:  # the same key twice: which value runs would be a guess
        key, value = _override_key(item, "--set")
        first_value, first = said_of.setdefault(key, (value.strip(), item))
        if first_value != value.strip():
            raise ValueError(f"--set {first} and --set {item} disagree; give sampler.{key} once")
    for option, value, key in (("--sampler", name, "name"), ("--steps", steps, "steps")):
        said = [v.strip() for k, v in (_override_key(item, "--set") for item in sets) if k == key]
        if value is not None and said and said[-1] != str(value):  # which one runs would be a guess: neither
            raise ValueError(f"{option} {value} and --set sampler.{key}={said[-1]} disagree; give the {key} once")
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


def sampler_settings(sampler: Any, objective: Any = None) -> dict[str, Any]:
    """The full sampler settings as they run, with the NFE per tile and, where a scheduler sets them (and the
    recipe's `objective` is given), the timesteps visited: what deblur.json and report.json record."""
    resolved = sampler.resolved()
    if objective is not None:
        resolved.check(objective)  # a setting the model's noise schedule cannot run: named before any image
    settings = {f.name: _plain(getattr(resolved, f.name)) for f in dataclasses.fields(resolved)} \
        if dataclasses.is_dataclass(resolved) else {}
    info = {"settings": settings, "nfe": int(resolved.nfe()), "needs": sorted(resolved.needs())}
    timesteps = resolved.timesteps(objective) if objective is not None else None
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


def model_channels(recipe: Recipe) -> int | None:
    """The channels the network takes: model.channels where the method has that key (training checked it equal to
    data.channels); None where it has none (the method takes the images as they come)."""
    return getattr(recipe.model, "channels", None)


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad (replicate where the image is too small to reflect) bottom/right to a multiple of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x
    return F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")


@torch.no_grad()
def restore_batch(method: Method, model: nn.Module, blur: torch.Tensor, ctx: RestoreContext,
                  channels: int | None = None) -> torch.Tensor:
    """`method.restore` on a (B, C, H, W) batch in [0, 1] of any size the model can take: a one-channel model
    (`channels`: the recipe's model.channels; None: the images') restores each colour channel as its own image (the
    conditions repeated per channel); H and W are padded to the network's multiple (`Method.pad_multiple`) and
    cropped back; the result has the input's device and dtype."""
    if blur.dim() != 4:
        raise ValueError(f"{method.name} restore: expected (B, C, H, W), got shape {tuple(blur.shape)}")
    b, c, h, w = blur.shape
    channels = c if channels is None else channels
    conditions: Conditions = {k: v for k, v in (ctx.conditions or {}).items() if v is not None}
    x = blur
    if c != channels:
        if channels != 1:
            rgb = " (RGB)" if channels == 3 else ""
            raise ValueError(f"{method.name}: a {channels}-channel model{rgb} cannot restore {c}-channel images "
                             "(model.channels must equal data.channels)")
        x = blur.reshape(b * c, 1, h, w)  # channel by channel, each with its sample's conditions
        conditions = {k: v.repeat_interleave(c, dim=0) for k, v in conditions.items()}
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    multiple = int(method.pad_multiple(model))
    x = _pad(x, multiple)
    conditions = {k: _pad(v.to(device=x.device, dtype=torch.float32), multiple) for k, v in conditions.items()}
    out = method.restore(model, x, dataclasses.replace(ctx, conditions=conditions))[..., :h, :w]
    if c != channels:
        out = out.reshape(b, c * out.shape[1], h, w)
    return out.to(device=blur.device, dtype=blur.dtype)


def restore_in_channels(method: Method, recipe: Recipe, model: nn.Module, image: np.ndarray, **options: Any
                        ) -> np.ndarray:
    """`restore_image(..., **options)` of a float (H, W, 1) gray or (H, W, 3) colour image, with the result in the
    image's channels: a colour network (data.channels 3) sees gray as RGB and gives back its channels' mean."""
    gray = image.shape[2] == 1
    net_in = np.repeat(image, 3, axis=2) if gray and int(recipe.data.channels) == 3 else image
    out = restore_image(method, recipe, model, net_in, **options)
    return out.mean(axis=2, keepdims=True) if gray and out.shape[2] != 1 else out


@torch.no_grad()
def restore_image(
    method: Method,
    recipe: Recipe,
    model: nn.Module,
    image: np.ndarray,
    *,
    tiling: TilingOptions = TilingOptions(),
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: Any = True,
    sampler_cfg: Any = None,
    coc: np.ndarray | None = None,
    channels_last: bool | None = None,
    ensemble: int = 1,
) -> np.ndarray:
    """Run `method` on a float32 (H, W, C) image in [0, 1]; returns float32 (H, W, C_out).

    `plan_tiling` decides how, from `tiling`: a convolutional method (`Method.whole_image`) runs the whole image,
    reflect-padded to the network's multiple, in one pass while it has at most `tiling.max_tile_pixels`
    pixels, else in the largest tiles within that budget; an attention method runs tiles of the
    recipe's training size; an explicit `tiling.tile` runs tiles of that size. Tiles overlap by `tiling.overlap`
    (default min(32, tile // 4)) and are blended with raised-cosine weights; `tiling.batch` tiles go through
    the network at once, so memory is bounded by tile * batch. Padding is cropped back.

    `coc` (H, W), the circle-of-confusion map in pixels, is cut into the same tiles and handed to
    the method as `conditions["coc"]`; a sampler that needs it (physics consistency) fails without it.
    Each batch of tiles draws its noise from a generator seeded from (seed, index of its first tile):
    the result is reproducible for a given seed, tiling and batch.

    `channels_last`: hand the network its input in channels-last memory format; None (default): where the
    method says it is faster (`Method.channels_last`) and the device is a CPU.

    `progress`: True shows a bar of the tiles and of the sampler's steps inside each; a rich Progress
    (eval's) gets those two tasks added, and removed when the image is done; False shows nothing.

    `ensemble` 4 or 8: the geometric self-ensemble (inference.ensemble): the image and its CoC map restored under
    4 flips (or 8 flips and transposes), each output turned back and averaged; transform k draws from seed + k.
    """
    if image.ndim != 3:
        raise ValueError(f"restore_image needs an (H, W, C) image, got shape {image.shape}")
    if check_ensemble(ensemble) > 1:
        def member(x: np.ndarray, coc_map: np.ndarray | None, member_seed: int) -> np.ndarray:
            return restore_image(method, recipe, model, x, tiling=tiling, steps=steps, seed=member_seed, device=device,
                                 progress=progress, sampler_cfg=sampler_cfg, coc=coc_map, channels_last=channels_last)

        if coc is not None and coc.shape != image.shape[:2]:
            raise ValueError(f"CoC map {coc.shape[1]}x{coc.shape[0]} does not match the image "
                             f"{image.shape[1]}x{image.shape[0]}")
        return self_ensemble(member, image, coc, ensemble, seed)
    sampler = (sampler_cfg if sampler_cfg is not None else resolve_sampler(recipe, steps)).resolved()
    height, width, _ = image.shape
    if "coc" in sampler.needs() and coc is None:
        raise ValueError(f"'{method.name}' with these settings needs a CoC map (conditions['coc']): "
                         "--coc map --coc-model FILE | --coc oracle | --coc fnumber")
    if coc is not None and coc.shape != (height, width):
        raise ValueError(f"CoC map {coc.shape[1]}x{coc.shape[0]} does not match the image {width}x{height}")
    plan = plan_tiling(method, recipe, model, height, width, tiling)
    batch = tiling.batch
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
    blend = TileBlend((ph, pw), (th, tw), overlap)
    boxes = blend.boxes
    n_batches = math.ceil(len(boxes) / batch)
    with _progress(progress) as bar:
        tiles_task = bar.add_task(f"  {plan.describe()}", total=len(boxes)) if bar else None
        steps_task = bar.add_task("  steps", total=None) if bar else None

        def on_step(state: dict[str, Any]) -> None:
            bar.update(steps_task, completed=state["i"] + 1, total=state["n"])

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
                ctx = RestoreContext(sampler, recipe.objective, gen, on_step if bar is not None else None,
                                     conditions or {})
                out = restore_batch(method, model, blur, ctx, model_channels(recipe))
                out = out.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
                if out.shape[1:3] != (th, tw):
                    raise ValueError(f"method '{method.name}' returned tiles of {out.shape[1:3]}, expected {(th, tw)}")
                blend.add(chunk, out)
                if bar is not None:
                    bar.update(tiles_task, advance=len(chunk))
        finally:
            if bar is not None and bar is progress:  # the caller's bar keeps only its own tasks
                bar.remove_task(tiles_task)
                bar.remove_task(steps_task)
    return np.ascontiguousarray(blend.result()[:height, :width])
