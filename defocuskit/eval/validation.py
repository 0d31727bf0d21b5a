"""Validation during training (`data.val`, `train.eval_every`): the run's EMA weights scored on held-out shards by
f-number, as `defocuskit eval --by-aperture` scores a model, beside the blurred input.

The training loop (one floor below) knows only the `Validate` callable it is handed; `make_validator` builds it
from the recipe, after checking the validation shards, before any training. Every process scores its share of the
pairs (pair j on process j % world, as eval splits them) and the main process gets the merged rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from defocuskit.config.recipe import Recipe, recipe_to_dict
from defocuskit.data.reader import describe_splits, shard_urls
from defocuskit.data.tar_index import index_shard, is_local
from defocuskit.eval.config import EvalConfig
from defocuskit.eval.evaluate import evaluate_samples
from defocuskit.eval.figure import figure_image
from defocuskit.eval.processes import ProcessGroup, count_pairs, shard_share, store_gather
from defocuskit.eval.runners import model_runner
from defocuskit.inference.coc_source import CocError, CocSource
from defocuskit.methods import get_method
from defocuskit.methods.base import Method
from defocuskit.methods.recipes import resolve_recipe

VAL_SPLIT = "test"  # a shard folder named in data.val means this split of it
SUMMARY_METRICS = ("psnr", "ssim", "mae")
EVAL_DEFAULTS = EvalConfig()  # validation runs the model as `defocuskit eval` does unless told otherwise


def val_urls(recipe: Recipe) -> list[str]:
    """The shards `data.val` names, in order (a folder means its "test" split); ValueError naming the entry that
    names none."""
    specs = recipe.data.val if isinstance(recipe.data.val, list) else [recipe.data.val]
    urls: list[str] = []
    for i, spec in enumerate(specs):
        label = "data.val" if isinstance(recipe.data.val, str) else f"data.val[{i}]"
        folder = Path(str(spec)).is_dir()
        try:
            found = shard_urls(spec, VAL_SPLIT if folder else None)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{label}: {exc}") from None
        if not found:
            splits = f" (its splits: {describe_splits(Path(str(spec)))})" if folder else ""
            raise ValueError(f"{label}: '{spec}' names no {VAL_SPLIT} shards{splits}")
        urls += found
    return urls


def summarise(rows: list[dict[str, Any]], method: str, step: int) -> dict[str, Any]:
    """The metrics.jsonl record of one validation: the model's mean scores over every pair ("val_psnr", its input's
    "val_psnr_input" and gain, ...) and the same per f-number ("val_by_f_number": {"1.8": {...}})."""

    def scores(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": row["n"]}
        for m in SUMMARY_METRICS:
            out.update({m: row.get(m), f"{m}_input": row.get(f"{m}_input"), f"{m}_gain": row.get(f"{m}_gain")})
        return out

    mine = [r for r in rows if r["method"] == method and r.get("source") is None]
    pooled = next(r for r in mine if r["f_number"] is None)
    record: dict[str, Any] = {"step": step, **{f"val_{k}": v for k, v in scores(pooled).items()}}
    record["val_by_f_number"] = {f"{r['f_number']:g}": scores(r) for r in mine if r["f_number"] is not None}
    return record


class Validator:
    """Scores a state dict of the recipe's network on the validation pairs (see the module docstring): as
    `defocuskit eval` scores the exported model with its defaults (the model's own focus gate, its recipe's sampler,
    seed 0, whole images or tiles as eval runs them); `--coc oracle` (the shards' coc.png) where the sampler needs a
    CoC map."""

    def __init__(self, recipe: Recipe, method: Method, urls: list[str], needs_coc: bool,
                 notes: list[str] | None = None) -> None:
        self.recipe, self.method, self.urls, self.needs_coc = recipe, method, urls, needs_coc
        self.limit = recipe.train.val_limit
        self.net: nn.Module | None = None
        self.notes = list(notes or [])  # said once, before the first validation (the loop's hook prints them)
        self.coc = CocSource.create("oracle") if needs_coc else None
        self.own_maps: dict[str, CocSource] = {}  # the edge estimate of the model's own gate, made once

    def _network(self, state: dict[str, torch.Tensor], device: torch.device) -> nn.Module:
        if self.net is None:  # built once, as an exported model is rebuilt (no frozen parts read from files)
            self.net = self.method.build(self.recipe.model, self.recipe.objective, False).to(device)
        self.net.load_state_dict(state, strict=True)
        return self.net.eval()

    @torch.no_grad()
    def __call__(self, state: dict[str, torch.Tensor], step: int, accelerator: Any
                 ) -> tuple[dict[str, Any], np.ndarray | None]:
        """(the metrics record, a grid of crops per f-number: input, output, reference) on every process; every
        process must call it (the rows are gathered)."""
        from defocuskit.inference.restore import resolve_sampler

        device = accelerator.device
        net = self._network(state, device)
        name = self.method.name
        run, desc = model_runner(self.method, self.recipe, net, resolve_sampler(self.recipe).resolved(),
                                 tiling=EVAL_DEFAULTS.tiling, device=str(device), seed=EVAL_DEFAULTS.seed,
                                 coc=self.coc, own_maps=self.own_maps)
        world = accelerator.num_processes
        if world > 1:
            gather = store_gather(accelerator.process_index, world)
        else:
            def gather(obj: Any) -> list[Any]:
                return [obj]
        group = ProcessGroup(accelerator.process_index, world, accelerator.local_process_index, gather)
        rng = torch.get_rng_state()  # a sampler's draws leave the training stream as it was
        try:
            result = evaluate_samples(shard_share(self.urls, group, self.limit), {name: run}, progress=False,
                                      gather=gather, figure=True)
        except CocError as exc:
            raise ValueError(f"data.val: {exc}") from None
        finally:
            torch.set_rng_state(rng)
        if not result["rows"]:
            raise ValueError(f"data.val: no validation pair was scored ({'; '.join(result['notes']) or 'none found'})")
        record = {**summarise(result["rows"], name, step), **skipped(result["skipped"]),
                  "val_protocol": protocol_record(desc)}
        grid = None
        if accelerator.is_main_process and result["figure"]:
            grid = figure_image(result["figure"], f"{name}: validation at step {step} (EMA weights)", "validation")
        return record, grid


def skipped(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's count of the pairs left unscored ("val_skipped") and the first one's key and reason."""
    if not rows:
        return {"val_skipped": 0}
    return {"val_skipped": len({r["key"] for r in rows}), "val_skipped_first": f"{rows[0]['key']}: {rows[0]['reason']}"}


def protocol_record(desc: dict[str, Any]) -> dict[str, Any]:
    """How the validation ran, from what eval's report says of a model (`runners.model_runner`): the sampler settings,
    NFE and seed, the CoC map (source name; None: none), the focus gate, the tiles."""
    coc = desc.get("coc")
    return {"seed": desc["seed"], "sampler": desc["sampler"], "nfe": desc["nfe"], "timesteps": desc.get("timesteps"),
            "coc": coc["source"] if coc else None, "focus_gate": desc["focus_gate"], "inference": desc["inference"],
            "ensemble": desc["ensemble"]}


def as_exported(method: Method, recipe: Recipe) -> Recipe:
    """`recipe` as the exported model file's recipe is read back (`Method.upgrade_recipe`): what `eval` runs, e.g.
    FFDNet's sampler.level_map null filled from model.level_map (a model trained with level_map none needs no map)."""
    return resolve_recipe(method.upgrade_recipe(recipe_to_dict(recipe)))


def make_validator(recipe: Recipe) -> Validator | None:
    """The validator of `recipe`: None without `data.val`; ValueError (naming the key) where the recipe asks for
    validation it cannot run: `train.eval_every` without `data.val`, a method whose output is not an image, or
    validation shards without pairs. Its `notes` say where the validation shards are training shards too."""
    from defocuskit.inference.restore import resolve_sampler, sampler_settings

    t = recipe.train
    if recipe.data.val is None or recipe.data.val == []:
        if t.eval_every:
            raise ValueError(f"train.eval_every is {t.eval_every} but data.val names no validation shards "
                             "(give data.val=FOLDER or a shard pattern)")
        if t.keep_best:
            raise ValueError("train.keep_best needs validation: give data.val")
        return None
    if t.eval_every < 0 or (t.val_limit is not None and t.val_limit < 1):
        raise ValueError("train.eval_every must be >= 0 and train.val_limit >= 1 (or null: every pair)")
    method = get_method(recipe.method)
    recipe = as_exported(method, recipe)
    if method.output != "image":
        raise ValueError(f"data.val: a '{method.name}' model estimates {method.output.replace('_', ' ')}s; "
                         "validation scores deblurred images")
    urls = val_urls(recipe)
    pairs = count_pairs(urls)
    if pairs == 0:
        raise ValueError(f"data.val: the shards {urls[0]} ... hold no pair (blur.png with sharp.png) to score")
    needs = sampler_settings(resolve_sampler(recipe).resolved(), recipe.objective)["needs"]
    if "coc" in needs and (missing := pair_without_coc(urls, t.val_limit)):
        raise ValueError(f"data.val: the '{method.name}' sampler needs a CoC map and validation gives it the shards' "
                         f"coc.png, which pair {missing} has not: give data.val shards with coc.png (synthetic or "
                         "rendered), or sampler settings that need none (hidd: sampler.consistency; ffdnet: "
                         "sampler.level_map)")
    return Validator(recipe, method, urls, needs_coc="coc" in needs, notes=shared_with_training(recipe, urls))


def pair_without_coc(urls: list[str], limit: int | None) -> str | None:
    """'KEY of SHARD' of the first of the first `limit` pairs without coc.png, from the tar headers; None where every
    one has it (or the shards are remote)."""
    if not all(is_local(u) for u in urls):
        return None
    pairs = 0
    for url in urls:
        for entry in index_shard(url):
            if not entry.has(("blur.png", "sharp.png")):
                continue
            if limit is not None and pairs >= limit:
                return None
            pairs += 1
            if not entry.has(("coc.png",)):
                return f"{entry.key} of {url}"
    return None


def shared_with_training(recipe: Recipe, urls: list[str]) -> list[str]:
    """The note to print where validation shards are also training shards (a pattern naming both, the same files):
    its scores are then of samples the model trains on; [] where they share none (or data.train cannot be read:
    training names that itself)."""
    import os

    from defocuskit.train.data import train_urls

    try:
        train = {os.path.realpath(u) for u in train_urls(recipe.data) if "://" not in u and not u.startswith("pipe:")}
    except (FileNotFoundError, ValueError):
        return []
    shared = [u for u in urls if os.path.realpath(u) in train]
    if not shared:
        return []
    more = ", ..." if len(shared) > 1 else ""
    return [f"note: data.val: {len(shared)} of its {len(urls)} shard(s) ({shared[0]}{more}) are data.train's too: "
            "validation scores samples the model trains on"]
