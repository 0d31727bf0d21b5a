"""Grid over the fast sampler's settings on TRAIN-split synthetic scenes (the benchmark scores the test split).

    python tools/tune_fast_sampler.py --model PRIOR.safetensors --shards SHARDS \
        --grid sigma_start=0.1,0.2,0.4 dc_sigma=0.02,0.05,0.1 [--set steps=40] [--f-numbers 1.4,2.8,8] [--tile 128]

Every combination of the grid runs `fast` with physics consistency and the oracle CoC (coc.png) on the
same images; prints mean PSNR gain over the input per f-number, and seconds per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from defocuskit.data.reader import iter_samples  # noqa: E402
from defocuskit.eval.metrics import psnr  # noqa: E402
from defocuskit.inference.load import load_model  # noqa: E402
from defocuskit.inference.restore import restore_image  # noqa: E402
from defocuskit.inference.tiling import TilingOptions
from defocuskit.io.images import to_float  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--grid", nargs="+", default=["sigma_start=0.1,0.2,0.4", "dc_sigma=0.02,0.05,0.1"])
    parser.add_argument("--set", nargs="*", default=[], help="fixed settings key=value")
    parser.add_argument("--f-numbers", default="1.4,2.8,8")
    parser.add_argument("--per-aperture", type=int, default=1)
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: the prior's training size)")
    args = parser.parse_args()
    method, recipe, model = load_model(args.model, expect_method="hidd")
    base = dataclasses.replace(recipe.sampler, name="fast", consistency="physics",
                               **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    keys = [g.split("=")[0] for g in args.grid]
    values = [[yaml.safe_load(v) for v in g.split("=", 1)[1].split(",")] for g in args.grid]
    wanted = [float(f) for f in args.f_numbers.split(",")]
    picked, seen = [], {f: 0 for f in wanted}
    for s in iter_samples(args.shards, split="train"):
        f = s["meta"].get("f_number")
        if s.get("blur") is not None and f in seen and seen[f] < args.per_aperture:
            seen[f] += 1
            picked.append(s)
    print("| " + " | ".join(keys) + " | " + " | ".join(f"gain f/{f:g}" for f in wanted) + " | s/image |")
    print("|" + "---|" * (len(keys) + len(wanted) + 1))
    for combo in itertools.product(*values):
        cfg = dataclasses.replace(base, **dict(zip(keys, combo)))
        gains: dict[float, list[float]] = {f: [] for f in wanted}
        t0 = time.perf_counter()
        for s in picked:
            blur, sharp = to_float(s["blur"]), to_float(s["sharp"]).astype(np.float64)
            out = restore_image(method, recipe, model, blur, sampler_cfg=cfg, coc=s["coc"], progress=False,
                                tiling=TilingOptions(tile=args.tile))
            gains[s["meta"]["f_number"]].append(psnr(np.clip(out, 0, 1).astype(np.float64), sharp)
                                                - psnr(blur.astype(np.float64), sharp))
        per = (time.perf_counter() - t0) / max(len(picked), 1)
        print("| " + " | ".join(str(c) for c in combo) + " | "
              + " | ".join(f"{np.mean(gains[f]):+.2f}" for f in wanted) + f" | {per:.1f} |", flush=True)


if __name__ == "__main__":
    main()
