"""`defocuskit demo`: the whole pipeline on a fresh machine, nothing downloaded.

Ingests the built-in synthetic aperture stacks, trains small models of every implemented method for a
bounded time, and evaluates them by f-number beside the input, Wiener and proximal-step baselines (CoC maps
from the demo's defocus-map model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@dataclass(frozen=True)
class DemoModel:
    """One model the demo trains: its recipe and its share of the training time."""

    name: str
    recipe: str
    share: float


# The defocus-map estimator comes first: RDDM loads it frozen.
DEMO_MODELS = (
    DemoModel("defocus-map", "defocus-map-tiny.yaml", 0.15),
    DemoModel("nafnet", "nafnet-tiny.yaml", 0.25),
    DemoModel("rddm", "rddm-tiny.yaml", 0.3),
    # HIDD deblurs with the sampler of its recipe (recipes/hidd-tiny.yaml), chosen by tools/bench_hidd_samplers.py.
    DemoModel("hidd", "hidd-tiny.yaml", 0.3),
)


def _recipe_path(name: str) -> Path:
    """The packaged recipe file (the repository's recipes/ folder)."""
    path = RECIPES / name
    if not path.is_file():
        raise FileNotFoundError(f"demo recipe not found: {path} (run the demo from a source checkout)")
    return path


def run_demo(
    out: Path = Path("demo-out"),
    minutes: float = 5.0,
    size: int = 128,
    workers: int = 0,
    device: str | None = None,
    limit: int | None = None,
    console: Console | None = None,
) -> dict:
    """Ingest the built-in set, train every method for `minutes` in all, evaluate by aperture; returns the report."""
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.train.loop import train
    from defocuskit.train.recipe import load_recipe

    console = console or Console()
    out = Path(out)
    start = time.monotonic()
    shards = out / "shards"

    def elapsed() -> str:
        return f"{time.monotonic() - start:5.0f}s"

    console.rule("[bold]defocuskit demo")
    console.print(f"[{elapsed()}] 1/3 ingest: rendering the built-in synthetic aperture stacks into {shards}")
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), workers=workers, synthetic_size=size))

    checkpoints: list[Path] = []
    map_file: Path | None = None
    total_train_s = minutes * 60.0
    for i, dm in enumerate(DEMO_MODELS, 1):
        budget_min = minutes * dm.share
        left = max(0.0, total_train_s - sum(m.share for m in DEMO_MODELS[: i - 1]) * total_train_s)
        console.print(
            f"[{elapsed()}] 2/3 train {i}/{len(DEMO_MODELS)} {dm.name}: {budget_min:.1f} min "
            f"(about {left / 60:.1f} min of training left in all)"
        )
        overrides = [
            f"data.train={shards}",
            f"output_dir={out / 'runs' / dm.name}",
            "train.max_steps=1000000",
            f"train.max_minutes={budget_min}",
            f"train.checkpoint_every=1000000",
        ]
        if dm.name == "rddm":
            overrides.append(f"model.map_checkpoint={map_file}")
        recipe = load_recipe(_recipe_path(dm.recipe), overrides)
        model_path = train(recipe, resume=False)
        if dm.name == "defocus-map":
            map_file = model_path
        else:
            checkpoints.append(model_path)

    # The CoC map for HIDD's physics data consistency and for the Wiener / prox baselines: estimated by the
    # demo's own defocus-map model, never the shards' ground truth.
    console.print(f"[{elapsed()}] 3/3 eval: scoring every model and the input/Wiener/prox baselines by f-number; "
                  f"CoC maps from the defocus-map model {map_file}")
    report_dir = out / "report"
    report = evaluate(
        shards,
        checkpoints=checkpoints,
        baselines=["input", "wiener", "prox"],
        split="test",
        by_aperture=True,
        limit=limit,
        coc="map",
        coc_model=map_file,
        report_dir=report_dir,
        device=device or "cpu",
    )
    console.print(f"[{elapsed()}] done. Report: {report_dir / 'report.json'}, {report_dir / 'report.csv'}; plot: {report_dir / 'aperture.png'}")
    return report
