"""`defocuskit demo`: the whole pipeline on a fresh machine, nothing downloaded.

Ingests the built-in synthetic aperture stacks, trains small models for a fixed number of steps each (so the
table is the same on a busy and an idle machine; `--minutes` only caps the training time in all, as a safety
net, and says so when it cuts a run short; it keeps MODEL_RESERVE_S of it for each model's setup and export, and
refuses a budget below `smallest_minutes`), and evaluates them by f-number beside the input, Wiener and
proximal-step baselines (CoC maps from the demo's defocus-map model). `demo.json` in the output folder records
each model's planned and reached steps and its training time; it says `"complete": false` from the start of a
run until its end, so a killed rerun's folder (some models of the earlier run replaced) is not read as a finished
demo. Presets (`--preset`):

  default     the toolkit's methods: defocus-map, NAFNet, RDDM, HIDD.
  misaligned  JDRL's question: the same synthetic set ingested twice, perfectly aligned and with each
              reference moved (`--synthetic-misalign`: a shift of up to `size / 32` px and ~1 % scale);
              JDRL and NAFNet trained on the misaligned pairs, NAFNet on the aligned ones, the same time
              each, all scored on the aligned test split.
  baselines   the HIDD paper's comparison: DnCNN, FFDNet (fed the defocus-map model's CoC map), CycleGAN
              beside HIDD.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from defocuskit.io import locks
from defocuskit.io.atomic import atomic_write

DEMO_LOCK = ".demo.lock"  # in --out, held for a whole demo (io.locks): a second demo there stops at once


@dataclass(frozen=True)
class DemoModel:
    """One model the demo trains: its run name, recipe, training steps and training shards."""

    name: str
    recipe: str
    steps: int  # about what the 2-core CPU of docs/benchmarks.md trains in the time shares of the 5-minute demo
    data: str = "aligned"  # "aligned" or "misaligned" (the preset's second ingest)


# The defocus-map estimator comes first: RDDM loads it frozen, and it gives the CoC maps at evaluation. Its 2000
# steps take 2.5-3 minutes on the 2-core CPU (the dilated CNN of issue 20; the former SegFormer about 1.3;
# docs/benchmarks.md, "The defocus map redesigned (issue 20)"); 1000 steps score a little lower.
PRESETS: dict[str, tuple[DemoModel, ...]] = {
    "default": (
        DemoModel("defocus-map", "defocus-map-tiny.yaml", 2000),
        DemoModel("nafnet", "nafnet-tiny.yaml", 2500),
        DemoModel("rddm", "rddm-tiny.yaml", 1500),
        # HIDD deblurs with the sampler of its recipe (recipes/hidd-tiny.yaml), chosen by tools/bench_hidd_samplers.py.
        DemoModel("hidd", "hidd-tiny.yaml", 2000),
    ),
    "misaligned": (
        DemoModel("jdrl", "jdrl-tiny.yaml", 1000, "misaligned"),
        DemoModel("nafnet-misaligned", "nafnet-tiny.yaml", 2000, "misaligned"),
        DemoModel("nafnet-aligned", "nafnet-tiny.yaml", 2000),
    ),
    "baselines": (
        DemoModel("defocus-map", "defocus-map-tiny.yaml", 1600),
        DemoModel("dncnn", "dncnn-tiny.yaml", 2000),
        DemoModel("ffdnet", "ffdnet-tiny.yaml", 2000),
        DemoModel("cyclegan", "cyclegan-tiny.yaml", 1000),
        DemoModel("hidd", "hidd-tiny.yaml", 1600),
    ),
}
DEMO_MODELS = PRESETS["default"]
# What each model's training takes besides the steps train.max_minutes times: building it (the first one to need them
# imports torch._dynamo or transformers), its data loader, its last step and its export; at most about 3 s on the
# 2-core CPU of docs/benchmarks.md. The --minutes budget keeps this much for every model still to train.
MODEL_RESERVE_S = 5.0
# Held out for the test split: chelsea and rocket (8 scenes of 2 photographs; data/sources/synthetic.py test_photos),
# not the 4 variants of one photograph that the ingest default (0.1) holds out.
DEMO_TEST_FRACTION = 0.2


def recipe_path(name: str) -> Path:
    """The packaged recipe file of a demo model (inside the installed package, whatever the working directory)."""
    from defocuskit.config.recipe import packaged_recipe

    return packaged_recipe(name)


def planned_steps(model: DemoModel, steps_scale: float) -> int:
    """The steps `model` trains for under `--steps-scale` (at least 1)."""
    return max(1, round(model.steps * steps_scale))


def smallest_minutes(preset: str) -> float:
    """The smallest --minutes whose training the demo keeps for `preset`: every model's reserve and one more for
    their steps, in tenths of a minute rounded up."""
    return math.ceil((len(PRESETS[preset]) + 1) * MODEL_RESERVE_S / 6.0) / 10.0


def model_cap(minutes: float, spent_s: float, models_left: int) -> float:
    """train.max_minutes of the next model: what is left of `minutes` after `spent_s` seconds of training, less the
    reserve (MODEL_RESERVE_S) of the `models_left` models still to train, this one included; at least 0.01."""
    return max(0.01, minutes - (spent_s + models_left * MODEL_RESERVE_S) / 60.0)


def reached_step(run: Path) -> int:
    """The last step a run folder's metrics.jsonl records (0 when none)."""
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return max((int(r["step"]) for r in rows), default=0)


def check_demo_record(path: Path) -> None:
    """Refuse (ValueError naming it) a demo.json that an earlier demo did not write: the demo would replace it."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        ours = not path.is_symlink() and isinstance(record, dict) and {"preset", "models", "train_s"} <= set(record)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ValueError(f"{path}: exists and was not written by an earlier `defocuskit demo`; it is left as it is: "
                         "give another --out")


RUN_FILES = ("model.safetensors", "best.safetensors", "metrics.jsonl", "recipe.yaml", "checkpoints")  # a run's
# (train's own files), which a demo into a run folder that holds them would remove as it starts afresh


def check_others_work(out: Path, models: tuple[DemoModel, ...], markers: tuple[str, ...]) -> list[str]:
    """The run folders (names under out/runs) an earlier demo into `out` wrote, as its demo.json lists them (its
    `runs`, written as it starts, and its finished `models`). Refuses (ValueError naming it, before any work) a run
    folder of `models` holding a training run that no earlier demo wrote (`demo --out .` in a project whose
    `train nafnet` wrote runs/nafnet was removed and trained afresh, exit 0), and, where no demo wrote `out` (no
    demo.json), the report or shards whose `markers` (report/report.json, ...) stand there (`eval`'s default
    --report, an ingest's folder)."""
    path = out / "demo.json"  # check_demo_record: absent, or an earlier demo's
    earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    listed: set[str] = set()
    if isinstance(earlier, dict):
        runs, done = earlier.get("runs"), earlier.get("models")
        listed |= {n for n in runs if isinstance(n, str)} if isinstance(runs, list) else set()
        listed |= {m.get("name") for m in done if isinstance(m, dict)} if isinstance(done, list) else set()
    for dm in models:
        run = out / "runs" / dm.name
        if dm.name not in listed and any((run / n).exists() or (run / n).is_symlink() for n in RUN_FILES):
            raise ValueError(f"{run}: a training run that no earlier demo into {out} wrote (its demo.json does not "
                             "list it); the demo would replace it, so it is left as it is: give another --out")
    for marker in markers:
        if earlier is None and ((out / marker).exists() or (out / marker).is_symlink()):
            place = Path(marker).parent
            raise ValueError(f"{out / place}: written by another command, not by a demo (no demo.json in {out}); the "
                             "demo would replace it, so it is left as it is: give another --out")
    return sorted(n for n in listed if isinstance(n, str))


def check_numbers(minutes: float, steps_scale: float, size: int, limit: int | None, preset: str = "default") -> None:
    """ValueError naming the option, before any work: --steps-scale and --minutes not a finite positive number (NaN
    and inf failed after the ingest, or stopped every model at its first steps with exit 0), --minutes below the
    smallest budget the preset's training keeps (`smallest_minutes`: 0.2 trained for twice that), --size outside the
    synthetic scenes' sides, --limit below 1 (refused by the evaluation only after every model had trained)."""
    from defocuskit.data.ingest_checks import MAX_SYNTHETIC_SIDE

    for option, value in (("--steps-scale", steps_scale), ("--minutes", minutes)):
        if not 0 < value < math.inf:
            raise ValueError(f"{option} {value:g}: a finite number above 0")
    if minutes < (least := smallest_minutes(preset)):
        raise ValueError(f"--minutes {minutes:g}: below the smallest training budget the {preset} preset keeps, "
                         f"{least:g} ({len(PRESETS[preset])} models, each about {MODEL_RESERVE_S:g} s to build and "
                         f"export besides its steps); give --minutes {least:g} or more")
    if not 16 <= size <= MAX_SYNTHETIC_SIDE:
        raise ValueError(f"--size {size}: the scenes' longer side, 16 to {MAX_SYNTHETIC_SIDE} pixels")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit}: at least 1 test pair")


def check_shard_folders(folders: list[Path]) -> None:
    """Refuse (ValueError naming it, before any work) a demo shard folder that is a file, holds another dataset,
    or holds a tar (or a record) that no defocuskit run wrote there."""
    from defocuskit.data import folder

    identity = folder.dataset_identity({"sources": {"synthetic": "builtin"}})
    for path in folders:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path}: exists and is not a folder; it is left as it is: give another --out")
        try:
            folder.check_dataset(path, identity, overwrite=False)
            folder.check_collisions(path, [t.name[:-len(".tar")] for t in path.glob("*.tar")])
        except folder.FolderError as exc:
            raise ValueError(str(exc)) from None


def run_demo(
    out: Path = Path("demo-out"),
    minutes: float = 30.0,
    steps_scale: float = 1.0,
    size: int = 128,
    workers: int | None = None,
    device: str = "auto",
    limit: int | None = None,
    console: Console | None = None,
    preset: str = "default",
) -> dict:
    """Ingest the built-in set, train each of the preset's models for its steps (times `steps_scale`), evaluate by
    aperture; the report. `minutes`: a cap on the training time of all models together (a safety net: a model it
    stops is named, and demo.json records it).

    `workers`: ingest processes as PyTorch's num_workers (IngestOptions.workers: 0 = the main process, N >= 1 =
    N worker processes, None = one per core, at most 8);
    `device`: the evaluation device (devices.resolve_device: "auto" = CUDA, else MPS, else CPU), checked first.
    """
    from defocuskit.data.ingest_checks import check_workers
    from defocuskit.io.devices import resolve_device

    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r} (known: {', '.join(PRESETS)})")
    check_numbers(minutes, steps_scale, size, limit, preset)
    check_workers(workers)  # refused by the ingest only after demo.json was marked unfinished
    device = resolve_device(device)
    out = Path(out)
    made = locks.folders_to_make(out)  # where the demo stops, no lock it made left, nor the folders it made
    fresh = not (out / DEMO_LOCK).exists()
    with contextlib.ExitStack() as held:
        held.push(locks.unmake_on_error(made))
        try:  # a second demo into the same --out: each would train and score the other's models
            held.enter_context(locks.hold(out / DEMO_LOCK, "demo", f"--out {out}: another demo is writing this folder",
                                          remove_on_error=fresh))
        except locks.LockedError as exc:
            raise ValueError(f"{exc}; wait for it to finish or give another --out") from None
        return _run_held(out, minutes, steps_scale, size, workers, device, limit, console or Console(), preset)


def _run_held(out: Path, minutes: float, steps_scale: float, size: int, workers: int | None, device: str,
              limit: int | None, console: Console, preset: str) -> dict:
    """`run_demo` once --out is held: checks of everything it would write, then the pipeline."""
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.eval.outputs import retire_report
    from defocuskit.eval.report import check_report_folder
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import load_recipe
    from defocuskit.train.loop import train
    from defocuskit.train.runfolder import check_run_folder

    recipes = {dm.recipe: recipe_path(dm.recipe) for dm in PRESETS[preset]}  # every recipe found before any work
    models = PRESETS[preset]
    check_demo_record(out / "demo.json")
    for dm in models:  # a file of the user's in a run folder stops the demo before any work, not after hours
        check_run_folder(out / "runs" / dm.name)
    check_shard_folders([out / "shards", *([out / "shards-misaligned"] if any(m.data == "misaligned" for m in models)
                                           else [])])
    # a training run, shards or a report that another command wrote where the demo writes its own (`--out .`)
    listed = check_others_work(out, models, ("shards/manifest.json", "shards-misaligned/manifest.json"))
    check_report_folder(out / "report")  # and one in the report folder (last: its probe makes the folder)
    check_others_work(out, (), ("report/report.json",))  # an evaluation's: not the demo's to replace
    runs = sorted({*listed, *(dm.name for dm in models)})  # demo.json lists them before any is written
    record: dict = {"preset": preset, "size": size, "steps_scale": steps_scale, "minutes_cap": minutes, "models": [],
                    "runs": runs, "complete": False, "train_s": None}
    out.mkdir(parents=True, exist_ok=True)  # an earlier run's record no longer describes the runs this one replaces
    atomic_write(out / "demo.json", json.dumps(record, indent=1) + "\n")
    retire_report(out / "report")  # nor does its report: a run stopped before its evaluation leaves none
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
    trained_s = 0.0
    for i, dm in enumerate(models, 1):
        steps = planned_steps(dm, steps_scale)
        cap = model_cap(minutes, trained_s, len(models) - i + 1)
        console.print(f"[{elapsed()}] 2/3 train {i}/{len(models)} {dm.name} ({dm.data} pairs): {steps} steps")
        run = out / "runs" / dm.name
        overrides = [
            f"data.train={data[dm.data]}",
            f"output_dir={run}",
            f"train.max_steps={steps}",
            f"train.max_minutes={cap}",
            "train.checkpoint_every=1000000",
        ]
        recipe = load_recipe(recipes[dm.recipe], overrides)
        method = get_method(recipe.method)
        if method.companions:  # trained earlier in the preset
            links = [f"{c.key}={trained[c.method]}" for c in method.companions]
            recipe = load_recipe(recipes[dm.recipe], overrides + links)
        t0 = time.monotonic()
        model_path = trained[method.name] = train(recipe, resume=False)
        seconds = time.monotonic() - t0
        trained_s += seconds
        reached = reached_step(run)
        record["models"].append({"name": dm.name, "recipe": dm.recipe, "steps": steps, "reached": reached,
                                 "train_s": round(seconds, 1)})
        if reached < steps:
            console.print(f"[bold red]{dm.name} stopped at step {reached} of {steps}: the --minutes cap ({minutes:g}) "
                          "was reached; this run's table is not the demo's (give a larger --minutes)")
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
    t0 = time.monotonic()
    report = evaluate(shards, checkpoints, baselines, config)
    record.update(train_s=round(trained_s, 1), eval_s=round(time.monotonic() - t0, 1),
                  total_s=round(time.monotonic() - start, 1), complete=True)
    check_demo_record(out / "demo.json")  # a file put there during the run is left alone too
    atomic_write(out / "demo.json", json.dumps(record, indent=1) + "\n")
    console.print(f"[{elapsed()}] done. Report: {report_dir / 'report.json'}, {report_dir / 'report.csv'}; plot: {report_dir / 'aperture.png'}")
    return report
