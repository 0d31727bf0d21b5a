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

from defocuskit.config.recipe import Recipe
from defocuskit.data.reader import describe_splits, shard_urls, signed_coc
from defocuskit.eval.evaluate import evaluate_samples
from defocuskit.eval.figure import figure_image
from defocuskit.eval.processes import ProcessGroup, count_pairs, sample_seed, shard_share, store_gather
from defocuskit.methods import get_method
from defocuskit.methods.base import Method

VAL_SPLIT = "test"  # a shard folder named in data.val means this split of it
SUMMARY_METRICS = ("psnr", "ssim", "mae")


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
    """Scores a state dict of the recipe's network on the validation pairs (see the module docstring)."""

    def __init__(self, recipe: Recipe, method: Method, urls: list[str], needs_coc: bool) -> None:
        self.recipe, self.method, self.urls, self.needs_coc = recipe, method, urls, needs_coc
        self.limit = recipe.train.val_limit
        self.net: nn.Module | None = None

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
        from defocuskit.inference.restore import resolve_sampler, restore_image

        device = accelerator.device
        net = self._network(state, device)
        sampler_cfg = resolve_sampler(self.recipe).resolved()
        seed, name = self.recipe.seed, self.method.name

        def run(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
            coc = signed_coc(sample) if self.needs_coc else None
            if self.needs_coc and coc is None:
                raise ValueError("the sampler needs a CoC map and the sample has no coc.png")
            return restore_image(self.method, self.recipe, net, blur, seed=sample_seed(seed, sample["key"]),
                                 device=str(device), progress=False, sampler_cfg=sampler_cfg, coc=coc)

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
        finally:
            torch.set_rng_state(rng)
        if not result["rows"]:
            raise ValueError(f"data.val: no validation pair was scored ({'; '.join(result['notes']) or 'none found'})")
        record = summarise(result["rows"], name, step)
        grid = None
        if accelerator.is_main_process and result["figure"]:
            grid = figure_image(result["figure"], f"{name}: validation at step {step} (EMA weights)", "validation")
        return record, grid


def make_validator(recipe: Recipe) -> Validator | None:
    """The validator of `recipe`: None without `data.val`; ValueError (naming the key) where the recipe asks for
    validation it cannot run: `train.eval_every` without `data.val`, a method whose output is not an image, or
    validation shards without pairs."""
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
    if method.output != "image":
        raise ValueError(f"data.val: a '{method.name}' model estimates {method.output.replace('_', ' ')}s; "
                         "validation scores deblurred images")
    urls = val_urls(recipe)
    pairs = count_pairs(urls)
    if pairs == 0:
        raise ValueError(f"data.val: the shards {urls[0]} ... hold no pair (blur.png with sharp.png) to score")
    needs = sampler_settings(resolve_sampler(recipe).resolved(), recipe.objective)["needs"]
    return Validator(recipe, method, urls, needs_coc="coc" in needs)
