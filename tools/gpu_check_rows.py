"""The rows of tools/gpu_check.py: what each measures and how (the package's own functions, random weights)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.inference.restore import resolve_sampler, restore_image
from defocuskit.inference.tiling import TilingOptions, plan_tiling
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one mode runs: device, recipes and sizes."""

    device: str
    mixed_precision: str
    recipes: tuple[str, ...]
    warmup: int
    steps: int
    synthetic_size: int
    f_numbers: tuple[float, ...]
    shard_size: int
    eval_recipe: str
    eval_size: tuple[int, int]  # (height, width)
    eval_images: int
    tile: int
    hidd_recipe: str
    hidd_size: int
    hidd_released_steps: int | None  # None: the sampler's own (1000)
    rddm_recipe: str
    rddm_size: tuple[int, int]


@dataclasses.dataclass
class Row:
    """One measured row: what ran, its figures (finite, not negative), the peak memory, or its error."""

    name: str
    what: str = ""
    result: str = ""
    figures: dict[str, float] = dataclasses.field(default_factory=dict)
    peak_mib: float | None = None
    seconds: float = 0.0
    error: str | None = None


class Context:
    """The work folder, the plan and what the rows share (shards, model files), made on first use."""

    def __init__(self, plan: Plan, work: Path):
        self.plan, self.work = plan, work
        self.cuda = plan.device.startswith("cuda")
        self._cache: dict[str, Any] = {}

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def start(self) -> float:
        """Mark the start of the measured part: synchronise, reset the peak-memory counter, return the clock."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return time.perf_counter()

    def stop(self, start: float) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def shards(self) -> Path:
        """The synthetic training shards (`defocuskit ingest --synthetic builtin` at the plan's size)."""
        def make() -> Path:
            from defocuskit.data.ingest import run_ingest
            from defocuskit.data.sample import IngestOptions

            out = self.work / "shards"
            with quiet(self.work / "logs" / "ingest.log"):
                run_ingest({"synthetic": Path("builtin")},
                           IngestOptions(out=str(out), workers=0 if self.plan.device == "cpu" else None,
                                         synthetic_size=self.plan.synthetic_size, shard_size=self.plan.shard_size,
                                         synthetic_f_numbers=self.plan.f_numbers), progress=False)
            return out
        return self.once("shards", make)

    def export(self, recipe_name: str, folder: str) -> Path:
        """A model file of the recipe's network with random weights (seed 0), as `defocuskit train` exports it."""
        def make() -> Path:
            recipe = load_recipe(recipe_name, offline(load_recipe(recipe_name)))
            method = get_method(recipe.method)
            torch.manual_seed(0)
            path = self.work / "models" / folder / "model.safetensors"
            save_model(path, method.build(recipe.model, recipe.objective, False).state_dict(), method.name,
                       recipe_to_dict(recipe))
            return path
        return self.once(f"export:{recipe_name}:{folder}", make)

    def network(self, recipe_name: str) -> tuple[Any, Any, torch.nn.Module]:
        """The recipe's network with random weights (seed 0) on the plan's device, in eval mode; the network of
        another recipe is let go first (it would count in this row's peak memory)."""
        for key in [k for k in self._cache if k.startswith("net:") and k != f"net:{recipe_name}"]:
            del self._cache[key]
        gc.collect()

        def make() -> tuple[Any, Any, torch.nn.Module]:
            recipe = load_recipe(recipe_name)
            method = get_method(recipe.method)
            torch.manual_seed(0)
            return method, recipe, method.build(recipe.model, recipe.objective, False).to(self.plan.device).eval()
        return self.once(f"net:{recipe_name}", make)


@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send what the package prints (parameter tables, progress bars) to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def offline(recipe: Any) -> list[str]:
    """Overrides that null every pretrained-weights key of the model section (nothing is downloaded)."""
    return [f"model.{f.name}=null" for f in dataclasses.fields(recipe.model)
            if f.name.endswith("pretrained") and isinstance(getattr(recipe.model, f.name), str)]


def missing_terms(method: Any, recipe: Any, shards: Path) -> list[str]:
    """Overrides that zero the loss terms whose members the synthetic shards lack (defocus-map: blurmask.png)."""
    from defocuskit.data.tar_index import index_shard
    from defocuskit.train.stream import has_members

    entries = [e for url in sorted(shards.glob("train-*.tar")) for e in index_shard(str(url))]
    return [f"{key}=0" for key, member in method.terms
            if not any(has_members(e, (member,)) for e in entries)]


def weight_links(ctx: Context, recipe_name: str, method: Any, recipe: Any) -> list[str]:
    """Overrides that point every model file the recipe reads (its companions' models, a fine-tuning recipe's
    `train.init_from`) at exports with random weights (nothing is downloaded or needed from the user)."""
    suffix = "-tiny" if recipe_name.endswith("-tiny") else ""
    links = [f"{c.key}={ctx.export(c.method + suffix, 'companion-' + c.method)}" for c in method.companions]
    if recipe.train.init_from:
        links.append(f"train.init_from={ctx.export(recipe_name, 'init-' + recipe_name)}")
    return links


def train_row(ctx: Context, row: Row, recipe_name: str) -> None:
    """Train `recipe_name` for warm-up + measured steps; images/s of the measured steps from metrics.jsonl."""
    from defocuskit.train.loop import train

    plan = ctx.plan
    shards, out = ctx.shards(), ctx.work / "runs" / recipe_name
    overrides = [f"data.train={shards}", f"output_dir={out}", f"train.max_steps={plan.warmup + plan.steps}",
                 "train.log_every=1", "train.checkpoint_every=1000000000", "train.max_minutes=null",
                 f"train.mixed_precision={plan.mixed_precision}"]
    recipe = load_recipe(recipe_name, overrides)
    method = get_method(recipe.method)
    recipe = load_recipe(recipe_name, overrides + offline(recipe) + missing_terms(method, recipe, shards)
                         + weight_links(ctx, recipe_name, method, recipe))
    start = ctx.start()
    with quiet(ctx.work / "logs" / f"{row.name.replace('/', '_')}.log"):
        train(recipe, resume=False)
    row.seconds = ctx.stop(start)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in log if r["step"] > plan.warmup]
    if len(measured) != plan.steps:
        raise RuntimeError(f"metrics.jsonl has {len(measured)} rows after step {plan.warmup}, expected {plan.steps}")
    per_step = recipe.data.batch_size * recipe.train.grad_accum
    steps = np.diff([plan.warmup] + [r["step"] for r in measured])
    seconds = sum(n * per_step / r["images_per_s"] for n, r in zip(steps, measured))
    images = int(steps.sum()) * per_step
    wait = sum(r["data_wait_s"] for r in measured)
    row.figures = {"images_per_s": images / seconds, "measured_s": seconds, "data_wait_fraction": wait / seconds}
    precision = {"no": "fp32"}.get(plan.mixed_precision, plan.mixed_precision)
    row.what = (f"{recipe.data.image_size} px crops, batch {recipe.data.batch_size}, {precision}, steps "
                f"{plan.warmup + 1}-{plan.warmup + plan.steps} of {plan.warmup + plan.steps}")
    row.result = f"{images / seconds:.1f} images/s (data wait {100 * wait / seconds:.0f} %)"


def write_pairs(folder: Path, n: int, height: int, width: int) -> None:
    """A test shard of `n` random pairs of height x width (timing does not depend on the content)."""
    import webdataset as wds

    from defocuskit.data.shards import encode_members

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / "test-%06d.tar"), maxcount=100, verbose=0) as sink:
        for i in range(n):
            sharp = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            meta = {"source": "random", "f_number": 1.8}
            sink.write({"__key__": f"random/{i}", **encode_members(sharp, (sharp // 2 + 64).astype(np.uint8), None, meta)})


def eval_row(ctx: Context, row: Row, tile: int | None) -> None:
    """`evaluate` (the eval command) of the plan's NAFNet on random pairs: whole images, or --tile `tile`."""
    from rich.console import Console

    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    plan = ctx.plan
    (h, w), n = plan.eval_size, plan.eval_images
    shards = ctx.work / "eval-shards"
    model = ctx.export(plan.eval_recipe, "nafnet")
    console = ctx.once("quiet-console", lambda: Console(file=open(os.devnull, "w")))  # noqa: SIM115

    def run(label: str, tiling: TilingOptions, limit: int | None = None) -> dict:
        config = EvalConfig(split="test", limit=limit, report_dir=ctx.work / f"report-{label}", progress=False,
                            tiling=tiling, device=plan.device)
        return evaluate(shards, [model], [], config, console=console)

    def warm_up() -> bool:
        write_pairs(shards, n, h, w)
        run("warm-up", TilingOptions(), limit=1)  # CUDA context, kernels and the model file's first read
        return True

    ctx.once("eval-warm-up", warm_up)
    start = ctx.start()
    report = run(row.name.replace("/", "-"), TilingOptions(tile=tile))
    row.seconds = ctx.stop(start)
    ran = ", ".join(f"{k} ({v} images)" for info in report["protocol"]["methods"].values() for k, v in info["ran"].items())
    row.figures = {"s_per_image": row.seconds / n}
    row.what = f"{plan.eval_recipe} (random weights), {n} images of {w}x{h}, {ran}"
    row.result = f"{row.seconds / n:.3f} s / image"


def hidd_row(ctx: Context, row: Row, sampler: str) -> None:
    """One size x size one-channel image through the HIDD prior with the named sampler (identity consistency)."""
    plan = ctx.plan
    method, recipe, model = ctx.network(plan.hidd_recipe)
    s = plan.hidd_size
    image = np.random.default_rng(0).random((s, s, 1), dtype=np.float32)
    identity = ["sampler.consistency=identity"]
    steps = plan.hidd_released_steps if sampler == "released" else None
    cfg = resolve_sampler(recipe, steps, name=sampler, sets=identity)
    ctx.once("hidd-warm-up", lambda: restore_image(method, recipe, model, image, device=plan.device, progress=False,
                                                   sampler_cfg=resolve_sampler(recipe, 2, name="fast", sets=identity)))
    tiles = plan_tiling(method, recipe, model, s, s).tiles
    start = ctx.start()
    out = restore_image(method, recipe, model, image, device=plan.device, progress=False, sampler_cfg=cfg, seed=0)
    row.seconds = ctx.stop(start)
    if not np.isfinite(out).all():
        raise RuntimeError("the output is not finite")
    resolved = cfg.resolved()
    nfe = resolved.nfe() * tiles
    row.figures = {"nfe": float(nfe), "nfe_per_s": nfe / row.seconds, "s_per_image": row.seconds}
    row.what = (f"{plan.hidd_recipe} (random weights), {s}x{s} one channel, {tiles} tile(s), --sampler {sampler} "
                f"({resolved.steps} steps, {nfe} NFE, identity consistency)")
    row.result = f"{nfe / row.seconds:.1f} NFE/s, {row.seconds:.2f} s / image"


def rddm_row(ctx: Context, row: Row) -> None:
    """RDDM's latency on one RGB image of the plan's size (after one untimed run of the same size), whole or tiled
    and sampled as `defocuskit deblur` runs it."""
    plan = ctx.plan
    method, recipe, model = ctx.network(plan.rddm_recipe)
    h, w = plan.rddm_size
    rng = np.random.default_rng(0)
    image = rng.random((h, w, 3), dtype=np.float32)
    ctx.once("rddm-warm-up", lambda: restore_image(method, recipe, model, image, device=plan.device, progress=False))
    tiling = plan_tiling(method, recipe, model, h, w)
    start = ctx.start()
    out = restore_image(method, recipe, model, image, device=plan.device, progress=False)
    row.seconds = ctx.stop(start)
    if out.shape != image.shape or not np.isfinite(out).all():
        raise RuntimeError(f"output of shape {out.shape}, finite: {bool(np.isfinite(out).all())}")
    steps = recipe.sampler.steps
    row.figures = {"s_per_image": row.seconds, "steps": float(steps)}
    passes = "one pass" if tiling.whole else f"{tiling.tiles} tiles, batch 4"
    row.what = f"{plan.rddm_recipe} (random weights), {w}x{h} RGB, {steps} DDIM steps, {tiling.describe()} ({passes})"
    row.result = f"{row.seconds:.2f} s / image"


