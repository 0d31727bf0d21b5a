"""Training speed with denormal floats computed as zero (train.flush_denormal) against IEEE denormals, side by side.

Trains RECIPE for --steps steps twice from the same shards (same seed), once per setting, one run after the
other, and prints the wall time, the images/s of each logged window and the last loss of each run:

    python tools/bench_denormal.py --shards A.tar,B.tar --out /tmp/denormal --recipe jdrl-cpu --steps 100 \\
        --set objective.reblur_start_step=20

Run it alone (docs/benchmarks.md, "Threads"). `--out` must not exist yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from defocuskit.config.typed import layered_overrides


def run(recipe: str, shards: list[str], out: Path, steps: int, flush: bool, overrides: list[str]) -> dict:
    """Train once; wall seconds, images/s per logged window and the last logged loss."""
    own = [f"data.train=[{','.join(shards)}]", f"output_dir={out}", f"train.max_steps={steps}",
           f"train.log_every={max(1, steps // 5)}", f"train.checkpoint_every={steps}", "train.max_minutes=null",
           f"train.flush_denormal={str(flush).lower()}"]
    # the user's --set replaces the tool's value of its key (defocuskit train refuses a key given twice)
    cmd = [sys.executable, "-m", "defocuskit", "train", recipe, *layered_overrides(own, overrides)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "images_per_s" in r]
    return {"flush_denormal": flush, "wall_s": round(wall, 1),
            "images_per_s": [(r["step"], round(r["images_per_s"], 2)) for r in rows],
            "last_loss": rows[-1]["loss"] if rows else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True, help="comma-separated training shards")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--recipe", default="jdrl-cpu")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    shards = [s for s in args.shards.split(",") if s]
    results = [run(args.recipe, shards, args.out / f"flush-{flag}", args.steps, flag, args.overrides)
               for flag in (False, True)]
    print(f"{args.recipe}, {args.steps} steps, overrides {args.overrides}")
    for r in results:
        print(json.dumps(r))
    (args.out / "denormal.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
