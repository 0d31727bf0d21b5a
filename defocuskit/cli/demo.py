"""`defocuskit demo`: the whole pipeline on a fresh machine, nothing downloaded.

Ingests the built-in synthetic aperture stacks, trains small models for a bounded time, and evaluates
them by f-number beside the input, Wiener and proximal-step baselines (CoC maps from the demo's
defocus-map model). Presets (`--preset`):

  default     the toolkit's methods: defocus-map, NAFNet, RDDM, HIDD.
  misaligned  JDRL's question: the same synthetic set ingested twice, perfectly aligned and with each
              reference moved (`--synthetic-misalign`: a shift of up to `size / 32` px and ~1 % scale);
              JDRL and NAFNet trained on the misaligned pairs, NAFNet on the aligned ones, the same time
              each, all scored on the aligned test split.
  baselines   the HIDD paper's comparison: DnCNN, FFDNet (fed the defocus-map model's CoC map), CycleGAN
              beside HIDD.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console


@dataclass(frozen=True)
class DemoModel:
    """One model the demo trains: its run name, recipe, share of the training time and training shards."""

    name: str
    recipe: str
    share: float
    data: str = "aligned"  # "aligned" or "misaligned" (the preset's second ingest)


# The defocus-map estimator comes first: RDDM loads it frozen, and it gives the CoC maps at evaluation.
PRESETS: dict[str, tuple[DemoModel, ...]] = {
    "default": (
        DemoModel("defocus-map", "defocus-map-tiny.yaml", 0.15),
        DemoModel("nafnet", "nafnet-tiny.yaml", 0.25),
        DemoModel("rddm", "rddm-tiny.yaml", 0.3),
        # HIDD deblurs with the sampler of its recipe (recipes/hidd-tiny.yaml), chosen by tools/bench_hidd_samplers.py.
        DemoModel("hidd", "hidd-tiny.yaml", 0.3),
    ),
    "misaligned": (
        DemoModel("jdrl", "jdrl-tiny.yaml", 1 / 3, "misaligned"),
        DemoModel("nafnet-misaligned", "nafnet-tiny.yaml", 1 / 3, "misaligned"),
        DemoModel("nafnet-aligned", "nafnet-tiny.yaml", 1 / 3),
    ),
    "baselines": (
        DemoModel("defocus-map", "defocus-map-tiny.yaml", 0.12),
        DemoModel("dncnn", "dncnn-tiny.yaml", 0.22),
        DemoModel("ffdnet", "ffdnet-tiny.yaml", 0.22),
        DemoModel("cyclegan", "cyclegan-tiny.yaml", 0.22),
        DemoModel("hidd", "hidd-tiny.yaml", 0.22),
    ),
}
DEMO_MODELS = PRESETS["default"]
# Held out for the test split: chelsea and rocket (8 scenes of 2 photographs; data/sources/synthetic.py test_photos),
# not the 4 variants of one photograph that the ingest default (0.1) holds out.
DEMO_TEST_FRACTION = 0.2


def recipe_path(name: str) -> Path:
    """The packaged recipe file of a demo model (inside the installed package, whatever the working directory)."""
    from defocuskit.config.recipe import packaged_recipe

    return packaged_recipe(name)


def run_demo(
    out: Path = Path("demo-out"),
    minutes: float = 5.0,
    size: int = 128,
    workers: int | None = None,
    device: str = "auto",
    limit: int | None = None,
    console: Console | None = None,
    preset: str = "default",
) -> dict:
    """Ingest the built-in set, train the preset's models for `minutes` in all, evaluate by aperture; the report.

    `workers`: ingest processes as PyTorch's num_workers (IngestOptions.workers: 0 = the main process, N >= 1 =
    N worker processes, None = one per core, at most 8);
    `device`: the evaluation device (devices.resolve_device: "auto" = CUDA, else MPS, else CPU), checked first.
    """
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.io.devices import resolve_device
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import load_recipe
    from defocuskit.train.loop import train

    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r} (known: {', '.join(PRESETS)})")
    device = resolve_device(device)
    recipes = {dm.recipe: recipe_path(dm.recipe) for dm in PRESETS[preset]}  # every recipe found before any work
    models = PRESETS[preset]
    console = console or Console()
    out = Path(out)
    start = time.monotonic()
    shards = out / "shards"
    data = {"aligned": shards, "misaligned": out / "shards-misaligned"}

    def elapsed() -> str:
        return f"{time.monotonic() - start:5.0f}s"

    console.rule("[bold]defocuskit demo")
    console.print(f"[{elapsed()}] 1/3 ingest: rendering the built-in synthetic aperture stacks into {shards}")
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), workers=workers, synthetic_size=size,
                                                             test_fraction=DEMO_TEST_FRACTION))
    if any(m.data == "misaligned" for m in models):
        shift = size / 32  # 4 px at 128 px, the ~1 % of EBB's dozen pixels at 1536 px, scaled up for small images
        console.print(f"[{elapsed()}] 1/3 ingest: the same stacks with each reference moved by up to {shift:g} px "
                      f"and ~1 % scale into {data['misaligned']}")
        run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(data["misaligned"]), workers=workers,
                                                                 synthetic_size=size, synthetic_misalign_px=shift,
                                                                 test_fraction=DEMO_TEST_FRACTION))

    checkpoints: list[Path] = []
    trained: dict[str, Path] = {}  # method -> its model file, for the companions of later models (RDDM's estimator)
    map_file: Path | None = None
    total_train_s = minutes * 60.0
    for i, dm in enumerate(models, 1):
        budget_min = minutes * dm.share
        left = max(0.0, total_train_s - sum(m.share for m in models[: i - 1]) * total_train_s)
        console.print(
            f"[{elapsed()}] 2/3 train {i}/{len(models)} {dm.name} ({dm.data} pairs): {budget_min:.1f} min "
            f"(about {left / 60:.1f} min of training left in all)"
        )
        overrides = [
            f"data.train={data[dm.data]}",
            f"output_dir={out / 'runs' / dm.name}",
            "train.max_steps=1000000",
            f"train.max_minutes={budget_min}",
            "train.checkpoint_every=1000000",
        ]
        recipe = load_recipe(recipes[dm.recipe], overrides)
        method = get_method(recipe.method)
        if method.companions:  # trained earlier in the preset
            links = [f"{c.key}={trained[c.method]}" for c in method.companions]
            recipe = load_recipe(recipes[dm.recipe], overrides + links)
        model_path = trained[method.name] = train(recipe, resume=False)
        if method.output == "defocus_map":
            map_file = model_path
        else:
            checkpoints.append(model_path)

    # The CoC map for HIDD's physics data consistency, FFDNet's level map and the Wiener / prox baselines:
    # estimated by the demo's own defocus-map model, never the shards' ground truth.
    baselines = ["input", "wiener", "prox"] if preset == "default" else ["input"]
    console.print(f"[{elapsed()}] 3/3 eval: scoring every model and the {'/'.join(baselines)} baselines by f-number "
                  "on the aligned test split" + (f"; CoC maps from the defocus-map model {map_file}" if map_file else ""))
    report_dir = out / "report"
    config = EvalConfig(split="test", by_aperture=True, limit=limit, coc="map" if map_file else None,
                        coc_model=map_file, report_dir=report_dir, device=device)
    report = evaluate(shards, checkpoints, baselines, config)
    console.print(f"[{elapsed()}] done. Report: {report_dir / 'report.json'}, {report_dir / 'report.csv'}; plot: {report_dir / 'aperture.png'}")
    return report
