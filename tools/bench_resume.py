"""Resume cost against the step count: a real run checkpointed at step 100 and at step 10,000, resumed.

    python tools/bench_resume.py --work /tmp/bench-resume [--steps 100,10000] [--repeats 3]

1. Writes tiny shards (8 x 64 samples, 40x48 px) and trains recipes/hidd-tiny.yaml to each step count,
   keeping a copy of the run folder at each.
2. For each copy, alternately, runs the same `defocuskit train` command with max_steps one higher
   (a resume that trains one step) and reports the command's wall time and the first batch's wait
   (`data_wait_s` of that step in metrics.jsonl: building the stream, seeking, decoding one batch).
3. In one process, the time to the first batch of a ShardStream started at each step: seeking (what
   training does) against re-reading every earlier sample from the tars (what it did before).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tool_folders import fresh_work  # tools/, first on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "hidd-tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


MARK = ".bench-resume"  # in --work: this tool made the folder
OWN = ("shards", "run", "trial", "at-*")  # what it makes there


def write_shards(folder: Path, n_shards: int = 8, per_shard: int = 64) -> str:
    import webdataset as wds

    from defocuskit.io.images import encode_png

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"train-{s:06d}.tar")) as w:
            for i in range(per_shard):
                sharp = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
                w.write({"__key__": f"s{s}-{i:03d}", "sharp.png": encode_png(sharp),
                         "json": json.dumps({"f_number": 2.8}).encode()})
    return str(folder / "train-*.tar")


def train(shards: str, out: Path, steps: int, *extra: str) -> float:
    cmd = [sys.executable, "-m", "defocuskit", "train", RECIPE, f"data.train={shards}", f"output_dir={out}",
           f"train.max_steps={steps}", "train.checkpoint_every=100", "train.keep_checkpoints=1",
           "train.max_minutes=null", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def first_batch_seconds(shards: str, start: int, reread: bool) -> float:
    from defocuskit.methods.recipes import load_recipe
    from defocuskit.train.stream import ShardStream

    recipe = load_recipe(RECIPE, [f"data.train={shards}"])
    urls = sorted(str(p) for p in Path(shards).parent.glob("*.tar"))
    t0 = time.perf_counter()
    if reread:  # the former resume: read (not decode) every sample the stream had delivered
        stream = ShardStream(urls, recipe.data, "sharp", 0, 0, 1)
        raw = stream.sequential(stream.share(0, 1), 0)
        for _ in range(start * recipe.data.batch_size):
            next(raw)
        next(raw)
    else:
        next(iter(ShardStream(urls, recipe.data, "sharp", 0, 0, 1, start_batch=start)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--steps", default="100,10000")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    fresh_work(args.work, OWN, MARK, Path(__file__).name)
    shards = write_shards(args.work / "shards")
    run = args.work / "run"
    for s in steps:
        print(f"training to step {s}: {train(shards, run, s):.0f} s", flush=True)
        shutil.copytree(run, args.work / f"at-{s}")

    results: dict[int, list[tuple[float, float]]] = {s: [] for s in steps}
    for _ in range(args.repeats):
        for s in steps:  # alternate, so that machine noise hits both alike
            trial = args.work / "trial"
            shutil.rmtree(trial, ignore_errors=True)
            shutil.copytree(args.work / f"at-{s}", trial)
            wall = train(shards, trial, s + 1, "train.log_every=1")
            last = json.loads((trial / "metrics.jsonl").read_text().splitlines()[-1])
            assert last["step"] == s + 1, last
            results[s].append((wall, last["data_wait_s"]))
    print("\n| resumed at step | `train` wall (s), median | first batch wait (s), median |")
    print("|---:|---:|---:|")
    for s in steps:
        walls, waits = zip(*results[s])
        print(f"| {s:,} | {np.median(walls):.2f} | {np.median(waits):.3f} |")

    print("\n| stream started at batch | seek (s) | re-read earlier samples (s) |")
    print("|---:|---:|---:|")
    for s in steps:
        seek = np.median([first_batch_seconds(shards, s, False) for _ in range(args.repeats)])
        reread = np.median([first_batch_seconds(shards, s, True) for _ in range(args.repeats)])
        print(f"| {s:,} | {seek:.3f} | {reread:.3f} |")


if __name__ == "__main__":
    main()
