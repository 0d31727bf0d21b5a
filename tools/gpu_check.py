"""GPU check (issue 22): training and inference speed of the packaged recipes on ONE GPU, every row measured.

    python tools/gpu_check.py [--only train,eval/whole,...] [--out gpu-check.json]   # on a GPU, under 8 minutes
    python tools/gpu_check.py --cpu-tiny [--out tiny.json]                            # CPU smoke run, < 60 s (CI)

Run it on one GPU (CUDA_VISIBLE_DEVICES=N picks it); it makes everything it needs in a temporary folder (removed
at the end unless --keep or a row failed): synthetic shards (`defocuskit ingest --synthetic builtin`), random
1536x1024 test pairs, and models with random weights (timing does not depend on them; nothing is downloaded:
the recipes' pretrained encoders are set to null). Rows:

  train/RECIPE   every packaged recipe without a -tiny/-cpu suffix, through the real loop (`defocuskit.train.loop
                 .train`) with bf16 mixed precision, --warmup + --steps steps, one metrics.jsonl row per step:
                 images/s over the steps after the warm-up, from the rows' images_per_s (and the data wait)
  eval/whole     `defocuskit eval` (defocuskit.eval.evaluate) of the paper NAFNet, s / image, whole images
  eval/tileN     the same with --tile N (default 32)
  hidd/released  HIDD (recipes/hidd.yaml) on one 256x256 one-channel image, `--sampler released` (1000 steps x 4
  hidd/fast      NFE, identity consistency) and `--sampler fast` (10 NFE): NFE/s and s / image
  rddm/latency   paper RDDM, 2 DDIM steps on one 1680x1120 RGB image, whole or tiled as `defocuskit deblur` decides

plus the peak GPU memory of each row (torch.cuda.max_memory_allocated over the measured part), the device,
torch version and date. --cpu-tiny runs the same rows with the -tiny recipes on the CPU at 32-96 px (3 training
steps, 10 released steps) so that a test keeps the script working; its peak memory column says n/a (cpu).
A row that fails prints one line `error: ROW: ...` (its log: WORK/logs/ROW.log) and the others still run; the exit
status is then 1. The markdown table goes into docs/benchmarks.md ("GPU check (issue 22)") with the machine,
command and date it prints above it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # a checkout

import torch  # noqa: E402
from gpu_check_rows import Context, Plan, Row, eval_row, hidd_row, rddm_row, train_row  # noqa: E402

from defocuskit.config.recipe import packaged_recipe_names  # noqa: E402
from defocuskit.io.threads import apply_threads  # noqa: E402


def make_plan(args: argparse.Namespace) -> Plan:
    """The GPU plan (paper recipes, paper sizes) or the --cpu-tiny one."""
    names = packaged_recipe_names()
    if args.cpu_tiny:
        plan = Plan("cpu", "no", tuple(n for n in names if n.endswith("-tiny")), 1, 2, 64, (1.4,), 64,
                    "nafnet-tiny", (48, 64), 2, args.tile, "hidd-tiny", 32, 10, "rddm-tiny", (64, 96))
    else:
        plan = Plan("cuda", "bf16", tuple(n for n in names if not n.endswith(("-tiny", "-cpu"))), 3, 10, 384,
                    (1.4, 2.8, 5.6), 8, "nafnet", (1024, 1536), 2, args.tile, "hidd", 256, None, "rddm", (1120, 1680))
    changes = {k: v for k, v in (("warmup", args.warmup), ("steps", args.steps),
                                 ("hidd_released_steps", args.hidd_steps)) if v is not None}
    return dataclasses.replace(plan, **changes)


def all_rows(plan: Plan) -> list[tuple[str, Callable[[Context, Row], None]]]:
    """Every row of the plan, cheapest groups first (HIDD released last: the longest)."""
    rows: list[tuple[str, Callable[[Context, Row], None]]] = [
        (f"train/{name}", lambda ctx, row, name=name: train_row(ctx, row, name)) for name in plan.recipes]
    rows += [("eval/whole", lambda ctx, row: eval_row(ctx, row, None)),
             (f"eval/tile{plan.tile}", lambda ctx, row: eval_row(ctx, row, plan.tile)),
             ("rddm/latency", lambda ctx, row: rddm_row(ctx, row)),
             ("hidd/fast", lambda ctx, row: hidd_row(ctx, row, "fast")),
             ("hidd/released", lambda ctx, row: hidd_row(ctx, row, "released"))]
    return rows


def select(rows: list[tuple[str, Any]], only: str) -> list[tuple[str, Any]]:
    """The rows `--only` names (exact names, or groups: train, eval, hidd, rddm); ValueError for an unknown one."""
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        return rows
    names = [name for name, _ in rows]
    for w in wanted:
        if not any(n == w or n.startswith(w.rstrip("/") + "/") for n in names):
            raise ValueError(f"--only {w}: no such row (rows: {', '.join(names)}; groups: train, eval, hidd, rddm)")
    return [(n, f) for n, f in rows if any(n == w or n.startswith(w.rstrip("/") + "/") for w in wanted)]


def machine(plan: Plan) -> dict[str, str]:
    """Device name, torch and CUDA versions, CPU, date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    info = {"device": "cpu", "torch": torch.__version__, "cpu": f"{cpu}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads", "date": datetime.date.today().isoformat(),
            "python": platform.python_version()}
    if plan.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info["device"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return info


def table(rows: list[Row], cuda: bool) -> str:
    lines = ["| row | what ran | result | peak GPU memory | wall s |", "|---|---|---|---:|---:|"]
    for r in rows:
        peak = "n/a (cpu)" if not cuda else ("" if r.peak_mib is None else f"{r.peak_mib:,.0f} MiB")
        result = f"FAILED: {r.error}" if r.error else r.result
        lines.append(f"| {r.name} | {r.what} | {result} | {peak} | {r.seconds:.1f} |")
    return "\n".join(lines)


def run_row(ctx: Context, name: str, fn: Callable[[Context, Row], None]) -> Row:
    """Run one row; any exception becomes its one-line error (the traceback goes to its log)."""
    import traceback

    row = Row(name)
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
    try:
        fn(ctx, row)
        if ctx.cuda:
            row.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        bad = {k: v for k, v in row.figures.items() if not (math.isfinite(v) and v >= 0)}
        if not row.figures or bad:
            raise RuntimeError(f"no figures, or figures negative or not finite: {bad}")
    except Exception as exc:  # noqa: BLE001 (a failed row is reported and the others run)
        log = ctx.work / "logs" / f"{name.replace('/', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            traceback.print_exc(file=f)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        row.error = f"{type(exc).__name__}: {first}"
        print(f"error: {name}: {row.error} (log: {log})", file=sys.stderr, flush=True)
    return row


def check_paths(out: Path | None, work: Path | None) -> None:
    """ValueError (one line) for an --out that is a folder or a file an earlier gpu_check did not write (it is
    written after every row), and a --work that is a file; before any row runs."""
    if out is not None and out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a JSON file name")
    if out is not None and (out.exists() or out.is_symlink()):
        try:
            ours = {"machine", "command", "mode", "plan", "rows"} <= set(json.loads(out.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise ValueError(f"--out {out}: exists and was not written by gpu_check; it is left as it is: give "
                             "another file name")
    if work is not None and work.exists() and not work.is_dir():
        raise ValueError(f"--work {work}: is a file; give a folder")


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when every row was measured, 1 when a row failed, 2 for a usage error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-tiny", action="store_true", help="the -tiny recipes at tiny sizes on the CPU (< 60 s)")
    parser.add_argument("--only", default="", help="comma-separated rows or groups (train, eval, hidd, rddm)")
    parser.add_argument("--out", type=Path, default=None, help="write the raw figures here (JSON)")
    parser.add_argument("--tile", type=int, default=32, help="the tile of the eval/tileN row")
    parser.add_argument("--steps", type=int, default=None, help="measured training steps (GPU 10, tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="training steps left out first (GPU 3, tiny 1)")
    parser.add_argument("--hidd-steps", type=int, default=None, help="steps of the released sampler (default 1000)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    plan = make_plan(args)
    try:
        rows = select(all_rows(plan), args.only)
        if plan.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("no CUDA device is visible: run on a GPU machine, or --cpu-tiny on the CPU")
        check_paths(args.out, args.work)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if plan.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # train on the CPU even where a GPU is visible
    apply_threads()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    ctx = Context(plan, work)
    info = machine(plan)
    command = " ".join(["python", "tools/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    done: list[Row] = []
    began = time.perf_counter()
    for name, fn in rows:
        row = run_row(ctx, name, fn)
        done.append(row)
        if not row.error:
            print(f"[{time.perf_counter() - began:6.1f} s] {name}: {row.result}", file=sys.stderr, flush=True)
        if args.out is not None:  # after every row: a run stopped early keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"machine": info, "command": command, "mode": "cpu-tiny" if args.cpu_tiny
                                            else "gpu", "plan": dataclasses.asdict(plan),
                                            "rows": [dataclasses.asdict(r) for r in done]}, indent=1))
    failed = [r.name for r in done if r.error]
    print(f"machine: {info['device']}; {info['cpu']}; torch {info['torch']}, Python {info['python']}")
    print(f"command: {command}")
    print(f"date: {info['date']}; {'CPU tiny smoke run' if args.cpu_tiny else 'one GPU'}; "
          f"{time.perf_counter() - began:.0f} s in all\n")
    print(table(done, ctx.cuda))
    if failed:
        print(f"\n{len(failed)} row(s) failed: {', '.join(failed)}; work folder kept: {work}", file=sys.stderr)
    elif not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
